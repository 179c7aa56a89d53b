package server

import (
	"context"
	"crypto/rand"
	"log"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/go-chi/chi/v5/middleware"
	"github.com/rs/zerolog"

	"github.com/deployd/deployd/server/httperr"
)

// requestIDHeader carries the request id in both directions.
const requestIDHeader = "X-Request-Id"

// maxRequestIDLen bounds a client-supplied request id.
const maxRequestIDLen = 64

// requestID gives every request an id, kept under chi's RequestIDKey so
// middleware.GetReqID finds it, and echoes it in the X-Request-Id response
// header. A client's X-Request-Id is kept only when it is 1–64 characters
// of [A-Za-z0-9._-], so nothing a client sends reaches the log or the
// response unchecked; otherwise a random id is generated.
func requestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(requestIDHeader)
		if !validRequestID(id) {
			id = rand.Text()
		}
		w.Header().Set(requestIDHeader, id)
		ctx := context.WithValue(r.Context(), middleware.RequestIDKey, id)
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// validRequestID reports whether a client-supplied request id is safe to
// log and echo: 1–64 characters of [A-Za-z0-9._-].
func validRequestID(id string) bool {
	if id == "" || len(id) > maxRequestIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// accessLog puts a request-scoped logger in the context and logs one line
// per request: method, path, status, size, duration, request id. Never the
// body, the query string or headers, which may carry secrets.
func (s *Server) accessLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		reqLog := s.log.With().Str("request_id", middleware.GetReqID(r.Context())).Logger()
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		next.ServeHTTP(ww, r.WithContext(reqLog.WithContext(r.Context())))
		status := ww.Status()
		if status == 0 {
			status = http.StatusOK
		}
		ev := reqLog.Debug()
		if status >= 500 {
			ev = reqLog.Warn()
		} else if r.URL.Path != "/healthz" && r.URL.Path != "/readyz" && r.URL.Path != "/metrics" {
			ev = reqLog.Info()
		}
		ev.Str("method", r.Method).Str("path", r.URL.Path).Int("status", status).
			Int("bytes", ww.BytesWritten()).Dur("duration", time.Since(start)).Msg("http request")
	})
}

// recoverPanics turns a panic in a handler into a logged 500.
func (s *Server) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				zerolog.Ctx(r.Context()).Error().Interface("panic", v).Bytes("stack", debug.Stack()).Msg("handler panicked")
				httperr.Write(w, r, &httperr.Error{Status: http.StatusInternalServerError, Message: "internal error",
					Hint: "see deployd's log for this request id"})
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// httpErrorLog routes net/http's own error log into zerolog.
func httpErrorLog(l zerolog.Logger) *log.Logger {
	return log.New(l.With().Str("component", "http").Logger(), "", 0)
}
