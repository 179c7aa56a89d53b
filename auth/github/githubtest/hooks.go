package githubtest

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"
)

// HookDelivery is a webhook delivery of the fake App: what GitHub stores to
// show it in the delivery log and to send it again.
type HookDelivery struct {
	// GUID is the X-GitHub-Delivery; Event the X-GitHub-Event.
	GUID, Event, Action string
	// Body is the JSON payload, signed with the hook's secret when sent.
	Body []byte
}

// HookAttempt is one entry of the fake's delivery log.
type HookAttempt struct {
	ID          int64
	GUID        string
	DeliveredAt time.Time
	Redelivery  bool
	// StatusCode is the receiver's answer; 0 when it could not be reached.
	StatusCode int
	Event      string
	Action     string
}

// hookLog is the fake App's webhook: where it sends, the secret it signs
// with, and every attempt, oldest first.
type hookLog struct {
	url       string
	secret    []byte
	attempts  []HookAttempt
	bodies    map[string]HookDelivery // by GUID
	down      bool                    // the log answers 500
	requested []string                // GUIDs of redelivery requests, in order
}

// SetHook sets where the fake App's webhook deliveries go and the secret
// they are signed with (X-Hub-Signature-256).
func (f *FakeGitHub) SetHook(url string, secret []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hooks.url, f.hooks.secret = url, slices.Clone(secret)
}

// LogFailedDelivery puts d in the delivery log as an attempt that failed
// with status (0: the receiver was unreachable) at the fake's current time,
// without sending it, as when deployd was down, and returns the attempt's id.
func (f *FakeGitHub) LogFailedDelivery(d HookDelivery, status int) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.logAttempt(d, status, false)
}

// Deliver sends d to the hook, signed, as GitHub does, logs the attempt and
// returns the receiver's status (0 and the error when it could not be
// reached).
func (f *FakeGitHub) Deliver(d HookDelivery) (int, error) {
	f.mu.Lock()
	target, secret := f.hooks.url, f.hooks.secret
	f.mu.Unlock()
	status, err := send(target, secret, d)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logAttempt(d, status, false)
	return status, err
}

// SetHookLogDown makes GET /app/hook/deliveries answer 500 (down) or
// answer normally again.
func (f *FakeGitHub) SetHookLogDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hooks.down = down
}

// HookAttempts returns the delivery log, oldest first.
func (f *FakeGitHub) HookAttempts() []HookAttempt {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.hooks.attempts)
}

// RedeliveryRequests returns the GUIDs of every redelivery asked for
// (POST /app/hook/deliveries/{id}/attempts), in order.
func (f *FakeGitHub) RedeliveryRequests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.hooks.requested)
}

// logAttempt appends an attempt for d; f.mu must be held.
func (f *FakeGitHub) logAttempt(d HookDelivery, status int, redelivery bool) int64 {
	if f.hooks.bodies == nil {
		f.hooks.bodies = make(map[string]HookDelivery)
	}
	f.hooks.bodies[d.GUID] = HookDelivery{GUID: d.GUID, Event: d.Event, Action: d.Action, Body: slices.Clone(d.Body)}
	a := HookAttempt{
		ID:          int64(len(f.hooks.attempts) + 1),
		GUID:        d.GUID,
		DeliveredAt: f.clock().UTC().Truncate(time.Second),
		Redelivery:  redelivery,
		StatusCode:  status,
		Event:       d.Event,
		Action:      d.Action,
	}
	f.hooks.attempts = append(f.hooks.attempts, a)
	return a.ID
}

// send POSTs d to target signed with secret and returns the status.
func send(target string, secret []byte, d HookDelivery) (int, error) {
	if target == "" {
		return 0, fmt.Errorf("deliver %s: no hook URL set", d.GUID)
	}
	req, err := http.NewRequest(http.MethodPost, target, bytes.NewReader(d.Body))
	if err != nil {
		return 0, fmt.Errorf("deliver %s: %w", d.GUID, err)
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(d.Body)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "GitHub-Hookshot/fake")
	req.Header.Set("X-GitHub-Event", d.Event)
	req.Header.Set("X-GitHub-Delivery", d.GUID)
	req.Header.Set("X-GitHub-Hook-Installation-Target-Type", "integration")
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("deliver %s: %w", d.GUID, err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// listHookDeliveries answers GET /app/hook/deliveries: newest first,
// per_page (default 30, at most 100) a page, the next page's cursor in the
// Link header.
func (f *FakeGitHub) listHookDeliveries(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	perPage := 30
	if s := q.Get("per_page"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 100 {
			writeError(w, http.StatusUnprocessableEntity, "Validation Failed")
			return
		}
		perPage = n
	}
	start := 0
	if c := q.Get("cursor"); c != "" {
		n, err := strconv.Atoi(c)
		if err != nil || n < 0 {
			writeError(w, http.StatusUnprocessableEntity, "Validation Failed")
			return
		}
		start = n
	}
	f.mu.Lock()
	down := f.hooks.down
	newest := slices.Clone(f.hooks.attempts)
	f.mu.Unlock()
	if down {
		writeError(w, http.StatusInternalServerError, "Server Error")
		return
	}
	slices.Reverse(newest)
	start = min(start, len(newest))
	end := min(start+perPage, len(newest))
	page := make([]map[string]any, 0, end-start)
	for _, a := range newest[start:end] {
		status := "OK"
		if a.StatusCode == 0 {
			status = "Invalid HTTP Response: 0"
		} else if a.StatusCode < 200 || a.StatusCode > 299 {
			status = "Invalid HTTP Response: " + strconv.Itoa(a.StatusCode)
		}
		page = append(page, map[string]any{
			"id": a.ID, "guid": a.GUID, "delivered_at": a.DeliveredAt.Format(time.RFC3339),
			"redelivery": a.Redelivery, "duration": 0.1, "status": status, "status_code": a.StatusCode,
			"event": a.Event, "action": a.Action, "installation_id": nil, "repository_id": nil,
		})
	}
	if end < len(newest) {
		next := *r.URL
		nq := next.Query()
		nq.Set("per_page", strconv.Itoa(perPage))
		nq.Set("cursor", strconv.Itoa(end))
		next.RawQuery = nq.Encode()
		link := (&url.URL{Scheme: "http", Host: r.Host, Path: next.Path, RawQuery: next.RawQuery}).String()
		w.Header().Set("Link", "<"+link+`>; rel="next"`)
	}
	writeJSON(w, http.StatusOK, page)
}

// redeliver answers POST /app/hook/deliveries/{id}/attempts: it sends the
// attempt's delivery again, as GitHub does, logs the new attempt as a
// redelivery and answers 202.
func (f *FakeGitHub) redeliver(w http.ResponseWriter, r *http.Request) {
	id, _ := strconv.ParseInt(r.PathValue("id"), 10, 64)
	f.mu.Lock()
	var d HookDelivery
	known := id >= 1 && id <= int64(len(f.hooks.attempts))
	if known {
		d = f.hooks.bodies[f.hooks.attempts[id-1].GUID]
		f.hooks.requested = append(f.hooks.requested, d.GUID)
	}
	target, secret := f.hooks.url, f.hooks.secret
	f.mu.Unlock()
	if !known {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	status, _ := send(target, secret, d)
	f.mu.Lock()
	f.logAttempt(d, status, true)
	f.mu.Unlock()
	writeJSON(w, http.StatusAccepted, map[string]any{})
}
