package fleet_test

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/deployd/deployd/deployer"
	"github.com/deployd/deployd/fleet"
)

// simAgent is a simulated agent: it takes host's intents through the real
// Intents and reports each succeeded at once, noting when it saw each.
type simAgent struct {
	mu   sync.Mutex
	seen map[string]time.Time // digest → when the intent arrived
}

func runSimAgent(tb testing.TB, ctx context.Context, js jetstream.JetStream, host string) *simAgent {
	tb.Helper()
	in, err := fleet.OpenIntents(ctx, js, host)
	if err != nil {
		tb.Fatal(err)
	}
	a := &simAgent{seen: map[string]time.Time{}}
	go func() {
		for {
			p, err := in.Next(ctx)
			if err != nil {
				return
			}
			at := time.Now()
			a.mu.Lock()
			a.seen[p.Intent.Digest] = at
			a.mu.Unlock()
			data, _ := json.Marshal(fleet.Report{Kind: fleet.ReportResult, Host: host, Service: p.Intent.Service, Seq: p.Intent.Seq,
				State: deployer.StateSucceeded, Digest: p.Intent.Digest, Running: p.Intent.Digest})
			if _, err := js.Publish(ctx, fleet.ReportSubject(host, p.Intent.Service), data); err != nil {
				return
			}
			if err := p.Done(ctx); err != nil {
				return
			}
		}
	}()
	return a
}

func (a *simAgent) at(digest string) time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.seen[digest]
}

// benchDigest returns a distinct digest for i.
func benchDigest(i int) string { return fmt.Sprintf("sha256:%064x", i+1) }

// quantile returns the q quantile of sorted durations.
func quantile(sorted []time.Duration, q float64) time.Duration {
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]
}

// BenchmarkIntentLatency measures, per deployment, the time from queuing
// it in the hub's store to its intent arriving at a (simulated) agent:
// claim, the hub's executor (credential, resolve, host status, guard,
// rollout and host deployment rows, sealing, publish), JetStream, the
// agent's durable consumer. It measures a bare JetStream publish → durable
// consumer round trip on the same server in the same run, and reports
// both medians and p99s and the ratios. Run with -benchtime=1000x for
// 1,000 intents.
func BenchmarkIntentLatency(b *testing.B) {
	_, js := hub(b, "web-1", "bare")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store := openStore(b, b.TempDir())
	hubKey, _ := curveKey(b)
	_, agentPub := curveKey(b)
	tags := &tags{m: map[string]string{}}
	h, err := fleet.NewHub(fleet.HubConfig{
		Services: map[string]deployer.Service{"backend": {Name: "backend", Image: image, Host: "127.0.0.1:5000",
			Hosts: []string{"web-1"}, Rollout: deployer.RolloutAllAtOnce}},
		Store: store, Credentials: &chain{}, Resolver: tags, JetStream: js, Key: hubKey,
		Agents: map[string]string{"web-1": agentPub}, Logger: zerolog.Nop(),
	})
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = h.Run(ctx) }()
	agent := runSimAgent(b, ctx, js, "web-1")

	bareCons, err := js.Consumer(ctx, fleet.IntentStream, fleet.AgentConsumer("bare"))
	if err != nil {
		b.Fatal(err)
	}
	hubLat := make([]time.Duration, 0, b.N)
	bareLat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		d := benchDigest(i)
		tags.set(image+":latest", d)
		start := time.Now()
		if _, err := store.Enqueue(ctx, deployer.Request{Service: "backend", Tag: "latest",
			Trigger: deployer.Trigger{Kind: deployer.TriggerWebhook}}); err != nil {
			b.Fatal(err)
		}
		dep, ok, err := store.ClaimNext(ctx, "backend")
		if err != nil || !ok {
			b.Fatal(ok, err)
		}
		dep = h.Execute(ctx, dep)
		if dep.State != deployer.StateSucceeded {
			b.Fatalf("deployment %d: %s %s", dep.ID, dep.State, dep.Error)
		}
		if err := store.Finish(ctx, dep); err != nil {
			b.Fatal(err)
		}
		hubLat = append(hubLat, agent.at(d).Sub(start))

		data, _ := json.Marshal(intent("bare", "backend", int64(i+1)))
		start = time.Now()
		if _, err := js.Publish(ctx, fleet.IntentSubject("bare", "backend"), data); err != nil {
			b.Fatal(err)
		}
		msg, err := bareCons.Next()
		if err != nil {
			b.Fatal(err)
		}
		bareLat = append(bareLat, time.Since(start))
		if err := msg.Ack(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	slices.Sort(hubLat)
	slices.Sort(bareLat)
	hubMed, hubP99 := quantile(hubLat, 0.5), quantile(hubLat, 0.99)
	bareMed, bareP99 := quantile(bareLat, 0.5), quantile(bareLat, 0.99)
	b.ReportMetric(float64(hubMed.Microseconds()), "hub-median-µs")
	b.ReportMetric(float64(hubP99.Microseconds()), "hub-p99-µs")
	b.ReportMetric(float64(bareMed.Microseconds()), "bare-median-µs")
	b.ReportMetric(float64(bareP99.Microseconds()), "bare-p99-µs")
	b.ReportMetric(float64(hubMed)/float64(bareMed), "median-ratio")
	b.ReportMetric(float64(hubP99)/float64(bareP99), "p99-ratio")
}

// BenchmarkHubMemory100Hosts reports the heap in use by a hub with 100
// hosts registered (their consumers set up, 100 simulated agents reading)
// after one all-at-once rollout to all of them, against the heap before
// the hub and its hosts were set up, in the same process (the embedded
// server included).
func BenchmarkHubMemory100Hosts(b *testing.B) {
	hosts := make([]string, 100)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("host-%03d", i)
	}
	for range b.N {
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		_, js := hub(b, hosts...)
		ctx, cancel := context.WithCancel(context.Background())
		store := openStore(b, b.TempDir())
		hubKey, _ := curveKey(b)
		agents := map[string]string{}
		for _, h := range hosts {
			_, agents[h] = curveKey(b)
			runSimAgent(b, ctx, js, h)
		}
		tags := &tags{m: map[string]string{image + ":latest": benchDigest(0)}}
		h, err := fleet.NewHub(fleet.HubConfig{
			Services: map[string]deployer.Service{"backend": {Name: "backend", Image: image, Host: "127.0.0.1:5000",
				Hosts: hosts, Rollout: deployer.RolloutAllAtOnce}},
			Store: store, Credentials: &chain{}, Resolver: tags, JetStream: js, Key: hubKey, Agents: agents, Logger: zerolog.Nop(),
		})
		if err != nil {
			b.Fatal(err)
		}
		go func() { _ = h.Run(ctx) }()
		if _, err := store.Enqueue(ctx, deployer.Request{Service: "backend", Tag: "latest", Trigger: deployer.Trigger{Kind: deployer.TriggerWebhook}}); err != nil {
			b.Fatal(err)
		}
		dep, _, err := store.ClaimNext(ctx, "backend")
		if err != nil {
			b.Fatal(err)
		}
		if dep = h.Execute(ctx, dep); dep.State != deployer.StateSucceeded {
			b.Fatalf("rollout to 100 hosts: %s %s", dep.State, dep.Error)
		}
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/(1<<20), "heap-MiB")
		cancel()
	}
}
