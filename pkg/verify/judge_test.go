package verify

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/lvslab/lvslab/pkg/lab"
)

// A check whose expectations failed fails, even when the model could not
// predict (seen: a running lab with a killed web server was reported as
// skipped, and verify exited 0).
func TestVerdict(t *testing.T) {
	for _, c := range []struct {
		problems          []string
		unjudged          string
		passed, skipped   bool
		message, contains string
	}{
		{nil, "", true, false, "", ""},
		{[]string{"5 requests failed, expected 0"}, "", false, false, "5 requests failed, expected 0", ""},
		{[]string{"5 requests failed, expected 0"}, "rr keeps a position", false, false, "", "not judged against the model either: rr keeps a position"},
		{nil, "rr keeps a position", false, true, "not judged against the model: rr keeps a position", ""},
	} {
		passed, skipped, msg := verdict(c.problems, c.unjudged)
		if passed != c.passed || skipped != c.skipped || (c.message != "" && msg != c.message) || !strings.Contains(msg, c.contains) {
			t.Errorf("verdict(%q, %q) = %v %v %q", c.problems, c.unjudged, passed, skipped, msg)
		}
	}
}

// reqs is n connections from each of srcs in turn, to dst.
func reqs(dst netip.Addr, srcs []netip.Addr, n int) []Request {
	var out []Request
	for _, src := range srcs {
		for range n {
			out = append(out, Request{Src: src, Dst: dst})
		}
	}
	return out
}

func sim3(t *testing.T, sched lab.Scheduler) *Sim {
	t.Helper()
	s, err := NewSim(sandbox, sched)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"web1", "web2", "web3"} {
		s.AddDest(n, 1)
	}
	return s
}

// dh hashes the packet's destination, also for a firewall-mark service (whose
// own address is zero).
func TestSequenceHashesTheDestination(t *testing.T) {
	for _, a := range []string{"203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4"} {
		dst := netip.MustParseAddr(a)
		got := sequence(sim3(t, lab.DH), reqs(dst, []netip.Addr{netip.MustParseAddr("203.0.113.10")}, 1), 0, time.Time{})
		want := sim3(t, lab.DH).Connect(Request{Dst: dst}, false)
		zero := sim3(t, lab.DH).Connect(Request{}, false)
		if got[0] != want {
			t.Errorf("%s: predicted %s, dh of the destination gives %s", a, got[0], want)
		}
		if want != zero {
			return // this address tells the two apart, and the prediction followed the destination
		}
	}
	t.Fatal("no destination hashed apart from the zero address: the test cannot tell")
}

// Connections under a persistence template are bound to its server and count
// there, and a connection the scheduler could not place makes no template.
func TestSequencePersistentCounts(t *testing.T) {
	s := sim3(t, lab.LC)
	s.Persist = &Persistence{Timeout: 60 * time.Second, Netmask: 32}
	a := netip.MustParseAddr("203.0.113.10")
	got := sequence(s, reqs(netip.MustParseAddr("203.0.113.1"), []netip.Addr{a}, 5), 0, time.Time{})
	if strings.Join(got, " ") != "web3 web3 web3 web3 web3" {
		t.Fatalf("sequence %v", got)
	}
	for _, d := range s.Dests {
		if want := map[string]int{"web3": 5}[d.Name]; d.Inactive != want {
			t.Errorf("%s has %d inactive connections, want %d", d.Name, d.Inactive, want)
		}
	}

	none := sim3(t, lab.RR)
	for _, d := range none.Dests {
		d.Weight = 0
	}
	none.Persist = &Persistence{Timeout: time.Minute, Netmask: 32}
	if got := sequence(none, reqs(netip.Addr{}, []netip.Addr{a}, 2), 0, time.Time{}); strings.Join(got, ",") != "," {
		t.Errorf("no server available: %q", got)
	}
}

