package e2e

import (
	"context"
	"net/netip"
	"slices"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/scenario"
	"github.com/lvslab/lvslab/pkg/state"
	"github.com/lvslab/lvslab/pkg/verify"
)

// bySource requests the VIP from each source address in turn (requests each,
// each connection closed before the next) and checks that every one is
// answered by the server the model gives that source; it returns the servers,
// by source. A "" from the model means the kernel must refuse the connection.
func bySource(ctx context.Context, l *state.Lab, sim *verify.Sim, srcs []netip.Addr, requests int) map[netip.Addr]string {
	got := map[netip.Addr]string{}
	for _, src := range srcs {
		want := make([]string, requests)
		for i := range want {
			want[i] = sim.Connect(verify.Request{Src: src, Dst: vip}, false)
		}
		c := verify.HTTPClient{From: l.Handles()["client"], Source: src, Timeout: 3 * time.Second}
		res := c.Get(ctx, "http://203.0.113.1/", requests)
		Expect(res.Sequence).To(Equal(want), "client %s (errors %v)", src, res.Errors)
		refused := 0
		for _, w := range want {
			if w == "" {
				refused++
			}
		}
		Expect(res.Errors).To(HaveLen(refused), "client %s: only the connections the model refuses fail", src)
		got[src] = want[0]
	}
	return got
}

// servedBy counts the sources each server took.
func servedBy(m map[netip.Addr]string) map[string]int {
	n := map[string]int{}
	for _, who := range m {
		n[who]++
	}
	return n
}

