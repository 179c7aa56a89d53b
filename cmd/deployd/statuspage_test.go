package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/deployd/deployd/auth/registry"
)

// TestServeStatusPageAndEvents checks the wiring of the status page: the
// page renders, webhook deliveries and the deployments they queue reach the
// event stream, and stopping deployd ends an open stream instead of
// waiting for it.
func TestServeStatusPageAndEvents(t *testing.T) {
	d := startDeployd(t, intakeConfig(t, t.TempDir()), nil)

	res, err := http.Get(d.url("/"))
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Security-Policy") == "" ||
		!strings.Contains(string(page), `data-service="backend"`) || !strings.Contains(string(page), "Registry credentials") {
		t.Fatalf("GET / = %d %v:\n%s", res.StatusCode, res.Header, page)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, d.url("/api/v1/events"), nil)
	stream, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close()
	events := make(chan string, 100)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(stream.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if name, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
				events <- name
			} else if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				switch {
				case strings.Contains(data, `"state":"running"`):
					events <- "running"
				case strings.Contains(data, `"result":"duplicate"`):
					events <- "duplicate"
				}
			}
		}
	}()
	wait := func(want string) {
		t.Helper()
		for {
			select {
			case name, ok := <-events:
				if !ok {
					t.Fatalf("stream ended before a %s event", want)
				}
				if name == want {
					return
				}
			case <-ctx.Done():
				t.Fatalf("no %s event", want)
			}
		}
	}
	wait("service") // the initial state

	if status, body := d.post(testSecret, delivery{event: "registry_package", id: "d-page-1",
		body: fixture(t, "registry_package.published.container-tagged.json")}); status != http.StatusAccepted {
		t.Fatalf("webhook: %d %s", status, body)
	}
	wait("delivery")
	wait("running") // the queue claimed it; the registry then refuses, which is fine here

	// A duplicate is recorded, so it is announced too.
	if status, body := d.post(testSecret, delivery{event: "registry_package", id: "d-page-1",
		body: fixture(t, "registry_package.published.container-tagged.json")}); status != http.StatusOK {
		t.Fatalf("redelivery: %d %s", status, body)
	}
	wait("duplicate")

	// Stopping ends the stream at once, while deployments still drain.
	stopped := make(chan struct{})
	go func() { d.stop(); close(stopped) }()
	ended := time.After(5 * time.Second)
	for open := true; open; {
		select {
		case _, open = <-events:
		case <-ended:
			t.Fatal("the event stream stayed open after deployd began to stop")
		}
	}
	<-stopped
}

func TestCredentialReport(t *testing.T) {
	if c := credentialHealth(nil, nil); c.Sources != nil || c.Tokens != nil {
		t.Errorf("no chain, no App: %+v", c)
	}
	chain, err := registry.NewChain(registry.ChainConfig{Registries: map[string]registry.HostConfig{
		"registry.example": {Sources: []string{registry.SourceNone}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	c := credentialHealth(nil, chain)
	if c.Tokens != nil {
		t.Errorf("no App, yet tokens are reported")
	}
	if rep := c.Sources(); len(rep) != 1 || rep[0].Host != "registry.example" || rep[0].State != registry.HealthUnknown {
		t.Errorf("report = %+v", rep)
	}
}
