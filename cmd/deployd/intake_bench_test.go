package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/deployd/deployd/webhook/webhooktest"
)

// BenchmarkWebhookIntake measures the whole intake path of a signed
// registry_package delivery over real HTTP on 127.0.0.1: deployd started
// through run() as `serve` wires it (router, middleware, signature check,
// parse, match, durable SQLite write with synchronous=FULL, answer, log
// lines at the default info level), next to a bare net/http handler that
// only checks the HMAC-SHA256 and unmarshals the same body. Every request is
// a unique delivery (its own id and a nonce in the body), so deduplication
// never short-circuits, and every one matches a service and queues a
// deployment (202). The service's registry is 127.0.0.1:9, where nothing
// listens, so the deployments the worker picks up fail fast and back off:
// what is measured is intake.
//
// The sub-benchmarks run serially (one connection) and with 16 concurrent
// keep-alive connections. deployd's results carry x-bare, its ns/op divided
// by the bare handler's in the same run (only when both ran). cpu-ns/op is
// the CPU time of the whole test process (client and server) per request,
// which other load on the machine disturbs less than ns/op.
//
//	go test ./cmd/deployd -run '^$' -bench WebhookIntake -benchtime 2s
func BenchmarkWebhookIntake(b *testing.B) {
	bodies := newSignedBodies(b, testSecret)
	deployd := startBenchDeployd(b, "info")
	bare := httptest.NewServer(webhooktest.BareHandler([]byte(testSecret)))
	b.Cleanup(bare.Close)
	client := benchClient(b)

	for _, mode := range []struct {
		name     string
		parallel bool
	}{{"serial", false}, {"conns16", true}} {
		var bareNs float64
		b.Run("bare/"+mode.name, func(b *testing.B) {
			bareNs = runHTTPIntake(b, client, bare.URL+"/webhooks/github", bodies, mode.parallel)
		})
		b.Run("deployd/"+mode.name, func(b *testing.B) {
			ns := runHTTPIntake(b, client, deployd+"/webhooks/github", bodies, mode.parallel)
			if bareNs > 0 {
				b.ReportMetric(ns/bareNs, "x-bare")
			}
		})
	}
}

// runHTTPIntake posts b.N unique deliveries to url, from one goroutine or
// from 16, checks that each is answered 202 and returns the ns/op.
func runHTTPIntake(b *testing.B, client *http.Client, url string, bodies *signedBodies, parallel bool) float64 {
	ds := bodies.make(b.N)
	b.SetBytes(int64(bodies.Size()))
	b.ReportAllocs()
	var next atomic.Int64
	post := func() error {
		return bodies.post(client, url, ds[next.Add(1)-1])
	}
	cpu0 := processCPU()
	b.ResetTimer()
	if parallel {
		// 16 goroutines whatever GOMAXPROCS is, one connection each.
		b.SetParallelism(max(1, 16/runtime.GOMAXPROCS(0)))
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := post(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	} else {
		for range b.N {
			if err := post(); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(float64((processCPU()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
	return float64(b.Elapsed().Nanoseconds()) / float64(b.N)
}

// processCPU is the CPU time (user and system) the test process has used:
// client and server together, but not what other processes took from
// the machine, unlike ns/op.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// signedBodies makes unique signed deliveries of the tagged registry_package
// fixture (see webhooktest.Deliveries), with delivery ids unique across
// runs. Its methods are safe for concurrent use.
type signedBodies struct {
	*webhooktest.Deliveries
	run string // makes delivery ids unique across runs
}

func newSignedBodies(tb testing.TB, secret string) *signedBodies {
	tb.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "webhook", "testdata", "registry_package.published.container-tagged.json"))
	if err != nil {
		tb.Fatal(err)
	}
	g, err := webhooktest.NewDeliveries(raw, []byte(secret), "deployd_bench_nonce")
	if err != nil {
		tb.Fatal(err)
	}
	return &signedBodies{Deliveries: g, run: fmt.Sprintf("%x", time.Now().UnixNano())}
}

// signedDelivery is one delivery and its id.
type signedDelivery struct {
	webhooktest.Delivery
	id string
}

// make returns n deliveries never made before by s.
func (s *signedBodies) make(n int) []signedDelivery {
	out := make([]signedDelivery, n)
	for i, d := range s.Make(n) {
		out[i] = signedDelivery{Delivery: d, id: fmt.Sprintf("bench-%s-%d", s.run, d.Seq)}
	}
	return out
}

// post sends d to url on a kept-alive connection and fails unless the
// answer is 202.
func (s *signedBodies) post(client *http.Client, url string, d signedDelivery) error {
	req, err := http.NewRequest(http.MethodPost, url, s.Reader(d.Delivery))
	if err != nil {
		return err
	}
	req.ContentLength = int64(s.Size())
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "GitHub-Hookshot/bench")
	req.Header.Set("X-GitHub-Event", "registry_package")
	req.Header.Set("X-GitHub-Delivery", d.id)
	req.Header.Set("X-Hub-Signature-256", d.Signature)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	answer, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("delivery %s: status %d: %s", d.id, resp.StatusCode, answer)
	}
	return nil
}

// benchClient keeps up to 32 connections to each server alive.
func benchClient(tb testing.TB) *http.Client {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        64,
		MaxIdleConnsPerHost: 32,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}
	tb.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// startBenchDeployd runs `deployd serve` through run() with a service that
// every bench delivery matches, on a registry where nothing listens, and
// returns its base URL once /healthz answers. Logs go to a file, at level.
// deployd stops at cleanup.
func startBenchDeployd(tb testing.TB, level string) string {
	tb.Helper()
	dir := tb.TempDir()
	secret := filepath.Join(dir, "webhook-secret")
	if err := os.WriteFile(secret, []byte(testSecret), 0o600); err != nil {
		tb.Fatal(err)
	}
	// A port picked here, so that the address is known whatever the log
	// level; another process could take it meanwhile, which is unlikely.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	config := filepath.Join(dir, "deployd.yaml")
	if err := os.WriteFile(config, []byte(webhooktest.DeploydConfig(addr, filepath.Join(dir, "data"), secret, level, "bench-backend")), 0o600); err != nil {
		tb.Fatal(err)
	}
	logs, err := os.Create(filepath.Join(dir, "deployd.log"))
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--config", config}, func(string) string { return "" }, io.Discard, logs)
	}()
	tb.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(time.Minute):
			tb.Error("deployd did not stop within a minute")
		}
		logs.Close()
	})
	url := "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-done:
			tb.Fatalf("deployd exited before listening: %v", err)
		default:
		}
		if resp, err := http.Get(url + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return url
			}
		}
		if time.Now().After(deadline) {
			tb.Fatal("deployd did not answer /healthz within 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
