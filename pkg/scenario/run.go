package scenario

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/lvslab/lvslab/pkg/apply"
	"github.com/lvslab/lvslab/pkg/kmod"
	"github.com/lvslab/lvslab/pkg/node"
	"github.com/lvslab/lvslab/pkg/state"
	"github.com/lvslab/lvslab/pkg/topo"
)

// Runner brings scenarios up and down on the kernel it runs on.
type Runner struct {
	Store   state.Store
	Self    string                       // the lvslab binary, run as the web daemon
	Modules string                       // module tree to load IPVS from; the running kernel's when empty
	Keep    bool                         // keep a half-built lab on failure, for inspection
	Log     func(step string, err error) // called after each step; may be nil
}

// DefaultRunner is a Runner with the default state directory, running this binary.
func DefaultRunner() (*Runner, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return &Runner{Store: state.Store{Dir: state.DefaultDir}, Self: self}, nil
}

func (r *Runner) step(name string, err error) error {
	if r.Log != nil {
		r.Log(name, err)
	}
	return err
}

// Nodes returns the node handles of a recorded lab.
func Nodes(l *state.Lab) map[string]node.Node {
	m := make(map[string]node.Node, len(l.Nodes))
	for i, n := range l.Nodes {
		m[n] = node.New(n, l.Namespaces[i])
	}
	return m
}

// IPVSModules are loaded before a lab with IPVS services is applied.
func IPVSModules(s *Scenario) []string {
	mods := []string{"ip_vs"}
	seen := map[string]bool{}
	for _, n := range s.Spec.Nodes {
		if len(n.Marks) > 0 && !seen["marks"] {
			seen["marks"] = true
			mods = append(mods, apply.MarkModules...)
		}
		for _, svc := range n.Services {
			if !seen[svc.Scheduler] {
				seen[svc.Scheduler] = true
				mods = append(mods, "ip_vs_"+svc.Scheduler)
			}
		}
	}
	return mods
}

func (r *Runner) loadModules(s *Scenario) error {
	loader := &kmod.Loader{Dir: r.Modules}
	if loader.Dir == "" {
		loader.Dir = kmod.DefaultDir()
	}
	if err := loader.Load(IPVSModules(s)...); err != nil {
		if _, statErr := os.Stat("/proc/net/ip_vs"); statErr != nil {
			return fmt.Errorf("this kernel cannot do IPVS (use --kernel uml): %w", err)
		}
	}
	return nil
}

// Up builds the scenario's lab: topology, kernel state, web servers, and waits until
// every web server answers. On failure it removes what it built unless r.Keep.
func (r *Runner) Up(ctx context.Context, s *Scenario) (*state.Lab, error) {
	if s.Director() != "" {
		if err := r.loadModules(s); err != nil {
			return nil, r.step("load IPVS modules", err)
		}
	}
	rt := topo.Netns{Store: r.Store}
	lab, err := rt.Deploy(ctx, s.Topology, s.File)
	if r.step("topology "+s.Topology.File, err) != nil {
		return nil, err
	}
	fail := func(step string, err error) (*state.Lab, error) {
		err = fmt.Errorf("up %s: %s: %w", s.Name, step, err)
		r.step(step, err)
		if !r.Keep {
			if derr := rt.Destroy(context.WithoutCancel(ctx), s.Name); derr != nil {
				err = errors.Join(err, derr)
			}
		}
		return nil, err
	}
	lab.Director = s.Director()
	lab.Applied = string(s.Source)
	if err := r.Store.Save(lab); err != nil {
		return fail("record", err)
	}
	nodes := Nodes(lab)
	if _, err := apply.Apply(ctx, nodes, s.Spec); err != nil {
		return fail("apply", err)
	}
	if err := readBack(ctx, nodes, s.Spec); err != nil {
		return fail("apply", err)
	}
	r.step("apply (read back from the kernel)", nil)
	starter := apply.Starter{Self: r.Self, LogDir: filepath.Join(filepath.Dir(r.Store.Dir), "logs", s.Name)}
	procs, err := starter.Start(ctx, nodes, s.Spec)
	lab.Processes = procs
	if serr := r.Store.Save(lab); serr != nil {
		err = errors.Join(err, serr)
	}
	if err != nil {
		return fail("start services", err)
	}
	if err := WaitWeb(ctx, nodes, s.Spec); err != nil {
		return fail("web servers", err)
	}
	r.step("web servers answering", nil)
	return lab, nil
}

