package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/state"
	"github.com/lvslab/lvslab/pkg/verify"
	"github.com/vishvananda/netlink"
)

// normalized sorts real servers so that a table read back in the kernel's list
// order compares with the scenario's.
func normalized(svcs []lab.Service) []lab.Service {
	out := slices.Clone(svcs)
	for i := range out {
		out[i].Servers = slices.Clone(out[i].Servers)
		slices.SortFunc(out[i].Servers, func(a, b lab.Server) int { return a.Addr.Compare(b.Addr) })
	}
	slices.SortFunc(out, func(a, b lab.Service) int { return strings.Compare(a.Key(), b.Key()) })
	return out
}

// Every shipped scenario is brought up, read back (up fails unless the kernel
// holds what the scenario declares) and has its checks judged by lvslab
// verify: the verify table runs each file, but for the HA scenarios, which
// ha_test.go runs with their timing bounds.
var _ = Describe("Every shipped scenario", Label("scenarios"), func() {
	It("is verified on a fresh lab by the verify table or the HA specs", func() {
		files, _ := filepath.Glob(filepath.Join(repo, "scenarios", "*.yaml"))
		Expect(len(files)).To(BeNumerically(">=", 21))
		for _, f := range verifiedInHA {
			Expect(filepath.Join(repo, "scenarios", f)).To(BeAnExistingFile())
			b, err := os.ReadFile(filepath.Join(repo, "e2e", "ha_test.go"))
			Expect(err).NotTo(HaveOccurred())
			Expect(string(b)).To(ContainSubstring(`verifyJSON("scenarios/`+f+`")`), "ha_test.go runs %s", f)
		}
	})
})

// defaultRoutes lists a node's IPv4 default routes by gateway, read over netlink.
func defaultRoutes(l *state.Lab, name string) []string {
	h, err := l.Handles()[name].Netlink()
	Expect(err).NotTo(HaveOccurred())
	defer h.Close()
	rs, err := h.RouteList(nil, netlink.FAMILY_V4)
	Expect(err).NotTo(HaveOccurred())
	var out []string
	for _, r := range rs {
		if r.Dst == nil || r.Dst.IP.IsUnspecified() {
			out = append(out, r.Gw.String())
		}
	}
	return out
}

// scenarios/nat-rr.yaml applied to a running lab, as is and edited.
var _ = Describe("lvslab apply on a running lab", Ordered, Label("nat", "apply"), func() {
	var (
		running *state.Lab
		dir     string
	)
	dumpOnFailure(&running)

	// edited writes nat-rr.yaml, changed by edits, as dir/name.
	edited := func(name string, edits ...edit) string {
		return variantAs(filepath.Join(dir, name), "scenarios/nat-rr.yaml", edits...)
	}

	BeforeAll(func() {
		dir = GinkgoT().TempDir()
		_, running = up(edited("base.yaml"), "nat-rr")
	})

	It("changes nothing when the scenario is applied again", func() {
		table := ipvsadm(running, "ipvsadm-save", "-n")
		routes := defaultRoutes(running, "web1")
		Expect(routes).To(Equal([]string{"198.51.100.1"}), "web1's default route through the director")
		_, stderr, code := lv("apply", edited("same.yaml"))
		Expect(code).To(Equal(0), stderr)
		Expect(stderr).To(ContainSubstring("(0 changes)"))
		Expect(ipvsadm(running, "ipvsadm-save", "-n")).To(Equal(table), "the real ipvsadm sees the same table")
		Expect(defaultRoutes(running, "web1")).To(Equal(routes))
	})

	It("edits only the real server whose weight changed", func() {
		_, stderr, code := lv("apply", edited("weight.yaml", weight("web2", 3)))
		Expect(code).To(Equal(0), stderr)
		Expect(stderr).To(ContainSubstring("(1 changes)"))
		Expect(stderr).To(ContainSubstring("director: edit real server 198.51.100.12:80 of tcp:203.0.113.1:80 (nat, weight 3)"))
		t := readIPVS(running)
		w := map[string]int{}
		for _, d := range t.Services[0].Destinations {
			w[d.Address.String()] = d.Weight
		}
		Expect(w).To(Equal(map[string]int{"198.51.100.11": 1, "198.51.100.12": 3}))
	})

	It("removes what the edited scenario no longer declares, and changes the scheduler in place", func() {
		_, stderr, code := lv("apply", edited("smaller.yaml", scheduler(lab.WLC), removeServer("web2"), routes("web1")))
		Expect(code).To(Equal(0), stderr)
		Expect(stderr).To(ContainSubstring("director: edit service tcp:203.0.113.1:80 (scheduler wlc)"))
		Expect(stderr).To(ContainSubstring("director: delete real server 198.51.100.12:80"))
		Expect(stderr).To(ContainSubstring("web1: delete route 0.0.0.0/0 via 198.51.100.1"))
		t := readIPVS(running)
		Expect(t.Services[0].Service.SchedName).To(Equal("wlc"))
		Expect(t.Services[0].Destinations).To(HaveLen(1))
		Expect(t.Services[0].Destinations[0].Address.String()).To(Equal("198.51.100.11"))
		Expect(defaultRoutes(running, "web1")).To(BeEmpty())
	})

	It("comes back to the original, and the lab answers as before", func(ctx context.Context) {
		_, stderr, code := lv("apply", edited("back.yaml"))
		Expect(code).To(Equal(0), stderr)
		got := verify.HTTPClient{From: running.Handles()["client"]}.Get(ctx, "http://203.0.113.1/", 4)
		Expect(got.Errors).To(BeEmpty())
		Expect(got.Counts).To(Equal(map[string]int{"web1": 2, "web2": 2}))
	})
})

var _ = Describe("Every scheduler the kernel ships", Label("nat", "schedulers"), func() {
	var running *state.Lab
	dumpOnFailure(&running)

	DescribeTable("is programmed over netlink, read back with its flags and thresholds, and answers",
		func(ctx context.Context, sched string, flags string) {
			var fl []lab.SchedFlag
			for _, f := range strings.FieldsFunc(flags, func(r rune) bool { return r == ',' }) {
				fl = append(fl, lab.SchedFlag(f))
			}
			s, l := up(variant("scenarios/nat-lc.yaml", scheduler(lab.Scheduler(sched), fl...), thresholds("web1", 100, 10)), "sched-"+sched)
			running = l
			d, _ := s.Spec.Node(s.Director())
			got := readSpecs(l)
			Expect(normalized(got)).To(Equal(normalized(d.Services)))
			Expect(string(got[0].Scheduler)).To(Equal(sched))
			if flags != "" {
				Expect(fmt.Sprint(got[0].SchedFlags)).To(Equal("[" + strings.ReplaceAll(flags, ",", " ") + "]"))
			}
			res := verify.HTTPClient{From: l.Handles()["client"]}.Get(ctx, "http://203.0.113.1/", 3)
			Expect(res.Errors).To(BeEmpty())
			Expect(res.Counts).NotTo(BeEmpty())
		},
		Entry("rr", "rr", ""), Entry("wrr", "wrr", ""), Entry("lc", "lc", ""), Entry("wlc", "wlc", ""),
		Entry("sed", "sed", ""), Entry("nq", "nq", ""), Entry("sh", "sh", "sh-fallback,sh-port"),
		Entry("dh", "dh", ""), Entry("mh", "mh", "mh-fallback,mh-port"), Entry("fo", "fo", ""),
		Entry("ovf", "ovf", ""), Entry("lblc", "lblc", ""), Entry("lblcr", "lblcr", ""),
	)
})
