package e2e

import (
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/scenario"
	"github.com/lvslab/lvslab/pkg/verify"
)

// sinceChange reads how long after the last change a wait step's condition
// held, from its message.
var sinceChange = regexp.MustCompile(`\(([0-9.]+m?s) after the last change began\)$`)

// stepOutcome finds the outcome of a step's action by the step's name.
func stepOutcome(results []verify.Outcome, name string) verify.Outcome {
	GinkgoHelper()
	for _, r := range results {
		if r.Kind == "step" && strings.HasSuffix(r.Step, ": "+name) {
			return r
		}
	}
	Fail("no step " + name)
	return verify.Outcome{}
}

// measured is the time after the last change that a wait step reports.
func measured(r verify.Outcome) time.Duration {
	GinkgoHelper()
	m := sinceChange.FindStringSubmatch(r.Message)
	Expect(m).NotTo(BeNil(), r.Message)
	d, err := time.ParseDuration(m[1])
	Expect(err).NotTo(HaveOccurred())
	return d
}

// The HA chapter: two DR directors under real keepalived (VRRP), the master
// stopped cleanly, then killed with -9. How long the VIP takes to move is
// timing, bounded by what the configuration gives: the backup takes over once
// it has heard no advert for 3 x advert_int + skew (RFC 3768, keepalived's
// VRRPv2 timers), and adverts come every advert_int, so after a crash it
// takes between 2 x advert_int + skew and 3 x advert_int + skew.
var _ = Describe("Two directors under keepalived", Label("ha"), func() {
	It("move the VIP to the backup within the bounds VRRP's timers give, and the service answers through it", func() {
		s, err := scenario.Load(repo + "/scenarios/ha-dr.yaml")
		Expect(err).NotTo(HaveOccurred())
		backup, _ := s.Spec.Node("director2")
		vrrp := backup.Keepalived.VRRP[0]
		advert := time.Duration(vrrp.AdvertInt) * time.Second
		const slack = 250 * time.Millisecond // the wait's polling (10 ms) and the sandbox's timer wheel

		results, stderr, code := verifyJSON("scenarios/ha-dr.yaml")
		expectAllPassed(results, stderr, code)

		stop := stepOutcome(results, "director1's keepalived stops cleanly (it sends priority 0)")
		clean := measured(stepOutcome(results, "director2 takes the VIP (after a clean stop, no later than after a crash)"))
		Expect(clean).To(BeNumerically("<=", stop.Duration+vrrp.MasterDown()+slack))

		crash := measured(stepOutcome(results, "director2 takes the VIP once 3 x advert_int + skew (3.61 s) pass without an advert"))
		Expect(crash).To(BeNumerically(">=", vrrp.MasterDown()-advert))
		Expect(crash).To(BeNumerically("<=", vrrp.MasterDown()+slack))

		// Killing keepalived alone interrupts nothing: director1 keeps the VIP
		// and its table. Cut off, it takes the service with it until director2
		// takes over: the client's requests (one every 20 ms, each given 500 ms)
		// fail for master-down, give or take an advert and a request.
		// (A connection open while the client's ARP entry moves to director2
		// breaks, as director2 never saw it: 1 kill in 20 lost one request in
		// BenchmarkFailover.)
		goOn := stepOutcome(results, "the service went on (killing keepalived left director1 holding the VIP and forwarding; only a connection open while the VIP moves can break)")
		Expect(goOn.Message).To(MatchRegexp(`^\d+ requests, [012] failed`))
		end := stepOutcome(results, "the traffic stops; its requests failed for at most master-down plus a request's timeout")
		m := regexp.MustCompile(`^(\d+) requests, (\d+) failed; longest outage ([0-9.]+m?s)`).FindStringSubmatch(end.Message)
		Expect(m).NotTo(BeNil(), end.Message)
		outage, err := time.ParseDuration(m[3])
		Expect(err).NotTo(HaveOccurred())
		Expect(outage).To(BeNumerically("<=", vrrp.MasterDown()+500*time.Millisecond+slack), end.Message)
		Expect(outage).To(BeNumerically(">=", vrrp.MasterDown()-advert-500*time.Millisecond), end.Message)

		AddReportEntry("VIP failover", map[string]string{
			"requests while director1 was cut off": end.Message,
			"clean stop (from SIGTERM)":            clean.String(),
			"keepalived's own stop":                stop.Duration.Round(time.Millisecond).String(),
			"kill -9":                              crash.String(),
			"bound after kill -9":                  (vrrp.MasterDown() - advert).String() + " .. " + (vrrp.MasterDown() + slack).String(),
		})
		GinkgoWriter.Printf("failover: clean stop %v (keepalived's stop took %v), kill -9 %v (bounds %v..%v)\n",
			clean, stop.Duration.Round(time.Millisecond), crash, vrrp.MasterDown()-advert, vrrp.MasterDown()+slack)
	})

	It("takes a failing real server out of the table within the checker's bound, and puts it back within its bound", func() {
		s, err := scenario.Load(repo + "/scenarios/ha-healthcheck.yaml")
		Expect(err).NotTo(HaveOccurred())
		d, _ := s.Spec.Node("director")
		chk := *d.Keepalived.Check
		const slack = 250 * time.Millisecond
		results, stderr, code := verifyJSON("scenarios/ha-healthcheck.yaml")
		Expect(code).To(Equal(0), stderr)
		var out, back []string
		for _, r := range results {
			Expect(r.Passed).To(BeTrue(), "%s %s: %s", r.Step, r.Check, r.Message)
			if r.Kind != "step" || !strings.Contains(r.Message, "after the last change began") {
				continue
			}
			took := measured(r)
			// The sorry server comes in when the last real server goes out,
			// and goes out when one comes back.
			sorry := strings.Contains(r.Message, "127.0.0.1:80")
			switch {
			case strings.Contains(r.Message, " is not in ") != sorry:
				Expect(took).To(BeNumerically("<=", chk.RemovalBound()+slack), r.Step)
				out = append(out, took.String())
			default:
				Expect(took).To(BeNumerically("<=", chk.ReturnBound()+slack), r.Step)
				back = append(back, took.String())
			}
		}
		Expect(out).To(HaveLen(5))  // 500, stall, stopped, cut off; the last one gone (the sorry server in)
		Expect(back).To(HaveLen(6)) // after each, then the sorry server out, and web2 back
		AddReportEntry("health checks", map[string]string{
			"out of the table (500, stall, stop, cut; sorry server in)": strings.Join(out, ", "), "bound out": chk.RemovalBound().String(),
			"back in the table": strings.Join(back, ", "), "bound back": chk.ReturnBound().String(),
		})
	})

	It("keeps a failing real server with weight 0 under inhibit_on_failure", func() {
		file := variant("scenarios/ha-healthcheck.yaml", func(s *scenario.Scenario) {
			nodeSpec(s, "director").Keepalived.Check.InhibitOnFailure = true
			zero, one := 0, 1
			web2 := netip.MustParseAddrPort("203.0.113.12:80")
			in := func(w *int) *lab.Condition {
				return &lab.Condition{Service: "tcp:203.0.113.1:80", Server: web2, Present: true, Weight: w}
			}
			s.Steps = []lab.Step{
				{Name: "the table is full", Action: lab.Action{Kind: lab.ActWait, Until: in(&one), Within: 10 * time.Second}},
				{Name: "web2 answers 500", Action: lab.Action{Kind: lab.ActFault, Node: "web2", Answer: lab.AnswerError}},
				{Name: "web2 stays with weight 0", Action: lab.Action{Kind: lab.ActWait, Until: in(&zero), Within: 6 * time.Second},
					Checks: []lab.Check{{Name: "only web1 answers", From: "client", Dev: "eth1", HTTP: "http://203.0.113.1/", Requests: 4, Expect: lab.Expect{Counts: map[string]int{"web1": 4}}}}},
				{Name: "web2 answers again", Action: lab.Action{Kind: lab.ActFault, Node: "web2", Answer: lab.AnswerOK}},
				{Name: "web2 has its weight back", Action: lab.Action{Kind: lab.ActWait, Until: in(&one), Within: 4 * time.Second}},
			}
		})
		results, stderr, code := verifyJSON(file)
		expectAllPassed(results, stderr, code)
	})

	It("with TCP_CHECK, keeps a server that answers 500 (the port still opens) and takes out one that stops", func() {
		file := variant("scenarios/ha-healthcheck.yaml", func(s *scenario.Scenario) {
			chk := nodeSpec(s, "director").Keepalived.Check
			chk.Kind, chk.Path, chk.StatusCode = lab.CheckTCP, "", 0
			web2 := netip.MustParseAddrPort("203.0.113.12:80")
			in := &lab.Condition{Service: "tcp:203.0.113.1:80", Server: web2, Present: true}
			out := &lab.Condition{Service: "tcp:203.0.113.1:80", Server: web2}
			s.Steps = []lab.Step{
				{Name: "the table is full", Action: lab.Action{Kind: lab.ActWait, Until: in, Within: 10 * time.Second}},
				{Name: "web2 answers 500", Action: lab.Action{Kind: lab.ActFault, Node: "web2", Answer: lab.AnswerError}},
				{Name: "longer than the removal bound passes", Action: lab.Action{Kind: lab.ActWait, For: chk.RemovalBound() + time.Second}},
				{Name: "web2 is still in the table: a TCP check does not read the answer", Action: lab.Action{Kind: lab.ActWait, Until: in, Within: 100 * time.Millisecond},
					Checks: []lab.Check{{Name: "web2's two turns of four answer 500", From: "client", Dev: "eth1", HTTP: "http://203.0.113.1/", Requests: 4, Expect: lab.Expect{Failures: 2, Counts: map[string]int{"web1": 2}}}}},
				{Name: "web2 answers 200 again", Action: lab.Action{Kind: lab.ActFault, Node: "web2", Answer: lab.AnswerOK}},
				{Name: "web2's web server stops", Action: lab.Action{Kind: lab.ActStop, Node: "web2", Service: lab.ServiceWeb}},
				{Name: "web2 leaves the table: its port refuses", Action: lab.Action{Kind: lab.ActWait, Until: out, Within: chk.RemovalBound() + 2*time.Second}},
				{Name: "web2's web server starts again", Action: lab.Action{Kind: lab.ActStart, Node: "web2", Service: lab.ServiceWeb}},
				{Name: "web2 is back", Action: lab.Action{Kind: lab.ActWait, Until: in, Within: chk.ReturnBound() + 2*time.Second}},
			}
		})
		results, stderr, code := verifyJSON(file)
		expectAllPassed(results, stderr, code)
		b, err := os.ReadFile(file)
		Expect(err).NotTo(HaveOccurred())
		Expect(string(b)).To(ContainSubstring("kind: tcp"))
	})

	It("with nopreempt, leaves the VIP with the backup when the old master returns", func() {
		file := variant("scenarios/ha-dr.yaml", func(s *scenario.Scenario) {
			for _, d := range []string{"director1", "director2"} {
				v := &nodeSpec(s, d).Keepalived.VRRP[0]
				v.State, v.NoPreempt = "BACKUP", true // keepalived honours nopreempt only from BACKUP
			}
			owner := func(n string) *lab.Condition {
				return &lab.Condition{Address: netip.MustParseAddr("203.0.113.1"), Owner: &n, Only: true}
			}
			vrrp := func(n string, st lab.VRRPState) *lab.Condition {
				return &lab.Condition{VRRPNode: n, Instance: "VI_1", State: st}
			}
			backup, _ := s.Spec.Node("director2")
			down := backup.Keepalived.VRRP[0].MasterDown()
			// Both start as BACKUP with nopreempt, so whichever times out
			// first is master and stays so: director1's shorter skew (0.41 s
			// against 0.61 s) wins only if both started within 0.2 s of each
			// other, which a loaded machine does not promise. director2 waits
			// until director1 is elected, then joins as its backup.
			s.Steps = []lab.Step{
				{Name: "director2's keepalived stops until director1 is elected", Action: lab.Action{Kind: lab.ActStop, Node: "director2", Service: "keepalived"}},
				{Name: "director1 (priority 150) is elected", Action: lab.Action{Kind: lab.ActWait, Until: owner("director1"), Within: 15 * time.Second}},
				{Name: "director2's keepalived starts", Action: lab.Action{Kind: lab.ActStart, Node: "director2", Service: "keepalived"}},
				{Name: "director2 comes up as BACKUP", Action: lab.Action{Kind: lab.ActWait, Until: vrrp("director2", lab.VRRPBackup), Within: 5 * time.Second}},
				{Name: "director1's keepalived stops", Action: lab.Action{Kind: lab.ActStop, Node: "director1", Service: "keepalived"}},
				{Name: "director2 takes the VIP", Action: lab.Action{Kind: lab.ActWait, Until: owner("director2"), Within: 5 * time.Second}},
				{Name: "director1's keepalived starts again", Action: lab.Action{Kind: lab.ActStart, Node: "director1", Service: "keepalived"}},
				{Name: "director1 comes up as BACKUP", Action: lab.Action{Kind: lab.ActWait, Until: vrrp("director1", lab.VRRPBackup), Within: 5 * time.Second}},
				{Name: "longer than master-down passes twice", Action: lab.Action{Kind: lab.ActWait, For: 2*down + time.Second}},
				{Name: "director2 still holds the VIP: nopreempt", Action: lab.Action{Kind: lab.ActWait, Until: owner("director2"), Within: 100 * time.Millisecond}},
				{Name: "and director1 is still BACKUP", Action: lab.Action{Kind: lab.ActWait, Until: vrrp("director1", lab.VRRPBackup), Within: time.Second}},
			}
		})
		results, stderr, code := verifyJSON(file)
		expectAllPassed(results, stderr, code)
	})

	It("loses every connection held through the master at failover without the sync daemon, and none with it", func() {
		results, stderr, code := verifyJSON("scenarios/ha-sync.yaml")
		expectAllPassed(results, stderr, code)
		without := stepOutcome(results, "without the sync daemon every held connection breaks (director2 never saw them and resets them)")
		Expect(without.Message).To(Equal("0 held connections answered, 5 lost"))
		with := stepOutcome(results, "with the sync daemon every held connection survives (director2 forwards it to the same real server)")
		Expect(with.Message).To(Equal("5 held connections answered, 0 lost"))
		// Measured from the start of the hold: the master's thread sends a
		// buffer once it is 2 s old (IPVS_SYNC_FLUSH_TIME), looking every second
		// (IPVS_SYNC_CHECK_PERIOD), and the buffer began with the first
		// connection's third packet, during the hold.
		hold := stepOutcome(results, "five connections held open through director1 again, each in the middle of its request")
		synced := measured(stepOutcome(results, "director2's table has them (the master sends what it has gathered at least every 2 s)"))
		Expect(synced).To(BeNumerically(">=", 2*time.Second))
		Expect(synced).To(BeNumerically("<=", hold.Duration+3*time.Second+250*time.Millisecond))
		AddReportEntry("connection sync", map[string]string{
			"held connections lost without the sync daemon": "5 of 5",
			"held connections lost with it":                 "0 of 5",
			"until director2's table had them":              synced.String(),
		})
	})

	It("moves the NAT directors' VIP and inside gateway together (a sync group), so replies come back through the new master", func() {
		s, err := scenario.Load(repo + "/scenarios/ha-nat.yaml")
		Expect(err).NotTo(HaveOccurred())
		backup, _ := s.Spec.Node("director2")
		vrrp := backup.Keepalived.VRRP[0]
		advert := time.Duration(vrrp.AdvertInt) * time.Second
		const slack = 250 * time.Millisecond

		results, stderr, code := verifyJSON("scenarios/ha-nat.yaml")
		expectAllPassed(results, stderr, code)
		// Cut off outside, director1's VI_OUT goes to FAULT and takes VI_IN
		// with it; it sends no more adverts on either side, and director2
		// takes over once master-down passes without one.
		gw := measured(stepOutcome(results, "director1 gives the inside gateway up too (VI_OUT's fault takes its sync group with it)"))
		Expect(gw).To(BeNumerically(">=", vrrp.MasterDown()-advert))
		Expect(gw).To(BeNumerically("<=", vrrp.MasterDown()+slack))
		end := stepOutcome(results, "the traffic stops; its requests failed for at most master-down plus a request's timeout")
		AddReportEntry("NAT failover (cut off outside)", map[string]string{"gateway moved": gw.String(), "traffic": end.Message})

		// Without the sync group, director1 keeps the inside gateway: the
		// real servers' replies go to it, and it has not the connections.
		file := variant("scenarios/ha-nat.yaml", func(s *scenario.Scenario) {
			for _, d := range []string{"director1", "director2"} {
				for i := range nodeSpec(s, d).Keepalived.VRRP {
					nodeSpec(s, d).Keepalived.VRRP[i].SyncGroup = ""
				}
			}
			// Only the cut and what follows it.
			keep := []string{"director1 alone holds the VIP (VRRP master of VI_OUT)", "director1 alone holds the inside gateway (VI_IN)",
				"director1 is cut off from the outside (eth1 down); its inside link stays up",
				"director1 gives the inside gateway up too (VI_OUT's fault takes its sync group with it)",
				"director2 holds the VIP", "the service answers through director2 after the cut"}
			s.Steps = slices.DeleteFunc(s.Steps, func(st lab.Step) bool { return !slices.Contains(keep, st.Name) })
			Expect(s.Steps).To(HaveLen(len(keep)))
		})
		results, _, code = verifyJSON(file)
		Expect(code).To(Equal(1))
		kept := stepOutcome(results, "director1 gives the inside gateway up too (VI_OUT's fault takes its sync group with it)")
		Expect(kept.Passed).To(BeFalse())
		Expect(kept.Message).To(ContainSubstring("held by [director1"))
		Expect(stepOutcome(results, "director2 holds the VIP").Passed).To(BeTrue())
		answers := stepOutcome(results, "the service answers through director2 after the cut")
		Expect(answers.Passed).To(BeFalse(), answers.Message)
	})

	It("rejects VRRP instances keepalived would refuse, naming the file and the field, before building anything", func() {
		b, err := os.ReadFile(repo + "/scenarios/ha-dr.yaml")
		Expect(err).NotTo(HaveOccurred())
		text := strings.Replace(string(b), "../topologies/", repo+"/topologies/", 1)
		text = strings.Replace(text, "state: BACKUP, priority: 100", "state: BACKUP, priority: 255", 1)
		file := filepath.Join(GinkgoT().TempDir(), "ha-dr-255.yaml")
		Expect(os.WriteFile(file, []byte(text), 0o644)).To(Succeed())
		_, stderr, code := lv("verify", file)
		Expect(code).To(Equal(1))
		Expect(stderr).To(ContainSubstring("ha-dr-255.yaml: nodes.director2.keepalived.vrrp[0].priority: 255 is out of range (1..254; 255 is the address owner's)"))
		Expect(namespacesOf("ha-dr-verify")).To(BeEmpty())
	})
})
