package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/deployd/deployd/deployer"
	"github.com/deployd/deployd/internal/testclock"
	"github.com/deployd/deployd/internal/testlog"
)

const window = 72 * time.Hour

// openRetentionStore opens a store with a test clock that keeps deliveries
// for window and keep deployments per service, pruning in batches of 2
// rows, only when the test calls Prune.
func openRetentionStore(t *testing.T, keep int, opts ...Option) (*Store, *testclock.Clock) {
	t.Helper()
	return openRetentionStoreBatch(t, keep, 2, opts...)
}

func openRetentionStoreBatch(t *testing.T, keep, batch int, opts ...Option) (*Store, *testclock.Clock) {
	t.Helper()
	clock := testclock.New(time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC))
	opts = append([]Option{WithClock(clock.Now), withoutPruner(), WithRetention(Retention{
		Deliveries: window, Deployments: keep, Batch: batch,
	})}, opts...)
	s, _ := openTestStore(t, opts...)
	return s, clock
}

func mustPrune(t *testing.T, s *Store) Pruned {
	t.Helper()
	p, err := s.Prune(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// deliveryIDs lists the ids of the stored deliveries, oldest first.
func deliveryIDs(t *testing.T, s *Store) []string {
	t.Helper()
	ds, err := s.Deliveries(context.Background(), deployer.Page{Limit: 500})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, d := range slices.Backward(ds) {
		ids = append(ids, d.ID)
	}
	return ids
}

// deploymentIDs lists the ids of service's stored deployments, oldest
// first.
func deploymentIDs(t *testing.T, s *Store, service string) []int64 {
	t.Helper()
	ds, err := s.Deployments(context.Background(), service, deployer.Page{Limit: 500})
	if err != nil {
		t.Fatal(err)
	}
	return reversed(idsOf(ds))
}

func record(t *testing.T, s *Store, d deployer.Delivery, reqs ...deployer.Request) deployer.Receipt {
	t.Helper()
	rc, err := s.RecordDelivery(context.Background(), d, reqs)
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

// settled queues a manual deployment of service and finishes it in state,
// with digest.
func settled(t *testing.T, s *Store, service string, state deployer.State, digest string) int64 {
	t.Helper()
	ctx := context.Background()
	d, err := s.Enqueue(ctx, manual(service, "v1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Finish(ctx, deployer.Deployment{ID: d.ID, State: state, Digest: digest}); err != nil {
		t.Fatal(err)
	}
	return d.ID
}

func TestPruneDeletesDeliveriesOlderThanTheWindow(t *testing.T) {
	s, clock := openRetentionStore(t, 0)
	for i := range 5 {
		record(t, s, delivery(fmt.Sprintf("old-%d", i)))
	}
	clock.Add(time.Hour)
	record(t, s, delivery("edge")) // received window-1h before the pass
	clock.Add(window - time.Hour + time.Second)
	record(t, s, delivery("new"))

	before := s.commits.Load()
	p := mustPrune(t, s)
	if p.Deliveries != 5 || p.Deployments != 0 || p.Redeliveries != 0 {
		t.Errorf("pruned %+v, want the 5 old deliveries", p)
	}
	if got, want := deliveryIDs(t, s), []string{"edge", "new"}; !slices.Equal(got, want) {
		t.Errorf("deliveries left %v, want %v", got, want)
	}
	// Batches of 2: five rows take three transactions of their own.
	if n := s.commits.Load() - before; n < 3 {
		t.Errorf("the pass committed %d transactions, want at least 3 for 5 rows in batches of 2", n)
	}
	if p := mustPrune(t, s); p.Total() != 0 {
		t.Errorf("second pass pruned %+v, want nothing", p)
	}
}

func TestPruneKeepsDuplicatesInsideTheWindowRecognised(t *testing.T) {
	s, clock := openRetentionStore(t, 0)
	record(t, s, delivery("gone"))
	clock.Add(window - time.Minute)
	record(t, s, delivery("kept"))
	clock.Add(2 * time.Minute)
	mustPrune(t, s)
	// GitHub redelivers "kept" within its window: still a duplicate.
	if rc := record(t, s, delivery("kept")); !rc.Duplicate {
		t.Error("a redelivery of a delivery inside the window was not recognised as a duplicate")
	}
	if got, want := deliveryIDs(t, s), []string{"kept", "kept"}; !slices.Equal(got, want) {
		t.Errorf("deliveries left %v, want %v", got, want)
	}
}

func TestPruneKeepsDeliveriesOfKeptDeployments(t *testing.T) {
	ctx := context.Background()
	s, clock := openRetentionStore(t, 2)
	rc := record(t, s, delivery("queued-one"), request("backend", "v1"))
	record(t, s, delivery("ignored-one"))
	clock.Add(window + time.Hour)

	// Its deployment is among the newest 2: the delivery stays, and the
	// foreign key holds.
	if p := mustPrune(t, s); p.Deliveries != 1 || p.Deployments != 0 {
		t.Errorf("pruned %+v, want only the ignored delivery", p)
	}
	if got := deliveryIDs(t, s); !slices.Equal(got, []string{"queued-one"}) {
		t.Errorf("deliveries left %v, want [queued-one]", got)
	}
	// Two newer deployments push it out: then its delivery goes too.
	settled(t, s, "backend", deployer.StateFailed, "")
	settled(t, s, "backend", deployer.StateFailed, "")
	if p := mustPrune(t, s); p.Deployments != 1 || p.Deliveries != 1 {
		t.Errorf("pruned %+v, want the old deployment and its delivery", p)
	}
	if _, err := s.Deployment(ctx, rc.Deployments[0]); err == nil {
		t.Errorf("deployment %d is still there", rc.Deployments[0])
	}
	assertNoForeignKeyViolations(t, s.rdb)
}

func TestPruneKeepsTheNewestDeploymentsOfEachService(t *testing.T) {
	ctx := context.Background()
	s, _ := openRetentionStore(t, 3)
	var web []int64
	for range 7 {
		web = append(web, settled(t, s, "web", deployer.StateFailed, ""))
	}
	api := []int64{settled(t, s, "api", deployer.StateFailed, ""), settled(t, s, "api", deployer.StateFailed, "")}
	// A step log goes with its deployment.
	if err := s.AppendStep(ctx, web[0], deployer.Step{Name: "pull", Outcome: "failed"}); err != nil {
		t.Fatal(err)
	}

	if p := mustPrune(t, s); p.Deployments != 4 {
		t.Errorf("pruned %+v, want 4 deployments", p)
	}
	if got := deploymentIDs(t, s, "web"); !slices.Equal(got, web[4:]) {
		t.Errorf("web deployments left %v, want the newest 3 %v", got, web[4:])
	}
	if got := deploymentIDs(t, s, "api"); !slices.Equal(got, api) {
		t.Errorf("api deployments left %v, want all %v", got, api)
	}
	var steps int
	if err := s.rdb.QueryRow("SELECT count(*) FROM deployment_steps WHERE deployment_id = ?", web[0]).Scan(&steps); err != nil || steps != 0 {
		t.Errorf("%d steps of the deleted deployment left (%v)", steps, err)
	}
}

func TestPruneKeepsARunningDeployment(t *testing.T) {
	ctx := context.Background()
	s, _ := openRetentionStore(t, 2)
	first, err := s.Enqueue(ctx, manual("web", "v1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.ClaimNext(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		settled(t, s, "web", deployer.StateFailed, "")
	}
	// A queued one is always the newest of its service (queuing
	// supersedes the one before), so the newest-first count keeps it.
	queued, err := s.Enqueue(ctx, manual("web", "v2"))
	if err != nil {
		t.Fatal(err)
	}
	mustPrune(t, s)
	got := deploymentIDs(t, s, "web")
	if !slices.Contains(got, first.ID) || !slices.Contains(got, queued.ID) {
		t.Errorf("deployments left %v, want the running %d and the queued %d among them", got, first.ID, queued.ID)
	}
	if len(got) != 3 {
		t.Errorf("deployments left %v, want the running one and the newest 2", got)
	}
}

func TestPruneKeepsTheLastDeployment(t *testing.T) {
	ctx := context.Background()
	s, _ := openRetentionStore(t, 1)
	last := settled(t, s, "web", deployer.StateFailed, "")
	if err := s.SetServiceStatus(ctx, deployer.ServiceStatus{Name: "web", LastDeploymentID: last}); err != nil {
		t.Fatal(err)
	}
	older := settled(t, s, "web", deployer.StateSuperseded, "")
	newest := settled(t, s, "web", deployer.StateSuperseded, "")
	mustPrune(t, s)
	if got, want := deploymentIDs(t, s, "web"), []int64{last, newest}; !slices.Equal(got, want) {
		t.Errorf("deployments left %v, want the last deployment and the newest %v (not %d)", got, want, older)
	}
}

func TestPruneKeepsTheTwoNewestSucceededDeployments(t *testing.T) {
	s, _ := openRetentionStore(t, 1)
	a := settled(t, s, "web", deployer.StateSucceeded, digestA)
	b := settled(t, s, "web", deployer.StateSucceeded, digestB)
	c := settled(t, s, "web", deployer.StateSucceeded, digestC)
	failed := settled(t, s, "web", deployer.StateFailed, "")
	newest := settled(t, s, "web", deployer.StateFailed, "")
	mustPrune(t, s)
	if got, want := deploymentIDs(t, s, "web"), []int64{b, c, newest}; !slices.Equal(got, want) {
		t.Errorf("deployments left %v, want %v (not %d, %d)", got, want, a, failed)
	}
}

// A rollback reads the service's previous digest; the deployment that ran
// it stays, however many came since, and the rollback works after pruning.
func TestPruneKeepsWhatARollbackNeeds(t *testing.T) {
	ctx := context.Background()
	s, clock := openRetentionStore(t, 2)
	rc := record(t, s, delivery("brought-a"), request("web", "v1"))
	if _, _, err := s.ClaimNext(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	ranA := rc.Deployments[0]
	if err := s.Finish(ctx, deployer.Deployment{ID: ranA, State: deployer.StateSucceeded, Digest: digestA}); err != nil {
		t.Fatal(err)
	}
	b1 := settled(t, s, "web", deployer.StateSucceeded, digestB)
	b2 := settled(t, s, "web", deployer.StateSucceeded, digestB) // forced again: the two newest succeeded both ran B
	if err := s.SetServiceStatus(ctx, deployer.ServiceStatus{Name: "web", Digest: digestA}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetServiceStatus(ctx, deployer.ServiceStatus{Name: "web", Digest: digestB, PreviousDigest: digestA, LastDeploymentID: b2}); err != nil {
		t.Fatal(err)
	}
	var failed []int64
	for range 4 {
		failed = append(failed, settled(t, s, "web", deployer.StateFailed, ""))
	}
	clock.Add(window + time.Hour)

	p := mustPrune(t, s)
	if p.Deployments != 2 {
		t.Errorf("pruned %+v, want the 2 failed deployments beyond the newest 2", p)
	}
	got := deploymentIDs(t, s, "web")
	if want := append([]int64{ranA, b1, b2}, failed[2:]...); !slices.Equal(got, want) {
		t.Errorf("deployments left %v, want %v", got, want)
	}
	for _, id := range []int64{ranA, b1, b2} {
		if !slices.Contains(got, id) {
			t.Errorf("deployment %d is gone; left %v", id, got)
		}
	}
	if ids := deliveryIDs(t, s); !slices.Equal(ids, []string{"brought-a"}) {
		t.Errorf("deliveries left %v, want the one that brought the rollback target", ids)
	}

	// The rollback: the previous digest, forced, as the API queues it.
	st, err := s.ServiceStatus(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	if st.PreviousDigest != digestA {
		t.Fatalf("previous digest %q after pruning, want %q", st.PreviousDigest, digestA)
	}
	if replaced, err := s.DigestReplaced(ctx, "web", digestA); err != nil || !replaced {
		t.Errorf("DigestReplaced(A) = %v, %v after pruning: webhooks could bring it back", replaced, err)
	}
	rb, err := s.Enqueue(ctx, deployer.Request{Service: "web", Digest: st.PreviousDigest, Force: true,
		Trigger: deployer.Trigger{Kind: deployer.TriggerRollback, Subject: "ops"}})
	if err != nil {
		t.Fatal(err)
	}
	claimed, ok, err := s.ClaimNext(ctx, "web")
	if err != nil || !ok || claimed.ID != rb.ID || claimed.Digest != digestA {
		t.Fatalf("ClaimNext = %+v, %v, %v; want the rollback to %s", claimed, ok, err, digestA)
	}
	if err := s.Finish(ctx, deployer.Deployment{ID: rb.ID, State: deployer.StateSucceeded}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetServiceStatus(ctx, deployer.ServiceStatus{Name: "web", Digest: digestA, PreviousDigest: digestB, LastDeploymentID: rb.ID}); err != nil {
		t.Fatal(err)
	}
	// And back again: B's deployment was kept as the new rollback target.
	mustPrune(t, s)
	if got := deploymentIDs(t, s, "web"); !slices.Contains(got, b2) || !slices.Contains(got, rb.ID) {
		t.Errorf("deployments left %v after the rollback, want %d (B) and %d (the rollback)", got, b2, rb.ID)
	}
}

func TestPruneRedeliveries(t *testing.T) {
	ctx := context.Background()
	s, clock := openRetentionStore(t, 0)
	for _, id := range []string{"asked-long-ago", "arrived"} {
		if err := s.RecordRedelivery(ctx, id, 1); err != nil {
			t.Fatal(err)
		}
	}
	clock.Add(2 * time.Hour)
	d := delivery("arrived")
	record(t, s, d) // the redelivery it brought, received inside the window
	clock.Add(window - time.Hour)
	if err := s.RecordRedelivery(ctx, "asked-recently", 2); err != nil {
		t.Fatal(err)
	}

	if p := mustPrune(t, s); p.Redeliveries != 1 || p.Deliveries != 0 {
		t.Errorf("pruned %+v, want one redelivery", p)
	}
	known, err := s.KnownDeliveries(ctx, []string{"asked-long-ago", "arrived", "asked-recently"})
	if err != nil {
		t.Fatal(err)
	}
	if known["asked-long-ago"] || !known["arrived"] || !known["asked-recently"] {
		t.Errorf("known after pruning: %v; want arrived and asked-recently", known)
	}
	ds, err := s.Deliveries(ctx, deployer.Page{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 1 || !ds[0].Recovered {
		t.Errorf("deliveries %+v: want the recovered one still marked recovered", ds)
	}
}

func TestRetentionOffKeepsEverything(t *testing.T) {
	clock := testclock.New(time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC))
	s, _ := openTestStore(t, WithClock(clock.Now), WithRetention(Retention{}))
	record(t, s, delivery("d1"))
	for range 3 {
		settled(t, s, "web", deployer.StateFailed, "")
	}
	clock.Add(1000 * 24 * time.Hour)
	if p := mustPrune(t, s); p.Total() != 0 {
		t.Errorf("pruned %+v with retention off", p)
	}
	assertCounts(t, s, 1, 3)
}

// pages is the size of the database in pages, the WAL's newer pages
// included: what the file holds once checkpointed.
func pages(t *testing.T, s *Store) int {
	t.Helper()
	var n int
	if err := s.rdb.QueryRow("PRAGMA page_count").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// fill inserts n ignored deliveries received now, named prefix-0 and on,
// in one transaction: quicker than n calls of RecordDelivery, and the rows
// are the same.
func fill(t *testing.T, s *Store, prefix string, n int) {
	t.Helper()
	err := s.write(context.Background(), func(ctx context.Context, tx *sql.Tx) error {
		at := formatTime(s.now())
		st, err := tx.PrepareContext(ctx, `INSERT INTO deliveries (delivery_id, event, action, body_sha256, received_at, result, reason)
			VALUES (?, ?, ?, ?, ?, ?, ?)`)
		if err != nil {
			return err
		}
		defer st.Close()
		for i := range n {
			d := delivery(fmt.Sprintf("%s-%d", prefix, i))
			if _, err := st.ExecContext(ctx, d.ID, d.Event, d.Action, d.BodySHA256, at, d.Result, strings.Repeat("x", 100)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestPruneKeepsTheFileFromGrowing(t *testing.T) {
	s, clock := openRetentionStoreBatch(t, 0, 500)
	const perDay = 1000
	var sizes []int
	for n := range 9 {
		fill(t, s, fmt.Sprintf("day%d", n), perDay)
		clock.Add(24 * time.Hour)
		mustPrune(t, s)
		sizes = append(sizes, pages(t, s))
	}
	t.Logf("pages after each day: %v", sizes)
	// Three days are kept; from the fourth on, a day's deliveries replace
	// the oldest day's, in the same pages.
	full := sizes[3]
	for n, p := range sizes[4:] {
		if p > full+full/20 {
			t.Errorf("after day %d the database has %d pages, after day 4 %d: it grows (all: %v)", n+5, p, full, sizes)
		}
	}
	var n int
	if err := s.rdb.QueryRow("SELECT count(*) FROM deliveries").Scan(&n); err != nil || n != 3*perDay {
		t.Errorf("%d deliveries kept (%v), want the last three days' %d", n, err, 3*perDay)
	}
}

func TestPruneGivesFreePagesBack(t *testing.T) {
	s, clock := openRetentionStoreBatch(t, 0, 1000)
	fill(t, s, "d", 2000)
	before := pages(t, s)
	clock.Add(window + time.Hour)
	p := mustPrune(t, s)
	after := pages(t, s)
	if p.Deliveries != 2000 || p.FreedPages == 0 {
		t.Errorf("pruned %+v, want 2000 deliveries and free pages given back", p)
	}
	if after > before/4 {
		t.Errorf("the database has %d pages after pruning every row, %d before: the space was not given back", after, before)
	}
}

func TestOpenSwitchesAnExistingDatabaseToIncrementalVacuum(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "deployd.db")
	old, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if _, err := old.RecordDelivery(ctx, delivery(fmt.Sprintf("d%d", i)), nil); err != nil {
			t.Fatal(err)
		}
	}
	if mode := autoVacuum(t, old.rdb); mode != 0 {
		t.Errorf("auto_vacuum = %d without retention, want 0 (none)", mode)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	var logs testlog.Buffer
	s, err := Open(ctx, path, WithRetention(Retention{Deliveries: window}), WithLogger(zerolog.New(&logs)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if mode := autoVacuum(t, s.rdb); mode != 2 {
		t.Errorf("auto_vacuum = %d, want 2 (incremental)", mode)
	}
	if !strings.Contains(logs.String(), "one-time VACUUM") || !strings.Contains(logs.String(), "switched the database to incremental vacuum") {
		t.Errorf("the switch is not logged:\n%s", logs.String())
	}
	assertCounts(t, s, 50, 0)

	// A new database takes the setting without a VACUUM.
	var fresh testlog.Buffer
	n, _ := openTestStore(t, WithRetention(Retention{Deployments: 10}), WithLogger(zerolog.New(&fresh)))
	if mode := autoVacuum(t, n.rdb); mode != 2 {
		t.Errorf("new database: auto_vacuum = %d, want 2", mode)
	}
	if strings.Contains(fresh.String(), "VACUUM") {
		t.Errorf("a new database was vacuumed:\n%s", fresh.String())
	}
}

func autoVacuum(t *testing.T, db *sql.DB) int {
	t.Helper()
	var mode int
	if err := db.QueryRow("PRAGMA auto_vacuum").Scan(&mode); err != nil {
		t.Fatal(err)
	}
	return mode
}

// A pruning batch commits in a transaction of its own: the deliveries
// waiting with it share one commit without it.
func TestPruneBatchesCommitAlone(t *testing.T) {
	ctx := context.Background()
	gate := newWriterGate()
	s, _ := openTestStore(t, WithCommitHook(gate.hook))
	release := gate.block(t, s)
	done := make(chan error, 4)
	go func() { _, err := s.RecordDelivery(ctx, delivery("d1"), nil); done <- err }()
	waitQueued(t, s, 1)
	go func() {
		_, err := s.pruneStep(ctx, func(ctx context.Context, tx *sql.Tx) (int64, error) {
			return deleted(ctx, tx, "DELETE FROM deliveries WHERE seq < 0")
		})
		done <- err
	}()
	waitQueued(t, s, 2)
	for _, name := range []string{"d2", "d3"} {
		go func() { _, err := s.RecordDelivery(ctx, delivery(name), nil); done <- err }()
	}
	waitQueued(t, s, 4)
	release()
	for range 4 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	var got []int
	for range 3 {
		got = append(got, <-gate.batches)
	}
	if want := []int{1, 1, 2}; !slices.Equal(got, want) {
		t.Errorf("batches carried %v calls, want %v: d1, the delete alone, then d2 and d3", got, want)
	}
}

// The pruner runs by itself every interval, counts what it deleted and
// logs one line per pass that deleted rows.
func TestPrunerRunsInTheBackground(t *testing.T) {
	clock := testclock.New(time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC))
	var logs testlog.Buffer
	s, _ := openTestStore(t, WithClock(clock.Now), WithLogger(zerolog.New(&logs).Level(zerolog.InfoLevel)),
		WithRetention(Retention{Deliveries: window, Interval: 5 * time.Millisecond, Batch: 2}))
	for i := range 3 {
		record(t, s, delivery(fmt.Sprintf("d%d", i)))
	}
	clock.Add(window + time.Second)
	deadline := time.Now().Add(30 * time.Second)
	for s.PrunedTotal().Deliveries < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("the pruner deleted %+v, want 3 deliveries", s.PrunedTotal())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := len(deliveryIDs(t, s)); n != 0 {
		t.Errorf("%d deliveries left", n)
	}
	// Passes that delete nothing log at debug level only.
	if c := strings.Count(logs.String(), "pruned old rows"); c != 1 || !strings.Contains(logs.String(), `"deliveries":3`) {
		t.Errorf("want one summary line, for the pass that deleted 3 deliveries in two batches; logs:\n%s", logs.String())
	}
}