// The three-server NAT lab (topologies/lvs-nat3.clab.yml; scenarios/nat-lc.yaml
// weighs the servers 1:1:1, nat-wrr.yaml 3:2:1), with extra client addresses:
//
//	client ──eth1── director ──eth2── [lan] ──┬── web1 198.51.100.11
//	203.0.113.10    203.0.113.1 (VIP)          ├── web2 198.51.100.12
//	203.0.113.100.. 198.51.100.1               └── web3 198.51.100.13
//
// mh (Maglev hashing) places each client by a table the kernel builds from the
// real servers' addresses with hsiphash under fixed keys, so which server
// takes which client is computed exactly, not just that every client sticks.
// lblc and lblcr cache a server per destination address (here the VIP) and move
// on only when the cached one is overloaded in their sense (more active
// connections than its weight while another has fewer than half its own).
var _ = Describe("Hashing and locality schedulers follow the kernel's algorithm exactly", Label("hashing"), func() {
	var running *state.Lab
	dumpOnFailure(&running)

	DescribeTable("mh maps each client address to the server its table gives (60 source addresses)",
		func(ctx context.Context, file string) {
			_, l, sim := upModel(file, "mh", scheduler(lab.MH))
			running = l
			got := bySource(ctx, l, sim, sources(l, "203.0.113.100/24", 60), 2)
			Expect(servedBy(got)).To(HaveLen(3), "60 addresses spread over all three servers")
		},
		Entry("mh 1:1:1", Label("mh", "nat"), "scenarios/nat-lc.yaml"),
		Entry("mh 3:2:1", Label("mh", "nat"), "scenarios/nat-wrr.yaml"),
	)

	It("maps each client address and port with mh-port", Label("mh", "nat"), func(ctx context.Context) {
		s, l, sim := upModel("scenarios/nat-lc.yaml", "mhport", scheduler(lab.MH, lab.MHPort))
		running = l
		// One client address, many source ports (40000 on, so that the sequence
		// is the same every run): connections held open, each looked up in the
		// director's table by its port.
		nodes := l.Handles()
		locals, closeAll, err := verify.Hold(ctx, nodes["client"], netip.AddrPortFrom(vip, 80), 30, verify.NewSourcePorts(40000))
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(closeAll)
		conns, err := verify.ReadConns(nodes[l.Director])
		Expect(err).NotTo(HaveOccurred())
		dest := map[netip.AddrPort]string{}
		for _, c := range conns {
			dest[c.Client] = s.Spec.OwnerOf(c.Dest.Addr())
		}
		seen := map[string]bool{}
		for i, local := range locals {
			Expect(local).To(Equal(netip.AddrPortFrom(client, uint16(40000+i))), "connection %d's source", i+1)
			want := sim.Connect(verify.Request{Src: local.Addr(), SrcPort: local.Port(), Dst: vip}, true)
			Expect(dest[local]).To(Equal(want), "client %s", local)
			seen[want] = true
		}
		Expect(seen).To(HaveLen(3), "one address spreads over all servers by port")
	})

	// lvslab verify builds its mh model from the real servers' addresses read
	// back from the kernel (Sim.AddServer), as the specs here do.
	It("lvslab verify predicts mh per source address", Label("mh", "nat", "verify"), func() {
		file := variant("scenarios/nat-lc.yaml", scheduler(lab.MH), func(s *scenario.Scenario) {
			s.Checks = []lab.Check{{
				Name: "each source goes where mh's table says", From: "client", Dev: "eth1",
				HTTP: "http://203.0.113.1/", Requests: 2, Sources: 20,
				Expect: lab.Expect{Model: true, Sticky: true},
			}}
		})
		results, stderr, code := verifyJSON(file)
		Expect(code).To(Equal(0), stderr)
		Expect(results).To(HaveLen(1))
		Expect(results[0].Passed).To(BeTrue(), results[0].Message)
		Expect(results[0].Skipped).To(BeFalse())
		Expect(results[0].Observed).To(HaveLen(40))
		Expect(results[0].Predicted).To(Equal(results[0].Observed))
		Expect(slices.Compact(slices.Sorted(slices.Values(results[0].Observed)))).To(HaveLen(3), "20 sources spread over all three servers")
	})

	// Quiescing a server (weight 0, ipvsadm -e) keeps its slots in mh's table:
	// the kernel rebuilds the table from each server's last weight that was not
	// 0. Its clients then find it unavailable: with mh-fallback they walk on
	// through rehashed slots to a server the model names; without, they are
	// refused. Every other client keeps its server.
	DescribeTable("mh after a server is quiesced mid-run (60 source addresses)",
		func(ctx context.Context, flags ...lab.SchedFlag) {
			_, l, sim := upModel("scenarios/nat-lc.yaml", "mhquiesce", scheduler(lab.MH, flags...))
			running = l
			srcs := sources(l, "203.0.113.100/24", 60)
			before := bySource(ctx, l, sim, srcs, 1)

			edited := variant("scenarios/nat-lc.yaml", scheduler(lab.MH, flags...), weight("web2", 0))
			_, stderr, code := lv("apply", "--name", "mhquiesce", edited)
			Expect(code).To(Equal(0), stderr)
			Expect(stderr).To(ContainSubstring("(1 changes)"))
			sim.SetWeight("web2", 0)

			after := bySource(ctx, l, sim, srcs, 1)
			moved := 0
			for _, src := range srcs {
				if before[src] != "web2" {
					Expect(after[src]).To(Equal(before[src]), "client %s kept its server", src)
					continue
				}
				moved++
				if slices.Contains(flags, lab.MHFallback) {
					Expect(after[src]).To(BeElementOf("web1", "web3"), "client %s fell back", src)
				} else {
					Expect(after[src]).To(BeEmpty(), "client %s has no server without mh-fallback", src)
				}
			}
			Expect(moved).To(BeNumerically(">", 0), "some of the 60 addresses were web2's")
		},
		Entry("with mh-fallback: its clients go where the fallback walk leads", Label("mh", "nat"), lab.MHFallback),
		Entry("without mh-fallback: its clients are refused", Label("mh", "nat")),
	)

	DescribeTable("lblc and lblcr for connections held open, until the cached server is overloaded and the pick moves",
		func(ctx context.Context, file string, n int, sched lab.Scheduler) {
			s, l, sim := upModel(file, "locality", scheduler(sched))
			running = l
			want := sim.Sequence(verify.Request{Src: client, Dst: vip}, n, true)
			Expect(len(slices.Compact(slices.Clone(want)))).To(BeNumerically(">=", 3), "the model moves the pick at least twice: %v", want)
			got := heldSequence(ctx, s, l, n)
			Expect(got).To(Equal(want), divergence(want, got))
		},
		Entry("lblc 1:1:1", Label("lblc", "nat"), "scenarios/nat-lc.yaml", 9, lab.LBLC),
		Entry("lblc 3:2:1", Label("lblc", "nat"), "scenarios/nat-wrr.yaml", 12, lab.LBLC),
		Entry("lblcr 1:1:1 (the set grows to all three)", Label("lblcr", "nat"), "scenarios/nat-lc.yaml", 12, lab.LBLCR),
		Entry("lblcr 3:2:1", Label("lblcr", "nat"), "scenarios/nat-wrr.yaml", 14, lab.LBLCR),
	)

	// Closed connections are never active, so is_overloaded never fires: the
	// destination keeps the server it was first given.
	DescribeTable("lblc and lblcr for sequential connections, each closed before the next",
		func(ctx context.Context, sched lab.Scheduler) {
			_, l, sim := upModel("scenarios/nat-wrr.yaml", "locality-seq", scheduler(sched))
			running = l
			want := sim.Sequence(verify.Request{Src: client, Dst: vip}, 12, false)
			Expect(slices.Compact(slices.Clone(want))).To(HaveLen(1), "the model keeps one server: %v", want)
			got := verify.HTTPClient{From: l.Handles()["client"]}.Get(ctx, "http://203.0.113.1/", 12)
			Expect(got.Errors).To(BeEmpty())
			Expect(got.Sequence).To(Equal(want), divergence(want, got.Sequence))
		},
		Entry("lblc", Label("lblc", "nat"), lab.LBLC),
		Entry("lblcr", Label("lblcr", "nat"), lab.LBLCR),
	)
})
