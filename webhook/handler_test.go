package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5/middleware"
	"github.com/rs/zerolog"

	"github.com/deployd/deployd/deployer"
)

const testSecret = "s3cr3t-webhook-key-for-tests"

var testNow = time.Date(2026, 11, 20, 16, 41, 8, 0, time.UTC)

// fakeRecorder remembers deliveries and, like the store, refuses a repeated id or body.
type fakeRecorder struct {
	mu     sync.Mutex
	err    error
	got    []deployer.Delivery
	reqs   [][]deployer.Request
	nextID int64
}

func (f *fakeRecorder) RecordDelivery(_ context.Context, d deployer.Delivery, reqs []deployer.Request) (deployer.Receipt, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return deployer.Receipt{}, f.err
	}
	for _, o := range f.got {
		if o.ID == d.ID || o.BodySHA256 == d.BodySHA256 {
			return deployer.Receipt{Duplicate: true}, nil
		}
	}
	f.got, f.reqs = append(f.got, d), append(f.reqs, reqs)
	var rc deployer.Receipt
	for range reqs {
		f.nextID++
		rc.Deployments = append(rc.Deployments, f.nextID)
	}
	return rc, nil
}

func (f *fakeRecorder) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.got)
}

func newTestHandler(t testing.TB, rec Recorder, logs io.Writer) *Handler {
	t.Helper()
	if logs == nil {
		logs = io.Discard
	}
	h, err := NewHandler(HandlerConfig{
		Secret:   []byte(testSecret),
		Matcher:  newTestMatcher(t, testConfig()),
		Recorder: rec,
		Logger:   zerolog.New(logs),
		Now:      func() time.Time { return testNow },
	})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func sign(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// delivery builds a request signed with testSecret.
func delivery(event, id string, body []byte) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/webhooks/github", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("X-GitHub-Event", event)
	r.Header.Set("X-GitHub-Delivery", id)
	r.Header.Set("X-Hub-Signature-256", sign(testSecret, body))
	return r
}

func serve(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// decodeBody decodes a JSON answer into a map.
func decodeBody(t *testing.T, w *httptest.ResponseRecorder) map[string]any {
	t.Helper()
	if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type = %q", ct)
	}
	var m map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &m); err != nil {
		t.Fatalf("body %q: %v", w.Body, err)
	}
	return m
}

func wantStatus(t *testing.T, w *httptest.ResponseRecorder, status int) map[string]any {
	t.Helper()
	if w.Code != status {
		t.Fatalf("status = %d, want %d; body %s", w.Code, status, w.Body)
	}
	return decodeBody(t, w)
}

func wantError(t *testing.T, w *httptest.ResponseRecorder, status int) {
	t.Helper()
	m := wantStatus(t, w, status)
	if e, _ := m["error"].(string); e == "" {
		t.Errorf("no error in %v", m)
	}
	if h, _ := m["hint"].(string); h == "" {
		t.Errorf("no hint in %v", m)
	}
}

func TestNewHandlerRefuses(t *testing.T) {
	m := newTestMatcher(t, testConfig())
	rec := &fakeRecorder{}
	tests := []struct {
		name string
		cfg  HandlerConfig
	}{
		{"empty secret", HandlerConfig{Secret: nil, Matcher: m, Recorder: rec}},
		{"no matcher", HandlerConfig{Secret: []byte("x"), Recorder: rec}},
		{"no recorder", HandlerConfig{Secret: []byte("x"), Matcher: m}},
		{"body budget below the body limit", HandlerConfig{Secret: []byte("x"), Matcher: m, Recorder: rec, BodyBudget: MaxBodyBytes - 1}},
		{"negative body budget", HandlerConfig{Secret: []byte("x"), Matcher: m, Recorder: rec, BodyBudget: -1}},
		{"negative small-body reserve", HandlerConfig{Secret: []byte("x"), Matcher: m, Recorder: rec, SmallBodyReserve: -1}},
	}
	for _, tt := range tests {
		if h, err := NewHandler(tt.cfg); err == nil {
			t.Errorf("%s: NewHandler = %v, want an error", tt.name, h)
		}
	}
	if _, err := NewHandler(HandlerConfig{Secret: []byte("x"), Matcher: m, Recorder: rec}); err != nil {
		t.Errorf("NewHandler with a zero logger and clock: %v", err)
	}
}

