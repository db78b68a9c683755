package verify

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lvslab/lvslab/pkg/apply"
	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/node"
)

// Outcome is the outcome of one check.
type Outcome struct {
	Check     string         `json:"check"`
	Kind      lab.CheckKind  `json:"kind"`
	Kernel    string         `json:"kernel"` // the release the lab ran on, whose behaviour the model follows
	What      string         `json:"what"`
	Passed    bool           `json:"passed"`
	Skipped   bool           `json:"skipped,omitempty"`
	Message   string         `json:"message,omitempty"` // why it failed or was skipped
	Predicted []string       `json:"predicted,omitempty"`
	Observed  []string       `json:"observed,omitempty"`
	Counts    map[string]int `json:"counts,omitempty"`
	Errors    []string       `json:"errors,omitempty"`
	Replies   []Reply        `json:"replies,omitempty"` // ARP
	Frames    []string       `json:"frames,omitempty"`  // what the check's capture kept
	Duration  time.Duration  `json:"durationNs"`
	Step      string         `json:"step,omitempty"` // "step 2: web2 stops", for a step's action and its checks
}

// Reply is one ARP reply: who answered, with which MAC.
type Reply struct {
	Node string `json:"node"`
	MAC  string `json:"mac"`
}

// Judge runs a scenario's checks against a running lab and judges what it sees.
type Judge struct {
	Spec     *lab.Spec            // what the lab holds
	Checks   []lab.Check          // what to check, in order
	Nodes    map[string]node.Node // the lab's nodes
	Lab      string               // the lab's name, for messages
	Director string               // the node holding the IPVS services
	Driver   lab.Driver           // go (default) or curl
	Kernel   Kernel               // the kernel the lab runs on: the models follow its release
	// ResetSchedulers re-creates an rr, wrr, lblc or lblcr service (delete,
	// add, as the scenario declares it) before the first check that goes to
	// it: on a lab that has served traffic, their position and cache are
	// otherwise unknown. Real servers keep their counts (the kernel's trash).
	ResetSchedulers bool
	Steps           []lab.Step // run in order after Checks
	Control         Controller // stops and starts services for steps; nil: steps that need it fail

	ports   *SourcePorts
	models  map[string]*serviceModel // per service key, kept for the whole run
	held    []heldConns              // connections hold steps keep open
	fresh   []string                 // services whose scheduler an apply step has just started afresh
	lastAct time.Time                // when the last step that changed the lab began
	traffic *traffic                 // a traffic step's client, until traffic_end
	start   time.Time                // the models' clocks count from here
}

// Run runs every check in order. Its HTTP connections take source ports from
// one pool, from a random start, so that none reuses a port the director still
// keeps an entry for.
func (v *Judge) Run(ctx context.Context) []Outcome {
	v.ports = NewSourcePorts(uint16(firstPort + rand.IntN(lastPort-firstPort)))
	v.models = map[string]*serviceModel{}
	v.start = time.Now()
	var out []Outcome
	for _, c := range v.Checks {
		t := time.Now()
		r := v.run(ctx, c)
		r.Check, r.Kind, r.What, r.Duration = c.Name, c.Kind(), c.Describe(), time.Since(t)
		r.Kernel = v.Kernel.Release
		out = append(out, r)
	}
	return append(out, v.runSteps(ctx)...)
}

func (v *Judge) run(ctx context.Context, c lab.Check) Outcome {
	if c.Capture != nil {
		return v.captured(ctx, c)
	}
	return v.send(ctx, c)
}

