package verify

import (
	"strings"
	"testing"
)

func TestParseKernel(t *testing.T) {
	for _, c := range []struct {
		release             string
		major, minor, patch int
	}{{"6.1.176", 6, 1, 176}, {"6.1.0-28-amd64", 6, 1, 0}, {"6.12", 6, 12, 0}, {"5.10.226-1-default", 5, 10, 226}} {
		k, err := ParseKernel(c.release)
		if err != nil || k.Major != c.major || k.Minor != c.minor || k.Patch != c.patch || k.String() != c.release {
			t.Errorf("%s: %+v %v", c.release, k, err)
		}
	}
	if _, err := ParseKernel("linux"); err == nil {
		t.Error("linux accepted")
	}
	if k, err := RunningKernel(); err != nil || k.Major == 0 {
		t.Errorf("running kernel %+v %v", k, err)
	}
}

func TestKernelOf(t *testing.T) {
	const sandbox = "Linux version 6.1.176 (buildd@x86-grnet-03) (gcc (Debian 12.2.0-14+deb12u1) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 Sat Jul  4 15:38:16 UTC 2026"
	const debian = "Linux version 6.1.0-28-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.1.119-1 (2024-11-22)"
	if k, err := kernelOf("6.1.176", sandbox); err != nil || k.Patch != 176 || k.Release != "6.1.176" {
		t.Errorf("sandbox: %+v %v", k, err)
	}
	if k, err := kernelOf("6.1.0-28-amd64", debian); err != nil || k.Patch != 119 || k.Release != "6.1.0-28-amd64 (6.1.119)" {
		t.Errorf("debian: %+v %v", k, err)
	}
}

func TestTotalConnsOverhead(t *testing.T) {
	for _, c := range []struct {
		release      string
		total, known bool
	}{
		{"6.1.176", false, true}, // the sandbox kernel
		{"6.1.182", false, true},
		{"6.1.183", true, true}, // "ipvs: add totalconns for dest"
		{"6.1.192", true, true}, // Debian's linux-source-6.1 of 2026-11-25
		{"5.10.226", false, true},
		{"6.12.5", false, false}, // no sources read for that series
	} {
		k, _ := ParseKernel(c.release)
		if total, known := k.TotalConnsOverhead(); total != c.total || known != c.known {
			t.Errorf("%s: total %v known %v", c.release, total, known)
		}
	}
	k, _ := ParseKernel("6.12.5")
	if _, err := NewSim(k, "wlc"); err == nil || !strings.Contains(err.Error(), "6.1.183") {
		t.Errorf("wlc on an unknown series: %v", err)
	}
	if _, err := NewSim(k, "rr"); err != nil {
		t.Errorf("rr does not depend on the overhead: %v", err)
	}
}

// One held connection, then closed ones: the formulas part when the idle
// server's closed connections reach 256. The kernel lists B before A; on a tie
// lc keeps the first in list order.
func TestOverheadFormulaPartsAfter256Closed(t *testing.T) {
	run := func(release string) []string {
		k, _ := ParseKernel(release)
		s, err := NewSim(k, "lc")
		if err != nil {
			t.Fatal(err)
		}
		s.AddDest("A", 1)
		s.AddDest("B", 1)
		if held := s.Connect(Request{}, true); held != "B" {
			t.Fatalf("held on %s", held)
		}
		return s.Sequence(Request{}, 300, false)
	}
	old, next := run("6.1.176"), run("6.1.192")
	i := FirstDivergence(old, next)
	if i != 256 || old[i] != "B" || next[i] != "A" {
		t.Fatalf("first divergence at %d (%s vs %s), want 256: B (256 = 256, first in list) on 6.1.176, A (257 > 256) on 6.1.192", i, old[i], next[i])
	}
	for _, x := range old[:256] {
		if x != "A" {
			t.Fatalf("the first 256 closed connections go to A, the idle server: %v", old[:256])
		}
	}
}
