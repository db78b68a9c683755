package runner

import (
	"strings"
	"testing"

	"github.com/lvslab/lvslab/pkg/scenario"
)

func TestNeed(t *testing.T) {
	s, err := scenario.Load("../../scenarios/nat-rr.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// 5 nodes (client, director, lan, web1, web2), 2 web servers.
	if got := Need(s); got != 5*memPerNode+2*memPerProcess {
		t.Errorf("need %d", got)
	}
}

func TestFits(t *testing.T) {
	const mib = 1 << 20
	if err := fits(3, 11*mib, 512*mib, 200*mib); err != nil {
		t.Errorf("a lab that fits was refused: %v", err)
	}
	err := fits(97, 11*mib, 512*mib, 70*mib)
	if err == nil {
		t.Fatal("a lab that leaves less than the reserve was accepted")
	}
	for _, want := range []string{"97 labs are up", "70 MiB of 512 MiB available", "needs about 11 MiB", "LVSLAB_SANDBOX_MEM=1024M"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not say %q", err, want)
		}
	}
}
