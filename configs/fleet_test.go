package configs

import (
	"slices"
	"testing"

	"github.com/deployd/deployd/deployer"
)

// A service's hosts and rollout policy are read, defaulted and checked.
func TestServiceHostsAndRollout(t *testing.T) {
	c := mustParse(t, minimal+"    hosts: [web-1, web-2]\n    rollout: one-by-one\n", nil)
	s := c.Services["backend"]
	if !slices.Equal(s.Hosts, []string{"web-1", "web-2"}) || s.Rollout != deployer.RolloutOneByOne {
		t.Errorf("hosts %v rollout %q", s.Hosts, s.Rollout)
	}
	if c := mustParse(t, minimal, nil); c.Services["backend"].Rollout != deployer.RolloutAllAtOnce || len(c.Services["backend"].Hosts) != 0 {
		t.Errorf("default: hosts %v rollout %q, want none and all-at-once", c.Services["backend"].Hosts, c.Services["backend"].Rollout)
	}

	_, err := parse(t, minimal+"    hosts: [web-1, web.2, web-1]\n    rollout: canary\n", nil)
	ps := problems(t, err)
	wantProblem(t, ps, "services.backend.hosts[1]", -1, `host "web.2" must be`)
	wantProblem(t, ps, "services.backend.hosts[2]", -1, "listed twice")
	wantProblem(t, ps, "services.backend.rollout", -1, `not "canary"`)
}
