// Package httperr is deployd's one mapping from errors to HTTP responses,
// shared by the server and by the webhook handler it mounts (which cannot
// import the server). An Error carries the status, the message the client
// may see and a hint; Write turns any error into the JSON answer
// {"error", "hint", "request_id"}, logging what the client must not see.
//
// It imports only deployer of deployd's packages.
package httperr

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/go-chi/chi/v5/middleware"
	"github.com/rs/zerolog"

	"github.com/deployd/deployd/deployer"
)

// Error is an error with a status code and a message that is safe to show
// to the client, plus a hint that says what to do about it.
type Error struct {
	Status  int
	Message string
	Hint    string
	// Challenge, if set, is sent as the WWW-Authenticate header (401, 403).
	Challenge string
	// RetryAfter, if set, is sent as the Retry-After header (a 503 that
	// asks to come back later).
	RetryAfter string
	// Allow, if set, is sent as the Allow header (405).
	Allow string
	// Deployment, if set, is the deployment the error is about (a failed
	// deploy answered after ?wait), sent with the error.
	Deployment *deployer.Deployment
	// Cause is what went wrong inside, for the log; it is never sent.
	Cause error
}

// Error returns the message shown to the client.
func (e *Error) Error() string { return e.Message }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Cause }

// body is the JSON form of every error deployd's HTTP API returns.
type body struct {
	Error     string `json:"error"`
	Hint      string `json:"hint,omitempty"`
	RequestID string `json:"request_id,omitempty"`
	// Deployment is set for errors about one deployment.
	Deployment *deployer.Deployment `json:"deployment,omitempty"`
}

// Write is the one place where errors become HTTP responses. Errors the
// client should see are *Error; deployer.ErrNotFound is 404, a request's
// deployer.ErrBadTag, ErrBadDigest and ErrNoTagOrRef 400 with their text,
// and deployer.ErrDraining 503; anything else is logged with its cause (to the
// request's zerolog logger) and answered 500 with the request id only. The
// body carries the request id that chi's middleware.GetReqID finds, if any.
func Write(w http.ResponseWriter, r *http.Request, err error) {
	var e *Error
	switch {
	case errors.As(err, &e):
	case errors.Is(err, deployer.ErrNotFound):
		e = &Error{Status: http.StatusNotFound, Message: "not found"}
	case errors.Is(err, deployer.ErrBadTag), errors.Is(err, deployer.ErrBadDigest), errors.Is(err, deployer.ErrNoTagOrRef):
		// A request that names no valid tag or digest: its own text says which.
		e = &Error{Status: http.StatusBadRequest, Message: err.Error()}
	case errors.Is(err, deployer.ErrDraining):
		e = &Error{Status: http.StatusServiceUnavailable, Message: "deployd is shutting down",
			Hint: "retry once it is back"}
	default:
		zerolog.Ctx(r.Context()).Error().Err(err).Str("path", r.URL.Path).Msg("request failed")
		e = &Error{Status: http.StatusInternalServerError, Message: "internal error",
			Hint: "see deployd's log for this request id"}
	}
	h := w.Header()
	if e.Challenge != "" {
		h.Set("WWW-Authenticate", e.Challenge)
	}
	if e.RetryAfter != "" {
		h.Set("Retry-After", e.RetryAfter)
	}
	if e.Allow != "" {
		h.Set("Allow", e.Allow)
	}
	WriteJSON(w, e.Status, body{Error: e.Message, Hint: e.Hint, RequestID: middleware.GetReqID(r.Context()), Deployment: e.Deployment})
}

// WriteJSON writes v as JSON with the status code: how every JSON answer
// of deployd is written, errors included.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(true)
	_ = enc.Encode(v) // the client went away; nothing to do
}
