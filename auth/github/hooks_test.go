package github_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/deployd/deployd/auth/github"
	"github.com/deployd/deployd/auth/github/githubtest"
)

// The delivery log is read page by page, newest first, through the cursor
// of the Link header, and a redelivery request makes GitHub send the
// delivery again, signed, to the hook.
func TestHookDeliveriesAndRedeliver(t *testing.T) {
	e := newEnv(t)
	var mu sync.Mutex
	var got []string
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Header.Get("X-GitHub-Delivery")+" "+r.Header.Get("X-Hub-Signature-256"))
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(hook.Close)
	e.gh.SetHook(hook.URL, []byte("hook-secret"))
	for i := range 5 {
		e.gh.LogFailedDelivery(githubtest.HookDelivery{GUID: fmt.Sprintf("guid-%d", i), Event: "registry_package", Action: "published", Body: []byte(`{}`)}, 502)
		e.clock.Add(time.Minute)
	}

	ctx := context.Background()
	var all []github.HookDelivery
	cursor, pages := "", 0
	for {
		page, next, err := e.app.HookDeliveries(ctx, cursor, 2)
		if err != nil {
			t.Fatal(err)
		}
		all, pages = append(all, page...), pages+1
		if next == "" {
			break
		}
		cursor = next
	}
	if pages != 3 || len(all) != 5 {
		t.Fatalf("read %d attempts in %d pages, want 5 in 3", len(all), pages)
	}
	for i, d := range all {
		if want := fmt.Sprintf("guid-%d", 4-i); d.GUID != want || d.StatusCode != 502 || d.Arrived() || d.Event != "registry_package" || d.Redelivery {
			t.Errorf("attempt %d = %+v, want %s failed with 502", i, d, want)
		}
		if i > 0 && !d.DeliveredAt.Before(all[i-1].DeliveredAt) {
			t.Errorf("attempt %d at %v is not older than the one before (%v)", i, d.DeliveredAt, all[i-1].DeliveredAt)
		}
	}

	if err := e.app.Redeliver(ctx, all[0].ID); err != nil {
		t.Fatalf("redeliver: %v", err)
	}
	mu.Lock()
	sent := slices.Clone(got)
	mu.Unlock()
	mac := hmac.New(sha256.New, []byte("hook-secret"))
	mac.Write([]byte(`{}`))
	if len(sent) != 1 || sent[0] != "guid-4 sha256="+hex.EncodeToString(mac.Sum(nil)) {
		t.Errorf("hook received %q, want guid-4 signed once", sent)
	}
	page, _, err := e.app.HookDeliveries(ctx, "", 1)
	if err != nil || len(page) != 1 || page[0].GUID != "guid-4" || !page[0].Redelivery || !page[0].Arrived() {
		t.Errorf("newest attempt after the redelivery = %+v, %v; want guid-4's redelivery, arrived", page, err)
	}

	// GitHub's failures are *Error, naming the request.
	e.gh.SetHookLogDown(true)
	var ge *github.Error
	if _, _, err := e.app.HookDeliveries(ctx, "", 10); !errors.As(err, &ge) || ge.Status != http.StatusInternalServerError {
		t.Errorf("log down: %v, want a *github.Error with status 500", err)
	}
	if err := e.app.Redeliver(ctx, 999); !errors.As(err, &ge) || ge.Status != http.StatusNotFound {
		t.Errorf("redeliver an unknown attempt: %v, want a *github.Error with status 404", err)
	}
}
