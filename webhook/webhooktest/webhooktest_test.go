package webhooktest_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/deployd/deployd/webhook"
	"github.com/deployd/deployd/webhook/webhooktest"
)

func TestMaxBodyBytesMatchesWebhook(t *testing.T) {
	if webhooktest.MaxBodyBytes != webhook.MaxBodyBytes {
		t.Fatalf("webhooktest.MaxBodyBytes %d, webhook.MaxBodyBytes %d", webhooktest.MaxBodyBytes, webhook.MaxBodyBytes)
	}
}

func TestBareHandlerDeliveries(t *testing.T) {
	secret := []byte("s3cret")
	raw, err := os.ReadFile(filepath.Join("..", "testdata", "registry_package.published.container-tagged.json"))
	if err != nil {
		t.Fatal(err)
	}
	g, err := webhooktest.NewDeliveries(raw, secret, "nonce")
	if err != nil {
		t.Fatal(err)
	}
	h := webhooktest.BareHandler(secret)
	seen := map[string]bool{}
	for _, d := range g.Make(3) {
		body := g.Body(d)
		if len(body) != g.Size() {
			t.Fatalf("body of %d bytes, Size %d", len(body), g.Size())
		}
		if got := webhooktest.Sign(secret, body); got != d.Signature {
			t.Fatalf("signature %s, Sign says %s", d.Signature, got)
		}
		if streamed, _ := io.ReadAll(g.Reader(d)); !bytes.Equal(streamed, body) {
			t.Fatal("Reader and Body differ")
		}
		var fields map[string]any
		if err := json.Unmarshal(body, &fields); err != nil {
			t.Fatal(err)
		}
		if fields["nonce"] != d.Nonce || seen[d.Nonce] {
			t.Fatalf("nonce %v, want the unique %s", fields["nonce"], d.Nonce)
		}
		seen[d.Nonce] = true

		for _, c := range []struct {
			sig  string
			want int
		}{{d.Signature, http.StatusAccepted}, {webhooktest.Sign([]byte("other"), body), http.StatusUnauthorized}} {
			r := httptest.NewRequest(http.MethodPost, "/webhooks/github", bytes.NewReader(body))
			r.Header.Set("X-Hub-Signature-256", c.sig)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != c.want {
				t.Fatalf("status %d, want %d: %s", w.Code, c.want, w.Body)
			}
		}
	}
}

func TestNewDeliveriesRejectsNonObject(t *testing.T) {
	for _, tmpl := range []string{`[1]`, `"x"`, `{`} {
		if _, err := webhooktest.NewDeliveries([]byte(tmpl), nil, "nonce"); err == nil {
			t.Errorf("%s: no error", tmpl)
		}
	}
	g, err := webhooktest.NewDeliveries([]byte(` { } `), nil, "n")
	if err != nil {
		t.Fatal(err)
	}
	if body := g.Body(g.Next()); !json.Valid(body) {
		t.Fatalf("invalid body %s", body)
	}
}
