package runner

import (
	"context"
	"strings"
	"testing"
	"time"
)

// BenchmarkUpPhases says where the time of an up goes, step by step (make bench
// runs it in the sandbox kernel): the topology (modules, record, namespaces,
// links), apply with its read-back, and starting the web servers until they
// answer. Each is reported in ms per up.
func BenchmarkUpPhases(b *testing.B) {
	s, r := benchSetup(b, "phase")
	ctx := context.Background()
	sums := map[string]time.Duration{}
	for range b.N {
		last := time.Now()
		r.Log = func(step string, err error) {
			sums[strings.Fields(step)[0]] += time.Since(last)
			last = time.Now()
		}
		if _, err := r.Up(ctx, s); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		r.Log = nil
		if err := r.Down(ctx, "phase"); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	for step, d := range sums {
		b.ReportMetric(float64(d.Microseconds())/1000/float64(b.N), step+"-ms")
	}
}