func TestHandlerQueues(t *testing.T) {
	rec := &fakeRecorder{}
	h := newTestHandler(t, rec, nil)
	body := fixture(t, "registry_package.published.container-tagged.json")
	m := wantStatus(t, serve(h, delivery(EventRegistryPackage, "d-1", body)), http.StatusAccepted)
	if got, ok := m["deployments"].([]any); !ok || len(got) != 2 || got[0] != 1.0 || got[1] != 2.0 {
		t.Fatalf("deployments = %v, want [1 2]", m["deployments"])
	}
	sum := sha256.Sum256(body)
	want := deployer.Delivery{
		ID: "d-1", Event: EventRegistryPackage, Action: "published", BodySHA256: hex.EncodeToString(sum[:]),
		ReceivedAt: testNow, Result: deployer.ResultQueued,
	}
	if rec.count() != 1 || !reflect.DeepEqual(rec.got[0], want) {
		t.Fatalf("recorded %+v, want %+v", rec.got, want)
	}
	if len(rec.reqs[0]) != 2 {
		t.Fatalf("requests %+v", rec.reqs[0])
	}
	for _, r := range rec.reqs[0] {
		if r.Trigger.DeliveryID != "d-1" || r.Trigger.Event != EventRegistryPackage || r.Trigger.InstallationID != appInstallID {
			t.Errorf("trigger %+v", r.Trigger)
		}
	}
}

func TestHandlerIgnored(t *testing.T) {
	rec := &fakeRecorder{}
	h := newTestHandler(t, rec, nil)
	m := wantStatus(t, serve(h, delivery(EventRegistryPackage, "d-u", fixture(t, "registry_package.published.container-untagged.json"))), http.StatusOK)
	reason, _ := m["ignored"].(string)
	if !strings.Contains(reason, "untagged") {
		t.Fatalf("ignored = %q", reason)
	}
	if rec.count() != 1 || rec.got[0].Result != deployer.ResultIgnored || rec.got[0].Reason != reason || len(rec.reqs[0]) != 0 {
		t.Fatalf("recorded %+v %+v", rec.got, rec.reqs)
	}

	m = wantStatus(t, serve(h, delivery("issues", "d-i", []byte(`{"action":"opened"}`))), http.StatusOK)
	if m["ignored"] != `event "issues" is not handled` {
		t.Fatalf("ignored = %v", m["ignored"])
	}
	if rec.count() != 2 || rec.got[1].Action != "opened" || rec.got[1].Event != "issues" {
		t.Fatalf("recorded %+v", rec.got)
	}
}

func TestHandlerPing(t *testing.T) {
	rec := &fakeRecorder{}
	h := newTestHandler(t, rec, nil)
	m := wantStatus(t, serve(h, delivery(EventPing, "p-1", fixture(t, "ping.json"))), http.StatusOK)
	if m["ok"] != true || m["zen"] != "Anything added dilutes everything else." {
		t.Fatalf("ping answer %v", m)
	}
	if rec.count() != 1 || rec.got[0].Event != EventPing || rec.got[0].Result != deployer.ResultIgnored {
		t.Fatalf("recorded %+v", rec.got)
	}
}

func TestHandlerDuplicate(t *testing.T) {
	rec := &fakeRecorder{}
	h := newTestHandler(t, rec, nil)
	body := fixture(t, "package.published.container-tagged.json")
	wantStatus(t, serve(h, delivery(EventPackage, "d-1", body)), http.StatusAccepted)
	// A redelivery keeps its id; a replay comes under a new id with the same body.
	for _, id := range []string{"d-1", "d-2"} {
		m := wantStatus(t, serve(h, delivery(EventPackage, id, body)), http.StatusOK)
		if len(m) != 1 || m["duplicate"] != true {
			t.Fatalf("%s: answer %v, want only duplicate", id, m)
		}
	}
	if rec.count() != 1 {
		t.Fatalf("recorded %d deliveries", rec.count())
	}
}

func TestHandlerRecorderFails(t *testing.T) {
	rec := &fakeRecorder{err: errors.New("sqlite: database is locked at /var/lib/deployd/deployd.db")}
	h := newTestHandler(t, rec, nil)
	w := serve(h, delivery(EventRegistryPackage, "d-1", fixture(t, "registry_package.published.container-tagged.json")))
	wantError(t, w, http.StatusServiceUnavailable)
	if strings.Contains(w.Body.String(), "sqlite") || strings.Contains(w.Body.String(), "/var/lib") {
		t.Fatalf("internal error sent to the client: %s", w.Body)
	}
	// Ignored deliveries are recorded too, so they fail the same way.
	wantError(t, serve(h, delivery(EventPing, "d-2", fixture(t, "ping.json"))), http.StatusServiceUnavailable)
}

