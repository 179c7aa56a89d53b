package notify

import (
	"context"
	"crypto/hmac"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deployd/deployd/deployer"
)

// received is one request a test receiver got.
type received struct {
	path   string
	header http.Header
	body   []byte
}

// receiver is an httptest server that records requests and answers
// status (200 when 0) with an empty JSON object, as ntfy's API does.
type receiver struct {
	*httptest.Server
	mu     sync.Mutex
	got    []received
	status atomic.Int32
}

func startReceiver(t *testing.T) *receiver {
	t.Helper()
	r := &receiver{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.got = append(r.got, received{path: req.URL.Path, header: req.Header.Clone(), body: body})
		r.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if s := r.status.Load(); s != 0 {
			w.WriteHeader(int(s))
		}
		_, _ = io.WriteString(w, "{}")
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) requests() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// verify checks a signed webhook request as a receiver should: the HMAC
// of the body under secret, in constant time.
func verify(secret []byte, req received) bool {
	return hmac.Equal([]byte(req.header.Get(HeaderSignature)), []byte(Sign(secret, req.body)))
}

func TestWebhookMessageIsSignedAndCarriesTheFailure(t *testing.T) {
	rcv := startReceiver(t)
	secret := []byte("notify-secret-0123456789")
	wh, err := NewWebhook(rcv.URL+"/hook", secret, nil)
	if err != nil {
		t.Fatal(err)
	}
	n, c, _ := newTestNotifier(t, statuses{}, Target{Kind: "webhook", Sender: wh})
	n.Notify(failedDeployment(7))
	c.wait("webhook/sent", 1)
	req := rcv.requests()[0]
	if !verify(secret, req) {
		t.Fatalf("signature %q does not verify with the secret", req.header.Get(HeaderSignature))
	}
	if verify([]byte("another secret"), req) {
		t.Fatal("the signature verifies with another secret")
	}
	tampered := req
	tampered.body = []byte(strings.Replace(string(req.body), `"backend"`, `"web"`, 1))
	if verify(secret, tampered) {
		t.Fatal("the signature verifies a changed body")
	}
	var m Message
	if err := json.Unmarshal(req.body, &m); err != nil {
		t.Fatal(err)
	}
	if m.ID == "" || req.header.Get(HeaderDelivery) != m.ID {
		t.Errorf("delivery header %q, body id %q: want the same, not empty", req.header.Get(HeaderDelivery), m.ID)
	}
	if ts := req.header.Get(HeaderTimestamp); ts != strconv.FormatInt(m.Time.Unix(), 10) || m.Time.IsZero() {
		t.Errorf("timestamp header %q, body time %v: want the same", ts, m.Time)
	}
	if m.Event != EventFailed || req.header.Get(HeaderEvent) != "failed" {
		t.Errorf("event %q (header %q), want failed", m.Event, req.header.Get(HeaderEvent))
	}
	want := failedDeployment(7)
	if m.Service != "backend" || m.DeploymentID != 7 || m.Digest != want.Digest || m.Tag != "latest" ||
		m.ErrorClass != "health" || m.Hint != want.Hint || m.State != "failed" {
		t.Errorf("message %+v does not describe the deployment", m)
	}
	if m.Step != "verify" || !slices.Equal(m.Lines, []string{"container e2e is exited; last output: line 1", "line 2", "boom"}) {
		t.Errorf("step %q lines %q, want the verify step's lines", m.Step, m.Lines)
	}
	if m.Trigger != "webhook registry_package (delivery d-1)" {
		t.Errorf("trigger %q", m.Trigger)
	}
	if m.URL != "https://deploy.example.test/#deployment-7" {
		t.Errorf("url %q, want the deployment on the status page", m.URL)
	}
	if c.get("webhook/sent") != 1 {
		t.Errorf("counts %v, want one webhook sent", c.n)
	}
}

// TestShoutrrrServices sends through shoutrrr to local receivers of the
// services that can be pointed at one: ntfy (self-hosted), generic
// webhooks and e-mail. TestVendorHostedServices covers the others.
func TestShoutrrrServices(t *testing.T) {
	t.Run("ntfy", func(t *testing.T) {
		rcv := startReceiver(t)
		host := strings.TrimPrefix(rcv.URL, "http://")
		s, err := NewShoutrrr("ntfy://" + host + "/deploys?scheme=http")
		if err != nil {
			t.Fatal(err)
		}
		n, c, _ := newTestNotifier(t, statuses{}, Target{Kind: s.Kind(), Sender: s})
		n.Notify(failedDeployment(3))
		c.wait("ntfy/sent", 1)
		got := rcv.requests()[0]
		if got.path != "/deploys" || got.header.Get("Title") != "deployd: backend deploy failed (health)" {
			t.Errorf("ntfy topic %q title %q", got.path, got.header.Get("Title"))
		}
		for _, want := range []string{"Failure class: health", "Hint: check its logs", "boom", "#deployment-3", "@abababababab"} {
			if !strings.Contains(string(got.body), want) {
				t.Errorf("ntfy message lacks %q:\n%s", want, got.body)
			}
		}
	})
	t.Run("generic", func(t *testing.T) {
		rcv := startReceiver(t)
		s, err := NewShoutrrr("generic+" + rcv.URL + "/incoming/hook-token-1234")
		if err != nil {
			t.Fatal(err)
		}
		n, c, _ := newTestNotifier(t, statuses{}, Target{Kind: s.Kind(), Sender: s})
		n.Notify(failedDeployment(4))
		c.wait("generic/sent", 1)
		if body := string(rcv.requests()[0].body); !strings.Contains(body, "boom") || !strings.Contains(body, "Failure class: health") {
			t.Errorf("generic body lacks the failure: %s", body)
		}
	})
	t.Run("smtp", func(t *testing.T) {
		srv := startSMTP(t)
		host, port, _ := strings.Cut(srv.addr, ":")
		s, err := NewShoutrrr(fmt.Sprintf("smtp://deployd:smtp-pass-9876@%s:%s/?from=deployd@example.test&to=ops@example.test&auth=Plain&encryption=None&usestarttls=no", host, port))
		if err != nil {
			t.Fatal(err)
		}
		n, c, _ := newTestNotifier(t, statuses{}, Target{Kind: s.Kind(), Sender: s})
		n.Notify(failedDeployment(5))
		c.wait("smtp/sent", 1)
		mail := srv.messages()[0]
		for _, want := range []string{"Subject: deployd: backend deploy failed (health)", "Failure class: health", "boom"} {
			if !strings.Contains(mail, want) {
				t.Errorf("mail lacks %q:\n%s", want, mail)
			}
		}
		if len(srv.auth) != 1 || !strings.Contains(srv.auth[0], "smtp-pass-9876") {
			t.Errorf("the SMTP server got no AUTH PLAIN with the URL's password: %q", srv.auth)
		}
	})
}

func TestBadShoutrrrURLErrorsHideTheURL(t *testing.T) {
	for _, u := range []string{
		"nosuchservice://secret-token-abcdef@host",
		"slack://not-a-token-secret-abcdef",
		"no scheme secret-token-abcdef",
		"ntfy://%zz-secret-token-abcdef/x",
	} {
		_, err := NewShoutrrr(u)
		if err == nil {
			t.Errorf("NewShoutrrr(%q): no error", u)
			continue
		}
		if strings.Contains(err.Error(), "secret-token") || strings.Contains(err.Error(), "abcdef") {
			t.Errorf("error shows the URL: %v", err)
		}
	}
}

// TestSendErrorsHideTheURL sends to a receiver that refuses connections,
// through shoutrrr and the webhook, and checks that neither the error
// counted and logged nor anything else in the log names the URL's secret.
func TestSendErrorsHideTheURL(t *testing.T) {
	dead := httptest.NewServer(http.NotFoundHandler())
	addr := dead.Listener.Addr().String()
	dead.Close() // connections are refused from now on
	const token = "tok3n-s3cr3t-v4lu3"
	s, err := NewShoutrrr("generic+http://" + addr + "/hooks/" + token + "?key=" + token)
	if err != nil {
		t.Fatal(err)
	}
	wh, err := NewWebhook("http://"+addr+"/hooks/"+token, []byte("k"), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, sender := range []Sender{s, wh} {
		err := sender.Send(context.Background(), Message{Service: "backend", Event: EventFailed})
		if err == nil {
			t.Fatal("send to a closed port succeeded")
		}
		if strings.Contains(err.Error(), token) || strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("send error shows the URL: %v", err)
		}
	}
	n, c, logs := newTestNotifier(t, statuses{}, Target{Kind: "generic", Sender: s}, Target{Kind: "webhook", Sender: wh})
	n.Notify(failedDeployment(9))
	c.wait("generic/failed", 1)
	c.wait("webhook/failed", 1)
	if got := logs.String(); strings.Contains(got, token) || strings.Contains(got, "s3cr3t") || !strings.Contains(got, "giving up") {
		t.Errorf("log shows the URL or not the failure:\n%s", got)
	}
}

// flaky fails its first fails sends.
type flaky struct {
	fails int
	calls atomic.Int32
	got   chan Message
}

func (f *flaky) Send(_ context.Context, m Message) error {
	if int(f.calls.Add(1)) <= f.fails {
		return errors.New("receiver unavailable")
	}
	f.got <- m
	return nil
}

func TestRetriesWithTheSameIDThenGivesUp(t *testing.T) {
	ok := &flaky{fails: 2, got: make(chan Message, 1)}
	never := &flaky{fails: 100, got: make(chan Message, 1)}
	n, c, logs := newTestNotifier(t, statuses{}, Target{Kind: "ok", Sender: ok}, Target{Kind: "never", Sender: never})
	n.Notify(failedDeployment(1))
	m := <-ok.got
	if m.DeploymentID != 1 {
		t.Fatalf("message %+v", m)
	}
	c.wait("never/failed", 1)
	if got := []int{c.get("ok/retried"), c.get("ok/sent"), c.get("never/retried"), c.get("never/sent")}; !slices.Equal(got, []int{2, 1, 2, 0}) {
		t.Errorf("ok retried/sent, never retried/sent = %v, want [2 1 2 0]", got)
	}
	if never.calls.Load() != DefaultAttempts {
		t.Errorf("the failing target was tried %d times, want %d", never.calls.Load(), DefaultAttempts)
	}
	if !strings.Contains(logs.String(), "receiver unavailable") {
		t.Errorf("the failures are not logged:\n%s", logs.String())
	}
}

// recorder records the messages it is sent.
type recorder struct {
	mu  sync.Mutex
	got []Message
}

func (r *recorder) Send(_ context.Context, m Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, m)
	return nil
}

