package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/deployd/deployd/deployer"
	"github.com/deployd/deployd/server"
)

// pingReader is a store whose Ping returns err; nothing else is called.
type pingReader struct {
	server.Reader
	err error
}

func (p pingReader) Ping(context.Context) error { return p.err }

// drainFlag is a Queue that drains when set; it takes no deploys.
type drainFlag bool

func (d drainFlag) Draining() bool { return bool(d) }

func (drainFlag) Enqueue(context.Context, deployer.Request) (deployer.Deployment, error) {
	return deployer.Deployment{}, errors.New("drainFlag takes no deploys")
}

// middlewareEnv is a Server over fakes whose log goes to a buffer.
type middlewareEnv struct {
	srv *server.Server
	log *bytes.Buffer
}

// newMiddlewareEnv builds a Server with webhook as its webhook handler,
// store and queue as given, logging at debug level into a buffer.
func newMiddlewareEnv(t *testing.T, webhook http.Handler, store server.Reader, queue server.Queue) *middlewareEnv {
	t.Helper()
	var buf bytes.Buffer
	srv, err := server.New(server.Config{
		Webhook: webhook,
		Reads:   server.Reads{Store: store},
		Queue:   queue,
		Logger:  zerolog.New(&buf).Level(zerolog.DebugLevel),
	})
	if err != nil {
		t.Fatal(err)
	}
	return &middlewareEnv{srv: srv, log: &buf}
}

// serve runs one request through the server and returns the recorder.
func (e *middlewareEnv) serve(r *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	e.srv.ServeHTTP(rec, r)
	return rec
}

// logLines returns the log lines that contain substr.
func (e *middlewareEnv) logLines(substr string) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(e.log.String()), "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return out
}

// errorJSON decodes an error response, failing unless it is JSON.
func errorJSON(t *testing.T, rec *httptest.ResponseRecorder) map[string]string {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("Content-Type = %q, want JSON; body %s", ct, rec.Body)
	}
	var body map[string]string
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("body %q: %v", rec.Body, err)
	}
	return body
}

var okWebhook = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	w.WriteHeader(http.StatusAccepted)
})

func TestPanicBecomesJSON500(t *testing.T) {
	env := newMiddlewareEnv(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		panic("kaboom in handler")
	}), pingReader{}, drainFlag(false))

	rec := env.serve(httptest.NewRequest(http.MethodPost, "/webhooks/github", nil))
	if rec.Code != http.StatusInternalServerError {
		t.Fatalf("status = %d, want 500", rec.Code)
	}
	body := errorJSON(t, rec)
	for _, k := range []string{"error", "hint", "request_id"} {
		if body[k] == "" {
			t.Errorf("body has no %q: %v", k, body)
		}
	}
	if strings.Contains(rec.Body.String(), "kaboom") {
		t.Errorf("panic value sent to the client: %s", rec.Body)
	}
	if got := rec.Header().Get("X-Request-Id"); got != body["request_id"] {
		t.Errorf("X-Request-Id = %q, body request_id = %q", got, body["request_id"])
	}
	lines := env.logLines("kaboom in handler")
	if len(lines) != 1 {
		t.Fatalf("%d log lines carry the panic, want 1:\n%s", len(lines), env.log)
	}
	if !strings.Contains(lines[0], `"request_id":"`+body["request_id"]+`"`) {
		t.Errorf("panic log line has no request id %q: %s", body["request_id"], lines[0])
	}
}

func TestAccessLogLeavesOutSecrets(t *testing.T) {
	env := newMiddlewareEnv(t, okWebhook, pingReader{}, drainFlag(false))

	r := httptest.NewRequest(http.MethodPost, "/webhooks/github?access_token=query-secret-1", strings.NewReader(`{"password":"body-secret-2"}`))
	r.Header.Set("Authorization", "Bearer header-secret-3")
	r.Header.Set("X-Request-Id", "trace-42")
	rec := env.serve(r)
	if rec.Code != http.StatusAccepted {
		t.Fatalf("status = %d, want 202", rec.Code)
	}

	lines := env.logLines(`"message":"http request"`)
	if len(lines) != 1 {
		t.Fatalf("%d access log lines, want 1:\n%s", len(lines), env.log)
	}
	var line map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &line); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{
		"method": "POST", "path": "/webhooks/github", "status": float64(202), "request_id": "trace-42",
	} {
		if line[k] != want {
			t.Errorf("access log %s = %v, want %v", k, line[k], want)
		}
	}
	for _, secret := range []string{"query-secret-1", "access_token", "body-secret-2", "header-secret-3"} {
		if strings.Contains(env.log.String(), secret) {
			t.Errorf("log holds %q:\n%s", secret, env.log)
		}
	}
}

