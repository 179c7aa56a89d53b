package deployer_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/deployd/deployd/deployer"
	"github.com/deployd/deployd/deployer/sqlite"
)

func openStore(t *testing.T, dir string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), filepath.Join(dir, "deployd.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// recordingExecutor records which deployments ran, and how many ran at
// once per service.
type recordingExecutor struct {
	mu      sync.Mutex
	ran     []deployer.Deployment
	active  map[string]int
	overlap atomic.Bool
	hold    chan struct{} // when set, Execute waits for it
}

func (e *recordingExecutor) Execute(ctx context.Context, d deployer.Deployment) deployer.Deployment {
	e.mu.Lock()
	if e.active == nil {
		e.active = map[string]int{}
	}
	e.active[d.Service]++
	if e.active[d.Service] > 1 {
		e.overlap.Store(true)
	}
	e.mu.Unlock()
	if e.hold != nil {
		select {
		case <-e.hold:
		case <-ctx.Done():
			d.State = deployer.StateInterrupted
		}
	} else {
		time.Sleep(5 * time.Millisecond)
	}
	e.mu.Lock()
	e.active[d.Service]--
	e.ran = append(e.ran, d)
	e.mu.Unlock()
	if d.State == deployer.StateRunning {
		d.State = deployer.StateSucceeded
	}
	return d
}

func (e *recordingExecutor) count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.ran)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func req(service, tag string) deployer.Request {
	return deployer.Request{Service: service, Tag: tag, Trigger: deployer.Trigger{Kind: deployer.TriggerManual, Subject: "test"}}
}

