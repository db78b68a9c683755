package runner

import (
	"context"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/verify"
)

// failovers is how many times each fault is repeated.
const failovers = 20

// BenchmarkFailover brings ha-dr up once and fails its VRRP master over
// failovers times each way, with a client sending a request every 20 ms:
// kill -9 of director1's keepalived (the VIP moves; the service goes on, as
// director1 keeps forwarding), then director1 cut off (its link down: the
// service stops until director2 takes over). It reports the median and max
// time until director2 held the VIP after each kill, and of the client's
// longest outage after each cut; the bound for both is VRRP's master-down,
// 3 × advert_int + skew. Run it in the sandbox kernel (make bench).
func BenchmarkFailover(b *testing.B) {
	s, r := benchScenario(b, "../../scenarios/ha-dr.yaml", "benchha")
	ctx := context.Background()
	l, err := r.Up(ctx, s)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Down(context.Background(), s.Name)
	control, err := r.Control(ctx, s.Name)
	if err != nil {
		b.Fatal(err)
	}
	k, err := verify.RunningKernel()
	if err != nil {
		b.Fatal(err)
	}
	vip := netip.MustParseAddr("203.0.113.1")
	owner := func(name string, only bool, within time.Duration) lab.Action {
		return lab.Action{Kind: lab.ActWait, Within: within, Until: &lab.Condition{Address: vip, Owner: &name, Only: only}}
	}
	act := func(name string, a lab.Action) lab.Step { return lab.Step{Name: name, Action: a} }
	traffic := lab.Action{Kind: lab.ActTraffic, Node: "client", HTTP: "http://203.0.113.1/", Every: 20 * time.Millisecond}
	steps := []lab.Step{act("director1 is master", owner("director1", true, 15*time.Second))}
	for range failovers {
		steps = append(steps,
			act("traffic", traffic),
			act("kill", lab.Action{Kind: lab.ActKill, Node: "director1", Service: "keepalived"}),
			act("vip moved after kill", owner("director2", false, 10*time.Second)),
			act("traffic end after kill", lab.Action{Kind: lab.ActTrafficEnd}),
			act("start", lab.Action{Kind: lab.ActStart, Node: "director1", Service: "keepalived"}),
			act("back", owner("director1", true, 15*time.Second)))
	}
	for range failovers {
		steps = append(steps,
			act("traffic", traffic),
			act("cut", lab.Action{Kind: lab.ActLink, Node: "director1", Dev: "eth1"}),
			act("vip moved after cut", owner("director2", false, 10*time.Second)),
			act("answers", lab.Action{Kind: lab.ActWait, Within: 10 * time.Second, Until: &lab.Condition{From: "client", URL: "http://203.0.113.1/"}}),
			act("traffic end after cut", lab.Action{Kind: lab.ActTrafficEnd}),
			act("plugged in", lab.Action{Kind: lab.ActLink, Node: "director1", Dev: "eth1", Up: true}),
			act("back", owner("director1", true, 15*time.Second)))
	}
	j := &verify.Judge{Spec: &s.Spec, Steps: steps, Nodes: l.Handles(), Lab: l.Name, Director: l.Director, Kernel: k, Control: control}
	b.ResetTimer()
	results := j.Run(ctx)
	b.StopTimer()
	since := regexp.MustCompile(`\(([0-9.]+m?s) after the last change began\)$`)
	outage := regexp.MustCompile(`longest outage ([0-9.]+m?s)`)
	failedRe := regexp.MustCompile(`^\d+ requests, (\d+) failed`)
	var moved, cut []time.Duration
	failedAfterKill := 0
	for _, o := range results {
		if !o.Passed {
			b.Fatalf("%s: %s", o.Step, o.Message)
		}
		switch {
		case o.Check == "vip moved after kill":
			moved = append(moved, parse(b, since, o.Message))
		case o.Check == "traffic end after cut":
			cut = append(cut, parse(b, outage, o.Message))
		case o.Check == "traffic end after kill":
			if m := failedRe.FindStringSubmatch(o.Message); m != nil && m[1] != "0" {
				failedAfterKill++
			}
		}
	}
	d2, _ := s.Spec.Node("director2")
	b.Logf("master-down (bound) %v; VIP moved after kill -9: %s; outage after a cut: %s; kills with failed requests: %d of %d",
		d2.Keepalived.VRRP[0].MasterDown(), figures(moved), figures(cut), failedAfterKill, failovers)
	b.ReportMetric(median(moved).Seconds(), "kill-median-s")
	b.ReportMetric(slices.Max(moved).Seconds(), "kill-max-s")
	b.ReportMetric(median(cut).Seconds(), "cut-outage-median-s")
	b.ReportMetric(slices.Max(cut).Seconds(), "cut-outage-max-s")
}

func parse(b *testing.B, re *regexp.Regexp, msg string) time.Duration {
	b.Helper()
	m := re.FindStringSubmatch(msg)
	if m == nil {
		b.Fatalf("no figure in %q", msg)
	}
	d, err := time.ParseDuration(m[1])
	if err != nil {
		b.Fatal(err)
	}
	return d
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func figures(ds []time.Duration) string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Round(time.Millisecond).String())
	}
	return "median " + median(ds).Round(time.Millisecond).String() + ", max " + slices.Max(ds).Round(time.Millisecond).String() + " (" + strings.Join(out, " ") + ")"
}
