package server

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/deployd/deployd/auth/github"
	"github.com/deployd/deployd/auth/registry"
	"github.com/deployd/deployd/deployer"
	"github.com/deployd/deployd/deployer/sqlite"
)

// hostile is put into every string the page shows.
const hostile = `<script>alert(1)</script>"'><img src=x onerror=alert(2)>`

// pageSample is page data with every field filled, strings hostile.
func pageSample() pageData {
	now := time.Date(2026, 5, 4, 12, 0, 0, 0, time.UTC)
	started, finished := now.Add(-time.Minute), now.Add(-15*time.Second)
	d := deployer.Deployment{
		ID: 7, Service: hostile, Tag: hostile, Digest: "sha256:" + strings.Repeat("ab", 32) + hostile,
		State: deployer.State(hostile), QueuedAt: now.Add(-2 * time.Minute), StartedAt: &started, FinishedAt: &finished,
		Trigger:    deployer.Trigger{Kind: deployer.TriggerWebhook, Event: hostile, DeliveryID: hostile, Subject: hostile},
		ErrorClass: hostile, Error: hostile, Hint: hostile,
		Steps: []deployer.Step{{Name: hostile, Started: started, Duration: 1500 * time.Millisecond, Outcome: hostile, Message: hostile}},
	}
	svc := serviceView{
		serviceInfo: serviceInfo{Name: hostile, Image: hostile, Strategy: hostile, Tags: []string{hostile}},
		Status: deployer.ServiceStatus{Name: hostile, Tag: hostile, Digest: hostile, Degraded: true,
			Credential: hostile, CredentialNote: hostile},
		LastDeployment: &d,
	}
	delivery := deployer.Delivery{ID: hostile, Event: hostile, Action: hostile, ReceivedAt: now, Result: hostile,
		Reason: hostile, DeploymentIDs: []int64{7}}
	release := deployer.Release{ID: 3, Set: hostile, Commit: hostile, State: deployer.ReleaseState(hostile),
		FailedMember: hostile, Reason: hostile, CreatedAt: now,
		Members: []deployer.ReleaseMember{{Service: hostile, Tag: hostile, Digest: hostile, State: deployer.State(hostile),
			DeploymentID: 7, RollbackID: 8, RollbackState: deployer.State(hostile)}}}
	return pageData{
		Releases:    []deployer.Release{release},
		ReleaseSets: true,
		Services:    []serviceCard{{serviceView: svc, Recent: []deploymentRow{{Deployment: d, Open: true}}}},
		Credentials: credentialsFrom(
			[]registry.SourceHealth{{Host: hostile, Source: hostile, State: "ok", Reason: hostile, Image: hostile,
				Updated: now, Expires: now.Add(time.Hour), PutAsideUntil: now.Add(time.Minute)}},
			github.AppStats{
				Tokens:       []github.TokenInfo{{InstallationID: 1, Permissions: hostile, Repositories: []string{hostile}, ExpiresAt: now.Add(time.Hour)}},
				MintFailures: 2,
			}),
		Deliveries:         []deployer.Delivery{delivery},
		Now:                now,
		CSS:                hostile,
		JS:                 hostile,
		Icon:               hostile,
		BlankDeployment:    deploymentRow{Deployment: d},
		BlankStep:          d.Steps[0],
		BlankDelivery:      delivery,
		BlankRelease:       release,
		BlankReleaseMember: release.Members[0],
	}
}

// assertEscaped fails when out holds markup injected from data.
func assertEscaped(t *testing.T, name, out string) {
	t.Helper()
	for _, bad := range []string{"<script>alert", "<img", `"'>`, "onerror=alert(2)>"} {
		if strings.Contains(out, bad) {
			t.Errorf("template %s: output holds unescaped %q", name, bad)
		}
	}
}

func TestTemplatesEscapeEverything(t *testing.T) {
	p, err := newPage()
	if err != nil {
		t.Fatal(err)
	}
	data := pageSample()
	data.Private = true // renders the log out form too
	card := data.Services[0]
	// Every template, with data of the shape it is called with. A new
	// template without an entry here fails the test.
	samples := map[string]any{
		"page":           data,
		"page.html":      data,
		"partials.html":  data,
		"service":        card,
		"failure":        card.LastOrBlank(),
		"deployment":     card.Recent[0],
		"step":           data.BlankStep,
		"delivery":       data.Deliveries[0],
		"credentials":    data,
		"releases":       data.Releases,
		"release":        data.Releases[0],
		"release-member": data.Releases[0].Members[0],
		"login.html":     loginData{CSS: hostile, Icon: hostile, Message: hostile},
	}
	for _, tmpl := range p.tmpl.Templates() {
		name := tmpl.Name()
		sample, ok := samples[name]
		if !ok {
			t.Errorf("template %s has no sample data in this test", name)
			continue
		}
		var buf bytes.Buffer
		if err := p.tmpl.ExecuteTemplate(&buf, name, sample); err != nil {
			t.Errorf("execute %s: %v", name, err)
			continue
		}
		out := buf.String()
		assertEscaped(t, name, out)
		if name != "partials.html" && !strings.Contains(out, "&lt;script&gt;alert(1)&lt;/script&gt;") {
			t.Errorf("template %s: the hostile text is not shown escaped:\n%s", name, out)
		}
	}

	// The whole page: exactly our own script, no element from data.
	var buf bytes.Buffer
	if err := p.tmpl.ExecuteTemplate(&buf, "page.html", data); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if n := strings.Count(out, "<script"); n != 1 {
		t.Errorf("page has %d script elements, want 1", n)
	}
	for _, want := range []string{"&lt;script&gt;alert(1)&lt;/script&gt;", "in 1h00m", "degraded"} {
		if !strings.Contains(out, want) {
			t.Errorf("page lacks %q", want)
		}
	}
}

