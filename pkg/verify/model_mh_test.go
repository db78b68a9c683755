package verify

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/lvslab/lvslab/pkg/lab"
)

// Sequences pinned below were observed on the sandbox kernel (6.1.176): each
// is what the e2e spec named beside it checks, server by server, on the real
// kernel (e2e/hashing_test.go). The other tests here check properties of the
// model that follow from ip_vs_mh.c, not observations.
//
//	unit test                             e2e spec (e2e/hashing_test.go, "Hashing and locality schedulers ...")
//	TestMHSourcesOnTheKernel/1:1:1        mh maps each client address to the server its table gives / mh 1:1:1
//	TestMHSourcesOnTheKernel/3:2:1        mh maps each client address to the server its table gives / mh 3:2:1
//	TestMHPortOnTheKernel                 maps each client address and port with mh-port
//	TestMHQuiescedOnTheKernel/fallback    mh after a server is quiesced mid-run / with mh-fallback: ...
//	TestMHQuiescedOnTheKernel/no-fallback mh after a server is quiesced mid-run / without mh-fallback: ...

// The three-server NAT lab's VIP and client address.
var (
	nat3VIP    = netip.MustParseAddr("203.0.113.1")
	nat3Client = netip.MustParseAddr("203.0.113.10")
)

// nat3 builds the three-server NAT lab's service as lvslab builds it
// (scenarios/nat-lc.yaml, nat-wrr.yaml): web1, web2, web3 at
// 198.51.100.11-13:80, added in that order with the given weights.
func nat3(t *testing.T, sched lab.Scheduler, weights [3]int, flags ...lab.SchedFlag) *Sim {
	t.Helper()
	s, err := NewSim(sandbox, sched, flags...)
	if err != nil {
		t.Fatal(err)
	}
	for i, w := range weights {
		s.AddServer(fmt.Sprintf("web%d", i+1), netip.MustParseAddrPort(fmt.Sprintf("198.51.100.1%d:80", i+1)), w)
	}
	return s
}

// digits writes web1, web2, web3 as 1, 2, 3 and no server as -.
func digits(servers []string) string {
	var b strings.Builder
	for _, s := range servers {
		if s == "" {
			b.WriteByte('-')
		} else {
			b.WriteString(strings.TrimPrefix(s, "web"))
		}
	}
	return b.String()
}

// fromSources connects once from each of n client addresses from 203.0.113.100
// on (the e2e specs' verify.AddSources range) and names the servers.
func fromSources(s *Sim, n int) string {
	a := netip.MustParseAddr("203.0.113.100")
	out := make([]string, n)
	for i := range out {
		out[i] = s.Connect(Request{Src: a, Dst: nat3VIP}, false)
		a = a.Next()
	}
	return digits(out)
}

func TestMHSourcesOnTheKernel(t *testing.T) {
	for _, c := range []struct {
		name    string
		weights [3]int
		want    string
	}{
		{"1:1:1", [3]int{1, 1, 1}, "212133111231212332211232123212133212121213111131222313123333"},
		{"3:2:1", [3]int{3, 2, 1}, "212131111211212312211212121212111212111213111131222311123333"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := fromSources(nat3(t, lab.MH, c.weights), 60); got != c.want {
				t.Errorf("203.0.113.100-159:\n got %s\nwant %s", got, c.want)
			}
		})
	}
}

func TestMHPortOnTheKernel(t *testing.T) {
	s := nat3(t, lab.MH, [3]int{1, 1, 1}, lab.MHPort)
	var got []string
	for i := range 30 {
		got = append(got, s.Connect(Request{Src: nat3Client, SrcPort: uint16(40000 + i)}, true))
	}
	if want := "313313323213232213121113223322"; digits(got) != want {
		t.Errorf("203.0.113.10, ports 40000-40029:\n got %s\nwant %s", digits(got), want)
	}
	// Without mh-port the port is not hashed: one address, one server.
	one := nat3(t, lab.MH, [3]int{1, 1, 1})
	first := one.Connect(Request{Src: nat3Client, SrcPort: 40000}, true)
	for i := range 30 {
		if got := one.Connect(Request{Src: nat3Client, SrcPort: uint16(40000 + i)}, true); got != first {
			t.Fatalf("port %d without mh-port: %s, port 40000: %s", 40000+i, got, first)
		}
	}
}

// web2 quiesced (weight 0, ipvsadm -e) after the first round: its clients walk
// on with mh-fallback and are refused without; every other client keeps its
// server.
func TestMHQuiescedOnTheKernel(t *testing.T) {
	const before = "212133111231212332211232123212133212121213111131222313123333"
	for _, c := range []struct {
		name  string
		flags []lab.SchedFlag
		want  string
	}{
		{"fallback", []lab.SchedFlag{lab.MHFallback}, "313133111131311331111331113111133311111313111131113313133333"},
		{"no-fallback", nil, "-1-133111-31-1-33--11-3-1-3-1-133-1-1-1-13111131---3131-3333"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := nat3(t, lab.MH, [3]int{1, 1, 1}, c.flags...)
			if got := fromSources(s, 60); got != before {
				t.Fatalf("before:\n got %s\nwant %s", got, before)
			}
			s.SetWeight("web2", 0)
			if got := fromSources(s, 60); got != c.want {
				t.Errorf("after web2 is quiesced:\n got %s\nwant %s", got, c.want)
			}
		})
	}
}

