package e2e

import (
	"context"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/state"
	"github.com/lvslab/lvslab/pkg/verify"
)

// Thresholds (-x, -y), edits and deletions on the three-server NAT lab
// (scenarios/nat-lc.yaml: web1, web2, web3 added in that order, listed
// web3, web2, web1 by the kernel). The sequences are the models'
// (pkg/verify/model_test.go lists the same cases).
var _ = Describe("Thresholds, edits and deletions follow the kernel", Label("nat", "thresholds"), func() {
	var running *state.Lab
	dumpOnFailure(&running)

	DescribeTable("a server over its upper threshold is passed by (the overload flag)",
		func(ctx context.Context, sched lab.Scheduler, w1, w2, w3 int, upper, lower uint32, n int, hold bool) {
			s, l, sim := upModel("scenarios/nat-lc.yaml", "thresh", scheduler(sched),
				weight("web1", w1), weight("web2", w2), weight("web3", w3), thresholds("web1", upper, lower))
			running = l
			want := sim.Sequence(verify.Request{Src: client, Dst: vip}, n, hold)
			Expect(want).To(ContainElement("web1"))
			Expect(want[len(want)-3:]).NotTo(ContainElement("web1"), "the spec must reach the threshold")
			var got []string
			if hold {
				got = heldSequence(ctx, s, l, n)
			} else {
				res := verify.HTTPClient{From: l.Handles()["client"], Ports: verify.NewSourcePorts(41000)}.Get(ctx, "http://203.0.113.1/", n)
				Expect(res.Errors).To(BeEmpty())
				got = res.Sequence
			}
			Expect(got).To(Equal(want), divergence(want, got))
			Expect(connectionsTo(s, l, "web1")).To(BeNumerically("==", upper), "web1 stopped at its upper threshold")
		},
		Entry("rr, closed connections", lab.RR, 1, 1, 1, uint32(3), uint32(0), 12, false),
		Entry("rr, held connections", lab.RR, 1, 1, 1, uint32(3), uint32(0), 12, true),
		Entry("wlc 3:2:1, closed connections", lab.WLC, 3, 2, 1, uint32(2), uint32(1), 12, false),
		Entry("wlc 3:2:1, held connections", lab.WLC, 3, 2, 1, uint32(2), uint32(1), 12, true),
	)

	// 6.1.176 leaves the flag alone when -x is lowered under the count, and sets
	// it at the server's next connection; 6.1.183 on sets it at the edit.
	It("a lowered upper threshold takes effect as the running release says", func(ctx context.Context) {
		s, l, sim := upModel("scenarios/nat-lc.yaml", "lowered", scheduler(lab.RR))
		running = l
		c := verify.HTTPClient{From: l.Handles()["client"], Ports: verify.NewSourcePorts(42000)}
		want := sim.Sequence(verify.Request{}, 6, false)
		got := c.Get(ctx, "http://203.0.113.1/", 6)
		Expect(got.Sequence).To(Equal(want), divergence(want, got.Sequence))

		_, stderr, code := lv("apply", "--name", "lowered", variant("scenarios/nat-lc.yaml", scheduler(lab.RR), thresholds("web1", 1, 0)))
		Expect(code).To(Equal(0), stderr)
		Expect(stderr).To(ContainSubstring("(1 changes)"))
		sim.Edit("web1", 1, 1, 0)
		want = sim.Sequence(verify.Request{}, 9, false)
		got = c.Get(ctx, "http://203.0.113.1/", 9)
		Expect(got.Errors).To(BeEmpty())
		Expect(got.Sequence).To(Equal(want), divergence(want, got.Sequence))
		Expect(connectionsTo(s, l, "web1")).To(Equal(2 + count(want, "web1")))

		other := otherRelease()
		o, err := verify.NewSim(other, lab.RR)
		Expect(err).NotTo(HaveOccurred())
		for _, n := range []string{"web1", "web2", "web3"} {
			o.AddDest(n, 1)
		}
		o.Sequence(verify.Request{}, 6, false)
		o.Edit("web1", 1, 1, 0)
		Expect(o.Sequence(verify.Request{}, 9, false)).NotTo(Equal(want), "kernel %s's overload logic gives the same sequence", other)
	})

	DescribeTable("a real server deleted mid-run (ipvsadm -d) moves the scheduler on as the kernel does",
		func(ctx context.Context, sched lab.Scheduler, w1, w2, w3, before int, gone string) {
			file := variant("scenarios/nat-lc.yaml", scheduler(sched), weight("web1", w1), weight("web2", w2), weight("web3", w3))
			_, l, sim := upModel(file, "delete")
			running = l
			c := verify.HTTPClient{From: l.Handles()["client"], Ports: verify.NewSourcePorts(43000)}
			want := sim.Sequence(verify.Request{}, before, false)
			got := c.Get(ctx, "http://203.0.113.1/", before)
			Expect(got.Sequence).To(Equal(want), divergence(want, got.Sequence))

			_, stderr, code := lv("apply", "--name", "delete", variant("scenarios/nat-lc.yaml", scheduler(sched),
				weight("web1", w1), weight("web2", w2), weight("web3", w3), removeServer(gone)))
			Expect(code).To(Equal(0), stderr)
			Expect(stderr).To(ContainSubstring("delete real server"))
			sim.RemoveDest(gone)
			want = sim.Sequence(verify.Request{}, 9, false)
			got = c.Get(ctx, "http://203.0.113.1/", 9)
			Expect(got.Errors).To(BeEmpty())
			Expect(got.Sequence).To(Equal(want), divergence(want, got.Sequence))
		},
		Entry("rr, the last chosen deleted (the list head)", lab.RR, 1, 1, 1, 4, "web3"),
		Entry("rr, the last chosen deleted (mid-list)", lab.RR, 1, 1, 1, 5, "web2"),
		Entry("rr, another deleted", lab.RR, 1, 1, 1, 3, "web2"),
		Entry("wrr 3:2:1, the heaviest deleted", lab.WRR, 3, 2, 1, 5, "web1"),
		Entry("wrr 3:2:1, the lightest deleted", lab.WRR, 3, 2, 1, 7, "web3"),
	)

	It("wrr with a weight edited before any traffic (ip_vs_wrr_dest_changed keeps its current weight)", func(ctx context.Context) {
		file := variant("scenarios/nat-lc.yaml", scheduler(lab.WRR), weight("web1", 4), weight("web2", 2), weight("web3", 2))
		_, l, sim := upModel(file, "wrredit")
		running = l
		_, stderr, code := lv("apply", "--name", "wrredit", variant("scenarios/nat-lc.yaml", scheduler(lab.WRR),
			weight("web1", 4), weight("web2", 6), weight("web3", 2)))
		Expect(code).To(Equal(0), stderr)
		sim.SetWeight("web2", 6)
		want := sim.Sequence(verify.Request{}, 24, false)
		got := verify.HTTPClient{From: l.Handles()["client"]}.Get(ctx, "http://203.0.113.1/", 24)
		Expect(got.Errors).To(BeEmpty())
		Expect(got.Sequence).To(Equal(want), divergence(want, got.Sequence))
	})
})

// otherRelease is a 6.1 release on the other side of 6.1.183's change to the
// connection counters from the running kernel.
func otherRelease() verify.Kernel {
	k, err := verify.RunningKernel()
	Expect(err).NotTo(HaveOccurred())
	total, known := k.TotalConnsOverhead()
	Expect(known).To(BeTrue(), "kernel %s", k)
	other, err := verify.ParseKernel(map[bool]string{false: "6.1.192", true: "6.1.176"}[total])
	Expect(err).NotTo(HaveOccurred())
	return other
}

func count(s []string, x string) int {
	n := 0
	for _, y := range s {
		if y == x {
			n++
		}
	}
	return n
}
