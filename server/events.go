package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/deployd/deployd/deployer"
	"github.com/deployd/deployd/server/httperr"
)

// Event stream defaults.
const (
	// DefaultHeartbeat is how often an idle event stream sends a comment so
	// that proxies and browsers keep the connection open.
	DefaultHeartbeat = 15 * time.Second
	// DefaultSubscriberBuffer is how many events a subscriber may fall behind
	// before it is dropped.
	DefaultSubscriberBuffer = 64
	// DefaultStreamWriteTimeout bounds each write to an event stream, so
	// that a client that stops reading cannot hold its handler forever.
	DefaultStreamWriteTimeout = 30 * time.Second
	// streamRetry is the reconnection delay the stream suggests to browsers.
	streamRetry = 3 * time.Second
)

// Event names on GET /api/v1/events.
const (
	eventDeployment = "deployment" // data: a deployer.Deployment
	eventService    = "service"    // data: a serviceView
	eventDelivery   = "delivery"   // data: a deployer.Delivery
)

// event is one message for the stream, encoded once for all subscribers.
type event struct {
	name    string
	data    []byte
	service string // the service whose view the event may have changed
}

// HubConfig holds a Hub's settings; the zero value is usable.
type HubConfig struct {
	// Heartbeat is the idle interval between keep-alive comments;
	// 0 means DefaultHeartbeat.
	Heartbeat time.Duration
	// Buffer is each subscriber's queue length; 0 means DefaultSubscriberBuffer.
	Buffer int
	// WriteTimeout bounds each write to a stream, flush included; a stream
	// whose write does not complete in time ends. 0 means
	// DefaultStreamWriteTimeout.
	WriteTimeout time.Duration
	Logger       zerolog.Logger
}

// Hub fans deployment and delivery events out to the subscribers of the
// event stream. Publishing never blocks: a subscriber whose buffer is full
// is dropped (its stream ends and the browser reconnects), so a slow client
// can never hold up the deployer; a client that stops reading altogether
// ends its stream after the write timeout. All methods are safe for
// concurrent use.
type Hub struct {
	heartbeat    time.Duration
	buffer       int
	writeTimeout time.Duration
	log          zerolog.Logger

	mu     sync.Mutex
	subs   map[*subscriber]struct{}
	closed bool
}

// subscriber is one open event stream.
type subscriber struct {
	ch   chan event
	done chan struct{} // closed when the hub drops the subscriber or closes
}

// NewHub returns a Hub with no subscribers.
func NewHub(cfg HubConfig) *Hub {
	h := &Hub{heartbeat: cfg.Heartbeat, buffer: cfg.Buffer, writeTimeout: cfg.WriteTimeout, log: cfg.Logger, subs: make(map[*subscriber]struct{})}
	if h.heartbeat <= 0 {
		h.heartbeat = DefaultHeartbeat
	}
	if h.writeTimeout <= 0 {
		h.writeTimeout = DefaultStreamWriteTimeout
	}
	if h.buffer <= 0 {
		h.buffer = DefaultSubscriberBuffer
	}
	return h
}

// Publish announces a deployment's new state or step. It has the signature
// of deployer.QueueConfig.Notify and podman.PipelineConfig.Notify.
func (h *Hub) Publish(d deployer.Deployment) {
	if !h.listened() {
		return
	}
	data, err := json.Marshal(d)
	if err != nil {
		h.log.Error().Err(err).Int64(deployer.KeyDeploymentID, d.ID).Msg("encode deployment event")
		return
	}
	h.broadcast(event{name: eventDeployment, data: data, service: d.Service})
}

// PublishDelivery announces a recorded webhook delivery.
func (h *Hub) PublishDelivery(d deployer.Delivery) {
	if !h.listened() {
		return
	}
	data, err := json.Marshal(d)
	if err != nil {
		h.log.Error().Err(err).Str(deployer.KeyDeliveryID, d.ID).Msg("encode delivery event")
		return
	}
	h.broadcast(event{name: eventDelivery, data: data})
}

// listened reports whether any stream is open, so that events nobody
// would receive are not even encoded.
func (h *Hub) listened() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs) > 0
}

func (h *Hub) broadcast(ev event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		select {
		case s.ch <- ev:
		default:
			h.log.Debug().Msg("event stream subscriber too slow; dropped")
			h.drop(s)
		}
	}
}

// drop ends a subscriber's stream; h.mu must be held.
func (h *Hub) drop(s *subscriber) {
	delete(h.subs, s)
	close(s.done)
}

