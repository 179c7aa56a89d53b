package configs

import (
	"slices"
	"testing"

	"github.com/deployd/deployd/deployer"
)

// A service's hosts and rollout policy are read, defaulted and checked.
func TestServiceHostsAndRollout(t *testing.T) {
	hub := "fleet: {role: hub}\n"
	c := mustParse(t, hub+minimal+"    hosts: [web-1, web-2]\n    rollout: one-by-one\n", nil)
	s := c.Services["backend"]
	if !slices.Equal(s.Hosts, []string{"web-1", "web-2"}) || s.Rollout != deployer.RolloutOneByOne {
		t.Errorf("hosts %v rollout %q", s.Hosts, s.Rollout)
	}
	if c := mustParse(t, minimal, nil); c.Services["backend"].Rollout != deployer.RolloutAllAtOnce || len(c.Services["backend"].Hosts) != 0 {
		t.Errorf("default: hosts %v rollout %q, want none and all-at-once", c.Services["backend"].Hosts, c.Services["backend"].Rollout)
	}

	_, err := parse(t, hub+minimal+"    hosts: [web-1, web.2, web-1]\n    rollout: canary\n", nil)
	ps := problems(t, err)
	wantProblem(t, ps, "services.backend.hosts[1]", -1, `host "web.2" must be`)
	wantProblem(t, ps, "services.backend.hosts[2]", -1, "listed twice")
	wantProblem(t, ps, "services.backend.rollout", -1, `not "canary"`)
}

// An agent needs its host, the hub's URL and its credentials, and holds
// no GitHub secret; only a hub sends services to hosts.
func TestFleetRoles(t *testing.T) {
	agent := `
fleet: {role: agent, host: web-1, nats: {url: "nats://127.0.0.1:4222"}, credentials_file: /etc/deployd/fleet.creds}
registries:
  ghcr.io: {}
services:
  backend: {image: ghcr.io/acme/backend, repository: acme/app}
`
	c := mustParse(t, agent, nil)
	if c.Fleet.Host != "web-1" || c.Fleet.NATS.URL != "nats://127.0.0.1:4222" {
		t.Errorf("agent fleet: %+v", c.Fleet)
	}

	_, err := parse(t, `
fleet: {role: agent, host: "web 1", nats: {url: "http://u:p@hub:4222"}}
github:
  webhook_secret: s3cret-value
  app: {id: 1, private_key_file: /k.pem}
registries:
  ghcr.io: {}
services:
  backend: {image: ghcr.io/acme/backend, repository: acme/app, hosts: [web-2]}
`, nil)
	ps := problems(t, err)
	wantProblem(t, ps, "fleet.host", 2, `host "web 1" must be`)
	wantProblem(t, ps, "fleet.nats.url", 2, "want nats://")
	wantProblem(t, ps, "fleet.credentials_file", -1, "required for an agent")
	wantProblem(t, ps, "github.webhook_secret", 4, "takes no webhooks")
	wantProblem(t, ps, "github.app", 5, "mints no tokens")
	wantProblem(t, ps, "services.backend.hosts", 9, "only a hub")

	_, err = parse(t, "fleet: {role: boss}\n"+minimal, nil)
	wantProblem(t, problems(t, err), "fleet.role", 1, `not "boss"`)

	c = mustParse(t, "fleet: {role: hub}\n"+minimal, nil)
	if c.Fleet.NATS.Listen != DefaultNATSListen || c.Fleet.ResultTimeout.Std() != defaultResultTimeout {
		t.Errorf("hub defaults: %+v", c.Fleet)
	}
}
