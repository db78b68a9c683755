package runner

import (
	"context"
	"fmt"
	"testing"
	"time"
)

func BenchmarkPhases(b *testing.B) {
	s, r := benchSetup(b, "phase")
	ctx := context.Background()
	sums := map[string]time.Duration{}
	var order []string
	for range b.N {
		last := time.Now()
		r.Log = func(step string, err error) {
			if _, ok := sums[step]; !ok {
				order = append(order, step)
			}
			sums[step] += time.Since(last)
			last = time.Now()
		}
		if _, err := r.Up(ctx, s); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		r.Log = nil
		r.Down(ctx, "phase")
		b.StartTimer()
	}
	for _, k := range order {
		fmt.Printf("%-50s %v\n", k, sums[k]/time.Duration(b.N))
	}
}
