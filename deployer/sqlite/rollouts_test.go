package sqlite

import (
	"context"
	"errors"
	"testing"

	"github.com/deployd/deployd/deployer"
)

// rollout claims a queued deployment of backend with digest and starts its
// rollout; it returns the deployment and the rollout id.
func rollout(t *testing.T, s *Store, digest string) (deployer.Deployment, int64) {
	t.Helper()
	ctx := context.Background()
	if _, err := s.Enqueue(ctx, request("backend", "latest")); err != nil {
		t.Fatal(err)
	}
	parent, ok, err := s.ClaimNext(ctx, "backend")
	if err != nil || !ok {
		t.Fatalf("claim: %v %v", ok, err)
	}
	parent.Digest = digest
	id, err := s.StartRollout(ctx, parent, deployer.RolloutOneByOne)
	if err != nil {
		t.Fatal(err)
	}
	return parent, id
}

// Each host's deployment is a row of its own under the rollout, with its
// own step log and state; what runs per host follows the results.
func TestRolloutHostDeployments(t *testing.T) {
	ctx := context.Background()
	s, _ := openTestStore(t)
	parent, id := rollout(t, s, digestA)

	web1, err := s.StartHostDeployment(ctx, id, parent, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	web2, err := s.StartHostDeployment(ctx, id, parent, "web-2")
	if err != nil {
		t.Fatal(err)
	}
	if web1.Host != "web-1" || web1.RolloutID != id || web1.State != deployer.StateRunning || web1.Digest != digestA {
		t.Errorf("host deployment: %+v", web1)
	}
	if err := s.AppendStep(ctx, web1.ID, deployer.Step{Name: "pull", Outcome: "ok"}); err != nil {
		t.Fatal(err)
	}
	web1.State = deployer.StateSucceeded
	if err := s.FinishHostDeployment(ctx, web1, digestA); err != nil {
		t.Fatal(err)
	}
	web2.State, web2.ErrorClass = deployer.StateRolledBack, deployer.ClassHealth
	if err := s.FinishHostDeployment(ctx, web2, ""); err != nil {
		t.Fatal(err)
	}
	notHost := parent
	notHost.State = deployer.StateSucceeded
	if err := s.FinishHostDeployment(ctx, notHost, digestA); !errors.Is(err, deployer.ErrNotFound) {
		t.Errorf("finishing the queue's deployment as a host's: %v, want ErrNotFound", err)
	}

	ds, err := s.RolloutDeployments(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 2 || ds[0].Host != "web-1" || ds[0].State != deployer.StateSucceeded || len(ds[0].Steps) != 1 ||
		ds[1].Host != "web-2" || ds[1].State != deployer.StateRolledBack || len(ds[1].Steps) != 0 {
		t.Errorf("rollout deployments: %+v", ds)
	}
	got, err := s.Deployment(ctx, web2.ID)
	if err != nil || got.Host != "web-2" || got.RolloutID != id {
		t.Errorf("Deployment(%d) = %+v, %v; want web-2's in rollout %d", web2.ID, got, err, id)
	}

	hosts, err := s.HostStatuses(ctx, "backend")
	if err != nil {
		t.Fatal(err)
	}
	if len(hosts) != 2 || hosts[0].Digest != digestA || hosts[0].State != deployer.StateSucceeded ||
		hosts[1].Digest != "" || hosts[1].State != deployer.StateRolledBack {
		t.Errorf("host statuses: %+v", hosts)
	}
	if _, ok, err := s.ClaimNext(ctx, "backend"); ok || err != nil {
		t.Errorf("the queue claimed a deployment: %v %v; host deployments are never queued", ok, err)
	}
}

// A host that reports after the hub marked its deployment interrupted
// still records its result; a failure keeps the digest that runs.
func TestRolloutLateResultAfterInterrupt(t *testing.T) {
	ctx := context.Background()
	s, _ := openTestStore(t)
	parent, id := rollout(t, s, digestA)
	first, err := s.StartHostDeployment(ctx, id, parent, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	first.State = deployer.StateSucceeded
	if err := s.FinishHostDeployment(ctx, first, digestA); err != nil {
		t.Fatal(err)
	}
	parent.State = deployer.StateSucceeded
	if err := s.Finish(ctx, parent); err != nil {
		t.Fatal(err)
	}

	parent, id = rollout(t, s, digestB)
	second, err := s.StartHostDeployment(ctx, id, parent, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.InterruptRunning(ctx); err != nil {
		t.Fatal(err)
	}
	second.State = deployer.StateRolledBack
	if err := s.FinishHostDeployment(ctx, second, digestA); err != nil {
		t.Fatalf("a late result after an interrupt: %v", err)
	}
	hosts, err := s.HostStatuses(ctx, "backend")
	if err != nil {
		t.Fatal(err)
	}
	if len(hosts) != 1 || hosts[0].Digest != digestA || hosts[0].State != deployer.StateRolledBack || hosts[0].DeploymentID != second.ID {
		t.Errorf("host statuses: %+v; want web-1 still on A, its newest deployment rolled back", hosts)
	}
	second.State = deployer.StateSucceeded
	if err := s.FinishHostDeployment(ctx, second, digestB); err == nil {
		t.Error("a finished host deployment was finished again")
	}
}
