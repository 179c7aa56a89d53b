package server_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/deployd/deployd/server"
)

// writeHealth is a store whose last write failed with reason since then,
// or succeeded when reason is "".
type writeHealth struct {
	reason string
	since  time.Time
}

func (w writeHealth) WriteFailure() (string, time.Time) { return w.reason, w.since }

func TestReadyzReportsFailingWrites(t *testing.T) {
	since := time.Date(2026, 5, 1, 9, 30, 0, 0, time.FixedZone("CEST", 2*3600))
	for _, tc := range []struct {
		name       string
		writes     server.WriteHealth
		queue      server.Queue
		wantStatus int
		want       map[string]string
	}{
		{"writes succeed", writeHealth{}, drainFlag(false), http.StatusOK, map[string]string{"status": "ready"}},
		{"writes fail", writeHealth{"database or disk is full", since}, drainFlag(false), http.StatusServiceUnavailable,
			map[string]string{"status": "store writes fail", "reason": "database or disk is full", "since": "2026-05-01T07:30:00Z"}},
		{"draining wins", writeHealth{"database or disk is full", since}, drainFlag(true), http.StatusServiceUnavailable,
			map[string]string{"status": "draining"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := server.New(server.Config{Webhook: okWebhook, Reads: server.Reads{Store: pingReader{}, WriteHealth: tc.writes}, Queue: tc.queue, Logger: zerolog.Nop()})
			if err != nil {
				t.Fatal(err)
			}
			rec := httptest.NewRecorder()
			srv.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
			var got map[string]string
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatalf("%s: %v", rec.Body, err)
			}
			if rec.Code != tc.wantStatus || len(got) != len(tc.want) {
				t.Fatalf("GET /readyz: %d %v, want %d %v", rec.Code, got, tc.wantStatus, tc.want)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
		})
	}
}
