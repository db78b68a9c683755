package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/lvslab/lvslab/pkg/apply"
	"github.com/lvslab/lvslab/pkg/clab"
	"github.com/lvslab/lvslab/pkg/clabrt"
	"github.com/lvslab/lvslab/pkg/engine"
	"github.com/lvslab/lvslab/pkg/image"
	"github.com/lvslab/lvslab/pkg/ipvsadm"
	"github.com/lvslab/lvslab/pkg/jsonview"
	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/runner"
	"github.com/lvslab/lvslab/pkg/scenario"
	"github.com/lvslab/lvslab/pkg/state"
	"github.com/lvslab/lvslab/pkg/verify"
)

// localBackend runs labs on the kernel lvslab runs on.
type localBackend struct {
	app *app
}

func store() state.Store { return state.Store{Dir: state.DefaultDir} }

// load reads a scenario and renames its lab when asked.
func load(file, name string) (*scenario.Scenario, error) {
	s, err := scenario.Load(file)
	if err != nil {
		return nil, err
	}
	if name != "" {
		if err := s.Rename(name); err != nil {
			return nil, usageError{fmt.Errorf("--name: %w", err)}
		}
	}
	return s, nil
}

// envStall names a test hook: lvslab up stops after the step whose name starts
// with its value and waits there until it is interrupted, so that tests can
// interrupt it at a known point.
const envStall = "LVSLAB_TEST_STALL"

// runner returns a runner that reports each step, unless quiet.
func (b *localBackend) runner(ctx context.Context, quiet bool) (*runner.Runner, error) {
	r, err := runner.New()
	if err != nil {
		return nil, err
	}
	stall := os.Getenv(envStall)
	pr := newProgress(b.app.stderr)
	if !quiet {
		r.Begin = pr.begin
	}
	r.Log = func(step string, err error) {
		switch {
		case quiet:
		case err != nil:
			pr.finish("✗", step)
			return
		default:
			pr.finish("✓", step)
		}
		if err == nil && stall != "" && strings.HasPrefix(step, stall) {
			b.app.logf("stalled after %q (%s)\n", step, envStall)
			<-ctx.Done()
		}
	}
	return r, nil
}

func (b *localBackend) Up(ctx context.Context, o UpOptions) error {
	s, err := load(o.Scenario, o.Name)
	if err != nil {
		return err
	}
	r, err := b.runner(ctx, false)
	if err != nil {
		return err
	}
	r.Keep = o.Keep
	r.RuntimeName = o.Runtime
	t := time.Now()
	l, err := r.Up(ctx, s)
	if err != nil {
		return err
	}
	b.app.logf("lab %s is up in %.2fs\n", l.Name, time.Since(t).Seconds())
	if hint := tryHint(s); hint != "" {
		b.app.logf("  try: %s\n", hint)
	}
	return nil
}

func (b *localBackend) Apply(ctx context.Context, o ApplyOptions) error {
	s, err := load(o.Scenario, o.Name)
	if err != nil {
		return err
	}
	r, err := b.runner(ctx, false)
	if err != nil {
		return err
	}
	changes, err := r.Apply(ctx, s)
	for _, c := range changes {
		b.app.logf("  %s\n", c)
	}
	if err != nil {
		return err
	}
	b.app.logf("✓ lab %s matches %s (%d changes)\n", s.Name, o.Scenario, len(changes))
	return nil
}

func (b *localBackend) Down(ctx context.Context, labs []string) error {
	if len(labs) == 0 {
		var err error
		if labs, err = store().List(); err != nil {
			return err
		}
	}
	r, err := b.runner(ctx, false)
	if err != nil {
		return err
	}
	var errs []error
	for _, l := range labs {
		if err := r.Down(ctx, l); err != nil {
			errs = append(errs, err)
			continue
		}
		b.app.logf("✓ lab %s removed\n", l)
	}
	return errors.Join(errs...)
}

