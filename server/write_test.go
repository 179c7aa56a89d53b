package server_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/deployd/deployd/auth/apitoken"
	"github.com/deployd/deployd/deployer"
	"github.com/deployd/deployd/deployer/sqlite"
	"github.com/deployd/deployd/server"
	"github.com/deployd/deployd/server/metrics"
)

const apiKeyMaterial = "api-test-key-0123456789abcdef0123456789"

// sha256Of is the digest a fake registry would give tag.
func sha256Of(tag string) string {
	sum := sha256.Sum256([]byte(tag))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// endingExecutor ends deployments the way their tag says: "fail-*" fails,
// "rollback-*" rolls back, "hold-*" runs until released, anything else
// succeeds and becomes what runs for the service. Each deployment gets one
// step, reported to step.
type endingExecutor struct {
	store   deployer.Store
	step    func(deployer.Deployment)
	release chan struct{}

	mu  sync.Mutex
	ran []deployer.Deployment
}

func (e *endingExecutor) Execute(ctx context.Context, d deployer.Deployment) deployer.Deployment {
	if d.Digest == "" {
		d.Digest = sha256Of(d.Tag)
	}
	if strings.HasPrefix(d.Tag, "hold-") {
		select {
		case <-e.release:
		case <-ctx.Done():
			d.State = deployer.StateInterrupted
			return d
		}
	}
	s := deployer.Step{Name: "resolve", Started: time.Now().UTC(), Duration: 3 * time.Millisecond, Outcome: "ok", Message: "resolved " + d.Digest}
	d.Steps = append(d.Steps, s)
	if err := e.store.AppendStep(ctx, d.ID, s); err != nil {
		panic(err)
	}
	if e.step != nil {
		e.step(d)
	}
	now := time.Now().UTC()
	d.FinishedAt = &now
	switch {
	case strings.HasPrefix(d.Tag, "fail-"):
		d.State, d.ErrorClass, d.Error, d.Hint = deployer.StateFailed, "auth", "registry refused the pull (403 DENIED)", "grant the App access to the package"
	case strings.HasPrefix(d.Tag, "rollback-"):
		d.State, d.ErrorClass, d.Error, d.Hint = deployer.StateRolledBack, "health", "health check timed out", "see the container's log"
	default:
		d.State = deployer.StateSucceeded
		if !d.DryRun {
			st, err := e.store.ServiceStatus(ctx, d.Service)
			if err != nil {
				panic(err)
			}
			if st.Digest != d.Digest {
				st.PreviousDigest = st.Digest
			}
			st.Digest, st.Tag, st.LastDeploymentID, st.UpdatedAt = d.Digest, d.Tag, d.ID, now
			if err := e.store.SetServiceStatus(ctx, st); err != nil {
				panic(err)
			}
		}
	}
	e.mu.Lock()
	e.ran = append(e.ran, d)
	e.mu.Unlock()
	return d
}

// verifier adapts *apitoken.Key to server.TokenVerifier, as the command does.
type verifier struct{ key *apitoken.Key }

func (v verifier) Verify(ctx context.Context, tok string) (server.Caller, error) {
	c, err := v.key.Verify(tok)
	if err != nil {
		return server.Caller{}, err
	}
	return server.Caller{Subject: c.Subject, TokenID: c.ID, Allows: c.Allows, ExpiresAt: c.ExpiresAt}, nil
}

// apiEnv is a real server over a real store and queue, served on a port.
type apiEnv struct {
	t       *testing.T
	url     string
	ts      *httptest.Server
	store   *sqlite.Store
	queue   *deployer.Queue
	key     *apitoken.Key
	exec    *endingExecutor
	metrics *metrics.Metrics
}

type apiOpts struct {
	private bool // status.public: false
	noKey   bool // api.token_key_file not set
	// tokens, if set, verifies tokens instead of the key.
	tokens func(*apitoken.Key) server.TokenVerifier
	// publicURL is public_url.
	publicURL string
	// log, if set, receives the server's log.
	log io.Writer
}

func newAPIEnv(t *testing.T, o apiOpts) *apiEnv {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "deployd.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	services := []deployer.Service{
		{Name: "backend", Image: "ghcr.io/acme/v7/backend", Strategy: "container", Tags: []string{"latest"}, DefaultTag: "latest"},
		{Name: "web", Image: "ghcr.io/acme/v7/web", Strategy: "container", Tags: []string{"sha-*"}},
	}
	m, err := metrics.New(metrics.Config{Registry: prometheus.NewRegistry(), History: st, Services: []string{"backend", "web"}})
	if err != nil {
		t.Fatal(err)
	}
	exec := &endingExecutor{store: st, step: m.Step, release: make(chan struct{})}
	q, err := deployer.NewQueue(deployer.QueueConfig{Store: st, Executor: exec, Logger: zerolog.Nop(), Notify: m.Deployment})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		close(exec.release)
		_ = q.Shutdown(ctx)
	})
	key, err := apitoken.NewKey([]byte(apiKeyMaterial))
	if err != nil {
		t.Fatal(err)
	}
	cfg := server.Config{
		Webhook:  http.NotFoundHandler(),
		Reads:    server.Reads{Store: st, Metrics: m.Handler()},
		Queue:    q,
		Auth:     server.Auth{StatusPrivate: o.private, PublicURL: o.publicURL},
		Services: services,
		Logger:   zerolog.Nop(),
	}
	if !o.noKey {
		cfg.Auth.Tokens = verifier{key}
	}
	if o.tokens != nil {
		cfg.Auth.Tokens = o.tokens(key)
	}
	if o.log != nil {
		cfg.Logger = zerolog.New(o.log)
	}
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	return &apiEnv{t: t, url: ts.URL, ts: ts, store: st, queue: q, key: key, exec: exec, metrics: m}
}