// send runs a check: its requests, or its ARP probe.
func (v *Judge) send(ctx context.Context, c lab.Check) Outcome {
	from, ok := v.Nodes[c.From]
	if !ok {
		return Outcome{Message: fmt.Sprintf("node %s is not in lab %s", c.From, v.Lab)}
	}
	if c.Kind() == lab.CheckARP {
		return v.runARP(ctx, c, from)
	}
	if why := v.notConcurrent(c); why != "" {
		return Outcome{Skipped: true, Message: why}
	}
	var srcs []netip.Addr
	if c.Sources > 0 {
		first, err := sourceBase(from, c.Dev)
		if err != nil {
			return Outcome{Message: err.Error()}
		}
		added, remove, err := AddSources(from, c.Dev, first, c.Sources)
		if err != nil {
			return Outcome{Message: err.Error()}
		}
		defer remove()
		srcs = added
	} else {
		srcs = []netip.Addr{{}}
	}

	// The model is checked against the director as it is before this check's
	// connections (and as the model followed it through earlier checks). It
	// predicts from what lvslab sends (source addresses and ports), never from
	// what the check observes.
	// Every check that sends to a service feeds its model, so that a later
	// check judged by the model knows the connections of those that were not
	// (a grading scenario counts first, then judges a sequence). lost: the
	// kernel has gone where the model did not follow.
	m, svc, dst, why, lost := v.prepare(c)
	var r Outcome
	var perSource [][]string
	var errs []error
	var reqs []Request
	held := c.Hold // held connections still to open, the check's first ones
	var closeHeld []func()
	var heldLocals []netip.AddrPort
	defer func() {
		for _, f := range closeHeld {
			f()
		}
	}()
	if got, ok := v.sendConcurrent(ctx, c, from, srcs); ok {
		r.Observed, errs = got.Sequence, got.Errors
		// Connection i came from the sources in turn; the model is fed each
		// one's address and port (the order does not matter for the counts
		// of the schedulers a concurrent check may be modelled with).
		for i := range got.Sequence {
			reqs = append(reqs, v.request(c, dst.Addr(), srcs[i%len(srcs)], got.Locals, i, time.Time{}))
		}
		srcs = nil // all sent, and no source has an order of its own
	}
	for _, src := range srcs {
		var got Result
		n := c.Requests
		if h := min(held, n); h > 0 && c.Kind() == lab.CheckHTTP {
			at := time.Now()
			seq, locals, done, err := v.hold(ctx, from, src, c, h)
			if err != nil {
				return Outcome{Message: err.Error()}
			}
			for range locals {
				got.Started = append(got.Started, at)
			}
			closeHeld = append(closeHeld, done)
			heldLocals = append(heldLocals, locals...)
			got.Sequence, got.Locals = seq, locals
			held -= h
			n -= h
		}
		var rest Result
		switch {
		case c.Kind() == lab.CheckUDP:
			rest = UDPClient{From: from, Source: src, Ports: v.ports}.Send(ctx, c.UDP, n)
		case v.Driver == lab.DriverCurl:
			cc := CurlClient{From: from}
			if src.IsValid() {
				cc.Source = src.String()
			}
			rest = cc.Get(ctx, c.HTTP, n)
		default:
			rest = HTTPClient{From: from, Source: src, Ports: v.ports}.Get(ctx, c.HTTP, n)
		}
		got.Sequence = append(got.Sequence, rest.Sequence...)
		got.Locals = append(got.Locals, rest.Locals...)
		got.Started = append(got.Started, rest.Started...)
		got.Errors = rest.Errors
		for i := range c.Requests {
			var at time.Time
			if i < len(got.Started) {
				at = got.Started[i]
			}
			reqs = append(reqs, v.request(c, dst.Addr(), src, got.Locals, i, at))
		}
		perSource = append(perSource, got.Sequence)
		r.Observed = append(r.Observed, got.Sequence...)
		errs = append(errs, got.Errors...)
	}
	var pred []string
	if m != nil && !c.Expect.Model && c.Concurrency > 1 && !svc.Scheduler.OrderFree() {
		// Connections in flight at once reach the scheduler in an order
		// the model cannot know, and this scheduler's choice depends on it.
		delete(v.models, svc.Key())
		m = nil
	}
	if m != nil {
		m.sim.Proto = lab.TCP
		if c.Kind() == lab.CheckUDP {
			m.sim.Proto = lab.UDP
		}
		pred = sequence(m.sim, reqs, c.Hold, v.start)
		if m.sim.Unsure != "" {
			why = "timing: " + m.sim.Unsure
			delete(v.models, svc.Key()) // the next check starts again from the kernel's table
			m, pred = nil, nil
		}
	}
	if len(closeHeld) > 0 {
		for _, f := range closeHeld {
			f()
		}
		closeHeld = nil
		if err := v.settle(ctx, heldLocals); err != nil {
			errs = append(errs, err)
		}
		if m != nil {
			m.sim.Advance(time.Since(v.start))
			for _, name := range pred[:min(c.Hold, len(pred))] {
				m.sim.Close(name)
			}
		}
	}
	r.Counts = map[string]int{}
	for _, x := range r.Observed {
		if x != "" {
			r.Counts[x]++
		}
	}
	for _, e := range errs {
		r.Errors = append(r.Errors, e.Error())
	}
	var problems []string
	unjudged := "" // why the model could not predict, if it could not
	if len(errs) != c.Expect.Failures {
		problems = append(problems, fmt.Sprintf("%d requests failed, expected %d", len(errs), c.Expect.Failures))
	}
	if c.Expect.Model {
		switch {
		case lost:
			problems = append(problems, why)
		case m == nil:
			unjudged = why
		case c.Concurrency > 1:
			if d := countsDiffer(pred, r.Counts); d != "" {
				problems = append(problems, d)
			}
		default:
			r.Predicted = pred
			if i := FirstDivergence(pred, r.Observed); i >= 0 {
				problems = append(problems, fmt.Sprintf("first divergence at request %d: expected %s, observed %s", i+1, at(pred, i), at(r.Observed, i)))
			}
		}
	}
	if c.Expect.Sequence != nil {
		r.Predicted = c.Expect.Sequence
		if i := FirstDivergence(c.Expect.Sequence, r.Observed); i >= 0 {
			problems = append(problems, fmt.Sprintf("first divergence at request %d: expected %s, observed %s", i+1, at(c.Expect.Sequence, i), at(r.Observed, i)))
		}
	}
	if c.Expect.Counts != nil && !maps.Equal(c.Expect.Counts, r.Counts) {
		problems = append(problems, fmt.Sprintf("counts %v, expected %v", r.Counts, c.Expect.Counts))
	}
	if c.Expect.Sticky {
		for i, seq := range perSource {
			if len(seq) > 0 && slices.ContainsFunc(seq, func(x string) bool { return x != seq[0] }) {
				problems = append(problems, fmt.Sprintf("source %d was not sticky: %v", i+1, seq))
				break
			}
		}
	}
	if c.Expect.Servers != nil {
		for server := range r.Counts {
			if !slices.Contains(c.Expect.Servers, server) {
				problems = append(problems, fmt.Sprintf("%s answered; only %v may", server, c.Expect.Servers))
			}
		}
	}
	r.Passed, r.Skipped, r.Message = verdict(problems, unjudged)
	return r
}

