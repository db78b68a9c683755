package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/scenario"
	"github.com/lvslab/lvslab/pkg/verify"
)

func verifyJSON(args ...string) ([]verify.Outcome, string, int) {
	out, stderr, code := lv(append([]string{"verify", "--json"}, args...)...)
	var results []verify.Outcome
	Expect(json.Unmarshal([]byte(out), &results)).To(Succeed(), "stdout: %s\nstderr: %s", out, stderr)
	return results, stderr, code
}

var _ = Describe("lvslab verify", Label("verify"), func() {
	files, _ := filepath.Glob("../scenarios/*.yaml")
	var entries []TableEntry
	for _, f := range files {
		name := filepath.Base(f)
		entries = append(entries, Entry(name, "scenarios/"+name))
	}

	DescribeTable("passes every check a shipped scenario declares, on a fresh lab it removes again",
		func(file string) {
			results, stderr, code := verifyJSON(file)
			Expect(code).To(Equal(0), stderr)
			Expect(results).NotTo(BeEmpty())
			for _, r := range results {
				Expect(r.Passed).To(BeTrue(), "%s: %s", r.Check, r.Message)
				Expect(r.Skipped).To(BeFalse())
			}
			Expect(namespacesOf(strings.TrimSuffix(filepath.Base(file), ".yaml") + "-verify")).To(BeEmpty())
		},
		entries,
	)

	It("drives the real curl binary with --client curl", func() {
		results, stderr, code := verifyJSON("--client", "curl", "scenarios/nat-rr.yaml")
		Expect(code).To(Equal(0), stderr)
		Expect(results[0].Observed).To(HaveLen(10))
	})

	It("fails with exit status 1, the first divergence and a JUnit report when the kernel disagrees", func() {
		wrong := variant("scenarios/nat-rr.yaml", func(s *scenario.Scenario) {
			Expect(s.Checks[0].Expect.Model).To(BeTrue())
			s.Checks[0].Expect = lab.Expect{Sequence: strings.Fields("web1 web2 web1 web2 web1 web2 web1 web2 web1 web2")}
		})
		report := filepath.Join(GinkgoT().TempDir(), "junit.xml")
		out, _, code := lv("verify", "--junit", report, wrong)
		Expect(code).To(Equal(1))
		Expect(out).To(ContainSubstring("✗ answers alternate between web1 and web2"))
		Expect(out).To(ContainSubstring("first divergence at request 1: expected web1, observed web2"))
		Expect(out).To(MatchRegexp(`web1 +█+ 5`))
		Expect(out).To(ContainSubstring("0 passed, 1 failed, 0 skipped"))
		xml, err := os.ReadFile(report)
		Expect(err).NotTo(HaveOccurred())
		Expect(string(xml)).To(ContainSubstring(`<failure message="first divergence at request 1: expected web1, observed web2">`))
	})
})
