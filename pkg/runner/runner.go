// Package runner brings labs up, applies edited scenarios to them, and takes
// them down again, on the kernel it runs on. It is the only writer of lab
// records (pkg/state): a lab is recorded before anything of it exists, so that
// Down and GC find everything after a crash or kill -9.
package runner

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/lvslab/lvslab/pkg/apply"
	"github.com/lvslab/lvslab/pkg/clab"
	"github.com/lvslab/lvslab/pkg/clabrt"
	"github.com/lvslab/lvslab/pkg/engine"
	"github.com/lvslab/lvslab/pkg/image"
	"github.com/lvslab/lvslab/pkg/keepalived"
	"github.com/lvslab/lvslab/pkg/kmod"
	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/node"
	"github.com/lvslab/lvslab/pkg/sandbox"
	"github.com/lvslab/lvslab/pkg/scenario"
	"github.com/lvslab/lvslab/pkg/state"
	"github.com/lvslab/lvslab/pkg/topo"
)

// Runner brings scenarios up and down on the kernel it runs on.
type Runner struct {
	Store       state.Store
	Runtime     topo.Runtime                 // how new labs' nodes are made; netns when nil
	RuntimeName lab.Runtime                  // containerlab: new labs in containers (overrides Runtime)
	Self        string                       // the lvslab binary, run as the web daemon
	Modules     string                       // module tree to load IPVS from; the running kernel's when empty
	Keep        bool                         // keep a half-built lab on failure, for inspection
	Log         func(step string, err error) // called after each step; may be nil
	Begin       func(step string)            // called before a long step (Log follows); may be nil
}

// New returns a Runner with the default state directory, running this binary.
func New() (*Runner, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return &Runner{Store: state.Store{Dir: state.DefaultDir}, Self: self}, nil
}

// RuntimeFor returns the topology runtime of that name. For containerlab it
// starts lvslab's own Docker engine first where lvslab runs one (inside the
// sandbox kernel), and imports the node image, when deploy is set; a lab's
// removal only needs the engine if it still runs.
func (r *Runner) RuntimeFor(ctx context.Context, name lab.Runtime, deploy bool) (topo.Runtime, error) {
	switch name {
	case lab.RuntimeNetns, "":
		return topo.Netns{}, nil
	case lab.RuntimeContainerlab:
		return r.containerlab(ctx, deploy)
	}
	return nil, fmt.Errorf("runtime %q is not one of lvslab's (netns, containerlab)", name)
}

// engineDir is where lvslab's own Docker engine runs, inside the sandbox
// kernel; on any other host lvslab uses the host's engine (DOCKER_HOST, or
// Docker's default socket) and own is false.
func (r *Runner) engineDir() (dir string, own bool) {
	if os.Getenv(sandbox.EnvInSandbox) == "" {
		return "", false
	}
	return filepath.Join(filepath.Dir(r.Store.Dir), "engine"), true
}

func (r *Runner) containerlab(ctx context.Context, deploy bool) (topo.Runtime, error) {
	rt := clabrt.Containerlab{Image: clab.NodeImage(""), Dir: filepath.Join(filepath.Dir(r.Store.Dir), "clab")}
	dir, own := r.engineDir()
	if own {
		rt.Host = engine.Host(dir)
		if !deploy {
			if len(engine.Processes(dir)) == 0 {
				rt.NoEngine = true // gone with the engine: only bridges and links are left
			}
			return rt, nil
		}
		r.begin("docker engine")
		e, _, err := engine.Ensure(ctx, engine.Config{Dir: dir})
		if err := r.step("docker engine", err); err != nil {
			return nil, err
		}
		e.Close()
	}
	if deploy {
		cli, err := rt.Client()
		if err != nil {
			return nil, err
		}
		defer cli.Close()
		if _, err := cli.Ping(ctx); err != nil {
			return nil, fmt.Errorf("no Docker engine answers at %s: start Docker, or run the lab in the sandbox kernel (--kernel uml): %w", cli.DaemonHost(), err)
		}
		if err := image.Check(ctx, cli, rt.Image); errors.Is(err, image.ErrNotFound) {
			r.begin("node image " + rt.Image)
			if _, err := image.Import(ctx, cli, rt.Image, image.Options{Self: r.Self}); err != nil {
				return nil, err
			}
			r.step("node image "+rt.Image, nil)
		} else if err != nil {
			return nil, err
		}
	}
	return rt, nil
}

// begin says a long step starts (the same name comes to Log when it ends).
func (r *Runner) begin(name string) {
	if r.Begin != nil {
		r.Begin(name)
	}
}

func (r *Runner) step(name string, err error) error {
	if r.Log != nil {
		r.Log(name, err)
	}
	return err
}