// verdict judges a check from the problems found and, when the model could not
// predict, why not. A check whose expectations failed fails, whether or not the
// model could predict; one that met every expectation it could be judged on,
// but not the model's, is skipped, with the reason.
func verdict(problems []string, unjudged string) (passed, skipped bool, message string) {
	switch {
	case len(problems) > 0:
		message = strings.Join(problems, "; ")
		if unjudged != "" {
			message += "; not judged against the model either: " + unjudged
		}
		return false, false, message
	case unjudged != "":
		return false, true, "not judged against the model: " + unjudged
	}
	return true, false, ""
}

func at(s []string, i int) string {
	if i < len(s) {
		if s[i] == "" {
			return "(no answer)"
		}
		return s[i]
	}
	return "(nothing)"
}

// sourceBase is where extra source addresses start: host .100 of the first IPv4
// prefix on dev.
func sourceBase(n node.Node, dev string) (netip.Prefix, error) {
	addrs, err := n.Addresses()
	if err != nil {
		return netip.Prefix{}, err
	}
	for _, a := range addrs {
		d, p, _ := strings.Cut(a, " ")
		pr, err := netip.ParsePrefix(p)
		if d != dev || err != nil || !pr.Addr().Is4() || pr.Bits() > 24 {
			continue
		}
		b := pr.Masked().Addr().As4()
		b[3] = 100
		return netip.PrefixFrom(netip.AddrFrom4(b), pr.Bits()), nil
	}
	return netip.Prefix{}, fmt.Errorf("%s has no IPv4 prefix of /24 or wider on %s for extra source addresses", n.Name, dev)
}