// One model per service for the whole run: a persistent rr service, three
// checks one after the other. Each new client takes rr's next server, and a
// client seen in an earlier check keeps its template (seen: the model predicted
// the first server for every client when each check started afresh).
func TestSequenceKeepsStateAcrossChecks(t *testing.T) {
	s := sim3(t, lab.RR)
	s.Persist = &Persistence{Timeout: 120 * time.Second, Netmask: 32}
	vip := netip.MustParseAddr("203.0.113.1")
	a, b, c := netip.MustParseAddr("203.0.113.10"), netip.MustParseAddr("203.0.113.100"), netip.MustParseAddr("203.0.113.101")
	first := sequence(s, reqs(vip, []netip.Addr{a}, 2), 0, time.Time{})
	second := sequence(s, reqs(vip, []netip.Addr{b}, 2), 0, time.Time{})
	third := sequence(s, reqs(vip, []netip.Addr{a, c}, 2), 0, time.Time{})
	got := strings.Join([]string{strings.Join(first, " "), strings.Join(second, " "), strings.Join(third, " ")}, " | ")
	if want := "web3 web3 | web2 web2 | web3 web3 web1 web1"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

// The first hold connections of a check stay open: they count as active, and
// lc sends the next ones elsewhere; a closed held connection counts inactive.
func TestSequenceHeld(t *testing.T) {
	s := sim3(t, lab.LC)
	vip := netip.MustParseAddr("203.0.113.1")
	got := sequence(s, reqs(vip, []netip.Addr{{}}, 6), 2, time.Time{})
	if want := "web3 web2 web1 web1 web1 web1"; strings.Join(got, " ") != want {
		t.Errorf("got %v, want %s", got, want)
	}
	s.Close("web3")
	if d := s.Dests[0]; d.Name != "web3" || d.Active != 0 || d.Inactive != 1 {
		t.Errorf("web3 after close: %+v", d)
	}
}

// Before each later prediction the model's counts must be the kernel's: traffic
// lvslab did not send shows as a difference, named per server.
func TestModelDiffersFromKernel(t *testing.T) {
	spec := &lab.Spec{Nodes: []lab.NodeSpec{
		{Name: "web1", Addresses: []lab.Address{{Dev: "eth1", Prefix: netip.MustParsePrefix("198.51.100.11/24")}}},
		{Name: "web2", Addresses: []lab.Address{{Dev: "eth1", Prefix: netip.MustParsePrefix("198.51.100.12/24")}}},
	}}
	s, err := NewSim(sandbox, lab.RR)
	if err != nil {
		t.Fatal(err)
	}
	s.AddDest("web1", 1)
	s.AddDest("web2", 1)
	m := &serviceModel{sim: s}
	sequence(m.sim, reqs(netip.Addr{}, []netip.Addr{{}}, 3), 0, time.Time{}) // web2 web1 web2
	entry := &lab.TableService{
		Service: lab.Service{Servers: []lab.Server{{Addr: netip.MustParseAddrPort("198.51.100.12:80")}, {Addr: netip.MustParseAddrPort("198.51.100.11:80")}}},
		Conns:   []lab.ServerConns{{Inactive: 2}, {Inactive: 1}},
	}
	if d := m.differs(spec, entry); d != "" {
		t.Errorf("the kernel saw what the model sent, yet: %s", d)
	}
	entry.Conns[1].Inactive = 4 // three connections lvslab did not send
	if d := m.differs(spec, entry); d != "web1: kernel 0 active 4 inactive, model 0 1" {
		t.Errorf("difference %q", d)
	}
}

// Connections sent concurrently are judged against the model as counts.
func TestCountsDiffer(t *testing.T) {
	pred := []string{"web3", "web2", "web1", "web1", "web2", "web1"}
	if d := countsDiffer(pred, map[string]int{"web1": 3, "web2": 2, "web3": 1}); d != "" {
		t.Errorf("same counts, other order: %q", d)
	}
	d := countsDiffer(pred, map[string]int{"web1": 4, "web2": 2, "web4": 1})
	if d != "counts differ from the model's: web1 4 (predicted 3), web3 0 (predicted 1), web4 1 (predicted 0)" {
		t.Errorf("differing counts: %q", d)
	}
}

// Seeding takes only the connections and templates that can be the service's.
func TestOfService(t *testing.T) {
	ap := netip.MustParseAddrPort
	conns := []Conn{
		{Proto: "TCP", Client: ap("203.0.113.10:40000"), Virtual: ap("203.0.113.1:80"), Dest: ap("198.51.100.11:80")},
		{Proto: "TCP", Client: ap("203.0.113.10:40001"), Virtual: ap("203.0.113.1:443"), Dest: ap("198.51.100.11:443")},
		{Proto: "UDP", Client: ap("203.0.113.10:40002"), Virtual: ap("203.0.113.1:53"), Dest: ap("198.51.100.12:53")},
		{Proto: "TCP", Client: ap("203.0.113.10:0"), Virtual: ap("203.0.113.1:80"), Dest: ap("198.51.100.11:80"), Template: true},
		{Proto: "IP", Client: ap("203.0.113.10:0"), Virtual: ap("203.0.113.1:0"), Dest: ap("198.51.100.12:0"), Template: true},
		{Proto: "IP", Client: ap("203.0.113.10:0"), Virtual: ap("0.0.0.10:0"), Dest: ap("198.51.100.12:0"), Template: true},
	}
	for _, c := range []struct {
		svc  lab.Service
		want []int
	}{
		{lab.Service{Protocol: lab.TCP, Addr: ap("203.0.113.1:80")}, []int{0, 3}},
		{lab.Service{Protocol: lab.TCP, Addr: ap("203.0.113.1:0")}, []int{0, 1, 4}},
		{lab.Service{Protocol: lab.UDP, Addr: ap("203.0.113.1:53")}, []int{2}},
		{lab.Service{FWMark: 10}, []int{0, 1, 2, 5}},
	} {
		var want []Conn
		for _, i := range c.want {
			want = append(want, conns[i])
		}
		if got := ofService(conns, c.svc); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %v, want %v", c.svc.Key(), got, want)
		}
	}
}
