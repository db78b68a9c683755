package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/lvslab/lvslab/internal/clitest"
	"github.com/lvslab/lvslab/pkg/jsonview"
	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/scenario"
	"github.com/lvslab/lvslab/pkg/state"
	"github.com/lvslab/lvslab/pkg/verify"
)

func verifyJSON(args ...string) ([]verify.Outcome, string, int) {
	out, stderr, code := lv(append([]string{"verify", "--json"}, args...)...)
	var results []verify.Outcome
	Expect(json.Unmarshal([]byte(out), &results)).To(Succeed(), "stdout: %s\nstderr: %s", out, stderr)
	// Every verify --json of the suite is what the published schema says.
	Expect(schemas.Validate("verify.schema.json", []byte(out))).To(Succeed())
	return results, stderr, code
}

// expectAllPassed requires every outcome of a verify run to pass and the run
// to exit 0. The outcomes come first: a failed step's message says more than
// the exit status does.
func expectAllPassed(results []verify.Outcome, stderr string, code int) {
	GinkgoHelper()
	for _, r := range results {
		Expect(r.Passed).To(BeTrue(), "%s %s: %s", r.Step, r.Check, r.Message)
	}
	Expect(code).To(Equal(0), stderr)
}

// schemas checks lvslab's JSON output against its published schemas.
var schemas = func() *jsonview.Validator {
	v, err := jsonview.NewValidator()
	if err != nil {
		panic(err)
	}
	return v
}()

// verifiedInHA are the shipped scenarios the HA specs (ha_test.go) run with
// lvslab verify, every check required to pass as here.
var verifiedInHA = []string{"ha-dr.yaml", "ha-healthcheck.yaml", "ha-nat.yaml", "ha-sync.yaml"}

