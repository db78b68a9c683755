package scenario

import (
	"context"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/lvslab/lvslab/pkg/state"
)

// BenchmarkUpNAT measures lvslab up of the NAT lab, from nothing to "every web
// server answers", on the kernel it runs on (make bench runs it in the sandbox,
// so boot is excluded). Teardown is not timed. It reports the median.
func BenchmarkUpNAT(b *testing.B) {
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
	s, err := Load("../../scenarios/nat-rr.yaml")
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Rename("bench"); err != nil {
		b.Fatal(err)
	}
	r := &Runner{Store: state.Store{Dir: b.TempDir()}, Self: self}
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
		if err := r.Down(ctx, "bench"); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	slices.Sort(times)
	b.ReportMetric(float64(times[len(times)/2].Microseconds())/1000, "median-ms")
}
