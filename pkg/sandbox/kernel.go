// Package sandbox runs lvslab inside Debian's user-mode-linux kernel, a real Linux
// kernel with IPVS that runs as an ordinary process, for hosts whose own kernel
// cannot do IPVS.
//
// The guest's init is the lvslab binary itself (the host's file system is the
// guest's root, through hostfs). A small agent in the guest takes requests over the
// kernel's first serial line, runs each as a process and streams its output and
// exit status back; frames carry a stream id, so many requests run at once. A
// kernel is either one-shot (Run: boot, run one command, power off) or kept by a
// supervisor process that later lvslab commands reach through a Unix socket.
package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Config says how to boot the sandbox kernel.
type Config struct {
	Kernel  string // the UML kernel binary; /usr/bin/linux.uml when empty
	Modules string // its module tree; found under /usr/lib/uml/modules when empty
	// Mem is the guest's memory in bytes; when 0, GuestMem's choice
	// (LVSLAB_SANDBOX_MEM, else sized from the host's free memory).
	Mem int64
	// Grace is how long a cancelled command, and every command of a client whose
	// connection drops, has between its SIGINT and being killed; DefaultGrace
	// when 0.
	Grace time.Duration
	// Bare boots a guest that looks like a distribution's host with IPVS not yet
	// loaded: no module is loaded at boot, and the module tree is at
	// /lib/modules/<release>, where lvslab (and the kernel's own module
	// autoloading through /sbin/modprobe) find it as on any host.
	Bare bool
	Self string    // the lvslab binary, run as the guest's init
	Dir  string    // a directory for UML's own files (its pid, mconsole socket)
	Log  io.Writer // the kernel's console output; discarded when nil
}

func (c *Config) defaults() error {
	if c.Kernel == "" {
		c.Kernel = "/usr/bin/linux.uml"
	}
	if _, err := os.Stat(c.Kernel); err != nil {
		return fmt.Errorf("sandbox: no user-mode-linux kernel at %s (apt-get install user-mode-linux, or make deps): %w", c.Kernel, err)
	}
	if c.Modules == "" {
		ents, _ := os.ReadDir("/usr/lib/uml/modules")
		for _, e := range ents {
			c.Modules = "/usr/lib/uml/modules/" + e.Name()
		}
		if c.Modules == "" {
			return errors.New("sandbox: no module tree under /usr/lib/uml/modules")
		}
	}
	if c.Mem == 0 {
		m, err := GuestMem()
		if err != nil {
			return err
		}
		c.Mem = m
	}
	if c.Grace <= 0 {
		c.Grace = DefaultGrace
	}
	if c.Self == "" {
		self, err := os.Executable()
		if err != nil {
			return err
		}
		c.Self = self
	}
	return nil
}

// consoleLines is how many of the console's last lines an error quotes when
// the kernel stops.
const consoleLines = 15

// stopWait bounds the wait for a stopping kernel's exit status and last
// console output once its serial line has closed.
const stopWait = 5 * time.Second

// Kernel is a running sandbox kernel.
type Kernel struct {
	tmp         string // UML's directory, when Boot made it
	cmd         *exec.Cmd
	mux         *mux
	grace       time.Duration
	mem         int64
	console     *tail         // the console's last lines
	consoleDone chan struct{} // closed when the console reaches its end
	exited      chan struct{} // closed when the kernel process has exited
	waitErr     error         // its exit status, once exited is closed
}