// TestHandlerErrorRequestID checks that error answers carry the request id
// the router's middleware assigned, both for refused deliveries and when
// recording fails, and leave it out when there is none.
func TestHandlerErrorRequestID(t *testing.T) {
	withID := func(r *http.Request) *http.Request {
		return r.WithContext(context.WithValue(r.Context(), middleware.RequestIDKey, "host/abc-000042"))
	}
	body := fixture(t, "registry_package.published.container-tagged.json")

	unsigned := delivery(EventRegistryPackage, "d-1", body)
	unsigned.Header.Del("X-Hub-Signature-256")
	failing := newTestHandler(t, &fakeRecorder{err: errors.New("disk full")}, nil)
	for name, tt := range map[string]struct {
		h      http.Handler
		r      *http.Request
		status int
	}{
		"refused":         {newTestHandler(t, &fakeRecorder{}, nil), withID(unsigned), http.StatusUnauthorized},
		"recording fails": {failing, withID(delivery(EventRegistryPackage, "d-2", body)), http.StatusServiceUnavailable},
	} {
		w := serve(tt.h, tt.r)
		wantError(t, w, tt.status)
		if m := decodeBody(t, w); m["request_id"] != "host/abc-000042" {
			t.Errorf("%s: request_id = %v, want host/abc-000042", name, m["request_id"])
		}
	}

	w := serve(failing, delivery(EventRegistryPackage, "d-3", body))
	if m := decodeBody(t, w); m["request_id"] != nil {
		t.Errorf("request_id = %v without a request id", m["request_id"])
	}
}

// readSpy reports whether anything was read from it.
type readSpy struct {
	r    io.Reader
	read int64
}

func (s *readSpy) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.read += int64(n)
	return n, err
}

func TestHandlerRefuses(t *testing.T) {
	body := fixture(t, "registry_package.published.container-tagged.json")
	sha1Sig := func(b []byte) string {
		mac := hmac.New(sha1.New, []byte(testSecret))
		mac.Write(b)
		return "sha1=" + hex.EncodeToString(mac.Sum(nil))
	}
	tests := []struct {
		name     string
		edit     func(r *http.Request)
		status   int
		noRead   bool // the body must not be read at all
		allowHdr bool
	}{
		{name: "GET", edit: func(r *http.Request) { r.Method = http.MethodGet }, status: http.StatusMethodNotAllowed, noRead: true, allowHdr: true},
		{name: "PUT", edit: func(r *http.Request) { r.Method = http.MethodPut }, status: http.StatusMethodNotAllowed, noRead: true, allowHdr: true},
		{name: "no signature", edit: func(r *http.Request) { r.Header.Del("X-Hub-Signature-256") }, status: http.StatusUnauthorized, noRead: true},
		{name: "SHA-1 signature only", edit: func(r *http.Request) {
			r.Header.Del("X-Hub-Signature-256")
			r.Header.Set("X-Hub-Signature", sha1Sig(body))
		}, status: http.StatusUnauthorized, noRead: true},
		{name: "SHA-1 signature in the SHA-256 header", edit: func(r *http.Request) {
			r.Header.Set("X-Hub-Signature-256", sha1Sig(body))
		}, status: http.StatusUnauthorized, noRead: true},
		{name: "signature with another secret", edit: func(r *http.Request) {
			r.Header.Set("X-Hub-Signature-256", sign("not-the-secret", body))
		}, status: http.StatusUnauthorized},
		{name: "signature not hex", edit: func(r *http.Request) { r.Header.Set("X-Hub-Signature-256", "sha256=zz") }, status: http.StatusUnauthorized},
		{name: "signature of another body", edit: func(r *http.Request) {
			r.Header.Set("X-Hub-Signature-256", sign(testSecret, append([]byte(" "), body...)))
		}, status: http.StatusUnauthorized},
		{name: "declared length over the limit", edit: func(r *http.Request) { r.ContentLength = MaxBodyBytes + 1 }, status: http.StatusRequestEntityTooLarge, noRead: true},
		{name: "no delivery id", edit: func(r *http.Request) { r.Header.Del("X-GitHub-Delivery") }, status: http.StatusBadRequest},
		{name: "delivery id with a space", edit: func(r *http.Request) { r.Header.Set("X-GitHub-Delivery", "a b") }, status: http.StatusBadRequest},
		{name: "delivery id too long", edit: func(r *http.Request) { r.Header.Set("X-GitHub-Delivery", strings.Repeat("a", 129)) }, status: http.StatusBadRequest},
		{name: "no event", edit: func(r *http.Request) { r.Header.Del("X-GitHub-Event") }, status: http.StatusBadRequest},
		{name: "unsupported content type", edit: func(r *http.Request) { r.Header.Set("Content-Type", "text/plain") }, status: http.StatusUnsupportedMediaType},
		{name: "unparsable content type", edit: func(r *http.Request) { r.Header.Set("Content-Type", "application/json; =") }, status: http.StatusUnsupportedMediaType},
		{name: "form without payload", edit: func(r *http.Request) { r.Header.Set("Content-Type", "application/x-www-form-urlencoded") }, status: http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &fakeRecorder{}
			h := newTestHandler(t, rec, nil)
			r := delivery(EventRegistryPackage, "d-1", body)
			spy := &readSpy{r: r.Body}
			r.Body = io.NopCloser(spy)
			tt.edit(r)
			w := serve(h, r)
			wantError(t, w, tt.status)
			if rec.count() != 0 {
				t.Errorf("recorded %+v", rec.got)
			}
			if tt.noRead && spy.read != 0 {
				t.Errorf("read %d bytes of the body", spy.read)
			}
			if tt.allowHdr && w.Header().Get("Allow") != http.MethodPost {
				t.Errorf("Allow = %q", w.Header().Get("Allow"))
			}
		})
	}
}

