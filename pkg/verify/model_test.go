package verify

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/lvslab/lvslab/pkg/lab"
)

// sandbox is the kernel the sequences below were observed on (see the e2e
// specs each one maps to).
var sandbox = Kernel{Release: "6.1.176", Major: 6, Minor: 1, Patch: 176}

func sim(t *testing.T, sched lab.Scheduler, servers string, flags ...lab.SchedFlag) *Sim {
	t.Helper()
	return simOn(t, sandbox, sched, servers, flags...)
}

func simOn(t *testing.T, k Kernel, sched lab.Scheduler, servers string, flags ...lab.SchedFlag) *Sim {
	t.Helper()
	s, err := NewSim(k, sched, flags...)
	if err != nil {
		t.Fatal(err)
	}
	// "A3 B2 C1": added in this order with these weights.
	for _, f := range strings.Fields(servers) {
		s.AddDest(f[:1], int(f[1]-'0'))
	}
	return s
}

func seq(s *Sim, n int, hold bool) string {
	return strings.Join(s.Sequence(Request{}, n, hold), "")
}

func TestListOrderIsReverseInsertion(t *testing.T) {
	if got := sim(t, "rr", "A1 B1 C1").Order(); !slices.Equal(got, []string{"C", "B", "A"}) {
		t.Fatalf("order %v", got)
	}
}

// Each sequence below is also checked against the sandbox kernel by the e2e
// distribution specs (same weights, same insertion order: A=web1, B=web2, C=web3).
func TestModels(t *testing.T) {
	for _, c := range []struct {
		sched   lab.Scheduler
		servers string
		n       int
		hold    bool
		want    string
	}{
		{"rr", "A1 B1", 6, false, "BABABA"},
		{"rr", "A1 B0 C1", 6, false, "CACACA"},         // weight 0: quiesced, skipped
		{"wrr", "A3 B2 C1", 12, false, "CBAABACBAABA"}, // cw starts at 1 after the third add
		{"wrr", "A4 B2", 9, false, "BAABAABAA"},        // cw starts at 1 after the second add: B first
		{"lc", "A1 B1 C1", 9, false, "CBACBACBA"},
		{"lc", "A1 B1 C1", 6, true, "CBACBA"},
		{"wlc", "A3 B2 C1", 12, false, "CBAABACBAABA"},
		{"sed", "A3 B2 C1", 12, false, "AAAAAAAAAAAA"}, // closed connections: every overhead is 1
		{"sed", "A3 B2 C1", 6, true, "ABACBA"},
		{"nq", "A3 B2 C1", 6, true, "CBAABA"},
		{"fo", "A1 B3 C3", 4, false, "CCCC"}, // first in list order among the highest weight
		{"ovf", "A1 B2", 6, true, "BBBAA"},   // each takes weight+1 active (the kernel skips active > weight); then none
	} {
		got := seq(sim(t, c.sched, c.servers), c.n, c.hold)
		if got != c.want {
			t.Errorf("%s %s hold=%v: got %s, want %s", c.sched, c.servers, c.hold, got, c.want)
		}
	}
}

func TestWRRWeightChangeMidRun(t *testing.T) {
	s := sim(t, "wrr", "A3 B2 C1")
	first := seq(s, 6, false)
	s.SetWeight("C", 3) // ip_vs_wrr_dest_changed: back to the list head, cw kept
	second := seq(s, 8, false)
	if first != "CBAABA" || second != "CBACBACA" {
		t.Fatalf("got %s then %s", first, second)
	}
}

func TestWRRCounts(t *testing.T) {
	s := sim(t, "wrr", "A5 B3 C2 D1")
	counts := map[string]int{}
	for _, x := range s.Sequence(Request{}, 11*7, false) {
		counts[x]++
	}
	if counts["A"] != 35 || counts["B"] != 21 || counts["C"] != 14 || counts["D"] != 7 {
		t.Fatalf("counts %v over 7 cycles, want 5:3:2:1", counts)
	}
}

func TestSourceHash(t *testing.T) {
	// Every bucket maps to a server in proportion to its weight.
	s := sim(t, "sh", "A2 B1")
	h := s.Sched.(*sh)
	n := map[int]int{}
	for _, b := range h.buckets {
		n[b]++
	}
	// List order is B A: buckets go B, A, A, B, A, A, ... (weight-long runs).
	if h.buckets[0] != 0 || h.buckets[1] != 1 || h.buckets[2] != 1 || h.buckets[3] != 0 || n[0] != 86 || n[1] != 170 {
		t.Fatalf("buckets start %v, counts %v", h.buckets[:4], n)
	}
	// The hash of 203.0.113.10: (0xCB00710A * 0x61C88647) >> 24.
	if got := hash32(0xCB00710A, 8); got != uint32((uint64(0xCB00710A)*0x61C88647)&0xFFFFFFFF)>>24 {
		t.Fatalf("hash32 %d", got)
	}
	a := netip.MustParseAddr("203.0.113.10")
	one := s.Connect(Request{Src: a}, false)
	for range 5 {
		if got := s.Connect(Request{Src: a}, false); got != one {
			t.Fatal("sh is not sticky for one address")
		}
	}
	// A quiesced server's clients get nothing, unless sh-fallback.
	s.SetWeight(one, 0)
	if got := s.Connect(Request{Src: a}, false); got != "" {
		t.Fatalf("without fallback: %q", got)
	}
	f := sim(t, "sh", "A2 B1", "sh-fallback")
	f.SetWeight(one, 0)
	if got := f.Connect(Request{Src: a}, false); got == "" || got == one {
		t.Fatalf("with fallback: %q", got)
	}
}

