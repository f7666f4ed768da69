package storetest

import (
	"sync"
	"testing"
)

// Writers runs b.N calls of op spread over n goroutines, as n concurrent
// writers would, and reports the rate as unit/s.
func Writers(b *testing.B, n int, unit string, op func() error) {
	b.ResetTimer()
	var wg sync.WaitGroup
	for w := 0; w < n; w++ {
		calls := b.N / n
		if w < b.N%n {
			calls++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < calls; i++ {
				if err := op(); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), unit+"/s")
}