// Boot starts the kernel and returns once its agent serves requests.
func Boot(ctx context.Context, cfg Config) (*Kernel, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	tmp := ""
	if cfg.Dir == "" {
		d, err := os.MkdirTemp("", "lvslab-uml-")
		if err != nil {
			return nil, err
		}
		cfg.Dir, tmp = d, d
	}
	toGuestR, toGuestW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	fromGuestR, fromGuestW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	logR, logW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	args := []string{
		fmt.Sprintf("mem=%dM", cfg.Mem>>20), "quiet", "root=/dev/root", "rootfstype=hostfs", "rootflags=/", "rw",
		"init=" + cfg.Self, "uml_dir=" + cfg.Dir, "umid=lvslab",
		"con=null", "ssl=null", "ssl0=fd:3,fd:4", "con0=null,fd:5",
		EnvGuest + "=1", "LVSLAB_MODULES=" + cfg.Modules,
	}
	if cfg.Bare {
		args = append(args, envBare+"=1")
	}
	cmd := exec.Command(cfg.Kernel, args...)
	cmd.ExtraFiles = []*os.File{toGuestR, fromGuestW, logW}
	cmd.Stdout, cmd.Stderr = logW, logW
	// Its own session: the kernel outlives the command that started it, and its
	// helper processes can be stopped together through the process group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	toGuestR.Close()
	fromGuestW.Close()
	logW.Close()
	if err != nil {
		return nil, fmt.Errorf("sandbox: start %s: %w", cfg.Kernel, err)
	}
	k := &Kernel{
		tmp: tmp, cmd: cmd, grace: cfg.Grace, mem: cfg.Mem,
		console: &tail{max: consoleLines}, consoleDone: make(chan struct{}), exited: make(chan struct{}),
	}
	logTo := io.Writer(k.console)
	if cfg.Log != nil {
		logTo = io.MultiWriter(cfg.Log, k.console)
	}
	go func() {
		_, _ = io.Copy(logTo, logR)
		close(k.consoleDone)
	}()
	go func() {
		k.waitErr = cmd.Wait()
		close(k.exited)
	}()
	k.mux = newMux(fromGuestR, toGuestW, k.stopped)
	boot := time.NewTimer(60 * time.Second)
	defer boot.Stop()
	select {
	case <-k.mux.ready:
		return k, nil
	case <-k.mux.done:
		k.Kill()
		return nil, fmt.Errorf("sandbox: boot: %w", k.mux.closedErr())
	case <-ctx.Done():
		k.Kill()
		return nil, fmt.Errorf("sandbox: boot: %w", ctx.Err())
	case <-boot.C:
		k.Kill()
		return nil, fmt.Errorf("sandbox: boot: the agent was not ready after 60s; the console's last lines:\n%s", k.console.quote())
	}
}

// stopped is the error of calls cut short by the serial line's end: it says
// how the kernel ended and quotes the end of its console.
func (k *Kernel) stopped(linkErr error) error {
	t := time.NewTimer(stopWait)
	defer t.Stop()
	status := "still running, its serial line broken: " + linkErr.Error()
	select {
	case <-k.exited:
		status = "exit status 0"
		if k.waitErr != nil {
			status = k.waitErr.Error()
		}
	case <-t.C:
	}
	select {
	case <-k.consoleDone:
	case <-t.C:
	}
	return kernelStoppedError{fmt.Sprintf("%s (%s); the last lines of its console:\n%s", ErrKernelStopped, status, k.console.quote())}
}

// Pid is the kernel's host process id (also its process group).
func (k *Kernel) Pid() int { return k.cmd.Process.Pid }

// Mem is the guest memory the kernel booted with, in bytes.
func (k *Kernel) Mem() int64 { return k.mem }

// Exec runs argv in the guest with stdin (nil for none), writing its output to
// stdout and stderr, and returns its exit status. Cancelling ctx interrupts the
// process (SIGINT to its process group, as Ctrl-C in a terminal) and kills the
// group if it has not exited after the Config's Grace. When the kernel stops
// meanwhile, the error matches ErrKernelStopped and quotes its console.
func (k *Kernel) Exec(ctx context.Context, req Request, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	return k.mux.exec(ctx, k.grace, req, stdin, stdout, stderr)
}

// Memory reports the guest's memory, read from its /proc/meminfo.
func (k *Kernel) Memory(ctx context.Context) (MemInfo, error) {
	return guestMemory(ctx, k.mux, k.grace)
}

