package e2e

import (
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/scenario"
)

// Steps change a running lab between checks: the shipped nat-steps scenario
// goes through every kind of action (its verify passes in the shipped
// scenarios' table); here, what the report says of them, and a step that
// fails.
var _ = Describe("Steps between checks", Label("steps", "verify"), func() {
	It("reports each step's action, then its checks, in order", func() {
		results, stderr, code := verifyJSON("scenarios/nat-steps.yaml")
		Expect(code).To(Equal(0), stderr)
		s, err := scenario.Load(repo + "/scenarios/nat-steps.yaml")
		Expect(err).NotTo(HaveOccurred())
		// The scenario's checks, then per step its action and its checks.
		var want []string
		for _, c := range s.Checks {
			want = append(want, "|"+c.Name)
		}
		for i, st := range s.Steps {
			label := "step " + strconv.Itoa(i+1) + ": " + st.Name
			want = append(want, label+"|"+st.Name)
			for _, c := range st.Checks {
				want = append(want, label+"|"+c.Name)
			}
		}
		var got []string
		for _, r := range results {
			got = append(got, r.Step+"|"+r.Check)
			Expect(r.Passed).To(BeTrue(), "%s %s: %s", r.Step, r.Check, r.Message)
		}
		Expect(got).To(Equal(want))
		for _, r := range results {
			switch {
			case strings.HasSuffix(r.Step, "web1 answers again from the client"):
				Expect(r.Message).To(MatchRegexp(`^http://198\.51\.100\.11/ answers from client after [0-9.]+m?s \([0-9.]+m?s after the last change began\)$`))
			case strings.HasSuffix(r.Step, "two connections held open"):
				Expect(r.Message).To(HaveSuffix("(as the model predicted)"))
			case strings.HasSuffix(r.Step, "as ipvsadm lists it"):
				Expect(r.Message).To(Equal("exit status 0"))
			}
		}
	})

	It("fails a step whose wait is not met within its bound, and skips its checks", func() {
		file := variant("scenarios/nat-steps.yaml", func(s *scenario.Scenario) {
			// The cable stays out: web1 cannot answer within the bound.
			s.Steps = []lab.Step{
				{Name: "web1's cable is pulled", Action: lab.Action{Kind: lab.ActLink, Node: "web1", Dev: "eth1"}},
				{Name: "web1 answers", Action: lab.Action{Kind: lab.ActWait, Within: 700 * time.Millisecond,
					Until: &lab.Condition{From: "client", URL: "http://198.51.100.11/"}},
					Checks: []lab.Check{{Name: "rr goes on", From: "client", HTTP: "http://203.0.113.1/", Requests: 2, Dev: "eth1", Expect: lab.Expect{Model: true}}}},
			}
		})
		results, _, code := verifyJSON(file)
		Expect(code).To(Equal(1))
		Expect(len(results)).To(BeNumerically(">=", 3))
		last := results[len(results)-2:]
		Expect(last[0].Kind).To(BeEquivalentTo("step"))
		Expect(last[0].Passed).To(BeFalse())
		Expect(last[0].Message).To(HavePrefix("not within 700ms: http://198.51.100.11/ answers from client"))
		Expect(last[1].Skipped).To(BeTrue())
		Expect(last[1].Message).To(Equal("not run: the step's action failed"))
	})
})