// starter starts a lab's processes: inside its nodes' containers where the
// runtime has them, else in their namespaces.
func (r *Runner) starter(rt topo.Runtime, labName string) apply.Starter {
	st := apply.Starter{Self: r.Self, LogDir: r.logDir(labName)}
	if c, ok := rt.(apply.ContainerStarter); ok {
		st.Containers = c
	}
	return st
}

func (r *Runner) logDir(labName string) string {
	return filepath.Join(filepath.Dir(r.Store.Dir), "logs", labName)
}

// loadModules loads what the lab needs: its topology's modules (veth, bridge)
// and its spec's (IPVS, schedulers, marks, ipip, ipv6). Only a kernel without
// IPVS is an error here: any other module a kernel lacks shows as the step
// that needs it failing, with that step's error.
func (r *Runner) loadModules(s *scenario.Scenario) error {
	mods := append(s.Topology.Modules(), s.Spec.Modules()...)
	loader := &kmod.Loader{Dir: r.Modules}
	if loader.Dir == "" {
		loader.Dir = kmod.DefaultDir()
	}
	err := loader.Load(mods...)
	if _, statErr := os.Stat("/proc/net/ip_vs"); statErr != nil && s.Director() != "" {
		return fmt.Errorf("this kernel cannot do IPVS (use --kernel uml): %w", errors.Join(err, statErr))
	}
	return nil
}

// Up builds the scenario's lab: topology, kernel state, web servers, and waits until
// every web server answers. On failure (ctx ending included) it removes what it
// built unless r.Keep.
func (r *Runner) Up(ctx context.Context, s *scenario.Scenario) (*state.Lab, error) {
	if err := r.loadModules(s); err != nil {
		return nil, r.step("load IPVS modules", err)
	}
	if _, err := r.Store.Load(s.Name); err == nil {
		return nil, fmt.Errorf("lab %q is already up (lvslab down %s)", s.Name, s.Name)
	}
	if total, available, err := memInfo(); err == nil {
		labs, _ := r.Store.List()
		if err := fits(len(labs), Need(s), total, available); err != nil {
			return nil, fmt.Errorf("up %s: %w", s.Name, err)
		}
	}
	rt := r.Runtime
	switch {
	case r.RuntimeName == lab.RuntimeContainerlab:
		var err error
		if rt, err = r.RuntimeFor(ctx, r.RuntimeName, true); err != nil {
			return nil, fmt.Errorf("up %s: %w", s.Name, err)
		}
	case rt == nil:
		rt = topo.Netns{IPv6: s.Spec.IPv6()}
	}
	nodes, err := rt.NodeNamespaces(s.Topology)
	if err != nil {
		return nil, err
	}
	l := &state.Lab{
		Name: s.Name, Runtime: rt.Name(), Topology: topo.AbsPath(s.Topology.File), Scenario: topo.AbsPath(s.File),
		Nodes: nodes, Director: s.Director(),
	}
	// Recorded before anything exists: a crash from here on leaves a record that
	// names everything to remove.
	if err := r.Store.Save(l); err != nil {
		return nil, err
	}
	fail := func(step string, err error) (*state.Lab, error) {
		if ctx.Err() != nil {
			err = fmt.Errorf("up %s: interrupted during %s: %w", s.Name, step, err)
		} else {
			err = fmt.Errorf("up %s: %s: %w", s.Name, step, err)
		}
		r.step(step, err)
		if !r.Keep {
			if derr := r.Down(context.WithoutCancel(ctx), s.Name); derr != nil {
				err = errors.Join(err, derr)
			}
		}
		return nil, err
	}
	r.begin("topology " + s.Topology.File)
	if err := rt.Deploy(ctx, s.Topology); err != nil {
		return fail("topology "+s.Topology.File, err)
	}
	r.step("topology "+s.Topology.File, nil)
	handles := l.Handles()
	kernel := apply.Open(handles)
	defer kernel.Close()
	r.begin("apply (read back from the kernel)")
	if _, err := kernel.Apply(ctx, s.Spec, nil); err != nil {
		return fail("apply", err)
	}
	if err := readBack(ctx, kernel, s.Spec, nil); err != nil {
		return fail("apply", err)
	}
	r.step("apply (read back from the kernel)", nil)
	r.begin("web servers answering")
	procs, err := r.starter(rt, s.Name).Start(ctx, handles, s.Spec)
	if err != nil {
		return fail("start services", err)
	}
	l.Processes = procs
	if err := WaitWeb(ctx, handles, s.Spec); err != nil {
		return fail("web servers", err)
	}
	l.Applied = string(s.Source)
	if err := r.Store.Save(l); err != nil {
		return fail("record", err)
	}
	r.step("web servers answering", nil)
	return l, nil
}

