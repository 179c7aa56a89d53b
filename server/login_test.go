package server_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/deployd/deployd/auth/apitoken"
	"github.com/deployd/deployd/server"
)

// noRedirects is a client that shows redirects instead of following them.
var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// browserReq describes a request as a browser would send it.
type browserReq struct {
	method, path string
	form         url.Values // sent form-encoded
	cookie       string     // value of the login cookie
	origin       string     // Origin header; "-" leaves it out
	referer      string
	accept       string
	contentType  string // overrides the form's
	body         string // overrides the form
}

// browse sends b to e without following redirects.
func (e *apiEnv) browse(b browserReq) response {
	e.t.Helper()
	var body io.Reader
	switch {
	case b.body != "":
		body = strings.NewReader(b.body)
	case b.form != nil:
		body = strings.NewReader(b.form.Encode())
	}
	req, err := http.NewRequest(b.method, e.url+b.path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if b.form != nil || b.body != "" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if b.contentType != "" {
		req.Header.Set("Content-Type", b.contentType)
	}
	switch {
	case b.origin == "-":
	case b.origin != "":
		req.Header.Set("Origin", b.origin)
	case b.method == http.MethodPost:
		req.Header.Set("Origin", e.url)
	}
	if b.referer != "" {
		req.Header.Set("Referer", b.referer)
	}
	if b.accept != "" {
		req.Header.Set("Accept", b.accept)
	}
	if b.cookie != "" {
		req.AddCookie(&http.Cookie{Name: "deployd_token", Value: b.cookie})
	}
	resp, err := noRedirects.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: rb}
}

// loginCookie returns the login cookie r sets, nil if none.
func (r response) loginCookie() *http.Cookie {
	for _, c := range (&http.Response{Header: r.header}).Cookies() {
		if c.Name == "deployd_token" {
			return c
		}
	}
	return nil
}

// login posts tok to /login and returns the answer.
func (e *apiEnv) login(tok string) response {
	e.t.Helper()
	return e.browse(browserReq{method: http.MethodPost, path: "/login", form: url.Values{"token": {tok}}})
}

const acceptHTML = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"

// lockedBuffer collects the server's log from every goroutine.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestPrivatePageSendsBrowsersToLogin(t *testing.T) {
	e := newAPIEnv(t, apiOpts{private: true})

	r := e.browse(browserReq{method: http.MethodGet, path: "/", accept: acceptHTML})
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/login" {
		t.Fatalf("GET / from a browser = %d to %q, want 303 to /login", r.status, r.header.Get("Location"))
	}
	// A garbage cookie is no login either.
	r = e.browse(browserReq{method: http.MethodGet, path: "/", accept: acceptHTML, cookie: "garbage"})
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/login" {
		t.Errorf("GET / with a garbage cookie = %d to %q", r.status, r.header.Get("Location"))
	}
	// API clients, and a browser that sends a bad bearer token, get 401 JSON.
	for _, b := range []browserReq{
		{method: http.MethodGet, path: "/"},
		{method: http.MethodGet, path: "/api/v1/services", accept: acceptHTML},
		{method: http.MethodGet, path: "/api/v1/events", accept: "text/event-stream"},
		{method: http.MethodGet, path: "/metrics", accept: acceptHTML},
	} {
		r := e.browse(b)
		if r.status != http.StatusUnauthorized || !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
			t.Errorf("GET %s (Accept %q) = %d %s, want 401 JSON", b.path, b.accept, r.status, r.header.Get("Content-Type"))
		}
	}
	r = e.do(http.MethodGet, "/", "garbage", nil)
	if r.status != http.StatusUnauthorized {
		t.Errorf("GET / with a bad bearer token = %d, want 401", r.status)
	}

	// The form: our stylesheet, no script, the same security headers.
	r = e.browse(browserReq{method: http.MethodGet, path: "/login", accept: acceptHTML})
	if r.status != http.StatusOK {
		t.Fatalf("GET /login = %d: %s", r.status, r.body)
	}
	for h, want := range map[string]string{
		"Content-Type":    "text/html; charset=utf-8",
		"Cache-Control":   "no-store",
		"X-Frame-Options": "DENY",
		"Referrer-Policy": "same-origin",
	} {
		if got := r.header.Get(h); got != want {
			t.Errorf("GET /login %s = %q, want %q", h, got, want)
		}
	}
	if csp := r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "form-action 'self'") {
		t.Errorf("GET /login Content-Security-Policy = %q", csp)
	}
	page := string(r.body)
	for _, want := range []string{`<form class="login-form" method="post" action="/login">`, `name="token"`, `type="password"`, `/assets/status.css?v=`} {
		if !strings.Contains(page, want) {
			t.Errorf("login form lacks %s", want)
		}
	}
	for _, bad := range []string{"<script", "style=", "role=\"alert\""} {
		if strings.Contains(page, bad) {
			t.Errorf("fresh login form holds %s", bad)
		}
	}
}

