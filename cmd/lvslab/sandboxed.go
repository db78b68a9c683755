package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/lvslab/lvslab/pkg/sandbox"
)

// sandboxBackend runs each command inside the kept sandbox kernel: the same
// command line, unchanged, with its output and exit status passed through. It
// starts the kernel for commands that build labs, and stops it when the last
// lab is gone.
type sandboxBackend struct {
	app *app
	dir string
}

func (a *app) sandboxed() *sandboxBackend { return &sandboxBackend{app: a, dir: sandbox.Dir()} }

// forward runs this command line in the kernel, starting it if start is set.
func (b *sandboxBackend) forward(ctx context.Context, start bool, stdin io.Reader) error {
	var c *sandbox.Client
	var err error
	if start {
		if _, err := sandbox.GuestMem(); err != nil {
			return err // a bad LVSLAB_SANDBOX_MEM fails before a kernel boots
		}
		t := time.Now()
		pr := newProgress(b.app.stderr)
		if !sandbox.Running(b.dir) {
			pr.begin("sandbox kernel (user-mode-linux) starting")
		}
		c, err = sandbox.Ensure(ctx, b.dir, self())
		pr.clear()
		if err == nil && time.Since(t) > 100*time.Millisecond {
			b.app.logf("✓ sandbox kernel (user-mode-linux) ready in %.1fs\n", time.Since(t).Seconds())
		}
	} else {
		c, err = sandbox.Dial(b.dir)
	}
	if err != nil {
		return err
	}
	defer c.Close()
	return b.exec(ctx, c, append([]string{self()}, b.app.argv...), stdin, b.app.stdout, b.app.stderr)
}

// exec runs argv in the sandbox with this host's environment (and extra),
// in this directory; a status other than 0 comes back as errExit.
func (b *sandboxBackend) exec(ctx context.Context, c *sandbox.Client, argv []string, stdin io.Reader, stdout, stderr io.Writer, extra ...string) error {
	dir, _ := os.Getwd()
	env := append(sandbox.HostEnv(), extra...)
	if newProgress(b.app.stderr).live {
		env = append(env, envProgress+"=1") // the host's standard error is a terminal
	}
	code, err := c.Exec(ctx, sandbox.Request{Argv: argv, Env: env, Dir: dir}, stdin, stdout, stderr)
	if err != nil {
		return err
	}
	if code != 0 {
		return errExit(code)
	}
	return nil
}

// labs lists the labs in the kept kernel; running is false when none runs.
func (b *sandboxBackend) labs(ctx context.Context) (names []string, running bool) {
	c, err := sandbox.Dial(b.dir)
	if err != nil {
		return nil, false
	}
	defer c.Close()
	var out strings.Builder
	if err := b.exec(ctx, c, []string{self(), "labs"}, nil, &out, io.Discard); err != nil {
		return nil, true
	}
	return strings.Fields(out.String()), true
}

// stopIfEmpty powers the kernel off when no lab is left in it.
func (b *sandboxBackend) stopIfEmpty(ctx context.Context) error {
	labs, running := b.labs(context.WithoutCancel(ctx))
	if !running || len(labs) > 0 {
		return nil
	}
	if err := sandbox.Stop(context.WithoutCancel(ctx), b.dir); err != nil {
		return err
	}
	b.app.logf("✓ sandbox kernel stopped\n")
	return nil
}

// errNoKernel answers commands about labs when no sandbox kernel runs.
var errNoKernel = errors.New("no sandbox kernel is running, so no lab is up (lvslab up SCENARIO)")

func (b *sandboxBackend) Up(ctx context.Context, o UpOptions) error {
	if _, err := load(o.Scenario, o.Name); err != nil {
		return err // bad input fails before any kernel boots
	}
	was := sandbox.Running(b.dir)
	err := b.forward(ctx, true, nil)
	if err != nil && !was {
		err = errors.Join(err, b.stopIfEmpty(ctx))
	}
	return err
}

func (b *sandboxBackend) Apply(ctx context.Context, o ApplyOptions) error {
	if _, err := load(o.Scenario, o.Name); err != nil {
		return err
	}
	if !sandbox.Running(b.dir) {
		return errNoKernel
	}
	return b.forward(ctx, false, nil)
}

func (b *sandboxBackend) Down(ctx context.Context, _ []string) error {
	if !sandbox.Running(b.dir) {
		return nil
	}
	return errors.Join(b.forward(ctx, false, nil), b.stopIfEmpty(ctx))
}

func (b *sandboxBackend) Status(ctx context.Context, o StatusOptions) error {
	labs, running := b.labs(ctx)
	if o.JSON {
		if !running {
			fmt.Fprintln(b.app.stdout, "[]")
			return nil
		}
		return b.forward(ctx, false, nil)
	}
	if !running {
		fmt.Fprintln(b.app.stdout, "no labs")
		return nil
	}
	fmt.Fprintf(b.app.stdout, "sandbox kernel (user-mode-linux) running, labs: %s\n", strings.Join(labs, ", "))
	if len(labs) == 0 {
		return nil
	}
	return b.forward(ctx, false, nil)
}

func (b *sandboxBackend) Exec(ctx context.Context, o ExecOptions) error {
	if !sandbox.Running(b.dir) {
		return fmt.Errorf("exec: node %s: %w", o.Node, errNoKernel)
	}
	var stdin io.Reader
	if o.Stdin {
		stdin = b.app.stdin
	}
	return b.forward(ctx, false, stdin)
}

func (b *sandboxBackend) IPVS(ctx context.Context, _ IPVSOptions) error {
	if !sandbox.Running(b.dir) {
		return errNoKernel
	}
	return b.forward(ctx, false, nil)
}

func (b *sandboxBackend) Capture(ctx context.Context, o CaptureOptions) error {
	if !sandbox.Running(b.dir) {
		return fmt.Errorf("capture: node %s: %w", o.Node, errNoKernel)
	}
	return b.forward(ctx, false, nil)
}

func (b *sandboxBackend) Graph(ctx context.Context, o GraphOptions) error {
	if !sandbox.Running(b.dir) {
		return fmt.Errorf("lab %s: %w", o.Lab, errNoKernel)
	}
	return b.forward(ctx, false, nil)
}

func (b *sandboxBackend) Verify(ctx context.Context, o VerifyOptions) error {
	file := isFile(o.Target)
	if file {
		if _, err := load(o.Target, ""); err != nil {
			return err
		}
	} else if !sandbox.Running(b.dir) {
		return errNoKernel
	}
	was := sandbox.Running(b.dir)
	err := b.forward(ctx, file, nil)
	if !was {
		err = errors.Join(err, b.stopIfEmpty(ctx))
	}
	return err
}

// ImageBuild runs in the kept kernel, starting it: the engine and its images
// live there until the kernel stops.
func (b *sandboxBackend) ImageBuild(ctx context.Context) error {
	return b.forward(ctx, true, nil)
}

// GC stops the kernel, and with it every lab inside; it also finds a kernel
// whose supervisor was killed.
func (b *sandboxBackend) GC(ctx context.Context) error {
	return sandbox.Stop(ctx, b.dir)
}