// service finds the IPVS service a check's traffic goes to, and the address the
// traffic is sent to.
func (v *Judge) service(c lab.Check) (lab.Service, netip.AddrPort, bool) {
	d, _ := v.Spec.Node(v.Director)
	var dst netip.AddrPort
	if c.Kind() == lab.CheckUDP {
		dst = c.UDP
	} else if u, err := url.Parse(c.HTTP); err == nil {
		port := map[string]uint64{"http": 80, "https": 443}[u.Scheme]
		if u.Port() != "" {
			port, _ = strconv.ParseUint(u.Port(), 10, 16)
		}
		if a, err := netip.ParseAddr(u.Hostname()); err == nil {
			dst = netip.AddrPortFrom(a, uint16(port))
		}
	}
	for _, s := range d.Services {
		if s.FWMark == 0 && (s.Addr == dst || (s.Addr.Port() == 0 && s.Addr.Addr() == dst.Addr())) {
			return s, dst, true
		}
	}
	for _, s := range d.Services {
		if s.FWMark != 0 {
			return s, dst, true
		}
	}
	return lab.Service{}, dst, false
}

// prepare finds the model of the service a check's connections go to: made
// from the kernel's list order (read back) and, for a lab that has served
// traffic, its connection counts; or kept from earlier checks and checked
// against the kernel's counts. It returns nil and why when it cannot predict,
// and lost when the kernel's counts are not those of the connections lvslab
// sent: the lab served traffic lvslab did not see, and the check fails rather
// than guess.
func (v *Judge) prepare(c lab.Check) (m *serviceModel, svc lab.Service, dst netip.AddrPort, why string, lost bool) {
	svc, dst, ok := v.service(c)
	if !ok {
		return nil, svc, dst, "no IPVS service matches the check's destination", false
	}
	t, err := apply.ReadTable(v.Nodes[v.Director])
	if err != nil {
		return nil, svc, dst, err.Error(), false
	}
	entry := t.Find(svc.Key())
	if entry == nil {
		return nil, svc, dst, "the service " + svc.Key() + " is not in the kernel", false
	}
	m = v.models[svc.Key()]
	reset := false
	if i := slices.Index(v.fresh, svc.Key()); i >= 0 && m == nil {
		v.fresh = slices.Delete(v.fresh, i, i+1)
		reset = true
	} else if m == nil && v.ResetSchedulers && hidesState(svc.Scheduler) {
		if err := apply.Recreate(v.Nodes[v.Director], svc); err != nil {
			return nil, svc, dst, err.Error(), false
		}
		if t, err = apply.ReadTable(v.Nodes[v.Director]); err != nil {
			return nil, svc, dst, err.Error(), false
		}
		if entry = t.Find(svc.Key()); entry == nil {
			return nil, svc, dst, "the service " + svc.Key() + " is not in the kernel after re-creating it", false
		}
		reset = true
	}
	if m == nil {
		// The kernel folds its connection counter in every 2 s (ip_vs_est.c), so it
		// lags; the live per-server counts cover the 2 minutes of TIME_WAIT after.
		served := entry.Connections > 0
		for _, c := range entry.Conns {
			served = served || c.Active+c.Inactive > 0
		}
		if served && !reset && (svc.Scheduler == lab.RR || svc.Scheduler == lab.WRR) {
			return nil, svc, dst, fmt.Sprintf("%s keeps a position the kernel does not expose, and this lab has served %d connections: run lvslab verify on the scenario file for a fresh lab, or with --reset-schedulers", svc.Scheduler, entry.Connections), false
		}
		if served && !reset && (svc.Scheduler == lab.LBLC || svc.Scheduler == lab.LBLCR) {
			return nil, svc, dst, fmt.Sprintf("%s keeps a cache of destination addresses the kernel does not expose, and this lab has served %d connections: run lvslab verify on the scenario file for a fresh lab, or with --reset-schedulers", svc.Scheduler, entry.Connections), false
		}
		sim, err := NewSim(v.Kernel, svc.Scheduler, svc.SchedFlags...)
		if err != nil {
			return nil, svc, dst, err.Error(), false
		}
		// Re-create the list in insertion order (the kernel lists it reversed).
		for i := len(entry.Servers) - 1; i >= 0; i-- {
			d := entry.Servers[i]
			sim.AddServerThresholds(v.Spec.OwnerOf(d.Addr.Addr()), d.Addr, d.Weight, int(d.Upper), int(d.Lower))
		}
		v.configure(sim, svc)
		if served {
			conns, err := ReadConns(v.Nodes[v.Director])
			if err != nil {
				return nil, svc, dst, err.Error(), false
			}
			sim.Seed(ofService(conns, svc), v.Spec.OwnerOf)
		}
		for i, c := range entry.Conns {
			d := sim.Dests[i]
			if d.Active != int(c.Active) || d.Inactive != int(c.Inactive) {
				return nil, svc, dst, fmt.Sprintf("the director's connection table and counts of %s differ (traffic is passing): try again on a quiet lab", d.Name), false
			}
			// The kernel does not say whether a server is overloaded: its counts
			// do, except between the thresholds, where it depends on the past.
			if d.Upper != 0 {
				switch {
				case d.total() >= d.Upper:
					d.Overloaded = true
				case d.total() >= d.lowerVal():
					return nil, svc, dst, fmt.Sprintf("%s has %d connections, between its thresholds (%d, %d): whether it is overloaded depends on what came before", d.Name, d.total(), d.lowerVal(), d.Upper), false
				}
			}
		}
		m = &serviceModel{sim: sim}
		v.models[svc.Key()] = m
	} else if diff := v.lateDiffers(m, entry, svc); diff != "" {
		delete(v.models, svc.Key()) // a model that has lost the kernel predicts nothing more
		return nil, svc, dst, "the director's connection counts differ from what the connections lvslab sent give (" + diff + "): the lab served traffic lvslab did not see, or an earlier check went otherwise than predicted", true
	}
	return m, svc, dst, "", false
}

