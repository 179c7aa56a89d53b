package server_test

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/deployd/deployd/deployer"
)

// TestPrivateStatusPageLoginInBrowser logs in to a private status page
// through the form in headless Chromium, as an operator would, and checks
// that the page then shows the services and follows a deployment live.
func TestPrivateStatusPageLoginInBrowser(t *testing.T) {
	chromium := needChromium(t)

	env := startBrowserServer(t, digestOf("9c41ab"), "container: now 9c41ab9c41ab (v7-web)", true)
	executor, queue, key, ts := env.executor, env.queue, env.key, env.ts

	tok, err := key.Issue("alice", []string{"status:read"}, 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	claims, err := key.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}

	ctx := newBrowser(t, chromium)
	eval := func(expr string) string { t.Helper(); return ctx.eval(t, expr) }
	waitUntil := func(what, expr, want string) { t.Helper(); ctx.waitUntil(t, what, expr, want) }
	// submit types into the token field and sends the form.
	submit := func(token string) *network.Response {
		t.Helper()
		if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.CSS("#token"), token)); err != nil {
			t.Fatal(err)
		}
		res, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(".login-form button")))
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	loginCookie := func() *network.Cookie {
		t.Helper()
		res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{ts.URL + "/"}})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range res.Cookies {
			if c.Name == "deployd_token" {
				return c
			}
		}
		return nil
	}

	// The page sends the browser to the form.
	res, err := chromedp.RunResponse(ctx, chromedp.Navigate(ts.URL+"/"))
	if err != nil {
		t.Fatal(err)
	}
	if res.URL != ts.URL+"/login" || res.Status != http.StatusOK {
		t.Fatalf("GET / ends at %s (%d), want the login form", res.URL, res.Status)
	}
	if got := eval(`document.querySelector(".login-title").textContent`); got != "Log in to the status page" {
		t.Errorf("login heading = %q", got)
	}
	shoot(t, ctx, filepath.Join(t.TempDir(), "status-login.png"), 1280, 900)
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 900)); err != nil {
		t.Fatal(err)
	}

	// A wrong token: the form again, saying why, and no cookie.
	res = submit("not-a-token")
	if res.Status != http.StatusUnauthorized {
		t.Errorf("wrong token answered %d, want 401", res.Status)
	}
	if got := eval(`location.pathname + " " + document.querySelector(".login-error").textContent`); !strings.Contains(got, "/login That token was refused: invalid API token: malformed") {
		t.Errorf("after a wrong token the page shows %q", got)
	}
	if got := eval(`document.getElementById("token").value`); got != "" {
		t.Errorf("the form keeps the refused token: %q", got)
	}
	if c := loginCookie(); c != nil {
		t.Fatalf("a wrong token set a cookie: %+v", c)
	}

	// The right token: the status page, with the services, and an HttpOnly
	// SameSite=Strict cookie that ends with the token.
	res = submit(tok)
	if res.URL != ts.URL+"/" || res.Status != http.StatusOK {
		t.Fatalf("login ends at %s (%d), want the status page", res.URL, res.Status)
	}
	c := loginCookie()
	if c == nil {
		t.Fatal("login set no cookie")
	}
	if !c.HTTPOnly || c.SameSite != network.CookieSameSiteStrict || c.Session || c.Path != "/" {
		t.Errorf("cookie: HttpOnly %v, SameSite %q, without expiry %v, path %q", c.HTTPOnly, c.SameSite, c.Session, c.Path)
	}
	if exp := claims.ExpiresAt.Unix(); c.Expires > float64(exp)+1 || c.Expires < float64(exp)-60 || math.IsNaN(c.Expires) {
		t.Errorf("cookie expires at %v, want at the token's exp %d", c.Expires, exp)
	}
	if got := eval(`document.cookie`); got != "" {
		t.Errorf("scripts can read the cookie: %q", got)
	}
	if got := eval(`[...document.querySelectorAll(".card")].map(c => c.dataset.service).join(",")`); got != "backend,web" {
		t.Fatalf("service cards = %q, want backend,web", got)
	}
	waitUntil("live indicator", `document.getElementById("live").dataset.state`, "live")
	eval(`window.__loadMarker = "first load"; ""`)

	// A deployment shows up and moves to succeeded without a reload.
	const cardJS = `[...document.querySelectorAll(".card")].find(c => c.dataset.service === "web")`
	firstRow := func(field string) string {
		return fmt.Sprintf(`(() => { const c = `+cardJS+`; const li = c && c.querySelector('[data-list="deployments"] > li');
			const f = li && li.querySelector('[data-field=%q]'); return f ? f.textContent : ""; })()`, field)
	}
	d, err := queue.Enqueue(context.Background(), deployer.Request{Service: "web", Tag: "v2.5.0",
		Trigger: deployer.Trigger{Kind: deployer.TriggerManual, Subject: "ci"}})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil("new deployment row", firstRow("id"), fmt.Sprintf("#%d", d.ID))
	waitUntil("running state", firstRow("state"), "running")
	close(executor.release)
	waitUntil("succeeded state", firstRow("state"), "succeeded")
	waitUntil("running tag", `(`+cardJS+`).querySelector('[data-field="tag"]').textContent`, "v2.5.0")
	if got := eval(`window.__loadMarker || "reloaded"`); got != "first load" {
		t.Fatalf("the page was reloaded (marker %q)", got)
	}
	if got := eval(`String(document.documentElement.outerHTML.includes(` + fmt.Sprintf("%q", tok) + `))`); got != "false" {
		t.Error("the page holds the token")
	}

	// Logging out clears the cookie; the page asks for a token again.
	res, err = chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(".logout button")))
	if err != nil {
		t.Fatal(err)
	}
	if res.URL != ts.URL+"/login" {
		t.Errorf("logout ends at %s, want the login form", res.URL)
	}
	if c := loginCookie(); c != nil {
		t.Errorf("logout left the cookie: %+v", c)
	}
	res, err = chromedp.RunResponse(ctx, chromedp.Navigate(ts.URL+"/"))
	if err != nil {
		t.Fatal(err)
	}
	if res.URL != ts.URL+"/login" {
		t.Errorf("after logout GET / ends at %s, want the login form", res.URL)
	}

	if got := eval(`window.__csp.join("; ")`); got != "" {
		t.Errorf("CSP violations: %s", got)
	}
	time.Sleep(200 * time.Millisecond) // let late console events arrive
	var problems []string
	for _, p := range ctx.problemList() {
		// The browser logs the refused login's 401; that one is expected.
		if strings.Contains(p, "status of 401") && strings.Contains(p, "network "+ts.URL+"/login") {
			continue
		}
		problems = append(problems, p)
	}
	if len(problems) > 0 {
		t.Errorf("console problems:\n%s", strings.Join(problems, "\n"))
	}
}
