package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/deployd/deployd/attest/attesttest"
)

// verificationJSON is a deployment's verification as the API shows it.
type verificationJSON struct {
	Verification *struct {
		Mode          string `json:"mode"`
		Verified      bool   `json:"verified"`
		Workflow      string `json:"workflow"`
		PredicateType string `json:"predicate_type"`
		Problem       string `json:"problem"`
	} `json:"verification"`
}

// TestEndToEndVerifyImage deploys with verify.attestations: required
// against a test Sigstore whose bundles are signed over the digests really
// pushed to the registry, served by the fake GitHub (inline and behind a
// snappy-compressed bundle_url): a good attestation deploys; none, one by
// another workflow, one over another digest and a tampered one fail with
// class verification before anything is pulled, and the old version still
// serves. Then, with warn, an image without attestation deploys and the
// deployment records that it was not verified.
func TestEndToEndVerifyImage(t *testing.T) {
	ss, err := attesttest.New()
	if err != nil {
		t.Fatal(err)
	}
	rootFile := ss.WriteTrustedRoot(t, time.Time{})
	s := newStack(t, stackOptions{extraConfig: fmt.Sprintf(`    verify: {attestations: required, workflow: .github/workflows/build.yml, ref: refs/heads/main}
trust: {root: %q}
`, rootFile)})
	d := startDeployd(t, s.config, nil)
	const repo = "Acme-Corp/v7"
	good := attesttest.Signing{Repository: repo, Workflow: ".github/workflows/build.yml"}
	attestAs := func(digest string, g attesttest.Signing, byURL bool) []byte {
		t.Helper()
		if g.Digest == "" {
			g.Digest = digest
		}
		b, err := ss.Bundle(g)
		if err != nil {
			t.Fatal(err)
		}
		s.github.AddAttestation(repo, digest, b, byURL)
		return b
	}
	deploy := func(id, tag, digest string) (deploymentJSON, verificationJSON) {
		t.Helper()
		ids := d.queue(delivery{event: "registry_package", id: id, body: s.packageEvent(tag, digest)})
		dep := waitDeployment(t, d, ids[0])
		var v verificationJSON
		d.getJSON(fmt.Sprintf("/api/v1/deployments/%d", ids[0]), http.StatusOK, &v)
		return dep, v
	}

	// 1. A good attestation, served behind a bundle_url: deploys.
	v1 := s.push("latest", "v1")
	attestAs(v1, good, true)
	dep, v := deploy("verify-1", "latest", v1)
	if dep.State != "succeeded" || s.version() != "v1" {
		t.Fatalf("attested image: %s (%s: %s), service answers %q; steps %+v", dep.State, dep.ErrorClass, dep.Error, s.version(), dep.Steps)
	}
	var steps []string
	for _, st := range dep.Steps {
		steps = append(steps, st.Name+":"+st.Outcome)
	}
	if strings.Join(steps, ",") != "resolve:ok,verify-image:ok,login:ok,pull:ok,switch:ok,verify:ok" {
		t.Errorf("steps %v, want verify-image between resolve and login/pull", steps)
	}
	if v.Verification == nil || !v.Verification.Verified || v.Verification.Mode != "required" ||
		v.Verification.Workflow != "Acme-Corp/v7/.github/workflows/build.yml@refs/heads/main" ||
		v.Verification.PredicateType != attesttest.SLSAProvenanceV1 {
		t.Errorf("verification %+v", v.Verification)
	}
	if _, authorized := s.github.AttestationRequests(); authorized != 0 {
		t.Errorf("%d bundle_url fetches carried credentials", authorized)
	}
	var attestMints int
	for _, m := range s.github.Mints() {
		if m.Permissions["attestations"] == "read" {
			attestMints++
		}
		if m.Permissions["packages"] == "read" && m.Permissions["attestations"] != "" {
			t.Errorf("the pull token asks for attestations too: %+v", m.Permissions)
		}
	}
	if attestMints != 1 {
		t.Errorf("%d attestation tokens minted, want 1", attestMints)
	}

	// 2. Failures: nothing pulled, v1 still serves.
	for i, c := range []struct {
		name        string
		attest      func(digest string)
		error, hint string
	}{
		{"no attestation", func(string) {}, "GitHub has no attestation for", "attest the image"},
		{"wrong workflow", func(dg string) {
			attestAs(dg, attesttest.Signing{Repository: repo, Workflow: ".github/workflows/other.yml"}, false)
		}, "signed by workflow Acme-Corp/v7/.github/workflows/other.yml@refs/heads/main, not .github/workflows/build.yml", "verify.workflow"},
		{"wrong digest", func(dg string) {
			attestAs(dg, attesttest.Signing{Repository: repo, Workflow: ".github/workflows/build.yml", Digest: v1}, false)
		},
			"it attests " + v1, "another digest"},
		{"tampered bundle", func(dg string) {
			b, err := ss.Bundle(attesttest.Signing{Repository: repo, Workflow: ".github/workflows/build.yml", Digest: dg})
			if err != nil {
				t.Fatal(err)
			}
			tampered, err := attesttest.Tamper(b)
			if err != nil {
				t.Fatal(err)
			}
			s.github.AddAttestation(repo, dg, tampered, false)
		}, "the bundle does not verify", "tampered"},
	} {
		digest := s.push(fmt.Sprintf("bad-%d", i), fmt.Sprintf("bad-%d", i))
		c.attest(digest)
		dep, v := deploy(fmt.Sprintf("verify-bad-%d", i), "latest", digest)
		if dep.State != "failed" || dep.ErrorClass != "verification" || !strings.Contains(dep.Error, c.error) || !strings.Contains(dep.Hint, c.hint) {
			t.Errorf("%s: %s %s %q (hint %q), want failed verification naming %q, hint %q", c.name, dep.State, dep.ErrorClass, dep.Error, dep.Hint, c.error, c.hint)
		}
		if got := s.version(); got != "v1" {
			t.Errorf("%s: service answers %q, want v1 still", c.name, got)
		}
		if strings.Contains(s.argv(), digest) {
			t.Errorf("%s: podman was asked for %s", c.name, digest)
		}
		if v.Verification == nil || v.Verification.Verified || v.Verification.Problem == "" {
			t.Errorf("%s: verification %+v, want a recorded failure", c.name, v.Verification)
		}
	}
	out, err := s.podman.Run(context.Background(), "ps", "--format", "{{.Names}}")
	if err != nil || strings.TrimSpace(out) != "e2e-backend" {
		t.Errorf("running containers %q (%v), want e2e-backend alone", out, err)
	}

	// 3. warn: an image without attestation deploys, recorded as not verified.
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	logs := d.logs.String()
	cfg, err := os.ReadFile(s.config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.config, bytes.Replace(cfg, []byte("attestations: required"), []byte("attestations: warn"), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	d = startDeployd(t, s.config, nil)
	v2 := s.push("latest", "v2")
	dep, v = deploy("verify-warn", "latest", v2)
	if dep.State != "succeeded" || s.version() != "v2" {
		t.Fatalf("warn: %s (%s), service answers %q", dep.State, dep.Error, s.version())
	}
	if v.Verification == nil || v.Verification.Verified || v.Verification.Mode != "warn" || !strings.Contains(v.Verification.Problem, "no attestation") {
		t.Errorf("warn: verification %+v, want recorded as not verified", v.Verification)
	}
	var warned bool
	for _, st := range dep.Steps {
		warned = warned || (st.Name == "verify-image" && st.Outcome == "failed" && strings.Contains(st.Message, "deploying anyway"))
	}
	if !warned {
		t.Errorf("warn: steps %+v, want a failed verify-image step that says it deploys anyway", dep.Steps)
	}
	s.assertNoTokenInArgv()

	// No installation token (the attestation one included) reaches the log
	// or the API's deployments.
	var all deploymentsResponse
	d.getJSON("/api/v1/deployments?limit=100", http.StatusOK, &all)
	api := fmt.Sprintf("%+v", all)
	for _, m := range s.github.Mints() {
		if strings.Contains(logs+d.logs.String(), m.Token) || strings.Contains(api, m.Token) {
			t.Errorf("the token minted with %v appears in the log or the API", m.Permissions)
		}
	}
}
