package apply

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/lvslab/lvslab/pkg/image"
	"github.com/lvslab/lvslab/pkg/keepalived"
	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/node"
	"github.com/lvslab/lvslab/pkg/state"
	"github.com/lvslab/lvslab/pkg/webd"
)

// Starter starts the long-running processes of a lab: the built-in web servers and
// each node's commands. Self is the lvslab binary (it serves as the web daemon);
// LogDir receives their output.
type Starter struct {
	Self   string
	LogDir string
	// Containers, when set, starts the processes of nodes that are containers
	// inside them, as docker exec does (each node's container is named as its
	// network namespace): the web servers run the image's lvslab
	// (image.SelfPath), commands the image's programs, and their output goes to
	// /var/log/lvslab/ in the container.
	Containers ContainerStarter
}

// ContainerStarter starts a process inside a container, as docker exec does.
// With ready it returns once the process has printed that line; it returns the
// process's PID as lvslab sees it.
type ContainerStarter interface {
	StartIn(ctx context.Context, container string, argv, env []string, ready string) (pid int, err error)
}

// ContainerLogDir is where processes lvslab starts in a container write.
const ContainerLogDir = "/var/log/lvslab"

// readyTimeout bounds the wait for a web server in a container to listen.
const readyTimeout = 30 * time.Second

// Start starts the processes spec asks for and returns them for the lab's record.
// The web servers' sockets are listening when Start returns, so they answer at once.
// On failure, processes already started are killed.
func (s Starter) Start(ctx context.Context, nodes map[string]node.Node, spec lab.Spec) (procs []state.Process, err error) {
	defer func() {
		if err != nil {
			for _, p := range procs {
				_ = p.Kill()
			}
			procs = nil
		}
	}()
	if err := os.MkdirAll(s.LogDir, 0o755); err != nil {
		return nil, fmt.Errorf("log dir: %w", err)
	}
	// One web daemon per web node, inside that node's namespace: stopping one
	// node's web service is stopping its process (role "webd-<node>").
	for _, ns := range spec.Nodes {
		if ns.Web == nil {
			continue
		}
		p, err := s.StartWeb(ctx, nodes[ns.Name], ns.Web)
		if err != nil {
			return procs, err
		}
		procs = append(procs, p)
	}
	for _, ns := range spec.Nodes {
		for i, argv := range ns.Commands {
			p, err := s.StartCommand(ctx, nodes[ns.Name], CommandRole(ns.Name, i), argv)
			if err != nil {
				return procs, fmt.Errorf("%s: commands[%d] %q: %w", ns.Name, i, argv, err)
			}
			procs = append(procs, p)
		}
		if ns.Keepalived != nil {
			p, err := s.StartKeepalived(ctx, nodes[ns.Name], ns)
			if err != nil {
				return procs, fmt.Errorf("%s: keepalived: %w", ns.Name, err)
			}
			procs = append(procs, p)
		}
	}
	return procs, nil
}

// KeepalivedRole names a node's keepalived in the lab's record.
func KeepalivedRole(node string) string { return node + "-keepalived" }

// keepalivedFlags run keepalived in the foreground, logging to its output
// (the role's log); the last, --vrrp, runs VRRP alone (no health checkers).
var keepalivedFlags = []string{"--dont-fork", "--log-console", "--log-detail", "--vrrp"}

// envKeepalivedConf carries the configuration into a container.
const envKeepalivedConf = "LVSLAB_KEEPALIVED_CONF"

// StartKeepalived writes a node's keepalived.conf and starts keepalived on
// it: in a namespace, with its configuration and PID files in the lab's log
// directory (so that two nodes' keepalived never share one); in a container,
// with its configuration at /etc/keepalived/keepalived.conf there.
func (s Starter) StartKeepalived(ctx context.Context, n node.Node, ns lab.NodeSpec) (state.Process, error) {
	role := KeepalivedRole(n.Name)
	b, err := keepalived.Marshal(keepalived.FromNode(ns))
	if err != nil {
		return state.Process{}, err
	}
	conf := "# written by lvslab for node " + ns.Name + "\n" + string(b)
	flags := keepalivedFlags
	if ns.Keepalived.ManagesIPVS() {
		flags = flags[:len(flags)-1] // its checkers too, not --vrrp alone
	}
	if s.Containers != nil {
		log := path.Join(ContainerLogDir, role+".log")
		script := `mkdir -p /etc/keepalived "${0%/*}" && printf '%s' "$` + envKeepalivedConf + `" >/etc/keepalived/keepalived.conf && exec keepalived "$@" --use-file /etc/keepalived/keepalived.conf >>"$0" 2>&1`
		return s.startIn(ctx, n, role, append([]string{"/bin/sh", "-c", script, log}, flags...), []string{envKeepalivedConf + "=" + conf}, "")
	}
	if err := os.MkdirAll(s.LogDir, 0o755); err != nil {
		return state.Process{}, fmt.Errorf("log dir: %w", err)
	}
	file := filepath.Join(s.LogDir, role+".conf")
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		return state.Process{}, err
	}
	tmp := KeepalivedTmpDir(s.LogDir, n.Name)
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return state.Process{}, fmt.Errorf("keepalived's dump dir: %w", err)
	}
	args := append(append([]string(nil), flags...), "--use-file", file,
		"--pid", filepath.Join(s.LogDir, role+".pid"),
		"--vrrp_pid", filepath.Join(s.LogDir, role+"-vrrp.pid"),
		"--checkers_pid", filepath.Join(s.LogDir, role+"-checkers.pid"))
	cmd := exec.Command("keepalived", args...)
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp) // its state dumps (keepalived.json), one directory per node
	return s.launch(cmd, role, n)
}

