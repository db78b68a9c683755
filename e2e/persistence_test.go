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

// serverAddr returns the address of the first service's real server on node name.
func serverAddr(s *scenario.Scenario, name string) netip.AddrPort {
	d, _ := s.Spec.Node(s.Director())
	for _, srv := range d.Services[0].Servers {
		if s.Spec.OwnerOf(srv.Addr.Addr()) == name {
			return srv.Addr
		}
	}
	Fail("no real server on " + name)
	return netip.AddrPort{}
}

// templates maps each client address to the server its persistence template names.
func templates(s *scenario.Scenario, l *state.Lab) map[netip.Addr]string {
	conns, err := verify.ReadConns(l.Handles()[l.Director])
	Expect(err).NotTo(HaveOccurred())
	out := map[netip.Addr]string{}
	for _, c := range conns {
		if c.Template {
			out[c.Client.Addr()] = s.Spec.OwnerOf(c.Dest.Addr())
		}
	}
	return out
}

// kernelWeights reads the first service's real servers' weights from the
// kernel, by node.
func kernelWeights(s *scenario.Scenario, l *state.Lab) map[string]int {
	out := map[string]int{}
	for _, d := range readIPVS(l).Services[0].Destinations {
		out[s.Spec.OwnerOf(netip.MustParseAddr(d.Address.String()))] = d.Weight
	}
	return out
}

// expectAnsweredBy asserts that every request in got succeeded and that server,
// one of sim's real servers, answered each: a failed request or an empty answer
// is never taken for the expected one.
func expectAnsweredBy(got verify.Result, sim *verify.Sim, server string, what ...any) {
	GinkgoHelper()
	Expect(server).To(BeElementOf(sim.Order()), "the expected server is a real server of the service")
	Expect(got.Errors).To(BeEmpty(), what...)
	Expect(got.Sequence).NotTo(BeEmpty(), what...)
	Expect(got.Sequence).To(HaveEach(server), what...)
}

// sources adds count client addresses starting at first, removed when the spec ends.
func sources(l *state.Lab, first string, count int) []netip.Addr {
	srcs, remove, err := verify.AddSources(l.Handles()["client"], "eth1", netip.MustParsePrefix(first), count)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(remove)
	return srcs
}