func (r *recorder) messages() []Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

func TestEventsAndFilters(t *testing.T) {
	degraded := failedDeployment(10)
	fallback := deployer.Deployment{ID: 11, Service: "web", State: deployer.StateSucceeded, Steps: []deployer.Step{
		{Name: "resolve", Outcome: "failed", Message: "registry refused credential github_app; putting it aside and trying the next source: denied"},
		{Name: "resolve", Outcome: "ok", Message: "resolved (credential token_file)"},
	}}
	st := statuses{
		"backend": {Name: "backend", Degraded: true, LastDeploymentID: 10},
		"web":     {Name: "web", LastDeploymentID: 11, Credential: "token_file", CredentialNote: "github_app: denied"},
	}
	all := &recorder{}
	failedOnly := &recorder{}
	webOnly := &recorder{}
	succeeded := &recorder{}
	n, _, _ := newTestNotifier(t, st,
		Target{Kind: "all", Sender: all},
		Target{Kind: "failed", Sender: failedOnly, Events: []Event{EventFailed}},
		Target{Kind: "web", Sender: webOnly, Services: []string{"web"}, Events: Events()},
		Target{Kind: "succeeded", Sender: succeeded, Events: []Event{EventSucceeded}},
	)
	n.Notify(degraded)
	n.Notify(fallback)
	dry := failedDeployment(12)
	dry.DryRun = true
	n.Notify(dry)                                                                             // dry runs: never
	n.Notify(deployer.Deployment{ID: 13, Service: "backend", State: deployer.StateUnchanged}) // nothing to say
	n.Notify(deployer.Deployment{ID: 14, Service: "web", State: deployer.StateRolledBack})    // rolled back
	n.Notify(deployer.Deployment{ID: 15, Service: "backend", State: deployer.StateSucceeded}) // plain success
	n.Close(10 * time.Second)

	events := func(r *recorder) string {
		var out []string
		for _, m := range r.messages() {
			out = append(out, fmt.Sprintf("%d:%s", m.DeploymentID, m.Event))
		}
		return strings.Join(out, " ")
	}
	for _, c := range []struct {
		name string
		r    *recorder
		want string
	}{
		{"default events", all, "10:degraded 11:credential_fallback 14:rolled_back"},
		{"failed only", failedOnly, "10:failed"},
		{"web, every event", webOnly, "11:credential_fallback 14:rolled_back"},
		{"succeeded only", succeeded, "11:succeeded 15:succeeded"},
	} {
		if got := events(c.r); got != c.want {
			t.Errorf("%s: got %q, want %q", c.name, got, c.want)
		}
	}
	if m := all.messages()[1]; m.Step != "resolve" || len(m.Lines) != 1 || !strings.Contains(m.Lines[0], "github_app") {
		t.Errorf("fallback message quotes %q %q, want the refused credential's step", m.Step, m.Lines)
	}
}

