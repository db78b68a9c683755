package runner

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/lvslab/lvslab/pkg/apply"
	"github.com/lvslab/lvslab/pkg/clabrt"
	"github.com/lvslab/lvslab/pkg/keepalived"
	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/node"
	"github.com/lvslab/lvslab/pkg/scenario"
	"github.com/lvslab/lvslab/pkg/state"
	"github.com/lvslab/lvslab/pkg/topo"
	"github.com/lvslab/lvslab/pkg/webd"
)

// stopWithin bounds how long a stopped service may take to end.
const stopWithin = 10 * time.Second

// Control stops, starts and runs a running lab's processes, for verify's
// steps (it implements verify.Controller). Each change is written to the
// lab's record, so that down and apply know what runs.
type Control struct {
	r   *Runner
	lab string
	rt  topo.Runtime
}

// Control returns the process control of a running lab.
func (r *Runner) Control(ctx context.Context, labName string) (*Control, error) {
	l, err := r.Store.Load(labName)
	if err != nil {
		return nil, err
	}
	rt, err := r.RuntimeFor(ctx, l.Runtime, false)
	if err != nil {
		return nil, err
	}
	return &Control{r: r, lab: labName, rt: rt}, nil
}

// role finds the record's role of a node's service: web, or a command by the
// name steps give it.
func (c *Control) role(l *state.Lab, nodeName, service string) (string, []string, *lab.NodeSpec, error) {
	s, err := scenario.Parse(l.Scenario, []byte(l.Applied))
	if err != nil {
		return "", nil, nil, fmt.Errorf("lab %s: its scenario: %w", l.Name, err)
	}
	ns, ok := s.Spec.Node(nodeName)
	if !ok {
		return "", nil, nil, fmt.Errorf("lab %s has no node %s", l.Name, nodeName)
	}
	if service == lab.ServiceWeb && ns.Web != nil {
		return apply.WebRole(nodeName), nil, &ns, nil
	}
	for i, argv := range ns.Commands {
		if scenario.CommandName(ns, i) == service {
			return apply.CommandRole(nodeName, i), argv, &ns, nil
		}
	}
	if service == scenario.ServiceKeepalived && ns.Keepalived != nil {
		return apply.KeepalivedRole(nodeName), nil, &ns, nil
	}
	return "", nil, nil, fmt.Errorf("%s runs no service %q (it runs %s)", nodeName, service, strings.Join(scenario.ServiceNames(ns), ", "))
}

// Stop implements verify.Controller.
func (c *Control) Stop(ctx context.Context, nodeName, service string, kill bool) error {
	l, err := c.r.Store.Load(c.lab)
	if err != nil {
		return err
	}
	role, _, _, err := c.role(l, nodeName, service)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(l.Processes, func(p state.Process) bool { return p.Role == role })
	if i < 0 || l.Processes[i].Exited() {
		return fmt.Errorf("%s's %s is not running", nodeName, service)
	}
	p := l.Processes[i]
	// A clean stop asks the process (keepalived's parent passes it on to its
	// children, which say goodbye: VRRP priority 0); kill -9 takes its whole
	// process group at once, as a crash would (lvslab starts each service
	// as a session of its own).
	pid, sig := p.Pid, syscall.SIGTERM
	if kill {
		sig = syscall.SIGKILL
		if pgid, err := syscall.Getpgid(p.Pid); err == nil && pgid == p.Pid {
			pid = -p.Pid
		}
	}
	if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("%s's %s (pid %d): %w", nodeName, service, p.Pid, err)
	}
	return p.WaitExited(ctx, stopWithin)
}

// Start implements verify.Controller.
func (c *Control) Start(ctx context.Context, nodeName, service string) error {
	l, err := c.r.Store.Load(c.lab)
	if err != nil {
		return err
	}
	role, argv, ns, err := c.role(l, nodeName, service)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(l.Processes, func(p state.Process) bool { return p.Role == role })
	if i >= 0 && !l.Processes[i].Exited() { // a zombie not yet reaped has ended
		return fmt.Errorf("%s's %s is running already (pid %d)", nodeName, service, l.Processes[i].Pid)
	}
	n := l.Handles()[nodeName]
	st := c.r.starter(c.rt, c.lab)
	var p state.Process
	switch {
	case role == apply.KeepalivedRole(nodeName):
		p, err = st.StartKeepalived(ctx, n, *ns)
	case argv == nil:
		p, err = st.StartWeb(ctx, n, ns.Web)
		if err == nil {
			err = WaitWeb(ctx, l.Handles(), lab.Spec{Nodes: []lab.NodeSpec{*ns}})
		}
	default:
		p, err = st.StartCommand(ctx, n, role, argv)
	}
	if err != nil {
		return err
	}
	if i >= 0 {
		l.Processes[i] = p
	} else {
		l.Processes = append(l.Processes, p)
	}
	return c.r.Store.Save(l)
}

// Exec implements verify.Controller: in the node's container where it has
// one, else in its namespace.
func (c *Control) Exec(ctx context.Context, nodeName string, argv []string) (int, string, error) {
	l, err := c.r.Store.Load(c.lab)
	if err != nil {
		return 0, "", err
	}
	var out strings.Builder
	if cl, ok := c.rt.(clabrt.Containerlab); ok {
		status, err := cl.Exec(ctx, topo.NSName(c.lab, nodeName), argv, nil, &out, &out)
		return status, out.String(), err
	}
	n, ok := l.Handles()[nodeName]
	if !ok {
		return 0, "", fmt.Errorf("lab %s has no node %s", c.lab, nodeName)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err = n.Run(cmd)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), out.String(), nil
	}
	return 0, out.String(), err
}

