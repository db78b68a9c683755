package verify

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/lvslab/lvslab/pkg/lab"
)

// Sequences pinned below were observed on the sandbox kernel (6.1.176): each
// is what the e2e spec named beside it checks, connection by connection, on the
// real kernel (e2e/hashing_test.go). The other tests here check properties of
// the models that follow from ip_vs_lblc.c and ip_vs_lblcr.c, not observations.
//
//	unit test                               e2e spec (e2e/hashing_test.go, "Hashing and locality schedulers ...")
//	TestLocalityHeldOnTheKernel/lblc_1:1:1  lblc and lblcr for connections held open, ... / lblc 1:1:1
//	TestLocalityHeldOnTheKernel/lblc_3:2:1  lblc and lblcr for connections held open, ... / lblc 3:2:1
//	TestLocalityHeldOnTheKernel/lblcr_1:1:1 lblc and lblcr for connections held open, ... / lblcr 1:1:1 (the set grows to all three)
//	TestLocalityHeldOnTheKernel/lblcr_3:2:1 lblc and lblcr for connections held open, ... / lblcr 3:2:1
//	TestLocalityClosedOnTheKernel/lblc      lblc and lblcr for sequential connections, each closed before the next / lblc
//	TestLocalityClosedOnTheKernel/lblcr     lblc and lblcr for sequential connections, each closed before the next / lblcr

func TestLocalityHeldOnTheKernel(t *testing.T) {
	for _, c := range []struct {
		name    string
		sched   lab.Scheduler
		weights [3]int
		n       int
		want    string
	}{
		// The list is web3 web2 web1. lblc: web3 until it holds 2 > 1 active
		// while web2 holds 0 < 1/2; then web2 the same way; then web1 for good
		// (no server is under half its weight any more).
		{"lblc 1:1:1", lab.LBLC, [3]int{1, 1, 1}, 9, "332211111"},
		{"lblc 3:2:1", lab.LBLC, [3]int{3, 2, 1}, 12, "332221111111"},
		// lblcr keeps every server it moved to in the set and serves the set's
		// least loaded: once all three are in, they take turns.
		{"lblcr 1:1:1", lab.LBLCR, [3]int{1, 1, 1}, 12, "332211123123"},
		{"lblcr 3:2:1", lab.LBLCR, [3]int{3, 2, 1}, 14, "33222111112112"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := nat3(t, c.sched, c.weights)
			if got := digits(s.Sequence(Request{Src: nat3Client, Dst: nat3VIP}, c.n, true)); got != c.want {
				t.Errorf("got %s, want %s", got, c.want)
			}
		})
	}
}

// Closed connections are never active: is_overloaded never fires and the
// destination keeps its first server.
func TestLocalityClosedOnTheKernel(t *testing.T) {
	for _, sched := range []lab.Scheduler{lab.LBLC, lab.LBLCR} {
		t.Run(string(sched), func(t *testing.T) {
			s := nat3(t, sched, [3]int{3, 2, 1})
			if got := digits(s.Sequence(Request{Src: nat3Client, Dst: nat3VIP}, 12, false)); got != "333333333333" {
				t.Errorf("got %s", got)
			}
		})
	}
}

// The cache is per destination address: a second one is scheduled on its own
// (wlc's rule), and the first keeps its server.
func TestLocalityCachesPerDestination(t *testing.T) {
	for _, sched := range []lab.Scheduler{lab.LBLC, lab.LBLCR} {
		s := nat3(t, sched, [3]int{1, 1, 1})
		other := netip.MustParseAddr("203.0.113.2")
		got := []string{
			s.Connect(Request{Dst: nat3VIP}, true),
			s.Connect(Request{Dst: other}, true),   // web3 holds one: web2 is least loaded
			s.Connect(Request{Dst: nat3VIP}, true), // web3 holds 1, not more than its weight
		}
		if digits(got) != "323" {
			t.Errorf("%s: %s", sched, digits(got))
		}
	}
}

// lblc's cached server is judged by is_overloaded and its weight only: the
// upper threshold's overload flag does not move it (ip_vs_lblc.c lines
// 510-512). lblcr's ip_vs_dest_set_min skips a server over its threshold
// (lines 170 and 185), and wlc's rule then skips it too.
func TestLocalityAndTheOverloadFlag(t *testing.T) {
	l := nat3(t, lab.LBLC, [3]int{1, 1, 1})
	l.Connect(Request{Dst: nat3VIP}, true)
	l.Dests[0].Overloaded = true // web3, the cached one
	if got := l.Connect(Request{Dst: nat3VIP}, true); got != "web3" {
		t.Errorf("lblc moved off its cached server over the threshold: %s", got)
	}

	r := nat3(t, lab.LBLCR, [3]int{1, 1, 1})
	r.Connect(Request{Dst: nat3VIP}, true)
	r.Dests[0].Overloaded = true
	if got := r.Connect(Request{Dst: nat3VIP}, true); got != "web2" {
		t.Errorf("lblcr: %s, want web2", got)
	}
	if set := r.Sched.(*lblcr).sets[nat3VIP]; !slices.Equal(set, []string{"web2", "web3"}) {
		t.Errorf("set %v, want the newest first", set)
	}
}

// A quiesced cached server (weight 0) is given up at once, by both.
func TestLocalityQuiescedCachedServer(t *testing.T) {
	for _, sched := range []lab.Scheduler{lab.LBLC, lab.LBLCR} {
		s := nat3(t, sched, [3]int{1, 1, 1})
		s.Connect(Request{Dst: nat3VIP}, false)
		s.SetWeight("web3", 0)
		if got := s.Connect(Request{Dst: nat3VIP}, false); got != "web2" {
			t.Errorf("%s: %s after web3 is quiesced, want web2 (web3 holds an inactive connection)", sched, got)
		}
	}
}

// Both weigh servers by the connection overhead, which changed in 6.1.183: a
// series lvslab has no sources for is refused.
func TestLocalityNeedsAKnownOverhead(t *testing.T) {
	k, _ := ParseKernel("6.12.5")
	for _, sched := range []lab.Scheduler{lab.LBLC, lab.LBLCR} {
		if _, err := NewSim(k, sched); err == nil || !strings.Contains(err.Error(), "6.1.183") {
			t.Errorf("%s on an unknown series: %v", sched, err)
		}
	}
}
