package deployer_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/deployd/deployd/deployer"
	"github.com/deployd/deployd/deployer/sqlite"
	"github.com/deployd/deployd/internal/testclock"
)

const (
	commitA = "aaaaaaa000000000000000000000000000000001"
	commitB = "bbbbbbb000000000000000000000000000000002"
)

// tagDigest is the digest the fake registry of these tests gives a tag.
func tagDigest(service, tag string) string {
	sum := sha256.Sum256([]byte(service + ":" + tag))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// switchingExecutor puts a version in place by recording it as what runs;
// a service in failing ends rolled_back (its own rollback keeps what ran).
type switchingExecutor struct {
	store   *sqlite.Store
	mu      sync.Mutex
	failing map[string]bool
	ran     []deployer.Deployment
}

func (e *switchingExecutor) fail(service string, on bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.failing[service] = on
}

func (e *switchingExecutor) Execute(ctx context.Context, d deployer.Deployment) deployer.Deployment {
	e.mu.Lock()
	failing := e.failing[d.Service]
	e.ran = append(e.ran, d)
	e.mu.Unlock()
	if d.Digest == "" {
		d.Digest = tagDigest(d.Service, d.Tag)
	}
	if failing {
		d.State, d.ErrorClass, d.Error = deployer.StateRolledBack, deployer.ClassHealth, "health check failed"
		return d
	}
	st, err := e.store.ServiceStatus(ctx, d.Service)
	if err != nil {
		d.State, d.Error = deployer.StateFailed, err.Error()
		return d
	}
	if reason, err := deployer.NewGuard(e.store).Digest(ctx, d.Service, d.Trigger, d.Digest); err != nil || reason != "" {
		d.State, d.Steps = deployer.StateUnchanged, append(d.Steps, deployer.Step{Name: deployer.StepGuard, Outcome: "ok", Message: reason})
		return d
	}
	if st.Digest == d.Digest {
		d.State = deployer.StateUnchanged
		return d
	}
	st.PreviousDigest, st.Digest, st.Tag, st.LastDeploymentID = st.Digest, d.Digest, d.Tag, d.ID
	if d.Trigger.RunID > 0 {
		st.LastRunID, st.LastRunNumber = d.Trigger.RunID, d.Trigger.RunNumber
	}
	if err := e.store.SetServiceStatus(ctx, st); err != nil {
		d.State, d.Error = deployer.StateFailed, err.Error()
		return d
	}
	d.State = deployer.StateSucceeded
	return d
}

// releaseRig is a store, a queue with the switching executor and a
// releaser of the set v7 = [backend, web], on a settable clock.
type releaseRig struct {
	store    *sqlite.Store
	exec     *switchingExecutor
	queue    *deployer.Queue
	releaser *deployer.Releaser
	clock    *testclock.Clock
	seq      int
}

func newReleaseRig(t *testing.T) *releaseRig {
	t.Helper()
	ctx := context.Background()
	clock := testclock.New(time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC))
	store, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "deployd.db"), sqlite.WithClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	rig := &releaseRig{store: store, clock: clock, exec: &switchingExecutor{store: store, failing: map[string]bool{}}}
	var observe func(deployer.Deployment)
	var mu sync.Mutex
	rig.queue, err = deployer.NewQueue(deployer.QueueConfig{Store: store, Executor: rig.exec, Logger: zerolog.Nop(),
		Notify: func(d deployer.Deployment) {
			mu.Lock()
			o := observe
			mu.Unlock()
			if o != nil {
				o(d)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	rig.releaser, err = deployer.NewReleaser(deployer.ReleaserConfig{
		Sets:  []deployer.ReleaseSet{{Name: "v7", Services: []string{"backend", "web"}, Gate: deployer.GateWorkflowRun, Wait: 30 * time.Minute}},
		Store: store, Status: store, Queue: rig.queue, Now: clock.Now, ExpiryInterval: time.Hour, Logger: zerolog.Nop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	observe = rig.releaser.Observe
	mu.Unlock()
	if err := rig.queue.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rig.queue.Shutdown(context.Background()) })
	return rig
}

// start runs the releaser's workers until the test ends.
func (r *releaseRig) start(t *testing.T) {
	t.Helper()
	if err := r.releaser.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.releaser.Shutdown)
}

// deliver records a delivery of event with reqs through the releaser.
func (r *releaseRig) deliver(t *testing.T, event string, reqs ...deployer.Request) (deployer.Receipt, deployer.Delivery) {
	t.Helper()
	r.seq++
	d := deployer.Delivery{ID: fmt.Sprintf("delivery-%d", r.seq), Event: event,
		BodySHA256: fmt.Sprintf("body-%d", r.seq), Result: deployer.ResultIgnored}
	rec, err := r.releaser.RecordDelivery(context.Background(), d, reqs)
	if err != nil {
		t.Fatal(err)
	}
	ds, err := r.store.Deliveries(context.Background(), deployer.Page{Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	return rec, ds[0]
}

func runRequests(commit string, runID int64, services ...string) []deployer.Request {
	var reqs []deployer.Request
	for _, s := range services {
		reqs = append(reqs, deployer.Request{Service: s, Tag: "sha-" + commit[:7],
			Trigger: deployer.Trigger{Kind: deployer.TriggerWebhook, Event: "workflow_run", RunID: runID, RunNumber: int(runID), Commit: commit}})
	}
	return reqs
}

func packageRequest(service, commit, tag string) deployer.Request {
	return deployer.Request{Service: service, Tag: tag, Digest: tagDigest(service, "pushed-"+tag),
		Trigger: deployer.Trigger{Kind: deployer.TriggerWebhook, Event: "registry_package", Commit: commit}}
}

// waitRelease waits for release id to reach a final state.
func (r *releaseRig) waitRelease(t *testing.T, id int64) deployer.Release {
	t.Helper()
	var rel deployer.Release
	waitEnd(t, fmt.Sprintf("release %d", id), func() (string, bool) {
		var err error
		if rel, err = r.store.Release(context.Background(), id); err != nil {
			t.Fatal(err)
		}
		return string(rel.State), rel.State.Final()
	})
	return rel
}

// waitEnd polls state until it reports the end, at most 20 seconds.
func waitEnd(t *testing.T, what string, state func() (string, bool)) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		now, done := state()
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still %s", what, now)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (r *releaseRig) releases(t *testing.T) []deployer.Release {
	t.Helper()
	rels, err := r.store.Releases(context.Background(), "", deployer.Page{})
	if err != nil {
		t.Fatal(err)
	}
	return rels
}

func (r *releaseRig) running(t *testing.T, service string) string {
	t.Helper()
	st, err := r.store.ServiceStatus(context.Background(), service)
	if err != nil {
		t.Fatal(err)
	}
	return st.Digest
}

func member(t *testing.T, rel deployer.Release, service string) deployer.ReleaseMember {
	t.Helper()
	for _, m := range rel.Members {
		if m.Service == service {
			return m
		}
	}
	t.Fatalf("release %d has no member %s: %+v", rel.ID, service, rel.Members)
	return deployer.ReleaseMember{}
}

// A package event of a set's service is held, not deployed, until the
// workflow run of its commit arrives; the run then deploys every member,
// the held one at the package event's digest.
func TestReleaseHoldsPackageEventsUntilTheRun(t *testing.T) {
	rig := newReleaseRig(t)
	rig.start(t)
	rec, d := rig.deliver(t, "registry_package", packageRequest("backend", commitA, "latest"))
	if len(rec.Deployments) != 0 || rec.Ignored != "" {
		t.Fatalf("held package event: receipt %+v", rec)
	}
	if d.Result != deployer.ResultQueued || !strings.Contains(d.Reason, "held in release 1 of set v7 (commit aaaaaaa)") {
		t.Errorf("delivery %s: %q", d.Result, d.Reason)
	}
	// The receipt says where the delivery went, with the recorded reason.
	if !slices.Equal(rec.Releases, []int64{1}) || rec.Reason != d.Reason {
		t.Errorf("held package event: receipt releases %v, reason %q; want [1], %q", rec.Releases, rec.Reason, d.Reason)
	}
	rels := rig.releases(t)
	if len(rels) != 1 || rels[0].State != deployer.ReleaseWaiting || rels[0].Commit != commitA {
		t.Fatalf("releases after the package event: %+v", rels)
	}
	if ds, _ := rig.store.Deployments(context.Background(), "", deployer.Page{}); len(ds) != 0 {
		t.Fatalf("a held package event queued %+v", ds)
	}

	rec, d = rig.deliver(t, "workflow_run", runRequests(commitA, 10, "backend", "web")...)
	if !strings.Contains(d.Reason, "release 1 of set v7 (commit aaaaaaa) queued with the package events it held") {
		t.Errorf("run delivery: %q", d.Reason)
	}
	if !slices.Equal(rec.Releases, []int64{1}) || rec.Reason != d.Reason || len(rec.Deployments) != 0 {
		t.Errorf("run delivery: receipt %+v, want release 1 with the reason %q", rec, d.Reason)
	}
	rel := rig.waitRelease(t, 1)
	if rel.State != deployer.ReleaseSucceeded || rel.FailedMember != "" || rel.Trigger.RunID != 10 {
		t.Fatalf("release: %+v", rel)
	}
	wantBackend, wantWeb := tagDigest("backend", "pushed-latest"), tagDigest("web", "sha-aaaaaaa")
	if got := rig.running(t, "backend"); got != wantBackend {
		t.Errorf("backend runs %s, want the package event's digest %s", got, wantBackend)
	}
	if got := rig.running(t, "web"); got != wantWeb {
		t.Errorf("web runs %s, want sha-aaaaaaa's %s", got, wantWeb)
	}
	for _, svc := range []string{"backend", "web"} {
		m := member(t, rel, svc)
		dep, err := rig.store.Deployment(context.Background(), m.DeploymentID)
		if err != nil || dep.ReleaseID != 1 || m.State != deployer.StateSucceeded {
			t.Errorf("%s's deployment %+v (%v), member %+v", svc, dep, err, m)
		}
	}
	// The order is the set's: backend, then web.
	if len(rig.exec.ran) != 2 || rig.exec.ran[0].Service != "backend" || rig.exec.ran[1].Service != "web" {
		t.Errorf("ran %+v", rig.exec.ran)
	}
}

// A package event that arrives after the run of its commit queued the
// release is matched to it and pins the digest of a member not yet
// deployed; other services of the delivery deploy as before.
func TestReleaseMatchesLatePackageEventsToTheRun(t *testing.T) {
	rig := newReleaseRig(t)
	_, d := rig.deliver(t, "workflow_run", runRequests(commitA, 10, "backend", "web")...)
	if !strings.Contains(d.Reason, "release 1 of set v7 (commit aaaaaaa) queued") {
		t.Fatalf("run delivery: %q", d.Reason)
	}
	pkg := packageRequest("web", commitA, "sha-aaaaaaa")
	plain := deployer.Request{Service: "docs", Tag: "latest", Trigger: pkg.Trigger}
	rec, d := rig.deliver(t, "registry_package", pkg, plain)
	if len(rec.Deployments) != 1 || !strings.Contains(d.Reason, "matched to release 1 of set v7 (commit aaaaaaa), queued") {
		t.Fatalf("late package event: %+v, %q", rec, d.Reason)
	}
	rig.start(t)
	rel := rig.waitRelease(t, 1)
	if rel.State != deployer.ReleaseSucceeded {
		t.Fatalf("release: %+v", rel)
	}
	if got, want := rig.running(t, "web"), tagDigest("web", "pushed-sha-aaaaaaa"); got != want {
		t.Errorf("web runs %s, want the late package event's digest %s", got, want)
	}
	if got, want := rig.running(t, "backend"), tagDigest("backend", "sha-aaaaaaa"); got != want {
		t.Errorf("backend runs %s, want %s", got, want)
	}
	dep, err := rig.store.Deployment(context.Background(), rec.Deployments[0])
	if err != nil || dep.Service != "docs" || dep.ReleaseID != 0 {
		t.Errorf("the plain request: %+v, %v", dep, err)
	}
}

// Held package events whose run does not come within the set's wait
// expire, with the reason; nothing of them is deployed, and a run that
// comes later starts a release of its own.
func TestReleaseHeldPackageEventsExpire(t *testing.T) {
	rig := newReleaseRig(t)
	rig.deliver(t, "registry_package", packageRequest("backend", commitA, "latest"))
	ctx := context.Background()
	rig.clock.Add(29 * time.Minute)
	if out, err := rig.releaser.Expire(ctx, "v7"); err != nil || len(out) != 0 {
		t.Fatalf("expired before the wait: %+v, %v", out, err)
	}
	rig.clock.Add(2 * time.Minute)
	out, err := rig.releaser.Expire(ctx, "v7")
	if err != nil || len(out) != 1 {
		t.Fatalf("expire: %+v, %v", out, err)
	}
	rel, err := rig.store.Release(ctx, out[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if rel.State != deployer.ReleaseExpired || !strings.Contains(rel.Reason, "no successful workflow_run for this commit arrived within 30m0s") ||
		rel.FinishedAt == nil || member(t, rel, "backend").Digest != tagDigest("backend", "pushed-latest") {
		t.Errorf("expired release: %+v", rel)
	}
	if ds, _ := rig.store.Deployments(ctx, "", deployer.Page{}); len(ds) != 0 {
		t.Fatalf("an expired package event was deployed: %+v", ds)
	}

	rig.deliver(t, "workflow_run", runRequests(commitA, 10, "backend", "web")...)
	rig.start(t)
	again := rig.waitRelease(t, 2)
	if again.State != deployer.ReleaseSucceeded || again.Commit != commitA {
		t.Fatalf("the run after the expiry: %+v", again)
	}
	if got, want := rig.running(t, "backend"), tagDigest("backend", "sha-aaaaaaa"); got != want {
		t.Errorf("backend runs %s, want the run's tag %s (not the expired event's digest)", got, want)
	}
}

// When a member fails, the members that already switched go back to the
// digest they had in the set's previous succeeded release, and the
// release is rolled_back naming the member.
func TestReleaseRollsBackToThePreviousRelease(t *testing.T) {
	rig := newReleaseRig(t)
	rig.start(t)
	rig.deliver(t, "workflow_run", runRequests(commitA, 10, "backend", "web")...)
	if rel := rig.waitRelease(t, 1); rel.State != deployer.ReleaseSucceeded {
		t.Fatalf("first release: %+v", rel)
	}
	// Between the releases backend is deployed alone (manually): a
	// rollback to "the previous of that service" would bring this back.
	ctx := context.Background()
	manual, err := rig.queue.Enqueue(ctx, deployer.Request{Service: "backend", Tag: "hotfix", Trigger: deployer.Trigger{Kind: deployer.TriggerManual}})
	if err != nil {
		t.Fatal(err)
	}
	waitDeployment(t, rig.store, manual.ID)

	rig.exec.fail("web", true)
	rig.deliver(t, "workflow_run", runRequests(commitB, 11, "backend", "web")...)
	rel := rig.waitRelease(t, 2)
	if rel.State != deployer.ReleaseRolledBack || rel.FailedMember != "web" {
		t.Fatalf("second release: %+v", rel)
	}
	first := tagDigest("backend", "sha-aaaaaaa")
	if !strings.Contains(rel.Reason, "web's deployment") || !strings.Contains(rel.Reason, "backend rolled back to "+deployer.ShortDigest(first)) {
		t.Errorf("reason: %q", rel.Reason)
	}
	if got := rig.running(t, "backend"); got != first {
		t.Errorf("backend runs %s, want release 1's %s", got, first)
	}
	b := member(t, rel, "backend")
	if b.State != deployer.StateSucceeded || b.RollbackID == 0 || b.RollbackState != deployer.StateSucceeded {
		t.Errorf("backend member: %+v", b)
	}
	if w := member(t, rel, "web"); w.State != deployer.StateRolledBack || w.RollbackID != 0 {
		t.Errorf("web member: %+v", w)
	}
	rb, err := rig.store.Deployment(ctx, b.RollbackID)
	if err != nil || rb.Trigger.Kind != deployer.TriggerRollback || rb.Digest != first || rb.ReleaseID != 2 {
		t.Errorf("rollback deployment: %+v, %v", rb, err)
	}
}

// The set's first release has no previous release: a member that
// switched goes back to what ran before it.
func TestFirstReleaseRollsBackToWhatRanBefore(t *testing.T) {
	rig := newReleaseRig(t)
	ctx := context.Background()
	before, err := rig.queue.Enqueue(ctx, deployer.Request{Service: "backend", Tag: "v0", Trigger: deployer.Trigger{Kind: deployer.TriggerManual}})
	if err != nil {
		t.Fatal(err)
	}
	waitDeployment(t, rig.store, before.ID)
	rig.exec.fail("web", true)
	rig.start(t)
	rig.deliver(t, "workflow_run", runRequests(commitA, 10, "backend", "web")...)
	rel := rig.waitRelease(t, 1)
	if rel.State != deployer.ReleaseRolledBack || rel.FailedMember != "web" {
		t.Fatalf("release: %+v", rel)
	}
	if got, want := rig.running(t, "backend"), tagDigest("backend", "v0"); got != want {
		t.Errorf("backend runs %s, want what ran before, %s", got, want)
	}
}

// A newer release of the set supersedes a queued older one.
func TestNewerReleaseSupersedesQueuedOne(t *testing.T) {
	rig := newReleaseRig(t)
	rig.deliver(t, "workflow_run", runRequests(commitA, 10, "backend", "web")...)
	rig.deliver(t, "workflow_run", runRequests(commitB, 11, "backend", "web")...)
	rig.start(t)
	if rel := rig.waitRelease(t, 2); rel.State != deployer.ReleaseSucceeded {
		t.Fatalf("newer release: %+v", rel)
	}
	old, err := rig.store.Release(context.Background(), 1)
	if err != nil || old.State != deployer.ReleaseSuperseded || len(rig.exec.ran) != 2 {
		t.Fatalf("older release %+v, %v; ran %+v", old, err, rig.exec.ran)
	}
	if got, want := rig.running(t, "web"), tagDigest("web", "sha-bbbbbbb"); got != want {
		t.Errorf("web runs %s, want %s", got, want)
	}
}

// Never backwards still holds: a run older than the one deployed starts
// no release, and a repeated delivery brings nothing to one.
func TestReleaseIntakeGuardAndDuplicates(t *testing.T) {
	rig := newReleaseRig(t)
	rig.start(t)
	rig.deliver(t, "workflow_run", runRequests(commitB, 11, "backend", "web")...)
	rig.waitRelease(t, 1)
	rec, d := rig.deliver(t, "workflow_run", runRequests(commitA, 10, "backend", "web")...)
	if rec.Ignored == "" || !strings.Contains(d.Reason, "workflow run 10 (#10) is older than run 11") {
		t.Errorf("older run: %+v, delivery %s %q", rec, d.Result, d.Reason)
	}
	pkg := packageRequest("backend", "", "latest")
	rec, d = rig.deliver(t, "registry_package", pkg)
	if rec.Ignored == "" || !strings.Contains(d.Reason, "names no commit") {
		t.Errorf("package event without a commit: %+v, %q", rec, d.Reason)
	}
	dup := deployer.Delivery{ID: "same", Event: "registry_package", BodySHA256: "same-body"}
	for i := range 2 {
		rec, err := rig.releaser.RecordDelivery(context.Background(), dup, []deployer.Request{packageRequest("backend", commitA, "v2")})
		// The first joins release 2; the repeat names no release.
		if err != nil || rec.Duplicate != (i == 1) || (len(rec.Releases) == 0) != (i == 1) {
			t.Fatalf("delivery %d: %+v, %v", i, rec, err)
		}
	}
	rels := rig.releases(t)
	if len(rels) != 2 || rels[0].State != deployer.ReleaseWaiting || len(rels[0].Members) != 1 {
		t.Errorf("releases: %+v", rels)
	}
}

func waitDeployment(t *testing.T, store *sqlite.Store, id int64) deployer.Deployment {
	t.Helper()
	var d deployer.Deployment
	waitEnd(t, fmt.Sprintf("deployment %d", id), func() (string, bool) {
		var err error
		if d, err = store.Deployment(context.Background(), id); err != nil {
			t.Fatal(err)
		}
		return string(d.State), d.State.Final()
	})
	return d
}

// A member that the never-backwards rule holds back before its switch (a
// re-run of a commit whose images ran here and were replaced) did not go
// live: the release does not succeed, and what switched goes back.
func TestReleaseHeldBackMemberFailsTheRelease(t *testing.T) {
	rig := newReleaseRig(t)
	rig.start(t)
	rig.deliver(t, "workflow_run", runRequests(commitA, 10, "backend", "web")...)
	rig.waitRelease(t, 1)
	rig.deliver(t, "workflow_run", runRequests(commitB, 11, "backend", "web")...)
	rig.waitRelease(t, 2)
	// Commit A's run again, as a new run: backend has a new image of
	// commit A (a rebuild) and switches; web's is the one release 2
	// replaced.
	reqs := runRequests(commitA, 12, "backend", "web")
	reqs[0].Tag = "rebuilt"
	rig.deliver(t, "workflow_run", reqs...)
	rel := rig.waitRelease(t, 3)
	if rel.State != deployer.ReleaseRolledBack || rel.FailedMember != "web" || !strings.Contains(rel.Reason, "held back: ") {
		t.Fatalf("release of a replaced image: %+v", rel)
	}
	if b := member(t, rel, "backend"); b.State != deployer.StateSucceeded || b.RollbackState != deployer.StateSucceeded {
		t.Errorf("backend member: %+v, want switched and rolled back", b)
	}
	if got, want := rig.running(t, "backend"), tagDigest("backend", "sha-bbbbbbb"); got != want {
		t.Errorf("backend runs %s, want release 2's %s", got, want)
	}
	if got, want := rig.running(t, "web"), tagDigest("web", "sha-bbbbbbb"); got != want {
		t.Errorf("web runs %s, want release 2's %s", got, want)
	}
}
