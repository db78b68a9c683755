package runner

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/scenario"
	"github.com/lvslab/lvslab/pkg/state"
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

func TestRestartNodes(t *testing.T) {
	web := &lab.Web{HTTP: []uint16{80}}
	prev := lab.Spec{Nodes: []lab.NodeSpec{{Name: "director"}, {Name: "web1", Web: web}, {Name: "web2", Web: web}, {Name: "gone", Web: web}}}
	next := lab.Spec{Nodes: []lab.NodeSpec{{Name: "director"}, {Name: "web1", Web: web}, {Name: "web2", Web: &lab.Web{HTTP: []uint16{8080}}}}}
	alive := []state.Process{{Role: "webd-web1", Node: "web1", Pid: os.Getpid()}}
	alive[0].StartTime, _ = state.ProcessStartTime(os.Getpid())
	if got := restartNodes(&prev, next, alive); !slices.Equal(got, []string{"gone", "web2"}) {
		t.Errorf("restart %v, want [gone web2]: web2's ports changed, gone's server stops", got)
	}
	dead := []state.Process{{Role: "webd-web1", Node: "web1", Pid: 1 << 30}}
	if got := restartNodes(&prev, prev, dead); !slices.Equal(got, []string{"web1"}) {
		t.Errorf("restart %v, want [web1]: its process is gone", got)
	}
	if got := restartNodes(nil, next, nil); len(got) != 3 {
		t.Errorf("restart %v, want every node when the previous spec is unknown", got)
	}
}