// blocking blocks every send until released.
type blocking struct {
	started chan struct{}
	release chan struct{}
	recorder
}

func (b *blocking) Send(ctx context.Context, m Message) error {
	b.started <- struct{}{}
	select {
	case <-b.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return b.recorder.Send(ctx, m)
}

// TestNotifyNeverBlocksAndDropsTheOldest holds the receiver while more
// deployments end than the queue holds: every Notify returns while the
// receiver hangs, the oldest waiting ones are dropped and counted, and
// the newest are delivered once it answers.
func TestNotifyNeverBlocksAndDropsTheOldest(t *testing.T) {
	b := &blocking{started: make(chan struct{}, 100), release: make(chan struct{})}
	c := newCounts()
	n, err := New(Config{Targets: []Target{{Kind: "hang", Sender: b}}, Status: statuses{}, Count: c.count, QueueSize: 3, Timeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	n.Notify(failedDeployment(1))
	<-b.started // the worker hangs in the first send
	for id := int64(2); id <= 8; id++ {
		n.Notify(failedDeployment(id)) // returns although the receiver hangs
	}
	if got := c.get("hang/dropped"); got != 4 {
		t.Errorf("dropped %d, want 4 (7 waiting for 3 places)", got)
	}
	close(b.release)
	n.Close(time.Minute)
	var ids []int64
	for _, m := range b.messages() {
		ids = append(ids, m.DeploymentID)
	}
	if !slices.Equal(ids, []int64{1, 6, 7, 8}) {
		t.Errorf("delivered %v, want [1 6 7 8]: the one in flight and the newest three", ids)
	}
}

// TestHangingReceiverDelaysOnlyItself: while one receiver hangs, another
// gets its messages; Close then abandons the hanging send.
func TestHangingReceiverDelaysOnlyItself(t *testing.T) {
	b := &blocking{started: make(chan struct{}, 100), release: make(chan struct{})}
	ok := &flaky{got: make(chan Message, 2)}
	c := newCounts()
	n, err := New(Config{Targets: []Target{{Kind: "hang", Sender: b}, {Kind: "ok", Sender: ok}}, Status: statuses{}, Count: c.count, Timeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	n.Notify(failedDeployment(1))
	n.Notify(failedDeployment(2))
	<-b.started // the first receiver hangs on deployment 1
	if m1, m2 := <-ok.got, <-ok.got; m1.DeploymentID != 1 || m2.DeploymentID != 2 {
		t.Errorf("the other receiver got %d and %d, want 1 and 2", m1.DeploymentID, m2.DeploymentID)
	}
	n.Close(time.Millisecond) // returns: the send in flight is cancelled
	if got := len(b.messages()); got != 0 {
		t.Errorf("%d messages delivered by a receiver that never answered", got)
	}
	if c.get("hang/failed") != 1 || c.get("ok/sent") != 2 {
		t.Errorf("counts %v, want the cancelled send counted failed and two sent", c.n)
	}
	n.Notify(failedDeployment(3)) // after Close: ignored, no panic
}

func TestLastLines(t *testing.T) {
	long := strings.Repeat("é", 400) // 800 bytes
	for _, c := range []struct {
		name, text string
		want       []string
	}{
		{"empty", "", nil},
		{"blank lines dropped", "a\n\n  \nb\r\n", []string{"a", "b"}},
		{"last ten", strings.Repeat("x\n", 5) + "1\n2\n3\n4\n5\n6\n7\n8\n9\n10", []string{"1", "2", "3", "4", "5", "6", "7", "8", "9", "10"}},
		{"long line cut on a rune", long, []string{strings.Repeat("é", 148) + "…"}},
	} {
		got := lastLines(c.text, maxLines, maxLineBytes, maxLogBytes)
		if !slices.Equal(got, c.want) {
			t.Errorf("%s: got %q, want %q", c.name, got, c.want)
		}
	}
	many := strings.Repeat(strings.Repeat("y", 290)+"\n", 10)
	if got := lastLines(many, maxLines, maxLineBytes, maxLogBytes); len(got) != 7 {
		t.Errorf("10 lines of 290 bytes: kept %d, want 7 (2 KiB)", len(got))
	}
}

func FuzzLastLines(f *testing.F) {
	f.Add("a\nb\nc")
	f.Add(strings.Repeat("é", 400))
	f.Add("\r\n\r\n\xff\xfe\n" + strings.Repeat("z", 5000))
	f.Fuzz(func(t *testing.T, text string) {
		got := lastLines(text, maxLines, maxLineBytes, maxLogBytes)
		total := 0
		for _, l := range got {
			if len(l) > maxLineBytes || strings.TrimSpace(l) == "" || strings.Contains(l, "\n") {
				t.Fatalf("line %q", l)
			}
			total += len(l)
		}
		if len(got) > maxLines || total > maxLogBytes {
			t.Fatalf("%d lines, %d bytes", len(got), total)
		}
	})
}

func TestNewRefusesBadConfig(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no targets":    {Status: statuses{}},
		"no status":     {Targets: []Target{{Kind: "x", Sender: &recorder{}}}},
		"no sender":     {Targets: []Target{{Kind: "x"}}, Status: statuses{}},
		"unknown event": {Targets: []Target{{Kind: "x", Sender: &recorder{}, Events: []Event{"exploded"}}}, Status: statuses{}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