var _ = Describe("Persistence", Label("persistence"), func() {
	var running *state.Lab
	dumpOnFailure(&running)

	// nat-ppc: -A -t 203.0.113.1:80 -s rr -p 120 over web1 and web2 (NAT).
	It("PPC: each client keeps the server rr gave its first connection", func(ctx context.Context) {
		s, l := up("scenarios/nat-ppc.yaml", "ppc")
		running = l
		sim := modelOf(s)
		srcs := sources(l, "203.0.113.100/24", 4)
		for _, src := range srcs {
			want := sim.Connect(verify.Request{Src: src}, false)
			got := verify.HTTPClient{From: l.Handles()["client"], Source: src}.Get(ctx, "http://203.0.113.1/", 5)
			expectAnsweredBy(got, sim, want, "client %s", src)
		}
		tmpl := templates(s, l)
		for i, src := range srcs {
			Expect(tmpl).To(HaveKeyWithValue(src, []string{"web2", "web1"}[i%2]), "template of %s", src)
		}
	})

	It("PPC with -M 255.255.255.128: clients in one /25 share a server", func(ctx context.Context) {
		s, l := up(variant("scenarios/nat-ppc.yaml", netmask(25)), "ppcmask")
		running = l
		sim := modelOf(s)
		low := sources(l, "203.0.113.100/24", 3)  // in 203.0.113.0/25, with the client's own .10
		high := sources(l, "203.0.113.200/24", 3) // in 203.0.113.128/25
		var wants []string
		for _, group := range [][]netip.Addr{low, high} {
			want := sim.Connect(verify.Request{}, false) // one new template per group
			wants = append(wants, want)
			for _, src := range group {
				got := verify.HTTPClient{From: l.Handles()["client"], Source: src}.Get(ctx, "http://203.0.113.1/", 2)
				expectAnsweredBy(got, sim, want, "client %s", src)
			}
		}
		Expect(wants[1]).NotTo(Equal(wants[0]), "rr gives the second group the other server")
		// One template per /25, named by the masked client address.
		Expect(templates(s, l)).To(Equal(map[netip.Addr]string{
			netip.MustParseAddr("203.0.113.0"):   wants[0],
			netip.MustParseAddr("203.0.113.128"): wants[1],
		}))
		got := verify.HTTPClient{From: l.Handles()["client"]}.Get(ctx, "http://203.0.113.1/", 1)
		expectAnsweredBy(got, sim, wants[0], "the client's own address is in the low group")
	})

	DescribeTable("keeps one client on one server across ports 80 and 443",
		func(ctx context.Context, file string) {
			s, l := up(file, "ports")
			running = l
			sim := modelOf(s)
			for _, src := range sources(l, "203.0.113.100/24", 3) {
				want := sim.Connect(verify.Request{Src: src}, false)
				c := verify.HTTPClient{From: l.Handles()["client"], Source: src}
				for _, url := range []string{"http://203.0.113.1/", "https://203.0.113.1/", "http://203.0.113.1/", "https://203.0.113.1/"} {
					expectAnsweredBy(c.Get(ctx, url, 1), sim, want, "client %s, %s", src, url)
				}
			}
		},
		Entry("PCC: service port 0", "scenarios/nat-pcc.yaml"),
		Entry("firewall mark 10 on 80 and 443", Label("fwmark"), "scenarios/nat-fwmark.yaml"),
	)

	// A template whose timer fires while it still controls a connection is re-armed
	// for 60 s (ip_vs_conn_expire, expire_later), so the persistence timeout (3 s)
	// must outlast the connections it controls (UDP, 1 s).
	It("chooses anew once the template has expired (UDP, -p 3, udp timeout 1 s)", Label("udp", "slow"), func(ctx context.Context) {
		s, l := up(variant("scenarios/nat-udp.yaml", persistent(3), timeouts(lab.Timeouts{UDP: 1})), "expiry")
		running = l
		sim := modelOf(s)
		c := verify.UDPClient{From: l.Handles()["client"]}
		vipUDP := netip.MustParseAddrPort("203.0.113.1:5353")
		first := sim.Connect(verify.Request{}, false)
		expectAnsweredBy(c.Send(ctx, vipUDP, 3), sim, first)

		Eventually(func() map[netip.Addr]string { return templates(s, l) }).
			WithTimeout(20 * time.Second).WithPolling(200 * time.Millisecond).Should(BeEmpty())
		next := sim.Connect(verify.Request{}, false)
		Expect(next).NotTo(Equal(first))
		expectAnsweredBy(c.Send(ctx, vipUDP, 2), sim, next, "after expiry the client gets rr's next server")
	})

	DescribeTable("when the client's server is quiesced (weight 0)",
		func(ctx context.Context, expire string, stays bool) {
			file := variant("scenarios/nat-ppc.yaml", sysctl("expire_quiescent_template", "1", expire))
			s, l := up(file, "quiesce")
			running = l
			sim := modelOf(s)
			c := verify.HTTPClient{From: l.Handles()["client"]}
			first := sim.Connect(verify.Request{}, false)
			other := sim.Order()[1-slices.Index(sim.Order(), first)]
			expectAnsweredBy(c.Get(ctx, "http://203.0.113.1/", 2), sim, first)

			edited := variant("scenarios/nat-ppc.yaml", sysctl("expire_quiescent_template", "1", expire), weight(first, 0))
			_, stderr, code := lv("apply", "--name", "quiesce", edited)
			Expect(code).To(Equal(0), stderr)
			sim.SetWeight(first, 0)
			// Without this, "the client stays" would pass for an apply that changed nothing.
			Expect(kernelWeights(s, l)).To(Equal(map[string]int{first: 0, other: 1}), "the kernel's weights after apply")

			got := c.Get(ctx, "http://203.0.113.1/", 3)
			if stays {
				expectAnsweredBy(got, sim, first, "a persistent client stays with its quiesced server")
			} else {
				expectAnsweredBy(got, sim, other, "the template expired: the client moved")
			}
			// New clients never go to the quiesced server: all go to the other.
			src := sources(l, "203.0.113.100/24", 1)[0]
			got = verify.HTTPClient{From: l.Handles()["client"], Source: src}.Get(ctx, "http://203.0.113.1/", 2)
			expectAnsweredBy(got, sim, other, "a new client %s", src)
		},
		Entry("expire_quiescent_template=1: the client moves", "1", false),
		Entry("expire_quiescent_template=0: the client stays", "0", true),
	)
})
