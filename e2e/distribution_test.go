package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/scenario"
	"github.com/lvslab/lvslab/pkg/state"
	"github.com/lvslab/lvslab/pkg/verify"
)

var (
	vip    = netip.MustParseAddr("203.0.113.1")
	client = netip.MustParseAddr("203.0.113.10")
)

// divergence describes where an observed sequence first leaves the predicted one.
func divergence(want, got []string) string {
	i := verify.FirstDivergence(want, got)
	if i < 0 {
		return ""
	}
	at := func(s []string) string {
		if i < len(s) {
			return s[i]
		}
		return ""
	}
	return fmt.Sprintf("first divergence at request %d: expected %q, observed %q\npredicted %v\nobserved  %v", i+1, at(want), at(got), want, got)
}

// upModel brings up a scenario (or its variant, with edits) and returns the
// model of its first service, checked to list the real servers as the kernel does.
func upModel(file, name string, edits ...edit) (*scenario.Scenario, *state.Lab, *verify.Sim) {
	if len(edits) > 0 {
		file = variant(file, edits...)
	}
	s, l := up(file, name)
	sim := modelOf(s)
	Expect(sim.Order()).To(Equal(kernelOrder(s, l)), "the model's list order is the kernel's")
	return s, l, sim
}

// heldSequence opens n connections to the VIP, keeps them open, and names the
// server each went to, read from the director's connection table.
func heldSequence(ctx context.Context, s *scenario.Scenario, l *state.Lab, n int, ports ...*verify.SourcePorts) []string {
	nodes := l.Handles()
	locals, closeAll, err := verify.Hold(ctx, nodes["client"], netip.AddrPortFrom(vip, 80), n, ports...)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(closeAll)
	conns, err := verify.ReadConns(nodes[l.Director])
	Expect(err).NotTo(HaveOccurred())
	byClient := map[netip.AddrPort]verify.Conn{}
	for _, c := range conns {
		byClient[c.Client] = c
	}
	got := make([]string, n)
	for i, local := range locals {
		c, ok := byClient[local]
		Expect(ok).To(BeTrue(), "connection from %s is not in the director's table", local)
		Expect(c.State).To(Equal("ESTABLISHED"))
		got[i] = s.Spec.OwnerOf(c.Dest.Addr())
	}
	return got
}

