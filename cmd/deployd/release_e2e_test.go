package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/deployd/deployd/deployer"
	"github.com/deployd/deployd/deployer/podmantest"
)

// releaseStack is the end-to-end stack with a second service, web, and
// the release set v7 = [backend, web].
type releaseStack struct {
	*stack
	webImage string
	webPort  int
}

func newReleaseStack(t *testing.T) *releaseStack {
	t.Helper()
	webPort := podmantest.FreePort(t)
	// The registry's host is only known once it runs: web's image is
	// written with a placeholder that newStack's registry replaces below.
	rs := &releaseStack{webPort: webPort}
	extra := fmt.Sprintf(`
  web:
    image: REGISTRY/acme-corp/v7/web
    repository: Acme-Corp/v7
    tags: ["latest", "sha-*"]
    on:
      workflow_run: {workflows: ["CI/CD"], branches: ["main"], tag: "sha-{{.ShortSHA}}"}
    container:
      name: e2e-web
      args: ["--network", "host", "-e", "PORT=%d"]
    health: {url: "http://127.0.0.1:%d/healthz", timeout: 4s, interval: 200ms}
release_sets:
  v7:
    services: [backend, web]
    wait: 10m
`, webPort, webPort)
	rs.stack = newStack(t, stackOptions{extraConfig: extra})
	rs.webImage = rs.reg.Image("acme-corp/v7/web")
	b, err := os.ReadFile(rs.config)
	if err != nil {
		t.Fatal(err)
	}
	host, _, _ := strings.Cut(rs.webImage, "/")
	writeFile(t, filepath.Dir(rs.config), filepath.Base(rs.config), strings.ReplaceAll(string(b), "REGISTRY/", host+"/"), 0o600)
	return rs
}

// pushWeb builds and pushes a web image; unhealthy ones fail /healthz.
func (s *releaseStack) pushWeb(tag, version string, unhealthy bool) string {
	s.t.Helper()
	return s.podman.BuildApp(s.t, s.webImage+":"+tag, version,
		podmantest.AppOptions{Username: s.reg.PushUser, Password: s.reg.PushPassword, Unhealthy: unhealthy})
}

func (s *releaseStack) webVersion() string { return versionAt(s.webPort) }

// runEvent is a successful CI/CD run on main of Acme-Corp/v7 for commit.
func runEvent(t *testing.T, commit string, runID int64) []byte {
	return edit(t, fixture(t, "workflow_run.completed.json"), func(m map[string]any) {
		wr := dig(m, "workflow_run")
		wr["name"], wr["head_branch"], wr["head_sha"], wr["event"] = "CI/CD", "main", commit, "push"
		wr["id"], wr["run_number"] = float64(runID), float64(runID)
		dig(m, "repository")["full_name"] = "Acme-Corp/v7"
		dig(m, "workflow_run", "head_repository")["full_name"] = "Acme-Corp/v7"
		m["installation"] = map[string]any{"id": float64(fixtureInstallation)}
	})
}

// accepted posts a delivery that must be answered 202.
func (i *instance) accepted(d delivery) string {
	i.t.Helper()
	status, body := i.post(testSecret, d)
	if status != http.StatusAccepted {
		i.t.Fatalf("webhook answered %d %s, want 202", status, body)
	}
	return body
}

// queuedAnswer is the webhook's 202 answer.
type queuedAnswer struct {
	Deployments []int64 `json:"deployments"`
	Releases    []int64 `json:"releases"`
	Reason      string  `json:"reason"`
}

func decodeAnswer(t *testing.T, body string) queuedAnswer {
	t.Helper()
	var a queuedAnswer
	if err := json.Unmarshal([]byte(body), &a); err != nil || a.Deployments == nil {
		t.Fatalf("webhook answer %s: %v", body, err)
	}
	return a
}

