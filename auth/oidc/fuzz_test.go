package oidc

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
)

// FuzzUnverifiedIssuer feeds arbitrary bearer tokens to the shape check
// that decides which verifier a token goes to: it never panics, and when
// it names an issuer, the token is three dot-separated parts whose middle
// one is base64url JSON with that iss.
func FuzzUnverifiedIssuer(f *testing.F) {
	enc := base64.RawURLEncoding.EncodeToString
	for _, s := range []string{
		enc([]byte(`{"alg":"RS256","kid":"k"}`)) + "." + enc([]byte(`{"iss":"https://token.actions.githubusercontent.com","aud":"x"}`)) + ".c2ln",
		enc([]byte(`{"alg":"HS256"}`)) + "." + enc([]byte(`{"iss":"deployd","scope":"deploy:*"}`)) + ".",
		"a.b.c", "..", "", "ghp_0123", "a." + enc([]byte(`{"iss":""}`)) + ".b",
		"a." + enc([]byte(`{"iss":1}`)) + ".b", "a." + enc([]byte(`[]`)) + ".b",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, token string) {
		iss, ok := unverifiedIssuer(token)
		if !ok {
			if iss != "" {
				t.Fatalf("no issuer reported, yet %q returned", iss)
			}
			return
		}
		parts := strings.Split(token, ".")
		if len(parts) != 3 || iss == "" {
			t.Fatalf("issuer %q from a token of %d parts", iss, len(parts))
		}
		payload, err := base64.RawURLEncoding.DecodeString(parts[1])
		if err != nil {
			t.Fatalf("issuer %q from a payload that is not base64url: %v", iss, err)
		}
		var c struct {
			Issuer string `json:"iss"`
		}
		if err := json.Unmarshal(payload, &c); err != nil || c.Issuer != iss {
			t.Fatalf("issuer %q, but the payload says %q (%v)", iss, c.Issuer, err)
		}
	})
}

// FuzzGrant checks the rule matcher's safety properties on arbitrary
// claims: a token from pull_request_target or workflow_run gets nothing
// from a rule that does not name its event, and nothing is granted to a
// token whose repository and owner ids match no rule.
func FuzzGrant(f *testing.F) {
	f.Add("74", "65", "refs/heads/main", "production", "push", "o/r/.github/workflows/d.yml@refs/heads/main")
	f.Add("74", "65", "refs/heads/main", "production", EventPullRequestTarget, "")
	f.Add("074", "", "", "", EventWorkflowRun, "")
	f.Add("", "65", "refs/pull/1/merge", "", "pull_request", "")
	f.Fuzz(func(t *testing.T, repoID, ownerID, ref, env, event, workflowRef string) {
		rid, _ := CanonicalID(repoID)
		oid, _ := CanonicalID(ownerID)
		c := Claims{RepositoryID: rid, RepositoryOwnerID: oid, Ref: ref, Environment: env,
			EventName: event, WorkflowRef: workflowRef, JobWorkflowRef: workflowRef}
		var rules []Rule
		for _, r := range []Rule{
			{RepositoryID: "74", Ref: "refs/heads/main", Environment: "production", Scopes: []string{"deploy:backend"}},
			{RepositoryOwnerID: "65", Scopes: []string{"status:read"}},
			{RepositoryID: "74", EventName: EventWorkflowRun, Scopes: []string{"deploy:web"}},
		} {
			n, err := r.normalize()
			if err != nil {
				t.Fatal(err)
			}
			rules = append(rules, n)
		}
		got := Grant(rules, c)
		if c.RepositoryID != "74" && c.RepositoryOwnerID != "65" && len(got) > 0 {
			t.Fatalf("ids %q/%q match no rule, yet %v granted", c.RepositoryID, c.RepositoryOwnerID, got)
		}
		for _, s := range got {
			switch {
			case event == EventPullRequestTarget:
				t.Fatalf("pull_request_target granted %s by a rule that does not name it", s)
			case event == EventWorkflowRun && s != "deploy:web":
				t.Fatalf("workflow_run granted %s by a rule that does not name it", s)
			case s == "deploy:backend" && (ref != "refs/heads/main" || env != "production"):
				t.Fatalf("deploy:backend granted for ref %q environment %q", ref, env)
			}
		}
	})
}
