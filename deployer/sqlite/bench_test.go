package sqlite

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/deployd/deployd/deployer"
)

// The two benchmarks record one delivery that queues one deployment per
// operation, each durably committed. Compare their ns/op: the parallel one
// shares commits between callers, the serial one cannot.

func BenchmarkRecordDeliverySerial(b *testing.B) {
	benchmarkRecordDelivery(b, false)
}

func BenchmarkRecordDeliveryParallel(b *testing.B) {
	benchmarkRecordDelivery(b, true)
}

func benchmarkRecordDelivery(b *testing.B, parallel bool) {
	var commits atomic.Int64
	s, _ := openTestStore(b, WithCommitHook(func(int) { commits.Add(1) }))
	ctx := context.Background()
	var n atomic.Int64
	record := func() error {
		i := n.Add(1)
		svc := fmt.Sprintf("svc%d", i%8)
		_, err := s.RecordDelivery(ctx, delivery(fmt.Sprintf("bench-%d", i)), []deployer.Request{request(svc, "latest")})
		return err
	}
	b.ReportAllocs()
	b.ResetTimer()
	if parallel {
		b.SetParallelism(16) // 16 × GOMAXPROCS callers, like a burst of webhooks
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := record(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	} else {
		for b.Loop() {
			if err := record(); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(commits.Load())/float64(b.N), "commits/op")
}