func TestLoginSetsCookie(t *testing.T) {
	var logs lockedBuffer
	e := newAPIEnv(t, apiOpts{private: true, log: &logs})
	tok := e.token("status:read")

	r := e.login(tok)
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/" {
		t.Fatalf("POST /login = %d to %q: %s", r.status, r.header.Get("Location"), r.body)
	}
	c := r.loginCookie()
	if c == nil {
		t.Fatalf("POST /login set no cookie: %v", r.header.Values("Set-Cookie"))
	}
	if c.Value != tok || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.Domain != "" || c.Secure {
		t.Errorf("cookie = %+v; want the token, HttpOnly, SameSite=Strict, Path=/, no Domain, not Secure over plain http", c)
	}
	// Issued for an hour: the cookie ends with the token, not later.
	if c.MaxAge > int(time.Hour/time.Second) || c.MaxAge < int(time.Hour/time.Second)-60 {
		t.Errorf("cookie Max-Age = %d, want about 3600 and no more", c.MaxAge)
	}

	// With the cookie, the page, the read API, the event stream and /metrics work.
	r = e.browse(browserReq{method: http.MethodGet, path: "/", accept: acceptHTML, cookie: c.Value})
	if r.status != http.StatusOK {
		t.Fatalf("GET / with the cookie = %d: %s", r.status, r.body)
	}
	for _, want := range []string{`data-service="backend"`, `data-service="web"`, `action="/logout"`} {
		if !strings.Contains(string(r.body), want) {
			t.Errorf("page lacks %s", want)
		}
	}
	if strings.Contains(string(r.body), tok) {
		t.Error("the page shows the token")
	}
	for _, p := range []string{"/api/v1/services", "/api/v1/services/backend", "/api/v1/deployments", "/api/v1/deliveries", "/metrics"} {
		if r := e.browse(browserReq{method: http.MethodGet, path: p, cookie: c.Value}); r.status != http.StatusOK {
			t.Errorf("GET %s with the cookie = %d: %s", p, r.status, r.body)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.url+"/api/v1/events", nil)
	req.Header.Set("Accept", "text/event-stream")
	req.AddCookie(c)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("GET /api/v1/events with the cookie = %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	line, err := bufio.NewReader(res.Body).ReadString('\n')
	if err != nil || line == "" {
		t.Errorf("event stream: %q %v", line, err)
	}
	cancel()
	res.Body.Close()

	// Logged in, /login goes to the page.
	r = e.browse(browserReq{method: http.MethodGet, path: "/login", accept: acceptHTML, cookie: c.Value})
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/" {
		t.Errorf("GET /login logged in = %d to %q", r.status, r.header.Get("Location"))
	}

	// A deploy token logs in too: every deploy scope grants status:read.
	if r := e.login(e.token("deploy:web")); r.status != http.StatusSeeOther || r.loginCookie() == nil {
		t.Errorf("login with deploy:web = %d, cookie %v", r.status, r.loginCookie())
	}

	// The access log line is written after the answer; Close waits for
	// the handlers, so the log is complete after it.
	e.ts.Close()
	if strings.Contains(logs.String(), tok) {
		t.Error("the log holds the token")
	}
	if !strings.Contains(logs.String(), "status page login") {
		t.Errorf("the login is not logged:\n%s", logs.String())
	}
}

// exactScopes grants only the scopes a token carries: a deploy token then
// lacks status:read, which the real rules imply.
type exactScopes struct{ verifier }

func (v exactScopes) Verify(ctx context.Context, tok string) (server.Caller, error) {
	c, err := v.verifier.Verify(ctx, tok)
	if err != nil {
		return c, err
	}
	claims, _ := v.key.Verify(tok)
	c.Allows = func(scope string) bool { return slices.Contains(claims.Scopes, scope) }
	return c, nil
}

