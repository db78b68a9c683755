package scenario

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lvslab/lvslab/pkg/apply"
	"github.com/lvslab/lvslab/pkg/ipvsadm"
	"github.com/lvslab/lvslab/pkg/node"
	"github.com/lvslab/lvslab/pkg/state"
	"github.com/lvslab/lvslab/pkg/verify"
)

// Result is the outcome of one check.
type Result struct {
	Check     string         `json:"check"`
	Kind      string         `json:"kind"`
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

// Verifier runs a scenario's checks against a running lab.
type Verifier struct {
	Scenario *Scenario
	Lab      *state.Lab
	Driver   string // "go" (default) or "curl"
	Fresh    bool   // the lab was just built: scheduler positions are at their start
}

// Run runs every check in order.
func (v *Verifier) Run(ctx context.Context) []Result {
	var out []Result
	for _, c := range v.Scenario.Checks {
		t := time.Now()
		r := v.run(ctx, c)
		r.Check, r.Kind, r.What, r.Duration = c.Name, c.Kind(), c.Describe(), time.Since(t)
		out = append(out, r)
	}
	return out
}

func (v *Verifier) run(ctx context.Context, c Check) Result {
	nodes := Nodes(v.Lab)
	from, ok := nodes[c.From]
	if !ok {
		return Result{Message: fmt.Sprintf("node %s is not in lab %s", c.From, v.Lab.Name)}
	}
	if c.Kind() == "arp" {
		return v.runARP(ctx, c, from)
	}
	var srcs []netip.Addr
	if c.Sources > 0 {
		first, err := sourceBase(from, c.Dev)
		if err != nil {
			return Result{Message: err.Error()}
		}
		added, remove, err := verify.AddSources(from, c.Dev, first, c.Sources)
		if err != nil {
			return Result{Message: err.Error()}
		}
		defer remove()
		srcs = added
	} else {
		srcs = []netip.Addr{{}}
	}

	var r Result
	var perSource [][]string
	var errs []error
	for _, src := range srcs {
		var got verify.Result
		switch {
		case c.Kind() == "udp":
			got = verify.UDPClient{From: from}.Send(ctx, c.UDP, c.Requests)
		case v.Driver == "curl":
			cc := verify.CurlClient{From: from}
			if src.IsValid() {
				cc.Source = src.String()
			}
			got = cc.Get(ctx, c.HTTP, c.Requests)
		default:
			got = verify.HTTPClient{From: from, Source: src}.Get(ctx, c.HTTP, c.Requests)
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
	if len(errs) != c.Expect.Failures {
		problems = append(problems, fmt.Sprintf("%d requests failed, expected %d", len(errs), c.Expect.Failures))
	}
	if c.Expect.Model {
		pred, why := v.predict(c, srcs)
		if pred == nil {
			r.Skipped, r.Message = true, why
		} else {
			r.Predicted = pred
			if i := verify.FirstDivergence(pred, r.Observed); i >= 0 {
				problems = append(problems, fmt.Sprintf("first divergence at request %d: expected %s, observed %s", i+1, at(pred, i), at(r.Observed, i)))
			}
		}
	}
	if c.Expect.Sequence != nil {
		r.Predicted = c.Expect.Sequence
		if i := verify.FirstDivergence(c.Expect.Sequence, r.Observed); i >= 0 {
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
	r.Passed = len(problems) == 0
	if !r.Passed {
		r.Message = strings.Join(problems, "; ")
	}
	return r
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
	addrs, err := Addresses(n)
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

// service finds the IPVS service a check's traffic goes to.
func (v *Verifier) service(c Check) (apply.Service, bool) {
	d, _ := v.Scenario.Node(v.Scenario.Director())
	var dst netip.AddrPort
	if c.Kind() == "udp" {
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
			return s, true
		}
	}
	for _, s := range d.Services {
		if s.FWMark != 0 {
			return s, true
		}
	}
	return apply.Service{}, false
}

// predict runs the scheduler's model for the check's connections, from the
// kernel's list order (read back) and, for a lab that has served traffic, its
// connection counts. It returns nil and why when it cannot predict.
func (v *Verifier) predict(c Check, srcs []netip.Addr) ([]string, string) {
	svc, ok := v.service(c)
	if !ok {
		return nil, "no IPVS service matches the check's destination"
	}
	t, err := ipvsadm.Read(Nodes(v.Lab)[v.Lab.Director])
	if err != nil {
		return nil, err.Error()
	}
	var entry *ipvsadm.ServiceEntry
	for i, e := range t.Model() {
		if e.Key() == svc.Key() {
			entry = &t.Services[i]
		}
	}
	if entry == nil {
		return nil, "the service " + svc.Key() + " is not in the kernel"
	}
	// The kernel folds its connection counter in every 2 s (ip_vs_est.c), so it
	// lags; the live per-server counts cover the 2 minutes of TIME_WAIT after.
	served := entry.Service.Stats.Connections > 0
	for _, d := range entry.Destinations {
		served = served || d.ActiveConnections+d.InactiveConnections > 0
	}
	if served && !v.Fresh && (svc.Scheduler == "rr" || svc.Scheduler == "wrr") {
		return nil, fmt.Sprintf("%s keeps a position the kernel does not expose, and this lab has served %d connections: run lvslab verify on the scenario file for a fresh lab", svc.Scheduler, entry.Service.Stats.Connections)
	}
	sim, err := verify.NewSim(svc.Scheduler, svc.SchedFlags...)
	if err != nil {
		return nil, err.Error()
	}
	// Re-create the list in insertion order (the kernel lists it reversed).
	for i := len(entry.Destinations) - 1; i >= 0; i-- {
		d := entry.Destinations[i]
		a, _ := netip.AddrFromSlice(d.Address)
		sim.AddDest(v.Scenario.OwnerOf(a.Unmap()), d.Weight)
	}
	for i, d := range entry.Destinations {
		sim.Dests[i].Active, sim.Dests[i].Inactive = d.ActiveConnections, d.InactiveConnections
	}
	vip := svc.Addr.Addr()
	sticky := map[netip.Prefix]string{}
	var out []string
	for _, src := range srcs {
		s := src
		if !s.IsValid() {
			s = v.clientAddr(c.From)
		}
		for range c.Requests {
			if svc.Persistent {
				key, _ := s.Prefix(svc.Netmask)
				if who, ok := sticky[key]; ok {
					out = append(out, who)
					continue
				}
				who := sim.Connect(verify.Request{Src: s, Dst: vip}, false)
				sticky[key] = who
				out = append(out, who)
				continue
			}
			out = append(out, sim.Connect(verify.Request{Src: s, Dst: vip}, false))
		}
	}
	return out, ""
}

func (v *Verifier) clientAddr(name string) netip.Addr {
	n, _ := v.Scenario.Node(name)
	for _, a := range n.Addresses {
		if a.Dev != "lo" {
			return a.Prefix.Addr()
		}
	}
	return netip.Addr{}
}

func (v *Verifier) runARP(ctx context.Context, c Check, from node.Node) Result {
	var r Result
	replies, err := verify.ProbeARP(ctx, from, c.Dev, c.ARP, 300*time.Millisecond)
	if err != nil {
		return Result{Message: err.Error()}
	}
	owners := map[string]string{}
	for name, n := range Nodes(v.Lab) {
		for _, dev := range v.Scenario.Topology.Interfaces(name) {
			if mac, err := verify.MAC(n, dev); err == nil {
				owners[mac.String()] = name
			}
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
