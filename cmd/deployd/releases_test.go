package main

import (
	"testing"

	"github.com/deployd/deployd/configs"
	"github.com/deployd/deployd/deployer"
)

// The reconciler catches up only the services of no release set: a set's
// members go live together, in a release.
func TestReconcilerLeavesReleaseMembersAlone(t *testing.T) {
	cfg := &configs.Config{ReleaseSets: map[string]*deployer.ReleaseSet{
		"v7": {Name: "v7", Services: []string{"backend", "web"}},
	}}
	services := []deployer.Service{{Name: "backend"}, {Name: "docs"}, {Name: "web"}, {Name: "worker"}}
	got := outsideReleaseSets(cfg, services)
	if len(got) != 2 || got[0].Name != "docs" || got[1].Name != "worker" {
		t.Errorf("reconciled services %+v, want docs and worker", got)
	}
	if got := outsideReleaseSets(&configs.Config{}, services); len(got) != 4 {
		t.Errorf("without release sets %d services are reconciled, want all 4", len(got))
	}
}
