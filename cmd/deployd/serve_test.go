package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/deployd/deployd/internal/testlog"
	"github.com/deployd/deployd/webhook/webhooktest"
)

const testSecret = "test-webhook-secret-0123456789abcdef"

// intakeConfig is a config whose backend service matches the fixtures'
// acme-corp/v7/backend package, on a registry that nothing listens on:
// the intake is what is tested, not the deploy.
func intakeConfig(t *testing.T, dataDir string) string {
	t.Helper()
	dir := t.TempDir()
	secret := writeFile(t, dir, "webhook-secret", testSecret+"\n", 0o600)
	return writeFile(t, dir, "deployd.yaml",
		webhooktest.DeploydConfig("127.0.0.1:0", dataDir, secret, "info", "t-intake-backend"), 0o600)
}

func TestServeWebhookIntakeOverHTTP(t *testing.T) {
	dataDir := t.TempDir()
	cfg := intakeConfig(t, dataDir)
	d := startDeployd(t, cfg, nil)

	tagged := fixture(t, "registry_package.published.container-tagged.json")
	untagged := fixture(t, "registry_package.published.container-untagged.json")

	d.getJSON("/healthz", http.StatusOK, nil)
	d.getJSON("/readyz", http.StatusOK, nil)

	cases := []struct {
		name     string
		delivery delivery
		secret   string
		want     int
		contains string
	}{
		{"no signature", delivery{event: "registry_package", id: "d-nosig", body: tagged,
			headers: map[string]string{"X-Hub-Signature-256": ""}}, testSecret, 401, "signature"},
		{"sha1 only", delivery{event: "registry_package", id: "d-sha1", body: tagged,
			headers: map[string]string{"X-Hub-Signature-256": "", "X-Hub-Signature": "sha1=0000000000000000000000000000000000000000"}}, testSecret, 401, "signature"},
		{"wrong secret", delivery{event: "registry_package", id: "d-wrong", body: tagged}, "not-the-secret", 401, "signature"},
		{"malformed JSON", delivery{event: "registry_package", id: "d-bad", body: []byte(`{"action": "published", "registry_package": [`)}, testSecret, 400, "error"},
		{"ping", delivery{event: "ping", id: "d-ping", body: fixture(t, "ping.app.json")}, testSecret, 200, "zen"},
		{"untagged manifest", delivery{event: "registry_package", id: "d-untagged", body: untagged}, testSecret, 200, "ignored"},
		{"unknown event", delivery{event: "issues", id: "d-issues", body: []byte(`{"action":"opened"}`)}, testSecret, 200, "ignored"},
		{"tagged push", delivery{event: "registry_package", id: "d-tagged", body: tagged}, testSecret, 202, "deployments"},
		{"same delivery id again", delivery{event: "registry_package", id: "d-tagged", body: tagged}, testSecret, 200, `"duplicate":true`},
		{"same body, new id", delivery{event: "registry_package", id: "d-replayed", body: tagged}, testSecret, 200, `"duplicate":true`},
	}
	for _, c := range cases {
		status, body := d.post(c.secret, c.delivery)
		if status != c.want || !strings.Contains(body, c.contains) {
			t.Errorf("%s: %d %s, want %d containing %q", c.name, status, body, c.want, c.contains)
		}
		if status >= 400 && !strings.Contains(body, `"error"`) {
			t.Errorf("%s: error answer %s lacks the error field", c.name, body)
		}
	}

	// Over 25 MiB: 413, without deployd reading it all.
	big := bytes.Repeat([]byte(" "), 26<<20)
	if status, body := d.post(testSecret, delivery{event: "registry_package", id: "d-big", body: big}); status != http.StatusRequestEntityTooLarge {
		t.Errorf("26 MiB body: %d %s, want 413", status, body)
	}
	// Only POST.
	resp, err := http.Get(d.url("/webhooks/github"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /webhooks/github: %d, want 405", resp.StatusCode)
	}

	// Every 2xx delivery is listed with its result, duplicates included,
	// newest first; refused ones are not.
	got := listDeliveries(d)
	want := map[string][]string{
		"d-ping": {"ignored"}, "d-untagged": {"ignored"}, "d-issues": {"ignored"},
		"d-tagged": {"duplicate: delivery id seen before", "queued"}, "d-replayed": {"duplicate: same body as delivery d-tagged"},
	}
	for id, results := range want {
		if !slices.Equal(got[id], results) {
			t.Errorf("delivery %s listed as %q, want %q (all: %v)", id, got[id], results, got)
		}
	}
	for _, id := range []string{"d-nosig", "d-sha1", "d-wrong", "d-bad", "d-big"} {
		if _, ok := got[id]; ok {
			t.Errorf("delivery %s was recorded although it was refused", id)
		}
	}
	var deps deploymentsResponse
	d.getJSON("/api/v1/deployments?service=backend", http.StatusOK, &deps)
	if len(deps.Deployments) != 1 || deps.Deployments[0].Tag != "latest" || deps.Deployments[0].Trigger.DeliveryID != "d-tagged" {
		t.Errorf("deployments after one tagged push:\n%s want exactly one for latest from d-tagged", deps)
	}

	// Restart on the same data directory: the delivery is still known.
	if err := d.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	d2 := startDeployd(t, cfg, nil)
	if status, body := d2.post(testSecret, delivery{event: "registry_package", id: "d-tagged", body: tagged}); status != 200 || !strings.Contains(body, `"duplicate":true`) {
		t.Errorf("redelivery after restart: %d %s, want 200 duplicate", status, body)
	}
	var after deploymentsResponse
	d2.getJSON("/api/v1/deployments?service=backend", http.StatusOK, &after)
	if len(after.Deployments) != 1 {
		t.Errorf("redelivery after restart queued a deployment:\n%s", after)
	}
	if got := listDeliveries(d2)["d-tagged"]; !slices.Equal(got, []string{"duplicate: delivery id seen before", "duplicate: delivery id seen before", "queued"}) {
		t.Errorf("d-tagged after the redelivery listed as %q, want two duplicates of the queued original", got)
	}
}

// listDeliveries returns, by delivery id, the results GET /api/v1/deliveries
// lists for it, newest first. A duplicate's is followed by its reason without
// the seq it names: "duplicate: delivery id seen before".
func listDeliveries(d *instance) map[string][]string {
	var deliveries struct {
		Deliveries []struct {
			ID     string `json:"delivery_id"`
			Result string `json:"result"`
			Reason string `json:"reason"`
		} `json:"deliveries"`
	}
	d.getJSON("/api/v1/deliveries", http.StatusOK, &deliveries)
	got := map[string][]string{}
	for _, del := range deliveries.Deliveries {
		result := del.Result
		if result == "duplicate" {
			reason, _, _ := strings.Cut(del.Reason, " (seq")
			result += ": " + reason
		}
		got[del.ID] = append(got[del.ID], result)
	}
	return got
}

func TestServeRefusesToStartWithoutSecret(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, dir, "deployd.yaml", fmt.Sprintf(`
listen: 127.0.0.1:0
data_dir: %s
github: {}
`, dir), 0o600)
	var stderr testlog.Buffer
	err := run(t.Context(), []string{"serve", "--config", cfg}, func(string) string { return "" }, &stderr, &stderr)
	if err == nil || !strings.Contains(err.Error(), "webhook_secret") {
		t.Fatalf("serve without a webhook secret: %v, want an error naming webhook_secret", err)
	}
}

