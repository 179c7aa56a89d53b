package metrics

import (
	"context"
	"net/http"

	"github.com/google/go-github/v62/github"

	"github.com/deployd/deployd/deployer"
)

// Recorder commits a webhook delivery and queues its requests;
// webhook.Recorder and *deployer.Queue have this method.
type Recorder interface {
	RecordDelivery(ctx context.Context, d deployer.Delivery, reqs []deployer.Request) (deployer.Receipt, error)
}

// resultError labels a delivery the recorder failed to store (answered 503).
const resultError = "error"

// resultBusy labels a delivery refused because the webhook handler's body
// budget was taken (answered 503 with Retry-After).
const resultBusy = "busy"

// knownEvents are the event label values; any other event is "other", so
// that the label's values stay few.
var knownEvents = map[string]bool{
	"registry_package": true,
	"package":          true,
	"workflow_run":     true,
	"ping":             true,
}

func eventLabel(event string) string {
	if knownEvents[event] {
		return event
	}
	return "other"
}

// CountDeliveries wraps a recorder so that every delivery it records is
// counted in deployd_webhook_deliveries_total with its result: queued,
// ignored (also when the queue held every request back), duplicate, or
// error when recording failed. Deliveries refused before recording are
// counted by Webhook.
func (m *Metrics) CountDeliveries(next Recorder) Recorder {
	return countingRecorder{next: next, m: m}
}

type countingRecorder struct {
	next Recorder
	m    *Metrics
}

// RecordDelivery records through the wrapped recorder and counts the result.
func (c countingRecorder) RecordDelivery(ctx context.Context, d deployer.Delivery, reqs []deployer.Request) (deployer.Receipt, error) {
	rec, err := c.next.RecordDelivery(ctx, d, reqs)
	result := d.Result
	switch {
	case err != nil:
		result = resultError
	case rec.Duplicate:
		result = deployer.ResultDuplicate
	case rec.Ignored != "":
		// The queue held every request back: nothing was queued even
		// though the handler meant to.
		result = deployer.ResultIgnored
	}
	c.m.deliveries.WithLabelValues(eventLabel(d.Event), result).Inc()
	return rec, err
}

// Webhook wraps the webhook handler so that deliveries it refuses with a
// 4xx answer (bad signature, oversized or malformed body) are counted as
// result "rejected", and those it refuses with 503 and a Retry-After header
// (too many bodies in flight; a store failure carries none) as "busy".
// Those never reach the recorder, so no delivery is counted twice.
func (m *Metrics) Webhook(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		switch {
		case sw.status >= 400 && sw.status < 500:
			m.deliveries.WithLabelValues(eventLabel(github.WebHookType(r)), deployer.ResultRejected).Inc()
		case sw.status == http.StatusServiceUnavailable && sw.Header().Get("Retry-After") != "":
			m.deliveries.WithLabelValues(eventLabel(github.WebHookType(r)), resultBusy).Inc()
		}
	})
}

// statusWriter remembers the status code written.
type statusWriter struct {
	http.ResponseWriter
	status int
}

// WriteHeader remembers the first status code and passes it on.
func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write passes b on; a write without a status code means 200.
func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
