package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/deployd/deployd/deployer"
	"github.com/deployd/deployd/internal/testclock"
)

func openTestStore(t testing.TB, opts ...Option) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "deployd.db")
	s, err := Open(context.Background(), path, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s, path
}

func TestRestartKeepsEverything(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "deployd.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := s.RecordDelivery(ctx, delivery("d1"), []deployer.Request{request("backend", "latest")})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.ClaimNext(ctx, "backend"); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendStep(ctx, rc.Deployments[0], deployer.Step{Name: "pull", Outcome: "ok"}); err != nil {
		t.Fatal(err)
	}
	queued, err := s.Enqueue(ctx, manual("web", "v2"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetServiceStatus(ctx, deployer.ServiceStatus{Name: "backend", Digest: digestA}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetServiceStatus(ctx, deployer.ServiceStatus{Name: "backend", Digest: digestB}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Enqueue(ctx, manual("web", "v3")); !errors.Is(err, ErrClosed) {
		t.Errorf("Enqueue after Close: err = %v, want ErrClosed", err)
	}

	s, err = Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, d := range []deployer.Delivery{delivery("d1"), func() deployer.Delivery { d := delivery("d1"); d.ID = "new"; return d }()} {
		rc, err := s.RecordDelivery(ctx, d, []deployer.Request{request("backend", "latest")})
		if err != nil {
			t.Fatal(err)
		}
		if !rc.Duplicate || rc.Deployments != nil {
			t.Errorf("delivery %s after restart: %+v, want a duplicate", d.ID, rc)
		}
	}
	ds, err := s.Deliveries(ctx, deployer.Page{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 3 || ds[0].ID != "new" || ds[1].ID != "d1" || ds[0].Result != deployer.ResultDuplicate ||
		ds[1].Result != deployer.ResultDuplicate || ds[2].Result != deployer.ResultQueued ||
		!slices.Equal(ds[2].DeploymentIDs, rc.Deployments) {
		t.Errorf("deliveries after restart = %+v, want new and d1 duplicates, then d1 queued", ds)
	}
	ids, err := s.InterruptRunning(ctx)
	if err != nil || len(ids) != 1 || ids[0] != rc.Deployments[0] {
		t.Errorf("InterruptRunning = %v, %v; want [%d]", ids, err, rc.Deployments[0])
	}
	got, err := s.Deployment(ctx, rc.Deployments[0])
	if err != nil {
		t.Fatal(err)
	}
	if got.State != deployer.StateInterrupted || len(got.Steps) != 1 {
		t.Errorf("after restart: %+v", got)
	}
	services, err := s.QueuedServices(ctx)
	if err != nil || len(services) != 1 || services[0] != "web" {
		t.Errorf("QueuedServices = %v, %v", services, err)
	}
	next, ok, err := s.ClaimNext(ctx, "web")
	if err != nil || !ok || next.ID != queued.ID {
		t.Errorf("ClaimNext(web) = %+v, %v, %v; want %d", next, ok, err, queued.ID)
	}
	if r, err := s.DigestReplaced(ctx, "backend", digestA); err != nil || !r {
		t.Errorf("DigestReplaced(A) = %v, %v after restart", r, err)
	}
}

// Queuing supersedes, so several queued deployments of one service only
// exist when something else wrote them (an older deployd, a crash between
// versions); ClaimNext must still take the newest.
func TestClaimNextPrefersNewest(t *testing.T) {
	ctx := context.Background()
	s, _ := openTestStore(t)
	var ids []int64
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		for _, svc := range []string{"backend", "backend", "web", "backend", "web"} {
			res, err := tx.ExecContext(ctx, `INSERT INTO deployments (service, trigger_kind, tag, state, queued_at)
				VALUES (?, 'manual', 'latest', 'queued', ?)`, svc, formatTime(time.Now()))
			if err != nil {
				return err
			}
			id, err := res.LastInsertId()
			if err != nil {
				return err
			}
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	d, ok, err := s.ClaimNext(ctx, "backend")
	if err != nil || !ok || d.ID != ids[3] {
		t.Fatalf("ClaimNext = %d, %v, %v; want %d", d.ID, ok, err, ids[3])
	}
	wantStates(t, s, map[int64]deployer.State{
		ids[0]: deployer.StateSuperseded, ids[1]: deployer.StateSuperseded, ids[3]: deployer.StateRunning,
		ids[2]: deployer.StateQueued, ids[4]: deployer.StateQueued,
	})
	if d, ok, err := s.ClaimNext(ctx, "web"); err != nil || !ok || d.ID != ids[4] {
		t.Errorf("ClaimNext(web) = %d, %v, %v; want %d", d.ID, ok, err, ids[4])
	}
}

func TestTimesAreUTCWithNanoseconds(t *testing.T) {
	ctx := context.Background()
	zone := time.FixedZone("UTC+5", 5*3600)
	at := time.Date(2026, 3, 1, 15, 4, 5, 123456789, zone)
	s, _ := openTestStore(t, WithClock(func() time.Time { return at }))
	d, err := s.Enqueue(ctx, manual("backend", "v1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.ClaimNext(ctx, "backend"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RecordDelivery(ctx, delivery("d1"), nil); err != nil {
		t.Fatal(err)
	}
	got, err := s.Deployment(ctx, d.ID)
	if err != nil {
		t.Fatal(err)
	}
	ds, err := s.Deliveries(ctx, deployer.Page{})
	if err != nil {
		t.Fatal(err)
	}
	for name, tm := range map[string]time.Time{
		"enqueued queued_at": d.QueuedAt,
		"queued_at":          got.QueuedAt,
		"started_at":         *got.StartedAt,
		"received_at":        ds[0].ReceivedAt,
	} {
		if !tm.Equal(at) || tm.Location() != time.UTC {
			t.Errorf("%s = %v, want %v in UTC", name, tm, at.UTC())
		}
	}
}

// A writerGate, installed as the commit hook, can stop the writer after a
// commit until released, so that calls made meanwhile queue up and land in
// one batch. batches receives the size of every committed batch.
type writerGate struct {
	mu      sync.Mutex
	hold    chan struct{} // non-nil: the next commit waits on it
	held    chan struct{} // closed when the writer is waiting
	batches chan int
}

func newWriterGate() *writerGate { return &writerGate{batches: make(chan int, 1024)} }

func (g *writerGate) hook(items int) {
	g.batches <- items
	g.mu.Lock()
	hold, held := g.hold, g.held
	g.hold = nil
	g.mu.Unlock()
	if hold != nil {
		close(held)
		<-hold
	}
}

// block makes the writer wait after the commit of a Ping it triggers, and
// returns once it does.
func (g *writerGate) block(t *testing.T, s *Store) (release func()) {
	t.Helper()
	hold, held := make(chan struct{}), make(chan struct{})
	g.mu.Lock()
	g.hold, g.held = hold, held
	g.mu.Unlock()
	go s.Ping(context.Background())
	<-held
	<-g.batches // the Ping's own batch
	var once sync.Once
	release = func() { once.Do(func() { close(hold) }) }
	t.Cleanup(release) // a failing test must not leave the writer stuck
	return release
}

// waitQueued waits until n calls wait in the writer's channel.
func waitQueued(t *testing.T, s *Store, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(s.ops) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d calls queued, want %d", len(s.ops), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestBatchKeepsEachCallsOutcome(t *testing.T) {
	ctx := context.Background()
	gate := newWriterGate()
	s, _ := openTestStore(t, WithCommitHook(gate.hook))
	release := gate.block(t, s)

	type result struct {
		name string
		err  error
		dup  bool
	}
	results := make(chan result, 5)
	calls := []func() result{
		func() result {
			rc, err := s.RecordDelivery(ctx, delivery("d1"), []deployer.Request{request("backend", "v1")})
			return result{"d1", err, rc.Duplicate}
		},
		func() result { // same id, in the same batch: a duplicate, nothing more
			rc, err := s.RecordDelivery(ctx, delivery("d1"), []deployer.Request{request("backend", "v2")})
			return result{"d1 again", err, rc.Duplicate}
		},
		func() result { // fails on its own
			return result{"finish unknown", s.Finish(ctx, deployer.Deployment{ID: 999, State: deployer.StateFailed}), false}
		},
		func() result { // writes, then fails: its write must be undone
			err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
				if _, err := tx.ExecContext(ctx, `INSERT INTO deliveries (delivery_id, event, received_at, result)
					VALUES ('partial', 'ping', '', 'ignored')`); err != nil {
					return err
				}
				return errors.New("boom")
			})
			return result{"partial", err, false}
		},
		func() result {
			rc, err := s.RecordDelivery(ctx, delivery("d2"), nil)
			return result{"d2", err, rc.Duplicate}
		},
	}
	for i, call := range calls {
		go func() { results <- call() }()
		waitQueued(t, s, i+1) // keep the order of the calls in the batch
	}
	release()
	got := map[string]result{}
	for range calls {
		r := <-results
		got[r.name] = r
	}
	if r := got["d1"]; r.err != nil || r.dup {
		t.Errorf("d1: %+v", r)
	}
	if r := got["d1 again"]; r.err != nil || !r.dup {
		t.Errorf("d1 again: %+v, want duplicate", r)
	}
	if r := got["finish unknown"]; !errors.Is(r.err, deployer.ErrNotFound) {
		t.Errorf("finish unknown: %+v, want ErrNotFound", r)
	}
	if r := got["partial"]; r.err == nil || r.err.Error() != "boom" {
		t.Errorf("partial: %+v, want boom", r)
	}
	if r := got["d2"]; r.err != nil || r.dup {
		t.Errorf("d2: %+v", r)
	}
	if n := <-gate.batches; n != 3 {
		t.Errorf("batch committed %d calls, want 3 (the failed one excluded)", n)
	}
	assertCounts(t, s, 3, 1)
	ds, err := s.Deliveries(ctx, deployer.Page{})
	if err != nil {
		t.Fatal(err)
	}
	if ds[1].ID != "d1" || ds[1].Result != deployer.ResultDuplicate || ds[2].ID != "d1" || ds[2].Result != deployer.ResultQueued {
		t.Errorf("deliveries = %+v, want d2, d1 duplicate, d1 queued", ds)
	}
}

func TestFailedCommitAnswersEveryCall(t *testing.T) {
	ctx := context.Background()
	gate := newWriterGate()
	s, _ := openTestStore(t, WithCommitHook(gate.hook))
	release := gate.block(t, s)

	errs := make(chan error, 2)
	go func() {
		_, err := s.RecordDelivery(ctx, delivery("d1"), []deployer.Request{request("backend", "v1")})
		errs <- err
	}()
	waitQueued(t, s, 1)
	go func() {
		// A deferred foreign key violation passes the savepoint and fails
		// the COMMIT of the whole batch.
		errs <- s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, "PRAGMA defer_foreign_keys = ON"); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO deployment_steps
				(deployment_id, seq, name, started_at, duration_ns, outcome) VALUES (999, 1, 'x', '', 0, 'ok')`)
			return err
		})
	}()
	waitQueued(t, s, 2)
	release()
	for range 2 {
		if err := <-errs; err == nil {
			t.Error("a call of a failed batch reported success")
		}
	}
	assertCounts(t, s, 0, 0)
	// The writer carries on.
	if _, err := s.RecordDelivery(ctx, delivery("d1"), nil); err != nil {
		t.Fatalf("after a failed commit: %v", err)
	}
	assertCounts(t, s, 1, 0)
}

func TestContextEndedBeforeTheWrite(t *testing.T) {
	gate := newWriterGate()
	s, _ := openTestStore(t, WithCommitHook(gate.hook))

	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.RecordDelivery(cancelled, delivery("d0"), nil); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled before the call: err = %v", err)
	}

	release := gate.block(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := s.RecordDelivery(ctx, delivery("d1"), []deployer.Request{request("backend", "v1")})
		errc <- err
	}()
	waitQueued(t, s, 1)
	cancel() // while the call waits for the writer
	release()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled while queued: err = %v", err)
	}
	assertCounts(t, s, 0, 0)
}

func TestCloseDrainsTheWriter(t *testing.T) {
	ctx := context.Background()
	gate := newWriterGate()
	path := filepath.Join(t.TempDir(), "deployd.db")
	s, err := Open(ctx, path, WithCommitHook(gate.hook))
	if err != nil {
		t.Fatal(err)
	}
	release := gate.block(t, s)
	const n = 20
	errs := make(chan error, n)
	for i := range n {
		go func() {
			_, err := s.RecordDelivery(ctx, delivery(fmt.Sprintf("d%d", i)), nil)
			errs <- err
		}()
	}
	waitQueued(t, s, n)
	closed := make(chan error)
	go func() { closed <- s.Close() }()
	release()
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	for range n {
		if err := <-errs; err != nil {
			t.Errorf("call queued before Close: %v", err)
		}
	}
	s, err = Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	assertCounts(t, s, n, 0)
}

func TestConcurrentWritersShareCommits(t *testing.T) {
	const (
		workers   = 32
		perWorker = 30 // deliveries each; every other one queues, every fifth call also enqueues
	)
	ctx := context.Background()
	var commits, items atomic.Int64
	s, _ := openTestStore(t, WithCommitHook(func(n int) {
		commits.Add(1)
		items.Add(int64(n))
	}))

	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		ids = map[int64]bool{}
		dup = 0
	)
	record := func(id int64) {
		mu.Lock()
		defer mu.Unlock()
		if ids[id] {
			dup++
		}
		ids[id] = true
	}
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				svc := fmt.Sprintf("svc%d", w%4)
				var reqs []deployer.Request
				if i%2 == 0 {
					reqs = []deployer.Request{request(svc, fmt.Sprintf("w%d-%d", w, i))}
				}
				rc, err := s.RecordDelivery(ctx, delivery(fmt.Sprintf("w%d-d%d", w, i)), reqs)
				if err != nil || rc.Duplicate || len(rc.Deployments) != len(reqs) {
					t.Errorf("RecordDelivery: %+v, %v", rc, err)
					return
				}
				for _, id := range rc.Deployments {
					record(id)
				}
				if i%5 == 0 {
					d, err := s.Enqueue(ctx, manual(svc, "manual"))
					if err != nil {
						t.Errorf("Enqueue: %v", err)
						return
					}
					record(d.ID)
				}
			}
		})
	}
	wg.Wait()

	const (
		wantDeliveries  = workers * perWorker
		wantDeployments = workers*perWorker/2 + workers*perWorker/5
	)
	if dup != 0 || len(ids) != wantDeployments {
		t.Errorf("%d distinct deployment ids, %d repeated; want %d distinct", len(ids), dup, wantDeployments)
	}
	var nDeliveries, nDeployments, nQueued int
	row := s.rdb.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM deliveries), (SELECT count(*) FROM deployments),
		(SELECT count(*) FROM deployments WHERE state = 'queued')`)
	if err := row.Scan(&nDeliveries, &nDeployments, &nQueued); err != nil {
		t.Fatal(err)
	}
	if nDeliveries != wantDeliveries || nDeployments != wantDeployments {
		t.Errorf("stored %d deliveries and %d deployments, want %d and %d", nDeliveries, nDeployments, wantDeliveries, wantDeployments)
	}
	if nQueued != 4 {
		t.Errorf("%d deployments still queued, want one per service (4)", nQueued)
	}
	ops := int64(wantDeliveries + workers*perWorker/5)
	if items.Load() != ops {
		t.Errorf("commits carried %d calls, want %d", items.Load(), ops)
	}
	if c := commits.Load(); c >= ops {
		t.Errorf("%d commits for %d calls: no batching", c, ops)
	} else {
		t.Logf("%d calls in %d commits (%.1f calls per commit)", ops, c, float64(ops)/float64(c))
	}
}

// enqueueOp hands the writer a call that writes nothing, straight into its
// channel, and returns its answer.
func enqueueOp(s *Store) <-chan error {
	op := &writeOp{ctx: context.Background(), fn: func(context.Context, *sql.Tx) error { return nil }, done: make(chan error, 1)}
	s.ops <- op
	return op.done
}

// waitTaken waits until the writer has taken every call from its channel.
func waitTaken(t *testing.T, s *Store) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(s.ops) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d calls still queued", len(s.ops))
		}
		time.Sleep(time.Millisecond)
	}
}

// The writer waits for company only while calls arrive concurrently, stops
// waiting as soon as the batch is as large as the previous one, and commits
// what it holds when the store closes.
func TestCommitDelayGathersConcurrentCalls(t *testing.T) {
	ctx := context.Background()
	gate := newWriterGate()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "deployd.db"), WithCommitHook(gate.hook), WithCommitDelay(time.Hour))
	if err != nil {
		t.Fatal(err)
	}

	// One call at a time: each is committed alone, at once.
	for i := range 3 {
		done := make(chan error, 1)
		go func() {
			_, err := s.RecordDelivery(ctx, delivery(fmt.Sprintf("alone-%d", i)), nil)
			done <- err
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a lone call waited for company")
		}
		if n := <-gate.batches; n != 1 {
			t.Fatalf("lone call committed with %d calls", n)
		}
	}

	// Two calls that arrive together share a transaction.
	afterTwoCallsCommitted(t, s, gate)

	// The next call waits until the batch holds two: it is not committed
	// on its own (a writer that did not wait would have answered it well
	// within the 100ms given), only with the one that joins it.
	waiting := enqueueOp(s)
	select {
	case err := <-waiting:
		t.Fatalf("a call that arrived after two committed together was committed alone (%v)", err)
	case <-time.After(100 * time.Millisecond):
	}
	joining := enqueueOp(s)
	if n := <-gate.batches; n != 2 {
		t.Fatalf("a call that arrived after two committed together was committed with %d calls, want 2", n)
	}
	for _, done := range []<-chan error{waiting, joining} {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}

	// Closing ends the wait: the call is committed, not dropped.
	last := enqueueOp(s)
	waitTaken(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-last; err != nil {
		t.Errorf("call waiting when the store closed: %v", err)
	}
	if n := <-gate.batches; n != 1 {
		t.Errorf("call waiting when the store closed committed with %d calls", n)
	}
}