// readBack reads every node's state from the kernel and fails with the
// differences from spec, if any.
func readBack(ctx context.Context, nodes map[string]node.Node, spec apply.Spec) error {
	diff, err := apply.Check(ctx, nodes, spec)
	if err != nil {
		return fmt.Errorf("read back: %w", err)
	}
	if len(diff) > 0 {
		lines := make([]string, len(diff))
		for i, d := range diff {
			lines[i] = "  " + d.String()
		}
		return fmt.Errorf("the kernel disagrees with the scenario after applying it:\n%s", strings.Join(lines, "\n"))
	}
	return nil
}

// Apply brings a running lab to scenario s: only what differs from the kernel
// changes (a weight edit edits that real server); what the previously applied
// scenario declared and s does not is removed; the web servers restart only if
// their configuration changed. It returns the writes made.
func (r *Runner) Apply(ctx context.Context, s *Scenario) ([]apply.Change, error) {
	lab, err := r.Store.Load(s.Name)
	if err != nil {
		return nil, err
	}
	if lab.Topology != topo.AbsPath(s.Topology.File) {
		return nil, fmt.Errorf("apply %s: the lab was built from %s, the scenario names %s: bring it down and up instead", s.Name, lab.Topology, s.Topology.File)
	}
	var old *Scenario
	if lab.Applied != "" {
		old, err = Parse(lab.Scenario, []byte(lab.Applied))
		if err != nil {
			old = nil // the previous text no longer parses (e.g. its topology moved): nothing to remove
		}
	}
	nodes := Nodes(lab)
	var changes []apply.Change
	if old != nil {
		ch, err := apply.Remove(ctx, nodes, old.Spec, s.Spec)
		changes = append(changes, ch...)
		if err != nil {
			return changes, err
		}
	}
	if s.Director() != "" {
		if err := r.loadModules(s); err != nil {
			return changes, err
		}
	}
	ch, err := apply.Apply(ctx, nodes, s.Spec)
	changes = append(changes, ch...)
	if err != nil {
		return changes, err
	}
	if err := readBack(ctx, nodes, s.Spec); err != nil {
		return changes, err
	}
	if old == nil || !sameProcesses(old.Spec, s.Spec) {
		for _, p := range lab.Processes {
			_ = p.Kill()
		}
		starter := apply.Starter{Self: r.Self, LogDir: filepath.Join(filepath.Dir(r.Store.Dir), "logs", s.Name)}
		procs, err := starter.Start(ctx, nodes, s.Spec)
		if err != nil {
			return changes, err
		}
		lab.Processes = procs
		changes = append(changes, apply.Change{Node: "lab", What: "restart web servers and commands"})
		if err := WaitWeb(ctx, nodes, s.Spec); err != nil {
			return changes, err
		}
	}
	lab.Director = s.Director()
	lab.Scenario = topo.AbsPath(s.File)
	lab.Applied = string(s.Source)
	return changes, r.Store.Save(lab)
}

func sameProcesses(a, b apply.Spec) bool {
	procs := func(s apply.Spec) map[string]string {
		m := map[string]string{}
		for _, n := range s.Nodes {
			m[n.Name] = fmt.Sprintf("%+v %q", n.Web, n.Commands)
		}
		return m
	}
	return maps.Equal(procs(a), procs(b))
}

// WaitWeb waits until each web server accepts a connection inside its own node.
func WaitWeb(ctx context.Context, nodes map[string]node.Node, spec apply.Spec) error {
	for _, ns := range spec.Nodes {
		if ns.Web == nil {
			continue
		}
		for _, port := range append(ns.Web.HTTP, ns.Web.HTTPS...) {
			addr := fmt.Sprintf("127.0.0.1:%d", port)
			err := nodes[ns.Name].Do(func() error {
				c, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", addr)
				if err == nil {
					c.Close()
				}
				return err
			})
			if err != nil {
				return fmt.Errorf("%s: %s: %w", ns.Name, addr, err)
			}
		}
	}
	return nil
}

// Down removes a lab; removing a lab that is not up is not an error.
func (r *Runner) Down(ctx context.Context, lab string) error {
	err := topo.Netns{Store: r.Store}.Destroy(ctx, lab)
	if err == nil {
		base := filepath.Dir(r.Store.Dir)
		os.RemoveAll(filepath.Join(base, "logs", lab))
		// Leave no empty directories of lvslab's behind.
		for _, d := range []string{filepath.Join(base, "logs"), r.Store.Dir, base} {
			_ = os.Remove(d)
		}
	}
	return err
}

// GC removes every recorded lab (after a crash, records remain and name what to
// remove) and reports every failure.
func (r *Runner) GC(ctx context.Context) ([]string, error) {
	labs, err := r.Store.List()
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, l := range labs {
		errs = append(errs, r.Down(ctx, l))
	}
	return labs, errors.Join(errs...)
}
