package scenario

import (
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strings"

	"github.com/lvslab/lvslab/pkg/capture"
	"github.com/lvslab/lvslab/pkg/lab"
)

type rawCheck struct {
	Name    string      `yaml:"name,omitempty"`
	From    string      `yaml:"from,omitempty"`
	HTTP    *rawHTTP    `yaml:"http,omitempty"`
	UDP     *rawUDP     `yaml:"udp,omitempty"`
	ARP     *rawARP     `yaml:"arp,omitempty"`
	Sources int         `yaml:"sources,omitempty"`
	Expect  rawExpect   `yaml:"expect,omitempty"`
	Points  *int        `yaml:"points,omitempty"`
	Hint    string      `yaml:"hint,omitempty"`
	Capture *rawCapture `yaml:"capture,omitempty"`
}

type rawCapture struct {
	Node   string `yaml:"node,omitempty"`
	Dev    string `yaml:"dev,omitempty"`
	Filter string `yaml:"filter,omitempty"`
}

type rawFrame struct {
	From     string `yaml:"from,omitempty"`
	To       string `yaml:"to,omitempty"`
	Src      string `yaml:"src,omitempty"`
	Dst      string `yaml:"dst,omitempty"`
	InnerSrc string `yaml:"inner_src,omitempty"`
	InnerDst string `yaml:"inner_dst,omitempty"`
	Count    *int   `yaml:"count,omitempty"`
}

type rawHTTP struct {
	URL         string `yaml:"url,omitempty"`
	Requests    int    `yaml:"requests,omitempty"`
	Hold        int    `yaml:"hold,omitempty"`
	Concurrency int    `yaml:"concurrency,omitempty"` // connections in flight at once (counts only)
}

type rawUDP struct {
	Address  string `yaml:"address,omitempty"`
	Requests int    `yaml:"requests,omitempty"`
}

type rawARP struct {
	Target string `yaml:"target,omitempty"`
	Dev    string `yaml:"dev,omitempty"`
}

type rawExpect struct {
	Sequence  any            `yaml:"sequence,omitempty"` // "model" or a list
	Counts    map[string]int `yaml:"counts,omitempty"`
	Sticky    bool           `yaml:"sticky,omitempty"`
	Servers   []string       `yaml:"servers,omitempty"`
	Answerers *[]string      `yaml:"answerers,omitempty"` // [] (none) differs from absent
	Failures  int            `yaml:"failures,omitempty"`
	Frames    []rawFrame     `yaml:"frames,omitempty"`
}

// maxHold bounds the connections a check holds open at once.
const maxHold = 1000

