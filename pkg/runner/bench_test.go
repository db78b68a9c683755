package runner

import (
	"context"
	"fmt"
	"github.com/lvslab/lvslab/pkg/lab"
	"maps"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/lvslab/lvslab/pkg/scenario"
	"github.com/lvslab/lvslab/pkg/state"
	"github.com/lvslab/lvslab/pkg/verify"
)

// benchSetup skips where the benchmarks cannot run and returns the NAT scenario
// under the lab name, with a runner of its own.
func benchSetup(b *testing.B, name string) (*scenario.Scenario, *Runner) {
	b.Helper()
	return benchScenario(b, "../../scenarios/nat-rr.yaml", name)
}

// benchScenario is benchSetup for the scenario in file.
func benchScenario(b *testing.B, file, name string) (*scenario.Scenario, *Runner) {
	b.Helper()
	if os.Getuid() != 0 {
		b.Skip("needs root")
	}
	if _, err := os.Stat("/proc/net/ip_vs"); err != nil {
		b.Skip("needs a kernel with IPVS: make bench runs this in the sandbox kernel")
	}
	self := os.Getenv("LVSLAB_BIN")
	if self == "" {
		self = "../../bin/lvslab"
	}
	s, err := scenario.Load(file)
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Rename(name); err != nil {
		b.Fatal(err)
	}
	return s, &Runner{Store: state.Store{Dir: b.TempDir()}, Self: self}
}

// BenchmarkUpNAT measures lvslab up of the NAT lab, from nothing to "every web
// server answers", on the kernel it runs on (make bench runs it in the sandbox,
// so boot is excluded). Teardown is not timed. It reports the median.
func BenchmarkUpNAT(b *testing.B) {
	s, r := benchSetup(b, "bench")
	b.ReportMetric(float64(medianUp(b, r, s).Microseconds())/1000, "median-ms")
}

