package e2e

import (
	"context"
	"net/netip"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/state"
	"github.com/lvslab/lvslab/pkg/verify"
)

// Connection and template expiry, with the model's clock following the wall
// clock: each wait is the model's timer plus its slack (the kernel's timer
// wheel fires late, never early), and the model must say it is sure.
// pkg/verify/expiry_test.go pins the same cases.
var _ = Describe("Expiry follows the kernel's timers", Label("expiry", "slow"), func() {
	var running *state.Lab
	dumpOnFailure(&running)
	vipUDP := netip.MustParseAddrPort("203.0.113.1:5353")

	// send sends n datagrams at the model's clock and checks each server.
	send := func(ctx context.Context, sim *verify.Sim, start time.Time, c verify.UDPClient, n int) []string {
		got := c.Send(ctx, vipUDP, n)
		Expect(got.Errors).To(BeEmpty())
		var want []string
		for i := range n {
			sim.Advance(got.Started[i].Sub(start))
			want = append(want, sim.Schedule(verify.Request{Src: got.Locals[i].Addr(), SrcPort: got.Locals[i].Port(), Dst: vipUDP.Addr()}, false))
		}
		Expect(sim.Unsure).To(BeEmpty())
		Expect(got.Sequence).To(Equal(want), divergence(want, got.Sequence))
		return want
	}

	DescribeTable("a persistent UDP client's template",
		func(ctx context.Context, persist, udp, wait time.Duration, moves bool) {
			s, l := up(variant("scenarios/nat-udp.yaml", persistent(uint32(persist/time.Second)),
				timeouts(lab.Timeouts{UDP: int(udp / time.Second)})), "tmpl")
			running = l
			sim := modelOf(s)
			sim.Proto, sim.Timeouts.UDP = lab.UDP, udp
			sim.Persist = &verify.Persistence{Timeout: persist, Netmask: 32}
			c := verify.UDPClient{From: l.Handles()["client"], Ports: verify.NewSourcePorts(44000)}
			start := time.Now()
			first := send(ctx, sim, start, c, 2)
			time.Sleep(wait)
			again := send(ctx, sim, start, c, 2)
			Expect(again[0] != first[0]).To(Equal(moves))
		},
		// Timers of 2 s and more: a fresh lab's first datagrams can take most of
		// a second in the sandbox, and a datagram within a timer's slack makes
		// the model (rightly) unsure.
		// -p 4, udp 2 s: the connections go at 2 s, the template at 4 s.
		Entry("expires once its connections have (-p 4, udp 2 s)", 4*time.Second, 2*time.Second, 7*time.Second, true),
		// -p 2, udp 5 s: at 2 s the template still controls a connection: 60 s more.
		Entry("lives on while it controls a connection (-p 2, udp 5 s: the 60 s re-arm)", 2*time.Second, 5*time.Second, 7*time.Second, false),
	)

	It("held connections expire after --set tcp 2; lc counts them no more", Label("nat"), func(ctx context.Context) {
		s, l, sim := upModel("scenarios/nat-lc.yaml", "tcpexp", timeouts(lab.Timeouts{TCP: 2}))
		running = l
		sim.Timeouts.TCP = 2 * time.Second
		start := time.Now()
		sim.Advance(0)
		want := []string{sim.Schedule(verify.Request{}, true), sim.Schedule(verify.Request{}, true)}
		Expect(heldSequence(ctx, s, l, 2)).To(Equal(want))
		time.Sleep(3 * time.Second)
		c := verify.HTTPClient{From: l.Handles()["client"], Ports: verify.NewSourcePorts(45000)}
		got := c.Get(ctx, "http://203.0.113.1/", 6)
		Expect(got.Errors).To(BeEmpty())
		var wantSeq []string
		for i := range 6 {
			sim.Advance(got.Started[i].Sub(start))
			wantSeq = append(wantSeq, sim.Schedule(verify.Request{}, false))
		}
		Expect(sim.Unsure).To(BeEmpty())
		Expect(got.Sequence).To(Equal(wantSeq), divergence(wantSeq, got.Sequence))
		Expect(wantSeq[0]).To(Equal(want[0]), "with its held connection gone, the first server is least loaded again")
	})
})
