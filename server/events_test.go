package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/deployd/deployd/deployer"
)

// sseEvent is one message read from an event stream.
type sseEvent struct {
	name, data, comment, retry string
}

// sseStream reads an event stream message by message.
type sseStream struct {
	t    *testing.T
	body io.ReadCloser
	msgs chan sseEvent
}

// openStream GETs /api/v1/events and reads it in the background.
func openStream(t *testing.T, ctx context.Context, base string) *sseStream {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" {
		t.Fatalf("GET /api/v1/events = %d %q", res.StatusCode, res.Header.Get("Content-Type"))
	}
	s := &sseStream{t: t, body: res.Body, msgs: make(chan sseEvent, 100)}
	t.Cleanup(func() { res.Body.Close() })
	go func() {
		defer close(s.msgs)
		sc := bufio.NewScanner(res.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				s.msgs <- ev
				ev = sseEvent{}
			case strings.HasPrefix(line, ":"):
				ev.comment = strings.TrimSpace(line[1:])
			case strings.HasPrefix(line, "event: "):
				ev.name = line[len("event: "):]
			case strings.HasPrefix(line, "data: "):
				ev.data += line[len("data: "):]
			case strings.HasPrefix(line, "retry: "):
				ev.retry = line[len("retry: "):]
			}
		}
	}()
	return s
}

// next returns the next message that is not a comment-only heartbeat
// unless heartbeats is set; it fails the test after a few seconds.
func (s *sseStream) next(heartbeats bool) sseEvent {
	s.t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case ev, ok := <-s.msgs:
			if !ok {
				s.t.Fatal("event stream ended")
			}
			if ev.comment != "" && !heartbeats {
				continue
			}
			return ev
		case <-timeout:
			s.t.Fatal("no event within 5s")
		}
	}
}

// ended reports whether the stream ends within d.
func (s *sseStream) ended(d time.Duration) bool {
	timeout := time.After(d)
	for {
		select {
		case _, ok := <-s.msgs:
			if !ok {
				return true
			}
		case <-timeout:
			return false
		}
	}
}

func TestEventStream(t *testing.T) {
	st := openPageStore(t)
	hub := NewHub(HubConfig{Heartbeat: 50 * time.Millisecond, Logger: zerolog.Nop()})
	ts := newPageServer(t, st, hub)
	ctx := context.Background()

	s := openStream(t, ctx, ts.URL)
	if ev := s.next(false); ev.retry != "3000" {
		t.Fatalf("first message = %+v, want a retry hint", ev)
	}
	// The current state of every service comes first.
	ev := s.next(false)
	var v serviceView
	if ev.name != eventService || json.Unmarshal([]byte(ev.data), &v) != nil || v.Name != "backend" {
		t.Fatalf("initial message = %+v, want the backend service", ev)
	}
	if ev := s.next(true); ev.comment != "heartbeat" {
		t.Fatalf("idle stream sent %+v, want a heartbeat", ev)
	}

	d, err := st.Enqueue(ctx, deployer.Request{Service: "backend", Tag: "v2", Trigger: deployer.Trigger{Kind: deployer.TriggerManual, Subject: "ci"}})
	if err != nil {
		t.Fatal(err)
	}
	hub.Publish(d)
	ev = s.next(false)
	var got deployer.Deployment
	if ev.name != eventDeployment || json.Unmarshal([]byte(ev.data), &got) != nil || got.ID != d.ID || got.State != deployer.StateQueued {
		t.Fatalf("after Publish: %+v, want deployment %d queued", ev, d.ID)
	}
	ev = s.next(false)
	if ev.name != eventService || json.Unmarshal([]byte(ev.data), &v) != nil || v.LastDeployment == nil || v.LastDeployment.ID != d.ID {
		t.Fatalf("after the deployment: %+v, want the backend service with it", ev)
	}

	hub.PublishDelivery(deployer.Delivery{ID: "d-1", Event: "registry_package", Result: deployer.ResultIgnored, Reason: "tag not matched"})
	if ev := s.next(false); ev.name != eventDelivery || !strings.Contains(ev.data, `"delivery_id":"d-1"`) {
		t.Fatalf("after PublishDelivery: %+v", ev)
	}

	// Closing the hub ends the stream and refuses new ones.
	hub.Close()
	if !s.ended(2 * time.Second) {
		t.Fatal("stream still open after Close")
	}
	res, err := http.Get(ts.URL + "/api/v1/events")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("GET /api/v1/events after Close = %d, want 503", res.StatusCode)
	}
	hub.Publish(d) // after Close: discarded, no panic
	hub.Close()    // idempotent
}