func TestHandlerMalformed(t *testing.T) {
	for _, body := range []string{"{", "null", "[]", `{"action":"published"}`, `{"action":5,"registry_package":{}}`, ""} {
		rec := &fakeRecorder{}
		h := newTestHandler(t, rec, nil)
		wantError(t, serve(h, delivery(EventRegistryPackage, "d-1", []byte(body))), http.StatusBadRequest)
		if rec.count() != 0 {
			t.Errorf("%q: recorded %+v", body, rec.got)
		}
	}
}

// endless yields 'a' forever and counts what it gave.
type endless struct{ n int64 }

func (e *endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'a'
	}
	e.n += int64(len(p))
	return len(p), nil
}

func TestHandlerBodyLimitStreaming(t *testing.T) {
	rec := &fakeRecorder{}
	h := newTestHandler(t, rec, nil)
	src := &endless{}
	r := delivery(EventRegistryPackage, "d-1", nil)
	r.Body = io.NopCloser(src)
	r.ContentLength = -1 // chunked: the length is not known up front
	wantError(t, serve(h, r), http.StatusRequestEntityTooLarge)
	if src.n > MaxBodyBytes+64<<10 {
		t.Fatalf("read %d bytes for a limit of %d", src.n, MaxBodyBytes)
	}
	if src.n < MaxBodyBytes {
		t.Fatalf("read only %d bytes: the limit is not where it should be", src.n)
	}
	if rec.count() != 0 {
		t.Fatal("recorded an oversized delivery")
	}

	// Exactly at the limit is accepted by the reader (and then refused as JSON).
	at := bytes.Repeat([]byte(" "), MaxBodyBytes)
	wantError(t, serve(h, delivery(EventRegistryPackage, "d-2", at)), http.StatusBadRequest)
}

func TestHandlerFormEncoded(t *testing.T) {
	rec := &fakeRecorder{}
	h := newTestHandler(t, rec, nil)
	payload := fixture(t, "package.published.container-tagged.json")
	form := []byte(url.Values{"payload": {string(payload)}}.Encode())

	r := delivery(EventPackage, "f-1", form) // signed over the raw form body, as GitHub does
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	wantStatus(t, serve(h, r), http.StatusAccepted)
	sum := sha256.Sum256(payload)
	if rec.count() != 1 || rec.got[0].BodySHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("recorded %+v, want the payload's hash", rec.got)
	}

	// A signature over the decoded payload instead of the raw body is refused.
	r = delivery(EventPackage, "f-2", form)
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.Header.Set("X-Hub-Signature-256", sign(testSecret, payload))
	wantError(t, serve(h, r), http.StatusUnauthorized)

	// The same event sent as JSON is the same body: a duplicate.
	m := wantStatus(t, serve(h, delivery(EventPackage, "f-3", payload)), http.StatusOK)
	if m["duplicate"] != true {
		t.Fatalf("answer %v, want duplicate", m)
	}
}