var _ = Describe("Scheduling follows the kernel's algorithm exactly", Label("distribution"), func() {
	var running *state.Lab
	dumpOnFailure(&running)

	// NAT with three servers (topologies/lvs-nat3.clab.yml); weights 3:2:1 where they matter.
	DescribeTable("for sequential connections, each closed before the next",
		func(ctx context.Context, file string, n int, edits ...edit) {
			_, l, sim := upModel(file, "seq", edits...)
			running = l
			want := sim.Sequence(verify.Request{Src: client, Dst: vip}, n, false)

			got := verify.HTTPClient{From: l.Handles()["client"]}.Get(ctx, "http://203.0.113.1/", n)
			Expect(got.Errors).To(BeEmpty())
			Expect(got.Sequence).To(Equal(want), divergence(want, got.Sequence))
		},
		Entry("rr", Label("nat"), "scenarios/nat-rr.yaml", 10),
		Entry("wrr 3:2:1", Label("nat"), "scenarios/nat-wrr.yaml", 18),
		Entry("lc", Label("nat"), "scenarios/nat-lc.yaml", 12),
		Entry("wlc 3:2:1", Label("nat"), "scenarios/nat-wlc.yaml", 12),
		Entry("sed 3:2:1", Label("nat"), "scenarios/nat-sed.yaml", 12),
		Entry("nq 3:2:1", Label("nat"), "scenarios/nat-nq.yaml", 12),
		Entry("dh", Label("nat"), "scenarios/nat-dh.yaml", 12),
		Entry("rr with a quiesced server (weight 0)", Label("nat"), "scenarios/nat-lc.yaml", 6,
			scheduler(lab.RR), weight("web2", 0)),
		Entry("wrr 4:2", Label("nat"), "scenarios/nat-rr.yaml", 9,
			scheduler(lab.WRR), weight("web1", 4), weight("web2", 2)),
		Entry("fo", Label("nat"), "scenarios/nat-lc.yaml", 4,
			scheduler(lab.FO), weight("web2", 3), weight("web3", 3)),
	)

	DescribeTable("for connections held open",
		func(ctx context.Context, file string, n int, edits ...edit) {
			s, l, sim := upModel(file, "held", edits...)
			running = l
			want := sim.Sequence(verify.Request{Src: client, Dst: vip}, n, true)
			got := heldSequence(ctx, s, l, n)
			Expect(got).To(Equal(want), divergence(want, got))
		},
		Entry("rr", Label("nat"), "scenarios/nat-rr.yaml", 6),
		Entry("wrr 3:2:1", Label("nat"), "scenarios/nat-wrr.yaml", 12),
		Entry("lc", Label("nat"), "scenarios/nat-lc.yaml", 9),
		Entry("wlc 3:2:1", Label("nat"), "scenarios/nat-wlc.yaml", 12),
		Entry("sed 3:2:1", Label("nat"), "scenarios/nat-sed.yaml", 12),
		Entry("nq 3:2:1", Label("nat"), "scenarios/nat-nq.yaml", 12),
		Entry("ovf 1:2 (each takes weight+1)", Label("nat"), "scenarios/nat-rr.yaml", 5,
			scheduler(lab.OVF), weight("web2", 2)),
	)

	// lc's and wlc's connection overhead changed between releases: activeconns*256
	// + inactconns up to 6.1.182, + totalconns from 6.1.183 (include/net/ip_vs.h,
	// ip_vs_dest_conn_overhead). The two part only once the idle server's closed
	// connections reach 256 against one held on the other. The running release's
	// model must match the kernel exactly, and the other formula must not (so
	// that this spec tells them apart).
	DescribeTable("follow the running release's connection overhead: one held connection, then 300 closed",
		func(ctx context.Context, sched lab.Scheduler) {
			s, l, sim := upModel("scenarios/nat-rr.yaml", "overhead", scheduler(sched))
			running = l
			k, err := verify.RunningKernel()
			Expect(err).NotTo(HaveOccurred())
			total, known := k.TotalConnsOverhead()
			Expect(known).To(BeTrue(), "kernel %s", k)
			otherRelease := map[bool]string{false: "6.1.192", true: "6.1.176"}[total]
			other, err := verify.ParseKernel(otherRelease)
			Expect(err).NotTo(HaveOccurred())
			otherSim, err := verify.NewSim(other, sched)
			Expect(err).NotTo(HaveOccurred())
			for _, name := range slices.Backward(sim.Order()) {
				otherSim.AddDest(name, 1)
			}
			req := verify.Request{Src: client, Dst: vip}

			// Every connection from a port of its own: a reused port would make IPVS
			// drop the earlier entry (conn_reuse_mode) and lose its count.
			ports := verify.NewSourcePorts(40000)
			want := sim.Connect(req, true)
			otherSim.Connect(req, true)
			Expect(heldSequence(ctx, s, l, 1, ports)).To(Equal([]string{want}))

			wantSeq := sim.Sequence(req, 300, false)
			got := verify.HTTPClient{From: l.Handles()["client"], Ports: ports}.Get(ctx, "http://203.0.113.1/", 300)
			Expect(got.Errors).To(BeEmpty())
			Expect(got.Sequence).To(Equal(wantSeq), divergence(wantSeq, got.Sequence))
			Expect(connectionsTo(s, l, "web1")+connectionsTo(s, l, "web2")).To(Equal(301), "the director lost no connection")
			Expect(otherSim.Sequence(req, 300, false)).NotTo(Equal(wantSeq), "kernel %s's formula gives the same sequence", other)
		},
		Entry("lc", Label("nat"), lab.LC),
		Entry("wlc", Label("nat"), lab.WLC),
	)

	It("follows a wrr weight changed mid-run (ipvsadm -e), as the kernel resets its mark", func(ctx context.Context) {
		s, l := up("scenarios/nat-wrr.yaml", "midrun")
		running = l
		sim := modelOf(s)
		c := verify.HTTPClient{From: l.Handles()["client"]}
		want := sim.Sequence(verify.Request{}, 6, false)
		got := c.Get(ctx, "http://203.0.113.1/", 6)
		Expect(got.Sequence).To(Equal(want), divergence(want, got.Sequence))

		edited := variant("scenarios/nat-wrr.yaml", weight("web3", 3))
		_, stderr, code := lv("apply", "--name", "midrun", edited)
		Expect(code).To(Equal(0), stderr)
		Expect(stderr).To(ContainSubstring("(1 changes)"))
		sim.SetWeight("web3", 3)
		want = sim.Sequence(verify.Request{}, 8, false)
		got = c.Get(ctx, "http://203.0.113.1/", 8)
		Expect(got.Sequence).To(Equal(want), divergence(want, got.Sequence))
	})

	It("maps each client address to the server sh's table gives (50 source addresses)", func(ctx context.Context) {
		s, l := up("scenarios/nat-sh.yaml", "sh")
		running = l
		sim := modelOf(s)
		Expect(sim.Order()).To(Equal(kernelOrder(s, l)))
		nodes := l.Handles()
		srcs, remove, err := verify.AddSources(nodes["client"], "eth1", netip.MustParsePrefix("203.0.113.100/24"), 50)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(remove)
		seen := map[string]int{}
		for _, src := range srcs {
			want := sim.Connect(verify.Request{Src: src, Dst: vip}, false)
			got := verify.HTTPClient{From: nodes["client"], Source: src}.Get(ctx, "http://203.0.113.1/", 3)
			Expect(got.Errors).To(BeEmpty())
			Expect(got.Sequence).To(Equal([]string{want, want, want}), "client %s", src)
			seen[want]++
		}
		Expect(seen).To(HaveLen(3), "50 addresses spread over all three servers")
	})

	It("maps each client address and port with sh-port", func(ctx context.Context) {
		s, l := up(variant("scenarios/nat-sh.yaml", scheduler(lab.SH, lab.SHPort)), "shport")
		running = l
		sim := modelOf(s)
		// One client address, many source ports: connections held open, each
		// looked up in the director's table by its port.
		nodes := l.Handles()
		locals, closeAll, err := verify.Hold(ctx, nodes["client"], netip.AddrPortFrom(vip, 80), 30)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(closeAll)
		conns, err := verify.ReadConns(nodes[l.Director])
		Expect(err).NotTo(HaveOccurred())
		dest := map[netip.AddrPort]string{}
		for _, c := range conns {
			dest[c.Client] = s.Spec.OwnerOf(c.Dest.Addr())
		}
		seen := map[string]bool{}
		for _, local := range locals {
			want := sim.Connect(verify.Request{Src: local.Addr(), SrcPort: local.Port(), Dst: vip}, true)
			Expect(dest[local]).To(Equal(want), "client %s", local)
			seen[want] = true
		}
		Expect(seen).To(HaveLen(3), "one address spreads over all servers by port")
	})
})