// slots counts the table's slots per server.
func slots(s *Sim) map[string]int {
	n := map[string]int{}
	for _, name := range s.Sched.(*mh).lookup {
		n[name]++
	}
	return n
}

// Every slot is taken, in proportion to the weights reduced by their gcd:
// ip_vs_mh_populate gives each server its turns per round.
func TestMHTableShares(t *testing.T) {
	for _, c := range []struct {
		weights [3]int
		want    map[string]int
	}{
		// 4093 = 1364 rounds of 3 + 1: the first in list order (web3) takes the last slot.
		{[3]int{1, 1, 1}, map[string]int{"web1": 1364, "web2": 1364, "web3": 1365}},
		{[3]int{2, 2, 2}, map[string]int{"web1": 1364, "web2": 1364, "web3": 1365}}, // gcd 2: as 1:1:1
		// 4093 = 682 rounds of 6 + 1: web3 (1 turn) takes it.
		{[3]int{3, 2, 1}, map[string]int{"web1": 2046, "web2": 1364, "web3": 683}},
	} {
		if got := slots(nat3(t, lab.MH, c.weights)); fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%v: slots %v, want %v", c.weights, got, c.want)
		}
	}
}

// Weights whose quotient by the gcd needs more than IP_VS_MH_TAB_BITS (6) bits
// are shifted right (ip_vs_mh_shift_weight); a weight shifted to 0 keeps one
// turn.
func TestMHShiftsLargeWeights(t *testing.T) {
	s, err := NewSim(sandbox, lab.MH)
	if err != nil {
		t.Fatal(err)
	}
	s.AddServer("heavy", netip.MustParseAddrPort("198.51.100.11:80"), 1000) // fls(1000) = 10: shift 4, 62 turns
	s.AddServer("light", netip.MustParseAddrPort("198.51.100.12:80"), 1)    // 1 >> 4 = 0: 1 turn
	// Rounds of 63 in list order (light, heavy): 64 rounds fill 4032 slots,
	// then light 1 and heavy the last 60.
	if got, want := slots(s), map[string]int{"heavy": 62*64 + 60, "light": 65}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("slots %v, want %v", got, want)
	}
}

// The table is built from last_weight: quiescing keeps it as it was; a server
// added with weight 0 takes no slot; setting a weight again rebuilds it.
func TestMHLastWeight(t *testing.T) {
	s := nat3(t, lab.MH, [3]int{1, 1, 1})
	table := s.Sched.(*mh).lookup
	s.SetWeight("web2", 0)
	if s.Sched.(*mh).lookup != table {
		t.Error("quiescing web2 changed the table")
	}
	s.SetWeight("web2", 3)
	// Rounds of 5 in list order (web3 1, web2 3, web1 1): 818 rounds fill
	// 4090 slots, then web3 1 and web2 the last 2.
	if got := slots(s)["web2"]; got != 818*3+2 {
		t.Errorf("web2 at 1:3:1 holds %d slots, want %d", got, 818*3+2)
	}

	z := nat3(t, lab.MH, [3]int{1, 0, 1})
	if got := slots(z); got["web2"] != 0 || got["web1"]+got["web3"] != mhTabSize {
		t.Errorf("web2 added with weight 0: slots %v", got)
	}
	if got := fromSources(z, 60); strings.Contains(got, "2") || strings.Contains(got, "-") {
		t.Errorf("web2 added with weight 0 is never picked and nobody is refused: %s", got)
	}

	none := nat3(t, lab.MH, [3]int{0, 0, 0})
	if got := fromSources(none, 3); got != "---" {
		t.Errorf("no weights: %s", got)
	}
}

// A server added without its address (AddDest) leaves the model unable to
// build the table: it predicts nothing rather than guess.
func TestMHWithoutAddressesPredictsNothing(t *testing.T) {
	s, err := NewSim(sandbox, lab.MH)
	if err != nil {
		t.Fatal(err)
	}
	s.AddDest("web1", 1)
	if got := s.Connect(Request{Src: netip.MustParseAddr("203.0.113.10")}, false); got != "" {
		t.Errorf("predicted %q", got)
	}
}

// IPv6 addresses are folded to 32 bits as sh and dh fold them (the XOR of the
// four words): two addresses with the same fold hash alike.
func TestMHFoldsIPv6(t *testing.T) {
	v6 := netip.MustParseAddr("2001:db8::1:0:0:10")
	v4 := netip.AddrFrom4([4]byte{0x20, 0x00, 0x0d, 0xa8}) // 0x20010db8 ^ 0x00010000 ^ 0x00000010
	if fold(v6) != fold(v4) {
		t.Fatalf("folds %08x %08x", fold(v6), fold(v4))
	}
	if mhHashkey(v6, 80, mhKey1, 7) != mhHashkey(v4, 80, mhKey1, 7) {
		t.Error("equal folds hash differently")
	}
}
