package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
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

// resetOOM is the re-exec through which the agent starts every command: a
// shell that gives itself the default OOM score (oom_score_adj is inherited,
// and the agent's is -1000), then executes the command in the same process.
// Resetting before the exec leaves no moment in which the command could fork a
// child that keeps -1000. A shell, not lvslab itself: starting the Go binary
// costs about 0.17 s in the guest, sh about 20 ms. The command's argv[0]
// becomes its resolved path.
const resetOOM = `echo 0 > /proc/self/oom_score_adj; exec "$@"`

// oomNever is the oom_score_adj of init and the agent: the OOM killer never
// chooses them.
const oomNever = "-1000"

// IsGuest reports whether this process is init, or the agent, inside the sandbox kernel.
func IsGuest() bool { return os.Getenv(EnvGuest) != "" && os.Getenv(EnvInSandbox) == "" }

// GuestMain runs lvslab's part inside the sandbox kernel. As init (pid 1) it
// prepares the system, starts the agent as its child and reaps every process
// until the agent ends, then powers off. As the agent, it serves the host over the
// serial line until asked to power off or the line breaks. Init and the agent are
// exempt from the OOM killer (oom_score_adj -1000): when a guest runs out of
// memory it kills a lab's process, never the link every lab depends on. It
// never returns.
func GuestMain() {
	if os.Getpid() != 1 {
		// Inherited from init already; set here too, so that it holds however the
		// agent was started.
		if err := setOOMScoreAdj("self", oomNever); err != nil {
			fmt.Fprintf(os.Stderr, "lvslab agent: %v\n", err)
		}
		tty, err := openRaw("/dev/ttyS0")
		if err != nil {
			fmt.Fprintf(os.Stderr, "lvslab agent: serial line: %v\n", err)
			os.Exit(1)
		}
		a := &agent{fw: &frameWriter{w: tty}, procs: map[uint32]*guestProc{}, resetOOM: true}
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
			// On the console, which the host quotes when the kernel stops.
			fmt.Fprintf(os.Stderr, "lvslab guest: the agent ended (%s); powering off\n", describe(ws))
			poweroff()
		}
	}
}

// describe says how a process ended.
func describe(ws unix.WaitStatus) string {
	switch {
	case ws.Signaled():
		return "killed by signal " + ws.Signal().String()
	case ws.Exited():
		return fmt.Sprintf("exit status %d", ws.ExitStatus())
	}
	return fmt.Sprintf("wait status %#x", uint32(ws))
}

// setOOMScoreAdj writes a process's oom_score_adj (pid "self" for this one).
func setOOMScoreAdj(pid, v string) error {
	if err := os.WriteFile("/proc/"+pid+"/oom_score_adj", []byte(v), 0); err != nil {
		return fmt.Errorf("oom_score_adj: %w", err)
	}
	return nil
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
	if err := setOOMScoreAdj("self", oomNever); err != nil { // the agent inherits it
		return err
	}
	if _, err := os.Stat("/dev/ttyS0"); err != nil {
		if err := unix.Mount("devtmpfs", "/dev", "devtmpfs", 0, ""); err != nil {
			return fmt.Errorf("mount /dev: %w", err)
		}
	}
	// Pseudo-terminals (lvslab shell): /dev/ptmx opens only with devpts
	// mounted beside it. /dev is the guest's own devtmpfs.
	if err := os.MkdirAll("/dev/pts", 0o755); err != nil {
		return err
	}
	if err := unix.Mount("devpts", "/dev/pts", "devpts", 0, "newinstance,ptmxmode=0666,mode=0620"); err != nil && !errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("mount /dev/pts: %w", err)
	}
	if err := privateHostFiles(); err != nil {
		return err
	}
	os.Setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/go/bin")
	_ = unix.Sethostname([]byte("lvslab-sandbox"))
	l := &kmod.Loader{Dir: os.Getenv("LVSLAB_MODULES")}
	if l.Dir == "" {
		l.Dir = kmod.DefaultDir()
	}
	if os.Getenv(envBare) != "" {
		return placeModules(l)
	}
	return l.Load(lab.KernelModules()...) // everything a lab may need
}

