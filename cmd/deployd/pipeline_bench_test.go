package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkTriggerToPull measures, on the end-to-end stack (real podman,
// the token-auth registry, the fake GitHub), how long a deployment takes
// from the webhook's receipt to the start of its pull, once the
// installation token is cached (SPEC §10: under 50 ms). Each operation
// pushes a new image (timer stopped), sends its registry_package delivery
// and waits until the deployment succeeds. The figures come from deployd's
// own records: the delivery's received_at and the deployment's step log.
//
// The warm-up deployment logs podman in; the measured ones reuse that
// login, so the pull step's Started is when podman pull runs. Reported:
// ms/trigger-to-pull, from received_at to the pull step's Started (median,
// and max-ms/trigger-to-pull the slowest); queue-ms, from received_at to
// the deployment's started_at; resolve-ms, the resolve step's median.
//
//	DEPLOYD_E2E=1 go test ./cmd/deployd -run '^$' -bench TriggerToPull -benchtime 10x
func BenchmarkTriggerToPull(b *testing.B) {
	s := newStack(b, stackOptions{})
	d := startDeployd(b, s.config, nil)

	// A first deployment mints the installation token, which the
	// measured ones then find cached.
	v0 := s.push("latest", "warm-up")
	ids := d.queue(delivery{event: "registry_package", id: "bench-warm-up", body: s.packageEvent("latest", v0)})
	if dep := waitDeployment(b, d, ids[0]); dep.State != "succeeded" {
		b.Fatalf("warm-up deployment: %s (%s %s)", dep.State, dep.ErrorClass, dep.Error)
	}
	mints := s.github.MintCount()

	var toPull, queue, resolve []time.Duration
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		digest := s.push("latest", fmt.Sprintf("bench-%d", i))
		id := fmt.Sprintf("bench-trigger-%d", i)
		b.StartTimer()
		ids := d.queue(delivery{event: "registry_package", id: id, body: s.packageEvent("latest", digest)})
		dep := waitDeployment(b, d, ids[0])
		b.StopTimer()
		if dep.State != "succeeded" {
			b.Fatalf("deployment %d: %s (%s %s)", dep.ID, dep.State, dep.ErrorClass, dep.Error)
		}
		received := deliveryReceivedAt(b, d, id)
		full := deploymentTimes(b, d, dep.ID)
		// The pull step starts when podman pull is run: the login the
		// warm-up wrote is reused, so there is no login step.
		st, ok := full.step("pull")
		rs, ok2 := full.step("resolve")
		if _, relogged := full.step("login"); !ok || !ok2 || relogged || full.StartedAt == nil {
			b.Fatalf("deployment %d: want resolve and pull steps and no login in %+v", dep.ID, full.Steps)
		}
		toPull = append(toPull, st.Started.Sub(received))
		queue = append(queue, full.StartedAt.Sub(received))
		resolve = append(resolve, rs.Duration)
		b.StartTimer()
	}
	b.StopTimer()
	if n := s.github.MintCount(); n != mints {
		b.Errorf("%d installation tokens minted during the measured deployments, want 0 (cached)", n-mints)
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(median(toPull)), "ms/trigger-to-pull")
	b.ReportMetric(ms(slices.Max(toPull)), "max-ms/trigger-to-pull")
	b.ReportMetric(ms(median(queue)), "queue-ms")
	b.ReportMetric(ms(median(resolve)), "resolve-ms")
}

// median returns the middle value of ds (the upper one of an even count).
func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// timedDeployment is the part of a deployment's API view with its times.
type timedDeployment struct {
	ID        int64       `json:"id"`
	StartedAt *time.Time  `json:"started_at"`
	Steps     []timedStep `json:"steps"`
}

// timedStep is one entry of a step log.
type timedStep struct {
	Name     string        `json:"name"`
	Started  time.Time     `json:"started"`
	Duration time.Duration `json:"duration_ns"`
	Outcome  string        `json:"outcome"`
}

// step returns the first step called name that succeeded.
func (t timedDeployment) step(name string) (timedStep, bool) {
	for _, s := range t.Steps {
		if s.Name == name && s.Outcome == "ok" {
			return s, true
		}
	}
	return timedStep{}, false
}

func deploymentTimes(tb testing.TB, d *instance, id int64) timedDeployment {
	tb.Helper()
	var t timedDeployment
	d.getJSON(fmt.Sprintf("/api/v1/deployments/%d", id), http.StatusOK, &t)
	return t
}

