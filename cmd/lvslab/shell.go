package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"strconv"
	"sync"
	"syscall"

	"github.com/creack/pty"
	"golang.org/x/term"

	"github.com/lvslab/lvslab/pkg/clab"
	"github.com/lvslab/lvslab/pkg/clabrt"
	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/sandbox"
	"github.com/lvslab/lvslab/pkg/state"
	"github.com/spf13/cobra"
)

// ShellOptions are lvslab shell's (and exec -t's).
type ShellOptions struct {
	Lab  string
	Node string
	Argv []string // the command; an interactive shell when empty
}

func (a *app) shellCommand() *cobra.Command {
	var o ShellOptions
	c := &cobra.Command{
		Use:   "shell [--lab LAB] NODE",
		Short: "an interactive shell in a node, on a terminal of its own",
		Long: `Open an interactive shell in a node, on a pseudo-terminal of its own: a
prompt that names the node, line editing, Ctrl-C for the program running in
the node (not for lvslab), full-screen programs (top, watch ipvsadm -Ln),
window size changes followed. Where the lab lives in the sandbox kernel the
terminal goes through the sandbox's agent. The shell's exit status is
lvslab's. lvslab exec -t runs one command the same way.`,
		Example: "  lvslab shell director\n  lvslab exec -t director -- watch -n1 ipvsadm -Ln",
		Args:    exactArgs(1, "a node"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Node = args[0]
			return a.backend.Shell(cmd.Context(), o)
		},
	}
	c.Flags().StringVar(&o.Lab, "lab", "", "the lab (needed when several labs have the node)")
	return labCommand(c)
}

// envTTYSize carries the terminal's size, "ROWSxCOLS", to the lvslab that
// runs the shell inside the sandbox; later changes follow in band.
const envTTYSize = "LVSLAB_TTY_SIZE"

// resizeSeq is how a window size change travels in the terminal's input
// through the sandbox: an OSC sequence no program is sent, taken out of the
// input by the lvslab that holds the pseudo-terminal.
var resizeSeq = regexp.MustCompile("\x1b]lvslab-winsize;([0-9]+);([0-9]+)\x07")

func resizeBytes(rows, cols int) []byte {
	return fmt.Appendf(nil, "\x1b]lvslab-winsize;%d;%d\x07", rows, cols)
}

// shellArgv is an interactive shell, bash when the node has it.
func shellArgv() []string {
	if _, err := exec.LookPath("bash"); err == nil {
		return []string{"bash", "--noprofile", "--norc", "-i"}
	}
	return []string{"sh", "-i"}
}

func (b *localBackend) Shell(ctx context.Context, o ShellOptions) error {
	l, err := findLab(o.Lab, o.Node)
	if err != nil {
		return fmt.Errorf("shell: node %s: %w", o.Node, err)
	}
	if l.Runtime == lab.RuntimeContainerlab {
		return b.containerShell(ctx, l, o)
	}
	n, ok := l.Handles()[o.Node]
	if !ok {
		return fmt.Errorf("shell: lab %s has no node %s with a namespace", l.Name, o.Node)
	}
	argv := o.Argv
	if len(argv) == 0 {
		argv = shellArgv()
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), shellEnv(o.Node)...)
	ptmx, tty, err := pty.Open()
	if err != nil {
		return err
	}
	defer ptmx.Close()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	setSize := func(rows, cols int) {
		_ = pty.Setsize(ptmx, &pty.Winsize{Rows: uint16(rows), Cols: uint16(cols)})
	}
	in, rows, cols, restore, err := terminalInput(b.app.stdin, setSize)
	if err != nil {
		return err
	}
	defer restore()
	if rows > 0 && cols > 0 {
		setSize(rows, cols)
	}
	if err := n.Start(cmd); err != nil {
		tty.Close()
		return err
	}
	tty.Close()
	go func() { _, _ = io.Copy(ptmx, in) }()
	_, _ = io.Copy(b.app.stdout, ptmx) // ends when the shell and its children are gone (EIO)
	err = cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return errExit(ee.ExitCode())
	}
	return err
}

// shellEnv is what a node's shell gets on top of its environment: a prompt
// that names the node, the node, and a terminal type (xterm when this
// process has none).
func shellEnv(node string) []string {
	t := os.Getenv("TERM")
	if t == "" {
		t = "xterm"
	}
	return []string{"PS1=root@" + node + ":\\w# ", "LVSLAB_NODE=" + node, "TERM=" + t}
}

// terminalInput is a shell's input, and its window size: the size now
// (0, 0 when unknown), and resize called with each change. On a terminal
// (lvslab on the lab's own kernel) the terminal goes raw until restore and
// its changes come by SIGWINCH; inside the sandbox the size came along in
// LVSLAB_TTY_SIZE and changes come in band, taken out of the input returned.
func terminalInput(stdin io.Reader, resize func(rows, cols int)) (in io.Reader, rows, cols int, restore func(), err error) {
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		rows, cols, restore, err := followTerminal(f, resize)
		return stdin, rows, cols, restore, err
	}
	rows, cols, _ = parseSize(os.Getenv(envTTYSize))
	pr, pw := io.Pipe()
	go func() {
		copyResizing(pw, stdin, resize)
		_ = pw.Close()
	}()
	return pr, rows, cols, func() {}, nil
}

