package runner

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/lvslab/lvslab/pkg/scenario"
)

// Memory a lab needs, estimated from measurements in the sandbox kernel: 20
// nat-rr labs (5 namespaces and 2 web servers each) took 4.5 MiB each of
// MemAvailable at rest. The estimate is about 2.5 times that, for traffic.
const (
	memPerNode    = 1 << 20 // a namespace, its links and tables
	memPerProcess = 3 << 20 // a web server or a command
	memReserve    = 64 << 20
)

// Need estimates the memory the scenario's lab takes.
func Need(s *scenario.Scenario) int64 {
	procs := 0
	for _, n := range s.Spec.Nodes {
		if n.Web != nil {
			procs++
		}
		procs += len(n.Commands)
	}
	return int64(len(s.Topology.Nodes))*memPerNode + int64(procs)*memPerProcess
}

// memInfo reads MemTotal and MemAvailable from /proc/meminfo, in bytes.
func memInfo() (total, available int64, err error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "MemTotal":
			total = n << 10
		case "MemAvailable":
			available = n << 10
		}
	}
	return total, available, sc.Err()
}

// fits fails, saying how memory is used and how to get more, when a lab that
// needs need bytes would leave less than the reserve available.
func fits(labs int, need, total, available int64) error {
	if available-need >= memReserve {
		return nil
	}
	mib := func(b int64) int64 { return b >> 20 }
	return fmt.Errorf("not enough memory for another lab: %d labs are up and this kernel has %d MiB of %d MiB available; "+
		"this lab needs about %d MiB and %d MiB stay free for the kernel and lvslab's clients. "+
		"Take labs down (lvslab down LAB), or give the sandbox more memory: LVSLAB_SANDBOX_MEM=%dM (for example), "+
		"then stop it (lvslab down) and bring the labs up again",
		labs, mib(available), mib(total), mib(need), mib(memReserve), 2*mib(total))
}
