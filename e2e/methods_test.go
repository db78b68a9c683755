package e2e

import (
	"context"
	"fmt"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/state"
	"github.com/lvslab/lvslab/pkg/verify"
)

// The same scheduling through every forwarding method: NAT (nat-rr), DR (dr-rr)
// and TUN (tun-rr), each with two real servers web1 and web2, written as ipvsadm
// rules (nat-rr's structured form is rewritten to the same rules).
var _ = Describe("Scheduler x forwarding method x persistence", Label("methods"), func() {
	var running *state.Lab
	dumpOnFailure(&running)

	type method struct{ file, flag, label string }
	methods := []method{
		{"scenarios/dr-rr.yaml", "-g", "dr"},
		{"scenarios/tun-rr.yaml", "-i", "tun"},
	}
	var entries []TableEntry
	for _, m := range methods {
		for _, sched := range []string{"rr", "wrr", "lc"} {
			for _, persist := range []bool{false, true} {
				labels := Label(m.label)
				if persist {
					labels = Label(m.label, "persistence")
				}
				entries = append(entries, Entry(fmt.Sprintf("%s %s persistent=%v", m.label, sched, persist), labels, m, sched, persist))
			}
		}
	}
	for _, sched := range []string{"rr", "wrr", "lc"} {
		for _, persist := range []bool{false, true} {
			labels := Label("nat")
			if persist {
				labels = Label("nat", "persistence")
			}
			entries = append(entries, Entry(fmt.Sprintf("nat %s persistent=%v", sched, persist), labels, method{"scenarios/nat-rr.yaml", "-m", "nat"}, sched, persist))
		}
	}

	DescribeTable("give the model's exact sequence",
		func(ctx context.Context, m method, sched string, persist bool) {
			edits := []edit{scheduler(lab.Scheduler(sched)), weight("web1", 2)}
			if persist {
				edits = append(edits, persistent(60))
			}
			file := variant(m.file, edits...)
			s, l := up(file, strings.ReplaceAll(fmt.Sprintf("m-%s-%s-%v", m.label, sched, persist), "true", "p"))
			running = l
			sim := modelOf(s)
			Expect(sim.Order()).To(Equal(kernelOrder(s, l)))
			var want []string
			if persist {
				first := sim.Connect(verify.Request{}, false)
				want = []string{first, first, first, first, first, first}
			} else {
				want = sim.Sequence(verify.Request{}, 6, false)
			}
			got := verify.HTTPClient{From: l.Handles()["client"]}.Get(ctx, "http://203.0.113.1/", 6)
			Expect(got.Errors).To(BeEmpty())
			Expect(got.Sequence).To(Equal(want), divergence(want, got.Sequence))
		},
		entries,
	)
})