func (b *localBackend) Status(_ context.Context, o StatusOptions) error {
	names, err := store().List()
	if err != nil {
		return err
	}
	shown := 0
	views := []jsonview.Lab{}
	for _, name := range names {
		if len(o.Labs) > 0 && !slices.Contains(o.Labs, name) {
			continue
		}
		l, err := store().Load(name)
		if err != nil {
			return err
		}
		shown++
		if o.JSON {
			v, err := statusJSON(l)
			if err != nil {
				return err
			}
			views = append(views, v)
			continue
		}
		if err := writeStatus(b.app.stdout, l); err != nil {
			return err
		}
	}
	if o.JSON {
		out, err := jsonview.Marshal(views)
		if err != nil {
			return err
		}
		_, err = b.app.stdout.Write(out)
		return err
	}
	if shown == 0 {
		fmt.Fprintln(b.app.stdout, "no labs")
	}
	return nil
}

// findLab returns the recorded lab holding node (or the named lab).
func findLab(labName, nodeName string) (*state.Lab, error) {
	names, err := store().List()
	if err != nil {
		return nil, err
	}
	var found []*state.Lab
	for _, name := range names {
		if labName != "" && name != labName {
			continue
		}
		l, err := store().Load(name)
		if err != nil {
			return nil, err
		}
		if _, ok := l.Node(nodeName); nodeName == "" || ok {
			found = append(found, l)
		}
	}
	switch len(found) {
	case 0:
		return nil, state.ErrNoLab
	case 1:
		return found[0], nil
	}
	return nil, usageError{errors.New("more than one lab matches; name one with --lab")}
}

// containers is the runtime of a container lab.
func (b *localBackend) containers(ctx context.Context, l *state.Lab) (clabrt.Containerlab, error) {
	r, err := b.runner(ctx, false)
	if err != nil {
		return clabrt.Containerlab{}, err
	}
	rt, err := r.RuntimeFor(ctx, l.Runtime, false)
	if err != nil {
		return clabrt.Containerlab{}, err
	}
	c, ok := rt.(clabrt.Containerlab)
	if !ok {
		return clabrt.Containerlab{}, fmt.Errorf("lab %s: runtime %s has no containers", l.Name, l.Runtime)
	}
	return c, nil
}

func (b *localBackend) Exec(ctx context.Context, o ExecOptions) error {
	l, err := findLab(o.Lab, o.Node)
	if err != nil {
		return fmt.Errorf("exec: node %s: %w", o.Node, err)
	}
	if l.Runtime == lab.RuntimeContainerlab {
		// As docker exec: inside the node's container.
		c, err := b.containers(ctx, l)
		if err != nil {
			return err
		}
		var stdin io.Reader
		if o.Stdin {
			stdin = b.app.stdin
		}
		code, err := c.Exec(ctx, clab.ContainerName(l.Name, o.Node), o.Argv, stdin, b.app.stdout, b.app.stderr)
		if err != nil {
			return err
		}
		if code != 0 {
			return errExit(code)
		}
		return nil
	}
	cmd := exec.CommandContext(ctx, o.Argv[0], o.Argv[1:]...)
	cmd.Stdout, cmd.Stderr = b.app.stdout, b.app.stderr
	if o.Stdin {
		cmd.Stdin = b.app.stdin
	}
	err = l.Handles()[o.Node].Run(cmd)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return errExit(ee.ExitCode())
	}
	return err
}

func (b *localBackend) IPVS(_ context.Context, o IPVSOptions) error {
	l, err := findLab(o.Lab, "")
	if err != nil {
		return err
	}
	if l.Director == "" {
		return fmt.Errorf("lab %s has no director", l.Name)
	}
	t, err := apply.ReadTable(l.Handles()[l.Director])
	if err != nil {
		return err
	}
	w := b.app.stdout
	if o.JSON {
		out, err := jsonview.Marshal(jsonview.FromTable(t))
		if err != nil {
			return err
		}
		_, err = w.Write(out)
		return err
	}
	both := o.List == o.Save
	if o.List || both {
		if err := ipvsadm.WriteList(w, t); err != nil {
			return err
		}
	}
	if both {
		fmt.Fprintln(w, "\n# ipvsadm-save -n")
	}
	if o.Save || both {
		return ipvsadm.WriteSave(w, ipvsadm.Sorted(t).Specs())
	}
	return nil
}

