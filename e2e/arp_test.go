package e2e

import (
	"context"
	"net/netip"
	"os"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/lvslab/lvslab/pkg/state"
	"github.com/lvslab/lvslab/pkg/verify"
)

// macs names the node owning each MAC among the lab's eth1 interfaces.
func macs(l *state.Lab) map[string]string {
	out := map[string]string{}
	for name, n := range l.Handles() {
		if name == "lan" {
			continue
		}
		mac, err := verify.MAC(n, "eth1")
		Expect(err).NotTo(HaveOccurred())
		out[mac.String()] = name
	}
	return out
}

// dip is the director's own address on the DR segment, which it always answers
// ARP for.
var dip = netip.MustParseAddr("203.0.113.2")

// arpWindow is how long a probe in l listens: verify.ARPWindow, or longer if the
// lab answers ARP more slowly now than that window's margin allows, as measured
// against the director's own address.
func arpWindow(ctx context.Context, l *state.Lab) time.Duration {
	rtt, err := verify.ARPRoundTrip(ctx, l.Handles()["client"], "eth1", dip, verify.ARPWindow)
	Expect(err).NotTo(HaveOccurred(), "the director answers ARP for its own address")
	GinkgoWriter.Printf("ARP round trip client -> director: %s\n", rtt)
	return max(verify.ARPWindow, verify.ARPMargin*rtt)
}

// answerers probes who-has addr from the client and names who answered. Who
// did not answer counts only because the probe listened for its whole window
// and every reply came within a margin's share of it: both are asserted.
func answerers(ctx context.Context, l *state.Lab, addr string) []string {
	window := arpWindow(ctx, l)
	start := time.Now()
	probe, err := verify.ProbeARP(ctx, l.Handles()["client"], "eth1", netip.MustParseAddr(addr), window)
	elapsed := time.Since(start)
	Expect(err).NotTo(HaveOccurred())
	GinkgoWriter.Printf("who-has %s: %v, listened %s of %s\n", addr, probe.Replies, probe.Listened, probe.Window)
	Expect(probe.Window).To(Equal(window))
	Expect(probe.Listened).To(BeNumerically(">=", window), "the probe stopped listening before its window ended: a missing answer proves nothing")
	Expect(probe.Listened).To(BeNumerically("<=", elapsed), "the probe claims to have listened longer than it ran")
	Expect(probe.Slowest()*verify.ARPMargin).To(BeNumerically("<=", window),
		"replies %v: the window is not %d times the slowest, so another reply may have been on its way", probe.Replies, verify.ARPMargin)
	byMAC := macs(l)
	var who []string
	for _, r := range probe.Replies {
		who = append(who, byMAC[r.SenderMAC.String()])
	}
	return who
}

// setSysctl writes a sysctl in one node, as an engineer chasing ARP flux would.
func setSysctl(l *state.Lab, nodeName, path, value string) {
	Expect(l.Handles()[nodeName].Do(func() error {
		return os.WriteFile("/proc/sys/"+path, []byte(value), 0o644)
	})).To(Succeed())
}

// The DR segment (topologies/lvs-dr.clab.yml): client, director (DIP .2, VIP .1)
// and web1 (.11), web2 (.12) share one switch; the real servers hold the VIP on lo.
//
//	client .10 ─┐
//	director ───┼── [lan] 203.0.113.0/24
//	web1 .11 ───┤
//	web2 .12 ───┘
var _ = Describe("ARP on the DR segment", Label("dr", "arp"), func() {
	var running *state.Lab
	dumpOnFailure(&running)

	DescribeTable("who answers the client's who-has for the VIP",
		func(ctx context.Context, file string, ignore string, want []string) {
			if ignore != "" {
				file = variant(file, sysctl("arp_ignore", "1", ignore))
			}
			_, l := up(file, "arp")
			running = l
			Expect(answerers(ctx, l, "203.0.113.1")).To(ConsistOf(want))
		},
		Entry("arp_ignore=0 (dr-arp-flux): the director and every real server (ARP flux)", "scenarios/dr-arp-flux.yaml", "", []string{"director", "web1", "web2"}),
		Entry("arp_ignore=1 (dr-rr): only the director", "scenarios/dr-rr.yaml", "", []string{"director"}),
		Entry("arp_ignore=2: only the director", "scenarios/dr-rr.yaml", "2", []string{"director"}),
	)

	It("with arp_ignore=8 a real server does not answer even for its own address", func(ctx context.Context) {
		_, l := up("scenarios/dr-rr.yaml", "arp8")
		running = l
		Expect(answerers(ctx, l, "203.0.113.11")).To(Equal([]string{"web1"}), "arp_ignore=1 answers for eth1's own address")
		setSysctl(l, "web1", "net/ipv4/conf/eth1/arp_ignore", "8")
		Expect(answerers(ctx, l, "203.0.113.11")).To(BeEmpty())
		Expect(answerers(ctx, l, "203.0.113.12")).To(Equal([]string{"web2"}))
	})

	// The real server's reply to the client leaves with source address VIP; to
	// find the client's MAC it asks "who-has client tell ?". The lab's eth1/eth2
	// explanation: arp_announce=0 may use any local address (the VIP, from lo), 2
	// uses the outgoing interface's own address.
	DescribeTable("the sender address of a real server's own ARP requests",
		func(ctx context.Context, announce string, sender string, poisoned bool) {
			_, l := up(variant("scenarios/dr-rr.yaml", sysctl("arp_announce", "2", announce)), "announce")
			running = l
			nodes := l.Handles()
			capture, err := verify.OpenARP(nodes["client"], "eth1")
			Expect(err).NotTo(HaveOccurred())
			defer capture.Close()

			got := verify.HTTPClient{From: nodes["client"]}.Get(ctx, "http://203.0.113.1/", 1)
			Expect(got.Errors).To(BeEmpty())
			server := got.Sequence[0]
			serverMAC, err := verify.MAC(nodes[server], "eth1")
			Expect(err).NotTo(HaveOccurred())

			reqs, err := capture.Collect(ctx, verify.ARPWindow, func(a verify.ARP) bool {
				return a.Op == 1 && a.SenderMAC.String() == serverMAC.String() && a.TargetIP == client
			})
			Expect(err).NotTo(HaveOccurred())
			Expect(reqs).NotTo(BeEmpty(), "%s asked nothing for the client", server)
			Expect(reqs[0].SenderIP.String()).To(Equal(map[string]string{"vip": "203.0.113.1", "own": map[string]string{"web1": "203.0.113.11", "web2": "203.0.113.12"}[server]}[sender]))

			// The request updated the client's neighbour entry for its sender address.
			neigh, err := verify.Neighbours(nodes["client"])
			Expect(err).NotTo(HaveOccurred())
			directorMAC, _ := verify.MAC(nodes["director"], "eth1")
			if poisoned {
				Expect(neigh[vip]).To(Equal(serverMAC.String()), "the client's ARP entry for the VIP now names %s", server)
			} else {
				Expect(neigh[vip]).To(Equal(directorMAC.String()), "the client still reaches the VIP through the director")
			}
		},
		Entry("arp_announce=0: tell VIP (and the client's cache now maps the VIP to the real server)", "0", "vip", true),
		Entry("arp_announce=2: tell its own address", "2", "own", false),
	)
})