func TestLoginRefused(t *testing.T) {
	var logs lockedBuffer
	e := newAPIEnv(t, apiOpts{private: true, log: &logs,
		tokens: func(k *apitoken.Key) server.TokenVerifier { return exactScopes{verifier{k}} }})
	issueAt := func(ago, ttl time.Duration) string {
		k, err := apitoken.NewKey([]byte(apiKeyMaterial), apitoken.WithClock(func() time.Time { return time.Now().Add(-ago) }))
		if err != nil {
			t.Fatal(err)
		}
		tok, err := k.Issue("ci", []string{"status:read"}, ttl)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	tests := []struct {
		name, token, says string
	}{
		{"without status:read", e.token("deploy:web"), `The token of &#34;ci&#34; does not grant status:read`},
		{"expired", issueAt(2*time.Hour, time.Hour), "refused: invalid API token: expired"},
		{"expired within the clock leeway", issueAt(time.Hour+10*time.Second, time.Hour), "it has expired"},
		{"garbage", "garbage", "refused: invalid API token: malformed"},
		{"other key", foreign(t, jwt.SigningMethodHS256, []byte("another key, another deployd, 0123456789"), func(c jwt.MapClaims) { c["scope"] = "status:read" }),
			"not signed with this deployd&#39;s key"},
		{"alg none", foreign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, nil), "refused: invalid API token"},
		{"empty", "  ", "Paste an API token."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.login(tc.token)
			if r.status != http.StatusUnauthorized {
				t.Fatalf("POST /login = %d to %q, want 401", r.status, r.header.Get("Location"))
			}
			if ct := r.header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
				t.Errorf("Content-Type = %q, want the form", ct)
			}
			if len(r.header.Values("Set-Cookie")) != 0 {
				t.Errorf("a refused login sets %v", r.header.Values("Set-Cookie"))
			}
			body := string(r.body)
			if !strings.Contains(body, tc.says) || !strings.Contains(body, `role="alert"`) || !strings.Contains(body, `name="token"`) {
				t.Errorf("the form does not say %q:\n%s", tc.says, body)
			}
			if strings.TrimSpace(tc.token) != "" && strings.Contains(body, tc.token) {
				t.Error("the form shows the refused token")
			}
		})
	}

	// A token in the query string is not read: it would be in URLs and logs.
	r := e.browse(browserReq{method: http.MethodPost, path: "/login?token=" + url.QueryEscape(e.token("status:read")), body: "x=1"})
	if r.status != http.StatusUnauthorized || r.loginCookie() != nil {
		t.Errorf("token in the query = %d, cookie %v", r.status, r.loginCookie())
	}
	// Bad bodies get the form with a status that says why.
	if r := e.browse(browserReq{method: http.MethodPost, path: "/login", body: "token=" + strings.Repeat("a", 20<<10)}); r.status != http.StatusRequestEntityTooLarge || r.loginCookie() != nil {
		t.Errorf("oversized form = %d", r.status)
	}
	if r := e.browse(browserReq{method: http.MethodPost, path: "/login", body: `{"token":"x"}`, contentType: "application/json"}); r.status != http.StatusUnsupportedMediaType {
		t.Errorf("JSON login = %d, want 415", r.status)
	}
	e.ts.Close() // waits for the handlers and so for their log lines
	for _, tc := range tests {
		if len(strings.TrimSpace(tc.token)) > 10 && strings.Contains(logs.String(), tc.token) {
			t.Errorf("the log holds the %s token", tc.name)
		}
	}
}

func TestLoginRefusesCrossOrigin(t *testing.T) {
	e := newAPIEnv(t, apiOpts{private: true})
	tok := e.token("status:read")
	form := url.Values{"token": {tok}}
	for _, b := range []browserReq{
		{origin: "http://evil.example"},
		{origin: "null"},
		{origin: "http://127.0.0.1:1"}, // another port
		{origin: "-"},
		{origin: "-", referer: "http://evil.example/login"},
	} {
		b.method, b.path, b.form = http.MethodPost, "/login", form
		r := e.browse(b)
		if r.status != http.StatusForbidden || r.loginCookie() != nil {
			t.Errorf("POST /login from Origin %q Referer %q = %d, cookie %v; want 403 and none", b.origin, b.referer, r.status, r.loginCookie())
		}
	}
	// Without Origin, a same-origin Referer will do.
	r := e.browse(browserReq{method: http.MethodPost, path: "/login", form: form, origin: "-", referer: e.url + "/login"})
	if r.status != http.StatusSeeOther || r.loginCookie() == nil {
		t.Errorf("POST /login with a same-origin Referer = %d", r.status)
	}
	// Logging out is checked the same way.
	if r := e.browse(browserReq{method: http.MethodPost, path: "/logout", origin: "http://evil.example"}); r.status != http.StatusForbidden || r.loginCookie() != nil {
		t.Errorf("cross-origin POST /logout = %d, cookie %v", r.status, r.loginCookie())
	}
}