func TestEventStreamClientGoesAway(t *testing.T) {
	st := openPageStore(t)
	hub := NewHub(HubConfig{Logger: zerolog.Nop()})
	ts := newPageServer(t, st, hub)
	ctx, cancel := context.WithCancel(context.Background())
	s := openStream(t, ctx, ts.URL)
	s.next(false)
	waitFor(t, func() bool { return hub.Subscribers() == 1 })
	cancel()
	waitFor(t, func() bool { return hub.Subscribers() == 0 })
}

func TestHubDropsSlowSubscriber(t *testing.T) {
	hub := NewHub(HubConfig{Buffer: 2, Logger: zerolog.Nop()})
	slow, _ := hub.subscribe()
	fast, _ := hub.subscribe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 5 {
			hub.Publish(deployer.Deployment{ID: int64(i + 1), Service: "backend"})
			<-fast.ch // keeps up
		}
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Publish blocked on a slow subscriber")
	}
	select {
	case <-slow.done:
	default:
		t.Fatal("slow subscriber not dropped")
	}
	select {
	case <-fast.done:
		t.Fatal("subscriber that kept up was dropped")
	default:
	}
	if n := hub.Subscribers(); n != 1 {
		t.Errorf("Subscribers = %d, want 1", n)
	}
	hub.unsubscribe(slow) // already dropped: no double close
	hub.unsubscribe(fast)
}

// TestEventStreamClientStopsReading checks that a stream whose client
// keeps the connection open but never reads ends once a write cannot
// complete within the hub's write timeout, instead of blocking its handler.
func TestEventStreamClientStopsReading(t *testing.T) {
	st := openPageStore(t)
	// A buffer large enough that the hub never drops the subscriber: the
	// stream can only end by its write deadline.
	hub := NewHub(HubConfig{Buffer: 4096, WriteTimeout: 200 * time.Millisecond, Logger: zerolog.Nop()})
	srv, err := New(Config{Webhook: http.NotFoundHandler(), Reads: Reads{Store: st, Events: hub}, Queue: notDraining{},
		Services: []deployer.Service{{Name: "backend"}}, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	returned := make(chan struct{})
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		srv.ServeHTTP(w, r)
		if r.URL.Path == "/api/v1/events" {
			close(returned)
		}
	}))
	t.Cleanup(ts.Close)

	conn, err := net.Dial("tcp", ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4 << 10) // fill up sooner
	}
	if _, err := io.WriteString(conn, "GET /api/v1/events HTTP/1.1\r\nHost: deployd\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return hub.Subscribers() == 1 })

	// Publish far more than the socket buffers hold; the client reads none.
	reason := strings.Repeat("x", 256<<10)
	limit := time.After(30 * time.Second)
	for i := 0; ; i++ {
		select {
		case <-returned:
			return
		case <-limit:
			t.Fatal("event stream handler still blocked on a client that does not read")
		default:
		}
		if i < 1024 {
			hub.PublishDelivery(deployer.Delivery{ID: fmt.Sprint("d-", i), Event: "package", Result: deployer.ResultIgnored, Reason: reason})
		} else {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// TestShutdownEndsStreams checks that http.Server.Shutdown does not wait for
// open event streams when the hub is registered with it.
func TestShutdownEndsStreams(t *testing.T) {
	st := openPageStore(t)
	hub := NewHub(HubConfig{Logger: zerolog.Nop()})
	srv, err := New(Config{Webhook: http.NotFoundHandler(), Reads: Reads{Store: st, Events: hub}, Queue: notDraining{},
		Services: []deployer.Service{{Name: "backend"}}, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := HTTPServer(ln.Addr().String(), srv, zerolog.Nop())
	hs.RegisterOnShutdown(hub.Close)
	go hs.Serve(ln)

	s := openStream(t, context.Background(), "http://"+ln.Addr().String())
	s.next(false)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := hs.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("Shutdown: %v", err)
	}
	if !s.ended(time.Second) {
		t.Fatal("stream still open after Shutdown")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