func (b *localBackend) GC(ctx context.Context) error {
	r, err := b.runner(ctx, false)
	if err != nil {
		return err
	}
	labs, err := r.GC(ctx)
	for _, l := range labs {
		b.app.logf("✓ lab %s removed\n", l)
	}
	running := len(engine.Processes(engine.DefaultDir)) > 0
	if gcErr := engine.GC(ctx, engine.DefaultDir); gcErr != nil {
		err = errors.Join(err, gcErr)
	} else if running {
		b.app.logf("✓ engine stopped\n")
	}
	return err
}

func (b *localBackend) ImageBuild(ctx context.Context) error {
	t := time.Now()
	e, started, err := engine.Ensure(ctx, engine.Config{})
	if err != nil {
		return err
	}
	defer e.Close()
	if started {
		b.app.logf("✓ engine started in %.1fs (%s; lvslab gc stops it)\n", time.Since(t).Seconds(), e.Dir())
	}
	ref := image.Ref(version)
	t = time.Now()
	st, err := image.Import(ctx, e.Client(), ref, image.Options{Self: self()})
	if err != nil {
		return err
	}
	// The topology files name lvslab/node:latest: this build is that too.
	if err := e.Client().ImageTag(ctx, ref, clab.NodeImage("")); err != nil {
		return fmt.Errorf("image: tag %s as %s: %w", ref, clab.NodeImage(""), err)
	}
	b.app.logf("✓ image %s (and %s) imported in %.1fs: %d files, %.1f MB\n", ref, clab.NodeImage(""), time.Since(t).Seconds(), st.Files, float64(st.Bytes)/1e6)
	return nil
}

func (b *localBackend) Verify(ctx context.Context, o VerifyOptions) error {
	var s *scenario.Scenario
	k, err := verify.RunningKernel()
	if err != nil {
		return err
	}
	j := &verify.Judge{Driver: o.Driver, Kernel: k, ResetSchedulers: o.ResetSchedulers}
	if isFile(o.Target) {
		var err error
		if s, err = scenario.Load(o.Target); err != nil {
			return err
		}
		// A fresh lab of its own: exact predictions need a director that has
		// served nothing yet, and a lab of the scenario may be up already.
		if err := s.Rename(verifyName(s.Name)); err != nil {
			return err
		}
		r, err := b.runner(ctx, true)
		if err != nil {
			return err
		}
		r.RuntimeName = o.Runtime
		l, err := r.Up(ctx, s)
		if err != nil {
			return err
		}
		if !o.Keep {
			defer r.Down(context.WithoutCancel(ctx), s.Name)
		}
		j.Nodes, j.Lab, j.Director = l.Handles(), l.Name, l.Director
	} else {
		l, err := store().Load(o.Target)
		if err != nil {
			return err
		}
		if s, err = scenario.Parse(l.Scenario, []byte(l.Applied)); err != nil {
			return fmt.Errorf("verify: lab %s: its scenario: %w", o.Target, err)
		}
		if err := s.Rename(l.Name); err != nil {
			return err
		}
		j.Nodes, j.Lab, j.Director = l.Handles(), l.Name, l.Director
	}
	if len(s.Checks) == 0 && len(s.Steps) == 0 {
		return fmt.Errorf("verify: %s declares no checks (add a checks: or steps: section)", o.Target)
	}
	j.Spec, j.Checks, j.Steps = &s.Spec, s.Checks, s.Steps
	if len(s.Steps) > 0 {
		r, err := b.runner(ctx, true)
		if err != nil {
			return err
		}
		if j.Control, err = r.Control(ctx, j.Lab); err != nil {
			return err
		}
	}
	return report(ctx, b.app.stdout, o, s, j)
}
