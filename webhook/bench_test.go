package webhook

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/deployd/deployd/deployer"
	"github.com/deployd/deployd/webhook/webhooktest"
)

// benchBodies is how many distinct signed deliveries a benchmark cycles through.
const benchBodies = 1024

// nopRecorder records nothing and hands out deployment ids.
type nopRecorder struct{ next atomic.Int64 }

func (n *nopRecorder) RecordDelivery(_ context.Context, _ deployer.Delivery, reqs []deployer.Request) (deployer.Receipt, error) {
	ids := make([]int64, len(reqs))
	for i := range ids {
		ids[i] = n.next.Add(1)
	}
	return deployer.Receipt{Deployments: ids}, nil
}

// benchDelivery is one signed delivery, ready to be replayed.
type benchDelivery struct {
	body []byte
	sig  string
	id   string
}

// benchDeliveries returns n registry_package deliveries: the tagged fixture,
// compacted as GitHub sends it, each with a distinct nonce field and signed.
func benchDeliveries(b *testing.B, n int) []benchDelivery {
	b.Helper()
	g, err := webhooktest.NewDeliveries(fixture(b, "registry_package.published.container-tagged.json"), []byte(testSecret), "deployd_bench_nonce")
	if err != nil {
		b.Fatal(err)
	}
	out := make([]benchDelivery, n)
	for i, d := range g.Make(n) {
		out[i] = benchDelivery{body: g.Body(d), sig: d.Signature, id: fmt.Sprintf("bench-%d", i)}
	}
	return out
}

func newBenchRequest(d benchDelivery) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/webhooks/github", bytes.NewReader(d.body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("X-GitHub-Event", EventRegistryPackage)
	r.Header.Set("X-GitHub-Delivery", d.id)
	r.Header.Set("X-Hub-Signature-256", d.sig)
	return r
}

func newBenchHandler(b *testing.B) *Handler {
	h, err := NewHandler(HandlerConfig{
		Secret:   []byte(testSecret),
		Matcher:  newTestMatcher(b, testConfig()),
		Recorder: &nopRecorder{},
		Logger:   zerolog.New(io.Discard),
	})
	if err != nil {
		b.Fatal(err)
	}
	return h
}

// runIntake sends the deliveries through h round-robin, serially or from
// GOMAXPROCS goroutines, and checks every answer's status.
func runIntake(b *testing.B, h http.Handler, ds []benchDelivery, parallel bool) {
	b.SetBytes(int64(len(ds[0].body)))
	b.ReportAllocs()
	one := func(i int) {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, newBenchRequest(ds[i%len(ds)]))
		if w.Code != http.StatusAccepted {
			b.Fatalf("status %d: %s", w.Code, w.Body)
		}
	}
	b.ResetTimer()
	if !parallel {
		for i := 0; b.Loop(); i++ {
			one(i)
		}
		return
	}
	var n atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			one(int(n.Add(1)))
		}
	})
}

// BenchmarkIntake is the whole intake path of a signed registry_package
// delivery through the Handler (cap, verify, parse, match, hash, record,
// answer, log line) with a recorder that stores nothing.
// Compare with BenchmarkBare.
func BenchmarkIntake(b *testing.B) {
	ds := benchDeliveries(b, benchBodies)
	h := newBenchHandler(b)
	b.Run("serial", func(b *testing.B) { runIntake(b, h, ds, false) })
	b.Run("parallel", func(b *testing.B) { runIntake(b, h, ds, true) })
}

// BenchmarkBare is the baseline for BenchmarkIntake: HMAC-SHA256 and
// json.Unmarshal of the same deliveries in a bare net/http handler.
func BenchmarkBare(b *testing.B) {
	ds := benchDeliveries(b, benchBodies)
	h := webhooktest.BareHandler([]byte(testSecret))
	b.Run("serial", func(b *testing.B) { runIntake(b, h, ds, false) })
	b.Run("parallel", func(b *testing.B) { runIntake(b, h, ds, true) })
}

// BenchmarkIntakeVsBare interleaves the two handlers request by request, so
// that both see the same machine load, and reports the ratio of their mean
// and 99th-percentile latencies (intake/bare).
func BenchmarkIntakeVsBare(b *testing.B) {
	ds := benchDeliveries(b, benchBodies)
	intake, bare := newBenchHandler(b), webhooktest.BareHandler([]byte(testSecret))
	var ti, tb []time.Duration
	timed := func(h http.Handler, d benchDelivery) time.Duration {
		r, w := newBenchRequest(d), httptest.NewRecorder()
		start := time.Now()
		h.ServeHTTP(w, r)
		took := time.Since(start)
		if w.Code != http.StatusAccepted {
			b.Fatalf("status %d: %s", w.Code, w.Body)
		}
		return took
	}
	for i := 0; b.Loop(); i++ {
		d := ds[i%len(ds)]
		if i%2 == 0 { // alternate which goes first
			tb = append(tb, timed(bare, d))
			ti = append(ti, timed(intake, d))
		} else {
			ti = append(ti, timed(intake, d))
			tb = append(tb, timed(bare, d))
		}
	}
	mi, mb := mean(ti), mean(tb)
	pi, pb := p99(ti), p99(tb)
	b.ReportMetric(float64(mi.Nanoseconds()), "intake-ns/req")
	b.ReportMetric(float64(mb.Nanoseconds()), "bare-ns/req")
	b.ReportMetric(float64(mi)/float64(mb), "mean-ratio")
	b.ReportMetric(float64(pi)/float64(pb), "p99-ratio")
}

func mean(ds []time.Duration) time.Duration {
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	return sum / time.Duration(max(len(ds), 1))
}

func p99(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)*99/100]
}