// deliveryReceivedAt finds delivery id among the newest deliveries.
func deliveryReceivedAt(tb testing.TB, d *instance, id string) time.Time {
	tb.Helper()
	var page struct {
		Deliveries []struct {
			ID         string    `json:"delivery_id"`
			ReceivedAt time.Time `json:"received_at"`
		} `json:"deliveries"`
	}
	d.getJSON("/api/v1/deliveries?limit=20", http.StatusOK, &page)
	for _, dl := range page.Deliveries {
		if dl.ID == id {
			return dl.ReceivedAt
		}
	}
	tb.Fatalf("delivery %s is not among the newest 20", id)
	return time.Time{}
}

// TestEndToEndThousandDeliveriesMintOneToken sends 1,000 distinct matching
// deliveries for one service (unique delivery ids and bodies, so none is a
// duplicate; most supersede one another) and checks that the fake GitHub
// minted one installation token per permission set for all of them: one
// to pull (packages:read) and, when deployd reports to GitHub's Deployments
// API, one for that (SPEC §10: at most one per installation and permission
// set per token lifetime).
func TestEndToEndThousandDeliveriesMintOneToken(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: sends 1,000 deliveries")
	}
	const deliveries, senders = 1000, 8
	s := newStack(t, stackOptions{})
	d := startDeployd(t, s.config, nil)
	digest := s.push("latest", "v1")
	base := s.packageEvent("latest", digest)

	bodies := make([][]byte, deliveries)
	for i := range bodies {
		bodies[i] = edit(t, base, func(m map[string]any) { m["deployd_test_nonce"] = fmt.Sprint(i) })
	}
	var (
		next   atomic.Int64
		mu     sync.Mutex
		newest int64
		failed []string
		wg     sync.WaitGroup
	)
	for range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= deliveries {
					return
				}
				id, err := postDelivery(d.url("/webhooks/github"), fmt.Sprintf("mint-%d", i), bodies[i])
				mu.Lock()
				if err != nil {
					failed = append(failed, err.Error())
				} else {
					newest = max(newest, id)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(failed) > 0 {
		t.Fatalf("%d of %d deliveries did not queue a deployment; first: %s", len(failed), deliveries, failed[0])
	}
	// The newest deployment runs last: the worker always takes the newest
	// queued one and supersedes the rest.
	if dep := waitDeployment(t, d, newest); dep.State != "succeeded" && dep.State != "unchanged" {
		t.Fatalf("the newest deployment ended %s (%s %s)", dep.State, dep.ErrorClass, dep.Error)
	}
	states := map[string]int{}
	var page deploymentsResponse
	for before := int64(0); ; before = page.NextBefore {
		path := "/api/v1/deployments?service=backend&limit=500"
		if before > 0 {
			path += fmt.Sprintf("&before=%d", before)
		}
		page = deploymentsResponse{}
		d.getJSON(path, http.StatusOK, &page)
		for _, dep := range page.Deployments {
			states[dep.State]++
		}
		if page.NextBefore == 0 || len(page.Deployments) == 0 {
			break
		}
	}
	t.Logf("deployments by state after %d deliveries: %v", deliveries, states)
	if states["queued"] > 0 || states["running"] > 0 || states["failed"] > 0 {
		t.Errorf("deployments by state %v: want none queued, running or failed", states)
	}
	// One token per installation and permission set: deployd may also
	// hold one for GitHub's Deployments API besides the one that pulls.
	perSet := map[string]int{}
	for _, m := range s.github.Mints() {
		perSet[fmt.Sprintf("installation %d, permissions %v, repositories %v", m.InstallationID, m.Permissions, m.Repositories)]++
	}
	pulls := 0
	for set, n := range perSet {
		t.Logf("%d token(s) minted for %s", n, set)
		if n != 1 {
			t.Errorf("%d tokens minted for %s over %d deliveries, want 1", n, set, deliveries)
		}
	}
	for _, m := range s.github.Mints() {
		if m.Permissions["packages"] == "read" {
			pulls++
		}
	}
	if pulls != 1 {
		t.Errorf("%d tokens with packages:read minted over %d deliveries, want 1", pulls, deliveries)
	}
	s.assertNoTokenInArgv()
}

// postDelivery sends a signed registry_package delivery and returns the id
// of the one deployment it queued; unlike instance.post, it can run on any
// goroutine.
func postDelivery(url, id string, body []byte) (int64, error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", "registry_package")
	req.Header.Set("X-GitHub-Delivery", id)
	req.Header.Set("X-Hub-Signature-256", sign(testSecret, body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("delivery %s: %w", id, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("delivery %s: %w", id, err)
	}
	var r struct {
		Deployments []int64 `json:"deployments"`
	}
	if resp.StatusCode != http.StatusAccepted || json.Unmarshal(answer, &r) != nil || len(r.Deployments) != 1 {
		return 0, fmt.Errorf("delivery %s: %d %s, want 202 with one deployment", id, resp.StatusCode, answer)
	}
	return r.Deployments[0], nil
}
