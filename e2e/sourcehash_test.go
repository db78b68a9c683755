package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/scenario"
	"github.com/lvslab/lvslab/pkg/state"
	"github.com/lvslab/lvslab/pkg/verify"
)

// sh over IPv6 clients and with sh-fallback; dh over many destinations of a
// firewall-mark service. Each source's (or destination's) server is the model's.
var _ = Describe("Hashing schedulers map each address where the kernel's table says", Label("nat", "hashing"), func() {
	var running *state.Lab
	dumpOnFailure(&running)

	It("sh over 40 IPv6 client addresses (the four words folded, then hash_32)", Label("ipv6"), func(ctx context.Context) {
		s, l, sim := upModel("scenarios/nat-ipv6.yaml", "sh6", scheduler(lab.SH), weight("web1", 3))
		running = l
		vip6 := netip.MustParseAddr("2001:db8:1::1")
		srcs, remove, err := verify.AddSources(l.Handles()["client"], "eth1", netip.MustParsePrefix("2001:db8:1::100/64"), 40)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(remove)
		seen := map[string]int{}
		for _, src := range srcs {
			want := sim.Connect(verify.Request{Src: src, Dst: vip6}, false)
			got := verify.HTTPClient{From: l.Handles()["client"], Source: src}.Get(ctx, "http://[2001:db8:1::1]/", 2)
			Expect(got.Errors).To(BeEmpty(), "client %s", src)
			Expect(got.Sequence).To(Equal([]string{want, want}), "client %s", src)
			sim.Count(want, false)
			seen[want]++
		}
		Expect(seen).To(HaveLen(2), "40 addresses spread over both servers")
		_ = s
	})

	DescribeTable("sh after quiescing a server: its clients fail, or move on with sh-fallback",
		func(ctx context.Context, flags ...lab.SchedFlag) {
			file := variant("scenarios/nat-sh.yaml", scheduler(lab.SH, flags...))
			s, l, sim := upModel(file, "shfb")
			running = l
			_, stderr, code := lv("apply", "--name", "shfb", variant("scenarios/nat-sh.yaml", scheduler(lab.SH, flags...), weight("web2", 0)))
			Expect(code).To(Equal(0), stderr)
			sim.SetWeight("web2", 0)
			srcs, remove, err := verify.AddSources(l.Handles()["client"], "eth1", netip.MustParsePrefix("203.0.113.100/24"), 40)
			Expect(err).NotTo(HaveOccurred())
			DeferCleanup(remove)
			moved, failed := 0, 0
			for _, src := range srcs {
				want := sim.Connect(verify.Request{Src: src, Dst: vip}, false)
				got := verify.HTTPClient{From: l.Handles()["client"], Source: src, Timeout: 1500 * time.Millisecond}.Get(ctx, "http://203.0.113.1/", 1)
				if want == "" {
					failed++
					Expect(got.Errors).To(HaveLen(1), "client %s: no server for it, yet %v answered", src, got.Sequence)
					continue
				}
				Expect(got.Errors).To(BeEmpty(), "client %s", src)
				Expect(got.Sequence).To(Equal([]string{want}), "client %s", src)
				if unquiesced := shOwner(s, src); unquiesced == "web2" {
					moved++
				}
			}
			Expect(count(flagNames(flags), "sh-fallback") == 1).To(Equal(moved > 0), "with sh-fallback clients of web2 move on, without it they fail")
			Expect(failed > 0).To(Equal(moved == 0), "some clients hashed to the quiesced server")
		},
		Entry("without sh-fallback"),
		Entry("with sh-fallback", lab.SHFallback),
	)

	It("dh over 20 destinations of a firewall-mark service (the packet's destination, not the mark's zero address)", Label("fwmark"), func(ctx context.Context) {
		var dsts []netip.Addr
		for i := range 20 {
			dsts = append(dsts, netip.AddrFrom4([4]byte{203, 0, 113, byte(21 + i)}))
		}
		file := variant("scenarios/nat-fwmark.yaml", func(s *scenario.Scenario) {
			svc := &services(s)[0]
			svc.Scheduler, svc.Persistent, svc.Timeout = lab.DH, false, 0
			d := nodeSpec(s, "director")
			for _, a := range dsts {
				d.Addresses = append(d.Addresses, lab.Address{Dev: "eth1", Prefix: netip.PrefixFrom(a, 24)})
				d.Marks = append(d.Marks, lab.Mark{Protocol: lab.TCP, Destination: a, Ports: []uint16{80}, Mark: 10})
			}
			s.Checks = nil
		})
		_, l, sim := upModel(file, "dh20")
		running = l
		seen := map[string]int{}
		for _, dst := range dsts {
			want := sim.Connect(verify.Request{Src: client, Dst: dst}, false)
			got := verify.HTTPClient{From: l.Handles()["client"]}.Get(ctx, fmt.Sprintf("http://%s/", dst), 2)
			Expect(got.Errors).To(BeEmpty(), "destination %s", dst)
			Expect(got.Sequence).To(Equal([]string{want, want}), "destination %s", dst)
			sim.Count(want, false)
			seen[want]++
		}
		Expect(seen).To(HaveLen(2), "20 destinations spread over both servers")
	})
})

// shOwner is the server sh gives src with every server available (weights as
// the scenario has them).
func shOwner(s *scenario.Scenario, src netip.Addr) string {
	sim := modelOf(s)
	return sim.Connect(verify.Request{Src: src, Dst: vip}, false)
}

func flagNames(flags []lab.SchedFlag) []string {
	var out []string
	for _, f := range flags {
		out = append(out, string(f))
	}
	return out
}
