package verify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/lvslab/lvslab/pkg/apply"
	"github.com/lvslab/lvslab/pkg/ipvsadm"
	"github.com/lvslab/lvslab/pkg/kmod"
	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/node"
)

// Controller stops, starts and runs a lab's processes for steps: the runner
// implements it (it knows how each node's services were started, in a
// namespace or in a container).
type Controller interface {
	// Stop ends a node's service: SIGTERM, waiting until it has ended, or
	// SIGKILL when kill is set.
	Stop(ctx context.Context, node, service string, kill bool) error
	// Start starts a node's service again, as the lab started it.
	Start(ctx context.Context, node, service string) error
	// Exec runs argv in a node (in its container where it has one) and
	// returns its exit status and output.
	Exec(ctx context.Context, node string, argv []string) (status int, output string, err error)
	// Fault sets how a node's web server answers.
	Fault(ctx context.Context, node string, answer lab.WebAnswer) error
	// VRRP reads the states of a node's keepalived VRRP instances.
	VRRP(ctx context.Context, node string) (map[string]lab.VRRPState, error)
}

// pollEvery is how often a wait step looks at its condition.
const pollEvery = 10 * time.Millisecond

// heldConns are connections a hold step keeps open across steps.
type heldConns struct {
	svc    string // the service's key, for the model
	names  []string
	locals []netip.AddrPort
	conns  []net.Conn
	done   func()
	// started: each connection has sent its request's first line, and a
	// request on it sends the rest.
	started bool
}

// runSteps runs each step's action, then its checks, and returns an outcome
// for each action (Kind "step") followed by its checks'.
func (v *Judge) runSteps(ctx context.Context) []Outcome {
	var out []Outcome
	defer v.release(ctx)
	defer func() {
		if v.traffic != nil {
			v.traffic.stop()
			v.traffic = nil
		}
	}()
	for i, st := range v.Steps {
		label := fmt.Sprintf("step %d: %s", i+1, st.Name)
		t := time.Now()
		msg, err := v.act(ctx, st.Action)
		r := Outcome{Step: label, Check: st.Name, Kind: "step", What: st.Action.Describe(), Passed: err == nil, Message: msg, Duration: time.Since(t), Kernel: v.Kernel.Release}
		if err != nil {
			r.Message = err.Error()
		}
		out = append(out, r)
		for _, c := range st.Checks {
			t := time.Now()
			var cr Outcome
			if err != nil {
				cr = Outcome{Skipped: true, Message: "not run: the step's action failed"}
			} else {
				cr = v.run(ctx, c)
			}
			cr.Step, cr.Check, cr.Kind, cr.What, cr.Duration = label, c.Name, c.Kind(), c.Describe(), time.Since(t)
			cr.Kernel = v.Kernel.Release
			out = append(out, cr)
		}
	}
	return out
}