// privateHostFiles gives the guest its own copies of the host files that tools
// in it edit: containerlab adds its nodes to /etc/hosts and writes an ssh
// config under /etc/ssh/ssh_config.d. The guest's root is the host's (hostfs),
// and nothing of the host's may change, so each becomes a guest-only file on
// the guest's /run (a tmpfs). It also mounts the cgroup2 hierarchy, which a
// container engine in the guest needs.
func privateHostFiles() error {
	if err := os.MkdirAll("/run/lvslab-guest", 0o755); err != nil {
		return err
	}
	if b, err := os.ReadFile("/etc/hosts"); err == nil {
		own := "/run/lvslab-guest/hosts"
		if err := os.WriteFile(own, b, 0o644); err != nil {
			return err
		}
		if err := unix.Mount(own, "/etc/hosts", "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("guest /etc/hosts: %w", err)
		}
	}
	if fi, err := os.Stat("/etc/ssh/ssh_config.d"); err == nil && fi.IsDir() {
		if err := unix.Mount("tmpfs", "/etc/ssh/ssh_config.d", "tmpfs", 0, "mode=0755"); err != nil {
			return fmt.Errorf("guest /etc/ssh/ssh_config.d: %w", err)
		}
	}
	if err := unix.Mount("cgroup2", "/sys/fs/cgroup", "cgroup2", 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("mount /sys/fs/cgroup: %w", err)
	}
	return nil
}

// envBare, on the kernel command line, asks for a bare guest (Config.Bare).
const envBare = "LVSLAB_BARE"

// placeModules puts the kernel's module tree (l.Dir) at /lib/modules/<release>,
// where a distribution keeps it, without touching the host's file system: the
// guest's /usr/lib becomes an overlay whose writable layer lives in the guest's
// /run (a tmpfs). Only the overlay module is loaded.
func placeModules(l *kmod.Loader) error {
	if err := l.Load("overlay"); err != nil {
		return err
	}
	lib, err := filepath.EvalSymlinks("/lib")
	if err != nil {
		return err
	}
	upper, work := "/run/lvslab-bare/upper", "/run/lvslab-bare/work"
	for _, d := range []string{upper, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	opts := "lowerdir=" + lib + ",upperdir=" + upper + ",workdir=" + work
	if err := unix.Mount("overlay", lib, "overlay", 0, opts); err != nil {
		return fmt.Errorf("overlay on %s: %w", lib, err)
	}
	dst := filepath.Join(lib, "modules", filepath.Base(l.Dir))
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(l.Dir, dst, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s on %s: %w", l.Dir, dst, err)
	}
	return nil
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
	cmd         *exec.Cmd
	stdin       io.WriteCloser
	interrupted atomic.Bool // the host signalled it: it ends with its leader
}

// agent runs the host's requests as processes and streams their output back.
type agent struct {
	fw       *frameWriter
	resetOOM bool // start commands through resetOOM (in the guest)
	mu       sync.Mutex
	procs    map[uint32]*guestProc
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
		case frameSignal:
			if sig := syscall.Signal(exitCode(f.payload)); p != nil && sig > 0 && sig < 65 {
				p.interrupted.Store(true)
				_ = syscall.Kill(-p.cmd.Process.Pid, sig)
			}
		case frameKill:
			if p != nil {
				_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			}
		case framePowerOff:
			return errors.New("power off requested")
		}
	}
}

// start runs a request in a process group of its own, with output relayed as
// frames, and reports its exit status once its output has ended. A process the
// host signalled ends with its leader: what is left of its group is killed then,
// so the exit status is not held back by a background child keeping the output
// open.
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
	if cmd.Err != nil {
		fail(cmd.Err)
		return
	}
	if a.resetOOM {
		cmd.Args = append([]string{"sh", "-c", resetOOM, "lvslab-sandbox", cmd.Path}, req.Argv[1:]...)
		cmd.Path = "/bin/sh"
	}
	cmd.Env = append(req.Env, EnvInSandbox+"=1")
	cmd.Dir = req.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		fail(err)
		return
	}
	// Pipes of our own: cmd.Wait then waits for the process only, not for
	// whoever else holds the write ends.
	var outs [2]*os.File
	for i := range outs {
		r, w, err := os.Pipe()
		if err != nil {
			if outs[0] != nil {
				outs[0].Close()
			}
			fail(err)
			return
		}
		defer w.Close()
		outs[i] = r
		if i == 0 {
			cmd.Stdout = w
		} else {
			cmd.Stderr = w
		}
	}
	if err := cmd.Start(); err != nil {
		outs[0].Close()
		outs[1].Close()
		fail(err)
		return
	}
	p := &guestProc{cmd: cmd, stdin: stdin}
	a.mu.Lock()
	a.procs[id] = p
	a.mu.Unlock()
	var wg sync.WaitGroup
	copyOut := func(typ byte, r *os.File) {
		defer wg.Done()
		defer r.Close()
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
	go copyOut(frameStdout, outs[0])
	go copyOut(frameStderr, outs[1])
	go func() {
		err := cmd.Wait()
		if p.interrupted.Load() {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
		wg.Wait()
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
