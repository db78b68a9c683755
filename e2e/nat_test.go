package e2e

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/lvslab/lvslab/pkg/jsonview"
	"github.com/lvslab/lvslab/pkg/node"
	"github.com/lvslab/lvslab/pkg/scenario"
	"github.com/lvslab/lvslab/pkg/state"
	"github.com/lvslab/lvslab/pkg/verify"
	"github.com/moby/ipvs"
)

// The seed lab's LVS-NAT step (scenarios/nat-rr.yaml):
//
//	client ──eth1── director ──eth2── [lan] ──┬── web1 198.51.100.11
//	203.0.113.10    203.0.113.1 (VIP)          └── web2 198.51.100.12
//	                198.51.100.1
//	ipvsadm -A -t 203.0.113.1:80 -s rr; -a ... -r 198.51.100.1{1,2}:80 -m
var _ = Describe("LVS-NAT with round robin", Ordered, Label("nat"), func() {
	var (
		s       *scenario.Scenario
		running *state.Lab
	)
	dumpOnFailure(&running)

	BeforeAll(func() {
		s, running = up("scenarios/nat-rr.yaml", "nat-rr")
	})

	It("names one namespace per node as containerlab names its containers", func() {
		var names []string
		for _, n := range running.Namespaces() {
			Expect(filepath.Join(node.NetnsDir, n)).To(BeAnExistingFile())
			names = append(names, n)
		}
		sort.Strings(names)
		Expect(names).To(Equal([]string{"clab-nat-rr-client", "clab-nat-rr-director", "clab-nat-rr-lan", "clab-nat-rr-web1", "clab-nat-rr-web2"}))
	})

	It("reads back the director's IPVS table as the scenario declares it", func() {
		t := readIPVS(running)
		Expect(t.Services).To(HaveLen(1))
		svc := t.Services[0].Service
		Expect(svc.SchedName).To(Equal("rr"))
		Expect(svc.Protocol).To(BeEquivalentTo(6))
		Expect(svc.Address.String()).To(Equal("203.0.113.1"))
		Expect(svc.Port).To(BeEquivalentTo(80))
		Expect(svc.Flags&^0x2).To(BeZero(), "no persistence (only IP_VS_SVC_F_HASHED)")
		var got []string
		for _, d := range t.Services[0].Destinations {
			got = append(got, netip.AddrPortFrom(netip.MustParseAddr(d.Address.String()), d.Port).String()+" "+map[uint32]string{ipvs.ConnectionFlagMasq: "nat"}[d.ConnectionFlags&ipvs.ConnectionFlagFwdMask]+" "+strings.Repeat("w", d.Weight))
		}
		Expect(got).To(ConsistOf("198.51.100.11:80 nat w", "198.51.100.12:80 nat w"))
	})

	It("turns forwarding on in the director only", func() {
		nodes := running.Handles()
		read := func(n string) string {
			var v []byte
			Expect(nodes[n].Do(func() (err error) {
				v, err = os.ReadFile("/proc/sys/net/ipv4/ip_forward")
				return err
			})).To(Succeed())
			return strings.TrimSpace(string(v))
		}
		Expect(read("director")).To(Equal("1"))
		Expect(read("web1")).To(Equal("0"))
	})

	It("alternates strictly between web1 and web2 over 10 sequential connections", func(ctx context.Context) {
		// The model: rr walks the kernel's list (reverse order of insertion) from the head.
		sim := modelOf(s)
		Expect(sim.Order()).To(Equal(kernelOrder(s, running)))
		want := sim.Sequence(verify.Request{}, 10, false)

		c := verify.HTTPClient{From: running.Handles()["client"]}
		got := c.Get(ctx, "http://203.0.113.1/", 10)
		Expect(got.Errors).To(BeEmpty())
		Expect(got.Sequence).To(Equal(want), divergence(want, got.Sequence))
		Expect(got.Counts).To(Equal(map[string]int{"web1": 5, "web2": 5}))
	})

	It("runs a command in a node with lvslab exec, passing output and exit status through", func() {
		out, _, code := lv("exec", "client", "--", "curl", "-s", "--max-time", "5", "http://203.0.113.1/")
		Expect(code).To(Equal(0))
		Expect(strings.TrimSpace(out)).To(BeElementOf("web1", "web2"))
		_, _, code = lv("exec", "client", "--", "sh", "-c", "exit 7")
		Expect(code).To(Equal(7))
		out, _, code = lv("exec", "web2", "--", "cat", "/proc/sys/net/ipv4/ip_forward")
		Expect(code).To(Equal(0))
		Expect(out).To(Equal("0\n"))
	})

	It("shows nodes, addresses and the IPVS table in lvslab status", func() {
		out, _, code := lv("status", "nat-rr")
		Expect(code).To(Equal(0))
		Expect(out).To(ContainSubstring("clab-nat-rr-director"))
		Expect(out).To(ContainSubstring("eth1 203.0.113.1/24, eth2 198.51.100.1/24"))
		Expect(out).To(MatchRegexp(`TCP  203\.0\.113\.1:80 rr\n`))
		Expect(out).To(MatchRegexp(`  -> 198\.51\.100\.11:80 +Masq +1 +0 +\d+`))
		Expect(out).To(ContainSubstring("process webd"))
	})

	It("prints status and the table as JSON that the published schemas describe", func() {
		out, stderr, code := lv("status", "--json", "nat-rr")
		Expect(code).To(Equal(0), stderr)
		Expect(schemas.Validate("status.schema.json", []byte(out))).To(Succeed())
		var labs []jsonview.Lab
		Expect(json.Unmarshal([]byte(out), &labs)).To(Succeed())
		Expect(labs).To(HaveLen(1))
		Expect(labs[0].Name).To(Equal("nat-rr"))
		Expect(labs[0].Director).To(Equal("director"))
		d := labs[0].Nodes[slices.IndexFunc(labs[0].Nodes, func(n jsonview.Node) bool { return n.Name == "director" })]
		Expect(d.Addresses).To(Equal([]string{"eth1 203.0.113.1/24", "eth2 198.51.100.1/24"}))
		Expect(labs[0].IPVS.Services).To(HaveLen(1))

		out, stderr, code = lv("ipvs", "--json", "nat-rr")
		Expect(code).To(Equal(0), stderr)
		Expect(schemas.Validate("ipvs.schema.json", []byte(out))).To(Succeed())
		var t jsonview.Table
		Expect(json.Unmarshal([]byte(out), &t)).To(Succeed())
		Expect(t.Services[0].Key).To(Equal("tcp:203.0.113.1:80"))
		Expect(t.Services[0].Scheduler).To(Equal("rr"))
		Expect(t.Services[0].Servers).To(HaveLen(2))
		Expect(t.Services[0].Servers[0].Method).To(Equal("nat"))
	})

	It("draws the running lab with lvslab graph, as its scenario file is drawn", func() {
		out, stderr, code := lv("graph", "nat-rr")
		Expect(code).To(Equal(0), stderr)
		Expect(out).To(ContainSubstring(`n_director["<b>director</b><br/>eth1 203.0.113.1/24 (VIP)<br/>eth2 198.51.100.1/24<br/>tcp 203.0.113.1:80 rr NAT → web1, web2"]`))
		file, _, code := lv("graph", "scenarios/nat-rr.yaml")
		Expect(code).To(Equal(0))
		Expect(out).To(Equal(file))
		svg := filepath.Join(GinkgoT().TempDir(), "nat-rr.svg")
		_, stderr, code = lv("graph", "-o", svg, "nat-rr")
		Expect(code).To(Equal(0), stderr)
		b, err := os.ReadFile(svg)
		Expect(err).NotTo(HaveOccurred())
		Expect(string(b)).To(HavePrefix("<svg "))
		_, stderr, code = lv("graph", "no-such-lab")
		Expect(code).NotTo(Equal(0))
		Expect(stderr).To(ContainSubstring("no-such-lab"))
	})
})