// Shutdown asks the guest to power off and waits for the kernel to exit; if it
// has not within the timeout, it is killed.
func (k *Kernel) Shutdown(timeout time.Duration) error {
	_ = k.mux.fw.write(framePowerOff, 0, nil)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-k.exited:
		k.killGroup()
		return nil
	case <-t.C:
		k.Kill()
		return errors.New("sandbox: the kernel did not power off; killed")
	}
}

// Kill stops the kernel and its helper processes at once.
func (k *Kernel) Kill() {
	k.killGroup()
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-k.exited:
	case <-t.C:
	}
}

func (k *Kernel) killGroup() {
	_ = unix.Kill(-k.cmd.Process.Pid, unix.SIGKILL)
	if k.tmp != "" {
		os.RemoveAll(k.tmp)
	}
}

// HostEnv is the environment passed to guest processes: the caller's.
func HostEnv() []string {
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, EnvGuest+"=") {
			env = append(env, e)
		}
	}
	return env
}

// Run boots a kernel, runs argv in it (in the current directory, with this
// environment and standard streams) and powers it off; it returns argv's exit
// status. This is the one-shot form, e.g. for go test -exec. Cancelling ctx
// interrupts argv as Exec does; if the kernel stops under it, the error quotes
// the console's last lines.
func Run(ctx context.Context, cfg Config, argv []string) (int, error) {
	k, err := Boot(ctx, cfg)
	if err != nil {
		return 0, err
	}
	defer k.Shutdown(10 * time.Second)
	dir, _ := os.Getwd()
	return k.Exec(ctx, Request{Argv: argv, Env: HostEnv(), Dir: dir}, nil, os.Stdout, os.Stderr)
}

// tail keeps the last max lines written to it. A run of stack-dump lines (a
// panic's or an oops's) counts as one line, so that the message above it stays
// in view.
type tail struct {
	max     int
	mu      sync.Mutex
	lines   []string
	folded  int // stack lines folded into the last line; 0 when it is not a fold
	partial []byte
}

// stackLine matches a kernel stack dump's lines: " [<6002c171>] fork_handler+0x92/0x94"
// and " 606944ba 607e7fcd a0113b80 6067bb96".
var stackLine = regexp.MustCompile(`^\s*(\[<[0-9a-f]+>\]|([0-9a-f]{8,16}\s*)+$)`)

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.partial = append(t.partial, p...)
	for {
		i := slices.Index(t.partial, '\n')
		if i < 0 {
			break
		}
		t.add(string(t.partial[:i]))
		t.partial = t.partial[i+1:]
	}
	if len(t.partial) > 4<<10 { // a line that never ends: keep it as a line
		t.add(string(t.partial))
		t.partial = nil
	}
	return len(p), nil
}

func (t *tail) add(line string) {
	line = strings.TrimRight(line, "\r")
	if line == "" {
		return
	}
	if stackLine.MatchString(line) {
		if t.folded == 0 {
			t.lines = append(t.lines, "")
		}
		t.folded++
		t.lines[len(t.lines)-1] = fmt.Sprintf("(%d lines of stack dump)", t.folded)
	} else {
		t.folded = 0
		t.lines = append(t.lines, line)
	}
	if len(t.lines) > t.max {
		t.lines = slices.Delete(t.lines, 0, len(t.lines)-t.max)
	}
}

// quote is the kept lines, indented, with an unfinished last line.
func (t *tail) quote() string {
	t.mu.Lock()
	lines := slices.Clone(t.lines)
	if s := strings.TrimRight(string(t.partial), "\r"); s != "" {
		lines = append(lines, s)
	}
	t.mu.Unlock()
	if len(lines) > t.max {
		lines = lines[len(lines)-t.max:]
	}
	if len(lines) == 0 {
		return "  (nothing)"
	}
	return "  " + strings.Join(lines, "\n  ")
}