var _ = Describe("lvslab verify", Label("verify"), func() {
	// The table is built before the suite runs: find the scenarios from the
	// repository root, wherever the suite runs from, and never build it empty.
	root, err := clitest.Repo()
	if err != nil {
		panic(err)
	}
	files, _ := filepath.Glob(filepath.Join(root, "scenarios", "*.yaml"))
	if len(files) < 17 {
		panic(fmt.Sprintf("%d shipped scenarios under %s, want 17", len(files), root))
	}
	var entries []TableEntry
	for _, f := range files {
		name := filepath.Base(f)
		if slices.Contains(verifiedInHA, name) {
			continue // ha_test.go runs it, and checks its timings against their bounds
		}
		entries = append(entries, Entry(name, "scenarios/"+name))
	}

	DescribeTable("passes every check a shipped scenario declares, on a fresh lab it removes again",
		func(file string) {
			results, stderr, code := verifyJSON(file)
			Expect(code).To(Equal(0), stderr)
			Expect(results).NotTo(BeEmpty())
			k, err := verify.RunningKernel()
			Expect(err).NotTo(HaveOccurred())
			for _, r := range results {
				Expect(r.Passed).To(BeTrue(), "%s: %s", r.Check, r.Message)
				Expect(r.Skipped).To(BeFalse())
				Expect(r.Kernel).To(Equal(k.Release))
			}
			Expect(namespacesOf(strings.TrimSuffix(filepath.Base(file), ".yaml") + "-verify")).To(BeEmpty())
		},
		entries,
	)

	It("writes a self-contained HTML report with --html: the checks, the ARP replies with MACs, the director's tables", func() {
		file := filepath.Join(GinkgoT().TempDir(), "report.html")
		_, stderr, code := lv("verify", "--html", file, "scenarios/dr-arp-flux.yaml")
		Expect(code).To(Equal(0), stderr)
		b, err := os.ReadFile(file)
		Expect(err).NotTo(HaveOccurred())
		page := string(b)
		k, err := verify.RunningKernel()
		Expect(err).NotTo(HaveOccurred())
		Expect(page).To(ContainSubstring("<title>lvslab verify: dr-arp-flux-verify (passed)</title>"))
		Expect(page).To(ContainSubstring("kernel <code>" + k.Release + "</code>"))
		Expect(page).To(MatchRegexp(`<tr><td>director</td><td><code>[0-9a-f:]{17}</code></td></tr>`))
		Expect(page).To(MatchRegexp(`(?s)<pre id="table">IP Virtual Server version .*TCP  203\.0\.113\.1:80 rr`))
		Expect(page).To(ContainSubstring("IPVS connection entries"))
		Expect(page).NotTo(MatchRegexp(`src=|href=|url\(`))
	})

	It("drives the real curl binary with --client curl", func(ctx context.Context) {
		// A curl first on lvslab's PATH notes each run and runs the real one:
		// the answers alone cannot tell curl's requests from the Go client's.
		realCurl, err := exec.LookPath("curl")
		Expect(err).NotTo(HaveOccurred())
		dir := GinkgoT().TempDir()
		runs := filepath.Join(dir, "runs")
		Expect(os.WriteFile(filepath.Join(dir, "curl"), []byte("#!/bin/sh\necho \"$*\" >>"+runs+"\nexec "+realCurl+" \"$@\"\n"), 0o755)).To(Succeed())
		withCurl := cli
		withCurl.Env = append(os.Environ(), "PATH="+dir+string(os.PathListSeparator)+os.Getenv("PATH"))
		r, err := withCurl.Run(ctx, "verify", "--json", "--client", "curl", "scenarios/nat-rr.yaml")
		Expect(err).NotTo(HaveOccurred())
		GinkgoWriter.Println(r)
		Expect(r.Code).To(Equal(0), r.Stderr)
		var results []verify.Outcome
		Expect(json.Unmarshal([]byte(r.Stdout), &results)).To(Succeed(), r.Stdout)
		Expect(results).To(HaveLen(1))
		Expect(results[0].Observed).To(HaveLen(10))
		Expect(results[0].Observed).To(HaveEach(BeElementOf("web1", "web2")))
		log, err := os.ReadFile(runs)
		Expect(err).NotTo(HaveOccurred(), "curl never ran")
		lines := strings.Split(strings.TrimSpace(string(log)), "\n")
		Expect(lines).To(HaveLen(10), "one curl per request")
		Expect(lines).To(HaveEach(HaveSuffix(" http://203.0.113.1/")))
	})

	// Seen: a running nat-rr lab whose web1 server process was killed was reported
	// as "0 passed, 0 failed, 1 skipped" with exit status 0, because rr's model
	// cannot predict for a lab that has served traffic.
	It("fails a check whose expectations failed, even when the model cannot predict", Label("faults"), func(ctx context.Context) {
		_, l := up("scenarios/nat-rr.yaml", "killed")
		// A lab in use: rr's position after these is not something the model can know.
		Expect(verify.HTTPClient{From: l.Handles()["client"]}.Get(ctx, "http://203.0.113.1/", 3).Errors).To(BeEmpty())
		var webd state.Process
		for _, p := range l.Processes {
			if p.Role == "webd-web1" {
				webd = p
			}
		}
		Expect(webd.Pid).NotTo(BeZero())
		Expect(webd.Kill()).To(Succeed())
		Expect(webd.WaitExited(context.Background(), 5*time.Second)).To(Succeed())
		out, _, code := lv("verify", "killed")
		Expect(code).To(Equal(1), out)
		Expect(out).To(ContainSubstring("5 requests failed, expected 0"))
		Expect(out).To(ContainSubstring("not judged against the model either"))
		Expect(out).To(ContainSubstring("0 passed, 1 failed, 0 skipped"))
	})

	// A check that runs across a connection's expiry cannot be predicted for a
	// count-weighing scheduler: the kernel's timer may fire on either side of a
	// datagram. The model says so (a skip with the reason), never guesses.
	It("skips, with the timer named, a check that runs across a connection's expiry", Label("expiry", "udp"), func() {
		file := variant("scenarios/nat-udp.yaml", scheduler(lab.LC), timeouts(lab.Timeouts{UDP: 1}), func(s *scenario.Scenario) {
			check := func(name string, n int) lab.Check {
				return lab.Check{Name: name, From: "client", Dev: "eth1", UDP: netip.MustParseAddrPort("203.0.113.1:5353"),
					Requests: n, Expect: lab.Expect{Model: true}}
			}
			s.Checks = []lab.Check{check("three datagrams", 3), check("datagrams for over a second", 400)}
		})
		// The exit status says whether the first check passed too (it can lose its
		// first datagram on a fresh lab, seen once in many runs); what this spec
		// shows is the second check's skip.
		results, stderr, _ := verifyJSON(file)
		Expect(results).To(HaveLen(2), stderr)
		Expect(results[1].Skipped).To(BeTrue(), "%+v", results[1])
		Expect(results[1].Message).To(ContainSubstring("timing:"))
		Expect(results[1].Errors).To(BeEmpty())
	})

	It("exits 2 when a check could not be judged and none failed, and 0 with --allow-skip", func(ctx context.Context) {
		_, l := up("scenarios/nat-rr.yaml", "served")
		got := verify.HTTPClient{From: l.Handles()["client"]}.Get(ctx, "http://203.0.113.1/", 3)
		Expect(got.Errors).To(BeEmpty())
		// rr's position after 3 connections is not what the check's counts expect
		// from a fresh director, so only the model's part is left unjudged:
		// counts are judged and must hold, so expect none.
		edited := variant("scenarios/nat-rr.yaml", func(s *scenario.Scenario) {
			s.Checks[0].Expect.Counts = nil
		})
		_, stderr, code := lv("apply", "--name", "served", edited)
		Expect(code).To(Equal(0), stderr)
		out, _, code := lv("verify", "served")
		Expect(code).To(Equal(2), out)
		Expect(out).To(ContainSubstring("not judged against the model: rr keeps a position"))
		Expect(out).To(ContainSubstring("0 passed, 0 failed, 1 skipped"))
		_, _, code = lv("verify", "--allow-skip", "served")
		Expect(code).To(Equal(0))
	})

	// A UDP check with extra sources sends from each of them: persistence keeps
	// each source on its own rr pick, which one address alone could not show.
	It("sends a UDP check's datagrams from its extra source addresses", Label("udp"), func() {
		file := variant("scenarios/nat-udp.yaml", persistent(60), func(s *scenario.Scenario) {
			s.Checks = []lab.Check{{
				Name: "each source keeps its server", From: "client", Dev: "eth1",
				UDP: netip.MustParseAddrPort("203.0.113.1:5353"), Requests: 2, Sources: 3,
				Expect: lab.Expect{Model: true, Sticky: true},
			}}
		})
		// --keep: the director's connection table shows where the datagrams came from.
		DeferCleanup(func() { lv("down", "nat-udp-verify") })
		results, stderr, code := verifyJSON("--keep", file)
		Expect(code).To(Equal(0), stderr)
		Expect(results).To(HaveLen(1))
		Expect(results[0].Predicted).To(Equal(results[0].Observed))
		Expect(results[0].Observed).To(HaveLen(6))
		Expect(results[0].Observed).To(HaveEach(BeElementOf("web1", "web2")))

		s, err := scenario.Load(file)
		Expect(err).NotTo(HaveOccurred())
		l, err := state.Store{Dir: state.DefaultDir}.Load("nat-udp-verify")
		Expect(err).NotTo(HaveOccurred())
		conns, err := verify.ReadConns(l.Handles()[l.Director])
		Expect(err).NotTo(HaveOccurred())
		bySource := map[netip.Addr][]string{}
		for _, c := range conns {
			if c.Proto == "UDP" && !c.Template {
				bySource[c.Client.Addr()] = append(bySource[c.Client.Addr()], s.Spec.OwnerOf(c.Dest.Addr()))
			}
		}
		Expect(bySource).To(HaveLen(3), "datagrams from three source addresses")
		Expect(bySource).NotTo(HaveKey(client), "none from the client's own address")
		var served []string
		for src, servers := range bySource {
			Expect(servers).To(HaveLen(2), "source %s", src)
			Expect(servers).To(HaveEach(servers[0]), "source %s keeps its server", src)
			served = append(served, servers...)
		}
		Expect(served).To(ConsistOf(results[0].Observed), "what verify reported is what the director did")
	})

	// One model per service through the whole run: with each check predicted
	// afresh, every new client of a persistent rr service was predicted the first
	// server.
	It("keeps the model's state from check to check (persistent rr, three checks, new and known clients)", Label("persistence"), func() {
		file := variant("scenarios/nat-ppc.yaml", func(s *scenario.Scenario) {
			check := func(name string, sources int) lab.Check {
				return lab.Check{Name: name, From: "client", Dev: "eth1", HTTP: "http://203.0.113.1/",
					Requests: 3, Sources: sources, Expect: lab.Expect{Model: true, Sticky: true}}
			}
			s.Checks = []lab.Check{check("the client", 0), check("a second client", 1), check("the second again, and a third", 2)}
		})
		results, stderr, code := verifyJSON(file)
		Expect(code).To(Equal(0), stderr)
		Expect(results).To(HaveLen(3))
		for _, r := range results {
			Expect(r.Passed).To(BeTrue(), "%s: %s", r.Check, r.Message)
			Expect(r.Errors).To(BeEmpty(), r.Check)
			Expect(r.Observed).To(HaveEach(BeElementOf("web1", "web2")), r.Check)
		}
		// Three different servers would need three; rr over two: the first and
		// the second client differ, the third takes the first's again.
		Expect(results[1].Observed[0]).NotTo(Equal(results[0].Observed[0]))
		Expect(results[2].Observed[:3]).To(HaveEach(results[1].Observed[0]))
		Expect(results[2].Observed[3:]).To(HaveEach(results[0].Observed[0]))
	})

	// Persistence under wlc: the templates' servers depend on how many
	// connections each earlier client made (they count where their template
	// points), over checks that mix the client, new sources and known ones, with
	// held connections among them.
	It("follows persistent wlc where clients make different numbers of requests, across mixed checks", Label("persistence"), func() {
		file := variant("scenarios/nat-ppc.yaml", scheduler(lab.WLC), weight("web1", 2), func(s *scenario.Scenario) {
			check := func(name string, requests, sources, hold int) lab.Check {
				return lab.Check{Name: name, From: "client", Dev: "eth1", HTTP: "http://203.0.113.1/",
					Requests: requests, Sources: sources, Hold: hold, Expect: lab.Expect{Model: true, Sticky: true}}
			}
			s.Checks = []lab.Check{
				check("the client, 5 requests", 5, 0, 0),
				check("one new source, 1 request", 1, 1, 0),
				check("three sources (one known), 2 each, the first 2 held", 2, 3, 2),
				check("the client again, 3 requests", 3, 0, 0),
			}
		})
		results, stderr, code := verifyJSON(file)
		Expect(code).To(Equal(0), stderr)
		Expect(results).To(HaveLen(4))
		for _, r := range results {
			Expect(r.Passed).To(BeTrue(), "%s: %s", r.Check, r.Message)
			Expect(r.Predicted).To(Equal(r.Observed))
		}
		Expect(slices.Concat(results[0].Observed, results[1].Observed, results[2].Observed)).To(ContainElements("web1", "web2"), "the clients spread over both servers")
	})

	// sh-port hashes each connection's source port: the model is fed the ports
	// the driver really used.
	It("predicts sh-port from the source ports the connections really used", func() {
		file := variant("scenarios/nat-sh.yaml", scheduler(lab.SH, lab.SHPort), func(s *scenario.Scenario) {
			s.Checks = []lab.Check{{Name: "one address, 30 ports", From: "client", Dev: "eth1", HTTP: "http://203.0.113.1/",
				Requests: 30, Expect: lab.Expect{Model: true}}}
		})
		results, stderr, code := verifyJSON(file)
		Expect(code).To(Equal(0), stderr)
		Expect(results).To(HaveLen(1))
		Expect(results[0].Passed).To(BeTrue(), results[0].Message)
		Expect(results[0].Counts).To(HaveLen(3), "one address spreads over all three servers by port")
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
		k, err := verify.RunningKernel()
		Expect(err).NotTo(HaveOccurred())
		Expect(out).To(ContainSubstring("on kernel " + k.Release))
		xml, err := os.ReadFile(report)
		Expect(err).NotTo(HaveOccurred())
		Expect(string(xml)).To(ContainSubstring(`<property name="kernel" value="` + k.Release + `">`))
		Expect(string(xml)).To(ContainSubstring(`<failure message="first divergence at request 1: expected web1, observed web2">`))
	})
	//   client (+24 addresses) --- director (wrr 3:2:1) --- web1 web2 web3
	//   24,000 connections, 64 in flight, each from a fresh address:port
	It("judges a check with 64 connections in flight by its exact wrr counts, 24,000 connections, none failed", Label("nat"), func() {
		file := variant("scenarios/nat-wrr.yaml", func(s *scenario.Scenario) {
			s.Checks = []lab.Check{{
				Name: "wrr 3:2:1 with 64 in flight", From: "client", Dev: "eth1",
				HTTP: "http://203.0.113.1/", Requests: 1000, Sources: 24, Concurrency: 64,
				Expect: lab.Expect{Model: true, Counts: map[string]int{"web1": 12000, "web2": 8000, "web3": 4000}},
			}}
		})
		results, stderr, code := verifyJSON(file)
		Expect(code).To(Equal(0), stderr)
		Expect(results).To(HaveLen(1))
		r := results[0]
		Expect(r.Passed).To(BeTrue(), r.Message)
		Expect(r.Errors).To(BeEmpty())
		Expect(r.Counts).To(Equal(map[string]int{"web1": 12000, "web2": 8000, "web3": 4000}))
		Expect(r.Observed).To(HaveLen(24000))
		GinkgoWriter.Printf("24,000 connections, 64 in flight: %s, %.0f connections/s\n", r.Duration.Round(time.Millisecond), 24000/r.Duration.Seconds())
	})
})
