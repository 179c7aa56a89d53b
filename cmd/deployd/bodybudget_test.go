package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// rawDelivery is a webhook request written by hand on a connection of its
// own, so that a test can send its headers, wait, and send its body later
// or never.
type rawDelivery struct {
	conn net.Conn
	r    *bufio.Reader
}

// startRawDelivery sends the headers of a registry_package delivery with
// a wrong signature that declares length bytes of body and asks the
// server, with Expect: 100-continue, to say when it reads the body.
func startRawDelivery(t *testing.T, d *instance, id string, length int) *rawDelivery {
	t.Helper()
	conn, err := net.Dial("tcp", d.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.SetDeadline(time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "POST /webhooks/github HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"+
		"X-GitHub-Event: registry_package\r\nX-GitHub-Delivery: %s\r\nX-Hub-Signature-256: sha256=%s\r\n"+
		"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n", d.addr, id, strings.Repeat("0", 64), length)
	return &rawDelivery{conn: conn, r: bufio.NewReader(conn)}
}

// response reads the server's next answer.
func (rd *rawDelivery) response(t *testing.T) *http.Response {
	t.Helper()
	resp, err := http.ReadResponse(rd.r, nil)
	if err != nil {
		t.Fatalf("read the answer: %v", err)
	}
	return resp
}

// TestServeWebhookBodyBudget: while a large unsigned body is being read, a
// second large body is refused at once with 503, Retry-After and a JSON
// error and hint, without its body being read, and is not recorded; a
// typical signed delivery sent meanwhile is accepted and recorded; and the
// budget comes back when the first body's client goes away and after each
// delivery of the largest size, which fits.
func TestServeWebhookBodyBudget(t *testing.T) {
	d := startDeployd(t, intakeConfig(t, t.TempDir()), nil)

	// Once deployd answers 100 Continue, it reads the body: its share of
	// the budget is taken.
	held := startRawDelivery(t, d, "big-held", 24<<20)
	if resp := held.response(t); resp.StatusCode != http.StatusContinue {
		t.Fatalf("large body: %s, want 100 Continue", resp.Status)
	}
	if _, err := held.conn.Write(bytes.Repeat([]byte(" "), 1<<20)); err != nil {
		t.Fatal(err)
	}

	refused := startRawDelivery(t, d, "big-refused", 24<<20)
	resp := refused.response(t)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("second large body: %s %s, want 503 before its body is sent", resp.Status, body)
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || s <= 0 {
		t.Errorf("Retry-After %q, want seconds", resp.Header.Get("Retry-After"))
	}
	var answer struct{ Error, Hint string }
	if err := json.Unmarshal(body, &answer); err != nil || !strings.Contains(answer.Error, "large webhook bodies") || !strings.Contains(answer.Hint, "Redeliver") {
		t.Errorf("answer %s, want a JSON error and a hint to redeliver", body)
	}

	tagged := fixture(t, "registry_package.published.container-tagged.json")
	if status, body := d.post(testSecret, delivery{event: "registry_package", id: "small-meanwhile", body: tagged}); status != http.StatusAccepted {
		t.Fatalf("signed delivery while the budget is taken: %d %s, want 202", status, body)
	}

	// The client of the held body goes away; once its delivery is logged,
	// its share is back.
	held.conn.Close()
	waitFor(t, "the aborted delivery's log line", func() bool {
		return strings.Contains(d.logs.String(), `"delivery_id":"big-held"`)
	})
	for i, id := range []string{"big-signed-1", "big-signed-2"} {
		big := append(bytes.Clone(tagged), bytes.Repeat([]byte(" "), 24<<20-len(tagged)-i)...) // distinct bodies
		if status, body := d.post(testSecret, delivery{event: "registry_package", id: id, body: big}); status != http.StatusAccepted {
			t.Fatalf("signed 24 MiB delivery %s after the budget came back: %d %s, want 202", id, status, body)
		}
	}

	got := listDeliveries(d)
	for _, id := range []string{"small-meanwhile", "big-signed-1", "big-signed-2"} {
		if len(got[id]) != 1 || got[id][0] != "queued" {
			t.Errorf("delivery %s listed as %v, want queued", id, got[id])
		}
	}
	for _, id := range []string{"big-held", "big-refused"} {
		if _, ok := got[id]; ok {
			t.Errorf("delivery %s was recorded", id)
		}
	}
	resp, err := http.Get(d.url("/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := `deployd_webhook_deliveries_total{event="registry_package",result="busy"} 1`; !strings.Contains(string(metrics), want) {
		t.Errorf("metrics lack %s", want)
	}
}
