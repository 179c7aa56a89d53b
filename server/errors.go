package server

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
	// Deployment, if set, is the deployment the error is about (a failed
	// deploy answered after ?wait), sent with the error.
	Deployment *deployer.Deployment
}

// Error returns the message shown to the client.
func (e *Error) Error() string { return e.Message }

// errorBody is the JSON form of every error deployd's HTTP API returns.
type errorBody struct {
	Error     string `json:"error"`
	Hint      string `json:"hint,omitempty"`
	RequestID string `json:"request_id,omitempty"`
	// Deployment is set for errors about one deployment.
	Deployment *deployer.Deployment `json:"deployment,omitempty"`
}

// writeError is the one place where errors become HTTP responses. Errors
// the client should see are *Error; anything else is logged with its cause
// and answered 500 with the request id only.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var e *Error
	switch {
	case errors.As(err, &e):
	case errors.Is(err, deployer.ErrNotFound):
		e = &Error{Status: http.StatusNotFound, Message: "not found"}
	case errors.Is(err, deployer.ErrDraining):
		e = &Error{Status: http.StatusServiceUnavailable, Message: "deployd is shutting down",
			Hint: "retry once it is back"}
	default:
		zerolog.Ctx(r.Context()).Error().Err(err).Str("path", r.URL.Path).Msg("request failed")
		e = &Error{Status: http.StatusInternalServerError, Message: "internal error",
			Hint: "see deployd's log for this request id"}
	}
	if e.Challenge != "" {
		w.Header().Set("WWW-Authenticate", e.Challenge)
	}
	writeJSON(w, e.Status, errorBody{Error: e.Message, Hint: e.Hint, RequestID: middleware.GetReqID(r.Context()), Deployment: e.Deployment})
}

// writeJSON writes v as JSON with the status code.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(true)
	_ = enc.Encode(v) // the client went away; nothing to do
}

func (s *Server) notFound(w http.ResponseWriter, r *http.Request) {
	s.writeError(w, r, &Error{Status: http.StatusNotFound, Message: "no such endpoint: " + r.URL.Path,
		Hint: "see the API section of deployd's README"})
}

func (s *Server) methodNotAllowed(w http.ResponseWriter, r *http.Request) {
	s.writeError(w, r, &Error{Status: http.StatusMethodNotAllowed, Message: "method " + r.Method + " is not allowed on " + r.URL.Path})
}