// act does a step's action; msg reports what it measured.
func (v *Judge) act(ctx context.Context, a lab.Action) (msg string, err error) {
	if a.Kind != lab.ActWait && a.Kind != lab.ActTraffic && a.Kind != lab.ActTrafficEnd {
		v.lastAct = time.Now()
	}
	n, ok := v.Nodes[a.Node]
	if !ok && a.Node != "" {
		return "", fmt.Errorf("node %s is not in lab %s", a.Node, v.Lab)
	}
	switch a.Kind {
	case lab.ActStop, lab.ActKill, lab.ActStart, lab.ActRestart:
		if v.Control == nil {
			return "", errors.New("this lab's processes cannot be controlled from here")
		}
		if a.Kind != lab.ActStart {
			if err := v.Control.Stop(ctx, a.Node, a.Service, a.Kind == lab.ActKill); err != nil {
				return "", err
			}
		}
		if a.Kind == lab.ActStart || a.Kind == lab.ActRestart {
			return "", v.Control.Start(ctx, a.Node, a.Service)
		}
		return "", nil
	case lab.ActApply:
		return v.applyRules(ctx, a)
	case lab.ActLink:
		if err := setLink(n, a.Dev, a.Up); err != nil || !a.Up {
			return "", err
		}
		// The kernel dropped the routes through the interface when it went
		// down; plugged back in, the node gets what the scenario declares
		// again, as a network manager would give it.
		kernel := apply.Open(v.Nodes)
		defer kernel.Close()
		changes, err := kernel.Apply(ctx, *v.Spec, v.Spec)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%d routes and addresses restored", len(changes)), nil
	case lab.ActNetem:
		return "", setNetem(n, a.Dev, a.Netem)
	case lab.ActHold:
		return v.holdStep(ctx, n, a)
	case lab.ActRelease:
		return "", v.release(ctx)
	case lab.ActWait:
		if a.Until == nil {
			select {
			case <-ctx.Done():
				return "", ctx.Err()
			case <-time.After(a.For):
				return "", nil
			}
		}
		took, err := v.waitUntil(ctx, *a.Until, a.Within)
		if err != nil {
			return "", err
		}
		msg := fmt.Sprintf("%s after %v", a.Until.Describe(), took.Round(time.Millisecond))
		if !v.lastAct.IsZero() {
			// From the change that made the lab wait (a stop, a kill, a
			// pulled cable), which may itself have taken a while.
			msg += fmt.Sprintf(" (%v after the last change began)", time.Since(v.lastAct).Round(time.Millisecond))
		}
		return msg, nil
	case lab.ActExec:
		status, output, err := v.exec(ctx, n, a.Command)
		if err != nil {
			return "", err
		}
		if status != a.Status {
			return "", fmt.Errorf("%q exited with status %d, expected %d: %s", a.Command, status, a.Status, output)
		}
		return fmt.Sprintf("exit status %d", status), nil
	case lab.ActAskHeld:
		return v.askHeld(ctx, a)
	case lab.ActTraffic, lab.ActTrafficEnd:
		return v.trafficStep(ctx, n, a)
	case lab.ActFault:
		if v.Control == nil {
			return "", errors.New("this lab's processes cannot be controlled from here")
		}
		return "", v.Control.Fault(ctx, a.Node, a.Answer)
	}
	return "", fmt.Errorf("unknown action %q", a.Kind)
}

func (v *Judge) exec(ctx context.Context, n node.Node, argv []string) (int, string, error) {
	if v.Control != nil {
		return v.Control.Exec(ctx, n.Name, argv)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out limitedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := n.Run(cmd)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), out.String(), nil
	}
	return 0, out.String(), err
}

// limitedBuffer keeps the first 4 KiB written to it.
type limitedBuffer struct{ b []byte }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := 4096 - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string { return string(l.b) }

// applyRules runs ipvsadm rules on the director's table as the spec holds
// it, writes the difference to the kernel, and makes each model follow: a
// weight or threshold edit edits the model's server, -d removes it (rr hands
// its position on, the trash keeps its counts), -a adds it; a service
// re-created or given another scheduler or persistence starts its model
// afresh from the kernel at its next check.
func (v *Judge) applyRules(ctx context.Context, a lab.Action) (string, error) {
	ns, _ := v.Spec.Node(a.Node)
	rules := ipvsadm.Rules(lab.CloneServices(ns.Services))
	for i, line := range a.Rules {
		r, err := ipvsadm.ParseRule(line)
		if err == nil {
			err = rules.Exec(r)
		}
		if err != nil {
			return "", fmt.Errorf("rule %d %q: %w", i+1, line, err)
		}
	}
	next := v.Spec.Clone()
	next.SetServices(a.Node, []lab.Service(rules))
	kernel := apply.Open(v.Nodes)
	defer kernel.Close()
	changes, err := kernel.Apply(ctx, next, v.Spec)
	if err != nil {
		return "", err
	}
	if diff, err := kernel.Diff(ctx, next, v.Spec); err != nil || len(diff) > 0 {
		return "", fmt.Errorf("the kernel disagrees after applying: %v %v", diff, err)
	}
	for key, m := range v.models {
		var was, now *lab.Service
		for i := range ns.Services {
			if ns.Services[i].Key() == key {
				was = &ns.Services[i]
			}
		}
		for i := range rules {
			if rules[i].Key() == key {
				now = &rules[i]
			}
		}
		if was == nil || now == nil || was.Scheduler != now.Scheduler || !slices.Equal(was.SchedFlags, now.SchedFlags) ||
			was.Persistent != now.Persistent || was.Timeout != now.Timeout || was.Netmask != now.Netmask {
			delete(v.models, key)
			if now != nil && was != nil {
				// The kernel's scheduler starts from its initial state: the
				// next check's model may start there too.
				v.fresh = append(v.fresh, key)
			}
			continue
		}
		followServers(m.sim, *was, *now, v.Spec.OwnerOf)
	}
	v.Spec = &next
	return fmt.Sprintf("%d changes", len(changes)), nil
}