// TestGitHubTestVector checks the signature scheme against the example in
// GitHub's documentation on validating webhook deliveries.
func TestGitHubTestVector(t *testing.T) {
	const (
		secret = "It's a Secret to Everybody"
		body   = "Hello, World!"
		header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
	)
	if got := sign(secret, []byte(body)); got != header {
		t.Fatalf("sign = %s, want %s", got, header)
	}
	rec := &fakeRecorder{}
	h, err := NewHandler(HandlerConfig{Secret: []byte(secret), Matcher: newTestMatcher(t, testConfig()), Recorder: rec})
	if err != nil {
		t.Fatal(err)
	}
	post := func(sig string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodPost, "/webhooks/github", strings.NewReader(body))
		r.Header.Set("X-GitHub-Event", EventPing)
		r.Header.Set("X-GitHub-Delivery", "vector")
		r.Header.Set("X-Hub-Signature-256", sig)
		return serve(h, r)
	}
	// The signature is accepted: the body then fails as JSON (400), not as a signature (401).
	wantError(t, post(header), http.StatusBadRequest)
	wantError(t, post(header[:len(header)-1]+"f"), http.StatusUnauthorized)
	wantError(t, post(strings.ToUpper(header[:6])+header[6:]), http.StatusUnauthorized)
}

func TestHandlerLogs(t *testing.T) {
	var logs bytes.Buffer
	rec := &fakeRecorder{}
	h := newTestHandler(t, rec, &logs)
	body := fixture(t, "registry_package.published.container-tagged.json")
	sigs := []string{sign(testSecret, body)}

	serve(h, delivery(EventRegistryPackage, "log-1", body))
	serve(h, delivery(EventRegistryPackage, "log-1", body))
	bad := delivery(EventRegistryPackage, "log-2", body)
	bad.Header.Set("X-Hub-Signature-256", "sha256=00"+strings.Repeat("ab", 31))
	sigs = append(sigs, bad.Header.Get("X-Hub-Signature-256"))
	serve(h, bad)
	notHex := delivery(EventRegistryPackage, "log-3", body)
	notHex.Header.Set("X-Hub-Signature-256", "sha256=this-is-no-hex-signature")
	sigs = append(sigs, "this-is-no-hex-signature")
	serve(h, notHex)
	rec.err = errors.New("store down")
	serve(h, delivery(EventPing, "log-4", fixture(t, "ping.json")))

	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 5 {
		t.Fatalf("%d log lines, want one per delivery:\n%s", len(lines), logs.String())
	}
	wantResults := []string{"queued", "duplicate", "rejected", "rejected", "error"}
	for i, line := range lines {
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		for _, k := range []string{keyDeliveryID, keyEvent, keyAction, keyResult, keyStatus} {
			if _, ok := e[k]; !ok {
				t.Errorf("line %d has no %s: %s", i, k, line)
			}
		}
		if e[keyResult] != wantResults[i] {
			t.Errorf("line %d result %v, want %s", i, e[keyResult], wantResults[i])
		}
	}
	if !strings.Contains(lines[0], `"deployment_ids":[1,2]`) || !strings.Contains(lines[4], "store down") {
		t.Errorf("log lines lack deployments or the cause:\n%s", logs.String())
	}
	out := logs.String()
	for _, s := range append(sigs, testSecret, "octo-deployer", "github.internal.platforms") {
		if strings.Contains(out, s) {
			t.Errorf("logs contain %q:\n%s", s, out)
		}
	}
}

func TestHandlerUsesRequestLogger(t *testing.T) {
	var own, req bytes.Buffer
	h := newTestHandler(t, &fakeRecorder{}, &own)
	r := delivery(EventPing, "ctx-1", fixture(t, "ping.json"))
	l := zerolog.New(&req).With().Str("request_id", "rq-9").Logger()
	serve(h, r.WithContext(l.WithContext(r.Context())))
	if own.Len() != 0 || !strings.Contains(req.String(), `"request_id":"rq-9"`) || !strings.Contains(req.String(), `"delivery_id":"ctx-1"`) {
		t.Fatalf("handler log %q, request log %q", own.String(), req.String())
	}
}

