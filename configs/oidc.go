package configs

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// DefaultOIDCIssuer is api.oidc.issuer's default: GitHub Actions.
const DefaultOIDCIssuer = "https://token.actions.githubusercontent.com"

// OIDC makes the API accept GitHub Actions OIDC tokens (api.oidc): a
// workflow with permissions id-token: write asks GitHub for a token with
// the audience and sends it as its bearer token; the rules its claims
// match decide its scopes.
type OIDC struct {
	// Issuer is the tokens' iss (default DefaultOIDCIssuer).
	Issuer string `yaml:"issuer"`
	// Audience must be in a token's aud; required, a value of this
	// deployd's own (e.g. its public_url), so that a token asked for
	// another service does not work here.
	Audience string `yaml:"audience"`
	// Rules map a token's claims to scopes.
	Rules []OIDCRule `yaml:"rules"`
}

// OIDCRule grants scopes to the tokens whose claims equal every field it
// sets. repository_id or repository_owner_id is required: names can be
// taken over after a rename, GitHub's numeric ids cannot.
type OIDCRule struct {
	// RepositoryID and RepositoryOwnerID are GitHub's numeric ids (a
	// number or a string of digits).
	RepositoryID      string `yaml:"repository_id"`
	RepositoryOwnerID string `yaml:"repository_owner_id"`
	// Ref is e.g. refs/heads/main or refs/tags/v1.2.3.
	Ref string `yaml:"ref"`
	// Environment is the job's environment.
	Environment string `yaml:"environment"`
	// EventName is the event that started the run (push,
	// workflow_dispatch, ...). Tokens of pull_request_target and
	// workflow_run runs match only rules that name the event.
	EventName string `yaml:"event_name"`
	// WorkflowRef and JobWorkflowRef are
	// OWNER/REPO/.github/workflows/FILE@REF of the run's workflow and of
	// the job's (a reusable workflow's) file.
	WorkflowRef    string `yaml:"workflow_ref"`
	JobWorkflowRef string `yaml:"job_workflow_ref"`
	// Scopes are granted to a matching token: deploy:SERVICE, deploy:*,
	// status:read.
	Scopes []string `yaml:"scopes"`
}

// applyDefaults fills the issuer.
func (o *OIDC) applyDefaults() {
	if o != nil {
		setString(&o.Issuer, DefaultOIDCIssuer)
	}
}

// oidc checks api.oidc.
func (v *validator) oidc() {
	o := v.c.API.OIDC
	if o == nil {
		return
	}
	const p = "api.oidc"
	if err := checkHTTPURL(o.Issuer); err != nil {
		v.add(p+".issuer", "%v", err)
	} else if !strings.HasPrefix(o.Issuer, "https://") && !loopbackURL(o.Issuer) {
		v.add(p+".issuer", "must be https (plain http only on a loopback address, for tests)")
	}
	if strings.TrimSpace(o.Audience) == "" {
		v.add(p+".audience", "required: a value of this deployd's own, e.g. its public_url, that workflows ask for as the token's audience")
	}
	if len(o.Rules) == 0 && !v.unread(p+".rules") {
		v.add(p+".rules", "list at least one rule: without one no token grants anything")
	}
	for i, r := range o.Rules {
		rp := fmt.Sprintf("%s.rules[%d]", p, i)
		if r.RepositoryID == "" && r.RepositoryOwnerID == "" && !v.unread(rp+".repository_id", rp+".repository_owner_id") {
			v.add(rp, "set repository_id or repository_owner_id (gh api repos/OWNER/REPO --jq .id, .owner.id): names can be reused, ids cannot")
		}
		for _, id := range [...]struct{ key, value string }{{"repository_id", r.RepositoryID}, {"repository_owner_id", r.RepositoryOwnerID}} {
			if id.value != "" && !githubID(id.value) {
				v.add(rp+"."+id.key, "%q is not a GitHub numeric id", truncate(id.value, 40))
			}
		}
		if len(r.Scopes) == 0 && !v.unread(rp+".scopes") {
			v.add(rp+".scopes", "list at least one scope: deploy:SERVICE, deploy:* or status:read")
		}
		for j, s := range r.Scopes {
			if msg := v.scopeProblem(s); msg != "" {
				v.add(fmt.Sprintf("%s.scopes[%d]", rp, j), "%s", msg)
			}
		}
	}
}

// scopeProblem says what is wrong with an API scope, "" when nothing.
func (v *validator) scopeProblem(s string) string {
	switch {
	case s == "status:read", s == "deploy:*":
		return ""
	case strings.HasPrefix(s, "deploy:"):
		if _, ok := v.c.Services[strings.TrimPrefix(s, "deploy:")]; ok || v.unread("services") {
			return ""
		}
		return fmt.Sprintf("%q names no configured service", s)
	}
	return fmt.Sprintf("unknown scope %q (deploy:SERVICE, deploy:* or status:read)", s)
}

// githubID reports whether s is a GitHub numeric id: digits, not zero.
func githubID(s string) bool {
	return s != "" && strings.Trim(s, "0123456789") == "" && strings.Trim(s, "0") != ""
}

// loopbackURL reports whether the URL's host is a loopback address or
// localhost.
func loopbackURL(s string) bool {
	u, err := url.Parse(s)
	if err != nil {
		return false
	}
	h := u.Hostname()
	ip := net.ParseIP(h)
	return h == "localhost" || (ip != nil && ip.IsLoopback())
}