// followServers makes a model's servers follow a service's edit.
func followServers(sim *Sim, was, now lab.Service, owner func(netip.Addr) string) {
	find := func(s lab.Service, a netip.AddrPort) *lab.Server {
		for i := range s.Servers {
			if s.Servers[i].Addr == a {
				return &s.Servers[i]
			}
		}
		return nil
	}
	for _, old := range was.Servers {
		if find(now, old.Addr) == nil {
			sim.RemoveDest(owner(old.Addr.Addr()))
		}
	}
	for _, srv := range now.Servers {
		old := find(was, srv.Addr)
		name := owner(srv.Addr.Addr())
		switch {
		case old == nil:
			sim.AddServerThresholds(name, srv.Addr, srv.Weight, int(srv.Upper), int(srv.Lower))
		case old.Weight != srv.Weight || old.Upper != srv.Upper || old.Lower != srv.Lower:
			sim.Edit(name, srv.Weight, int(srv.Upper), int(srv.Lower))
		}
	}
}

// setLink sets an interface of a node down or up.
func setLink(n node.Node, dev string, up bool) error {
	h, err := n.Netlink()
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(dev)
	if err != nil {
		return fmt.Errorf("%s: %s: %w", n.Name, dev, err)
	}
	if up {
		err = h.LinkSetUp(l)
	} else {
		err = h.LinkSetDown(l)
	}
	if err != nil {
		return fmt.Errorf("%s: %s: %w", n.Name, dev, err)
	}
	return nil
}

// setNetem puts a netem qdisc at the root of an interface, or removes it.
func setNetem(n node.Node, dev string, ne lab.Netem) error {
	_ = (&kmod.Loader{Dir: kmod.DefaultDir()}).Load(lab.ModuleNetem) // a kernel without it fails below
	h, err := n.Netlink()
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(dev)
	if err != nil {
		return fmt.Errorf("%s: %s: %w", n.Name, dev, err)
	}
	attrs := netlink.QdiscAttrs{LinkIndex: l.Attrs().Index, Handle: netlink.MakeHandle(1, 0), Parent: netlink.HANDLE_ROOT}
	if ne.IsZero() {
		qs, err := h.QdiscList(l)
		if err != nil {
			return fmt.Errorf("%s: %s: qdiscs: %w", n.Name, dev, err)
		}
		for _, q := range qs {
			if q.Type() == "netem" {
				if err := h.QdiscDel(q); err != nil {
					return fmt.Errorf("%s: %s: remove netem: %w", n.Name, dev, err)
				}
			}
		}
		return nil
	}
	q := netlink.NewNetem(attrs, netlink.NetemQdiscAttrs{
		Latency: uint32(ne.Delay / time.Microsecond),
		Loss:    float32(ne.Loss),
		Rate64:  ne.Rate,
	})
	if err := h.QdiscReplace(q); err != nil {
		return fmt.Errorf("%s: %s: netem %s: %w", n.Name, dev, ne, err)
	}
	return nil
}

// holdStep opens connections and keeps them open until a release step (or
// the end of the run); the model of their service counts them as held.
func (v *Judge) holdStep(ctx context.Context, from node.Node, a lab.Action) (string, error) {
	c := lab.Check{HTTP: a.HTTP, From: a.Node, Requests: a.Count, Hold: a.Count}
	svc, dst, ok := v.service(c)
	if !ok {
		return "", fmt.Errorf("no IPVS service receives %s", a.HTTP)
	}
	m, _, _, why, _ := v.prepare(c)
	at := time.Now()
	seq, conns, err := v.holdConns(ctx, from, netip.Addr{}, c, a.Count)
	if err != nil {
		return "", err
	}
	locals, done := Locals(conns), func() { closeConns(conns) }
	h := heldConns{svc: svc.Key(), locals: locals, conns: conns, done: done, started: a.Started}
	if a.Started {
		for _, cn := range conns {
			if _, err := cn.Write([]byte(requestLine)); err != nil {
				done()
				return "", fmt.Errorf("begin a request on a held connection: %w", err)
			}
		}
	}
	msg := fmt.Sprintf("held: %v", seq)
	if m != nil {
		var pred []string
		for i := range locals {
			pred = append(pred, m.sim.Schedule(v.request(c, dst.Addr(), netip.Addr{}, locals, i, at), true))
		}
		h.names = pred
		if !slices.Equal(pred, seq) {
			done()
			delete(v.models, svc.Key())
			return "", fmt.Errorf("held connections went to %v, the model predicted %v", seq, pred)
		}
		msg += " (as the model predicted)"
	} else if why != "" {
		msg += " (not modelled: " + why + ")"
	}
	v.held = append(v.held, h)
	return msg, nil
}

