package configs

import (
	"reflect"
	"testing"
	"time"

	"github.com/deployd/deployd/deployer"
)

// releaseServices are three services that deploy on workflow_run and one
// that does not; the release sets of each test follow them (line 23 on).
const releaseServices = `
github:
  webhook_secret: s3cret-value
registries:
  ghcr.io: {}
services:
  backend:
    image: ghcr.io/acme/backend
    repository: acme/app
    on: {workflow_run: {workflows: [ci], tag: "sha-{{.ShortSHA}}"}}
  web:
    image: ghcr.io/acme/web
    repository: acme/app
    on: {workflow_run: {workflows: [ci], tag: "sha-{{.ShortSHA}}"}}
  worker:
    image: ghcr.io/acme/worker
    repository: acme/app
    on: {workflow_run: {workflows: [ci], tag: "sha-{{.ShortSHA}}"}}
  docs:
    image: ghcr.io/acme/docs
    repository: acme/app
release_sets:
`

func TestReleaseSetsLoadWithDefaults(t *testing.T) {
	c := mustParse(t, releaseServices+`
  v7:
    services: [web, backend]
`, nil)
	want := []deployer.ReleaseSet{{Name: "v7", Services: []string{"web", "backend"}, Gate: "workflow_run", Wait: 30 * time.Minute}}
	if got := c.ReleaseSetList(); !reflect.DeepEqual(got, want) {
		t.Errorf("release sets = %+v, want %+v", got, want)
	}
	c = mustParse(t, releaseServices+"  jobs: {services: [worker, web], gate: workflow_run, wait: 5m}\n", nil)
	want = []deployer.ReleaseSet{{Name: "jobs", Services: []string{"worker", "web"}, Gate: "workflow_run", Wait: 5 * time.Minute}}
	if got := c.ReleaseSetList(); !reflect.DeepEqual(got, want) {
		t.Errorf("release sets = %+v, want %+v", got, want)
	}
}

func TestReleaseSetProblems(t *testing.T) {
	_, err := parse(t, releaseServices+`  v7:
    services: [backend, web, ghost, backend]
    gate: package
    wait: 0s
  jobs:
    services: [web, docs]
  solo:
    services: [worker]
`, nil)
	ps := problems(t, err)
	wantProblem(t, ps, "release_sets.v7.services[2]", 24, `no service "ghost" under services`)
	wantProblem(t, ps, "release_sets.v7.services[3]", 24, `service "backend" is listed twice`)
	wantProblem(t, ps, "release_sets.v7.gate", 25, `unknown gate "package"`)
	wantProblem(t, ps, "release_sets.v7.wait", 26, "must be positive")
	// Sets are checked in name order: jobs before v7 claims web.
	wantProblem(t, ps, "release_sets.v7.services[1]", 24, `service "web" is already in release set "jobs"`)
	wantProblem(t, ps, "release_sets.jobs.services[1]", 28, `service "docs" has no on.workflow_run`)
	wantProblem(t, ps, "release_sets.solo.services", 30, "at least two services")
	if len(ps) != 7 {
		t.Errorf("%d problems, want 7:\n%s", len(ps), err)
	}
}