// medianUp brings s's lab up and down b.N times, timing only up, and returns
// the median.
func medianUp(b *testing.B, r *Runner, s *scenario.Scenario) time.Duration {
	ctx := context.Background()
	var times []time.Duration
	b.ResetTimer()
	for range b.N {
		t := time.Now()
		if _, err := r.Up(ctx, s); err != nil {
			b.Fatal(err)
		}
		times = append(times, time.Since(t))
		b.StopTimer()
		if err := r.Down(ctx, s.Name); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	slices.Sort(times)
	return times[len(times)/2]
}

// BenchmarkClientThroughput measures new HTTP connections per second through the
// NAT director, side by side on one lab: lvslab's Go client (one process, each
// request a new connection read to its end and closed) against a loop of the
// real curl binary (a process per request, as `lvslab exec client -- curl` runs).
// Run it in the sandbox kernel (make bench); each iteration makes 200 Go requests
// and 20 curl requests.
func BenchmarkClientThroughput(b *testing.B) {
	s, r := benchSetup(b, "throughput")
	ctx := context.Background()
	lab, err := r.Up(ctx, s)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Down(ctx, "throughput")
	client := lab.Handles()["client"]
	const goN, curlN = 200, 20
	var goTime, curlTime time.Duration
	b.ResetTimer()
	for range b.N {
		t := time.Now()
		res := verify.HTTPClient{From: client}.Get(ctx, "http://203.0.113.1/", goN)
		goTime += time.Since(t)
		if len(res.Errors) > 0 {
			b.Fatal(res.Errors[0])
		}
		t = time.Now()
		res = verify.CurlClient{From: client}.Get(ctx, "http://203.0.113.1/", curlN)
		curlTime += time.Since(t)
		if len(res.Errors) > 0 {
			b.Fatal(res.Errors[0])
		}
	}
	goRate := float64(goN*b.N) / goTime.Seconds()
	curlRate := float64(curlN*b.N) / curlTime.Seconds()
	b.ReportMetric(goRate, "go-req/s")
	b.ReportMetric(curlRate, "curl-req/s")
	b.ReportMetric(goRate/curlRate, "x-curl")
}

// BenchmarkClientConcurrent measures new HTTP connections per second through
// the NAT director with many in flight, as a check with concurrency sends
// them: 100,020 connections (60 client addresses, 1,667 each; a multiple of
// wrr's cycle of 6) through the wrr 3:2:1 lab (scenarios/nat-wrr.yaml), 128 at
// a time, each from a fresh port of one pool (verify.SourcePorts). It fails
// unless every request is answered and the counts are exactly wrr's: 50,010,
// 33,340 and 16,670. Run it in the sandbox kernel (make bench).
func BenchmarkClientConcurrent(b *testing.B) {
	const sources, perSource, inFlight = 60, 1667, 128
	total := sources * perSource
	want := map[string]int{"web1": total / 2, "web2": total / 3, "web3": total / 6}
	s, r := benchScenario(b, "../../scenarios/nat-wrr.yaml", "concurrent")
	ctx := context.Background()
	l, err := r.Up(ctx, s)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Down(ctx, "concurrent")
	client := l.Handles()["client"]
	srcs, remove, err := verify.AddSources(client, "eth1", netip.MustParsePrefix("203.0.113.100/24"), sources)
	if err != nil {
		b.Fatal(err)
	}
	defer remove()
	ports := verify.NewSourcePorts(32768)
	var elapsed time.Duration
	b.ResetTimer()
	for range b.N {
		t := time.Now()
		res := verify.HTTPClient{From: client, Ports: ports}.GetConcurrent(ctx, "http://203.0.113.1/", perSource, inFlight, srcs...)
		elapsed += time.Since(t)
		if len(res.Errors) > 0 {
			b.Fatalf("%d of %d requests failed; the first: %v", len(res.Errors), total, res.Errors[0])
		}
		if !maps.Equal(res.Counts, want) {
			b.Fatalf("counts %v, want exactly %v", res.Counts, want)
		}
		b.Logf("%d connections, %d in flight, from %d addresses: %v, 0 failed, in %s", total, inFlight, sources, res.Counts, time.Since(t).Round(time.Millisecond))
	}
	b.ReportMetric(float64(total*b.N)/elapsed.Seconds(), "conn/s")
}

// BenchmarkManyLabs brings up 200 nat-rr labs side by side in one kernel (make
// bench runs it in the sandbox, with its default memory), checks that every one
// answers through its director, and reports the memory each lab takes (from
// MemAvailable) and the median time of an up among many.
func BenchmarkManyLabs(b *testing.B) {
	const labs = 200
	s, r := benchSetup(b, "many")
	ctx := context.Background()
	for range b.N {
		_, before, err := memInfo()
		if err != nil {
			b.Fatal(err)
		}
		var times []time.Duration
		var names []string
		for i := range labs {
			name := fmt.Sprintf("many%d", i)
			if err := s.Rename(name); err != nil {
				b.Fatal(err)
			}
			t := time.Now()
			l, err := r.Up(ctx, s)
			if err != nil {
				b.Fatalf("lab %d: %v", i, err)
			}
			times = append(times, time.Since(t))
			names = append(names, l.Name)
		}
		_, after, _ := memInfo()
		for _, name := range names {
			l, err := r.Store.Load(name)
			if err != nil {
				b.Fatal(err)
			}
			res := verify.HTTPClient{From: l.Handles()["client"]}.Get(ctx, "http://203.0.113.1/", 1)
			if len(res.Errors) > 0 {
				b.Fatalf("lab %s does not answer: %v", name, res.Errors[0])
			}
		}
		b.StopTimer()
		for _, name := range names {
			if err := r.Down(ctx, name); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		slices.Sort(times)
		b.ReportMetric(float64(before-after)/labs/(1<<20), "MiB/lab")
		b.ReportMetric(float64(times[labs/2].Microseconds())/1000, "median-up-ms")
		b.ReportMetric(float64(times[labs-1].Microseconds())/1000, "max-up-ms")
	}
}

// BenchmarkUpContainerlab measures lvslab up of the 4-node NAT lab in Docker
// containers (containerlab's deploy) from the call to web servers answering,
// with lvslab's engine running and the node image in it (both made once,
// before the timer: the first up of a sandbox pays about 12 s more for them).
// Run it in the sandbox kernel (make bench); the target is a median of 45 s.
func BenchmarkUpContainerlab(b *testing.B) {
	s, r := benchSetup(b, "benchclab")
	r.RuntimeName = lab.RuntimeContainerlab
	ctx := context.Background()
	b.Cleanup(func() { _, _ = r.GC(context.Background()) }) // the engine too, before its directory goes
	if _, err := r.RuntimeFor(ctx, lab.RuntimeContainerlab, true); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(medianUp(b, r, s).Seconds(), "median-s")
}
