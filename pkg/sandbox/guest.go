package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"

	"github.com/lvslab/lvslab/pkg/kmod"
	"github.com/lvslab/lvslab/pkg/lab"
	"golang.org/x/sys/unix"
)

// EnvGuest is set on the kernel command line: init is lvslab, acting as the guest.
const EnvGuest = "LVSLAB_GUEST"

// EnvInSandbox is set for every process the agent starts: lvslab run there uses
// the kernel it runs on.
const EnvInSandbox = "LVSLAB_IN_SANDBOX"

// IsGuest reports whether this process is init, or the agent, inside the sandbox kernel.
func IsGuest() bool { return os.Getenv(EnvGuest) != "" && os.Getenv(EnvInSandbox) == "" }

// GuestMain runs lvslab's part inside the sandbox kernel. As init (pid 1) it
// prepares the system, starts the agent as its child and reaps every process
// until the agent ends, then powers off. As the agent, it serves the host over the
// serial line until asked to power off or the line breaks. It never returns.
func GuestMain() {
	if os.Getpid() != 1 {
		tty, err := openRaw("/dev/ttyS0")
		if err != nil {
			fmt.Fprintf(os.Stderr, "lvslab agent: serial line: %v\n", err)
			os.Exit(1)
		}
		a := &agent{fw: &frameWriter{w: tty}, procs: map[uint32]*guestProc{}}
		fmt.Fprintf(os.Stderr, "lvslab agent: %v\n", a.serve(tty))
		os.Exit(0)
	}
	if err := guestSetup(); err != nil {
		fmt.Fprintf(os.Stderr, "lvslab guest: %v\n", err)
		poweroff()
	}
	self, _ := os.Executable()
	agentProc, err := os.StartProcess(self, []string{self}, &os.ProcAttr{
		Env:   os.Environ(),
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "lvslab guest: start agent: %v\n", err)
		poweroff()
	}
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, 0, nil)
		if pid == agentProc.Pid || errors.Is(err, unix.ECHILD) {
			poweroff()
		}
	}
}

func guestSetup() error {
	mounts := []struct{ src, dst, typ, data string }{
		{"proc", "/proc", "proc", ""},
		{"sysfs", "/sys", "sysfs", ""},
		{"tmpfs", "/run", "tmpfs", "mode=0755"}, // the guest's own /run: netns, lab records
	}
	for _, m := range mounts {
		if err := unix.Mount(m.src, m.dst, m.typ, 0, m.data); err != nil {
			return fmt.Errorf("mount %s: %w", m.dst, err)
		}
	}
	if _, err := os.Stat("/dev/ttyS0"); err != nil {
		if err := unix.Mount("devtmpfs", "/dev", "devtmpfs", 0, ""); err != nil {
			return fmt.Errorf("mount /dev: %w", err)
		}
	}
	os.Setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/go/bin")
	_ = unix.Sethostname([]byte("lvslab-sandbox"))
	l := &kmod.Loader{Dir: os.Getenv("LVSLAB_MODULES")}
	if l.Dir == "" {
		l.Dir = kmod.DefaultDir()
	}
	return l.Load(lab.KernelModules()...) // everything a lab may need
}

func poweroff() {
	unix.Sync()
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}

// openRaw opens a tty and puts it in raw mode: 8-bit clean, no echo, no line editing.
func openRaw(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, err
	}
	t, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	if err != nil {
		f.Close()
		return nil, err
	}
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON | unix.IXOFF
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB
	t.Cflag |= unix.CS8
	t.Cc[unix.VMIN] = 1
	t.Cc[unix.VTIME] = 0
	if err := unix.IoctlSetTermios(int(f.Fd()), unix.TCSETS, t); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

type guestProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
}

// agent runs the host's requests as processes and streams their output back.
type agent struct {
	fw    *frameWriter
	mu    sync.Mutex
	procs map[uint32]*guestProc
}

func (a *agent) serve(r io.Reader) error {
	if err := a.fw.write(frameReady, 0, nil); err != nil {
		return err
	}
	for {
		f, err := readFrame(r)
		if err != nil {
			return fmt.Errorf("read from host: %w", err)
		}
		a.mu.Lock()
		p := a.procs[f.stream]
		a.mu.Unlock()
		switch f.typ {
		case frameOpen:
			a.start(f.stream, f.payload)
		case frameStdin:
			if p != nil {
				_, _ = p.stdin.Write(f.payload)
			}
		case frameStdinEOF:
			if p != nil {
				p.stdin.Close()
			}
		case frameKill:
			if p != nil && p.cmd.Process != nil {
				_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			}
		case framePowerOff:
			return errors.New("power off requested")
		}
	}
}

func (a *agent) start(id uint32, payload []byte) {
	fail := func(err error) {
		_ = a.fw.write(frameStderr, id, []byte("lvslab sandbox: "+err.Error()+"\n"))
		_ = a.fw.write(frameExit, id, exitPayload(127))
	}
	var req Request
	if err := json.Unmarshal(payload, &req); err != nil || len(req.Argv) == 0 {
		fail(fmt.Errorf("bad request: %v", err))
		return
	}
	cmd := exec.Command(req.Argv[0], req.Argv[1:]...)
	cmd.Env = append(req.Env, EnvInSandbox+"=1")
	cmd.Dir = req.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		fail(err)
		return
	}
	stdout, _ := cmd.StdoutPipe()
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		fail(err)
		return
	}
	a.mu.Lock()
	a.procs[id] = &guestProc{cmd: cmd, stdin: stdin}
	a.mu.Unlock()
	var wg sync.WaitGroup
	copyOut := func(typ byte, r io.Reader) {
		defer wg.Done()
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Read(buf)
			if n > 0 {
				_ = a.fw.write(typ, id, buf[:n])
			}
			if err != nil {
				return
			}
		}
	}
	wg.Add(2)
	go copyOut(frameStdout, stdout)
	go copyOut(frameStderr, stderr)
	go func() {
		wg.Wait()
		err := cmd.Wait()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				code = 128 + int(ws.Signal())
			}
		} else if err != nil {
			code = 255
		}
		a.mu.Lock()
		delete(a.procs, id)
		a.mu.Unlock()
		_ = a.fw.write(frameExit, id, exitPayload(code))
	}()
}