func TestQueueRunsEachServiceSeriallyAndServicesInParallel(t *testing.T) {
	store := openStore(t, t.TempDir())
	exec := &recordingExecutor{}
	q, err := deployer.NewQueue(deployer.QueueConfig{Store: store, Executor: exec, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := q.Start(ctx); err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for i := range 20 {
		for _, svc := range []string{"backend", "web"} {
			d, err := q.Enqueue(ctx, req(svc, fmt.Sprintf("v%d", i)))
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, d.ID)
		}
	}
	// Every deployment ends: it ran, or a newer one superseded it.
	waitFor(t, "all deployments to end", func() bool {
		for _, id := range ids {
			d, err := store.Deployment(ctx, id)
			if err != nil || !d.State.Final() {
				return false
			}
		}
		return true
	})
	if err := q.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if exec.overlap.Load() {
		t.Error("two deployments of one service ran at the same time")
	}
	// The last request of each service must have run, not been superseded.
	for _, svc := range []string{"backend", "web"} {
		ds, err := store.Deployments(ctx, svc, deployer.Page{Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		if ds[0].Tag != "v19" || ds[0].State != deployer.StateSucceeded {
			t.Errorf("%s: newest deployment %s is %s, want v19 succeeded", svc, ds[0].Tag, ds[0].State)
		}
	}
}

func TestQueueRunsServicesInParallel(t *testing.T) {
	store := openStore(t, t.TempDir())
	ctx := context.Background()
	exec := &heldExecutor{held: "backend", release: make(chan struct{})}
	q, _ := deployer.NewQueue(deployer.QueueConfig{Store: store, Executor: exec, Logger: zerolog.Nop()})
	if err := q.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { q.Shutdown(ctx) }()
	backend, _ := q.Enqueue(ctx, req("backend", "v1"))
	web, _ := q.Enqueue(ctx, req("web", "v1"))
	// web finishes while backend is still running: the services do not wait for each other.
	waitFor(t, "web to succeed while backend runs", func() bool {
		d, _ := store.Deployment(ctx, web.ID)
		return d.State == deployer.StateSucceeded
	})
	if d, _ := store.Deployment(ctx, backend.ID); d.State != deployer.StateRunning {
		t.Errorf("backend is %s, want still running", d.State)
	}
	close(exec.release)
	waitFor(t, "backend to succeed", func() bool {
		d, _ := store.Deployment(ctx, backend.ID)
		return d.State == deployer.StateSucceeded
	})
}

// heldExecutor holds the deployments of one service until released.
type heldExecutor struct {
	held    string
	release chan struct{}
}

func (e *heldExecutor) Execute(ctx context.Context, d deployer.Deployment) deployer.Deployment {
	if d.Service == e.held {
		select {
		case <-e.release:
		case <-ctx.Done():
			d.State = deployer.StateInterrupted
			return d
		}
	}
	d.State = deployer.StateSucceeded
	return d
}

func TestQueueSupersedesWhileBusy(t *testing.T) {
	store := openStore(t, t.TempDir())
	exec := &recordingExecutor{hold: make(chan struct{})}
	q, err := deployer.NewQueue(deployer.QueueConfig{Store: store, Executor: exec, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := q.Start(ctx); err != nil {
		t.Fatal(err)
	}
	first, _ := q.Enqueue(ctx, req("backend", "v1"))
	waitFor(t, "first to run", func() bool {
		d, _ := store.Deployment(ctx, first.ID)
		return d.State == deployer.StateRunning
	})
	var queued []deployer.Deployment
	for i := 2; i <= 10; i++ {
		d, err := q.Enqueue(ctx, req("backend", fmt.Sprintf("v%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		queued = append(queued, d)
	}
	close(exec.hold)
	last := queued[len(queued)-1]
	waitFor(t, "last to succeed", func() bool {
		d, _ := store.Deployment(ctx, last.ID)
		return d.State == deployer.StateSucceeded
	})
	if err := q.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if n := exec.count(); n != 2 {
		t.Errorf("ran %d deployments, want 2 (the running one and the newest queued)", n)
	}
	for _, d := range queued[:len(queued)-1] {
		got, _ := store.Deployment(ctx, d.ID)
		if got.State != deployer.StateSuperseded {
			t.Errorf("deployment %d (%s) is %s, want superseded", d.ID, d.Tag, got.State)
		}
	}
}

func TestQueueShutdownInterruptsAfterDeadlineAndRestartResumes(t *testing.T) {
	dir := t.TempDir()
	store := openStore(t, dir)
	exec := &recordingExecutor{hold: make(chan struct{})}
	q, _ := deployer.NewQueue(deployer.QueueConfig{Store: store, Executor: exec, Logger: zerolog.Nop()})
	ctx := context.Background()
	if err := q.Start(ctx); err != nil {
		t.Fatal(err)
	}
	running, _ := q.Enqueue(ctx, req("backend", "v1"))
	waitFor(t, "v1 to run", func() bool {
		d, _ := store.Deployment(ctx, running.ID)
		return d.State == deployer.StateRunning
	})
	queued, _ := q.Enqueue(ctx, req("backend", "v2"))

	sctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := q.Shutdown(sctx); err == nil {
		t.Error("Shutdown returned nil although a deployment outlived its deadline")
	}
	if _, err := q.Enqueue(ctx, req("backend", "v3")); err == nil {
		t.Error("Enqueue while draining succeeded")
	}
	// Cut short by the deadline, it stays running in the store for the next
	// start to resume, exactly as after a crash.
	got, _ := store.Deployment(ctx, running.ID)
	if got.State != deployer.StateRunning {
		t.Errorf("deployment cut short is %s after shutdown, want left running for the next start", got.State)
	}
	got, _ = store.Deployment(ctx, queued.ID)
	if got.State != deployer.StateQueued {
		t.Errorf("queued deployment is %s after shutdown, want still queued", got.State)
	}

	// A new queue on the same store picks the queued work up.
	exec2 := &recordingExecutor{}
	q2, _ := deployer.NewQueue(deployer.QueueConfig{Store: store, Executor: exec2, Logger: zerolog.Nop()})
	if err := q2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "v2 to succeed after restart", func() bool {
		d, _ := store.Deployment(ctx, queued.ID)
		return d.State == deployer.StateSucceeded
	})
	if err := q2.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := store.Deployment(ctx, running.ID); got.State != deployer.StateInterrupted {
		t.Errorf("deployment cut short is %s after restart, want interrupted", got.State)
	}
	if n := exec2.count(); n != 1 {
		t.Errorf("restart ran %d deployments, want 1: v2 is newer than the interrupted v1", n)
	}
}

func TestQueueResumesDeploymentInterruptedByCrash(t *testing.T) {
	store := openStore(t, t.TempDir())
	ctx := context.Background()
	// A deployment that was running when deployd died, with a note.
	const note = "the payload's digest is unusable; the tag v1 is resolved at the registry instead"
	crashedReq := req("backend", "v1")
	crashedReq.Note = note
	crashed, err := store.Enqueue(ctx, crashedReq)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := store.ClaimNext(ctx, "backend"); err != nil || !ok {
		t.Fatalf("claim: %v %v", ok, err)
	}
	// web was running too, but a newer web request is queued already.
	if _, err := store.Enqueue(ctx, req("web", "w1")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.ClaimNext(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	newerWeb, _ := store.Enqueue(ctx, req("web", "w2"))

	exec := &recordingExecutor{}
	q, _ := deployer.NewQueue(deployer.QueueConfig{Store: store, Executor: exec, Logger: zerolog.Nop()})
	if err := q.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both services to settle", func() bool {
		b, _ := store.Deployments(ctx, "backend", deployer.Page{Limit: 1})
		w, _ := store.Deployment(ctx, newerWeb.ID)
		return len(b) == 1 && b[0].ID != crashed.ID && b[0].State == deployer.StateSucceeded && w.State == deployer.StateSucceeded
	})
	if err := q.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := store.Deployment(ctx, crashed.ID); got.State != deployer.StateInterrupted {
		t.Errorf("crashed deployment is %s, want interrupted", got.State)
	}
	b, _ := store.Deployments(ctx, "backend", deployer.Page{Limit: 1})
	if b[0].Tag != "v1" || b[0].Trigger != crashed.Trigger {
		t.Errorf("resumed deployment %+v does not repeat the interrupted request %+v", b[0], crashed)
	}
	if resumed, _ := store.Deployment(ctx, b[0].ID); len(resumed.Steps) == 0 || resumed.Steps[0].Name != deployer.StepRequest || resumed.Steps[0].Message != note {
		t.Errorf("resumed deployment's steps %+v do not start with the interrupted request's note", resumed.Steps)
	}
	if n := exec.count(); n != 2 {
		t.Errorf("ran %d deployments, want 2 (backend resumed once, the newer web)", n)
	}
}

func TestQueueRecordsDeliveriesWhileDrainingForTheNextStart(t *testing.T) {
	store := openStore(t, t.TempDir())
	ctx := context.Background()
	exec := &recordingExecutor{}
	q, _ := deployer.NewQueue(deployer.QueueConfig{Store: store, Executor: exec, Logger: zerolog.Nop()})
	if err := q.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := q.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	rc, err := q.RecordDelivery(ctx, deployer.Delivery{ID: "late", Event: "registry_package", BodySHA256: "late", ReceivedAt: time.Now(), Result: deployer.ResultQueued},
		[]deployer.Request{{Service: "backend", Tag: "latest", Trigger: deployer.Trigger{Kind: deployer.TriggerWebhook, DeliveryID: "late"}}})
	if err != nil || len(rc.Deployments) != 1 {
		t.Fatalf("delivery during drain: %+v %v, want it recorded and queued", rc, err)
	}
	if exec.count() != 0 {
		t.Error("a draining queue ran a deployment")
	}
	q2, _ := deployer.NewQueue(deployer.QueueConfig{Store: store, Executor: exec, Logger: zerolog.Nop()})
	if err := q2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the late delivery's deployment to run after restart", func() bool {
		d, _ := store.Deployment(ctx, rc.Deployments[0])
		return d.State == deployer.StateSucceeded
	})
	if err := q2.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestQueueAnnouncesSupersededDeployments(t *testing.T) {
	store := openStore(t, t.TempDir())
	ctx := context.Background()
	var mu sync.Mutex
	seen := map[int64]deployer.State{}
	exec := &recordingExecutor{hold: make(chan struct{})}
	q, _ := deployer.NewQueue(deployer.QueueConfig{Store: store, Executor: exec, Logger: zerolog.Nop(),
		Notify: func(d deployer.Deployment) {
			mu.Lock()
			defer mu.Unlock()
			seen[d.ID] = d.State
		}})
	if err := q.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { close(exec.hold); q.Shutdown(ctx) }()
	running, _ := q.Enqueue(ctx, req("backend", "v1"))
	// Wait for the worker's announcement, not just the store's state.
	waitFor(t, "v1 to be announced running", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return seen[running.ID] == deployer.StateRunning
	})
	manual, err := q.Enqueue(ctx, req("backend", "v2"))
	if err != nil {
		t.Fatal(err)
	}
	// A webhook supersedes the manual request...
	rc, err := q.RecordDelivery(ctx, deployer.Delivery{ID: "d1", Event: "registry_package", BodySHA256: "h1", ReceivedAt: time.Now(), Result: deployer.ResultQueued},
		[]deployer.Request{{Service: "backend", Tag: "v3", Trigger: deployer.Trigger{Kind: deployer.TriggerWebhook}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(rc.Deployments) != 1 {
		t.Fatalf("webhook receipt %+v, want one deployment queued", rc)
	}
	// ...and a manual request supersedes the webhook's.
	if _, err := q.Enqueue(ctx, req("backend", "v4")); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	// The manual request was shown queued, so its end is announced; the
	// webhook's was never shown (webhook deployments are announced when
	// they start), so no listener holds a stale "queued" row for it.
	if seen[manual.ID] != deployer.StateSuperseded {
		t.Errorf("manual deployment %d announced as %q, want superseded", manual.ID, seen[manual.ID])
	}
	if st, ok := seen[rc.Deployments[0]]; ok && st == deployer.StateQueued {
		t.Errorf("webhook deployment %d was announced queued and never updated", rc.Deployments[0])
	}
	if seen[running.ID] != deployer.StateRunning {
		t.Errorf("the running deployment was announced as %q", seen[running.ID])
	}
}

func TestQueueIgnoresOlderWorkflowRuns(t *testing.T) {
	store := openStore(t, t.TempDir())
	ctx := context.Background()
	exec := &recordingExecutor{hold: make(chan struct{})}
	q, _ := deployer.NewQueue(deployer.QueueConfig{Store: store, Executor: exec, Logger: zerolog.Nop()})
	if err := q.Start(ctx); err != nil {
		t.Fatal(err)
	}
	run := func(n int) (deployer.Receipt, error) {
		id := fmt.Sprintf("run-%d", n)
		return q.RecordDelivery(ctx, deployer.Delivery{ID: id, Event: "workflow_run", BodySHA256: id, ReceivedAt: time.Now(), Result: deployer.ResultQueued},
			[]deployer.Request{{Service: "backend", Tag: fmt.Sprintf("sha-%d", n), Trigger: deployer.Trigger{Kind: deployer.TriggerWebhook, RunID: int64(1000 + n), RunNumber: n}}})
	}
	// Run #6 is being deployed when run #5 completes late: #5 is ignored.
	six, err := run(6)
	if err != nil || len(six.Deployments) != 1 {
		t.Fatalf("run 6: %+v %v", six, err)
	}
	five, err := run(5)
	if err != nil {
		t.Fatal(err)
	}
	if len(five.Deployments) != 0 || !strings.Contains(five.Ignored, "(#6), which is being deployed") {
		t.Errorf("late run 5 while 6 is in flight: %+v, want ignored as older", five)
	}
	close(exec.hold)
	waitFor(t, "run 6 to succeed", func() bool {
		d, _ := store.Deployment(ctx, six.Deployments[0])
		return d.State == deployer.StateSucceeded
	})
	if err := q.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	// Once #6 is deployed, the service remembers it: #4 is older too.
	if err := store.SetServiceStatus(ctx, deployer.ServiceStatus{Name: "backend", Tag: "sha-6", LastRunNumber: 6, LastRunID: 1006}); err != nil {
		t.Fatal(err)
	}
	q2, _ := deployer.NewQueue(deployer.QueueConfig{Store: store, Executor: &recordingExecutor{}, Logger: zerolog.Nop()})
	if err := q2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer q2.Shutdown(ctx)
	q = q2
	four, err := run(4)
	if err != nil {
		t.Fatal(err)
	}
	if len(four.Deployments) != 0 || !strings.Contains(four.Ignored, "(#6), which is deployed") {
		t.Errorf("run 4 after run 6 was deployed: %+v, want ignored as older", four)
	}
	if seven, err := run(7); err != nil || len(seven.Deployments) != 1 {
		t.Errorf("run 7: %+v %v, want queued", seven, err)
	}
	// Another workflow counts its runs from 1, but its run ids are newer.
	other, err := q.RecordDelivery(ctx, deployer.Delivery{ID: "other-1", Event: "workflow_run", BodySHA256: "other-1", ReceivedAt: time.Now(), Result: deployer.ResultQueued},
		[]deployer.Request{{Service: "backend", Tag: "sha-o1", Trigger: deployer.Trigger{Kind: deployer.TriggerWebhook, RunID: 2001, RunNumber: 1}}})
	if err != nil || len(other.Deployments) != 1 {
		t.Errorf("run #1 of another workflow with a newer run id: %+v %v, want queued", other, err)
	}
}