// KeepalivedTmpDir is where a netns lab's keepalived of node writes its
// state dumps (TMPDIR): keepalived.json on its JSON signal. In a container it
// is the container's /tmp.
func KeepalivedTmpDir(logDir, node string) string {
	return filepath.Join(logDir, KeepalivedRole(node)+".tmp")
}

// WebRole names a node's web server in the lab's record.
func WebRole(node string) string { return "webd-" + node }

// CommandRole names a node's i-th command in the lab's record.
func CommandRole(node string, i int) string { return fmt.Sprintf("%s-cmd%d", node, i) }

// StartWeb starts a node's web server; its sockets listen when it returns.
func (s Starter) StartWeb(ctx context.Context, n node.Node, w *lab.Web) (state.Process, error) {
	if s.Containers != nil {
		return s.startWebIn(ctx, n, w)
	}
	var names []string
	var files []*os.File
	for _, l := range listeners(w) {
		var f *os.File
		err := n.Do(func() error {
			var err error
			f, err = openSocket(l.kind, l.port)
			return err
		})
		if err != nil {
			closeFiles(files)
			return state.Process{}, fmt.Errorf("%s: %s server on port %d: %w", n.Name, l.kind, l.port, err)
		}
		names = append(names, n.Name+"/"+l.kind)
		files = append(files, f)
	}
	cmd := exec.Command(s.Self, "webd")
	cmd.Env = append(os.Environ(), webd.EnvListeners+"="+strings.Join(names, ","))
	cmd.ExtraFiles = files
	p, err := s.launch(cmd, WebRole(n.Name), n)
	closeFiles(files)
	return p, err
}

// StartCommand starts one of a node's commands under role.
func (s Starter) StartCommand(ctx context.Context, n node.Node, role string, argv []string) (state.Process, error) {
	if s.Containers != nil {
		return s.startIn(ctx, n, role, commandIn(role, argv), nil, "")
	}
	if err := os.MkdirAll(s.LogDir, 0o755); err != nil {
		return state.Process{}, fmt.Errorf("log dir: %w", err)
	}
	return s.launch(exec.Command(argv[0], argv[1:]...), role, n)
}

// startWebIn starts a node's web server inside its container: the image's
// lvslab opens the sockets itself and says when they listen.
func (s Starter) startWebIn(ctx context.Context, n node.Node, w *lab.Web) (state.Process, error) {
	var items []string
	for _, l := range listeners(w) {
		items = append(items, fmt.Sprintf("%s/%s/%d", n.Name, l.kind, l.port))
	}
	role := WebRole(n.Name)
	env := []string{
		webd.EnvListen + "=" + strings.Join(items, ","),
		webd.EnvLog + "=" + path.Join(ContainerLogDir, role+".log"),
	}
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	p, err := s.startIn(ctx, n, role, []string{image.SelfPath, "webd"}, env, webd.Ready)
	if err != nil {
		return p, fmt.Errorf("%s: web server: %w", n.Name, err)
	}
	return p, nil
}

// commandIn is a node's command as run in its container: its output to a log
// of the container's.
func commandIn(role string, argv []string) []string {
	log := path.Join(ContainerLogDir, role+".log")
	return append([]string{"/bin/sh", "-c", `mkdir -p "${0%/*}" && exec "$@" >>"$0" 2>&1`, log}, argv...)
}

// startIn starts argv in n's container and records it.
func (s Starter) startIn(ctx context.Context, n node.Node, role string, argv, env []string, ready string) (state.Process, error) {
	pid, err := s.Containers.StartIn(ctx, filepath.Base(n.NSPath), argv, env, ready)
	if err != nil {
		return state.Process{}, err
	}
	p := state.Process{Role: role, Node: n.Name, Pid: pid}
	// A command that has ended already, and well, is recorded as ended (its
	// start time unknown: it never matches a process).
	p.StartTime, _ = state.ProcessStartTime(pid)
	return p, nil
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

type listenerSpec struct {
	kind string
	port uint16
}

func listeners(w *lab.Web) []listenerSpec {
	var out []listenerSpec
	for _, p := range w.HTTP {
		out = append(out, listenerSpec{webd.KindHTTP, p})
	}
	for _, p := range w.HTTPS {
		out = append(out, listenerSpec{webd.KindHTTPS, p})
	}
	for _, p := range w.UDP {
		out = append(out, listenerSpec{webd.KindUDP, p})
	}
	return out
}

// openSocket opens a listening socket (in the calling thread's namespace) and
// returns it as a file to hand to the web daemon.
func openSocket(kind string, port uint16) (*os.File, error) {
	addr := fmt.Sprintf(":%d", port)
	if kind == webd.KindUDP {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, err
		}
		defer pc.Close()
		return pc.(*net.UDPConn).File()
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	return l.(*net.TCPListener).File()
}

// launch starts cmd detached from the caller (own session, output to a log file),
// inside n's namespace, where teardown finds it even if it was never recorded.
func (s Starter) launch(cmd *exec.Cmd, role string, n node.Node) (state.Process, error) {
	log, err := os.OpenFile(fmt.Sprintf("%s/%s.log", s.LogDir, role), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return state.Process{}, err
	}
	defer log.Close()
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := n.Start(cmd); err != nil {
		return state.Process{}, fmt.Errorf("start %s: %w", role, err)
	}
	st, err := state.ProcessStartTime(cmd.Process.Pid)
	if err != nil {
		return state.Process{}, fmt.Errorf("start %s: %w", role, err)
	}
	p := state.Process{Role: role, Node: n.Name, Pid: cmd.Process.Pid, StartTime: st}
	go cmd.Wait() // reap it if it dies while this process lives
	return p, nil
}
