package httperr_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5/middleware"
	"github.com/rs/zerolog"

	"github.com/deployd/deployd/deployer"
	"github.com/deployd/deployd/server/httperr"
)

func TestWrite(t *testing.T) {
	cause := errors.New("open /var/lib/deployd/deployd.db: disk I/O error")
	tests := []struct {
		name      string
		err       error
		status    int
		body      map[string]any
		header    map[string]string
		logsCause bool
	}{
		{"error", fmt.Errorf("deploy: %w", &httperr.Error{Status: http.StatusForbidden, Message: "no", Hint: "ask", Challenge: `Bearer realm="deployd"`}),
			http.StatusForbidden, map[string]any{"error": "no", "hint": "ask", "request_id": "rq-1"},
			map[string]string{"WWW-Authenticate": `Bearer realm="deployd"`}, false},
		{"busy", &httperr.Error{Status: http.StatusServiceUnavailable, Message: "busy", RetryAfter: "10", Cause: cause},
			http.StatusServiceUnavailable, map[string]any{"error": "busy", "request_id": "rq-1"},
			map[string]string{"Retry-After": "10"}, false},
		{"method", &httperr.Error{Status: http.StatusMethodNotAllowed, Message: "method not allowed", Allow: http.MethodPost},
			http.StatusMethodNotAllowed, map[string]any{"error": "method not allowed", "request_id": "rq-1"},
			map[string]string{"Allow": http.MethodPost}, false},
		{"deployment", &httperr.Error{Status: http.StatusBadGateway, Message: "failed", Deployment: &deployer.Deployment{ID: 7}},
			http.StatusBadGateway, nil, nil, false},
		{"not found", fmt.Errorf("get: %w", deployer.ErrNotFound),
			http.StatusNotFound, map[string]any{"error": "not found", "request_id": "rq-1"}, nil, false},
		{"bad tag", fmt.Errorf("%w: \"v 1\"", deployer.ErrBadTag),
			http.StatusBadRequest, map[string]any{"error": deployer.ErrBadTag.Error() + `: "v 1"`, "request_id": "rq-1"}, nil, false},
		{"draining", deployer.ErrDraining,
			http.StatusServiceUnavailable, map[string]any{"error": "deployd is shutting down", "hint": "retry once it is back", "request_id": "rq-1"}, nil, false},
		{"internal", cause,
			http.StatusInternalServerError, map[string]any{"error": "internal error", "hint": "see deployd's log for this request id", "request_id": "rq-1"}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var log bytes.Buffer
			ctx := zerolog.New(&log).WithContext(context.WithValue(context.Background(), middleware.RequestIDKey, "rq-1"))
			r := httptest.NewRequest(http.MethodGet, "/x", nil).WithContext(ctx)
			w := httptest.NewRecorder()
			httperr.Write(w, r, tt.err)

			if w.Code != tt.status || w.Header().Get("Content-Type") != "application/json; charset=utf-8" {
				t.Errorf("status %d %q, want %d JSON", w.Code, w.Header().Get("Content-Type"), tt.status)
			}
			for k, v := range tt.header {
				if got := w.Header().Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			var got map[string]any
			if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
				t.Fatalf("%s: %v", w.Body, err)
			}
			if tt.body != nil && fmt.Sprint(got) != fmt.Sprint(tt.body) {
				t.Errorf("body %v, want %v", got, tt.body)
			}
			if tt.body == nil {
				if d, _ := got["deployment"].(map[string]any); d == nil || d["id"] != float64(7) {
					t.Errorf("body %v, want the deployment", got)
				}
			}
			if strings.Contains(w.Body.String(), "disk I/O") {
				t.Errorf("the cause reached the client: %s", w.Body)
			}
			if logged := strings.Contains(log.String(), "disk I/O"); logged != tt.logsCause {
				t.Errorf("cause logged = %v, want %v: %s", logged, tt.logsCause, log.String())
			}
		})
	}
}