// release closes every held connection and, where a model counts them,
// waits until the director has seen them close; the models count them closed.
func (v *Judge) release(ctx context.Context) error {
	var errs []error
	for _, h := range v.held {
		h.done()
		// Only a model needs the director to have seen them close (after a
		// failover another director may have).
		if m := v.models[h.svc]; m != nil {
			errs = append(errs, v.settle(ctx, h.locals))
			m.sim.Advance(time.Since(v.start))
			for _, name := range h.names {
				m.sim.Close(name)
			}
		}
	}
	v.held = nil
	return errors.Join(errs...)
}

// waitUntil polls a condition until it holds or within has passed, and
// returns how long it took.
func (v *Judge) waitUntil(ctx context.Context, c lab.Condition, within time.Duration) (time.Duration, error) {
	start := time.Now()
	deadline := start.Add(within)
	last := ""
	for {
		ok, state, err := v.holds(ctx, c)
		if ok && err == nil {
			return time.Since(start), nil
		}
		last = state
		if err != nil {
			last = err.Error() // perhaps passing: looked at again until the bound
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("not within %v: %s (%s)", within, c.Describe(), last)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(pollEvery):
		}
	}
}

// holds reports whether a condition holds now, and what is the case otherwise.
func (v *Judge) holds(ctx context.Context, c lab.Condition) (bool, string, error) {
	switch {
	case c.VRRPNode != "":
		if v.Control == nil {
			return false, "", errors.New("this lab's processes cannot be asked from here")
		}
		states, err := v.Control.VRRP(ctx, c.VRRPNode)
		if err != nil {
			return false, "", err
		}
		got, ok := states[c.Instance]
		if !ok {
			return false, "", fmt.Errorf("%s's keepalived has no instance %s", c.VRRPNode, c.Instance)
		}
		return got == c.State, "it is " + string(got), nil
	case c.Synced != "":
		return v.synced(c.Synced)
	case c.NeighbourOf != "":
		return v.neighbourIs(c)
	case c.Owner != nil:
		var owners []string
		for name, n := range v.Nodes {
			if has, err := hasAddr(n, c.Address); err != nil {
				return false, "", err
			} else if has {
				owners = append(owners, name)
			}
		}
		slices.Sort(owners)
		if *c.Owner == "" {
			return len(owners) == 0, fmt.Sprintf("held by %v", owners), nil
		}
		if c.Only {
			return len(owners) == 1 && owners[0] == *c.Owner, fmt.Sprintf("held by %v", owners), nil
		}
		// Others may hold it too: a VRRP master killed with -9 keeps it.
		return slices.Contains(owners, *c.Owner), fmt.Sprintf("held by %v", owners), nil
	case c.Server.IsValid():
		t, err := apply.ReadTable(v.Nodes[v.Director])
		if err != nil {
			return false, "", err
		}
		e := t.Find(c.Service)
		in, weight := false, 0
		if e != nil {
			for _, s := range e.Servers {
				if s.Addr == c.Server {
					in, weight = true, s.Weight
				}
			}
		}
		if in && c.Weight != nil {
			return c.Present && weight == *c.Weight, fmt.Sprintf("in the table with weight %d", weight), nil
		}
		return in == c.Present, fmt.Sprintf("in the table: %v", in), nil
	}
	from, ok := v.Nodes[c.From]
	if !ok {
		return false, "", fmt.Errorf("node %s is not in lab %s", c.From, v.Lab)
	}
	r := HTTPClient{From: from, Timeout: 500 * time.Millisecond}.Get(ctx, c.URL, 1)
	if len(r.Errors) > 0 {
		return false, r.Errors[0].Error(), nil
	}
	return true, "", nil
}

