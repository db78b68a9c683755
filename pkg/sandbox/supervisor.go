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
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lvslab/lvslab/pkg/state"
	"golang.org/x/sys/unix"
)

// DefaultDir holds the kept sandbox kernel's files on the host.
const DefaultDir = "/run/lvslab/sandbox"

// EnvDir names the environment variable that moves the kept sandbox's
// directory away from DefaultDir (e.g. for a second, private sandbox).
const EnvDir = "LVSLAB_SANDBOX_DIR"

// Dir is the kept sandbox's directory: LVSLAB_SANDBOX_DIR when set, else
// DefaultDir.
func Dir() string {
	if d := os.Getenv(EnvDir); d != "" {
		return d
	}
	return DefaultDir
}

// Files of a kept sandbox, under its directory.
const (
	sockName   = "agent.sock"
	pidName    = "supervisor.pid" // "<pid> <start time>" of the supervisor
	umlPidName = "kernel.pid"     // "<pid> <start time>" of the UML process (its process group)
	consoleLog = "console.log"
)

// Serve boots a kernel and serves it on a Unix socket in dir until the kernel
// powers off (a Stop request, or ctx ending). It is the body of the detached
// supervisor process that Ensure starts. The console goes to console.log in dir,
// which is kept after the kernel stops. When a client's connection drops, the
// processes it started are interrupted, and killed after cfg.Grace.
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
	var relays sync.WaitGroup
	for {
		c, err := ln.Accept()
		if err != nil {
			break
		}
		go k.proxy(c, &relays)
	}
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-k.exited:
	case <-t.C:
		k.Kill()
	}
	k.killGroup()
	// Let the relays tell their clients why their processes ended, with a bound:
	// a client that does not read must not keep the supervisor. Every relay was
	// counted before the link closed (mux.open), so none is added after done.
	t.Reset(stopWait + 5*time.Second)
	select {
	case <-k.mux.done:
	case <-t.C:
		return nil
	}
	relayed := make(chan struct{})
	go func() { relays.Wait(); close(relayed) }()
	select {
	case <-relayed:
	case <-t.C:
	}
	return nil
}

func cleanup(dir string) {
	for _, n := range []string{sockName, pidName, umlPidName} {
		os.Remove(filepath.Join(dir, n))
	}
	os.RemoveAll(filepath.Join(dir, "uml"))
}

// proxy relays one client connection's streams to the kernel. When the
// connection drops, the processes still running on it are interrupted (SIGINT)
// and, those still there after the kernel's grace period, killed.
func (k *Kernel) proxy(c net.Conn, relays *sync.WaitGroup) {
	defer c.Close()
	out := &frameWriter{w: c}
	var mu sync.Mutex
	streams := map[uint32]*stream{}
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		if len(streams) == 0 {
			return
		}
		for _, s := range streams {
			_ = s.send(frameSignal, intPayload(int(unix.SIGINT)))
		}
		time.AfterFunc(k.grace, func() {
			mu.Lock()
			defer mu.Unlock()
			for _, s := range streams { // those that have not exited
				_ = s.send(frameKill, nil)
			}
		})
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
			s, err := k.mux.open(f.payload, relays)
			if err != nil {
				k.relayEnd(out, f.stream, err)
				continue
			}
			mu.Lock()
			streams[f.stream] = s
			mu.Unlock()
			go func(clientID uint32) {
				defer relays.Done()
				ended := false
				for g := range s.in {
					ended = final(g)
					_ = out.write(g.typ, clientID, g.payload)
				}
				if !ended { // the kernel stopped under it: say so
					k.relayEnd(out, clientID, k.mux.closedErr())
				}
				mu.Lock()
				delete(streams, clientID)
				mu.Unlock()
			}(f.stream)
		case framePowerOff:
			_ = k.mux.fw.write(framePowerOff, 0, nil)
		case frameStdin, frameStdinEOF, frameSignal, frameKill:
			if s != nil {
				_ = s.send(f.typ, f.payload)
			}
		}
	}
}

// relayEnd ends a client's stream with err: a stopped kernel as such, anything
// else as a message and status 255.
func (k *Kernel) relayEnd(out *frameWriter, id uint32, err error) {
	if errors.Is(err, ErrKernelStopped) {
		_ = out.write(frameStopped, id, []byte(err.Error()))
		return
	}
	_ = out.write(frameStderr, id, []byte(err.Error()+"\n"))
	_ = out.write(frameExit, id, exitPayload(255))
}

// Client talks to a kept sandbox kernel through its supervisor.
type Client struct {
	// Grace is how long a process whose Exec was cancelled has between its
	// SIGINT and being killed; DefaultGrace when 0. Set it before any Exec.
	Grace   time.Duration
	dir     string
	conn    net.Conn
	mux     *mux
	closing atomic.Bool
}

// Dial connects to the kept sandbox in dir.
func Dial(dir string) (*Client, error) {
	conn, err := net.DialTimeout("unix", filepath.Join(dir, sockName), 2*time.Second)
	if err != nil {
		return nil, err
	}
	c := &Client{dir: dir, conn: conn}
	c.mux = newMux(conn, conn, c.linkClosed)
	return c, nil
}

// linkClosed is the error of the streams still open when the connection to the
// supervisor ends without a word from it (the supervisor was killed, say): the
// console log in dir may tell why.
func (c *Client) linkClosed(err error) error {
	if c.closing.Load() {
		return errClosed
	}
	path := filepath.Join(c.dir, consoleLog)
	return fmt.Errorf("%w (the kept sandbox's supervisor in %s: %v); the last lines of %s:\n%s", errClosed, c.dir, err, path, logTail(path, consoleLines))
}

// logTail quotes the last n lines of a log file, reading at most its last 64 KiB.
func logTail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return "  (" + err.Error() + ")"
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > 64<<10 {
		_, _ = f.Seek(-64<<10, io.SeekEnd)
	}
	t := &tail{max: n}
	_, _ = io.Copy(t, f)
	return t.quote()
}

// Close closes the connection; processes still running on it are interrupted,
// then killed after the supervisor's grace period.
func (c *Client) Close() error {
	c.closing.Store(true)
	return c.conn.Close()
}

// Exec runs a process in the kept kernel, like Kernel.Exec (Grace is the
// client's).
func (c *Client) Exec(ctx context.Context, req Request, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	return c.mux.exec(ctx, c.Grace, req, stdin, stdout, stderr)
}

// Memory reports the guest's memory, read from its /proc/meminfo.
func (c *Client) Memory(ctx context.Context) (MemInfo, error) {
	return guestMemory(ctx, c.mux, c.Grace)
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
