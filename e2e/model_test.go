package e2e

import (
	"net/netip"

	. "github.com/onsi/gomega"

	"github.com/lvslab/lvslab/pkg/scenario"
	"github.com/lvslab/lvslab/pkg/state"
	"github.com/lvslab/lvslab/pkg/verify"
)

// modelOf builds the scheduler model of the scenario's first service the way
// lvslab built the kernel's: real servers added in the scenario's order.
func modelOf(s *scenario.Scenario) *verify.Sim {
	d, _ := s.Spec.Node(s.Director())
	svc := d.Services[0]
	k, err := verify.RunningKernel()
	Expect(err).NotTo(HaveOccurred())
	sim, err := verify.NewSim(k, svc.Scheduler, svc.SchedFlags...)
	Expect(err).NotTo(HaveOccurred())
	for _, srv := range svc.Servers {
		sim.AddServerThresholds(s.Spec.OwnerOf(srv.Addr.Addr()), srv.Addr, srv.Weight, int(srv.Upper), int(srv.Lower))
	}
	return sim
}

// kernelOrder names the first service's real servers in the kernel's list order,
// read back over netlink.
func kernelOrder(s *scenario.Scenario, l *state.Lab) []string {
	var order []string
	for _, d := range readIPVS(l).Services[0].Destinations {
		order = append(order, s.Spec.OwnerOf(netip.MustParseAddr(d.Address.String())))
	}
	return order
}
