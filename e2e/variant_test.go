package e2e

import (
	"path/filepath"
	"slices"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/scenario"
)

// edit changes a scenario in its typed form.
type edit func(*scenario.Scenario)

// variant writes a copy of a shipped scenario, changed by edits, and returns its path.
func variant(file string, edits ...edit) string {
	return variantAs(filepath.Join(GinkgoT().TempDir(), filepath.Base(file)), file, edits...)
}

// variantAs writes a shipped scenario, changed by edits, as path: loaded, edited
// in Go, written with scenario.Write, and checked to load again.
func variantAs(path, file string, edits ...edit) string {
	s, err := scenario.Load(filepath.Join(repo, file))
	Expect(err).NotTo(HaveOccurred())
	for _, e := range edits {
		e(s)
	}
	Expect(scenario.Write(path, s)).To(Succeed())
	_, err = scenario.Load(path)
	Expect(err).NotTo(HaveOccurred(), "the edited scenario does not load")
	return path
}

// services returns the director's services, to edit in place.
func services(s *scenario.Scenario) []lab.Service {
	i := slices.IndexFunc(s.Spec.Nodes, func(n lab.NodeSpec) bool { return len(n.Services) > 0 })
	Expect(i).To(BeNumerically(">=", 0), "the scenario has no director")
	return s.Spec.Nodes[i].Services
}

// nodeSpec returns a node's spec, to edit in place.
func nodeSpec(s *scenario.Scenario, name string) *lab.NodeSpec {
	i := slices.IndexFunc(s.Spec.Nodes, func(n lab.NodeSpec) bool { return n.Name == name })
	Expect(i).To(BeNumerically(">=", 0), "no node %s in the scenario", name)
	return &s.Spec.Nodes[i]
}

// servers calls f on each real server that node holds, in every service.
func servers(s *scenario.Scenario, node string, f func(*lab.Server)) {
	found := false
	for _, svc := range services(s) {
		for i := range svc.Servers {
			if s.Spec.OwnerOf(svc.Servers[i].Addr.Addr()) == node {
				f(&svc.Servers[i])
				found = true
			}
		}
	}
	Expect(found).To(BeTrue(), "%s is not a real server of the scenario", node)
}

// scheduler sets the first service's scheduler and flags. It drops the
// scenario's concurrent checks: their counts are judged against the model only
// for schedulers whose picks do not depend on the connections in flight.
func scheduler(sched lab.Scheduler, flags ...lab.SchedFlag) edit {
	return func(s *scenario.Scenario) {
		svc := &services(s)[0]
		svc.Scheduler, svc.SchedFlags = sched, flags
		slices.Sort(svc.SchedFlags)
		s.Checks = slices.DeleteFunc(s.Checks, func(c lab.Check) bool { return c.Concurrency > 1 })
	}
}

// persistent makes the first service persistent (-p timeout).
func persistent(timeout uint32) edit {
	return func(s *scenario.Scenario) {
		svc := &services(s)[0]
		svc.Persistent, svc.Timeout = true, timeout
	}
}

// netmask sets the first service's persistence granularity (-M).
func netmask(bits int) edit {
	return func(s *scenario.Scenario) {
		svc := &services(s)[0]
		Expect(svc.Persistent).To(BeTrue(), "a netmask needs persistence")
		svc.Netmask = bits
	}
}

// weight sets the weight of node's real server (-w).
func weight(node string, w int) edit {
	return func(s *scenario.Scenario) { servers(s, node, func(srv *lab.Server) { srv.Weight = w }) }
}

// thresholds sets the connection thresholds of node's real server (-x, -y).
func thresholds(node string, upper, lower uint32) edit {
	return func(s *scenario.Scenario) {
		servers(s, node, func(srv *lab.Server) { srv.Upper, srv.Lower = upper, lower })
	}
}

// removeServer removes node's real server from every service.
func removeServer(node string) edit {
	return func(s *scenario.Scenario) {
		svcs := services(s)
		for i := range svcs {
			svcs[i].Servers = slices.DeleteFunc(svcs[i].Servers, func(srv lab.Server) bool {
				return s.Spec.OwnerOf(srv.Addr.Addr()) == node
			})
		}
	}
}

// routes sets a node's routes (none when none are given).
func routes(name string, r ...lab.Route) edit {
	return func(s *scenario.Scenario) { nodeSpec(s, name).Routes = r }
}

// timeouts sets the director's IPVS timeouts (ipvsadm --set).
func timeouts(t lab.Timeouts) edit {
	return func(s *scenario.Scenario) {
		d := nodeSpec(s, s.Director())
		d.Timeouts = &t
	}
}

// sysctl sets every sysctl whose last part is key and whose value is from to to,
// on every node; at least one must match.
func sysctl(key, from, to string) edit {
	return func(s *scenario.Scenario) {
		n := 0
		for i := range s.Spec.Nodes {
			for j, sc := range s.Spec.Nodes[i].Sysctls {
				if strings.HasSuffix(sc.Key, "."+key) && sc.Value == from {
					s.Spec.Nodes[i].Sysctls[j].Value = to
					n++
				}
			}
		}
		Expect(n).To(BeNumerically(">", 0), "no sysctl %s=%s in the scenario", key, from)
	}
}