func TestReadAPIErrors(t *testing.T) {
	d := startDeployd(t, intakeConfig(t, t.TempDir()), nil)
	for _, c := range []struct {
		path string
		want int
	}{
		{"/api/v1/services/nope", 404},
		{"/api/v1/deployments/abc", 400},
		{"/api/v1/deployments/999", 404},
		{"/api/v1/deployments?limit=0", 400},
		{"/api/v1/deployments?limit=501", 400},
		{"/api/v1/deployments?before=-1", 400},
		{"/api/v1/deployments?service=nope", 404},
		{"/api/v1/nothing", 404},
	} {
		var body struct {
			Error string `json:"error"`
		}
		d.getJSON(c.path, c.want, &body)
		if body.Error == "" {
			t.Errorf("GET %s: no error message", c.path)
		}
	}
	var svc struct {
		Name  string `json:"name"`
		Image string `json:"image"`
	}
	d.getJSON("/api/v1/services/backend", 200, &svc)
	if svc.Name != "backend" || svc.Image != "127.0.0.1:9/acme-corp/v7/backend" {
		t.Errorf("GET /api/v1/services/backend: %+v", svc)
	}
	raw := map[string]any{}
	d.getJSON("/api/v1/services", 200, &raw)
	if b, _ := json.Marshal(raw); !strings.Contains(string(b), `"backend"`) {
		t.Errorf("GET /api/v1/services does not list backend: %s", b)
	}
}

