package sqlite

import (
	"context"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/deployd/deployd/deployer"
)

// The two benchmarks record one delivery that queues one deployment per
// operation, each durably committed. Compare their ns/op: the parallel one
// shares commits between callers, the serial one cannot. ns/op includes the
// time spent waiting for the disk to sync; cpu-ns/op is the CPU time the
// process spent per operation, which is what limits a busy server.

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
	cpu0 := processCPU()
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
	b.ReportMetric(float64((processCPU()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
}

// processCPU is the CPU time (user and system) the process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
