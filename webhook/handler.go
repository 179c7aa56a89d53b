package webhook

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/google/go-github/v62/github"
	"github.com/rs/zerolog"

	"github.com/deployd/deployd/deployer"
	"github.com/deployd/deployd/server/httperr"
)

// MaxBodyBytes is the largest delivery body accepted (GitHub caps payloads at 25 MiB).
const MaxBodyBytes = 25 << 20

// preallocBodyBytes bounds the buffer allocated for a body from its declared
// length, before any of it is read. Buffers up to this size are reused for
// later deliveries; larger bodies move to the large buffers of budget.go.
const preallocBodyBytes = 256 << 10

// minBodyChunk is the first buffer of a body of unknown length (chunked).
const minBodyChunk = 16 << 10

// freeBodyBytes is what a body may hold before it draws on the body
// budget, as little as the connection's own buffers: a typical delivery
// (10 KB) never touches the budget, and a request that sends its headers
// and then nothing holds none of it.
const freeBodyBytes = minBodyChunk

// bodyReadTimeout bounds how long a body may take to arrive. GitHub gives
// up on a delivery not answered within 10 seconds.
const bodyReadTimeout = 30 * time.Second

// busyRetryAfter is the Retry-After of a delivery refused because the body
// budget was taken: about the time a large body takes to arrive.
const busyRetryAfter = "10"

// Limits on the unsigned headers that name a delivery.
const (
	maxDeliveryIDLen = 128
	maxEventLen      = 64
)

// Log keys of the line written per delivery.
const (
	keyDeliveryID  = "delivery_id"
	keyEvent       = "event"
	keyAction      = "action"
	keyResult      = "result"
	keyReason      = "reason"
	keyStatus      = "status"
	keyDeployments = "deployment_ids"
	keyDuration    = "duration"
)

// Logged results of deliveries that are neither recorded nor rejected.
const (
	// resultError: the delivery could not be recorded.
	resultError = "error"
	// resultBusy: the body did not fit in the body budget.
	resultBusy = "busy"
)

// Recorder commits a delivery and queues its requests in one step.
// deployer.Store satisfies it. Implementations must be safe for concurrent use.
type Recorder interface {
	// RecordDelivery records d and queues reqs, all or nothing. When a
	// delivery with d's ID or BodySHA256 was recorded before, it records d
	// as a duplicate, queues nothing and returns Receipt{Duplicate: true}.
	RecordDelivery(ctx context.Context, d deployer.Delivery, reqs []deployer.Request) (deployer.Receipt, error)
}

// HandlerConfig is what a Handler needs.
type HandlerConfig struct {
	// Secret is the webhook secret shared with GitHub; it must not be empty.
	Secret []byte
	// Matcher maps events to deploy requests.
	Matcher *Matcher
	// Recorder stores each delivery before it is answered.
	Recorder Recorder
	// Logger receives one line per delivery, unless the request's context
	// carries an enabled zerolog logger (zerolog.Ctx), such as one with the
	// request id, which is then used instead. The zero Logger logs nothing.
	Logger zerolog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// BodyBudget is how many bytes the bodies over 256 KiB being read may
	// hold in total, before their signature is checked; 0 means
	// DefaultBodyBudget. It must be at least MaxBodyBytes, so that the
	// largest delivery fits.
	BodyBudget int64
	// SmallBodyReserve is how many bytes the bodies of at most 256 KiB
	// being read may hold in total, apart from BodyBudget, so that large
	// bodies in flight never refuse a typical delivery; 0 means
	// DefaultSmallBodyReserve. A small body that does not fit in it draws
	// on BodyBudget.
	SmallBodyReserve int64
}