// subscribe adds a subscriber; ok is false once the hub is closed.
func (h *Hub) subscribe() (s *subscriber, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, false
	}
	s = &subscriber{ch: make(chan event, h.buffer), done: make(chan struct{})}
	h.subs[s] = struct{}{}
	return s, true
}

// unsubscribe removes s if the hub has not dropped it already.
func (h *Hub) unsubscribe(s *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[s]; ok {
		h.drop(s)
	}
}

// Subscribers returns how many event streams are open.
func (h *Hub) Subscribers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// Close ends every open stream and refuses new ones, so that
// http.Server.Shutdown does not wait for them; later events are discarded.
// Register it with http.Server.RegisterOnShutdown. Close is idempotent.
func (h *Hub) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.closed = true
	for s := range h.subs {
		h.drop(s)
	}
}

// events serves GET /api/v1/events: a Server-Sent Events stream that starts
// with the current view of every service and then carries deployment,
// service and delivery events as they happen. It ends when the client goes
// away, when the client falls too far behind, when a write does not
// complete within the hub's write timeout (a client that stopped reading),
// or when the hub closes.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	sub, ok := s.hub.subscribe()
	if !ok {
		httperr.Write(w, r, deployer.ErrDraining)
		return
	}
	defer s.hub.unsubscribe(sub)

	rc := http.NewResponseController(w)
	// deadline bounds the writes and the flush that follow it. A writer
	// without deadlines (a test recorder) is not an error.
	deadline := func() error {
		err := rc.SetWriteDeadline(time.Now().Add(s.hub.writeTimeout))
		if errors.Is(err, http.ErrNotSupported) {
			return nil
		}
		return err
	}
	// The end of the response, written after the handler returns, is
	// bounded too.
	defer func() { _ = deadline() }()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Accel-Buffering", "no") // tell nginx not to buffer the stream
	if r.ProtoMajor == 1 {
		// The connection keeps the last write deadline; close it after the
		// stream rather than reuse it with a deadline that will expire.
		h.Set("Connection", "close")
	}
	if deadline() != nil {
		return
	}
	w.WriteHeader(http.StatusOK)
	if _, err := fmt.Fprintf(w, "retry: %d\n\n", streamRetry.Milliseconds()); err != nil {
		return
	}
	// Start with the current state, so that a browser reconnecting after a
	// drop catches up with what it missed.
	names := make([]string, len(s.services))
	for i, svc := range s.services {
		names[i] = svc.Name
	}
	if err := s.writeServices(w, r, names); err != nil || rc.Flush() != nil {
		return
	}

	heartbeat := time.NewTicker(s.hub.heartbeat)
	defer heartbeat.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-sub.done:
			return
		case <-heartbeat.C:
			if deadline() != nil {
				return
			}
			if _, err := io.WriteString(w, ": heartbeat\n\n"); err != nil {
				return
			}
		case ev := <-sub.ch:
			// Write what has piled up, then each touched service's view once.
			if deadline() != nil {
				return
			}
			var touched []string
			for more := true; more; {
				if err := writeEvent(w, ev.name, ev.data); err != nil {
					return
				}
				// Each event gets the full timeout: a long backlog that
				// keeps moving is not a stuck client.
				if deadline() != nil {
					return
				}
				if ev.service != "" && !slices.Contains(touched, ev.service) {
					touched = append(touched, ev.service)
				}
				select {
				case ev = <-sub.ch:
				default:
					more = false
				}
			}
			if err := s.writeServices(w, r, touched); err != nil {
				return
			}
		}
		if rc.Flush() != nil {
			return
		}
		heartbeat.Reset(s.hub.heartbeat)
	}
}

// writeServices writes a service event for each named, configured service.
func (s *Server) writeServices(w io.Writer, r *http.Request, names []string) error {
	for _, name := range names {
		svc, ok := s.byName[name]
		if !ok {
			continue
		}
		v, err := s.serviceView(r, svc)
		if err != nil {
			// The page keeps its last view; the next event retries.
			zerolog.Ctx(r.Context()).Warn().Err(err).Str(deployer.KeyService, name).Msg("event stream: read service")
			continue
		}
		data, err := json.Marshal(v)
		if err != nil {
			return err
		}
		if err := writeEvent(w, eventService, data); err != nil {
			return err
		}
	}
	return nil
}

// writeEvent writes one event. data is JSON and so holds no newline.
func writeEvent(w io.Writer, name string, data []byte) error {
	_, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, data)
	return err
}
