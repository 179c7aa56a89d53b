package sqlite

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/deployd/deployd/deployer"
)

// deploymentBefore0009 reads deployment id with its steps, as Deployment
// does, from a store migrated to a version before 0009, which Deployment
// cannot read (it reads the verifications of 0009 too).
func deploymentBefore0009(t *testing.T, s *Store, id int64) deployer.Deployment {
	t.Helper()
	ctx := context.Background()
	tx, err := s.rdb.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	d, err := scanDeployment(tx.QueryRowContext(ctx, "SELECT "+s.columns+" FROM deployments WHERE id = ?", id))
	if err != nil {
		t.Fatal(err)
	}
	if d.Steps, err = readSteps(ctx, tx, id); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestFinishKeepsVerification: a finished deployment's verification is
// read back as written; one without stays without.
func TestFinishKeepsVerification(t *testing.T) {
	ctx := context.Background()
	s, _ := openTestStore(t)
	var ids []int64
	for _, svc := range []string{"backend", "web"} {
		d, err := s.Enqueue(ctx, deployer.Request{Service: svc, Tag: "v1", Trigger: deployer.Trigger{Kind: deployer.TriggerManual}})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.ClaimNext(ctx, svc); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, d.ID)
	}
	v := &deployer.Verification{Mode: deployer.AttestationsWarn, Verified: false, Problem: "signed by workflow x, not y",
		VerifiedAt: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	if err := s.Finish(ctx, deployer.Deployment{ID: ids[0], State: deployer.StateSucceeded, Verification: v}); err != nil {
		t.Fatal(err)
	}
	if err := s.Finish(ctx, deployer.Deployment{ID: ids[1], State: deployer.StateSucceeded}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Deployment(ctx, ids[0])
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Verification, v) {
		t.Fatalf("verification %+v, want %+v", got.Verification, v)
	}
	if got, err := s.Deployment(ctx, ids[1]); err != nil || got.Verification != nil {
		t.Fatalf("deployment without verification: %+v, %v", got.Verification, err)
	}
}
