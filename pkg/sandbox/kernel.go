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
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Config says how to boot the sandbox kernel.
type Config struct {
	Kernel  string    // the UML kernel binary; /usr/bin/linux.uml when empty
	Modules string    // its module tree; found under /usr/lib/uml/modules when empty
	Mem     string    // guest memory; 512M when empty
	Self    string    // the lvslab binary, run as the guest's init
	Dir     string    // a directory for UML's own files (its pid, mconsole socket)
	Log     io.Writer // the kernel's console output; discarded when nil
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
	if c.Mem == "" {
		c.Mem = "512M"
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

// Kernel is a running sandbox kernel.
type Kernel struct {
	tmp  string // UML's directory, when Boot made it
	cmd  *exec.Cmd
	mux  *mux
	exit chan error
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
		"mem=" + cfg.Mem, "quiet", "root=/dev/root", "rootfstype=hostfs", "rootflags=/", "rw",
		"init=" + cfg.Self, "uml_dir=" + cfg.Dir, "umid=lvslab",
		"con=null", "ssl=null", "ssl0=fd:3,fd:4", "con0=null,fd:5",
		EnvGuest + "=1", "LVSLAB_MODULES=" + cfg.Modules,
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
	logTo := cfg.Log
	if logTo == nil {
		logTo = io.Discard
	}
	go io.Copy(logTo, logR)
	k := &Kernel{tmp: tmp, cmd: cmd, mux: newMux(fromGuestR, toGuestW), exit: make(chan error, 1)}
	go func() { k.exit <- cmd.Wait() }()
	select {
	case <-k.mux.ready:
		return k, nil
	case <-k.mux.done:
		k.Kill()
		return nil, fmt.Errorf("sandbox: the kernel stopped before its agent was ready: %v", k.mux.err)
	case <-ctx.Done():
		k.Kill()
		return nil, fmt.Errorf("sandbox: boot: %w", ctx.Err())
	case <-time.After(60 * time.Second):
		k.Kill()
		return nil, errors.New("sandbox: boot: the agent was not ready after 60s")
	}
}

// Pid is the kernel's host process id (also its process group).
func (k *Kernel) Pid() int { return k.cmd.Process.Pid }

// Exec runs argv in the guest with stdin (nil for none), writing its output to
// stdout and stderr, and returns its exit status. Cancelling ctx kills the process.
func (k *Kernel) Exec(ctx context.Context, req Request, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	return k.mux.exec(ctx, req, stdin, stdout, stderr)
}

// exec runs one request on a new stream and waits for its exit status.
func (m *mux) exec(ctx context.Context, req Request, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return 0, err
	}
	s, err := m.open(b)
	if err != nil {
		return 0, err
	}
	return s.wait(ctx, stdin, stdout, stderr)
}

func (s *stream) wait(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	go s.pump(stdin)
	killed := false
	for {
		select {
		case f, ok := <-s.in:
			if !ok {
				return 0, errClosed
			}
			switch f.typ {
			case frameStdout:
				_, _ = stdout.Write(f.payload)
			case frameStderr:
				_, _ = stderr.Write(f.payload)
			case frameExit:
				return exitCode(f.payload), nil
			}
		case <-ctx.Done():
			if !killed {
				killed = true
				_ = s.send(frameKill, nil)
			}
		}
	}
}

// Shutdown asks the guest to power off and waits for the kernel to exit; if it
// has not within the timeout, it is killed.
func (k *Kernel) Shutdown(timeout time.Duration) error {
	_ = k.mux.fw.write(framePowerOff, 0, nil)
	select {
	case <-k.exit:
		k.killGroup()
		return nil
	case <-time.After(timeout):
		k.Kill()
		return errors.New("sandbox: the kernel did not power off; killed")
	}
}

// Kill stops the kernel and its helper processes at once.
func (k *Kernel) Kill() {
	k.killGroup()
	select {
	case <-k.exit:
	case <-time.After(10 * time.Second):
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
// status. This is the one-shot form, e.g. for go test -exec.
func Run(ctx context.Context, cfg Config, argv []string) (int, error) {
	k, err := Boot(ctx, cfg)
	if err != nil {
		return 0, err
	}
	defer k.Shutdown(10 * time.Second)
	dir, _ := os.Getwd()
	return k.Exec(ctx, Request{Argv: argv, Env: HostEnv(), Dir: dir}, nil, os.Stdout, os.Stderr)
}