// Fault implements verify.Controller: the signal that sets the web server's
// mode, until a request to it from inside its node shows the mode (a signal
// that comes before the daemon listens for it is lost: Go ignores it).
func (c *Control) Fault(ctx context.Context, nodeName string, answer lab.WebAnswer) error {
	l, err := c.r.Store.Load(c.lab)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(l.Processes, func(p state.Process) bool { return p.Role == apply.WebRole(nodeName) })
	if i < 0 || l.Processes[i].Exited() {
		return fmt.Errorf("%s's web server is not running", nodeName)
	}
	s, err := scenario.Parse(l.Scenario, []byte(l.Applied))
	if err != nil {
		return fmt.Errorf("lab %s: its scenario: %w", l.Name, err)
	}
	ns, _ := s.Spec.Node(nodeName)
	if ns.Web == nil || len(ns.Web.HTTP) == 0 {
		return fmt.Errorf("%s serves no plain HTTP to fault", nodeName)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", ns.Web.HTTP[0])
	mode := map[lab.WebAnswer]webd.Mode{lab.AnswerOK: webd.ModeOK, lab.AnswerError: webd.ModeError, lab.AnswerStall: webd.ModeStall}[answer]
	pid := l.Processes[i].Pid
	deadline := time.Now().Add(stopWithin)
	for {
		if err := syscall.Kill(pid, webd.ModeSignal(mode)); err != nil {
			return fmt.Errorf("%s's web server (pid %d): %w", nodeName, pid, err)
		}
		got := probe(ctx, l.Handles()[nodeName], addr)
		if got == mode {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s's web server still answers %s after %v of signals for %s", nodeName, got, stopWithin, mode)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// probe asks a web server from inside its node how it answers now: its
// socket is opened on a thread in the node's namespace.
func probe(ctx context.Context, n node.Node, addr string) webd.Mode {
	var conn net.Conn
	if err := n.Do(func() error {
		var err error
		conn, err = (&net.Dialer{Timeout: 300 * time.Millisecond}).DialContext(ctx, "tcp", addr)
		return err
	}); err != nil {
		return webd.ModeStall // nothing listens: no answer either
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := io.WriteString(conn, "GET / HTTP/1.0\r\n\r\n"); err != nil {
		return webd.ModeStall
	}
	status, err := bufio.NewReader(conn).ReadString('\n')
	switch {
	case err != nil:
		return webd.ModeStall
	case strings.Contains(status, " 500 "):
		return webd.ModeError
	}
	return webd.ModeOK
}

// VRRP asks a node's keepalived for its VRRP instances' states: it signals
// keepalived to write its JSON dump (into the dump directory lvslab gave it,
// or the container's /tmp), and reads it once written.
func (c *Control) VRRP(ctx context.Context, nodeName string) (map[string]lab.VRRPState, error) {
	l, err := c.r.Store.Load(c.lab)
	if err != nil {
		return nil, err
	}
	role := apply.KeepalivedRole(nodeName)
	i := slices.IndexFunc(l.Processes, func(p state.Process) bool { return p.Role == role })
	if i < 0 || l.Processes[i].Exited() {
		return nil, fmt.Errorf("%s's keepalived is not running", nodeName)
	}
	pid := l.Processes[i].Pid
	file := filepath.Join(apply.KeepalivedTmpDir(c.r.logDir(c.lab), nodeName), keepalived.DumpFile)
	if l.Runtime == lab.RuntimeContainerlab {
		file = fmt.Sprintf("/proc/%d/root/tmp/%s", pid, keepalived.DumpFile)
	}
	if err := os.Remove(file); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s's keepalived: %w", nodeName, err)
	}
	// A real-time signal's default action ends the process: keepalived must
	// have installed its handler first (it does a moment after it starts).
	if !catches(pid, keepalived.SignalJSON) {
		return nil, fmt.Errorf("%s's keepalived is starting (it does not handle its JSON signal yet)", nodeName)
	}
	if err := syscall.Kill(pid, keepalived.SignalJSON); err != nil {
		return nil, fmt.Errorf("%s's keepalived (pid %d): %w", nodeName, pid, err)
	}
	// Its VRRP process writes the file a moment later; a file being written
	// does not parse yet.
	deadline := time.Now().Add(dumpWithin)
	for {
		b, err := os.ReadFile(file)
		if err == nil {
			states, perr := keepalived.ParseDump(b)
			if perr == nil {
				return states, nil
			}
			err = perr
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s's keepalived wrote no state within %v: %w", nodeName, dumpWithin, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// dumpWithin bounds how long keepalived may take to write its state.
const dumpWithin = 2 * time.Second

// catches reports whether process pid takes sig without dying of it: it has
// a handler (SigCgt in /proc/PID/status) or blocks it to read it from a
// signalfd (SigBlk), as keepalived does.
func catches(pid int, sig syscall.Signal) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	for line := range strings.Lines(string(b)) {
		for _, field := range []string{"SigCgt:", "SigBlk:"} {
			if mask, ok := strings.CutPrefix(line, field); ok {
				m, err := strconv.ParseUint(strings.TrimSpace(mask), 16, 64)
				if err == nil && m&(1<<(uint(sig)-1)) != 0 {
					return true
				}
			}
		}
	}
	return false
}