// Handler is the http.Handler for POST /webhooks/github. It is safe for
// concurrent use.
//
// It answers 405 to other methods, 401 when X-Hub-Signature-256 is missing,
// not SHA-256 or wrong (the body is not parsed then), 413 for a body over
// MaxBodyBytes, 400 for a missing delivery id or event name or a malformed
// payload, and 415 for a body neither JSON nor form-encoded; none of these
// is recorded. Every other delivery is recorded before the answer: 200
// {"ok":true,"zen":...} for ping, 200 {"duplicate":true} for a delivery seen
// before, 202 {"deployments":[ids]} when it queued deployments (with
// "releases":[ids] and "reason" when it was held for or joined releases of
// release sets), 200 {"ignored":reason} otherwise, and 503 when recording
// failed.
//
// Bodies are read into memory before their signature can be checked, so
// what they may hold in total is bounded (HandlerConfig.BodyBudget and
// SmallBodyReserve): a body that declares a length over 256 KiB that does
// not fit is refused at once, without reading it, and any other as soon as
// its bytes outgrow what is left; both with 503 and a Retry-After header,
// the only answers that carry one, and not recorded. The first 16 KiB of a
// body are not counted, so typical deliveries never wait on the budget. A
// request gives back its share once its body is checked (before it is
// recorded), however it ends; a body must arrive within 30 seconds.
//
// The recorded BodySHA256 is the hash of the event JSON: the body itself, or
// the payload field of a form-encoded body, so that the same event sent
// either way is the same delivery.
type Handler struct {
	secret   []byte
	matcher  *Matcher
	recorder Recorder
	log      zerolog.Logger
	now      func() time.Time
	budget   *bodyBudget

	// bodies recycles the buffers that bodies are read into, which are
	// most of what a delivery allocates, and large the buffers of large
	// bodies. Nothing taken from a body outlives its request: the payload
	// is decoded into copies.
	bodies sync.Pool // of *[]byte
	large  largeBuffers
}

// NewHandler checks cfg and returns a Handler, which keeps its own copy of
// the secret. It fails, naming every problem, when the secret is empty, the
// Matcher or Recorder is missing, BodyBudget is below MaxBodyBytes or
// SmallBodyReserve is negative.
func NewHandler(cfg HandlerConfig) (*Handler, error) {
	var errs []error
	if cfg.BodyBudget == 0 {
		cfg.BodyBudget = DefaultBodyBudget
	}
	if cfg.SmallBodyReserve == 0 {
		cfg.SmallBodyReserve = DefaultSmallBodyReserve
	}
	if cfg.BodyBudget < MaxBodyBytes {
		errs = append(errs, fmt.Errorf("body budget of %d bytes is below the %d-byte body limit: the largest deliveries could never be read", cfg.BodyBudget, MaxBodyBytes))
	}
	if cfg.SmallBodyReserve < 0 {
		errs = append(errs, fmt.Errorf("small-body reserve of %d bytes is negative", cfg.SmallBodyReserve))
	}
	if len(cfg.Secret) == 0 {
		errs = append(errs, errors.New("webhook secret is empty"))
	}
	if cfg.Matcher == nil {
		errs = append(errs, errors.New("no matcher"))
	}
	if cfg.Recorder == nil {
		errs = append(errs, errors.New("no recorder"))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("new webhook handler: %w", errors.Join(errs...))
	}
	h := &Handler{
		secret:   bytes.Clone(cfg.Secret),
		matcher:  cfg.Matcher,
		recorder: cfg.Recorder,
		log:      cfg.Logger,
		now:      cfg.Now,
		budget:   newBodyBudget(cfg.SmallBodyReserve, cfg.BodyBudget),
	}
	if h.now == nil {
		h.now = time.Now
	}
	return h, nil
}

// outcome is one delivery's log line.
type outcome struct {
	id, event, action string
	result, reason    string
	status            int
	deployments       []int64
	err               error
}

// ServeHTTP handles one delivery; see Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := h.now()
	log := h.logger(r)
	o := outcome{id: clip(github.DeliveryID(r), maxDeliveryIDLen), event: clip(github.WebHookType(r), maxEventLen)}
	defer func() { h.logOutcome(log, &o, start) }()
	d, reqs, p := h.check(w, r, start)
	if p != nil {
		o.status, o.result, o.reason, o.err = p.Status, deployer.ResultRejected, p.Message, p.Cause
		if p.RetryAfter != "" { // only a refusal for want of body budget asks to come back
			o.result = resultBusy
		}
		httperr.Write(w, r, p)
		return
	}
	o.action, o.reason = d.Action, d.Reason

	ctx := log.With().Str(keyDeliveryID, d.ID).Str(keyEvent, d.Event).Logger().WithContext(r.Context())
	receipt, err := h.recorder.RecordDelivery(ctx, d.Delivery, reqs)
	if err != nil {
		o.status, o.result, o.err = http.StatusServiceUnavailable, resultError, err
		httperr.Write(w, r, &httperr.Error{Status: o.status, Message: "could not record the delivery",
			Hint: "deployd's store is unavailable; nothing was queued. Redeliver it from the webhook's Recent Deliveries page once deployd is ready"})
		return
	}
	switch {
	case receipt.Duplicate:
		o.status, o.result, o.reason = http.StatusOK, deployer.ResultDuplicate, ""
		httperr.WriteJSON(w, o.status, duplicateBody{Duplicate: true})
	case d.Ping:
		o.status, o.result = http.StatusOK, d.Result
		httperr.WriteJSON(w, o.status, pingBody{OK: true, Zen: d.Zen})
	case receipt.Ignored != "":
		o.status, o.result, o.reason = http.StatusOK, deployer.ResultIgnored, receipt.Ignored
		httperr.WriteJSON(w, o.status, ignoredBody{Ignored: receipt.Ignored})
	case d.Result == deployer.ResultQueued:
		o.status, o.result, o.deployments = http.StatusAccepted, d.Result, receipt.Deployments
		ids := receipt.Deployments
		if ids == nil {
			ids = []int64{}
		}
		if receipt.Reason != "" {
			o.reason = receipt.Reason
		}
		httperr.WriteJSON(w, o.status, queuedBody{Deployments: ids, Releases: receipt.Releases, Reason: receipt.Reason})
	default:
		o.status, o.result = http.StatusOK, d.Result
		httperr.WriteJSON(w, o.status, ignoredBody{Ignored: d.Reason})
	}
}

