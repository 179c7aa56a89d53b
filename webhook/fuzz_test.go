package webhook

import (
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// fixtureSeeds adds every fixture in testdata with the event its name gives.
func fixtureSeeds(f *testing.F, add func(event string, body []byte)) {
	names, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil || len(names) == 0 {
		f.Fatalf("no fixtures: %v", err)
	}
	for _, n := range names {
		body, err := os.ReadFile(n)
		if err != nil {
			f.Fatal(err)
		}
		add(strings.SplitN(filepath.Base(n), ".", 2)[0], body)
	}
}

func FuzzMatch(f *testing.F) {
	fixtureSeeds(f, func(event string, body []byte) { f.Add(event, body) })
	cfg := testConfig()
	m := newTestMatcher(f, cfg)
	f.Fuzz(func(t *testing.T, event string, body []byte) {
		d, err := m.Match(event, body)
		if err != nil {
			if !errors.Is(err, ErrMalformedPayload) {
				t.Fatalf("error %v does not wrap ErrMalformedPayload", err)
			}
			return
		}
		if (len(d.Requests) == 0) == (d.Reason == "") {
			t.Fatalf("decision %+v: a reason must be given exactly when nothing deploys", d)
		}
		if !sort.SliceIsSorted(d.Requests, func(i, j int) bool { return d.Requests[i].Service < d.Requests[j].Service }) {
			t.Fatalf("requests not sorted: %+v", d.Requests)
		}
		seen := map[string]bool{}
		for _, r := range d.Requests {
			if err := r.Validate(); err != nil {
				t.Fatalf("request %+v: %v", r, err)
			}
			if cfg.Services[r.Service] == nil || seen[r.Service] {
				t.Fatalf("request names unknown or repeated service %q", r.Service)
			}
			seen[r.Service] = true
			if r.Trigger.Event != event {
				t.Fatalf("trigger event %q, want %q", r.Trigger.Event, event)
			}
		}
	})
}

func FuzzHandler(f *testing.F) {
	fixtureSeeds(f, func(event string, body []byte) { f.Add(event, "application/json", body) })
	f.Add(EventPackage, "application/x-www-form-urlencoded", []byte("payload=%7B%7D"))
	f.Add(EventPing, "application/x-www-form-urlencoded", []byte("payload=%zz"))
	f.Add(EventWorkflowRun, "", []byte(`{"action":"completed","workflow_run":{}}`))
	f.Fuzz(func(t *testing.T, event, contentType string, body []byte) {
		rec := &fakeRecorder{}
		h := newTestHandler(t, rec, nil)
		r := delivery(event, "fuzz-1", body)
		r.Header.Set("Content-Type", contentType)
		w := serve(h, r)
		switch {
		case w.Code >= 500:
			t.Fatalf("status %d: %s", w.Code, w.Body)
		case w.Code >= 400 && rec.count() != 0:
			t.Fatalf("status %d but recorded %+v", w.Code, rec.got)
		case w.Code < 400 && rec.count() != 1:
			t.Fatalf("status %d but recorded %d deliveries", w.Code, rec.count())
		}
		var answer map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &answer); err != nil {
			t.Fatalf("answer %q is not JSON: %v", w.Body, err)
		}
		if w.Code == http.StatusBadRequest || w.Code == http.StatusUnsupportedMediaType {
			return
		}
		if w.Code != http.StatusOK && w.Code != http.StatusAccepted {
			t.Fatalf("unexpected status %d: %s", w.Code, w.Body)
		}
		if w.Code == http.StatusAccepted {
			for _, req := range rec.reqs[0] {
				if req.Trigger.DeliveryID != "fuzz-1" {
					t.Fatalf("request %+v lacks the delivery id", req)
				}
			}
		}
	})
}
