package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/rs/zerolog"

	"github.com/deployd/deployd/auth/apitoken"
	"github.com/deployd/deployd/auth/github"
	"github.com/deployd/deployd/auth/registry"
	"github.com/deployd/deployd/deployer"
	"github.com/deployd/deployd/deployer/sqlite"
	"github.com/deployd/deployd/internal/e2e"
	"github.com/deployd/deployd/server"
)

// The browser test drives the status page in Debian's headless Chromium.
// Without a browser it is skipped, unless CI or DEPLOYD_E2E is set. With
// DEPLOYD_UPDATE_SCREENSHOT=1 it rewrites the screenshots in docs/.

// findChromium returns the browser to run, or "" when there is none.
func findChromium() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	return ""
}

// testClock is the store's clock, movable so that seeded history has
// realistic times.
type testClock struct {
	mu sync.Mutex
	at time.Time // zero: the real time
}

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.at.IsZero() {
		return time.Now().UTC()
	}
	return c.at
}

func (c *testClock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.at = t
}

// history is one finished deployment to seed.
type history struct {
	service, tag, digest string
	trigger              deployer.Trigger
	ago                  time.Duration
	steps                []deployer.Step // Started is filled in; Duration is kept
	state                deployer.State
	class, err, hint     string
	credential, note     string // the source that pulled, and why others were passed over
	verification         *deployer.Verification
}

func digestOf(seed string) string {
	return "sha256:" + strings.Repeat(seed, 64)[:64]
}