// accepted is a verified delivery ready to be recorded.
type accepted struct {
	deployer.Delivery
	Ping bool
	Zen  string
}

// bodyMemory is what one request reads its body into: a small buffer, and
// a large one (from Handler.large) once the body outgrows the small one.
type bodyMemory struct {
	small *[]byte
	large []byte
}

// bodyBuffer returns an empty buffer to read a body into.
func (h *Handler) bodyBuffer() *[]byte {
	if b, ok := h.bodies.Get().(*[]byte); ok {
		return b
	}
	return new([]byte)
}

// recycle keeps m's buffers for later deliveries.
func (h *Handler) recycle(m *bodyMemory) {
	if m.large != nil {
		h.large.put(m.large)
	}
	if cap(*m.small) <= preallocBodyBytes {
		*m.small = (*m.small)[:0]
		h.bodies.Put(m.small)
	}
}

// check reads the body and runs intake on it, holding the body's memory
// and its share of the budget only meanwhile: nothing taken from the body
// outlives intake (the payload is decoded into copies), so the share is
// back before the delivery is recorded. The buffers go back before the
// lease, so that the large body the lease admits next finds this one's
// buffer.
func (h *Handler) check(w http.ResponseWriter, r *http.Request, now time.Time) (accepted, []deployer.Request, *httperr.Error) {
	l := lease{b: h.budget}
	defer l.release()
	body := bodyMemory{small: h.bodyBuffer()}
	defer h.recycle(&body)
	// A body has no longer to arrive than GitHub waits for the answer; a
	// client that trickles one holds its share for this long at most.
	if err := http.NewResponseController(w).SetReadDeadline(now.Add(bodyReadTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return accepted{}, nil, &httperr.Error{Status: http.StatusInternalServerError, Message: "could not read the body", Cause: err}
	}
	return h.intake(w, r, now, &body, &l)
}

// intake runs every check before recording: method, signature, size,
// headers and payload, reading the body into m under the lease l. It
// returns the delivery and its requests, or the problem that refuses it.
func (h *Handler) intake(w http.ResponseWriter, r *http.Request, now time.Time, m *bodyMemory, l *lease) (accepted, []deployer.Request, *httperr.Error) {
	if r.Method != http.MethodPost {
		return accepted{}, nil, &httperr.Error{Status: http.StatusMethodNotAllowed, Allow: http.MethodPost,
			Message: "method not allowed", Hint: "GitHub delivers webhooks with POST"}
	}
	sig := r.Header.Get(github.SHA256SignatureHeader)
	if !strings.HasPrefix(sig, "sha256=") {
		return accepted{}, nil, &httperr.Error{Status: http.StatusUnauthorized,
			Message: "missing " + github.SHA256SignatureHeader + " signature",
			Hint:    "set a secret on the GitHub webhook so that it signs deliveries with SHA-256; unsigned and SHA-1-only deliveries are refused"}
	}
	raw, p := h.readBody(w, r, m, l)
	if p != nil {
		return accepted{}, nil, p
	}
	if err := github.ValidateSignature(sig, raw, h.secret); err != nil {
		return accepted{}, nil, &httperr.Error{Status: http.StatusUnauthorized, Message: "signature does not match",
			Hint: "the webhook secret on GitHub must equal deployd's github.webhook_secret"}
		// err is not logged: it can quote the signature.
	}
	id, event := github.DeliveryID(r), github.WebHookType(r)
	if !validName(id, maxDeliveryIDLen) {
		return accepted{}, nil, &httperr.Error{Status: http.StatusBadRequest, Message: "missing or invalid " + github.DeliveryIDHeader + " header",
			Hint: fmt.Sprintf("GitHub sends a delivery id of at most %d printable characters", maxDeliveryIDLen)}
	}
	if !validName(event, maxEventLen) {
		return accepted{}, nil, &httperr.Error{Status: http.StatusBadRequest, Message: "missing or invalid " + github.EventTypeHeader + " header",
			Hint: "GitHub names the event in this header, e.g. registry_package"}
	}
	payload, p := payloadOf(r.Header.Get("Content-Type"), raw)
	if p != nil {
		return accepted{}, nil, p
	}
	dec, err := h.matcher.Match(event, payload)
	if err != nil {
		return accepted{}, nil, &httperr.Error{Status: http.StatusBadRequest, Message: "malformed " + event + " payload",
			Hint: "the body must be the JSON object GitHub sends for this event", Cause: err}
	}
	sum := sha256.Sum256(payload)
	d := accepted{
		Delivery: deployer.Delivery{
			ID:         id,
			Event:      event,
			Action:     dec.Action,
			BodySHA256: hex.EncodeToString(sum[:]),
			ReceivedAt: now,
			Result:     deployer.ResultIgnored,
			Reason:     dec.Reason,
		},
		Ping: dec.Ping,
		Zen:  dec.Zen,
	}
	if len(dec.Requests) > 0 {
		d.Result, d.Reason = deployer.ResultQueued, ""
		for i := range dec.Requests {
			dec.Requests[i].Trigger.DeliveryID = id
		}
	}
	return d, dec.Requests, nil
}

// readBody reads the body, at most MaxBodyBytes of it, into m, whose small
// buffer is empty, and returns the bytes read. The lease l covers a buffer
// past freeBodyBytes before any byte is read into it. A body that declares
// a length over smallBodyBytes takes its share for that length before
// anything is read, and is refused at once when it does not fit; a smaller
// or chunked body takes its share as its bytes arrive, and is refused when
// its buffer would outgrow what the budget has left. So a request that
// sends headers and no body holds nothing but a large one's share.
//
// A declared length alone allocates at most freeBodyBytes; as bytes arrive
// the buffer grows to preallocBodyBytes and then, for a larger body, moves
// to a large buffer of its class for the declared length. A body of unknown length doubles the small buffer
// up to smallBodyBytes, then moves to a large buffer of MaxBodyBytes. So a
// large body is copied once at most, into a buffer that the next large
// body can reuse.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request, m *bodyMemory, l *lease) ([]byte, *httperr.Error) {
	declared := r.ContentLength
	if declared > MaxBodyBytes {
		return nil, tooLarge()
	}
	if declared > smallBodyBytes && !l.grow(leaseSize(declared)) {
		return nil, busy(l, leaseSize(declared))
	}
	src := http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	b := (*m.small)[:0]
	room := 0 // how far b may be filled
	for {
		if len(b) == room {
			switch {
			case declared >= 0 && int64(len(b)) == declared:
				return b, nil // HTTP reads no further than the declared length
			case len(b) == MaxBodyBytes:
				return b, readEnd(src)
			}
			next := nextBodySize(len(b), declared)
			switch {
			case next > freeBodyBytes && !l.grow(leaseSize(int64(next))):
				return nil, busy(l, leaseSize(int64(next)))
			case next > smallBodyBytes:
				m.large = append(h.large.get(next), b...)
				b = m.large
			case next > cap(b):
				b = append(make([]byte, 0, next), b...)
				*m.small = b
			}
			room = next
		}
		n, err := src.Read(b[len(b):room])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return nil, readProblem(err)
		}
	}
}

