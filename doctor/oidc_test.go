package doctor_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/deployd/deployd/auth/oidc/actionstest"
	"github.com/deployd/deployd/doctor"
)

// doctorOIDC runs doctor on a configuration whose api.oidc names issuer
// and returns its report.
func doctorOIDC(t *testing.T, issuer string) string {
	t.Helper()
	path := writeConfig(t, "http://127.0.0.1:1")
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "api:\n  oidc:\n    issuer: %s\n    audience: https://deploy.example.test\n    rules:\n      - {repository_id: 74, scopes: [deploy:backend]}\n", issuer)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if _, err := doctor.Run(context.Background(), doctor.Config{
		Out: &out, Getenv: func(string) string { return "" }, Timeout: 5 * time.Second,
		Resolver: noRegistry{t}, Classify: noClassify,
	}, path); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

func TestOIDCIssuerReachable(t *testing.T) {
	iss := actionstest.Start(t)
	out := doctorOIDC(t, iss.URL)
	wantLine(t, out, "OK", "OIDC issuer", iss.URL, "discovery document and key set", "1 RSA key")
	if fetches := iss.KeyFetches(); fetches != 1 {
		t.Errorf("the key set was fetched %d times, want once", fetches)
	}
}

func TestOIDCIssuerDownIsAWarning(t *testing.T) {
	iss := actionstest.Start(t)
	iss.SetDown(true)
	out := doctorOIDC(t, iss.URL)
	wantLine(t, out, "WARN", "OIDC issuer", iss.URL, "unreachable", "503")
	if !strings.Contains(out, "keys it has cached") {
		t.Errorf("the fix does not say cached keys are used:\n%s", out)
	}
}

// A configured issuer that serves another issuer's discovery document (here
// a proxy in front of it) fails: deployd would never complete discovery.
func TestOIDCIssuerMismatchFails(t *testing.T) {
	iss := actionstest.Start(t)
	target, err := url.Parse(iss.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httptest.NewServer(httputil.NewSingleHostReverseProxy(target))
	defer proxy.Close()
	out := doctorOIDC(t, proxy.URL)
	wantLine(t, out, "FAIL", "OIDC issuer", proxy.URL, fmt.Sprintf("names the issuer %q", iss.URL))
}

func TestNoOIDCCheckWithoutAPIOIDC(t *testing.T) {
	var out bytes.Buffer
	if _, err := doctor.Run(context.Background(), doctor.Config{
		Out: &out, Getenv: func(string) string { return "" }, Timeout: 5 * time.Second,
		Resolver: noRegistry{t}, Classify: noClassify,
	}, writeConfig(t, "http://127.0.0.1:1")); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "OIDC issuer:") {
		t.Errorf("doctor checks OIDC although api.oidc is not set:\n%s", out.String())
	}
}
