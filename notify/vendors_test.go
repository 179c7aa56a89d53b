package notify

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// helperURLEnv carries the shoutrrr URL to the helper process.
const helperURLEnv = "DEPLOYD_NOTIFY_HELPER_URL"

// TestHelperSend is not a test: TestVendorHostedServices runs the test
// binary with it, behind a proxy, to send one message to helperURLEnv.
func TestHelperSend(t *testing.T) {
	u := os.Getenv(helperURLEnv)
	if u == "" {
		t.Skip("the helper process of TestVendorHostedServices")
	}
	s, err := NewShoutrrr(u)
	if err != nil {
		t.Fatal(err)
	}
	m := newMessage(failedDeployment(21), EventFailed, "https://deploy.example.test", time.Now())
	if err := s.Send(context.Background(), m); err != nil {
		t.Fatal(err)
	}
}

// vendorRequest is a request that reached the intercepting proxy.
type vendorRequest struct {
	host, path, body string
}

// TestVendorHostedServices sends real HTTPS requests through shoutrrr's
// Slack, Discord and Teams services, which post only to their vendor's
// host. A helper process runs with HTTPS_PROXY pointing at a local proxy
// that answers CONNECT, ends TLS with a certificate for the host asked for
// (from a CA the helper trusts through SSL_CERT_FILE), and records the
// request: the host and path the URL maps to, and a body with the message.
func TestVendorHostedServices(t *testing.T) {
	if testing.Short() {
		t.Skip("starts helper processes")
	}
	ca, caKey, caPEM := newTestCA(t)
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []vendorRequest
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
			return
		}
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n")
		tc := tls.Server(conn, &tls.Config{GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			return leafFor(t, ca, caKey, hello.ServerName), nil
		}})
		req, err := http.ReadRequest(bufio.NewReader(tc))
		if err != nil {
			return
		}
		body, _ := io.ReadAll(req.Body)
		mu.Lock()
		got = append(got, vendorRequest{host: req.Host, path: req.URL.Path, body: string(body)})
		mu.Unlock()
		_, _ = io.WriteString(tc, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
	}))
	t.Cleanup(proxy.Close)

	for _, c := range []struct {
		kind, url, host, path string
	}{
		{"slack", "slack://hook:WNA3PBYV6-F20DUQND3RQ-Webc4MAvoacrpPakR8phF0zi@webhook",
			"hooks.slack.com", "/services/WNA3PBYV6/F20DUQND3RQ/Webc4MAvoacrpPakR8phF0zi"},
		{"discord", "discord://W3dE2OZz4C13_4z_uHfDOoC7BqTW288s@693853386302554172",
			"discord.com", "/api/webhooks/693853386302554172/W3dE2OZz4C13_4z_uHfDOoC7BqTW288s"},
		{"teams", "teams://11111111-4444-4444-8444-cccccccccccc@22222222-4444-4444-8444-cccccccccccc/33333333012222222222333333333344/44444444-4444-4444-8444-cccccccccccc/V2ESyij_gAljSoUQHvZoZYzlpAoAXExyOl26dlf1xHEx05?host=contoso.webhook.office.com",
			"contoso.webhook.office.com", "/webhookb2/11111111-4444-4444-8444-cccccccccccc@22222222-4444-4444-8444-cccccccccccc/IncomingWebhook/33333333012222222222333333333344/44444444-4444-4444-8444-cccccccccccc/V2ESyij_gAljSoUQHvZoZYzlpAoAXExyOl26dlf1xHEx05"},
	} {
		t.Run(c.kind, func(t *testing.T) {
			mu.Lock()
			before := len(got)
			mu.Unlock()
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperSend$", "-test.v")
			cmd.Env = append(os.Environ(), helperURLEnv+"="+c.url,
				"HTTPS_PROXY="+proxy.URL, "https_proxy="+proxy.URL, "NO_PROXY=", "no_proxy=",
				"SSL_CERT_FILE="+caFile, "SSL_CERT_DIR="+dir)
			if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "--- PASS: TestHelperSend") {
				t.Fatalf("helper: %v\n%s", err, out)
			}
			mu.Lock()
			reqs := got[before:]
			mu.Unlock()
			if len(reqs) != 1 {
				t.Fatalf("%d requests reached the proxy, want 1", len(reqs))
			}
			r := reqs[0]
			if r.host != c.host || r.path != c.path {
				t.Errorf("posted to %s%s, want %s%s", r.host, r.path, c.host, c.path)
			}
			for _, want := range []string{"backend deploy failed (health)", "Failure class: health", "boom", "#deployment-21"} {
				if !strings.Contains(r.body, want) {
					t.Errorf("body lacks %q:\n%s", want, r.body)
				}
			}
		})
	}
}

// newTestCA returns a CA certificate, its key and its PEM.
func newTestCA(t *testing.T) (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "deployd test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// leafFor returns a server certificate for host signed by the CA.
func leafFor(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, host string) *tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Error(err)
		return nil
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Error(err)
		return nil
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
