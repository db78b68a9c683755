package sandbox

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// BenchmarkBoot measures the sandbox kernel from start to an agent that serves
// requests. Power-off is not timed. It reports the median.
func BenchmarkBoot(b *testing.B) {
	if _, err := os.Stat("/usr/bin/linux.uml"); err != nil {
		b.Skip("needs user-mode-linux (make deps)")
	}
	self, err := filepath.Abs("../../bin/lvslab")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := exec.LookPath(self); err != nil {
		b.Skip("build lvslab first (make build)")
	}
	var times []time.Duration
	b.ResetTimer()
	for range b.N {
		t := time.Now()
		k, err := Boot(context.Background(), Config{Self: self})
		if err != nil {
			b.Fatal(err)
		}
		times = append(times, time.Since(t))
		b.StopTimer()
		if err := k.Shutdown(10 * time.Second); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	slices.Sort(times)
	b.ReportMetric(float64(times[len(times)/2].Microseconds())/1000, "median-ms")
}