// deliveryEvents follows the event stream and sends on the channel each
// delivery event's delivery, until the test ends.
func deliveryEvents(t *testing.T, d *instance) <-chan deployer.Delivery {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, d.url("/api/v1/events"), nil)
	stream, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	out := make(chan deployer.Delivery, 16)
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); stream.Body.Close(); <-done })
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stream.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		name := ""
		for sc.Scan() {
			line := sc.Text()
			if n, ok := strings.CutPrefix(line, "event: "); ok {
				name = n
			} else if data, ok := strings.CutPrefix(line, "data: "); ok && name == "delivery" {
				var del deployer.Delivery
				if json.Unmarshal([]byte(data), &del) == nil {
					select {
					case out <- del:
					case <-ctx.Done():
						return
					}
				}
			}
		}
	}()
	// Do returned with the headers, which the server sends once the stream
	// is subscribed: no later delivery is missed.
	return out
}

// waitRelease polls GET /api/v1/releases until release id ends.
func waitRelease(t *testing.T, d *instance, id int64) deployer.Release {
	t.Helper()
	deadline := time.Now().Add(4 * time.Minute)
	for {
		var page struct {
			Releases []deployer.Release `json:"releases"`
		}
		d.getJSON("/api/v1/releases?set=v7", http.StatusOK, &page)
		for _, r := range page.Releases {
			if r.ID == id && r.State.Final() {
				return r
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("release %d did not end within 4 minutes: %+v", id, page.Releases)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// runningImage is the image the container named name runs, as podman has it.
func (s *releaseStack) runningImage(name string) string {
	s.t.Helper()
	out, err := s.podman.Run(context.Background(), "inspect", "--format", "{{.ImageName}}", name)
	if err != nil {
		s.t.Fatalf("podman inspect %s: %v", name, err)
	}
	return strings.TrimSpace(out)
}

// Two services in a release set go live together at the images of one
// commit; when the second fails its health check, the first goes back to
// the digest of the set's previous release, and the release is
// rolled_back naming the failing member. Everything is real but GitHub.
func TestEndToEndReleaseSet(t *testing.T) {
	s := newReleaseStack(t)
	d := startDeployd(t, s.config, nil)
	const (
		commit1 = "1111111aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		commit2 = "2222222bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	)

	// 1. The run of commit 1 deploys both members at sha-1111111.
	b1, w1 := s.push("sha-1111111", "backend-1"), s.pushWeb("sha-1111111", "web-1", false)
	answers := []string{d.accepted(delivery{event: "workflow_run", id: "release-run-1", body: runEvent(t, commit1, 1001)})}
	// The answer says the run was taken: it queued release 1.
	if a := decodeAnswer(t, answers[0]); len(a.Deployments) != 0 || !slices.Equal(a.Releases, []int64{1}) ||
		!strings.Contains(a.Reason, "release 1 of set v7 (commit 1111111) queued") {
		t.Errorf("run 1 answered %s, want release 1 queued", answers[0])
	}
	rel := waitRelease(t, d, 1)
	if rel.State != deployer.ReleaseSucceeded || rel.Commit != commit1 || len(rel.Members) != 2 {
		t.Fatalf("release 1: %+v", rel)
	}
	if s.version() != "backend-1" || s.webVersion() != "web-1" {
		t.Fatalf("after release 1: backend %q, web %q", s.version(), s.webVersion())
	}
	if got := s.runningImage("e2e-backend"); !strings.HasSuffix(got, "@"+b1) {
		t.Errorf("backend runs %s, want %s", got, b1)
	}
	for _, m := range rel.Members {
		var dep deployer.Deployment
		d.getJSON(fmt.Sprintf("/api/v1/deployments/%d", m.DeploymentID), http.StatusOK, &dep)
		want := map[string]string{"backend": b1, "web": w1}[m.Service]
		if dep.ReleaseID != 1 || dep.State != deployer.StateSucceeded || dep.Digest != want || m.Digest != want {
			t.Errorf("member %s: deployment %+v, member %+v; want release 1, succeeded, %s", m.Service, dep, m, want)
		}
	}

	// 2. A package event of web for commit 2 arrives before the run: it is
	// held, nothing deploys.
	b2, w2 := s.push("sha-2222222", "backend-2"), s.pushWeb("sha-2222222", "web-2", true)
	pkg := edit(t, s.packageEvent("sha-2222222", w2), func(m map[string]any) {
		dig(m, "registry_package")["name"] = "v7/web"
		dig(m, "registry_package", "package_version", "container_metadata", "labels")["revision"] = commit2
	})
	live := deliveryEvents(t, d)
	body := d.accepted(delivery{event: "registry_package", id: "release-pkg-2", body: pkg})
	answers = append(answers, body)
	held := decodeAnswer(t, body)
	if len(held.Deployments) != 0 || !slices.Equal(held.Releases, []int64{2}) {
		t.Errorf("held package event answered %s, want no deployments and release 2", body)
	}
	var deliveries struct {
		Deliveries []deployer.Delivery `json:"deliveries"`
	}
	d.getJSON("/api/v1/deliveries?limit=1", http.StatusOK, &deliveries)
	if r := deliveries.Deliveries[0].Reason; !strings.Contains(r, "held in release 2 of set v7 (commit 2222222)") || held.Reason != r {
		t.Errorf("held delivery's reason %q, answered %q", r, held.Reason)
	}
	// The status page hears of it with the same note.
	select {
	case ev := <-live:
		if ev.ID != "release-pkg-2" || ev.Result != deployer.ResultQueued || ev.Reason != held.Reason || !strings.Contains(ev.Reason, "held in release 2") {
			t.Errorf("delivery event %+v, want release-pkg-2 queued with reason %q", ev, held.Reason)
		}
	case <-time.After(30 * time.Second):
		t.Error("no delivery event for the held package event")
	}
	if s.webVersion() != "web-1" {
		t.Fatalf("a held package event deployed web: %q", s.webVersion())
	}

	// 3. The run of commit 2: backend switches, web fails its health check
	// and its own rollback keeps web-1; backend goes back to release 1's
	// digest.
	answers = append(answers, d.accepted(delivery{event: "workflow_run", id: "release-run-2", body: runEvent(t, commit2, 1002)}))
	rel = waitRelease(t, d, 2)
	if rel.State != deployer.ReleaseRolledBack || rel.FailedMember != "web" {
		t.Fatalf("release 2: %+v", rel)
	}
	if !strings.Contains(rel.Reason, "backend rolled back to "+deployer.ShortDigest(b1)) {
		t.Errorf("release 2's reason: %q", rel.Reason)
	}
	if got := s.runningImage("e2e-backend"); !strings.HasSuffix(got, "@"+b1) {
		t.Errorf("backend runs %s after the rollback, want release 1's %s (not %s)", got, b1, b2)
	}
	if got := s.runningImage("e2e-web"); !strings.HasSuffix(got, "@"+w1) {
		t.Errorf("web runs %s, want release 1's %s", got, w1)
	}
	if s.version() != "backend-1" || s.webVersion() != "web-1" {
		t.Errorf("after release 2: backend %q, web %q; want backend-1, web-1", s.version(), s.webVersion())
	}
	for _, m := range rel.Members {
		switch m.Service {
		case "backend":
			if m.State != deployer.StateSucceeded || m.RollbackID == 0 || m.RollbackState != deployer.StateSucceeded {
				t.Errorf("backend member: %+v", m)
			}
		case "web":
			if m.State != deployer.StateRolledBack || m.RollbackID != 0 || m.Digest != w2 {
				t.Errorf("web member: %+v, want rolled_back at the held event's %s", m, w2)
			}
		}
	}
	s.assertNoTokenInArgv()
	// No secret reaches the releases API, the deliveries' reasons or the log.
	secrets := []string{testSecret, e2ePAT}
	for _, m := range s.github.Mints() {
		secrets = append(secrets, m.Token)
	}
	resp, err := http.Get(d.url("/api/v1/releases"))
	if err != nil {
		t.Fatal(err)
	}
	api, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp, err = http.Get(d.url("/api/v1/deliveries"))
	if err != nil {
		t.Fatal(err)
	}
	dels, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for i, sec := range secrets {
		for where, text := range map[string]string{"releases API": string(api), "deliveries API": string(dels), "log": d.logs.String(),
			"webhook answers": strings.Join(answers, "\n")} {
			if strings.Contains(text, sec) {
				t.Errorf("secret %d appears in the %s", i, where)
			}
		}
	}
}