// nextBodySize is the size a body's buffer grows to once n bytes fill it:
// for a declared length, first at most freeBodyBytes, then at most
// preallocBodyBytes, then the whole length; for an unknown length, twice n
// (at least minBodyChunk) up to smallBodyBytes, then MaxBodyBytes.
func nextBodySize(n int, declared int64) int {
	switch {
	case declared >= 0 && n < freeBodyBytes:
		return int(min(declared, freeBodyBytes))
	case declared >= 0 && n < preallocBodyBytes:
		return int(min(declared, preallocBodyBytes))
	case declared >= 0:
		return int(declared)
	case n < smallBodyBytes:
		return min(max(2*n, minBodyChunk), smallBodyBytes)
	}
	return MaxBodyBytes
}

// readEnd reads on after MaxBodyBytes of a body of unknown length, which
// must end there, and returns the problem if it does not.
func readEnd(src io.Reader) *httperr.Error {
	var one [1]byte
	for {
		n, err := src.Read(one[:])
		switch {
		case n > 0:
			return tooLarge()
		case err == io.EOF:
			return nil
		case err != nil:
			return readProblem(err)
		}
	}
}

// readProblem is the problem of a body that could not be read.
func readProblem(err error) *httperr.Error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return tooLarge()
	}
	return &httperr.Error{Status: http.StatusBadRequest, Message: "could not read the body", Hint: "send the whole body", Cause: err}
}

