package main

import (
	"crypto/hmac"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/deployd/deployd/deployer/podmantest"
	"github.com/deployd/deployd/notify"
)

// notifyReceiver is a local HTTP receiver of notifications that records
// the bodies it accepted, checking the signature when it has a secret.
type notifyReceiver struct {
	*httptest.Server
	secret []byte
	mu     sync.Mutex
	bodies [][]byte
	bad    int // requests whose signature did not verify
	got    chan struct{}
}

func startNotifyReceiver(t *testing.T, secret []byte) *notifyReceiver {
	t.Helper()
	r := &notifyReceiver{secret: secret, got: make(chan struct{}, 16)}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		if r.secret != nil && !hmac.Equal([]byte(req.Header.Get(notify.HeaderSignature)), []byte(notify.Sign(r.secret, body))) {
			r.bad++
			r.mu.Unlock()
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		r.bodies = append(r.bodies, body)
		r.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, "{}") // what ntfy answers
		r.got <- struct{}{}
	}))
	t.Cleanup(r.Close)
	return r
}

// TestEndToEndNotifiesFailedDeploy deploys, through run(), an image whose
// health check fails, twice, with three receivers: a signed webhook, ntfy
// (through shoutrrr, its URL from a file) and one that never answers. The
// signed webhook and ntfy get a message per deployment with the failure
// class, the hint and the failing step's lines; the receiver that hangs
// holds its first message all along, and neither the second deployment
// nor the other receivers wait for it. No receiver URL reaches the log,
// the API, the status page or the metrics.
func TestEndToEndNotifiesFailedDeploy(t *testing.T) {
	s := newStack(t, stackOptions{healthTimeout: "2s"})
	secret := []byte("notify-e2e-signing-key")
	signed := startNotifyReceiver(t, secret)
	ntfy := startNotifyReceiver(t, nil)
	release := make(chan struct{})
	arrived := make(chan struct{}, 16)
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		arrived <- struct{}{}
		select {
		case <-release:
		case <-req.Context().Done():
		}
	}))
	t.Cleanup(hang.Close)
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})

	const topic = "deploys-t0pic-s3cret"
	const hangToken = "h4ng-t0ken-s3cret"
	dir := t.TempDir()
	secretFile := writeFile(t, dir, "notify-secret", string(secret)+"\n", 0o600)
	ntfyFile := writeFile(t, dir, "ntfy-url", "ntfy://"+strings.TrimPrefix(ntfy.URL, "http://")+"/"+topic+"?scheme=http\n", 0o600)
	appendConfig(t, s.config, fmt.Sprintf(`notifications:
  - webhook: {url: %q, secret_file: %q}
  - url_file: %q
    services: [backend]
  - url: %q
    events: [degraded]
`, signed.URL+"/hooks/deployd", secretFile, ntfyFile, "generic+"+hang.URL+"/"+hangToken))
	d := startDeployd(t, s.config, nil)

	unhealthy := func(version string) string {
		return s.podman.BuildApp(t, s.image+":latest", version, podmantest.AppOptions{
			Username: s.reg.PushUser, Password: s.reg.PushPassword, Unhealthy: true})
	}
	v1 := unhealthy("v1")
	first := waitDeployment(t, d, d.queue(delivery{event: "registry_package", id: "notify-1", body: s.packageEvent("latest", v1)})[0])
	if first.State != "failed" || first.ErrorClass != "health" {
		t.Fatalf("unhealthy deploy: %s %s %s, want failed health", first.State, first.ErrorClass, first.Error)
	}
	<-arrived // the hanging receiver holds the first message from now on
	<-signed.got
	<-ntfy.got

	v2 := unhealthy("v2")
	second := waitDeployment(t, d, d.queue(delivery{event: "registry_package", id: "notify-2", body: s.packageEvent("latest", v2)})[0])
	if second.State != "failed" {
		t.Fatalf("second deploy: %s, want failed", second.State)
	}
	<-signed.got // delivered while the hanging receiver still holds the first
	<-ntfy.got
	select {
	case <-arrived:
		t.Error("the hanging receiver got a second request while it held the first")
	default:
	}

	signed.mu.Lock()
	bodies, bad := signed.bodies, signed.bad
	signed.mu.Unlock()
	if bad != 0 || len(bodies) != 2 {
		t.Fatalf("signed receiver: %d verified, %d refused; want 2 and 0", len(bodies), bad)
	}
	for i, want := range []deploymentJSON{first, second} {
		var m notify.Message
		if err := json.Unmarshal(bodies[i], &m); err != nil {
			t.Fatal(err)
		}
		if m.DeploymentID != want.ID || m.Event != notify.EventDegraded || m.State != "failed" || m.ErrorClass != "health" ||
			m.Hint != want.Hint || m.Digest != want.Digest || m.Service != "backend" {
			t.Errorf("message %d: %+v, want deployment %d degraded with class health and its hint", i, m, want.ID)
		}
		if m.Step != "verify" || len(m.Lines) == 0 || !strings.Contains(strings.Join(m.Lines, "\n"), "/healthz") {
			t.Errorf("message %d: step %q lines %q, want the verify step's lines", i, m.Step, m.Lines)
		}
		if m.Trigger != "webhook registry_package (delivery notify-"+fmt.Sprint(i+1)+")" {
			t.Errorf("message %d: trigger %q", i, m.Trigger)
		}
		if m.URL != fmt.Sprintf("https://deploy.example.test/#deployment-%d", want.ID) {
			t.Errorf("message %d: url %q", i, m.URL)
		}
	}
	ntfy.mu.Lock()
	text := string(ntfy.bodies[0])
	ntfy.mu.Unlock()
	for _, want := range []string{"Failure class: health", "Hint: " + first.Hint, "Last lines of step verify", "/healthz"} {
		if !strings.Contains(text, want) {
			t.Errorf("ntfy message lacks %q:\n%s", want, text)
		}
	}

	metrics := getText(t, d, "/metrics")
	for _, want := range []string{
		`deployd_notifications_total{kind="webhook",result="sent"} 2`,
		`deployd_notifications_total{kind="ntfy",result="sent"} 2`,
		`deployd_notifications_total{kind="generic",result="sent"} 0`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	for name, out := range map[string]string{
		"log": d.logs.String(), "metrics": metrics, "status page": getText(t, d, "/"),
		"deployments": getText(t, d, "/api/v1/deployments"), "services": getText(t, d, "/api/v1/services"),
	} {
		for _, secret := range []string{topic, hangToken, string(secret), filepath.Base(signed.URL) + "/hooks"} {
			if strings.Contains(out, secret) {
				t.Errorf("%s shows %q", name, secret)
			}
		}
	}
	close(release)
}