// afterTwoCallsCommitted makes the writer commit two calls together and
// returns once they are answered.
func afterTwoCallsCommitted(t *testing.T, s *Store, gate *writerGate) {
	t.Helper()
	release := gate.block(t, s)
	first, second := enqueueOp(s), enqueueOp(s)
	release()
	if n := <-gate.batches; n != 2 {
		t.Fatalf("two waiting calls committed as %d", n)
	}
	for _, done := range []<-chan error{first, second} {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// answerWithin waits for a call's answer, failing the test after limit.
func answerWithin(t *testing.T, done <-chan error, limit time.Duration) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(limit):
		t.Fatalf("no answer after %s", limit)
	}
}

// The wait for company ends when the commit delay has passed.
func TestCommitDelayIsBounded(t *testing.T) {
	const delay = 20 * time.Millisecond
	gate := newWriterGate()
	clock := testclock.New(time.Now()) // stands still: the burst is always recent
	s, _ := openTestStore(t, WithCommitHook(gate.hook), WithCommitDelay(delay), WithClock(clock.Now))
	afterTwoCallsCommitted(t, s, gate)

	start := time.Now()
	answerWithin(t, enqueueOp(s), 10*time.Second)
	if took := time.Since(start); took < delay {
		t.Errorf("a call right after a burst was answered in %s, without waiting %s for company", took, delay)
	}
	if n := <-gate.batches; n != 1 {
		t.Errorf("a call that no other joined committed with %d calls, want 1", n)
	}
}

