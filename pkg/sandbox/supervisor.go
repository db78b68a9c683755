package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/lvslab/lvslab/pkg/state"
	"golang.org/x/sys/unix"
)

// DefaultDir holds the kept sandbox kernel's files on the host.
const DefaultDir = "/run/lvslab/sandbox"

// Files of a kept sandbox, under its directory.
const (
	sockName   = "agent.sock"
	pidName    = "supervisor.pid" // "<pid> <start time>" of the supervisor
	umlPidName = "kernel.pid"     // "<pid> <start time>" of the UML process (its process group)
	consoleLog = "console.log"
)

// Serve boots a kernel and serves it on a Unix socket in dir until the kernel
// powers off (a Stop request, or ctx ending). It is the body of the detached
// supervisor process that Ensure starts.
func Serve(ctx context.Context, dir string, cfg Config) error {
	if err := os.MkdirAll(filepath.Join(dir, "uml"), 0o755); err != nil {
		return err
	}
	log, err := os.OpenFile(filepath.Join(dir, consoleLog), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	cfg.Dir, cfg.Log = filepath.Join(dir, "uml"), log
	k, err := Boot(ctx, cfg)
	if err != nil {
		return err
	}
	defer cleanup(dir)
	if err := writePid(filepath.Join(dir, umlPidName), k.Pid()); err != nil {
		k.Kill()
		return err
	}
	sock := filepath.Join(dir, sockName)
	os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		k.Kill()
		return err
	}
	go func() {
		select {
		case <-ctx.Done():
			_ = k.Shutdown(10 * time.Second)
		case <-k.mux.done:
		}
		ln.Close()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			break
		}
		go k.proxy(c)
	}
	select {
	case <-k.exit:
	case <-time.After(10 * time.Second):
		k.Kill()
	}
	k.killGroup()
	return nil
}

func cleanup(dir string) {
	for _, n := range []string{sockName, pidName, umlPidName} {
		os.Remove(filepath.Join(dir, n))
	}
	os.RemoveAll(filepath.Join(dir, "uml"))
}

// proxy relays one client connection's streams to the kernel.
func (k *Kernel) proxy(c net.Conn) {
	defer c.Close()
	out := &frameWriter{w: c}
	var mu sync.Mutex
	streams := map[uint32]*stream{}
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, s := range streams {
			_ = s.send(frameKill, nil)
		}
	}()
	for {
		f, err := readFrame(c)
		if err != nil {
			return
		}
		mu.Lock()
		s := streams[f.stream]
		mu.Unlock()
		switch f.typ {
		case frameOpen:
			s, err := k.mux.open(f.payload)
			if err != nil {
				_ = out.write(frameStderr, f.stream, []byte(err.Error()+"\n"))
				_ = out.write(frameExit, f.stream, exitPayload(255))
				continue
			}
			mu.Lock()
			streams[f.stream] = s
			mu.Unlock()
			go func(clientID uint32) {
				for g := range s.in {
					_ = out.write(g.typ, clientID, g.payload)
				}
				mu.Lock()
				delete(streams, clientID)
				mu.Unlock()
			}(f.stream)
		case framePowerOff:
			_ = k.mux.fw.write(framePowerOff, 0, nil)
		default:
			if s != nil {
				_ = s.send(f.typ, f.payload)
			}
		}
	}
}

// Client talks to a kept sandbox kernel through its supervisor.
type Client struct {
	conn net.Conn
	mux  *mux
}

// Dial connects to the kept sandbox in dir.
func Dial(dir string) (*Client, error) {
	c, err := net.DialTimeout("unix", filepath.Join(dir, sockName), 2*time.Second)
	if err != nil {
		return nil, err
	}
	return &Client{conn: c, mux: newMux(c, c)}, nil
}

// Close closes the connection; processes still running on it are killed.
func (c *Client) Close() error { return c.conn.Close() }

// Exec runs a process in the kept kernel, like Kernel.Exec.
func (c *Client) Exec(ctx context.Context, req Request, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	return c.mux.exec(ctx, req, stdin, stdout, stderr)
}

// Running reports whether a kept sandbox serves in dir.
func Running(dir string) bool {
	c, err := Dial(dir)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// Ensure returns a client of the kept sandbox in dir, starting one (a detached
// `self sandbox serve` process) if none runs.
func Ensure(ctx context.Context, dir, self string) (*Client, error) {
	if c, err := Dial(dir); err == nil {
		return c, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return nil, err
	}
	defer unix.Flock(int(lock.Fd()), unix.LOCK_UN)
	if c, err := Dial(dir); err == nil {
		return c, nil // another command started it meanwhile
	}
	if err := killProcs(dir); err != nil { // leftovers of a crashed one
		return nil, err
	}
	logf, err := os.OpenFile(filepath.Join(dir, "supervisor.log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(self, "sandbox", "serve", "--dir", dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("sandbox: start supervisor: %w", err)
	}
	if err := writePid(filepath.Join(dir, pidName), cmd.Process.Pid); err != nil {
		return nil, err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if c, err := Dial(dir); err == nil {
			return c, nil
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(filepath.Join(dir, "supervisor.log"))
			return nil, fmt.Errorf("sandbox: the supervisor exited: %s", strings.TrimSpace(string(b)))
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
}

// Stop powers the kept sandbox in dir off and waits until it is gone; whatever
// does not stop in time is killed. Stopping a sandbox that is not running is fine.
func Stop(ctx context.Context, dir string) error {
	if c, err := Dial(dir); err == nil {
		_ = c.mux.fw.write(framePowerOff, 0, nil)
		select {
		case <-c.mux.done:
		case <-time.After(10 * time.Second):
		case <-ctx.Done():
		}
		c.Close()
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if !alive(filepath.Join(dir, pidName)) && !alive(filepath.Join(dir, umlPidName)) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return Kill(dir)
}

// Kill removes what a crashed or stuck sandbox left in dir: its supervisor, the
// kernel's whole process group, and the directory.
func Kill(dir string) error {
	if err := killProcs(dir); err != nil {
		return err
	}
	// Nothing of the sandbox is left running: remove its directory, and lvslab's
	// parent directory too if nothing else is in it.
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	_ = os.Remove(filepath.Dir(dir))
	return nil
}

func killProcs(dir string) error {
	var errs []error
	for _, name := range []string{pidName, umlPidName} {
		p, err := readPid(filepath.Join(dir, name))
		if err != nil || !p.Alive() {
			continue
		}
		if name == umlPidName {
			_ = unix.Kill(-p.Pid, unix.SIGKILL)
		}
		errs = append(errs, p.Kill())
	}
	cleanup(dir)
	return errors.Join(errs...)
}

func alive(pidFile string) bool {
	p, err := readPid(pidFile)
	return err == nil && p.Alive()
}

func writePid(path string, pid int) error {
	st, err := state.ProcessStartTime(pid)
	if err != nil {
		return err
	}
	return os.WriteFile(path, []byte(fmt.Sprintf("%d %d\n", pid, st)), 0o644)
}

func readPid(path string) (state.Process, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return state.Process{}, err
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return state.Process{}, fmt.Errorf("%s: malformed", path)
	}
	pid, err1 := strconv.Atoi(f[0])
	st, err2 := strconv.ParseUint(f[1], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return state.Process{}, fmt.Errorf("%s: %w", path, err)
	}
	return state.Process{Role: filepath.Base(path), Pid: pid, StartTime: st}, nil
}