// appendConfig adds text at the end of the configuration file at path.
func appendConfig(t *testing.T, path, text string) {
	t.Helper()
	cfg, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, append(cfg, text...), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestEndToEndNotifiesCredentialFallback: the registry refuses the App
// token, the PAT pulls, the deployment succeeds, and a receiver that asked
// for credential_fallback hears of it with the refused credential's step.
func TestEndToEndNotifiesCredentialFallback(t *testing.T) {
	s := newStack(t, stackOptions{registryDeniesApp: true, credentials: "[github_app, token_file]"})
	secret := []byte("notify-e2e-fallback-key")
	rcv := startNotifyReceiver(t, secret)
	secretFile := writeFile(t, t.TempDir(), "notify-secret", string(secret), 0o600)
	appendConfig(t, s.config, fmt.Sprintf(`notifications:
  - webhook: {url: %q, secret_file: %q}
    events: [credential_fallback, failed]
`, rcv.URL, secretFile))
	d := startDeployd(t, s.config, nil)
	v1 := s.push("latest", "v1")
	dep := waitDeployment(t, d, d.queue(delivery{event: "registry_package", id: "notify-fallback", body: s.packageEvent("latest", v1)})[0])
	if dep.State != "succeeded" {
		t.Fatalf("fallback deploy: %s %s", dep.State, dep.Error)
	}
	<-rcv.got
	rcv.mu.Lock()
	body := rcv.bodies[0]
	rcv.mu.Unlock()
	var m notify.Message
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	if m.Event != notify.EventCredentialFallback || m.State != "succeeded" || m.DeploymentID != dep.ID {
		t.Errorf("message %+v, want credential_fallback for deployment %d", m, dep.ID)
	}
	if !strings.Contains(strings.Join(m.Lines, "\n"), "github_app") {
		t.Errorf("step %q lines %q, want the App token's refusal", m.Step, m.Lines)
	}
	for _, mint := range s.github.Mints() {
		if strings.Contains(string(body), mint.Token) {
			t.Error("the message carries an installation token")
		}
	}
	if strings.Contains(string(body), e2ePAT) {
		t.Error("the message carries the PAT")
	}
}