// A call that comes once a burst is over does not wait for company.
func TestCommitDelayEndsWithTheBurst(t *testing.T) {
	gate := newWriterGate()
	clock := testclock.New(time.Now())
	s, _ := openTestStore(t, WithCommitHook(gate.hook), WithCommitDelay(time.Hour), WithClock(clock.Now))
	afterTwoCallsCommitted(t, s, gate)

	clock.Add(2 * time.Hour)
	answerWithin(t, enqueueOp(s), 10*time.Second) // it would wait an hour for company
	if n := <-gate.batches; n != 1 {
		t.Errorf("a lone call committed with %d calls, want 1", n)
	}
}

// Commits of concurrent calls reach the database file in the background,
// long before the WAL is large enough for the writer to checkpoint it.
func TestCheckpointerCopiesCommitsToTheDatabase(t *testing.T) {
	ctx := context.Background()
	gate := newWriterGate()
	s, path := openTestStore(t, WithCommitHook(gate.hook))
	size := func() int64 {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	before := size()
	// 200 calls in one transaction.
	release := gate.block(t, s)
	errs := make(chan error, 200)
	for i := range 200 {
		go func() {
			_, err := s.RecordDelivery(ctx, delivery(fmt.Sprintf("d%d", i)), []deployer.Request{request(fmt.Sprintf("svc%d", i), "v1")})
			errs <- err
		}()
	}
	waitQueued(t, s, 128)
	release()
	for range 200 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for size() <= before {
		if time.Now().After(deadline) {
			t.Fatalf("database file still %d bytes after 200 commits: nothing was checkpointed", before)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Everything committed is still there, now read through the database file.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	assertCounts(t, s2, 200, 200)
}

// Calls that come one at a time leave checkpoints to the writer.
func TestLoneCommitsAreNotCheckpointedInTheBackground(t *testing.T) {
	ctx := context.Background()
	s, path := openTestStore(t)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if _, err := s.RecordDelivery(ctx, delivery(fmt.Sprintf("d%d", i)), nil); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(3 * checkpointInterval) // the checkpointer would have run by now
	if after, err := os.Stat(path); err != nil || after.Size() != fi.Size() {
		t.Errorf("database file grew from %d bytes (%v, %v): checkpointed in the background", fi.Size(), after, err)
	}
}

// GitHub may send a delivery again while the first is still being
// recorded: exactly one of them queues, the others are duplicates of it.
func TestConcurrentRedeliveriesQueueOnce(t *testing.T) {
	const n = 40
	ctx := context.Background()
	s, _ := openTestStore(t)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		dups int
		deps []int64
	)
	for i := range n {
		wg.Go(func() {
			d := delivery("d1")
			if i%2 == 1 {
				d.ID = fmt.Sprintf("replay-%d", i) // same body, new id
			}
			rc, err := s.RecordDelivery(ctx, d, []deployer.Request{request("backend", fmt.Sprintf("v%d", i))})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if rc.Duplicate {
				dups++
			}
			deps = append(deps, rc.Deployments...)
		})
	}
	wg.Wait()
	if dups != n-1 || len(deps) != 1 {
		t.Fatalf("%d duplicates and deployments %v; want %d and one", dups, deps, n-1)
	}
	assertCounts(t, s, n, 1)
	var originals, linked int
	if err := s.rdb.QueryRowContext(ctx, `SELECT
		(SELECT count(*) FROM deliveries WHERE result <> 'duplicate'),
		(SELECT count(*) FROM deliveries d JOIN deployments p ON p.delivery_seq = d.seq WHERE d.result = 'queued')`,
	).Scan(&originals, &linked); err != nil {
		t.Fatal(err)
	}
	if originals != 1 || linked != 1 {
		t.Errorf("%d originals, %d linked deployments; want 1 and 1", originals, linked)
	}
}

func TestMigrationsApplyOnce(t *testing.T) {
	ctx := context.Background()
	fsys := withRealMigrations(t, fstest.MapFS{
		"9001_t.sql":     {Data: []byte("CREATE TABLE t (n INTEGER NOT NULL);")},
		"9002_seed.sql":  {Data: []byte("INSERT INTO t (n) VALUES (1);")},
		"9010_more.sql":  {Data: []byte("INSERT INTO t (n) VALUES (10);")},
		"README.md":      {Data: []byte("not a migration")},
		"9003_later.txt": {Data: []byte("ignored")},
	})
	real := len(fsys) - 5
	path := filepath.Join(t.TempDir(), "deployd.db")
	for range 3 {
		s, err := Open(ctx, path, withMigrations(fsys))
		if err != nil {
			t.Fatal(err)
		}
		var rows, sum, versions int
		if err := s.rdb.QueryRowContext(ctx, "SELECT count(*), sum(n) FROM t").Scan(&rows, &sum); err != nil {
			t.Fatal(err)
		}
		if err := s.rdb.QueryRowContext(ctx, "SELECT count(*) FROM schema_migrations").Scan(&versions); err != nil {
			t.Fatal(err)
		}
		if rows != 2 || sum != 11 || versions != real+3 {
			t.Errorf("after open: %d rows summing %d, %d versions; want 2, 11, %d", rows, sum, versions, real+3)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}

	// A later binary adds a migration: only it runs.
	fsys["9011_again.sql"] = &fstest.MapFile{Data: []byte("INSERT INTO t (n) VALUES (100);")}
	s, err := Open(ctx, path, withMigrations(fsys))
	if err != nil {
		t.Fatal(err)
	}
	var sum int
	if err := s.rdb.QueryRowContext(ctx, "SELECT sum(n) FROM t").Scan(&sum); err != nil {
		t.Fatal(err)
	}
	if sum != 111 {
		t.Errorf("sum = %d, want 111", sum)
	}
	s.Close()

	// An older binary refuses the newer database.
	delete(fsys, "9011_again.sql")
	if s, err := Open(ctx, path, withMigrations(fsys)); err == nil {
		s.Close()
		t.Error("an older schema opened a newer database")
	}
}

func TestFailedMigrationChangesNothing(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "deployd.db")
	fsys := withRealMigrations(t, fstest.MapFS{
		"9001_t.sql":      {Data: []byte("CREATE TABLE t (n INTEGER);")},
		"9002_broken.sql": {Data: []byte("INSERT INTO t (n) VALUES (1); INSERT INTO nowhere VALUES (2);")},
	})
	if s, err := Open(ctx, path, withMigrations(fsys)); err == nil {
		s.Close()
		t.Fatal("a broken migration was accepted")
	}
	fsys["9002_broken.sql"] = &fstest.MapFile{Data: []byte("INSERT INTO t (n) VALUES (1);")}
	s, err := Open(ctx, path, withMigrations(fsys))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var n int
	if err := s.rdb.QueryRowContext(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("%d rows, want 1: the failed migration left a row behind", n)
	}
}

// withRealMigrations adds the embedded migrations to test ones numbered
// above them, since the store needs its own tables to open.
func withRealMigrations(t *testing.T, fsys fstest.MapFS) fstest.MapFS {
	t.Helper()
	ms, err := readMigrations(embeddedMigrations())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		fsys[m.name] = &fstest.MapFile{Data: []byte(m.sql)}
	}
	return fsys
}

func TestMigrationNamesAreChecked(t *testing.T) {
	for name, fsys := range map[string]fstest.MapFS{
		"no number":      {"init.sql": {Data: []byte("SELECT 1;")}},
		"shared version": {"0001_a.sql": {Data: []byte("SELECT 1;")}, "1_b.sql": {Data: []byte("SELECT 1;")}},
	} {
		if _, err := readMigrations(fsys); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	ms, err := readMigrations(embeddedMigrations())
	if err != nil || len(ms) == 0 || ms[0].version != 1 {
		t.Errorf("embedded migrations: %v, %v", ms, err)
	}
}

func TestPragmas(t *testing.T) {
	ctx := context.Background()
	s, _ := openTestStore(t)
	for _, db := range []*sql.DB{s.wdb, s.rdb} {
		var journal string
		var sync, fk, busy int
		if err := db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&journal); err != nil {
			t.Fatal(err)
		}
		if err := db.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&sync); err != nil {
			t.Fatal(err)
		}
		if err := db.QueryRowContext(ctx, "PRAGMA foreign_keys").Scan(&fk); err != nil {
			t.Fatal(err)
		}
		if err := db.QueryRowContext(ctx, "PRAGMA busy_timeout").Scan(&busy); err != nil {
			t.Fatal(err)
		}
		if journal != "wal" || sync != 2 || fk != 1 || busy <= 0 {
			t.Errorf("journal_mode=%s synchronous=%d foreign_keys=%d busy_timeout=%d; want wal 2 1 >0", journal, sync, fk, busy)
		}
	}
	var checkpoint int
	if err := s.wdb.QueryRowContext(ctx, "PRAGMA wal_autocheckpoint").Scan(&checkpoint); err != nil || checkpoint != walCheckpointPages {
		t.Errorf("writer's wal_autocheckpoint = %d, %v; want %d", checkpoint, err, walCheckpointPages)
	}
	if _, err := s.rdb.ExecContext(ctx, "DELETE FROM deliveries"); err == nil {
		t.Error("the read pool can write")
	}
}