func TestTemplateFormatting(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"}, {340 * time.Millisecond, "340ms"}, {4200 * time.Millisecond, "4.2s"},
		{125 * time.Second, "2m05s"}, {62 * time.Minute, "1h02m"},
	} {
		if got := formatDuration(c.d); got != c.want {
			t.Errorf("formatDuration(%v) = %q, want %q", c.d, got, c.want)
		}
	}
	if got := deployer.ShortDigest("sha256:0123456789abcdef"); got != "0123456789ab" {
		t.Errorf("ShortDigest = %q", got)
	}
	for _, c := range []struct {
		t    deployer.Trigger
		want string
	}{
		{deployer.Trigger{Kind: deployer.TriggerWebhook, Event: "registry_package", DeliveryID: "d-1"}, "webhook registry_package d-1"},
		{deployer.Trigger{Kind: deployer.TriggerWebhook, Event: "package", DeliveryID: "8a41f6e0-27c1-11f1-9b3e-5d0c5a7f1e21"}, "webhook package 8a41f6e0…"},
		{deployer.Trigger{Kind: deployer.TriggerManual, Subject: "ci"}, "manual by ci"},
		{deployer.Trigger{Kind: deployer.TriggerRollback}, "rollback"},
		{deployer.Trigger{Kind: deployer.TriggerReconcile}, "reconcile"},
	} {
		if got := triggerText(c.t); got != c.want {
			t.Errorf("triggerText(%+v) = %q, want %q", c.t, got, c.want)
		}
	}
	if got := refText("v1", "sha256:"+strings.Repeat("f", 64)); got != "v1 @ ffffffffffff" {
		t.Errorf("refText = %q", got)
	}
}

func TestCredentialsInUse(t *testing.T) {
	now := time.Now()
	v := credentialsFrom([]registry.SourceHealth{
		{Host: "ghcr.io", Source: "github_app", State: "ok", Updated: now.Add(-time.Hour)},
		{Host: "ghcr.io", Source: "token_file", State: "ok", Updated: now},
		{Host: "registry.local", Source: "none", State: "unknown"},
	}, github.AppStats{})
	got := []bool{v.Sources[0].InUse, v.Sources[1].InUse, v.Sources[2].InUse}
	if got[0] || !got[1] || got[2] {
		t.Errorf("in use = %v, want [false true false]", got)
	}
}

// notDraining is a Queue that never drains; it takes no deploys.
type notDraining struct{ Enqueuer }

func (notDraining) Draining() bool { return false }

// openPageStore opens a real store in a temp dir.
func openPageStore(t *testing.T) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "deployd.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// newPageServer serves a Server over a real store and hub.
func newPageServer(t *testing.T, st *sqlite.Store, hub *Hub) *httptest.Server {
	t.Helper()
	srv, err := New(Config{
		Webhook:  http.NotFoundHandler(),
		Reads:    Reads{Store: st, Events: hub},
		Queue:    notDraining{},
		Services: []deployer.Service{{Name: "backend", Image: "ghcr.io/acme/v7/backend", Strategy: "container", Tags: []string{"latest"}}},
		Logger:   zerolog.Nop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	return ts
}

func TestStatusPageHTTP(t *testing.T) {
	st := openPageStore(t)
	ctx := context.Background()
	d, err := st.Enqueue(ctx, deployer.Request{Service: "backend", Tag: "v1.2.3", Trigger: deployer.Trigger{Kind: deployer.TriggerManual, Subject: "ci"}})
	if err != nil {
		t.Fatal(err)
	}
	ts := newPageServer(t, st, nil)

	res, err := http.Get(ts.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET / = %d: %s", res.StatusCode, body)
	}
	for h, want := range map[string]string{
		"Content-Security-Policy": contentSecurityPolicy,
		"X-Frame-Options":         "DENY",
		"Referrer-Policy":         "same-origin",
		"Content-Type":            "text/html; charset=utf-8",
		"Cache-Control":           "no-store",
	} {
		if got := res.Header.Get(h); got != want {
			t.Errorf("%s = %q, want %q", h, got, want)
		}
	}
	page := string(body)
	for _, want := range []string{`data-service="backend"`, "ghcr.io/acme/v7/backend", "v1.2.3", "manual by ci", `data-deployment="` + strconv.FormatInt(d.ID, 10) + `"`,
		`id="deployment-` + strconv.FormatInt(d.ID, 10) + `"`} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(page, "http://") || strings.Contains(page, "https://") {
		t.Error("page refers to another origin")
	}

	// Assets: the versioned URLs in the page resolve, with cache headers.
	for _, name := range []string{"status.css", "status.js", "favicon.svg"} {
		res, err := http.Get(ts.URL + "/assets/" + name)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK || res.Header.Get("Cache-Control") == "" || res.Header.Get("ETag") == "" ||
			res.Header.Get("Content-Security-Policy") == "" {
			t.Errorf("GET /assets/%s = %d, headers %v", name, res.StatusCode, res.Header)
		}
		req, _ := http.NewRequest(http.MethodGet, ts.URL+"/assets/"+name, nil)
		req.Header.Set("If-None-Match", res.Header.Get("ETag"))
		res, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusNotModified {
			t.Errorf("conditional GET /assets/%s = %d, want 304", name, res.StatusCode)
		}
	}
	if ct := mustGet(t, ts.URL+"/assets/status.js").Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/javascript") {
		t.Errorf("status.js Content-Type = %q", ct)
	}
	for _, path := range []string{"/assets/", "/assets/nope.js", "/assets/../page.go"} {
		if res := mustGet(t, ts.URL+path); res.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s = %d, want 404", path, res.StatusCode)
		}
	}
}

func mustGet(t *testing.T, url string) *http.Response {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res
}
