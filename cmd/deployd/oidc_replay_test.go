package main

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// TestEndToEndOIDCReplayAfterRestart deploys backend with a GitHub Actions
// OIDC token presented by several clients at once (one is accepted), stops deployd and starts it again on the same data_dir: the
// same token, still unexpired, is refused as already used and queues
// nothing, while a new token of the same run still deploys.
func TestEndToEndOIDCReplayAfterRestart(t *testing.T) {
	iss, s, d, v1 := startOIDCStack(t)

	// The token is presented by many clients at once: one is accepted.
	good := iss.Token(t, iss.Claims(oidcAudience))
	const clients = 8
	answers := make(chan string, clients)
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			status, _, body := d.deploy("backend", good)
			answers <- fmt.Sprintf("%d %s", status, body)
		})
	}
	wg.Wait()
	close(answers)
	accepted := 0
	for a := range answers {
		switch {
		case strings.HasPrefix(a, "202 "):
			accepted++
		case !strings.HasPrefix(a, "401 ") || !strings.Contains(a, "already used"):
			t.Errorf("one of %d concurrent uses of a token: %s, want 202 or 401 already used", clients, a)
		}
	}
	if accepted != 1 {
		t.Fatalf("%d of %d concurrent uses of one token accepted, want exactly 1", accepted, clients)
	}
	deps := d.deployments()
	if len(deps) != 1 {
		t.Fatalf("%d deployments after the valid token, want 1", len(deps))
	}
	if dep := waitDeployment(t, d, deps[0].ID); dep.State != "succeeded" || dep.Digest != v1 {
		t.Fatalf("deployment %+v, want succeeded %s", dep, v1)
	}
	if err := d.stop(); err != nil {
		t.Fatalf("stop deployd: %v", err)
	}
	logs := d.logs.String()

	d = startDeployd(t, s.config, nil)
	d.waitLog("OIDC issuer discovered")
	status, _, body := d.deploy("backend", good)
	if status != http.StatusUnauthorized || !strings.Contains(body, "already used") {
		t.Errorf("the token used before the restart, again: %d %s, want 401 saying it was already used", status, body)
	}
	if n := len(d.deployments()); n != 1 {
		t.Errorf("%d deployments after the replay, want 1 (nothing new queued)", n)
	}
	if status, _, body := d.deploy("backend", iss.Token(t, iss.Claims(oidcAudience))); status != http.StatusAccepted {
		t.Errorf("a new token after the restart: %d %s, want 202", status, body)
	}
	if strings.Contains(logs+d.logs.String(), good) {
		t.Error("the token is in deployd's log")
	}
}