// readBack reads every node's state from the kernel and fails with the
// changes that would still be needed, if any: read-back is an empty diff.
func readBack(ctx context.Context, kernel *apply.Handles, spec lab.Spec, previous *lab.Spec) error {
	diff, err := kernel.Diff(ctx, spec, previous)
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
func (r *Runner) Apply(ctx context.Context, s *scenario.Scenario) ([]apply.Change, error) {
	l, err := r.Store.Load(s.Name)
	if err != nil {
		return nil, err
	}
	if l.Topology != topo.AbsPath(s.Topology.File) {
		return nil, fmt.Errorf("apply %s: the lab was built from %s, the scenario names %s: bring it down and up instead", s.Name, l.Topology, s.Topology.File)
	}
	var old *scenario.Scenario
	if l.Applied != "" {
		old, err = scenario.Parse(l.Scenario, []byte(l.Applied))
		if err != nil {
			old = nil // the previous text no longer parses (e.g. its topology moved): nothing to remove
		}
	}
	handles := l.Handles()
	var previous *lab.Spec
	if old != nil {
		previous = &old.Spec
	}
	if err := r.loadModules(s); err != nil {
		return nil, err
	}
	kernel := apply.Open(handles)
	defer kernel.Close()
	changes, err := kernel.Apply(ctx, s.Spec, previous)
	if err == nil {
		r.step(fmt.Sprintf("apply (%d changes)", len(changes)), nil)
		err = readBack(ctx, kernel, s.Spec, previous)
	}
	if err != nil {
		if ctx.Err() == nil || old == nil {
			return changes, err
		}
		// Interrupted: put back what was applied before.
		undone, rerr := kernel.Apply(context.WithoutCancel(ctx), old.Spec, &s.Spec)
		if rerr != nil {
			return changes, fmt.Errorf("apply %s: interrupted, and rolling back failed: %w", s.Name, errors.Join(err, rerr))
		}
		return changes, fmt.Errorf("apply %s: interrupted; rolled back to the scenario applied before (%d changes undone): %w", s.Name, len(undone), err)
	}
	restart := restartNodes(previous, s.Spec, l.Processes)
	if len(restart) > 0 {
		var kept []state.Process
		for _, p := range l.Processes {
			if p.Node != "" && !slices.Contains(restart, p.Node) {
				kept = append(kept, p)
				continue
			}
			_ = p.Kill()
		}
		var next lab.Spec // the restarted nodes' processes
		for _, n := range s.Spec.Nodes {
			if slices.Contains(restart, n.Name) {
				next.Nodes = append(next.Nodes, n)
			}
		}
		rt, err := r.RuntimeFor(ctx, l.Runtime, false)
		if err != nil {
			return changes, err
		}
		procs, err := r.starter(rt, s.Name).Start(ctx, handles, next)
		if err != nil {
			return changes, err
		}
		l.Processes = append(kept, procs...)
		for _, n := range restart {
			changes = append(changes, apply.Change{Node: n, Resource: apply.Processes, Object: "web server and commands", Action: apply.Restart})
		}
		if err := WaitWeb(ctx, handles, next); err != nil {
			return changes, err
		}
	}
	l.Director = s.Director()
	l.Scenario = topo.AbsPath(s.File)
	l.Applied = string(s.Source)
	return changes, r.Store.Save(l)
}

// restartNodes names the nodes whose web server and commands must be
// (re)started or stopped: those whose configuration differs from the one
// applied before (all, when that is not known), and those with a process that
// is gone. Records without nodes (older lvslab) restart every node.
func restartNodes(previous *lab.Spec, next lab.Spec, running []state.Process) []string {
	procs := func(n lab.NodeSpec) string {
		k := ""
		if n.Keepalived != nil {
			b, _ := keepalived.Marshal(keepalived.FromNode(n))
			k = string(b)
		}
		return fmt.Sprintf("%+v %q %q", n.Web, n.Commands, k)
	}
	var out []string
	add := func(name string) {
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	for _, n := range next.Nodes {
		var was lab.NodeSpec
		if previous != nil {
			was, _ = previous.Node(n.Name)
		}
		if previous == nil || procs(was) != procs(n) {
			add(n.Name)
		}
	}
	if previous != nil {
		for _, was := range previous.Nodes {
			if _, still := next.Node(was.Name); !still && (was.Web != nil || len(was.Commands) > 0 || was.Keepalived != nil) {
				add(was.Name)
			}
		}
	}
	for _, p := range running {
		if p.Node == "" {
			for _, n := range next.Nodes {
				add(n.Name)
			}
		} else if p.Exited() {
			add(p.Node)
		}
	}
	slices.Sort(out)
	return out
}

// WaitWeb waits until each web server accepts a connection inside its own node.
func WaitWeb(ctx context.Context, nodes map[string]node.Node, spec lab.Spec) error {
	ctx, cancel := context.WithTimeout(ctx, webWithin)
	defer cancel()
	for _, ns := range spec.Nodes {
		if ns.Web == nil {
			continue
		}
		// The sockets are lvslab's, open before the web server starts: a
		// connection is taken even before it runs. An answer says it does.
		var probes []func() error
		for _, port := range ns.Web.HTTP {
			addr := fmt.Sprintf("127.0.0.1:%d", port)
			probes = append(probes, func() error { return probeHTTP(ctx, addr) })
		}
		for _, port := range ns.Web.HTTPS {
			addr := fmt.Sprintf("127.0.0.1:%d", port)
			probes = append(probes, func() error {
				c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
				if err == nil {
					c.Close()
				}
				return err
			})
		}
		for _, port := range ns.Web.UDP {
			addr := fmt.Sprintf("127.0.0.1:%d", port)
			probes = append(probes, func() error { return probeUDP(ctx, addr) })
		}
		for _, probe := range probes {
			for {
				err := nodes[ns.Name].Do(probe)
				if err == nil {
					break
				}
				select {
				case <-ctx.Done():
					return fmt.Errorf("%s: no answer within %v: %w", ns.Name, webWithin, err)
				case <-time.After(50 * time.Millisecond):
				}
			}
		}
	}
	return nil
}

// webWithin bounds how long a lab's web servers may take to answer.
const webWithin = 20 * time.Second

// probeHTTP asks a web server for / and reads its status line.
func probeHTTP(ctx context.Context, addr string) error {
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := io.WriteString(c, "HEAD / HTTP/1.0\r\n\r\n"); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "HTTP/1.") {
		return fmt.Errorf("%s answered %q", addr, line)
	}
	return nil
}

// probeUDP sends a datagram to a web server's UDP port and waits for its answer.
func probeUDP(ctx context.Context, addr string) error {
	c, err := (&net.Dialer{}).DialContext(ctx, "udp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := io.WriteString(c, "ready?\n"); err != nil {
		return err
	}
	_, err = c.Read(make([]byte, 512))
	return err
}

// Down removes a lab: it stops every process in the lab's namespaces (recorded
// or not), removes its nodes, its logs and its record. It keeps going past
// failures and reports them all; removing a lab that is not up is not an error.
func (r *Runner) Down(ctx context.Context, name string) error {
	l, err := r.Store.Load(name)
	if errors.Is(err, state.ErrNoLab) {
		return nil
	}
	if err != nil {
		return err
	}
	rt, err := r.RuntimeFor(ctx, l.Runtime, false)
	if err != nil {
		return err
	}
	var errs []error
	procs := l.Processes
	if c, ok := rt.(clabrt.Containerlab); !ok || c.NoEngine {
		// Unrecorded processes too (lvslab killed during up). A container's
		// go with it: killing them here would only make the engine handle
		// containers that died under it, and restart them.
		procs = append(procs, state.ProcessesIn(l.Namespaces())...)
	}
	for _, p := range procs {
		errs = append(errs, p.Kill())
	}
	for _, p := range procs {
		errs = append(errs, p.WaitExited(ctx, 5*time.Second))
	}
	errs = append(errs, rt.Destroy(ctx, l.Nodes))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("down %s: %w", name, err)
	}
	base := filepath.Dir(r.Store.Dir)
	os.RemoveAll(r.logDir(name))
	if err := r.Store.Remove(name); err != nil {
		return err
	}
	// Leave no empty directories of lvslab's behind.
	for _, d := range []string{filepath.Join(base, "logs"), r.Store.Dir, base} {
		_ = os.Remove(d)
	}
	return nil
}

// GC removes every recorded lab (after a crash, records remain and name what to
// remove) and reports every failure.
func (r *Runner) GC(ctx context.Context) ([]string, error) {
	labs, err := r.Store.List()
	if err != nil {
		return nil, err
	}
	errs := []error{r.Store.RemoveStale()}
	for _, l := range labs {
		errs = append(errs, r.Down(ctx, l))
	}
	// Container labs whose record is gone: found by lvslab's label on their
	// containers and the alias of their bridges. Then lvslab's own engine, which
	// no lab needs any more.
	rt, err := r.RuntimeFor(ctx, lab.RuntimeContainerlab, false)
	if err == nil {
		more, err := rt.(clabrt.Containerlab).Leftovers(ctx)
		errs = append(errs, err)
		for _, name := range more {
			// Its processes run in its containers and go with them.
			errs = append(errs, rt.(clabrt.Containerlab).DestroyLab(ctx, name))
			labs = append(labs, name)
		}
	}
	if dir, own := r.engineDir(); own {
		errs = append(errs, engine.GC(ctx, dir))
	}
	return labs, errors.Join(errs...)
}