// lateGrace is how long the judge gives the kernel's timers, beyond the
// slack the model allows, before it calls counts that differ lost: a loaded
// sandbox kernel fires them later still.
const (
	lateGrace = 150 * time.Millisecond
	lateTries = 3
)

// lateDiffers is differs, looked at again after lateGrace (up to lateTries
// times) while the counts differ: an expiry the model ran that the kernel's
// timer has not yet made shows as a difference until it fires.
func (v *Judge) lateDiffers(m *serviceModel, entry *lab.TableService, svc lab.Service) string {
	diff := v.differs(m, entry, svc)
	for try := 0; diff != "" && try < lateTries; try++ {
		time.Sleep(lateGrace)
		t, err := apply.ReadTable(v.Nodes[v.Director])
		if err != nil {
			return diff
		}
		e := t.Find(svc.Key())
		if e == nil {
			return diff
		}
		m.sim.Advance(time.Since(v.start))
		diff = v.differs(m, e, svc)
	}
	return diff
}

// hidesState reports whether a scheduler keeps state the kernel does not show:
// rr's and wrr's position, lblc's and lblcr's cache.
func hidesState(s lab.Scheduler) bool {
	return s == lab.RR || s == lab.WRR || s == lab.LBLC || s == lab.LBLCR
}

// configure gives a new model the service's persistence, the director's
// timeouts and expire_quiescent_template, and the run's clock.
func (v *Judge) configure(sim *Sim, svc lab.Service) {
	sim.Now = time.Since(v.start)
	d, _ := v.Spec.Node(v.Director)
	if d.Timeouts != nil {
		if d.Timeouts.TCP != 0 {
			sim.Timeouts.TCP = time.Duration(d.Timeouts.TCP) * time.Second
		}
		if d.Timeouts.UDP != 0 {
			sim.Timeouts.UDP = time.Duration(d.Timeouts.UDP) * time.Second
		}
	}
	if svc.Persistent {
		sim.Persist = &Persistence{Timeout: time.Duration(svc.Timeout) * time.Second, Netmask: svc.Netmask}
		for _, sc := range d.Sysctls {
			if sc.Key == "net.ipv4.vs.expire_quiescent_template" {
				sim.Persist.ExpireQuiescent = sc.Value == "1"
			}
		}
	}
}