func TestReadyz(t *testing.T) {
	for _, tc := range []struct {
		name       string
		store      server.Reader
		queue      server.Queue
		wantStatus int
		want       string
	}{
		{"ready", pingReader{}, drainFlag(false), http.StatusOK, "ready"},
		{"draining", pingReader{}, drainFlag(true), http.StatusServiceUnavailable, "draining"},
		{"draining wins over store", pingReader{err: errors.New("disk gone")}, drainFlag(true), http.StatusServiceUnavailable, "draining"},
		{"store down", pingReader{err: errors.New("disk gone")}, drainFlag(false), http.StatusServiceUnavailable, "store unreachable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newMiddlewareEnv(t, okWebhook, tc.store, tc.queue)
			rec := env.serve(httptest.NewRequest(http.MethodGet, "/readyz", nil))
			if rec.Code != tc.wantStatus {
				t.Errorf("status = %d, want %d", rec.Code, tc.wantStatus)
			}
			if got := errorJSON(t, rec)["status"]; got != tc.want {
				t.Errorf("status field = %q, want %q", got, tc.want)
			}
			if strings.Contains(rec.Body.String(), "disk gone") {
				t.Errorf("store error sent to the client: %s", rec.Body)
			}
		})
	}
}

func TestUnknownRoutes(t *testing.T) {
	env := newMiddlewareEnv(t, okWebhook, pingReader{}, drainFlag(false))
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, "/no/such/thing", http.StatusNotFound},
		{http.MethodGet, "/api/v1/nothing", http.StatusNotFound},
		{http.MethodDelete, "/healthz", http.StatusMethodNotAllowed},
		{http.MethodGet, "/webhooks/github", http.StatusMethodNotAllowed},
	} {
		rec := env.serve(httptest.NewRequest(tc.method, tc.path, nil))
		if rec.Code != tc.want {
			t.Errorf("%s %s = %d, want %d", tc.method, tc.path, rec.Code, tc.want)
			continue
		}
		body := errorJSON(t, rec)
		if body["error"] == "" || body["request_id"] == "" {
			t.Errorf("%s %s body = %v, want error and request_id", tc.method, tc.path, body)
		}
	}
}

var requestIDPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

func TestRequestID(t *testing.T) {
	env := newMiddlewareEnv(t, okWebhook, pingReader{}, drainFlag(false))
	get := func(id string, set bool) (header, body string) {
		t.Helper()
		r := httptest.NewRequest(http.MethodGet, "/nope", nil)
		if set {
			r.Header.Set("X-Request-Id", id)
		}
		rec := env.serve(r)
		return rec.Header().Get("X-Request-Id"), errorJSON(t, rec)["request_id"]
	}

	for _, id := range []string{"a", "abc-123_X.y", strings.Repeat("z", 64)} {
		h, b := get(id, true)
		if h != id || b != id {
			t.Errorf("client id %q: header %q, body %q; want it kept", id, h, b)
		}
	}

	seen := map[string]bool{}
	for _, id := range []string{
		"",
		strings.Repeat("z", 65),
		"has space",
		"line\nbreak",
		"slash/es",
		`quote"`,
		"<script>",
		"ünïcode",
	} {
		h, b := get(id, id != "")
		if h == id || h != b || !requestIDPattern.MatchString(h) {
			t.Errorf("client id %q: header %q, body %q; want a fresh valid id in both", id, h, b)
		}
		if seen[h] {
			t.Errorf("id %q generated twice", h)
		}
		seen[h] = true
		if id != "" && strings.Contains(env.log.String(), id) {
			t.Errorf("rejected id %q reached the log", id)
		}
	}
}