func TestIPv6Fold(t *testing.T) {
	a := netip.MustParseAddr("2001:db8::1:0:0:10")
	if got := fold(a); got != 0x20010db8^0^0x00010000^0x00000010 {
		t.Fatalf("fold %08x", got)
	}
}

func TestParseConns(t *testing.T) {
	text := `Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData
TCP CB00710A 9E3A CB007101 0050 C633640B 0050 ESTABLISHED     899
TCP CB00710A 0000 CB007101 0050 C633640B 0050 NONE            118
TCP 2001:0db8:0001:0000:0000:0000:0000:0010 8F2A 2001:0db8:0001:0000:0000:0000:0000:0001 0050 2001:0db8:0002:0000:0000:0000:0000:0011 0050 TIME_WAIT 119
`
	cs, err := ParseConns([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 3 {
		t.Fatalf("%d conns", len(cs))
	}
	if cs[0].Client.String() != "203.0.113.10:40506" || cs[0].Dest.String() != "198.51.100.11:80" || cs[0].State != "ESTABLISHED" || cs[0].Expires != 899 {
		t.Errorf("conn 0: %+v", cs[0])
	}
	if !cs[1].Template || cs[1].Virtual.Addr().String() != "203.0.113.1" {
		t.Errorf("template: %+v", cs[1])
	}
	if cs[2].Dest.Addr().String() != "2001:db8:2::11" || cs[2].State != "TIME_WAIT" {
		t.Errorf("ipv6: %+v", cs[2])
	}
}

// Thresholds, edits and deletions. Each sequence is checked against the
// sandbox kernel by an e2e spec (e2e/thresholds_test.go):
//
//	TestThresholds rr closed       -> "Thresholds ... rr, closed connections"
//	TestThresholds rr held         -> "Thresholds ... rr, held connections"
//	TestThresholds wlc closed      -> "Thresholds ... wlc 3:2:1, closed connections"
//	TestThresholds wlc held        -> "Thresholds ... wlc 3:2:1, held connections"
//	TestThresholdLowered           -> "a lowered upper threshold ..."
//	TestRemoveDest                 -> "a real server deleted mid-run (rr, wrr)"
//	TestWeightEditBeforeTraffic    -> "wrr with a weight edited before any traffic"
func TestThresholds(t *testing.T) {
	for _, c := range []struct {
		name, sched, servers string
		upper, lower         int
		n                    int
		hold                 bool
		want                 string
	}{
		// A (web1) takes its third connection, then is passed by.
		{"rr closed", "rr", "A1 B1 C1", 3, 0, 12, false, "CBACBACBACBC"},
		{"rr held", "rr", "A1 B1 C1", 3, 0, 12, true, "CBACBACBACBC"},
		{"wlc closed", "wlc", "A3 B2 C1", 2, 1, 12, false, "CBAABCBBCBBC"},
		{"wlc held", "wlc", "A3 B2 C1", 2, 1, 12, true, "CBAABCBBCBBC"},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, k := range []Kernel{sandbox, newer} {
				s := simOn(t, k, lab.Scheduler(c.sched), c.servers)
				s.Edit("A", s.Dests[len(s.Dests)-1].Weight, c.upper, c.lower)
				if got := seq(s, c.n, c.hold); got != c.want {
					t.Errorf("kernel %s: %s, want %s", k, got, c.want)
				}
			}
		})
	}
}

var newer = Kernel{Release: "6.1.192", Major: 6, Minor: 1, Patch: 192}

func TestThresholdLowered(t *testing.T) {
	// rr over three servers; after 6 connections (two each) A's upper threshold
	// is lowered to 1. 6.1.176 gives A one more connection (its bind sets the
	// flag); 6.1.183 on sets the flag at the edit.
	for k, want := range map[Kernel]string{sandbox: "CBACBCBCB", newer: "CBCBCBCBC"} {
		s, err := NewSim(k, lab.RR)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []string{"A", "B", "C"} {
			s.AddDest(n, 1)
		}
		seq(s, 6, false)
		s.Edit("A", 1, 1, 0)
		if got := seq(s, 9, false); got != want {
			t.Errorf("kernel %s: %s, want %s", k, got, want)
		}
	}
}

func TestOverloadClears(t *testing.T) {
	for _, k := range []Kernel{sandbox, newer} {
		s, _ := NewSim(k, lab.RR)
		s.AddDest("A", 1)
		s.Edit("A", 1, 4, 2)
		seq(s, 4, true)
		if !s.Dests[0].Overloaded {
			t.Fatalf("kernel %s: not overloaded at the upper threshold", k)
		}
		s.Expire("A", true)
		s.Expire("A", true)
		if !s.Dests[0].Overloaded {
			t.Fatalf("kernel %s: cleared at the lower threshold (2 left)", k)
		}
		s.Expire("A", true)
		if s.Dests[0].Overloaded {
			t.Fatalf("kernel %s: still overloaded below the lower threshold", k)
		}
	}
}

func TestRemoveDest(t *testing.T) {
	for _, c := range []struct {
		sched, servers string
		before         int
		remove         string
		want           string
	}{
		{"rr", "A1 B1 C1", 4, "C", "BABABA"}, // last was C, the head: rr starts over
		{"rr", "A1 B1 C1", 5, "B", "ACACAC"}, // last was B: its place goes to C, so A is next
		{"rr", "A1 B1 C1", 3, "B", "CACACA"},
		{"wrr", "A3 B2 C1", 5, "A", "BCBBCB"},
	} {
		s := sim(t, lab.Scheduler(c.sched), c.servers)
		seq(s, c.before, false)
		s.RemoveDest(c.remove)
		if got := seq(s, 6, false); got != c.want {
			t.Errorf("%s %s after %d, -d %s: %s, want %s", c.sched, c.servers, c.before, c.remove, got, c.want)
		}
	}
}