// seedHistory records h as if a deployment had run: the delivery (for a
// webhook trigger), the claim, the steps and the end.
func seedHistory(t *testing.T, st *sqlite.Store, clk *testClock, h history) deployer.Deployment {
	t.Helper()
	ctx := context.Background()
	start := time.Now().UTC().Add(-h.ago).Truncate(time.Second)
	clk.set(start.Add(-800 * time.Millisecond))
	defer clk.set(time.Time{})
	req := deployer.Request{Service: h.service, Tag: h.tag, Trigger: h.trigger}
	if h.trigger.Kind == deployer.TriggerWebhook {
		rec, err := st.RecordDelivery(ctx, deployer.Delivery{
			ID: h.trigger.DeliveryID, Event: h.trigger.Event, Action: "published",
			BodySHA256: fmt.Sprintf("%064x", start.UnixNano()), ReceivedAt: start.Add(-800 * time.Millisecond),
			Result: deployer.ResultQueued,
		}, []deployer.Request{req})
		if err != nil {
			t.Fatal(err)
		}
		if len(rec.Deployments) != 1 {
			t.Fatalf("seed delivery queued %v", rec.Deployments)
		}
	} else if _, err := st.Enqueue(ctx, req); err != nil {
		t.Fatal(err)
	}
	clk.set(start)
	d, ok, err := st.ClaimNext(ctx, h.service)
	if err != nil || !ok {
		t.Fatalf("claim seeded deployment: %v %v", ok, err)
	}
	at := start
	for _, s := range h.steps {
		s.Started = at
		if err := st.AppendStep(ctx, d.ID, s); err != nil {
			t.Fatal(err)
		}
		at = at.Add(s.Duration)
	}
	d.State, d.Digest, d.ErrorClass, d.Error, d.Hint, d.FinishedAt = h.state, h.digest, h.class, h.err, h.hint, &at
	d.Verification = h.verification
	if err := st.Finish(ctx, d); err != nil {
		t.Fatal(err)
	}
	if h.state == deployer.StateSucceeded {
		if err := st.SetServiceStatus(ctx, deployer.ServiceStatus{Name: h.service, Tag: h.tag, Digest: h.digest,
			Credential: h.credential, CredentialNote: h.note, LastDeploymentID: d.ID, UpdatedAt: at}); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func ok(name string, d time.Duration, msg string) deployer.Step {
	return deployer.Step{Name: name, Duration: d, Outcome: "ok", Message: msg}
}

// What the registry said about the GitHub App token for the web image.
const (
	webDenied = "the registry accepted the github_app credential but denied access to the image (DENIED)"
	webNote   = "github_app: " + webDenied
)

// The signer workflows of the seeded verified deployment and of the live one.
const (
	seededSigner = "acme/v7/.github/workflows/release.yml@refs/heads/main"
	liveSigner   = "acme/v7/.github/workflows/web.yml@refs/heads/main"
)

// seedRealistic fills the store with the history of two services.
func seedRealistic(t *testing.T, st *sqlite.Store, clk *testClock) {
	t.Helper()
	ctx := context.Background()
	backendOld, backendNew, webDigest := digestOf("3f9a1c"), digestOf("b71e0d"), digestOf("c4d2e8")
	login := ok("login", 420*time.Millisecond, "logged in to ghcr.io as x-access-token (github_app)")
	seedHistory(t, st, clk, history{
		service: "web", tag: "latest", digest: webDigest, ago: 26 * time.Hour, state: deployer.StateSucceeded,
		credential: "token_file", note: webNote,
		trigger: deployer.Trigger{Kind: deployer.TriggerWebhook, Event: "registry_package", DeliveryID: "8a41f6e0-27c1-11f1-9b3e-5d0c5a7f1e21"},
		steps: []deployer.Step{
			ok("resolve", 310*time.Millisecond, "latest is sha256:"+webDigest[7:19]),
			{Name: "login", Duration: 380 * time.Millisecond, Outcome: "failed",
				Message: "registry refused credential github_app; putting it aside and trying the next source: " + webDenied},
			ok("login", 350*time.Millisecond, "logged in to ghcr.io as x-access-token (token_file)"),
			ok("pull", 6200*time.Millisecond, "pulled ghcr.io/acme/v7/web@"+webDigest[:19]),
			ok("switch", 1800*time.Millisecond, "container: now "+webDigest[7:19]+" (v7-web)"),
			ok("verify", 2100*time.Millisecond, "http://127.0.0.1:8082/healthz answered 200 OK"),
		},
	})
	seedHistory(t, st, clk, history{
		service: "backend", tag: "latest", digest: backendOld, ago: 3 * time.Hour, state: deployer.StateSucceeded,
		credential: "github_app",
		trigger:    deployer.Trigger{Kind: deployer.TriggerWebhook, Event: "registry_package", DeliveryID: "1c9e2b70-2f4a-11f1-8c55-3a7d19e0b6f4"},
		verification: &deployer.Verification{Mode: deployer.AttestationsRequired, Verified: true, Workflow: seededSigner,
			PredicateType: deployer.DefaultPredicateType, VerifiedAt: time.Now().UTC().Add(-3 * time.Hour)},
		steps: []deployer.Step{
			ok("resolve", 280*time.Millisecond, "latest is sha256:"+backendOld[7:19]),
			ok("verify-image", 14*time.Millisecond, "verified "+backendOld[7:19]+": attested by workflow "+seededSigner+" ("+deployer.DefaultPredicateType+")"),
			login,
			ok("pull", 11400*time.Millisecond, "pulled ghcr.io/acme/v7/backend@"+backendOld[:19]),
			ok("switch", 2300*time.Millisecond, "container: now "+backendOld[7:19]+" (v7-backend)"),
			ok("verify", 4100*time.Millisecond, "http://127.0.0.1:8081/healthz answered 200 OK"),
		},
	})
	seedHistory(t, st, clk, history{
		service: "backend", tag: "latest", digest: backendNew, ago: 40 * time.Minute, state: deployer.StateRolledBack,
		trigger: deployer.Trigger{Kind: deployer.TriggerWebhook, Event: "registry_package", DeliveryID: "f2b7c8a4-3b19-11f1-9e21-6b4c0a9d2e77"},
		class:   "health", err: "health check http://127.0.0.1:8081/healthz failed: 503 Service Unavailable",
		hint: "the new version did not become healthy within 1m0s; check its logs and health endpoint",
		steps: []deployer.Step{
			ok("resolve", 300*time.Millisecond, "latest is sha256:"+backendNew[7:19]), login,
			ok("pull", 9800*time.Millisecond, "pulled ghcr.io/acme/v7/backend@"+backendNew[:19]),
			ok("switch", 2200*time.Millisecond, "container: now "+backendNew[7:19]+" (v7-backend)"),
			{Name: "verify", Duration: 60 * time.Second, Outcome: "failed",
				Message: "health check http://127.0.0.1:8081/healthz failed: 503 Service Unavailable"},
			ok("rollback", 3400*time.Millisecond, "restored "+backendOld[7:19]),
		},
	})
	seedRelease(t, st)
	ctx = context.WithoutCancel(ctx)
	for _, d := range []deployer.Delivery{
		{ID: "0d3e5f10-3c02-11f1-8f1a-2e6b7c9d1a03", Event: "workflow_run", Action: "completed",
			Result: deployer.ResultIgnored, Reason: `workflow "Lint" is not one that deploys`},
		{ID: "7b1a9c22-3c05-11f1-93d4-4f8e2a6b0c19", Event: "registry_package", Action: "published",
			Result: deployer.ResultIgnored, Reason: "untagged manifest of a multi-arch push"},
	} {
		d.ReceivedAt = time.Now().UTC().Add(-20 * time.Minute)
		d.BodySHA256 = fmt.Sprintf("%064x", len(d.ID)+int(d.ReceivedAt.UnixNano()%1e6)+len(d.Reason))
		if _, err := st.RecordDelivery(ctx, d, nil); err != nil {
			t.Fatal(err)
		}
	}
}

// seedRelease records a release of set v7 that web failed.
func seedRelease(t *testing.T, st *sqlite.Store) {
	t.Helper()
	ctx := context.Background()
	const commit = "9f2c4e1b7a3d5e6f8091a2b3c4d5e6f708192a3b"
	run := deployer.Trigger{Kind: deployer.TriggerWebhook, Event: "workflow_run", RunID: 4711, RunNumber: 212, Commit: commit}
	d := deployer.Delivery{ID: "5a7c9e10-3c04-11f1-8a2b-1f3e5d7b9c02", Event: "workflow_run", Action: "completed",
		BodySHA256: fmt.Sprintf("%064x", 4711), ReceivedAt: time.Now().UTC().Add(-30 * time.Minute)}
	_, ids, err := st.RecordReleaseDelivery(ctx, d, nil, []deployer.ReleaseIntake{{Set: "v7", Commit: commit, Gate: true, Trigger: run,
		Members: []deployer.ReleaseMember{{Service: "backend", Tag: "sha-9f2c4e1"}, {Service: "web", Tag: "sha-9f2c4e1"}}}})
	if err != nil {
		t.Fatal(err)
	}
	rel, ok, err := st.ClaimRelease(ctx, "v7")
	if err != nil || !ok || rel.ID != ids[0] {
		t.Fatalf("claim release: %+v %v %v", rel, ok, err)
	}
	rel.State, rel.FailedMember = deployer.ReleaseRolledBack, "web"
	rel.Reason = "web's deployment ended rolled_back: health check failed; backend rolled back to 3f9a1c3f9a1c"
	if err := st.FinishRelease(ctx, rel); err != nil {
		t.Fatal(err)
	}
}

// stepExecutor stands in for the pipeline: it walks a deployment through a
// few steps, publishing after each, and waits on release before the last.
type stepExecutor struct {
	st      *sqlite.Store
	notify  func(deployer.Deployment)
	digest  string
	message string // of the switch step
	release chan struct{}
}

func (e *stepExecutor) Execute(ctx context.Context, d deployer.Deployment) deployer.Deployment {
	step := func(name, msg string, took time.Duration) {
		s := deployer.Step{Name: name, Started: time.Now().UTC(), Duration: took, Outcome: "ok", Message: msg}
		if err := e.st.AppendStep(context.WithoutCancel(ctx), d.ID, s); err != nil {
			panic(err)
		}
		d.Steps = append(d.Steps, s)
		e.notify(d)
	}
	d.Digest = e.digest
	step("resolve", d.Tag+" is "+e.digest[:19], 250*time.Millisecond)
	d.Verification = &deployer.Verification{Mode: deployer.AttestationsRequired, Verified: true, Workflow: liveSigner,
		PredicateType: deployer.DefaultPredicateType, VerifiedAt: time.Now().UTC()}
	step("verify-image", "verified: attested by workflow "+liveSigner, 12*time.Millisecond)
	step("pull", "pulled ghcr.io/acme/v7/web@"+e.digest[:19], 3*time.Second)
	select {
	case <-e.release:
	case <-ctx.Done():
		d.State = deployer.StateInterrupted
		return d
	}
	step("switch", e.message, 1200*time.Millisecond)
	step("verify", "http://127.0.0.1:8082/healthz answered 200 OK", 900*time.Millisecond)
	st := deployer.ServiceStatus{Name: d.Service, Tag: d.Tag, Digest: e.digest, Credential: "token_file", CredentialNote: webNote,
		LastDeploymentID: d.ID, UpdatedAt: time.Now().UTC()}
	if err := e.st.SetServiceStatus(context.WithoutCancel(ctx), st); err != nil {
		panic(err)
	}
	now := time.Now().UTC()
	d.State, d.FinishedAt = deployer.StateSucceeded, &now
	return d
}

// fixedCredentials reports a realistic credential state.
var fixedCredentials = server.Credentials{
	Sources: func() []registry.SourceHealth {
		now := time.Now().UTC()
		return []registry.SourceHealth{
			{Host: "ghcr.io", Source: "github_app", State: "ok", Image: "ghcr.io/acme/v7/backend",
				Updated: now.Add(-40 * time.Minute), Expires: now.Add(52 * time.Minute)},
			{Host: "ghcr.io", Source: "token_file", State: "ok", Image: "ghcr.io/acme/v7/web",
				Updated: now.Add(-26 * time.Hour)},
		}
	},
	Tokens: func() github.AppStats {
		now := time.Now().UTC()
		return github.AppStats{Tokens: []github.TokenInfo{{InstallationID: 48151623, Permissions: "packages:read",
			Repositories: []string{"v7"}, ExpiresAt: now.Add(52 * time.Minute)}}}
	},
}

// hostileText is what the live deployment's step message and a seeded
// failure say; the page must show it as text.
const hostileText = `<img src=x onerror="window.__injected=1"><script>window.__injected=2</script>`

func TestStatusPageInBrowser(t *testing.T) {
	chromium := needChromium(t)

	// The real server over the real store, queue and hub.
	env := startBrowserServer(t, digestOf("5e8d27"), hostileText, false)
	executor, key, ts := env.executor, env.key, env.ts

	// The CSP header is on the response.
	res, err := http.Get(ts.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "script-src 'self'") {
		t.Fatalf("Content-Security-Policy = %q", csp)
	}

	// A fresh headless browser; every console error, exception, failed
	// load and CSP violation is a failure.
	ctx := newBrowser(t, chromium)
	problemCount := func() int { return len(ctx.problemList()) }

	eval := func(expr string) string { t.Helper(); return ctx.eval(t, expr) }
	waitUntil := func(what, expr, want string) { t.Helper(); ctx.waitUntil(t, what, expr, want) }
	const cardJS = `[...document.querySelectorAll(".card")].find(c => c.dataset.service === %q)`
	firstRow := func(service, field string) string {
		return fmt.Sprintf(`(() => { const c = `+cardJS+`; const li = c && c.querySelector('[data-list="deployments"] > li');
			const f = li && li.querySelector('[data-field=%q]'); return f ? f.textContent : ""; })()`, service, field)
	}

	// The page lists the configured services with their history.
	if err := chromedp.Do(ctx, chromedp.Navigate(ts.URL+"/")); err != nil {
		t.Fatal(err)
	}
	if got := eval(`[...document.querySelectorAll(".card")].map(c => c.dataset.service).join(",")`); got != "backend,web" {
		t.Fatalf("service cards = %q, want backend,web", got)
	}
	if got := eval(firstRow("backend", "state")); got != "rolled back" {
		t.Errorf("backend's last deployment shows %q, want rolled back", got)
	}
	// The release of set v7 that web failed, with its commit and members.
	const releaseJS = `(() => { const r = document.querySelector('[data-release="1"]'); if (!r) return "none";
		const f = n => r.querySelector('[data-field="' + n + '"]').textContent;
		return [f("set"), f("commit"), f("state"), f("failed_member"),
			[...r.querySelectorAll("[data-member]")].map(m => m.dataset.member + ":" + m.querySelector('[data-field="member_state"]').textContent).join(",")].join(" | "); })()`
	if got, want := eval(releaseJS), "v7 | 9f2c4e1 | rolled back | web | backend:not started,web:not started"; got != want {
		t.Errorf("release shows %q, want %q", got, want)
	}
	waitUntil("live indicator", `document.getElementById("live").dataset.state`, "live")
	eval(`window.__loadMarker = "first load"; ""`)

	if dir := screenshotDir(t); dir != "" {
		shoot(t, ctx, filepath.Join(dir, "status-page.png"), 1280, 900)
		shoot(t, ctx, filepath.Join(dir, "status-page-phone.png"), 390, 844)
		if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 900)); err != nil {
			t.Fatal(err)
		}
	}

	// A deploy through the API shows up and moves to succeeded live.
	tok, err := key.Issue("ci", []string{"deploy:web"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, ts.URL+"/api/v1/services/web/deploy", strings.NewReader(`{"tag":"v2.4.1"}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var d deployer.Deployment
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("deploy through the API: %d %v", resp.StatusCode, err)
	}
	resp.Body.Close()
	waitUntil("new deployment row", firstRow("web", "id"), fmt.Sprintf("#%d", d.ID))
	// The row added live is the anchor notifications link to, as a rendered one is.
	waitUntil("new row's anchor", fmt.Sprintf(`(document.getElementById("deployment-%d") || {}).className || ""`, d.ID), "deploy")
	waitUntil("running state", firstRow("web", "state"), "running")
	waitUntil("card badge while running", fmt.Sprintf(`(`+cardJS+`).querySelector('[data-field="state"]').textContent`, "web"), "running")
	waitUntil("steps so far", fmt.Sprintf(`String((`+cardJS+`).querySelectorAll('[data-list="steps"]')[0].children.length)`, "web"), "3")
	close(executor.release)
	waitUntil("succeeded state", firstRow("web", "state"), "succeeded")
	waitUntil("running tag", fmt.Sprintf(`(`+cardJS+`).querySelector('[data-field="tag"]').textContent`, "web"), "v2.4.1")
	waitUntil("running digest", fmt.Sprintf(`(`+cardJS+`).querySelector('[data-field="digest"]').textContent`, "web"), "5e8d275e8d27")
	waitUntil("trigger", firstRow("web", "trigger"), "manual by ci")
	// The verified badge names the signer workflow, filled in live; the
	// seeded history shows one on backend's verified deployment only.
	verifiedBadges := func(service string) string {
		return fmt.Sprintf(`[...(`+cardJS+`).querySelectorAll('[data-list="deployments"] > li')].map(li => {
			const b = li.querySelector('[data-part="verified"]'); return b.hidden ? "-" : b.textContent.trim(); }).join(" | ")`, service)
	}
	waitUntil("live verified badge", fmt.Sprintf(`(() => { const li = (`+cardJS+`).querySelector('[data-list="deployments"] > li');
		const b = li.querySelector('[data-part="verified"]'); return b.hidden ? "hidden" : b.textContent.trim(); })()`, "web"), "verified "+liveSigner)
	if got := eval(verifiedBadges("backend")); got != "- | verified "+seededSigner {
		t.Errorf("backend's verified badges: %q, want none on the rolled-back deployment and one naming %s", got, seededSigner)
	}
	if got := eval(`window.__loadMarker || "reloaded"`); got != "first load" {
		t.Fatalf("the page was reloaded (marker %q)", got)
	}

	// The hostile step message, rendered by the script, is text.
	checkInert := func(when string) {
		t.Helper()
		msg := eval(fmt.Sprintf(`(() => { const c = `+cardJS+`; const td = [...c.querySelectorAll('[data-field="message"]')].find(e => e.textContent.includes("onerror")); return td ? td.textContent : ""; })()`, "web"))
		if msg != hostileText {
			t.Errorf("%s: hostile message shows as %q, want it literally", when, msg)
			t.Log(eval(fmt.Sprintf(`(`+cardJS+`).outerHTML`, "web")))
		}
		if got := eval(`String(document.querySelectorAll("main img, main script").length) + " " + String(window.__injected || 0)`); got != "0 0" {
			t.Errorf("%s: injected elements/effects: %s", when, got)
		}
	}
	checkInert("live update")

	// After a reload the server renders the same message, escaped.
	if err := chromedp.Do(ctx, chromedp.Reload()); err != nil {
		t.Fatal(err)
	}
	waitUntil("state after reload", firstRow("web", "state"), "succeeded")
	if got := eval(verifiedBadges("web")); got != "verified "+liveSigner+" | -" {
		t.Errorf("web's verified badges as the server renders them: %q", got)
	}
	eval(`document.querySelector('[data-deployment] details').open = true; ""`)
	checkInert("server render")
	waitUntil("live indicator after reload", `document.getElementById("live").dataset.state`, "live")

	if got := eval(`window.__csp.join("; ")`); got != "" {
		t.Errorf("CSP violations: %s", got)
	}
	time.Sleep(200 * time.Millisecond) // let late console events arrive
	if p := ctx.problemList(); len(p) > 0 {
		t.Errorf("console problems:\n%s", strings.Join(p, "\n"))
	}

	// Without JavaScript the page shows the same state, and says it is static.
	if _, err := chromedp.Call(ctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true}); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Reload()); err != nil {
		t.Fatal(err)
	}
	if got := eval(firstRow("web", "state")) + " / " + eval(firstRow("backend", "state")); got != "succeeded / rolled back" {
		t.Errorf("without JavaScript the deployments show %q", got)
	}
	if got := eval(`document.getElementById("live").dataset.state + " " + document.getElementById("live-text").textContent`); !strings.HasPrefix(got, "static As of") {
		t.Errorf("without JavaScript the live indicator shows %q", got)
	}
	if _, err := chromedp.Call(ctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: false}); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Reload()); err != nil {
		t.Fatal(err)
	}
	waitUntil("live indicator with JavaScript again", `document.getElementById("live").dataset.state`, "live")

	// The checks above would see a violation: inline script is refused and reported.
	before := problemCount()
	eval(`(() => { const s = document.createElement("script"); s.textContent = "window.__inline = 1"; document.body.appendChild(s); return ""; })()`)
	waitUntil("CSP violation reported", `window.__csp.length > 0 ? "yes" : "no"`, "yes")
	if got := eval(`String(window.__inline || 0)`); got != "0" {
		t.Error("inline script ran despite the CSP")
	}
	deadline := time.Now().Add(2 * time.Second)
	for problemCount() == before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if problemCount() == before {
		t.Error("a CSP violation did not reach the console listener")
	}
}

// needChromium returns the browser to run, or skips the test when there is
// none (fails it under CI or DEPLOYD_E2E).
func needChromium(t *testing.T) string {
	t.Helper()
	chromium := findChromium()
	if chromium == "" {
		e2e.Missing(t, "chromium not found (run scripts/install-test-deps or apt-get install chromium)")
	}
	return chromium
}

// browser is a tab of a fresh headless Chromium, closed when the test ends.
// It collects every console error, warning and exception, and records CSP
// violations in window.__csp.
type browser struct {
	context.Context
	mu       sync.Mutex
	problems []string
}

// newBrowser starts Chromium for t.
func newBrowser(t *testing.T, chromium string) *browser {
	t.Helper()
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	t.Cleanup(cancelAlloc)
	ctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(cancelBrowser)
	b := &browser{Context: ctx}

	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleWarning || m.IsException() {
				b.mu.Lock()
				b.problems = append(b.problems, m.String()+" ("+m.Source+" "+m.URL+")")
				b.mu.Unlock()
			}
		}
	}()
	if _, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{
		Source: `window.__csp = []; document.addEventListener("securitypolicyviolation",
			e => window.__csp.push(e.violatedDirective + " " + e.blockedURI));`,
	}); err != nil {
		t.Fatal(err)
	}
	return b
}

// eval evaluates the JavaScript expr in the page, retrying for a few
// seconds while a navigation replaces the page, and fails t if it cannot.
func (b *browser) eval(t *testing.T, expr string) string {
	t.Helper()
	var lastErr error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		v, err := chromedp.Run(b, chromedp.Evaluate[string](expr))
		if err == nil {
			return v
		}
		lastErr = err
	}
	t.Fatalf("evaluate %s: %v", expr, lastErr)
	return ""
}

// waitUntil evaluates expr until it yields want, and fails t, naming what
// was awaited, if it has not after 10 seconds.
func (b *browser) waitUntil(t *testing.T, what, expr, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := b.eval(t, expr)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: got %q, want %q", what, got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// problemList returns the console problems so far.
func (b *browser) problemList() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.problems)
}

// screenshotDir is docs/ when DEPLOYD_UPDATE_SCREENSHOT is set, else a
// temporary directory.
func screenshotDir(t *testing.T) string {
	if os.Getenv("DEPLOYD_UPDATE_SCREENSHOT") == "" {
		return t.TempDir()
	}
	dir := filepath.Join("..", "docs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// shoot saves a full-page PNG at the given viewport size.
func shoot(t *testing.T, ctx context.Context, path string, width, height int64) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(width, height)); err != nil {
		t.Fatal(err)
	}
	// Grow the viewport to the whole page, so that the capture has exactly
	// the width asked for and nothing sticks to the top twice.
	full, err := chromedp.Run(ctx, chromedp.Evaluate[int64](`document.documentElement.scrollHeight`))
	if err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(width, max(full, height))); err != nil {
		t.Fatal(err)
	}
	time.Sleep(150 * time.Millisecond) // let the layout settle
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s (%d bytes)", path, len(png))
}

// browserServer is the real server over the real store, queue and hub,
// seeded with realistic history, for the browser tests.
type browserServer struct {
	executor *stepExecutor
	queue    *deployer.Queue
	key      *apitoken.Key
	hub      *server.Hub
	ts       *httptest.Server
}

// startBrowserServer starts it; the executor's deployments report digest
// and step message, and wait for executor.release. private turns
// status.public off.
func startBrowserServer(t *testing.T, digest, message string, private bool) browserServer {
	t.Helper()
	clk := &testClock{}
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "deployd.db"), sqlite.WithClock(clk.now))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	seedRealistic(t, st, clk)

	hub := server.NewHub(server.HubConfig{Logger: zerolog.Nop()})
	executor := &stepExecutor{st: st, notify: hub.Publish, digest: digest, message: message, release: make(chan struct{})}
	queue, err := deployer.NewQueue(deployer.QueueConfig{Store: st, Executor: executor, Logger: zerolog.Nop(), Notify: hub.Publish})
	if err != nil {
		t.Fatal(err)
	}
	if err := queue.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		queue.Shutdown(ctx)
	})
	key, err := apitoken.NewKey([]byte(apiKeyMaterial))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{
		Webhook: http.NotFoundHandler(),
		Reads:   server.Reads{Store: st, Events: hub, Credentials: fixedCredentials, Releases: st},
		Queue:   queue,
		Auth:    server.Auth{Tokens: verifier{key}, StatusPrivate: private},
		Services: []deployer.Service{
			{Name: "backend", Image: "ghcr.io/acme/v7/backend", Strategy: "container", Tags: []string{"latest"}, DefaultTag: "latest"},
			{Name: "web", Image: "ghcr.io/acme/v7/web", Strategy: "container", Tags: []string{"latest"}, DefaultTag: "latest"},
		},
		Logger: zerolog.Nop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	t.Cleanup(hub.Close) // runs before ts.Close: ends the event streams
	return browserServer{executor: executor, queue: queue, key: key, hub: hub, ts: ts}
}
