package e2e

import (
	"context"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/lvslab/lvslab/pkg/scenario"
	"github.com/lvslab/lvslab/pkg/state"
	"github.com/lvslab/lvslab/pkg/verify"
)

// connectionsTo reads the connections one real server holds (active and inactive:
// closed ones stay 2 minutes in TIME_WAIT). These counts are live; the kernel's
// total counter is folded in only every 2 s (ip_vs_est.c) and would lag.
func connectionsTo(s *scenario.Scenario, l *state.Lab, name string) int {
	for _, d := range readIPVS(l).Services[0].Destinations {
		if d.Address.String() == serverAddr(s, name).Addr().String() {
			return d.ActiveConnections + d.InactiveConnections
		}
	}
	Fail("no real server " + name)
	return 0
}

var _ = Describe("Faults", Label("nat", "faults"), func() {
	var running *state.Lab
	dumpOnFailure(&running)

	It("a real server whose web service stops: its requests fail, the others keep answering", func(ctx context.Context) {
		s, l := up("scenarios/nat-rr.yaml", "stop")
		running = l
		sim := modelOf(s)
		c := verify.HTTPClient{From: l.Handles()["client"]}
		want := sim.Sequence(verify.Request{}, 4, false)
		Expect(c.Get(ctx, "http://203.0.113.1/", 4).Sequence).To(Equal(want))

		var webd state.Process
		for _, p := range l.Processes {
			if p.Role == "webd-web1" {
				webd = p
			}
		}
		Expect(webd.Pid).NotTo(BeZero(), "web1's web server is recorded")
		Expect(webd.Kill()).To(Succeed())
		Eventually(webd.Alive).Should(BeFalse())

		// IPVS does no health checks: rr goes on sending web1 its share.
		want = sim.Sequence(verify.Request{}, 6, false)
		got := c.Get(ctx, "http://203.0.113.1/", 6)
		for i, w := range want {
			if w == "web1" {
				Expect(got.Sequence[i]).To(BeEmpty(), "request %d went to the stopped web1 and must fail", i+1)
			} else {
				Expect(got.Sequence[i]).To(Equal(w), "request %d", i+1)
			}
		}
		Expect(got.Errors).To(HaveLen(3))
		Expect(got.Counts).To(Equal(map[string]int{"web2": 3}))
	})

	It("a real server set to weight 0 mid-run gets no new connection", func(ctx context.Context) {
		s, l := up("scenarios/nat-rr.yaml", "quiesce-rr")
		running = l
		sim := modelOf(s)
		c := verify.HTTPClient{From: l.Handles()["client"]}
		want := sim.Sequence(verify.Request{}, 4, false)
		Expect(c.Get(ctx, "http://203.0.113.1/", 4).Sequence).To(Equal(want))
		before := connectionsTo(s, l, "web1")
		Expect(before).To(Equal(2), "web1 served 2 of the first 4")

		edited := variant("scenarios/nat-rr.yaml", weight("web1", 0))
		_, stderr, code := lv("apply", "--name", "quiesce-rr", edited)
		Expect(code).To(Equal(0), stderr)
		sim.SetWeight("web1", 0)

		want = sim.Sequence(verify.Request{}, 6, false)
		Expect(want).To(HaveEach("web2"))
		got := c.Get(ctx, "http://203.0.113.1/", 6)
		Expect(got.Errors).To(BeEmpty())
		Expect(got.Sequence).To(Equal(want), divergence(want, got.Sequence))
		Expect(connectionsTo(s, l, "web1")).To(Equal(before), "no new connection reached web1")
	})
})
