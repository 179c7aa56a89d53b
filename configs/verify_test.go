package configs

import (
	"strings"
	"testing"

	"github.com/deployd/deployd/deployer"
)

func TestVerifyDefaults(t *testing.T) {
	c := mustParse(t, minimal, nil)
	v := c.Services["backend"].Verify
	if v.Attestations != deployer.AttestationsOff || v.Repository != "acme/app" || v.PredicateType != deployer.DefaultPredicateType || v.Enabled() {
		t.Fatalf("verify defaults %+v", v)
	}
	if c.Trust.Root != TrustPublicGood || c.Verifying() || c.TUFCacheDir() != "/var/lib/deployd/tuf" {
		t.Fatalf("trust %+v, verifying %v, cache %s", c.Trust, c.Verifying(), c.TUFCacheDir())
	}
}

func TestVerifyValid(t *testing.T) {
	src := strings.Replace(minimal, "github:\n", "github:\n  app: {id: 1, private_key_file: /k.pem}\n", 1) +
		"    verify: {attestations: required, workflow: acme/ci/.github/workflows/release.yml@refs/heads/main, ref: refs/tags/v*}\n" +
		"trust: {root: /etc/deployd/trusted_root.json}\n"
	c := mustParse(t, src, nil)
	if !c.Verifying() || !c.Trust.TrustFile() || c.Services["backend"].Verify.Attestations != deployer.AttestationsRequired {
		t.Fatalf("config %+v", c.Services["backend"].Verify)
	}
}

// TestVerifyProblems: every bad verify and trust setting is reported at
// its path and line, together.
func TestVerifyProblems(t *testing.T) {
	src := minimal + `    verify:
      attestations: sometimes
      repository: acme
      workflow: build.yml
      ref: "refs/heads/["
trust:
  root: github
  tuf_url: ftp://tuf.example.com
`
	_, err := parse(t, src, nil)
	ps := problems(t, err)
	wantProblem(t, ps, "services.backend.verify.attestations", 11, `unknown mode "sometimes" (one of off, warn, required)`)
	wantProblem(t, ps, "services.backend.verify.repository", 12, `"acme" is not a GitHub repository OWNER/NAME`)
	wantProblem(t, ps, "services.backend.verify.workflow", 13, `"build.yml" is neither a workflow path .github/workflows/FILE`)
	wantProblem(t, ps, "services.backend.verify.ref", 14, "invalid ref pattern")

	src = minimal + "    verify: {attestations: warn, workflow: acme/app/build.yml@main}\ntrust:\n  root: github\n  tuf_url: ftp://x\n"
	_, err = parse(t, src, nil)
	ps = problems(t, err)
	wantProblem(t, ps, "services.backend.verify.attestations", 10, "verifying attestations needs github.app")
	wantProblem(t, ps, "services.backend.verify.workflow", 10, "is not a job_workflow_ref")
	wantProblem(t, ps, "trust.tuf_root_file", -1, "required with root github")
	wantProblem(t, ps, "trust.tuf_url", 13, "is not an absolute http(s) URL")
}

// TestVerifyRefusedOnFleetService: a hub's service with hosts deploys
// through agents that cannot verify, so verify there is a config error,
// not a policy silently skipped.
func TestVerifyRefusedOnFleetService(t *testing.T) {
	hub := "fleet: {role: hub}\n"
	app := strings.Replace(minimal, "github:\n", "github:\n  app: {id: 1, private_key_file: /k.pem}\n", 1)
	_, err := parse(t, hub+app+"    hosts: [web-1]\n    verify: {attestations: required}\n", nil)
	wantProblem(t, problems(t, err), "services.backend.verify.attestations", -1, "not supported for a service with hosts")

	c := mustParse(t, hub+app+"    hosts: [web-1]\n    verify: {attestations: off}\n", nil)
	if c.Services["backend"].Verify.Enabled() {
		t.Fatal("attestations: off on a fleet service must stay allowed")
	}
}
