package apply

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"

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
}

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
		var names []string
		var files []*os.File
		for _, l := range listeners(ns.Web) {
			var f *os.File
			err := nodes[ns.Name].Do(func() error {
				var err error
				f, err = openSocket(l.kind, l.port)
				return err
			})
			if err != nil {
				closeFiles(files)
				return procs, fmt.Errorf("%s: %s server on port %d: %w", ns.Name, l.kind, l.port, err)
			}
			names = append(names, ns.Name+"/"+l.kind)
			files = append(files, f)
		}
		cmd := exec.Command(s.Self, "webd")
		cmd.Env = append(os.Environ(), webd.EnvListeners+"="+strings.Join(names, ","))
		cmd.ExtraFiles = files
		p, err := s.launch(cmd, "webd-"+ns.Name, nodes[ns.Name])
		closeFiles(files)
		if err != nil {
			return procs, err
		}
		procs = append(procs, p)
	}
	for _, ns := range spec.Nodes {
		for i, argv := range ns.Commands {
			cmd := exec.Command(argv[0], argv[1:]...)
			p, err := s.launch(cmd, fmt.Sprintf("%s-cmd%d", ns.Name, i), nodes[ns.Name])
			if err != nil {
				return procs, fmt.Errorf("%s: commands[%d] %q: %w", ns.Name, i, argv, err)
			}
			procs = append(procs, p)
		}
	}
	return procs, nil
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