// hasAddr reports whether a node holds an address on one of its interfaces
// other than loopback (a DR real server's VIP on lo is not ownership).
func hasAddr(n node.Node, a netip.Addr) (bool, error) {
	h, err := n.Netlink()
	if err != nil {
		return false, err
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return false, fmt.Errorf("%s: links: %w", n.Name, err)
	}
	for _, l := range links {
		if l.Attrs().Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return false, fmt.Errorf("%s: addresses: %w", n.Name, err)
		}
		for _, x := range addrs {
			if ip, ok := netip.AddrFromSlice(x.IP); ok && ip.Unmap() == a {
				return true, nil
			}
		}
	}
	return false, nil
}

// askHeld sends a request on each held connection, counts those that get an
// answer, then closes them all as release does. Lost is how many did not.
func (v *Judge) askHeld(ctx context.Context, a lab.Action) (string, error) {
	answered, lost := 0, 0
	for _, h := range v.held {
		for _, c := range h.conns {
			if ask(c, h.started) {
				answered++
			} else {
				lost++
			}
		}
	}
	if err := v.release(ctx); err != nil && lost == 0 {
		return "", err
	}
	msg := fmt.Sprintf("%d held connections answered, %d lost", answered, lost)
	if answered+lost == 0 {
		return "", errors.New("no connection is held (hold some in an earlier step)")
	}
	if a.Lost != nil && lost != *a.Lost {
		return "", fmt.Errorf("%s: expected %d lost", msg, *a.Lost)
	}
	return msg, nil
}

// askTimeout bounds the answer to a request on a held connection.
const askTimeout = 2 * time.Second

// requestLine is the first line of the request a held connection sends:
// begun, it waits for the empty line that ends it.
const requestLine = "GET / HTTP/1.0\r\n"

// ask sends a request on an open connection (the rest of it, when started)
// and reports whether an answer came back.
func ask(c net.Conn, started bool) bool {
	_ = c.SetDeadline(time.Now().Add(askTimeout))
	req := requestLine + "\r\n"
	if started {
		req = "\r\n"
	}
	if _, err := c.Write([]byte(req)); err != nil {
		return false
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	return n > 0 && (err == nil || errors.Is(err, io.EOF)) && strings.HasPrefix(string(buf[:n]), "HTTP/1.")
}

// synced reports whether every held connection is in a node's IPVS
// connection table, and how many are otherwise.
func (v *Judge) synced(name string) (bool, string, error) {
	n, ok := v.Nodes[name]
	if !ok {
		return false, "", fmt.Errorf("node %s is not in lab %s", name, v.Lab)
	}
	conns, err := ReadConns(n)
	if err != nil {
		return false, "", err
	}
	in := map[netip.AddrPort]bool{}
	for _, c := range conns {
		in[c.Client] = in[c.Client] || !c.Template
	}
	have, all := 0, 0
	for _, h := range v.held {
		for _, l := range h.locals {
			all++
			if in[l] {
				have++
			}
		}
	}
	if all == 0 {
		return false, "", errors.New("no connection is held (hold some in an earlier step)")
	}
	return have == all, fmt.Sprintf("%d of %d held connections there", have, all), nil
}

// neighbourIs reports whether c.From's neighbour entry for c.Address has a
// MAC of node c.NeighbourOf.
func (v *Judge) neighbourIs(c lab.Condition) (bool, string, error) {
	from, ok := v.Nodes[c.From]
	if !ok {
		return false, "", fmt.Errorf("node %s is not in lab %s", c.From, v.Lab)
	}
	of, ok := v.Nodes[c.NeighbourOf]
	if !ok {
		return false, "", fmt.Errorf("node %s is not in lab %s", c.NeighbourOf, v.Lab)
	}
	macs, err := of.MACs()
	if err != nil {
		return false, "", err
	}
	h, err := from.Netlink()
	if err != nil {
		return false, "", err
	}
	defer h.Close()
	neighs, err := h.NeighList(0, netlink.FAMILY_V4)
	if err != nil {
		return false, "", fmt.Errorf("%s: neighbours: %w", c.From, err)
	}
	for _, n := range neighs {
		if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap() == c.Address && n.HardwareAddr != nil {
			mac := n.HardwareAddr.String()
			return slices.Contains(macs, mac), "its entry is " + mac, nil
		}
	}
	return false, "no entry", nil
}
