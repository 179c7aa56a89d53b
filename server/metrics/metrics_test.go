package metrics_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/deployd/deployd/auth/github"
	"github.com/deployd/deployd/auth/registry"
	"github.com/deployd/deployd/deployer"
	"github.com/deployd/deployd/server/metrics"
)

// history is a fixed deployment history.
type history map[string][]deployer.Deployment

func (h history) Deployments(_ context.Context, service string, p deployer.Page) ([]deployer.Deployment, error) {
	ds := h[service]
	if len(ds) > p.Limit {
		ds = ds[:p.Limit]
	}
	return ds, nil
}

// recorder answers with a fixed receipt or error.
type recorder struct {
	rec deployer.Receipt
	err error
}

func (r recorder) RecordDelivery(context.Context, deployer.Delivery, []deployer.Request) (deployer.Receipt, error) {
	return r.rec, r.err
}

func scrape(t *testing.T, m *metrics.Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("scrape: %d", rec.Code)
	}
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}

func wantLines(t *testing.T, out string, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if !strings.Contains(out, l) {
			t.Errorf("no %q in\n%s", l, grep(out, "deployd_"))
		}
	}
}

func grep(s, prefix string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestMetrics(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	done := now.Add(-time.Hour)
	h := history{
		"backend": {
			{ID: 3, Service: "backend", State: deployer.StateQueued},
			{ID: 2, Service: "backend", State: deployer.StateRunning},
			{ID: 1, Service: "backend", State: deployer.StateSucceeded, FinishedAt: &done},
		},
		"web": {{ID: 4, Service: "web", State: deployer.StateSucceeded, DryRun: true, FinishedAt: &done}},
	}
	m, err := metrics.New(metrics.Config{
		Registry: prometheus.NewRegistry(),
		History:  h,
		Services: []string{"backend", "web"},
		Credentials: func() []registry.SourceHealth {
			return []registry.SourceHealth{
				{Host: "ghcr.io", Source: "github_app", State: registry.HealthDenied},
				{Host: "ghcr.io", Source: "token_file", State: registry.HealthOK},
			}
		},
		Tokens: func() github.AppStats {
			return github.AppStats{Mints: 3, MintFailures: 1, Tokens: []github.TokenInfo{
				{InstallationID: 77, ExpiresAt: now.Add(50 * time.Minute)},
				{InstallationID: 77, ExpiresAt: now.Add(20 * time.Minute)},
			}}
		},
		StoreWriteErrors: func() int64 { return 5 },
		StorePruned: func() map[string]int64 {
			return map[string]int64{"deliveries": 1200, "deployments": 7, "redeliveries": 0}
		},
		Now: func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.SeedLastSuccess(context.Background()); err != nil {
		t.Fatal(err)
	}

	// Deliveries: recorded ones by their result, refused ones by the handler.
	ctx := context.Background()
	_, _ = m.CountDeliveries(recorder{}).RecordDelivery(ctx, deployer.Delivery{Event: "registry_package", Result: deployer.ResultQueued}, nil)
	_, _ = m.CountDeliveries(recorder{}).RecordDelivery(ctx, deployer.Delivery{Event: "package", Result: deployer.ResultIgnored}, nil)
	_, _ = m.CountDeliveries(recorder{rec: deployer.Receipt{Duplicate: true}}).RecordDelivery(ctx, deployer.Delivery{Event: "package", Result: deployer.ResultQueued}, nil)
	_, _ = m.CountDeliveries(recorder{rec: deployer.Receipt{Ignored: "backwards"}}).RecordDelivery(ctx, deployer.Delivery{Event: "registry_package", Result: deployer.ResultQueued}, nil)
	_, _ = m.CountDeliveries(recorder{err: errors.New("disk full")}).RecordDelivery(ctx, deployer.Delivery{Event: "weird-event", Result: deployer.ResultQueued}, nil)
	hook := m.Webhook(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Hub-Signature-256") == "" {
			http.Error(w, "unsigned", http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	for _, signed := range []bool{false, true} {
		req := httptest.NewRequest(http.MethodPost, "/webhooks/github", nil)
		req.Header.Set("X-GitHub-Event", "workflow_run")
		if signed {
			req.Header.Set("X-Hub-Signature-256", "sha256=00")
		}
		hook.ServeHTTP(httptest.NewRecorder(), req)
	}

	// Deployments and steps through the Notify hooks.
	m.Step(deployer.Deployment{Service: "backend", Steps: []deployer.Step{{Name: "resolve", Outcome: "ok", Duration: 200 * time.Millisecond}}})
	m.Step(deployer.Deployment{Service: "backend", Steps: []deployer.Step{
		{Name: "resolve", Outcome: "ok", Duration: 200 * time.Millisecond},
		{Name: "pull", Outcome: "failed", Duration: 3 * time.Second},
	}})
	m.Deployment(deployer.Deployment{Service: "backend", State: deployer.StateRunning})
	m.Deployment(deployer.Deployment{Service: "backend", State: deployer.StateFailed})
	m.Deployment(deployer.Deployment{Service: "web", State: deployer.StateSuperseded})

	out := scrape(t, m)
	wantLines(t, out,
		`deployd_webhook_deliveries_total{event="registry_package",result="queued"} 1`,
		`deployd_webhook_deliveries_total{event="package",result="ignored"} 1`,
		`deployd_webhook_deliveries_total{event="registry_package",result="ignored"} 1`,
		`deployd_webhook_deliveries_total{event="package",result="duplicate"} 1`,
		`deployd_webhook_deliveries_total{event="other",result="error"} 1`,
		`deployd_webhook_deliveries_total{event="workflow_run",result="rejected"} 1`,
		`deployd_deployments_total{service="backend",state="failed"} 1`,
		`deployd_deployments_total{service="web",state="succeeded"} 0`,
		`deployd_deployments_total{service="web",state="superseded"} 1`,
		`deployd_deployments_total{service="backend",state="superseded"} 0`,
		`deployd_step_duration_seconds_count{outcome="ok",step="resolve"} 1`,
		`deployd_step_duration_seconds_count{outcome="failed",step="pull"} 1`,
		`deployd_queue_depth{service="backend"} 2`,
		`deployd_queue_depth{service="web"} 0`,
		`deployd_credential_source{host="ghcr.io",source="github_app",state="denied"} 1`,
		`deployd_credential_source{host="ghcr.io",source="token_file",state="ok"} 1`,
		`deployd_installation_token_expiry_seconds{installation_id="77"} 1200`,
		`deployd_installation_token_mints_total{result="ok"} 3`,
		`deployd_installation_token_mints_total{result="failed"} 1`,
		`deployd_store_write_errors_total 5`,
		`deployd_store_pruned_total{table="deliveries"} 1200`,
		`deployd_store_pruned_total{table="deployments"} 7`,
		`deployd_store_pruned_total{table="redeliveries"} 0`,
		`deployd_last_success_timestamp_seconds{service="backend"} 1.7723628e+09`,
		`process_`,
		`go_goroutines`,
	)
	if strings.Contains(out, `deployd_last_success_timestamp_seconds{service="web"}`) {
		t.Error("a dry run counted as the last success")
	}
	if strings.Contains(out, `result="queued"} 2`) {
		t.Error("a delivery counted twice")
	}
}

func TestNewNeedsRegistryAndHistory(t *testing.T) {
	if _, err := metrics.New(metrics.Config{History: history{}}); err == nil {
		t.Error("no registry accepted")
	}
	if _, err := metrics.New(metrics.Config{Registry: prometheus.NewRegistry()}); err == nil {
		t.Error("no history accepted")
	}
	reg := prometheus.NewRegistry()
	if _, err := metrics.New(metrics.Config{Registry: reg, History: history{}}); err != nil {
		t.Fatal(err)
	}
	if _, err := metrics.New(metrics.Config{Registry: reg, History: history{}}); err == nil {
		t.Error("registering twice on one registry accepted")
	}
}

// TestWebhookCountsBusy checks that a 503 with Retry-After (the handler's
// body budget was taken) counts as busy, and that a 503 without it (the
// store failed: counted by CountDeliveries) and a 2xx are not counted by
// the wrapper.
func TestWebhookCountsBusy(t *testing.T) {
	m, err := metrics.New(metrics.Config{Registry: prometheus.NewRegistry(), History: history{}})
	if err != nil {
		t.Fatal(err)
	}
	hook := m.Webhook(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Header.Get("X-Test-Answer") {
		case "busy":
			w.Header().Set("Retry-After", "10")
			w.WriteHeader(http.StatusServiceUnavailable)
		case "store down":
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			w.WriteHeader(http.StatusAccepted)
		}
	}))
	for _, answer := range []string{"busy", "busy", "store down", "queued"} {
		req := httptest.NewRequest(http.MethodPost, "/webhooks/github", nil)
		req.Header.Set("X-GitHub-Event", "registry_package")
		req.Header.Set("X-Test-Answer", answer)
		hook.ServeHTTP(httptest.NewRecorder(), req)
	}
	out := grep(scrape(t, m), "deployd_webhook_deliveries_total")
	if want := `deployd_webhook_deliveries_total{event="registry_package",result="busy"} 2`; out != want {
		t.Errorf("deliveries counted:\n%s\nwant only\n%s", out, want)
	}
}
