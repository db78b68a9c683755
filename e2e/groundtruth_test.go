package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/lvslab/lvslab/pkg/apply"
	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/state"
	"github.com/lvslab/lvslab/pkg/verify"
)

// ipvsadm runs the real ipvsadm (Debian's, installed by make deps) in the lab's
// director and returns what it printed.
func ipvsadm(l *state.Lab, args ...string) string {
	out, stderr, code := lv(append([]string{"exec", "--lab", l.Name, l.Director, "--"}, args...)...)
	Expect(code).To(Equal(0), "%v: %s", args, stderr)
	return out
}

// ipvsadmConns parses ipvsadm -Lnc: "TCP 01:58  TIME_WAIT 203.0.113.10:56252 203.0.113.1:80 198.51.100.12:80".
func ipvsadmConns(text string) []string {
	var out []string
	for _, line := range strings.Split(text, "\n")[2:] {
		f := strings.Fields(line)
		if len(f) == 6 {
			out = append(out, strings.Join([]string{f[0], f[2], f[3], f[4], f[5]}, " "))
		}
	}
	slices.Sort(out)
	return out
}

// ipvsadmServiceConns parses the first service's Conns column of ipvsadm -Ln --stats.
func ipvsadmServiceConns(text string) int {
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) == 7 && f[0] != "Prot" && f[0] != "->" {
			n, err := strconv.Atoi(f[2])
			Expect(err).NotTo(HaveOccurred(), line)
			return n
		}
	}
	Fail("no service in ipvsadm --stats:\n" + text)
	return 0
}

// lvslab's readers are not their own judges: what lvslab prints and reads of
// the director's table must be what the real ipvsadm prints, for every
// scheduler and forwarding method, after traffic (closed and held connections).
var _ = Describe("lvslab reads the table as the real ipvsadm does", Label("groundtruth"), func() {
	var running *state.Lab
	dumpOnFailure(&running)

	DescribeTable("ipvsadm -Ln, ipvsadm-save -n, -Lnc and --stats",
		func(ctx context.Context, file, vip string, edits ...edit) {
			_, l := up(variant(file, edits...), "truth")
			running = l
			client := l.Handles()["client"]
			const closed = 5
			addr := netip.MustParseAddrPort(vip)
			got := verify.HTTPClient{From: client}.Get(ctx, verify.URL(addr), closed)
			Expect(got.Errors).To(BeEmpty())
			_, closeAll, err := verify.Hold(ctx, client, addr, 1)
			Expect(err).NotTo(HaveOccurred())
			DeferCleanup(closeAll)

			list, _, code := lv("ipvs", "--list", l.Name)
			Expect(code).To(Equal(0))
			Expect(list).To(Equal(ipvsadm(l, "ipvsadm", "-Ln")))
			save, _, code := lv("ipvs", "--save", l.Name)
			Expect(code).To(Equal(0))
			Expect(save).To(Equal(ipvsadm(l, "ipvsadm-save", "-n")))

			conns, err := verify.ReadConns(l.Handles()[l.Director])
			Expect(err).NotTo(HaveOccurred())
			var mine []string
			for _, c := range conns {
				mine = append(mine, strings.Join([]string{c.Proto, c.State, c.Client.String(), c.Virtual.String(), c.Dest.String()}, " "))
			}
			slices.Sort(mine)
			Expect(mine).To(Equal(ipvsadmConns(ipvsadm(l, "ipvsadm", "-Lnc"))))

			// The estimator folds the connection counter in every 2 s: wait for it,
			// then both readers must show every connection made.
			Eventually(func() []int {
				t, err := apply.ReadTable(l.Handles()[l.Director])
				Expect(err).NotTo(HaveOccurred())
				return []int{int(t.Services[0].Connections), ipvsadmServiceConns(ipvsadm(l, "ipvsadm", "-Ln", "--stats"))}
			}).WithTimeout(6 * time.Second).WithPolling(500 * time.Millisecond).Should(Equal([]int{closed + 1, closed + 1}))
		},
		func() []TableEntry {
			var entries []TableEntry
			for _, s := range lab.Schedulers() {
				entries = append(entries, Entry(fmt.Sprintf("nat %s", s), "scenarios/nat-lc.yaml", "203.0.113.1:80",
					scheduler(s, s.Flags()...), thresholds("web1", 100, 10), weight("web2", 3)))
			}
			return append(entries,
				Entry("dr", "scenarios/dr-rr.yaml", "203.0.113.1:80"),
				Entry("tun", "scenarios/tun-rr.yaml", "203.0.113.1:80"),
				Entry("persistence with a netmask", "scenarios/nat-ppc.yaml", "203.0.113.1:80", netmask(24)),
				Entry("firewall mark", "scenarios/nat-fwmark.yaml", "203.0.113.1:80"),
				Entry("ipv6", "scenarios/nat-ipv6.yaml", "[2001:db8:1::1]:80"),
			)
		}(),
	)
})