// tooLarge is the problem of a body over MaxBodyBytes.
func tooLarge() *httperr.Error {
	return &httperr.Error{Status: http.StatusRequestEntityTooLarge, Message: "body too large",
		Hint: fmt.Sprintf("deliveries are limited to %d bytes", MaxBodyBytes)}
}

// busy is the problem of a body that needs n bytes that l's budget cannot spare.
func busy(l *lease, n int64) *httperr.Error {
	return &httperr.Error{Status: http.StatusServiceUnavailable, RetryAfter: busyRetryAfter,
		Message: "too many large webhook bodies are being received at once",
		Hint: "deployd bounds the memory that webhook bodies may hold before their signature is checked, and this one did not fit; nothing was recorded. " +
			"Redeliver it from the webhook's Recent Deliveries page once the large deliveries in flight are done",
		Cause: fmt.Errorf("a body of %d bytes or more does not fit in the body budget (bodies over %d bytes may hold %d bytes in all)", n, smallBodyBytes, l.b.largeLimit)}
}

// payloadOf returns the event JSON of a raw body: the body itself, or the
// payload field of a form-encoded body.
func payloadOf(contentType string, raw []byte) ([]byte, *httperr.Error) {
	unsupported := &httperr.Error{Status: http.StatusUnsupportedMediaType, Message: "unsupported Content-Type",
		Hint: "set the GitHub webhook's content type to application/json or application/x-www-form-urlencoded"}
	if contentType == "" {
		return raw, nil
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		unsupported.Cause = err
		return nil, unsupported
	}
	switch {
	case mt == "application/json" || strings.HasSuffix(mt, "+json"):
		return raw, nil
	case mt == "application/x-www-form-urlencoded":
		form, err := url.ParseQuery(string(raw))
		if err != nil || !form.Has("payload") {
			return nil, &httperr.Error{Status: http.StatusBadRequest, Message: "form body has no payload field",
				Hint: "a form-encoded delivery carries its JSON in the payload field; send JSON with Content-Type: application/json instead", Cause: err}
		}
		return []byte(form.Get("payload")), nil
	}
	return nil, unsupported
}

// validName reports whether s is 1 to limit printable ASCII characters without spaces.
func validName(s string, limit int) bool {
	if s == "" || len(s) > limit {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// clip cuts s to at most n bytes, for logging unchecked headers.
func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// logger returns the request's logger if it carries one, else h's.
func (h *Handler) logger(r *http.Request) *zerolog.Logger {
	if l := zerolog.Ctx(r.Context()); l.GetLevel() != zerolog.Disabled {
		return l
	}
	return &h.log
}

func (h *Handler) logOutcome(log *zerolog.Logger, o *outcome, start time.Time) {
	var e *zerolog.Event
	switch {
	case o.result == resultBusy: // shedding load, not failing
		e = log.Warn()
	case o.status >= 500:
		e = log.Error()
	case o.status >= 400:
		e = log.Warn()
	default:
		e = log.Info()
	}
	if e == nil {
		return
	}
	e = e.Str(keyDeliveryID, o.id).Str(keyEvent, o.event).Str(keyAction, o.action).
		Str(keyResult, o.result).Int(keyStatus, o.status).Dur(keyDuration, h.now().Sub(start))
	if o.reason != "" {
		e = e.Str(keyReason, o.reason)
	}
	if len(o.deployments) > 0 {
		e = e.Ints64(keyDeployments, o.deployments)
	}
	if o.err != nil {
		e = e.Err(o.err)
	}
	e.Msg("webhook delivery")
}

// Response bodies of deliveries that are not refused; refusals are
// *httperr.Error.
type (
	pingBody struct {
		OK  bool   `json:"ok"`
		Zen string `json:"zen,omitempty"`
	}
	duplicateBody struct {
		Duplicate bool `json:"duplicate"`
	}
	queuedBody struct {
		Deployments []int64 `json:"deployments"`
		// Releases and Reason are there when the delivery was held for a
		// release of a release set or joined one.
		Releases []int64 `json:"releases,omitempty"`
		Reason   string  `json:"reason,omitempty"`
	}
	ignoredBody struct {
		Ignored string `json:"ignored"`
	}
)
