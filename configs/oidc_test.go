package configs

import (
	"reflect"
	"testing"
)

func TestOIDCConfig(t *testing.T) {
	c := mustParse(t, minimal+`
api:
  oidc:
    audience: https://deploy.example.test
    rules:
      - {repository_id: 74, ref: refs/heads/main, environment: production, scopes: [deploy:backend]}
      - {repository_owner_id: "65", event_name: workflow_run, scopes: ["deploy:*", status:read]}
`, nil)
	o := c.API.OIDC
	if o == nil {
		t.Fatal("api.oidc not read")
	}
	if o.Issuer != DefaultOIDCIssuer || o.Audience != "https://deploy.example.test" {
		t.Errorf("issuer %q audience %q", o.Issuer, o.Audience)
	}
	want := []OIDCRule{
		{RepositoryID: "74", Ref: "refs/heads/main", Environment: "production", Scopes: []string{"deploy:backend"}},
		{RepositoryOwnerID: "65", EventName: "workflow_run", Scopes: []string{"deploy:*", "status:read"}},
	}
	if !reflect.DeepEqual(o.Rules, want) {
		t.Errorf("rules %+v, want %+v", o.Rules, want)
	}
	if c := mustParse(t, minimal, nil); c.API.OIDC != nil {
		t.Errorf("api.oidc without the key: %+v, want off", c.API.OIDC)
	}
}

func TestOIDCConfigProblems(t *testing.T) {
	_, err := parse(t, minimal+`
api:
  oidc:
    issuer: http://issuer.example.com
    rules:
      - {ref: refs/heads/main, scopes: [deploy:backend]}
      - repository_id: octo-org/octo-repo
        scopes: [deploy:web, admin, "deploy:*"]
      - repository_owner_id: 0
        scopes: []
      - repository_id: 74
        scope: [deploy:backend]
`, nil)
	ps := problems(t, err)
	wantProblem(t, ps, "api.oidc.issuer", 13, "must be https")
	wantProblem(t, ps, "api.oidc.audience", 12, "required")
	wantProblem(t, ps, "api.oidc.rules[0]", 15, "set repository_id or repository_owner_id")
	wantProblem(t, ps, "api.oidc.rules[1].repository_id", 16, `"octo-org/octo-repo" is not a GitHub numeric id`)
	wantProblem(t, ps, "api.oidc.rules[1].scopes[0]", 17, `"deploy:web" names no configured service`)
	wantProblem(t, ps, "api.oidc.rules[1].scopes[1]", 17, `unknown scope "admin"`)
	wantProblem(t, ps, "api.oidc.rules[2].repository_owner_id", 18, "not a GitHub numeric id")
	wantProblem(t, ps, "api.oidc.rules[2].scopes", 19, "list at least one scope")
	wantProblem(t, ps, "api.oidc.rules[3].scope", 21, `unknown key "scope" (did you mean "scopes"?)`)
	for _, p := range ps {
		if p.Path == "api.oidc.rules[1].scopes[2]" || p.Path == "api.oidc.rules[3].scopes" {
			t.Errorf("problem with a valid or misspelt-and-reported key: %s", p)
		}
	}

	_, err = parse(t, minimal+"api:\n  oidc: {audience: deployd, rules: []}\n", nil)
	wantProblem(t, problems(t, err), "api.oidc.rules", 11, "list at least one rule")
	if _, err := parse(t, minimal+"api:\n  oidc: {issuer: 'http://127.0.0.1:8088', audience: a, rules: [{repository_id: 1, scopes: [status:read]}]}\n", nil); err != nil {
		t.Errorf("a loopback http issuer (tests): %v", err)
	}
}