func parseCheck(s *Scenario, field string, rc rawCheck, fail failFunc) (lab.Check, error) {
	c := lab.Check{Name: rc.Name, From: rc.From, Sources: rc.Sources, Dev: "eth1", Points: 1, Hint: rc.Hint}
	if rc.Points != nil {
		if *rc.Points < 0 || *rc.Points > 1000 {
			return c, fail(field+".points", "%d is out of range (0..1000)", *rc.Points)
		}
		c.Points = *rc.Points
	}
	if c.Name == "" {
		return c, fail(field+".name", "missing (what the check shows, in a few words)")
	}
	if c.From == "" {
		c.From = "client"
	}
	if _, ok := s.Topology.Nodes[c.From]; !ok {
		return c, fail(field+".from", "node %q is not in the topology", c.From)
	}
	kinds := 0
	requests := 10
	if rc.HTTP != nil {
		kinds++
		u, err := url.Parse(rc.HTTP.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return c, fail(field+".http.url", "%q is not an http:// or https:// URL", rc.HTTP.URL)
		}
		c.HTTP = rc.HTTP.URL
		if rc.HTTP.Requests != 0 {
			requests = rc.HTTP.Requests
		}
		c.Concurrency = rc.HTTP.Concurrency
		if c.Concurrency < 0 || c.Concurrency > lab.MaxConcurrency {
			return c, fail(field+".http.concurrency", "%d is out of range (1..%d)", c.Concurrency, lab.MaxConcurrency)
		}
		if c.Concurrency > 1 && u.Scheme != "http" {
			return c, fail(field+".http.concurrency", "%d: only http:// URLs are sent concurrently (%s is sent one request at a time)", c.Concurrency, u.Scheme)
		}
	}
	if rc.UDP != nil {
		kinds++
		ap, err := netip.ParseAddrPort(rc.UDP.Address)
		if err != nil {
			return c, fail(field+".udp.address", "%q is not address:port", rc.UDP.Address)
		}
		c.UDP = ap
		if rc.UDP.Requests != 0 {
			requests = rc.UDP.Requests
		}
	}
	if rc.ARP != nil {
		kinds++
		a, err := netip.ParseAddr(rc.ARP.Target)
		if err != nil || !a.Is4() {
			return c, fail(field+".arp.target", "%q is not an IPv4 address", rc.ARP.Target)
		}
		c.ARP = a
		if rc.ARP.Dev != "" {
			c.Dev = rc.ARP.Dev
		}
	}
	if kinds != 1 {
		return c, fail(field, "give exactly one of http, udp or arp")
	}
	if requests < 1 || requests > 10000 {
		return c, fail(field+".requests", "%d is out of range (1..10000)", requests)
	}
	c.Requests = requests
	if c.Sources < 0 || c.Sources > 100 {
		return c, fail(field+".sources", "%d is out of range (0..100)", c.Sources)
	}
	if rc.HTTP != nil && rc.HTTP.Hold != 0 {
		// Held connections are counted over the whole check, source by source.
		total := requests * max(c.Sources, 1)
		if rc.HTTP.Hold < 0 || rc.HTTP.Hold > min(total, maxHold) {
			return c, fail(field+".http.hold", "%d is out of range (1..%d: at most the check's %d connections, and %d)", rc.HTTP.Hold, min(total, maxHold), total, maxHold)
		}
		c.Hold = rc.HTTP.Hold
	}
	e := rc.Expect
	switch seq := e.Sequence.(type) {
	case nil:
	case string:
		if seq != "model" {
			return c, fail(field+".expect.sequence", "%q: give model, or a list of servers", seq)
		}
		c.Expect.Model = true
	case []any:
		for _, x := range seq {
			c.Expect.Sequence = append(c.Expect.Sequence, fmt.Sprint(x))
		}
	default:
		return c, fail(field+".expect.sequence", "%v: give model, or a list of servers", seq)
	}
	c.Expect.Counts, c.Expect.Sticky, c.Expect.Servers, c.Expect.Failures = e.Counts, e.Sticky, e.Servers, e.Failures
	if e.Answerers != nil {
		c.Expect.Answerers = *e.Answerers
		if c.Expect.Answerers == nil {
			c.Expect.Answerers = []string{}
		}
	}
	if c.Kind() == lab.CheckARP {
		if e.Answerers == nil {
			return c, fail(field+".expect.answerers", "missing (the nodes that must answer; [] for none)")
		}
	} else if e.Answerers != nil {
		return c, fail(field+".expect.answerers", "only for arp checks")
	}
	if (c.Expect.Model || c.Expect.Sticky) && s.Director() == "" {
		return c, fail(field+".expect", "the scenario has no IPVS service to model")
	}
	if err := checkConcurrency(s, field, c, fail); err != nil {
		return c, err
	}
	for name := range c.Expect.Counts {
		if _, ok := s.Topology.Nodes[name]; !ok {
			return c, fail(field+".expect.counts", "%q is not a node", name)
		}
	}
	for _, name := range slices.Concat(c.Expect.Sequence, c.Expect.Servers, c.Expect.Answerers) {
		if _, ok := s.Topology.Nodes[name]; !ok {
			return c, fail(field+".expect", "%q is not a node", name)
		}
	}
	if err := parseCapture(s, field, rc, &c, fail); err != nil {
		return c, err
	}
	return c, nil
}

// maxFrames bounds a frame match's count: more than a check's capture keeps.
const maxFrames = 100000

