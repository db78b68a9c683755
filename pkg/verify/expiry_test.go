package verify

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/lvslab/lvslab/pkg/lab"
)

// Each case below is checked on the sandbox kernel by e2e/expiry_test.go:
//
//	TestTemplateExpires      -> "a UDP template expires once its connections have"
//	TestTemplateRearms       -> "a template that still controls a connection lives on (60 s re-arm)"
//	TestQuiescentTemplate    -> e2e/persistence_test.go "when the client's server is quiesced"
//	TestConnectionExpiry     -> "held connections expire after --set tcp; lc sends to them again"

var a = netip.MustParseAddr("203.0.113.10")

func persistentRR(t *testing.T, timeout time.Duration, proto lab.Protocol, udp time.Duration) *Sim {
	t.Helper()
	s := sim(t, lab.RR, "A1 B1")
	s.Proto, s.Timeouts.UDP = proto, udp
	s.Persist = &Persistence{Timeout: timeout, Netmask: 32}
	return s
}

func schedAt(s *Sim, at time.Duration, n int) string {
	s.Advance(at)
	var out []string
	for range n {
		out = append(out, s.Schedule(Request{Src: a}, false))
	}
	return strings.Join(out, "")
}

func TestTemplateExpires(t *testing.T) {
	// -p 4 over UDP with --set udp 2: the connections go at 2 s, the template
	// at 4 s; the client's next datagram is rr's next pick.
	s := persistentRR(t, 4*time.Second, lab.UDP, 2*time.Second)
	if got := schedAt(s, 0, 2); got != "BB" {
		t.Fatalf("first: %s", got)
	}
	if got := schedAt(s, 7*time.Second, 2); got != "AA" {
		t.Fatalf("after the template expired: %s", got)
	}
	if len(s.Templates()) != 1 || s.Dests[1].Persist != 1 || s.Dests[0].Persist != 0 {
		t.Fatalf("templates %v, persist counts %+v %+v", s.Templates(), s.Dests[0], s.Dests[1])
	}
}

func TestTemplateRearms(t *testing.T) {
	// -p 2 with --set udp 5: at 2 s the template still controls a connection
	// and lives on for 60 s; at 7 s the client still finds it.
	s := persistentRR(t, 2*time.Second, lab.UDP, 5*time.Second)
	schedAt(s, 0, 1)
	if got := schedAt(s, 7*time.Second, 1); got != "B" {
		t.Fatalf("after the connection expired, within the re-arm: %s", got)
	}
	// Once re-armed its timeout is 60 s, and each use restarts it.
	if got := schedAt(s, 66*time.Second, 1); got != "B" {
		t.Fatalf("59 s after a use of a re-armed template: %s", got)
	}
	s2 := persistentRR(t, 2*time.Second, lab.UDP, 5*time.Second)
	schedAt(s2, 0, 1)
	if got := schedAt(s2, 62*time.Second, 1); got != "A" {
		t.Fatalf("after the re-arm ran out: %s", got)
	}
}

func TestQuiescentTemplate(t *testing.T) {
	for _, expire := range []bool{false, true} {
		s := persistentRR(t, time.Minute, lab.TCP, 0)
		s.Persist.ExpireQuiescent = expire
		schedAt(s, 0, 1)
		s.SetWeight("B", 0)
		want := map[bool]string{false: "BB", true: "AA"}[expire]
		if got := schedAt(s, time.Second, 2); got != want {
			t.Errorf("expire_quiescent_template=%v: %s, want %s", expire, got, want)
		}
	}
}

func TestConnectionExpiry(t *testing.T) {
	// lc with --set tcp 2: two held connections expire at 2 s; lc then counts
	// only the closed ones.
	s := sim(t, lab.LC, "A1 B1")
	s.Timeouts.TCP = 2 * time.Second
	s.Advance(0)
	if got := strings.Join([]string{s.Schedule(Request{}, true), s.Schedule(Request{}, true)}, ""); got != "BA" {
		t.Fatalf("held: %s", got)
	}
	s.Advance(3 * time.Second)
	if s.Dests[0].Active != 0 || s.Dests[1].Active != 0 {
		t.Fatalf("held connections did not expire: %+v %+v", s.Dests[0], s.Dests[1])
	}
	if s.Unsure != "" {
		t.Fatalf("unsure far from any timer: %s", s.Unsure)
	}
	// A connection right at a timer is not sure.
	s.Schedule(Request{}, true)
	s.Advance(5 * time.Second)
	s.Schedule(Request{}, false)
	if s.Unsure == "" {
		t.Fatal("a connection 0 s after an expiry was sure")
	}
}

func TestThresholdClearsOnExpiry(t *testing.T) {
	s := sim(t, lab.RR, "A1 B1")
	s.Timeouts.TCP = time.Second
	s.Edit("A", 1, 2, 0)
	s.Sequence(Request{}, 4, true) // B A B A: A reaches 2
	if !s.Dests[1].Overloaded {
		t.Fatal("A not overloaded")
	}
	s.Advance(2 * time.Second)
	if s.Dests[1].Overloaded {
		t.Fatal("A still overloaded after its connections expired")
	}
}