func TestHandlerConcurrent(t *testing.T) {
	rec := &fakeRecorder{}
	h := newTestHandler(t, rec, nil)
	base := fixture(t, "registry_package.published.container-tagged.json")
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := withField(base, "nonce", fmt.Sprint(i))
			w := serve(h, delivery(EventRegistryPackage, fmt.Sprint("c-", i), body))
			if w.Code != http.StatusAccepted {
				t.Errorf("status %d: %s", w.Code, w.Body)
			}
		}()
	}
	wg.Wait()
	if rec.count() != 16 {
		t.Fatalf("recorded %d", rec.count())
	}
}

// withField returns a JSON object body with a string field added at its start.
func withField(body []byte, key, value string) []byte {
	i := bytes.IndexByte(body, '{')
	kv, _ := json.Marshal(map[string]string{key: value})
	out := make([]byte, 0, len(body)+len(kv))
	out = append(out, body[:i+1]...)
	out = append(out, kv[1:len(kv)-1]...)
	out = append(out, ',')
	return append(out, body[i+1:]...)
}

// A declared Content-Length alone must not make the handler reserve memory
// for it before the signature is checked.
func TestHandlerDoesNotReserveDeclaredLength(t *testing.T) {
	h := newTestHandler(t, &fakeRecorder{}, io.Discard)
	body := strings.NewReader(`{"zen":"x"}`)
	req := httptest.NewRequest(http.MethodPost, "/webhooks/github", body)
	req.ContentLength = MaxBodyBytes // a lie: the body is tiny
	req.Header.Set("X-GitHub-Event", "ping")
	req.Header.Set("X-GitHub-Delivery", "d-lie")
	req.Header.Set("X-Hub-Signature-256", "sha256=00")
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	runtime.ReadMemStats(&after)
	if rec.Code != http.StatusUnauthorized {
		t.Fatalf("status %d, want 401 for the bad signature", rec.Code)
	}
	if grown := after.TotalAlloc - before.TotalAlloc; grown > 4<<20 {
		t.Errorf("a request declaring %d bytes allocated %d bytes before its signature was checked", MaxBodyBytes, grown)
	}
}

// Bodies are read into reused buffers: what a delivery records must not
// change when later deliveries are read into the same memory.
func TestHandlerRecordsOutliveTheBody(t *testing.T) {
	rec := &fakeRecorder{}
	h := newTestHandler(t, rec, nil)
	base := string(fixture(t, "registry_package.published.container-tagged.json"))
	const oldDigest = "sha256:3f1c2a9be0d44e67a1b9c5d8e7f60a21b3c4d5e6f708192a3b4c5d6e7f8091a2"
	if !strings.Contains(base, oldDigest) || !strings.Contains(base, `"name": "latest"`) {
		t.Fatal("fixture changed: update the values this test replaces")
	}
	const n = 8
	for i := range n {
		// Same length every time, so that each body overwrites the last.
		digest := fmt.Sprintf("sha256:%064x", i)
		body := strings.ReplaceAll(base, oldDigest, digest)
		body = strings.Replace(body, `"name": "latest"`, fmt.Sprintf(`"name": "sha-%02d"`, i), 1)
		wantStatus(t, serve(h, delivery(EventRegistryPackage, fmt.Sprintf("d-%d", i), []byte(body))), http.StatusAccepted)
	}
	if rec.count() != n {
		t.Fatalf("recorded %d deliveries, want %d", rec.count(), n)
	}
	for i := range n {
		d := rec.got[i]
		if d.ID != fmt.Sprintf("d-%d", i) || d.Action != "published" || d.Event != EventRegistryPackage {
			t.Errorf("delivery %d recorded as %+v", i, d)
		}
		for _, r := range rec.reqs[i] {
			if r.Tag != fmt.Sprintf("sha-%02d", i) || r.Digest != fmt.Sprintf("sha256:%064x", i) {
				t.Errorf("delivery %d: request for %s has tag %q, digest %q", i, r.Service, r.Tag, r.Digest)
			}
		}
	}
}

// heldBody is a request body fed through a pipe, to keep a request in
// flight with part of its body read.
type heldBody struct {
	*io.PipeWriter
	done chan *http.Response
}

// hold starts serving r, whose body is fed by the returned heldBody, and
// writes first to it: once that returns, the handler has read it, and so
// has taken the body's share of the budget.
func hold(t *testing.T, h http.Handler, r *http.Request, first []byte) *heldBody {
	t.Helper()
	pr, pw := io.Pipe()
	r.Body = pr
	hb := &heldBody{PipeWriter: pw, done: make(chan *http.Response, 1)}
	go func() { hb.done <- serve(h, r).Result() }()
	if _, err := pw.Write(first); err != nil {
		t.Fatalf("write to a held body: %v", err)
	}
	return hb
}

