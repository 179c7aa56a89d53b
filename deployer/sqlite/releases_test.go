package sqlite

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/deployd/deployd/deployer"
)

// gate records a delivery that is set v7's gate for commit and returns
// the release it queued.
func gate(t *testing.T, s *Store, n int, commit string) int64 {
	t.Helper()
	d := deployer.Delivery{ID: fmt.Sprintf("run-%d", n), Event: "workflow_run", BodySHA256: fmt.Sprintf("body-%d", n)}
	run := deployer.Trigger{Kind: deployer.TriggerWebhook, Event: "workflow_run", RunID: int64(n), Commit: commit}
	rec, ids, err := s.RecordReleaseDelivery(context.Background(), d, nil, []deployer.ReleaseIntake{{
		Set: "v7", Commit: commit, Gate: true, Trigger: run,
		Members: []deployer.ReleaseMember{{Service: "backend", Tag: "sha-" + commit[:7]}, {Service: "web", Tag: "sha-" + commit[:7]}}}})
	if err != nil || rec.Duplicate || len(ids) != 1 {
		t.Fatalf("record gate %d: %+v %v %v", n, rec, ids, err)
	}
	return ids[0]
}

// A release ends once: finishing it again, or one that does not exist,
// is refused and changes nothing.
func TestFinishReleaseOnce(t *testing.T) {
	s, _ := openTestStore(t)
	ctx := context.Background()
	id := gate(t, s, 1, strings.Repeat("a", 40))
	rel, ok, err := s.ClaimRelease(ctx, "v7")
	if err != nil || !ok || rel.ID != id || rel.State != deployer.ReleaseRunning || rel.StartedAt == nil {
		t.Fatalf("claim: %+v %v %v", rel, ok, err)
	}
	rel.State, rel.FailedMember, rel.Reason = deployer.ReleaseRolledBack, "web", "web failed"
	if err := s.FinishRelease(ctx, rel); err != nil {
		t.Fatal(err)
	}
	rel.State = deployer.ReleaseSucceeded
	if err := s.FinishRelease(ctx, rel); err == nil || !strings.Contains(err.Error(), "release is already rolled_back") {
		t.Errorf("finishing again: %v", err)
	}
	if err := s.FinishRelease(ctx, deployer.Release{ID: 99, State: deployer.ReleaseFailed}); !errors.Is(err, deployer.ErrNotFound) {
		t.Errorf("finishing an unknown release: %v", err)
	}
	if err := s.FinishRelease(ctx, deployer.Release{ID: id, State: deployer.ReleaseRunning}); err == nil {
		t.Error("running was accepted as an end state")
	}
	got, err := s.Release(ctx, id)
	if err != nil || got.State != deployer.ReleaseRolledBack || got.FailedMember != "web" || got.FinishedAt == nil ||
		got.Trigger.RunID != 1 || len(got.Members) != 2 {
		t.Errorf("after finishing: %+v, %v", got, err)
	}
}

// Releases lists newest first, by set, and pages with Before; a claim
// supersedes the older queued releases of the set.
func TestReleasesListAndSupersede(t *testing.T) {
	s, _ := openTestStore(t)
	ctx := context.Background()
	for i := 1; i <= 3; i++ {
		gate(t, s, i, strings.Repeat(fmt.Sprint(i), 40))
	}
	page, err := s.Releases(ctx, "v7", deployer.Page{Limit: 2})
	if err != nil || len(page) != 2 || page[0].ID != 3 || page[1].ID != 2 {
		t.Fatalf("first page: %+v, %v", page, err)
	}
	if page[1].State != deployer.ReleaseSuperseded || !strings.Contains(page[1].Reason, "release 3") {
		t.Errorf("release 2 after release 3 was queued: %s %q", page[1].State, page[1].Reason)
	}
	rest, err := s.Releases(ctx, "", deployer.Page{Before: page[1].ID})
	if err != nil || len(rest) != 1 || rest[0].ID != 1 {
		t.Fatalf("second page: %+v, %v", rest, err)
	}
	if none, err := s.Releases(ctx, "other", deployer.Page{}); err != nil || len(none) != 0 {
		t.Errorf("another set's releases: %+v, %v", none, err)
	}
	if _, ok, err := s.PreviousRelease(ctx, "v7", 3); err != nil || ok {
		t.Errorf("a previous succeeded release where none succeeded: %v %v", ok, err)
	}
}