// parseCapture reads a check's capture and the frames it must hold.
func parseCapture(s *Scenario, field string, rc rawCheck, c *lab.Check, fail failFunc) error {
	if rc.Capture == nil {
		if len(rc.Expect.Frames) > 0 {
			return fail(field+".expect.frames", "only with capture (where the frames are recorded)")
		}
		return nil
	}
	cp := rc.Capture
	if cp.Node == "" {
		return fail(field+".capture.node", "missing (the node whose interface is captured)")
	}
	if _, ok := s.Topology.Nodes[cp.Node]; !ok {
		return fail(field+".capture.node", "node %q is not in the topology", cp.Node)
	}
	c.Capture = &lab.Capture{Node: cp.Node, Dev: cp.Dev, Filter: cp.Filter}
	if c.Capture.Dev == "" {
		c.Capture.Dev = "eth1"
	}
	if ifs := s.Topology.Interfaces(cp.Node); !slices.Contains(ifs, c.Capture.Dev) && c.Capture.Dev != "lo" {
		return fail(field+".capture.dev", "%q is not an interface of %s (it has %s)", c.Capture.Dev, cp.Node, strings.Join(append(ifs, "lo"), ", "))
	}
	if cp.Filter != "" {
		if _, err := capture.ParseFilter(cp.Filter); err != nil {
			return fail(field+".capture.filter", "%v", err)
		}
	}
	for i, rf := range rc.Expect.Frames {
		ff := fmt.Sprintf("%s.expect.frames[%d]", field, i)
		m := lab.FrameMatch{From: rf.From, To: rf.To, Count: rf.Count}
		for _, n := range []struct{ key, name string }{{"from", rf.From}, {"to", rf.To}} {
			if n.key == "to" && n.name == lab.Broadcast {
				continue
			}
			if _, ok := s.Topology.Nodes[n.name]; n.name != "" && !ok {
				return fail(ff+"."+n.key, "node %q is not in the topology", n.name)
			}
		}
		for _, a := range []struct {
			key  string
			text string
			to   *netip.Addr
		}{{"src", rf.Src, &m.Src}, {"dst", rf.Dst, &m.Dst}, {"inner_src", rf.InnerSrc, &m.InnerSrc}, {"inner_dst", rf.InnerDst, &m.InnerDst}} {
			if a.text == "" {
				continue
			}
			addr, err := netip.ParseAddr(a.text)
			if err != nil {
				return fail(ff+"."+a.key, "%q is not an IP address", a.text)
			}
			*a.to = addr
		}
		if m.Count != nil && (*m.Count < 0 || *m.Count > maxFrames) {
			return fail(ff+".count", "%d is out of range (0..%d)", *m.Count, maxFrames)
		}
		if m == (lab.FrameMatch{Count: m.Count}) {
			return fail(ff, "give at least one of from, to, src, dst, inner_src, inner_dst")
		}
		c.Expect.Frames = append(c.Expect.Frames, m)
	}
	return nil
}

// checkConcurrency refuses, for a check with connections in flight at once,
// what cannot be judged then: the director schedules them in no set order, so
// there is no sequence and no stickiness to observe, and the model's
// prediction is judged as counts, which only schedulers whose picks do not
// depend on that order or on the connections in flight give.
func checkConcurrency(s *Scenario, field string, c lab.Check, fail failFunc) error {
	if c.Concurrency <= 1 {
		return nil
	}
	why := fmt.Sprintf("cannot be judged with concurrency %d (connections in flight reach the director in no set order); judge counts, or drop concurrency", c.Concurrency)
	if c.Hold > 0 {
		return fail(field+".http.hold", "%d: held connections are the check's first ones, which concurrency %d leaves in no set order; give one or the other", c.Hold, c.Concurrency)
	}
	if c.Expect.Sequence != nil {
		return fail(field+".expect.sequence", "%v %s", c.Expect.Sequence, why)
	}
	if c.Expect.Sticky {
		return fail(field+".expect.sticky", "%s", why)
	}
	if !c.Expect.Model {
		return nil
	}
	dst, _ := c.Destination()
	svc, ok := s.Spec.ServiceFor(dst)
	if !ok {
		return fail(field+".expect.sequence", "model: no IPVS service of the scenario receives %s", dst)
	}
	order := fmt.Sprintf("(concurrency %d compares the model's counts, which needs picks that do not depend on the order or number of connections in flight: %s)", c.Concurrency, orderFree())
	if !svc.Scheduler.OrderFree() {
		return fail(field+".expect.sequence", "model: the %s scheduler of %s weighs the connections in flight %s", svc.Scheduler, svc.Key(), order)
	}
	for _, srv := range svc.Servers {
		if srv.Upper != 0 || srv.Lower != 0 {
			return fail(field+".expect.sequence", "model: real server %s of %s has connection thresholds (upper %d, lower %d), which weigh the connections in flight %s", srv.Addr, svc.Key(), srv.Upper, srv.Lower, order)
		}
	}
	if svc.Persistent && (svc.Scheduler == lab.RR || svc.Scheduler == lab.WRR) {
		return fail(field+".expect.sequence", "model: %s is persistent under %s: each client group keeps the pick its first connection got, and which group comes first is left to chance %s", svc.Key(), svc.Scheduler, order)
	}
	return nil
}

func orderFree() string {
	var names []string
	for _, x := range lab.Schedulers() {
		if x.OrderFree() {
			names = append(names, string(x))
		}
	}
	return strings.Join(names, ", ")
}