// abort cuts the body off as a client that goes away does, and returns
// the answer.
func (hb *heldBody) abort() *http.Response {
	hb.CloseWithError(errors.New("client went away"))
	return <-hb.done
}

// unsignedRequest is a delivery with a well-formed but wrong signature that
// declares length (-1: unknown, chunked).
func unsignedRequest(id string, length int64) *http.Request {
	r := delivery(EventRegistryPackage, id, nil)
	r.Header.Set("X-Hub-Signature-256", sign("not-the-secret", nil))
	r.ContentLength = length
	return r
}

// wantBusy checks a refusal for want of budget: 503 with a Retry-After in
// seconds and an error and hint that say what happened and what to do.
func wantBusy(t *testing.T, w *httptest.ResponseRecorder, what string) {
	t.Helper()
	if w.Code != http.StatusServiceUnavailable {
		t.Fatalf("%s: %d %s, want 503", what, w.Code, w.Body)
	}
	if s, err := strconv.Atoi(w.Header().Get("Retry-After")); err != nil || s <= 0 {
		t.Errorf("%s: Retry-After %q, want seconds", what, w.Header().Get("Retry-After"))
	}
	m := decodeBody(t, w)
	if e, _ := m["error"].(string); !strings.Contains(e, "large webhook bodies") {
		t.Errorf("%s: error %q", what, e)
	}
	if h, _ := m["hint"].(string); !strings.Contains(h, "Redeliver") {
		t.Errorf("%s: hint %q", what, h)
	}
}

// paddedDelivery is the tagged fixture padded with JSON whitespace to size
// bytes: a valid delivery that large.
func paddedDelivery(t *testing.T, size int) []byte {
	t.Helper()
	body := fixture(t, "registry_package.published.container-tagged.json")
	return append(body, bytes.Repeat([]byte(" "), size-len(body))...)
}

// TestHandlerBodyBudgetDeclaredLength: while one large body is read, a
// second large body is refused with 503 and Retry-After without being read
// and is not recorded, a typical signed delivery is still accepted, and
// once the first body's client goes away the budget is whole again.
func TestHandlerBodyBudgetDeclaredLength(t *testing.T) {
	var logs bytes.Buffer
	rec := &fakeRecorder{}
	h := newTestHandler(t, rec, &logs)

	held := hold(t, h, unsignedRequest("big-1", 24<<20), make([]byte, 1<<20))

	r := unsignedRequest("big-2", 24<<20)
	spy := &readSpy{r: strings.NewReader("never read")}
	r.Body = io.NopCloser(spy)
	wantBusy(t, serve(h, r), "second large body")
	if spy.read != 0 {
		t.Errorf("read %d bytes of a body refused for want of budget", spy.read)
	}

	small := fixture(t, "registry_package.published.container-tagged.json")
	wantStatus(t, serve(h, delivery(EventRegistryPackage, "small-1", small)), http.StatusAccepted)

	if resp := held.abort(); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("aborted body answered %d, want 400", resp.StatusCode)
	}
	// The budget is back, whole, after the aborted body and after each of
	// two deliveries of the largest size.
	for i, id := range []string{"big-3", "big-4"} {
		body := paddedDelivery(t, MaxBodyBytes-i) // distinct bodies
		wantStatus(t, serve(h, delivery(EventRegistryPackage, id, body)), http.StatusAccepted)
	}
	if rec.count() != 3 || rec.got[0].ID != "small-1" || rec.got[1].ID != "big-3" || rec.got[2].ID != "big-4" {
		t.Errorf("recorded %+v, want small-1, big-3 and big-4", rec.got)
	}

	var line map[string]any
	for l := range strings.SplitSeq(strings.TrimSpace(logs.String()), "\n") {
		var e map[string]any
		if json.Unmarshal([]byte(l), &e) == nil && e[keyDeliveryID] == "big-2" {
			line = e
		}
	}
	if line[keyResult] != "busy" || line["level"] != "warn" || !strings.Contains(fmt.Sprint(line["error"]), "body budget") {
		t.Errorf("log line of the refused body: %v, want result busy at warn with the cause", line)
	}
}