func TestServeIgnoresForkWorkflowRunOverHTTP(t *testing.T) {
	dir := t.TempDir()
	secret := writeFile(t, dir, "webhook-secret", testSecret+"\n", 0o600)
	cfg := webhooktest.DeploydConfig("127.0.0.1:0", t.TempDir(), secret, "info", "t-fork-backend") +
		"    on: {workflow_run: {workflows: [\"CI/CD\"], branches: [main], tag: \"sha-{{.ShortSHA}}\"}}\n"
	d := startDeployd(t, writeFile(t, dir, "deployd.yaml", cfg, 0o600), nil)

	// A pull request from mallory's fork of Acme-Corp/v7, opened from the
	// fork's own main branch: the run belongs to Acme-Corp/v7, passes the
	// workflow and branch filters, and built mallory's code.
	run := func(headRepo, event string) []byte {
		return edit(t, fixture(t, "workflow_run.completed.json"), func(m map[string]any) {
			wr := dig(m, "workflow_run")
			wr["name"], wr["head_branch"], wr["event"] = "CI/CD", "main", event
			head := dig(m, "workflow_run", "head_repository")
			head["full_name"], head["fork"] = headRepo, headRepo != "Acme-Corp/v7"
			dig(m, "repository")["full_name"] = "Acme-Corp/v7"
		})
	}
	status, body := d.post(testSecret, delivery{event: "workflow_run", id: "d-fork", body: run("mallory/v7", "pull_request")})
	var answer struct {
		Ignored     string  `json:"ignored"`
		Deployments []int64 `json:"deployments"`
	}
	if err := jsonUnmarshal(body, &answer); err != nil {
		t.Fatalf("answer %q: %v", body, err)
	}
	if status != http.StatusOK || !strings.Contains(answer.Ignored, `head repository "mallory/v7"`) || len(answer.Deployments) != 0 {
		t.Errorf("fork's run: %d %s, want 200 ignored naming the fork", status, body)
	}
	var deps deploymentsResponse
	d.getJSON("/api/v1/deployments?service=backend", http.StatusOK, &deps)
	if len(deps.Deployments) != 0 {
		t.Errorf("a fork's run queued deployments:\n%s", deps)
	}
	if got := listDeliveries(d)["d-fork"]; !slices.Equal(got, []string{"ignored"}) {
		t.Errorf("fork's run listed as %q, want ignored", got)
	}

	// The same run from a push to Acme-Corp/v7 itself deploys.
	ids := d.queue(delivery{event: "workflow_run", id: "d-push", body: run("Acme-Corp/v7", "push")})
	d.getJSON("/api/v1/deployments?service=backend", http.StatusOK, &deps)
	if len(deps.Deployments) != 1 || deps.Deployments[0].ID != ids[0] || deps.Deployments[0].Tag != "sha-3484a3f" {
		t.Errorf("deployments after the push's run:\n%s want one of sha-3484a3f", deps)
	}
}