// differs brings the model's clock to now, waiting first while a timer is so
// near that the kernel may not have run it yet, and compares the model's
// counts with the kernel's.
func (v *Judge) differs(m *serviceModel, entry *lab.TableService, svc lab.Service) string {
	if wait := m.sim.Quiet(time.Since(v.start)); wait > 0 {
		time.Sleep(wait)
		t, err := apply.ReadTable(v.Nodes[v.Director])
		if err != nil {
			return err.Error()
		}
		if e := t.Find(svc.Key()); e != nil {
			entry = e
		}
	}
	m.sim.Advance(time.Since(v.start))
	return m.differs(v.Spec, entry)
}

// serviceModel is a service's scheduler model through a whole verify run: fed
// every connection lvslab sent, with the persistence templates they made.
type serviceModel struct {
	sim *Sim
}

// differs compares the model's connection counts with the kernel's live ones,
// and says how they differ ("" when they agree).
func (m *serviceModel) differs(spec *lab.Spec, entry *lab.TableService) string {
	var out []string
	for i, srv := range entry.Servers {
		name := spec.OwnerOf(srv.Addr.Addr())
		for _, d := range m.sim.Dests {
			if d.Name == name && (d.Active != int(entry.Conns[i].Active) || d.Inactive != int(entry.Conns[i].Inactive)) {
				out = append(out, fmt.Sprintf("%s: kernel %d active %d inactive, model %d %d", name, entry.Conns[i].Active, entry.Conns[i].Inactive, d.Active, d.Inactive))
			}
		}
	}
	return strings.Join(out, "; ")
}

// sequence predicts the servers of a check's connections and feeds them to
// the model: reqs in the order sent (their sources, ports, times, and the
// packet's destination: what dh and lblc hash, also for a firewall-mark
// service), the first hold of them kept open, every other one closed before
// the next. The model's clock follows each connection's time (since start),
// so connections and templates expire where the kernel's timers run out.
func sequence(sim *Sim, reqs []Request, hold int, start time.Time) []string {
	out := make([]string, 0, len(reqs))
	for i, req := range reqs {
		if !req.At.IsZero() {
			sim.Advance(req.At.Sub(start))
		}
		out = append(out, sim.Schedule(req, i < hold))
	}
	return out
}

// hold opens a check's first n connections from src and keeps them open; the
// director's connection table names the server of each.
func (v *Judge) hold(ctx context.Context, from node.Node, src netip.Addr, c lab.Check, n int) ([]string, []netip.AddrPort, func(), error) {
	seq, conns, err := v.holdConns(ctx, from, src, c, n)
	if err != nil {
		return nil, nil, nil, err
	}
	return seq, Locals(conns), func() { closeConns(conns) }, nil
}

// holdConns opens n connections for check c and keeps them open; it reads
// from the director's table which server each went to.
func (v *Judge) holdConns(ctx context.Context, from node.Node, src netip.Addr, c lab.Check, n int) ([]string, []net.Conn, error) {
	_, dst, _ := v.service(c)
	held, err := Holder{From: from, Source: src, Ports: v.ports}.HoldConns(ctx, dst, n)
	if err != nil {
		return nil, nil, fmt.Errorf("hold %d connections to %s: %w", n, dst, err)
	}
	conns, err := ReadConns(v.Nodes[v.Director])
	if err != nil {
		closeConns(held)
		return nil, nil, err
	}
	byClient := map[netip.AddrPort]Conn{}
	for _, cn := range conns {
		byClient[cn.Client] = cn
	}
	seq := make([]string, n)
	for i, l := range Locals(held) {
		if cn, ok := byClient[l]; ok && !cn.Template {
			seq[i] = v.Spec.OwnerOf(cn.Dest.Addr())
		}
	}
	return seq, held, nil
}

