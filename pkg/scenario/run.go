package scenario

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
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
		for _, svc := range n.Services {
			if !seen[svc.Scheduler] {
				seen[svc.Scheduler] = true
				mods = append(mods, "ip_vs_"+svc.Scheduler)
			}
		}
	}
	return mods
}

// Up builds the scenario's lab: topology, kernel state, web servers, and waits until
// every web server answers. On failure it removes what it built unless r.Keep.
func (r *Runner) Up(ctx context.Context, s *Scenario) (*state.Lab, error) {
	if s.Director() != "" {
		loader := &kmod.Loader{Dir: r.Modules}
		if loader.Dir == "" {
			loader.Dir = kmod.DefaultDir()
		}
		if err := loader.Load(IPVSModules(s)...); err != nil {
			if _, statErr := os.Stat("/proc/net/ip_vs"); statErr != nil {
				return nil, r.step("load IPVS modules", fmt.Errorf("this kernel cannot do IPVS (use --kernel uml): %w", err))
			}
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
	if err := r.Store.Save(lab); err != nil {
		return fail("record", err)
	}
	nodes := Nodes(lab)
	if _, err := apply.Apply(ctx, nodes, s.Spec); err != nil {
		return fail("apply", err)
	}
	r.step("apply", nil)
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

// WaitWeb waits until each web server accepts a connection inside its own node.
func WaitWeb(ctx context.Context, nodes map[string]node.Node, spec apply.Spec) error {
	for _, ns := range spec.Nodes {
		if ns.Web == nil {
			continue
		}
		for _, port := range ns.Web.HTTP {
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