// TestHandlerBodyBudgetUnknownLength: a body without a declared length
// that outgrows a small one takes what the largest needs, so that a second
// one is refused as soon as it outgrows a small one too.
func TestHandlerBodyBudgetUnknownLength(t *testing.T) {
	rec := &fakeRecorder{}
	h := newTestHandler(t, rec, nil)

	held := hold(t, h, unsignedRequest("chunked-1", -1), make([]byte, 1<<20))

	src := &endless{}
	r := unsignedRequest("chunked-2", -1)
	r.Body = io.NopCloser(src)
	wantBusy(t, serve(h, r), "second chunked body")
	if src.n > 256<<10 {
		t.Errorf("read %d bytes of a chunked body before refusing it, want at most 256 KiB", src.n)
	}

	small := delivery(EventRegistryPackage, "small-1", fixture(t, "registry_package.published.container-tagged.json"))
	small.ContentLength = -1
	wantStatus(t, serve(h, small), http.StatusAccepted)

	if resp := held.abort(); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("aborted body answered %d, want 400", resp.StatusCode)
	}
	big := delivery(EventRegistryPackage, "chunked-3", paddedDelivery(t, MaxBodyBytes))
	big.ContentLength = -1
	wantStatus(t, serve(h, big), http.StatusAccepted)
	if rec.count() != 2 {
		t.Errorf("recorded %+v, want small-1 and chunked-3", rec.got)
	}
}

// TestHandlerReusesLargeBuffers: a large body reads into the buffer of the
// large body before it rather than allocating its own, whether its length
// is declared or not, so that a stream of large unsigned bodies leaves
// little garbage behind.
func TestHandlerReusesLargeBuffers(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(-1)) // the spare buffer lives until a collection
	h := newTestHandler(t, &fakeRecorder{}, nil)
	body := bytes.Repeat([]byte(" "), 24<<20)
	for _, length := range []int64{int64(len(body)), -1} {
		for i := range 3 {
			r := unsignedRequest("big", length)
			r.Body = io.NopCloser(bytes.NewReader(body))
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			w := serve(h, r)
			runtime.ReadMemStats(&after)
			wantError(t, w, http.StatusUnauthorized)
			if grown := after.TotalAlloc - before.TotalAlloc; i > 0 && grown > 1<<20 {
				t.Errorf("length %d, body %d: allocated %d bytes for a body of %d", length, i+1, grown, len(body))
			}
		}
	}
}

// TestHandlerIdleBodiesHoldNoBudget: requests that declare a small body
// and then send (next to) nothing hold none of the budget, however many
// there are: a typical signed delivery sent meanwhile is accepted. Each
// idle request has had one byte read, so it is inside readBody.
func TestHandlerIdleBodiesHoldNoBudget(t *testing.T) {
	rec := &fakeRecorder{}
	h, err := NewHandler(HandlerConfig{
		Secret:           []byte(testSecret),
		Matcher:          newTestMatcher(t, testConfig()),
		Recorder:         rec,
		Now:              func() time.Time { return testNow },
		SmallBodyReserve: 1 << 20,
		BodyBudget:       MaxBodyBytes,
	})
	if err != nil {
		t.Fatal(err)
	}
	// Enough to take both pools if each held its declared length.
	const idle = (1<<20+MaxBodyBytes)/(200<<10) + 1
	var held []*heldBody
	defer func() {
		for _, hb := range held {
			hb.abort()
		}
	}()
	for i := range idle {
		pr, pw := io.Pipe()
		r := unsignedRequest(fmt.Sprint("idle-", i), 200<<10)
		r.Body = pr
		hb := &heldBody{PipeWriter: pw, done: make(chan *http.Response, 1)}
		go func() { hb.done <- serve(h, r).Result() }()
		held = append(held, hb)
		written := make(chan error, 1)
		go func() { _, err := pw.Write([]byte("{")); written <- err }()
		select {
		case err := <-written:
			if err != nil {
				t.Fatal(err)
			}
		case resp := <-hb.done:
			hb.done <- resp
			t.Fatalf("idle request %d answered %s before its first byte was read", i, resp.Status)
		}
	}
	small := fixture(t, "registry_package.published.container-tagged.json")
	wantStatus(t, serve(h, delivery(EventRegistryPackage, "small-1", small)), http.StatusAccepted)
	if rec.count() != 1 {
		t.Errorf("recorded %d deliveries, want the signed one", rec.count())
	}
}