func (e *apiEnv) token(scopes ...string) string {
	e.t.Helper()
	tok, err := e.key.Issue("ci", scopes, time.Hour)
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

// response is an answer read whole.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("answer %d is not JSON: %v: %s", r.status, err, r.body)
	}
	return m
}

func (r response) deployment(t *testing.T) deployer.Deployment {
	t.Helper()
	var d deployer.Deployment
	if err := json.Unmarshal(r.body, &d); err != nil {
		t.Fatalf("answer %d is not a deployment: %v: %s", r.status, err, r.body)
	}
	return d
}

func (e *apiEnv) do(method, path, token string, body io.Reader) response {
	e.t.Helper()
	req, err := http.NewRequest(method, e.url+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

func (e *apiEnv) post(path, token, body string) response {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	return e.do(http.MethodPost, path, token, rd)
}

// count returns how many deployments the store holds.
func (e *apiEnv) count() int {
	e.t.Helper()
	ds, err := e.store.Deployments(context.Background(), "", deployer.Page{Limit: 500})
	if err != nil {
		e.t.Fatal(err)
	}
	return len(ds)
}

// waitEnd waits until deployment id is final and returns it.
func (e *apiEnv) waitEnd(id int64) deployer.Deployment {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		d, err := e.store.Deployment(context.Background(), id)
		if err != nil {
			e.t.Fatal(err)
		}
		if d.State.Final() {
			return d
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("deployment %d still %s", id, d.State)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// foreign signs a token as someone without deployd's key would.
func foreign(t *testing.T, method jwt.SigningMethod, key any, change func(jwt.MapClaims)) string {
	t.Helper()
	now := time.Now()
	c := jwt.MapClaims{"iss": apitoken.Issuer, "aud": apitoken.Audience, "sub": "mallory", "scope": "deploy:*",
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	if change != nil {
		change(c)
	}
	s, err := jwt.NewWithClaims(method, c).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestDeployAuth(t *testing.T) {
	e := newAPIEnv(t, apiOpts{})
	none := foreign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, nil)
	tests := []struct {
		name   string
		header string // Authorization
		status int
		reason string
	}{
		{"no token", "", 401, "missing API token"},
		{"not bearer", "Basic Y2k6Y2k=", 401, "missing API token"},
		{"garbage", "Bearer nonsense", 401, "malformed"},
		{"bad signature", "Bearer " + foreign(t, jwt.SigningMethodHS256, []byte("some-other-key-some-other-key-xx!"), nil), 401, "key"},
		{"forged with our key but expired", "Bearer " + foreign(t, jwt.SigningMethodHS256, []byte(apiKeyMaterial), func(c jwt.MapClaims) {
			c["exp"] = time.Now().Add(-time.Hour).Unix()
		}), 401, "expired"},
		{"alg none", "Bearer " + none, 401, "HS256"},
		{"HS512 with our key", "Bearer " + foreign(t, jwt.SigningMethodHS512, []byte(apiKeyMaterial), nil), 401, "HS256"},
		{"wrong scope", "Bearer " + e.token("deploy:web"), 403, "does not grant deploy:backend"},
		{"read only", "Bearer " + e.token("status:read"), 403, "does not grant deploy:backend"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, e.url+"/api/v1/services/backend/deploy", nil)
			if tt.header != "" {
				req.Header.Set("Authorization", tt.header)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, b)
			}
			if !strings.Contains(string(b), tt.reason) {
				t.Errorf("body %s does not say %q", b, tt.reason)
			}
			if ch := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(ch, `Bearer realm="deployd"`) {
				t.Errorf("WWW-Authenticate = %q", ch)
			}
			if tt.status == 403 && !strings.Contains(resp.Header.Get("WWW-Authenticate"), `insufficient_scope`) {
				t.Errorf("403 challenge = %q", resp.Header.Get("WWW-Authenticate"))
			}
		})
	}
	if n := e.count(); n != 0 {
		t.Fatalf("%d deployments queued by refused requests", n)
	}

	for _, scope := range []string{"deploy:backend", "deploy:*"} {
		r := e.post("/api/v1/services/backend/deploy", e.token(scope), "")
		if r.status != http.StatusAccepted {
			t.Fatalf("%s: status %d: %s", scope, r.status, r.body)
		}
		d := r.deployment(t)
		if d.Trigger.Kind != deployer.TriggerManual || d.Trigger.Subject != "ci" || d.Tag != "latest" {
			t.Errorf("%s: deployment = %+v", scope, d)
		}
	}
	// The token is never echoed.
	tok := e.token("deploy:web")
	r := e.post("/api/v1/services/backend/deploy", tok, "")
	if bytes.Contains(r.body, []byte(tok)) || bytes.Contains(r.body, []byte(strings.Split(tok, ".")[2])) {
		t.Errorf("answer quotes the token: %s", r.body)
	}
}

func TestDeployBadInputQueuesNothing(t *testing.T) {
	e := newAPIEnv(t, apiOpts{})
	tok := e.token("deploy:*")
	tests := []struct {
		name, path, body string
		status           int
		says             string
	}{
		{"tag and digest", "/api/v1/services/backend/deploy", `{"tag":"v1","digest":"` + sha256Of("x") + `"}`, 400, "not both"},
		{"bad tag", "/api/v1/services/backend/deploy", `{"tag":"../etc"}`, 400, "[A-Za-z0-9_][A-Za-z0-9._-]{0,127}"},
		{"tag with space", "/api/v1/services/backend/deploy", `{"tag":"v1 --rm"}`, 400, "malformed tag"},
		{"bad digest", "/api/v1/services/backend/deploy", `{"digest":"sha256:ABC"}`, 400, "64 lower-case hex"},
		{"unknown field", "/api/v1/services/backend/deploy", `{"tag":"v1","image":"evil/image"}`, 400, "unknown field"},
		{"bad JSON", "/api/v1/services/backend/deploy", `{"tag":`, 400, "JSON"},
		{"not an object", "/api/v1/services/backend/deploy", `["v1"]`, 400, "JSON object"},
		{"two values", "/api/v1/services/backend/deploy", `{"tag":"v1"} {"tag":"v2"}`, 400, "more than one"},
		{"wrong type", "/api/v1/services/backend/deploy", `{"force":"yes"}`, 400, "force"},
		{"too large", "/api/v1/services/backend/deploy", `{"tag":"v1","x":"` + strings.Repeat("a", 70<<10) + `"}`, 413, "larger than"},
		{"unknown service", "/api/v1/services/nope/deploy", `{"tag":"v1"}`, 404, "unknown service"},
		{"no default tag", "/api/v1/services/web/deploy", ``, 400, "no default tag"},
		{"bad wait", "/api/v1/services/backend/deploy?wait=soon", ``, 400, "wait must be"},
		{"wait too long", "/api/v1/services/backend/deploy?wait=11m", ``, 400, "wait must be"},
		{"negative wait", "/api/v1/services/backend/deploy?wait=-1s", ``, 400, "wait must be"},
		{"bad dry_run", "/api/v1/services/backend/deploy?dry_run=perhaps", ``, 400, "dry_run"},
		{"rollback body", "/api/v1/services/backend/rollback", `{"digest":"` + sha256Of("x") + `"}`, 400, "unknown field"},
		{"rollback unknown service", "/api/v1/services/nope/rollback", ``, 404, "unknown service"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.post(tt.path, tok, tt.body)
			if r.status != tt.status {
				t.Fatalf("status %d, want %d: %s", r.status, tt.status, r.body)
			}
			m := r.json(t)
			if msg, _ := m["error"].(string); !strings.Contains(msg+" "+fmt.Sprint(m["hint"]), tt.says) {
				t.Errorf("answer %s does not say %q", r.body, tt.says)
			}
		})
	}
	if r := e.do(http.MethodGet, "/api/v1/services/backend/deploy", tok, nil); r.status != http.StatusMethodNotAllowed {
		t.Errorf("GET deploy: %d", r.status)
	}
	if n := e.count(); n != 0 {
		t.Fatalf("%d deployments queued by bad requests", n)
	}
}

func TestDeployAcceptedWithLocation(t *testing.T) {
	e := newAPIEnv(t, apiOpts{})
	r := e.post("/api/v1/services/backend/deploy", e.token("deploy:backend"), `{"tag":"v1.2.3","force":true}`)
	if r.status != http.StatusAccepted {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	d := r.deployment(t)
	loc := r.header.Get("Location")
	if loc != fmt.Sprintf("/api/v1/deployments/%d", d.ID) {
		t.Fatalf("Location = %q for deployment %d", loc, d.ID)
	}
	if d.Tag != "v1.2.3" || !d.Force || d.State != deployer.StateQueued {
		t.Errorf("deployment = %+v", d)
	}
	e.waitEnd(d.ID)
	got := e.do(http.MethodGet, loc, "", nil)
	if got.status != http.StatusOK {
		t.Fatalf("GET %s: %d", loc, got.status)
	}
	gd := got.deployment(t)
	if gd.State != deployer.StateSucceeded || len(gd.Steps) != 1 || gd.Trigger.Subject != "ci" {
		t.Errorf("GET %s = %+v", loc, gd)
	}

	// A digest deploys as given.
	dg := sha256Of("pinned")
	r = e.post("/api/v1/services/backend/deploy?wait=10s", e.token("deploy:backend"), `{"digest":"`+dg+`"}`)
	if r.status != http.StatusOK || r.deployment(t).Digest != dg {
		t.Errorf("digest deploy: %d %s", r.status, r.body)
	}
}

func TestDeployWait(t *testing.T) {
	e := newAPIEnv(t, apiOpts{})
	tok := e.token("deploy:*")

	r := e.post("/api/v1/services/backend/deploy?wait=30s", tok, `{"tag":"v2"}`)
	if r.status != http.StatusOK {
		t.Fatalf("success: status %d: %s", r.status, r.body)
	}
	if d := r.deployment(t); d.State != deployer.StateSucceeded || d.Digest != sha256Of("v2") || len(d.Steps) != 1 {
		t.Errorf("success: %+v", d)
	}
	if r.header.Get("Location") == "" {
		t.Error("no Location on a waited answer")
	}

	// The same digest again, not forced: unchanged is a success too.
	if r := e.post("/api/v1/services/backend/deploy?wait=30s", tok, `{"tag":"v2"}`); r.status != http.StatusOK {
		t.Errorf("again: %d %s", r.status, r.body)
	}

	for _, tt := range []struct {
		tag    string
		status int
		state  deployer.State
		says   string
	}{
		{"fail-1", http.StatusBadGateway, deployer.StateFailed, "failed: registry refused the pull"},
		{"rollback-1", http.StatusBadGateway, deployer.StateRolledBack, "rolled back: health check timed out"},
	} {
		r := e.post("/api/v1/services/backend/deploy?wait=30s", tok, `{"tag":"`+tt.tag+`"}`)
		if r.status != tt.status {
			t.Fatalf("%s: status %d: %s", tt.tag, r.status, r.body)
		}
		var body struct {
			Error      string               `json:"error"`
			Hint       string               `json:"hint"`
			Deployment *deployer.Deployment `json:"deployment"`
		}
		if err := json.Unmarshal(r.body, &body); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(body.Error, tt.says) || body.Hint == "" || body.Deployment == nil || body.Deployment.State != tt.state {
			t.Errorf("%s: answer %s", tt.tag, r.body)
		}
	}

	// The wait runs out: 504 (so curl --fail fails) with Location and a hint.
	r = e.post("/api/v1/services/web/deploy?wait=300ms", tok, `{"tag":"hold-1"}`)
	if r.status != http.StatusGatewayTimeout || r.header.Get("Location") == "" {
		t.Fatalf("timeout: status %d Location %q: %s", r.status, r.header.Get("Location"), r.body)
	}
	if m := r.json(t); !strings.Contains(fmt.Sprint(m["hint"]), "follow Location") || m["deployment"] == nil {
		t.Errorf("timeout answer: %s", r.body)
	}
}

func TestDeployDryRun(t *testing.T) {
	e := newAPIEnv(t, apiOpts{})
	r := e.post("/api/v1/services/backend/deploy?dry_run=true&wait=30s", e.token("deploy:backend"), `{"tag":"v9"}`)
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	d := r.deployment(t)
	stored, err := e.store.Deployment(context.Background(), d.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !d.DryRun || !stored.DryRun {
		t.Errorf("dry run not recorded: answer %+v, stored %+v", d, stored)
	}
	st, _ := e.store.ServiceStatus(context.Background(), "backend")
	if st.Digest != "" {
		t.Errorf("dry run changed what runs: %+v", st)
	}
}

func TestRollback(t *testing.T) {
	e := newAPIEnv(t, apiOpts{})
	tok := e.token("deploy:backend")

	r := e.post("/api/v1/services/backend/rollback", tok, "")
	if r.status != http.StatusConflict || !strings.Contains(string(r.body), "no previous version") {
		t.Fatalf("without a previous digest: %d %s", r.status, r.body)
	}
	if n := e.count(); n != 0 {
		t.Fatalf("%d deployments queued", n)
	}

	for _, tag := range []string{"v1", "v2"} {
		if r := e.post("/api/v1/services/backend/deploy?wait=30s", tok, `{"tag":"`+tag+`"}`); r.status != http.StatusOK {
			t.Fatalf("deploy %s: %d %s", tag, r.status, r.body)
		}
	}
	r = e.post("/api/v1/services/backend/rollback?wait=30s", tok, "{}")
	if r.status != http.StatusOK {
		t.Fatalf("rollback: %d %s", r.status, r.body)
	}
	d := r.deployment(t)
	if d.Digest != sha256Of("v1") || d.Trigger.Kind != deployer.TriggerRollback || d.Trigger.Subject != "ci" || !d.Force {
		t.Errorf("rollback deployment = %+v", d)
	}
	st, _ := e.store.ServiceStatus(context.Background(), "backend")
	if st.Digest != sha256Of("v1") {
		t.Errorf("after rollback %s runs", st.Digest)
	}
	if r := e.post("/api/v1/services/backend/rollback", e.token("deploy:web"), ""); r.status != http.StatusForbidden {
		t.Errorf("rollback with another service's scope: %d", r.status)
	}
}

func TestWriteAPIOffWithoutKey(t *testing.T) {
	e := newAPIEnv(t, apiOpts{noKey: true})
	r := e.post("/api/v1/services/backend/deploy", "anything", "")
	if r.status != http.StatusServiceUnavailable || !strings.Contains(string(r.body), "token_key_file") {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if r := e.do(http.MethodGet, "/api/v1/services", "", nil); r.status != http.StatusOK {
		t.Errorf("read API without a key: %d", r.status)
	}
}

func TestDeployWhileDraining(t *testing.T) {
	e := newAPIEnv(t, apiOpts{})
	if err := e.queue.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	r := e.post("/api/v1/services/backend/deploy", e.token("deploy:*"), "")
	if r.status != http.StatusServiceUnavailable {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if n := e.count(); n != 0 {
		t.Fatalf("%d deployments queued while draining", n)
	}
}

func TestPrivateStatusNeedsToken(t *testing.T) {
	e := newAPIEnv(t, apiOpts{private: true})
	paths := []string{"/api/v1/services", "/api/v1/services/backend", "/api/v1/deployments", "/api/v1/deliveries", "/metrics"}
	for _, p := range paths {
		r := e.do(http.MethodGet, p, "", nil)
		if r.status != http.StatusUnauthorized || !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("%s without token: %d %q", p, r.status, r.header.Get("WWW-Authenticate"))
		}
		for _, scope := range []string{"status:read", "deploy:web", "deploy:*"} {
			if r := e.do(http.MethodGet, p, e.token(scope), nil); r.status != http.StatusOK {
				t.Errorf("%s with %s: %d %s", p, scope, r.status, r.body)
			}
		}
	}
	// Writes still check their own scope.
	if r := e.post("/api/v1/services/backend/deploy", e.token("status:read"), ""); r.status != http.StatusForbidden {
		t.Errorf("deploy with status:read: %d", r.status)
	}

	pub := newAPIEnv(t, apiOpts{})
	for _, p := range paths {
		if r := pub.do(http.MethodGet, p, "", nil); r.status != http.StatusOK {
			t.Errorf("public %s: %d", p, r.status)
		}
	}
}

func TestPrivateStatusWithoutKeyRefusedAtStart(t *testing.T) {
	_, err := server.New(server.Config{Webhook: http.NotFoundHandler(), Reads: server.Reads{Store: nopReader{}}, Queue: nopDrainer{}, Auth: server.Auth{StatusPrivate: true}})
	if err == nil || !strings.Contains(err.Error(), "token_key_file") {
		t.Fatalf("New = %v", err)
	}
}

type nopReader struct{ server.Reader }
type nopDrainer struct{ server.Enqueuer }

func (nopDrainer) Draining() bool { return false }

func TestPagination(t *testing.T) {
	e := newAPIEnv(t, apiOpts{})
	ctx := context.Background()
	var want []int64
	for i := range 7 {
		d, err := e.store.Enqueue(ctx, deployer.Request{Service: "web", Tag: fmt.Sprintf("sha-%d", i), Trigger: deployer.Trigger{Kind: deployer.TriggerManual, Subject: "ci"}})
		if err != nil {
			t.Fatal(err)
		}
		want = append([]int64{d.ID}, want...)
	}
	for i := range 5 {
		if _, err := e.store.RecordDelivery(ctx, deployer.Delivery{ID: fmt.Sprintf("d-%d", i), Event: "ping", BodySHA256: sha256Of(fmt.Sprint(i))[7:],
			ReceivedAt: time.Now(), Result: deployer.ResultIgnored, Reason: "ping"}, nil); err != nil {
			t.Fatal(err)
		}
	}

	var got []int64
	path := "/api/v1/deployments?service=web&limit=3"
	for pages := 0; path != ""; pages++ {
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		r := e.do(http.MethodGet, path, "", nil)
		var body struct {
			Deployments []deployer.Deployment `json:"deployments"`
			NextBefore  int64                 `json:"next_before"`
		}
		if err := json.Unmarshal(r.body, &body); err != nil || r.status != 200 {
			t.Fatalf("%s: %d %s", path, r.status, r.body)
		}
		for _, d := range body.Deployments {
			got = append(got, d.ID)
		}
		path = ""
		if body.NextBefore != 0 {
			path = fmt.Sprintf("/api/v1/deployments?service=web&limit=3&before=%d", body.NextBefore)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("pages gave %v, want %v (newest first)", got, want)
	}

	var seqs []int64
	path = "/api/v1/deliveries?limit=2"
	for pages := 0; path != ""; pages++ {
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		r := e.do(http.MethodGet, path, "", nil)
		var body struct {
			Deliveries []deployer.Delivery `json:"deliveries"`
			NextBefore int64               `json:"next_before"`
		}
		if err := json.Unmarshal(r.body, &body); err != nil || r.status != 200 {
			t.Fatalf("%s: %d %s", path, r.status, r.body)
		}
		for _, d := range body.Deliveries {
			seqs = append(seqs, d.Seq)
		}
		path = ""
		if body.NextBefore != 0 {
			path = fmt.Sprintf("/api/v1/deliveries?limit=2&before=%d", body.NextBefore)
		}
	}
	if len(seqs) != 5 {
		t.Fatalf("deliveries pages gave %v", seqs)
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] >= seqs[i-1] {
			t.Errorf("deliveries not newest first: %v", seqs)
		}
	}
	for _, bad := range []string{"/api/v1/deployments?limit=0", "/api/v1/deployments?limit=501", "/api/v1/deployments?before=x", "/api/v1/deliveries?before=-1"} {
		if r := e.do(http.MethodGet, bad, "", nil); r.status != http.StatusBadRequest {
			t.Errorf("%s: %d", bad, r.status)
		}
	}
}

func TestGetDeploymentAndServices(t *testing.T) {
	e := newAPIEnv(t, apiOpts{})
	r := e.post("/api/v1/services/backend/deploy?wait=30s", e.token("deploy:backend"), `{"tag":"v3"}`)
	if r.status != http.StatusOK {
		t.Fatalf("%d %s", r.status, r.body)
	}
	id := r.deployment(t).ID
	svc := e.do(http.MethodGet, "/api/v1/services/backend", "", nil)
	var v struct {
		DefaultTag     string                 `json:"default_tag"`
		Status         deployer.ServiceStatus `json:"status"`
		LastDeployment *deployer.Deployment   `json:"last_deployment"`
	}
	if err := json.Unmarshal(svc.body, &v); err != nil || svc.status != 200 {
		t.Fatalf("%d %s", svc.status, svc.body)
	}
	if v.DefaultTag != "latest" || v.Status.Tag != "v3" || v.LastDeployment == nil || v.LastDeployment.ID != id {
		t.Errorf("service = %s", svc.body)
	}
	for path, status := range map[string]int{
		"/api/v1/services":                        200,
		"/api/v1/services/nope":                   404,
		"/api/v1/deployments/999":                 404,
		"/api/v1/deployments/abc":                 400,
		fmt.Sprintf("/api/v1/deployments/%d", id): 200,
	} {
		if r := e.do(http.MethodGet, path, "", nil); r.status != status {
			t.Errorf("%s: %d, want %d", path, r.status, status)
		}
	}
}

func TestMetricsAfterDeploy(t *testing.T) {
	e := newAPIEnv(t, apiOpts{})
	scrape := func() string {
		r := e.do(http.MethodGet, "/metrics", "", nil)
		if r.status != http.StatusOK {
			t.Fatalf("/metrics: %d", r.status)
		}
		return string(r.body)
	}
	before := scrape()
	for _, line := range []string{
		`deployd_deployments_total{service="backend",state="succeeded"} 0`,
		`deployd_queue_depth{service="backend"} 0`,
		"go_goroutines ",
	} {
		if !strings.Contains(before, line) {
			t.Errorf("before: no %q", line)
		}
	}
	if strings.Contains(before, `deployd_last_success_timestamp_seconds{service="backend"}`) {
		t.Error("before: last success set without a deploy")
	}

	tok := e.token("deploy:*")
	if r := e.post("/api/v1/services/backend/deploy?wait=30s", tok, `{"tag":"v1"}`); r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if r := e.post("/api/v1/services/backend/deploy?wait=30s", tok, `{"tag":"fail-2"}`); r.status != http.StatusBadGateway {
		t.Fatalf("%d %s", r.status, r.body)
	}
	// A deployment that holds keeps the queue busy.
	if r := e.post("/api/v1/services/web/deploy", tok, `{"tag":"hold-2"}`); r.status != http.StatusAccepted {
		t.Fatalf("%d %s", r.status, r.body)
	}

	after := scrape()
	for _, line := range []string{
		`deployd_deployments_total{service="backend",state="succeeded"} 1`,
		`deployd_deployments_total{service="backend",state="failed"} 1`,
		`deployd_step_duration_seconds_count{outcome="ok",step="resolve"} 2`,
		`deployd_last_success_timestamp_seconds{service="backend"} `,
		`deployd_queue_depth{service="web"} 1`,
	} {
		if !strings.Contains(after, line) {
			t.Errorf("after: no %q", line)
		}
	}
}