func TestLoginBehindHTTPSProxy(t *testing.T) {
	e := newAPIEnv(t, apiOpts{private: true, publicURL: "https://Deployd.example.com/"})
	r := e.browse(browserReq{method: http.MethodPost, path: "/login", form: url.Values{"token": {e.token("status:read")}},
		origin: "https://deployd.example.com"})
	c := r.loginCookie()
	if r.status != http.StatusSeeOther || c == nil || !c.Secure {
		t.Fatalf("login from public_url's origin = %d, cookie %+v; want 303 and a Secure cookie", r.status, c)
	}
	r = e.browse(browserReq{method: http.MethodPost, path: "/login", form: url.Values{"token": {e.token("status:read")}},
		origin: "http://deployd.example.com"})
	if r.status != http.StatusForbidden {
		t.Errorf("login from public_url's host over http = %d, want 403", r.status)
	}
}

func TestLoginCookieNotForWrites(t *testing.T) {
	e := newAPIEnv(t, apiOpts{private: true})
	tok := e.token("deploy:*")
	c := e.login(tok).loginCookie()
	if c == nil {
		t.Fatal("login with deploy:* set no cookie")
	}
	for _, p := range []string{"/api/v1/services/backend/deploy", "/api/v1/services/backend/rollback"} {
		r := e.browse(browserReq{method: http.MethodPost, path: p, cookie: c.Value, body: "{}", contentType: "application/json"})
		if r.status != http.StatusUnauthorized {
			t.Errorf("POST %s with the cookie only = %d %s, want 401", p, r.status, r.body)
		}
	}
	if n := e.count(); n != 0 {
		t.Fatalf("the cookie queued %d deployments", n)
	}
	// The same token in the header deploys: the cookie alone is what is refused.
	if r := e.post("/api/v1/services/backend/deploy", tok, ""); r.status != http.StatusAccepted {
		t.Errorf("deploy with the header = %d %s", r.status, r.body)
	}
}

func TestLogout(t *testing.T) {
	e := newAPIEnv(t, apiOpts{private: true})
	c := e.login(e.token("status:read")).loginCookie()
	if c == nil {
		t.Fatal("no cookie")
	}
	r := e.browse(browserReq{method: http.MethodPost, path: "/logout", cookie: c.Value})
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/login" {
		t.Fatalf("POST /logout = %d to %q", r.status, r.header.Get("Location"))
	}
	cleared := r.loginCookie()
	if cleared == nil || cleared.Value != "" || cleared.MaxAge >= 0 || !cleared.HttpOnly || cleared.Path != "/" {
		t.Fatalf("logout cookie = %+v, want an empty one with Max-Age=0", cleared)
	}
	if !slices.ContainsFunc(r.header.Values("Set-Cookie"), func(v string) bool { return strings.Contains(v, "Max-Age=0") }) {
		t.Errorf("Set-Cookie = %v", r.header.Values("Set-Cookie"))
	}

	// A cookie whose token stopped working is cleared by the form, which says why.
	r = e.browse(browserReq{method: http.MethodGet, path: "/login", accept: acceptHTML, cookie: "garbage"})
	if r.status != http.StatusOK || !strings.Contains(string(r.body), "no longer accepted") {
		t.Errorf("GET /login with a dead cookie = %d:\n%s", r.status, r.body)
	}
	if c := r.loginCookie(); c == nil || c.MaxAge >= 0 {
		t.Errorf("GET /login with a dead cookie does not clear it: %+v", c)
	}
}

func TestLoginWithPublicStatus(t *testing.T) {
	e := newAPIEnv(t, apiOpts{})
	for _, b := range []browserReq{
		{method: http.MethodGet, path: "/login", accept: acceptHTML},
		{method: http.MethodPost, path: "/login", form: url.Values{"token": {e.token("status:read")}}},
	} {
		r := e.browse(b)
		if r.status != http.StatusSeeOther || r.header.Get("Location") != "/" || r.loginCookie() != nil {
			t.Errorf("%s /login with a public status = %d to %q, cookie %v", b.method, r.status, r.header.Get("Location"), r.loginCookie())
		}
	}
	r := e.browse(browserReq{method: http.MethodGet, path: "/", accept: acceptHTML})
	if r.status != http.StatusOK || strings.Contains(string(r.body), `action="/logout"`) {
		t.Errorf("public page = %d, or it offers to log out", r.status)
	}
}