// settle waits until the director no longer counts the closed connections
// from locals as established (their FINs have passed it), so that the next
// check finds the counts the model has.
func (v *Judge) settle(ctx context.Context, locals []netip.AddrPort) error {
	want := map[netip.AddrPort]bool{}
	for _, l := range locals {
		want[l] = true
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		conns, err := ReadConns(v.Nodes[v.Director])
		if err != nil {
			return err
		}
		open := 0
		for _, cn := range conns {
			if want[cn.Client] && cn.State == "ESTABLISHED" {
				open++
			}
		}
		if open == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d held connections still established at the director 3s after they were closed", open)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// request is what the model is fed for connection i of a check: sent from src
// to dst at at (zero: at the model's clock), from the address and port the
// driver recorded in locals, or else src, or else the sending node's address.
func (v *Judge) request(c lab.Check, dst, src netip.Addr, locals []netip.AddrPort, i int, at time.Time) Request {
	req := Request{Src: src, Dst: dst, At: at}
	if i < len(locals) && locals[i].IsValid() {
		req.Src, req.SrcPort = locals[i].Addr(), locals[i].Port()
	} else if !req.Src.IsValid() {
		req.Src = v.clientAddr(c.From)
	}
	return req
}

func (v *Judge) clientAddr(name string) netip.Addr {
	n, _ := v.Spec.Node(name)
	for _, a := range n.Addresses {
		if a.Dev != "lo" {
			return a.Prefix.Addr()
		}
	}
	return netip.Addr{}
}

func (v *Judge) runARP(ctx context.Context, c lab.Check, from node.Node) Outcome {
	var r Outcome
	// A reply slower than the margin allows (a loaded sandbox kernel) makes
	// the probe inconclusive: it listens again, longer, so that every reply
	// is again well inside its window.
	window := ARPWindow
	var probe ARPProbe
	var err error
	for attempt := 0; ; attempt++ {
		probe, err = ProbeARP(ctx, from, c.Dev, c.ARP, window)
		if err == nil {
			err = probe.Conclusive()
		}
		slow := probe.Slowest()
		if err == nil || attempt == maxARPTries-1 || slow*ARPMargin <= window || window >= maxARPWindow {
			break
		}
		window = min(maxARPWindow, 2*ARPMargin*slow)
	}
	if err != nil {
		return Outcome{Message: err.Error()}
	}
	owners, err := v.macOwners()
	if err != nil {
		return Outcome{Message: err.Error()}
	}
	var who []string
	for _, rep := range probe.Replies {
		name := owners[rep.SenderMAC.String()]
		if name == "" {
			name = "?"
		}
		r.Replies = append(r.Replies, Reply{Node: name, MAC: rep.SenderMAC.String()})
		who = append(who, name)
	}
	want, got := slices.Clone(c.Expect.Answerers), slices.Clone(who)
	slices.Sort(want)
	slices.Sort(got)
	r.Passed = slices.Equal(want, got)
	if !r.Passed {
		r.Message = fmt.Sprintf("answered by %v, expected %v", got, want)
	}
	return r
}

// macOwners maps each MAC address of the lab's nodes to its node.
func (v *Judge) macOwners() (map[string]string, error) {
	owners := map[string]string{}
	for name, n := range v.Nodes {
		macs, err := n.MACs()
		if err != nil {
			return nil, err
		}
		for _, mac := range macs {
			owners[mac] = name
		}
	}
	return owners, nil
}

// An inconclusive ARP probe is tried again this many times at most, its
// window never longer than maxARPWindow.
const (
	maxARPTries  = 3
	maxARPWindow = 3 * time.Second
)

// ofService keeps the connections and templates of the director's table that
// can belong to svc: the same protocol and virtual address (and port, unless
// the service's is 0). Templates of a port-0 or firewall-mark service are the
// kernel's IPPROTO_IP ones, keyed by the address (or the mark) and port 0. A
// firewall-mark service's connections cannot be told apart by their tuple:
// all are kept.
func ofService(conns []Conn, svc lab.Service) []Conn {
	var out []Conn
	for _, c := range conns {
		var keep bool
		switch {
		case svc.FWMark != 0 && c.Template:
			m := svc.FWMark
			keep = c.Proto == "IP" && c.Virtual.Port() == 0 && c.Virtual.Addr() == netip.AddrFrom4([4]byte{byte(m >> 24), byte(m >> 16), byte(m >> 8), byte(m)})
		case svc.FWMark != 0:
			keep = true
		case svc.Addr.Port() == 0 && c.Template:
			keep = c.Proto == "IP" && c.Virtual == svc.Addr
		case svc.Addr.Port() == 0:
			keep = strings.EqualFold(c.Proto, string(svc.Protocol)) && c.Virtual.Addr() == svc.Addr.Addr()
		default:
			keep = strings.EqualFold(c.Proto, string(svc.Protocol)) && c.Virtual == svc.Addr
		}
		if keep {
			out = append(out, c)
		}
	}
	return out
}
