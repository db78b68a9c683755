package verify

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
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
	Duration  time.Duration  `json:"durationNs"`
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

	ports  *SourcePorts
	models map[string]*serviceModel // per service key, kept for the whole run
}

// Run runs every check in order. Its HTTP connections take source ports from
// one pool, from a random start, so that none reuses a port the director still
// keeps an entry for.
func (v *Judge) Run(ctx context.Context) []Outcome {
	v.ports = NewSourcePorts(uint16(firstPort + rand.IntN(lastPort-firstPort)))
	v.models = map[string]*serviceModel{}
	var out []Outcome
	for _, c := range v.Checks {
		t := time.Now()
		r := v.run(ctx, c)
		r.Check, r.Kind, r.What, r.Duration = c.Name, c.Kind(), c.Describe(), time.Since(t)
		r.Kernel = v.Kernel.Release
		out = append(out, r)
	}
	return out
}

func (v *Judge) run(ctx context.Context, c lab.Check) Outcome {
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

	// The prediction comes first, from the director as it is before this
	// check's connections (and as the model followed it through earlier checks).
	var pred []string
	var why string
	lost := false // the kernel has gone where the model did not follow
	if c.Expect.Model {
		pred, why, lost = v.predict(c, srcs)
	}
	var r Outcome
	var perSource [][]string
	var errs []error
	if got, ok := v.sendConcurrent(ctx, c, from, srcs); ok {
		r.Observed, errs = got.Sequence, got.Errors
		srcs = nil // all sent, and no source has an order of its own
	}
	for _, src := range srcs {
		var got Result
		switch {
		case c.Kind() == lab.CheckUDP:
			got = UDPClient{From: from, Source: src}.Send(ctx, c.UDP, c.Requests)
		case v.Driver == lab.DriverCurl:
			cc := CurlClient{From: from}
			if src.IsValid() {
				cc.Source = src.String()
			}
			got = cc.Get(ctx, c.HTTP, c.Requests)
		default:
			got = HTTPClient{From: from, Source: src, Ports: v.ports}.Get(ctx, c.HTTP, c.Requests)
		}
		perSource = append(perSource, got.Sequence)
		r.Observed = append(r.Observed, got.Sequence...)
		errs = append(errs, got.Errors...)
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
		case pred == nil:
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

// predict runs the scheduler's model for the check's connections, from the
// kernel's list order (read back) and, for a lab that has served traffic, its
// connection counts. It returns nil and why when it cannot predict, and lost
// when the kernel's counts are not those of the connections lvslab sent: the
// lab served traffic lvslab did not see, and the check fails rather than guess.
func (v *Judge) predict(c lab.Check, srcs []netip.Addr) (pred []string, why string, lost bool) {
	svc, dst, ok := v.service(c)
	if !ok {
		return nil, "no IPVS service matches the check's destination", false
	}
	t, err := apply.ReadTable(v.Nodes[v.Director])
	if err != nil {
		return nil, err.Error(), false
	}
	entry := t.Find(svc.Key())
	if entry == nil {
		return nil, "the service " + svc.Key() + " is not in the kernel", false
	}
	m := v.models[svc.Key()]
	if m == nil {
		// The kernel folds its connection counter in every 2 s (ip_vs_est.c), so it
		// lags; the live per-server counts cover the 2 minutes of TIME_WAIT after.
		served := entry.Connections > 0
		for _, c := range entry.Conns {
			served = served || c.Active+c.Inactive > 0
		}
		if served && (svc.Scheduler == lab.RR || svc.Scheduler == lab.WRR) {
			return nil, fmt.Sprintf("%s keeps a position the kernel does not expose, and this lab has served %d connections: run lvslab verify on the scenario file for a fresh lab", svc.Scheduler, entry.Connections), false
		}
		sim, err := NewSim(v.Kernel, svc.Scheduler, svc.SchedFlags...)
		if err != nil {
			return nil, err.Error(), false
		}
		// Re-create the list in insertion order (the kernel lists it reversed).
		for i := len(entry.Servers) - 1; i >= 0; i-- {
			d := entry.Servers[i]
			sim.AddDest(v.Spec.OwnerOf(d.Addr.Addr()), d.Weight)
		}
		for i, c := range entry.Conns {
			sim.Dests[i].Active, sim.Dests[i].Inactive = int(c.Active), int(c.Inactive)
		}
		m = &serviceModel{sim: sim, sticky: map[netip.Prefix]string{}}
		v.models[svc.Key()] = m
	} else if diff := m.differs(v.Spec, entry); diff != "" {
		delete(v.models, svc.Key()) // a model that has lost the kernel predicts nothing more
		return nil, "the director's connection counts differ from what the connections lvslab sent give (" + diff + "): the lab served traffic lvslab did not see, or an earlier check went otherwise than predicted", true
	}
	from := slices.Clone(srcs)
	for i, src := range from {
		if !src.IsValid() {
			from[i] = v.clientAddr(c.From)
		}
	}
	return sequence(m.sim, svc, dst.Addr(), from, c.Requests, m.sticky), "", false
}

// serviceModel is a service's scheduler model through a whole verify run: fed
// every connection lvslab sent, with the persistence templates they made.
type serviceModel struct {
	sim    *Sim
	sticky map[netip.Prefix]string // client group -> server, the templates
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

// sequence predicts the servers of a check's connections (and feeds them to
// the model; sticky holds the persistence templates): from each source in
// turn, requests connections to dst (the packet's destination: what dh hashes,
// also for a firewall-mark service), each closed before the next. For a
// persistent service a client (its address under the netmask) keeps the server
// of its first scheduled connection (its template); each later connection
// under that template is still bound to that server and counts there
// (ip_vs_sched_persist, ip_vs_conn_new). A connection the scheduler could not
// place ("") makes no template.
func sequence(sim *Sim, svc lab.Service, dst netip.Addr, srcs []netip.Addr, requests int, sticky map[netip.Prefix]string) []string {
	var out []string
	for _, src := range srcs {
		for range requests {
			req := Request{Src: src, Dst: dst}
			if !svc.Persistent {
				out = append(out, sim.Connect(req, false))
				continue
			}
			key, _ := src.Prefix(svc.Netmask)
			if who, ok := sticky[key]; ok {
				sim.Count(who, false)
				out = append(out, who)
				continue
			}
			who := sim.Connect(req, false)
			if who != "" {
				sticky[key] = who
			}
			out = append(out, who)
		}
	}
	return out
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
	replies, err := ProbeARP(ctx, from, c.Dev, c.ARP, 300*time.Millisecond)
	if err != nil {
		return Outcome{Message: err.Error()}
	}
	owners := map[string]string{}
	for name, n := range v.Nodes {
		macs, err := n.MACs()
		if err != nil {
			return Outcome{Message: err.Error()}
		}
		for _, mac := range macs {
			owners[mac] = name
		}
	}
	var who []string
	for _, rep := range replies {
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