// followTerminal puts the terminal in raw mode, returns its size now (0, 0
// when unknown) and calls resize after each change (SIGWINCH); restore
// undoes both.
func followTerminal(in *os.File, resize func(rows, cols int)) (rows, cols int, restore func(), err error) {
	fd := int(in.Fd())
	if c, r, err := term.GetSize(fd); err == nil {
		rows, cols = r, c
	}
	old, err := term.MakeRaw(fd)
	if err != nil {
		return 0, 0, nil, err
	}
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	go func() {
		for range winch {
			if c, r, err := term.GetSize(fd); err == nil {
				resize(r, c)
			}
		}
	}()
	return rows, cols, func() {
		signal.Stop(winch)
		close(winch)
		_ = term.Restore(fd, old)
	}, nil
}

func parseSize(s string) (rows, cols int, ok bool) {
	var err1, err2 error
	for i := range len(s) {
		if s[i] == 'x' {
			rows, err1 = strconv.Atoi(s[:i])
			cols, err2 = strconv.Atoi(s[i+1:])
			return rows, cols, err1 == nil && err2 == nil && rows > 0 && cols > 0
		}
	}
	return 0, 0, false
}

// copyResizing copies the terminal's input to the pseudo-terminal, taking
// out the window size changes and passing them to resize.
func copyResizing(ptmx io.Writer, in io.Reader, resize func(rows, cols int)) {
	buf := make([]byte, 4096)
	var pending []byte
	for {
		n, err := in.Read(buf)
		pending = append(pending, buf[:n]...)
		for {
			loc := resizeSeq.FindSubmatchIndex(pending)
			if loc == nil {
				break
			}
			rows, _ := strconv.Atoi(string(pending[loc[2]:loc[3]]))
			cols, _ := strconv.Atoi(string(pending[loc[4]:loc[5]]))
			_, _ = ptmx.Write(pending[:loc[0]])
			resize(rows, cols)
			pending = pending[loc[1]:]
		}
		// Keep what may be the start of a size change; pass the rest on.
		keep := bytes.LastIndexByte(pending, 0x1b)
		if keep < 0 || len(pending)-keep > 40 {
			keep = len(pending)
		}
		_, _ = ptmx.Write(pending[:keep])
		pending = append([]byte(nil), pending[keep:]...)
		if err != nil {
			_, _ = ptmx.Write(pending)
			return
		}
	}
}

// containerShellArgv is the container's interactive shell: bash when its
// image has it, else sh (the node image's busybox).
var containerShellArgv = []string{"sh", "-c", "command -v bash >/dev/null && exec bash --noprofile --norc -i; exec sh -i"}

// containerShell opens a shell in a node's container on a terminal the
// engine allocates, as docker exec -it does. Its size is this terminal's, or
// inside the sandbox the one that came along, and follows its changes.
func (b *localBackend) containerShell(ctx context.Context, l *state.Lab, o ShellOptions) error {
	c, err := b.containers(ctx, l)
	if err != nil {
		return fmt.Errorf("shell: %w", err)
	}
	argv := o.Argv
	if len(argv) == 0 {
		argv = containerShellArgv
	}
	resize := make(chan [2]uint, 8)
	stdin, rows, cols, restore, err := terminalInput(b.app.stdin, func(rows, cols int) {
		select {
		case resize <- [2]uint{uint(rows), uint(cols)}:
		default: // a burst of changes: the next one wins
		}
	})
	if err != nil {
		return err
	}
	defer restore()
	tty := clabrt.TTY{Rows: uint(rows), Cols: uint(cols), Resize: resize}
	code, err := c.ExecTTY(ctx, clab.ContainerName(l.Name, o.Node), argv, shellEnv(o.Node), tty, stdin, b.app.stdout)
	if err != nil {
		return fmt.Errorf("shell: node %s: %w", o.Node, err)
	}
	if code != 0 {
		return errExit(code)
	}
	return nil
}

func (b *sandboxBackend) Shell(ctx context.Context, o ShellOptions) error {
	c, err := sandbox.Dial(b.dir)
	if err != nil {
		return fmt.Errorf("shell: node %s: %w", o.Node, errNoKernel)
	}
	defer c.Close()
	var size []string
	var stdin io.Reader = b.app.stdin
	if in, ok := b.app.stdin.(*os.File); ok && term.IsTerminal(int(in.Fd())) {
		// The terminal's input, and a size change in band whenever the
		// window changes; the size now goes along in the environment.
		pr, pw := io.Pipe()
		var mu sync.Mutex
		rows, cols, restore, err := followTerminal(in, func(rows, cols int) {
			mu.Lock()
			_, _ = pw.Write(resizeBytes(rows, cols))
			mu.Unlock()
		})
		if err != nil {
			return err
		}
		defer restore()
		if rows > 0 && cols > 0 {
			size = append(size, fmt.Sprintf("%s=%dx%d", envTTYSize, rows, cols))
		}
		go func() {
			buf := make([]byte, 4096)
			for {
				n, err := in.Read(buf)
				mu.Lock()
				_, _ = pw.Write(buf[:n])
				mu.Unlock()
				if err != nil {
					pw.CloseWithError(err)
					return
				}
			}
		}()
		stdin = pr
	}
	return b.exec(ctx, c, append([]string{self()}, b.app.argv...), stdin, b.app.stdout, b.app.stderr, size...)
}
