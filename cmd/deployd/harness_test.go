package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deployd/deployd/internal/testlog"
)

// instance is deployd started through run() on a random port.
type instance struct {
	t      testing.TB
	addr   string
	logs   *testlog.Buffer
	cancel context.CancelFunc
	done   chan error
}

// startDeployd runs `deployd serve --config path` in the test process and
// waits until it listens. The config must log JSON so that the listen
// address can be read from the log.
func startDeployd(t testing.TB, configPath string, env map[string]string) *instance {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	inst := &instance{t: t, logs: &testlog.Buffer{}, cancel: cancel, done: make(chan error, 1)}
	getenv := func(k string) string { return env[k] }
	go func() {
		inst.done <- run(ctx, []string{"serve", "--config", configPath}, getenv, io.Discard, inst.logs)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for inst.addr == "" {
		select {
		case err := <-inst.done:
			t.Fatalf("deployd exited before listening: %v\n%s", err, inst.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("deployd did not listen within 30s:\n%s", inst.logs.String())
		}
		inst.addr = listenAddr(inst.logs.String())
		time.Sleep(10 * time.Millisecond)
	}
	t.Cleanup(func() { inst.stop() })
	return inst
}

// listenAddr finds the address in the "listening" log line.
func listenAddr(logs string) string {
	sc := bufio.NewScanner(strings.NewReader(logs))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line struct {
			Message string `json:"message"`
			Addr    string `json:"addr"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Message == "listening" {
			return line.Addr
		}
	}
	return ""
}

// stop cancels run's context (as SIGTERM does) and returns run's error.
func (i *instance) stop() error {
	if i.cancel == nil {
		return nil
	}
	i.cancel()
	i.cancel = nil
	select {
	case err := <-i.done:
		return err
	case <-time.After(3 * time.Minute):
		i.t.Errorf("deployd did not stop within 3 minutes")
		return nil
	}
}

func (i *instance) url(path string) string { return "http://" + i.addr + path }

// getJSON GETs path and decodes the JSON answer into v, failing the test
// unless the status is want.
func (i *instance) getJSON(path string, want int, v any) {
	i.t.Helper()
	resp, err := http.Get(i.url(path))
	if err != nil {
		i.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		i.t.Fatalf("GET %s: %d %s, want %d", path, resp.StatusCode, body, want)
	}
	if v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			i.t.Fatalf("GET %s: %v in %s", path, err, body)
		}
	}
}

// delivery is one webhook delivery to send.
type delivery struct {
	event   string
	id      string
	body    []byte
	headers map[string]string // extra or replacing headers; "" value deletes
}

// sign returns the X-Hub-Signature-256 value GitHub sends for body.
func sign(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// post sends the delivery signed with secret and returns the status and body.
func (i *instance) post(secret string, d delivery) (int, string) {
	i.t.Helper()
	req, err := http.NewRequest(http.MethodPost, i.url("/webhooks/github"), bytes.NewReader(d.body))
	if err != nil {
		i.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "GitHub-Hookshot/test")
	req.Header.Set("X-GitHub-Event", d.event)
	req.Header.Set("X-GitHub-Delivery", d.id)
	req.Header.Set("X-Hub-Signature-256", sign(secret, d.body))
	for k, v := range d.headers {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		i.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// fixture reads a webhook payload from the webhook package's testdata.
func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "webhook", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// edit decodes a JSON payload, lets fn change it and encodes it again.
func edit(t testing.TB, body []byte, fn func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	fn(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// dig returns the nested object at path.
func dig(m map[string]any, path ...string) map[string]any {
	for _, p := range path {
		m = m[p].(map[string]any)
	}
	return m
}

// writeFile writes content to name in dir with mode and returns the path.
func writeFile(t testing.TB, dir, name, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	return p
}

// deploymentJSON is a deployment as the API shows it.
type deploymentJSON struct {
	ID         int64  `json:"id"`
	Service    string `json:"service"`
	Tag        string `json:"tag"`
	Digest     string `json:"digest"`
	State      string `json:"state"`
	ErrorClass string `json:"error_class"`
	Error      string `json:"error"`
	Hint       string `json:"hint"`
	Trigger    struct {
		Kind       string `json:"kind"`
		DeliveryID string `json:"delivery_id"`
		Subject    string `json:"subject"`
	} `json:"trigger"`
	Steps []struct {
		Name    string `json:"name"`
		Outcome string `json:"outcome"`
		Message string `json:"message"`
	} `json:"steps"`
}

// deploymentsResponse is GET /api/v1/deployments.
type deploymentsResponse struct {
	Deployments []deploymentJSON `json:"deployments"`
	NextBefore  int64            `json:"next_before"`
}

func (r deploymentsResponse) String() string {
	var b strings.Builder
	for _, d := range r.Deployments {
		fmt.Fprintf(&b, "#%d %s %s %s %s %s\n", d.ID, d.Service, d.Tag, d.State, d.ErrorClass, d.Error)
	}
	return b.String()
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }
