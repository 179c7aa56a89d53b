// Package sqlite is deployd's durable store: webhook deliveries, the
// deployment queue and history, and what runs for each service, kept in one
// SQLite database (modernc.org/sqlite, no cgo).
//
// Every write is committed and synced to disk before the call returns. Writes
// go through a single writer goroutine that gathers the calls waiting at the
// same moment into one transaction (group commit), so concurrent callers share
// the cost of a sync while each call keeps its own all-or-nothing outcome.
// While calls arrive concurrently, the writer waits up to a commit delay for
// a batch to grow as large as the previous one, so that more of them share
// each sync; a call that comes alone, not on the heels of a burst, never
// waits.
// Reads use a separate pool of read-only connections and never wait for the
// writer (WAL mode).
//
// The database and the files SQLite keeps next to it are mode 0600 whatever
// the umask. A write that fails because of the storage (a full disk, an I/O
// error) marks the store's writes failing until a write succeeds again;
// see WriteFailure.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/url"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/deployd/deployd/deployer"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// ErrClosed is returned by calls made after Close.
var ErrClosed = errors.New("store closed")

// walCheckpointPages is the WAL size, in pages, at which the writer
// checkpoints itself: 4000 pages, 15.6 MiB with 4 KiB pages, rather than
// SQLite's 1000, so that a page many commits change is copied back less
// often. See checkpointer for the checkpoints made in the background.
const walCheckpointPages = 4000

// checkpointInterval spaces the checkpointer's passes.
const checkpointInterval = 100 * time.Millisecond

// Store is the SQLite implementation of deployer.Store. Its methods are safe
// for concurrent use. Create one with Open and release it with Close.
type Store struct {
	wdb *sql.DB // exactly one connection, used only by the writer goroutine
	rdb *sql.DB // read-only connections
	hot hotStmts

	path string // the database file, absolute; Backup copies it

	// hostColumns is set when the schema has fleet rollouts (0011):
	// deployments then have a host and a rollout.
	hostColumns bool

	// replaced mirrors service_digests' replaced rows, which every webhook
	// delivery that queues a deployment asks about. Only SetServiceStatus
	// changes them, after its commit; loaded at Open.
	replacedMu sync.RWMutex
	replaced   map[serviceDigest]bool

	now         func() time.Time
	maxBatch    int
	commitDelay time.Duration
	onCommit    func(items int)
	log         zerolog.Logger

	// failure is why writes fail, nil while they succeed; only the writer
	// goroutine stores it. writeErrors counts the calls that failed so.
	failure     atomic.Pointer[writeFailure]
	writeErrors atomic.Int64

	mu      sync.RWMutex // guards closed and sends on ops against Close
	closed  bool
	ops     chan *writeOp
	stopped chan struct{} // closed when the writer goroutine has returned

	// The checkpointer copies committed pages from the WAL into the
	// database in the background; see checkpointer.
	dirty        chan struct{} // holds a token while commits await a checkpoint
	checkpointed chan struct{} // closed when the checkpointer has returned

	closeOnce sync.Once
	closeErr  error

	commits atomic.Int64 // committed write transactions, for tests
}

var _ deployer.Store = (*Store)(nil)

// Option changes how Open sets up a Store.
type Option func(*options)

type options struct {
	now         func() time.Time
	maxBatch    int
	commitDelay time.Duration
	readers     int
	busy        time.Duration
	onCommit    func(items int)
	migrations  fs.FS
	log         zerolog.Logger
}

// WithClock makes the store read the time from now instead of time.Now. The
// times it stores are converted to UTC.
func WithClock(now func() time.Time) Option {
	return func(o *options) { o.now = now }
}

// WithMaxBatch caps how many write calls share one transaction (default 128).
// Values below 1 are treated as 1, which turns group commit off.
func WithMaxBatch(n int) Option {
	return func(o *options) { o.maxBatch = max(n, 1) }
}

// WithCommitDelay sets how long the writer may wait for more calls before
// it commits a batch (default 2ms; 0 never waits). It waits only while calls
// arrive concurrently, that is when the previous transaction carried more
// than one and ended less than the delay ago (by the store's clock), and
// only until the batch is as large as that one: under load more calls share
// each sync, which costs far more CPU than the wait, and a lone call is
// committed at once.
func WithCommitDelay(d time.Duration) Option {
	return func(o *options) { o.commitDelay = max(d, 0) }
}

// WithCommitHook calls fn after every committed write transaction with the
// number of calls it carried, for example to feed a metric. fn runs on the
// writer goroutine and delays the next commit, so it must return quickly.
func WithCommitHook(fn func(items int)) Option {
	return func(o *options) { o.onCommit = fn }
}

// WithLogger makes the store log to log (default: nowhere): the files whose
// mode it tightened at Open, and when writes begin to fail and succeed
// again.
func WithLogger(log zerolog.Logger) Option {
	return func(o *options) { o.log = log }
}

// withMigrations replaces the embedded migrations; tests use it.
func withMigrations(fsys fs.FS) Option {
	return func(o *options) { o.migrations = fsys }
}

// Open opens (creating if needed) the database at path, applies the pending
// schema migrations and starts the writer. ctx bounds the migrations; the
// returned Store lives until Close whatever becomes of ctx.
//
// The database file is created mode 0600, and an existing one, or its -wal,
// -shm or -journal file, that group or others may read is made 0600 (and
// logged). When the file is not a SQLite database, is another program's
// database or is damaged, Open fails with a *DatabaseError that says how
// to start afresh.
func Open(ctx context.Context, path string, opts ...Option) (*Store, error) {
	o := options{
		now:         time.Now,
		maxBatch:    128,
		commitDelay: 2 * time.Millisecond,
		readers:     4,
		busy:        5 * time.Second,
		migrations:  embeddedMigrations(),
		log:         zerolog.Nop(),
	}
	for _, opt := range opts {
		opt(&o)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if err := createPrivate(abs); err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if err := checkDatabase(ctx, abs); err != nil {
		return nil, unusable(abs, path, err) // and leaves another program's file as it is
	}
	tightened, err := privateFiles(abs)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	for _, p := range slices.Sorted(maps.Keys(tightened)) {
		o.log.Warn().Str("file", p).Str("mode", fmt.Sprintf("%04o", tightened[p])).
			Msg("store file was readable by group or others; made it 0600")
	}

	// Every connection gets these on open; _txlock=immediate makes the
	// writer take the write lock at BEGIN rather than half way through.
	pragmas := url.Values{}
	pragmas.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", o.busy.Milliseconds()))
	pragmas.Add("_pragma", "foreign_keys(1)")
	pragmas.Add("_pragma", "journal_mode(WAL)")
	pragmas.Add("_pragma", "synchronous(FULL)")
	wq := cloneValues(pragmas)
	wq.Set("_txlock", "immediate")
	// The writer's automatic checkpoint; see checkpointer.
	wq.Add("_pragma", fmt.Sprintf("wal_autocheckpoint(%d)", walCheckpointPages))
	rq := cloneValues(pragmas)
	rq.Add("_pragma", "query_only(1)")

	wdb, err := sql.Open("sqlite", dsn(abs, wq))
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	wdb.SetMaxOpenConns(1)
	wdb.SetMaxIdleConns(1)
	wdb.SetConnMaxLifetime(0)
	wdb.SetConnMaxIdleTime(0)

	if err := migrate(ctx, wdb, o.migrations, o.now); err != nil {
		wdb.Close()
		return nil, unusable(abs, path, err)
	}

	hot, err := prepareHot(ctx, wdb)
	if err != nil {
		wdb.Close()
		return nil, unusable(abs, path, err)
	}
	var hostColumns bool
	if err := wdb.QueryRowContext(ctx,
		"SELECT COUNT(*) > 0 FROM pragma_table_info('deployments') WHERE name = 'host'").Scan(&hostColumns); err != nil {
		hot.close()
		wdb.Close()
		return nil, unusable(abs, path, err)
	}

	rdb, err := sql.Open("sqlite", dsn(abs, rq))
	if err != nil {
		hot.close()
		wdb.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	rdb.SetMaxOpenConns(o.readers)
	rdb.SetMaxIdleConns(o.readers)
	if err := rdb.PingContext(ctx); err != nil {
		rdb.Close()
		hot.close()
		wdb.Close()
		return nil, unusable(abs, path, err)
	}
	replaced, err := loadReplaced(ctx, rdb)
	if err != nil {
		rdb.Close()
		hot.close()
		wdb.Close()
		return nil, unusable(abs, path, err)
	}

	s := &Store{
		path:         abs,
		hostColumns:  hostColumns,
		wdb:          wdb,
		rdb:          rdb,
		hot:          hot,
		now:          o.now,
		maxBatch:     o.maxBatch,
		commitDelay:  o.commitDelay,
		onCommit:     o.onCommit,
		log:          o.log,
		ops:          make(chan *writeOp, o.maxBatch),
		stopped:      make(chan struct{}),
		dirty:        make(chan struct{}, 1),
		checkpointed: make(chan struct{}),
		replaced:     replaced,
	}
	go s.run(context.WithoutCancel(ctx))
	go s.checkpointer(context.WithoutCancel(ctx), checkpointInterval)
	return s, nil
}

func cloneValues(v url.Values) url.Values {
	c := url.Values{}
	for k, vs := range v {
		c[k] = append([]string(nil), vs...)
	}
	return c
}

// dsn builds a file: URI, so that any character in the path survives.
func dsn(path string, q url.Values) string {
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(path), RawQuery: q.Encode()}
	return u.String()
}

// Close waits for the writes already handed to the writer to commit, then
// closes the database. Calls made after Close fail with ErrClosed. Close is
// safe to call more than once and from any goroutine.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		close(s.ops)
		s.mu.Unlock()
		<-s.stopped
		<-s.checkpointed
		s.closeErr = errors.Join(s.hot.close(), s.rdb.Close(), s.wdb.Close())
		if s.closeErr != nil {
			s.closeErr = fmt.Errorf("close store: %w", s.closeErr)
		}
	})
	return s.closeErr
}

// Ping checks that the database answers reads and that the writer can take
// the write lock.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	if err := s.rdb.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("ping store: %w", err)
	}
	if err := s.write(ctx, func(context.Context, *sql.Tx) error { return nil }); err != nil {
		return fmt.Errorf("ping store: %w", err)
	}
	return nil
}

// A writeOp is one call's share of a group-committed transaction.
type writeOp struct {
	ctx  context.Context // the caller's: checked before fn runs
	fn   func(ctx context.Context, tx *sql.Tx) error
	err  error
	done chan error
}

// write hands fn to the writer goroutine and returns once the transaction
// that ran it has committed (nil) or failed (its error). fn runs inside a
// savepoint: when it returns an error, whatever it wrote is undone and the
// other calls of the batch are unaffected.
//
// ctx is respected until fn starts; once it has started, write waits for the
// commit, which takes one sync, so that its answer is always the truth.
func (s *Store) write(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
	op := &writeOp{ctx: ctx, fn: fn, done: make(chan error, 1)}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return ErrClosed
	}
	select {
	case s.ops <- op:
	case <-ctx.Done():
		s.mu.RUnlock()
		return ctx.Err()
	}
	s.mu.RUnlock()
	return <-op.done
}

// run is the writer goroutine: it gathers waiting calls into batches and
// commits each batch once. It returns when ops is closed and drained.
func (s *Store) run(ctx context.Context) {
	defer close(s.stopped)
	batch := make([]*writeOp, 0, s.maxBatch)
	delay := time.NewTimer(time.Hour)
	delay.Stop()
	var (
		last    int       // calls in the previous transaction
		lastEnd time.Time // when it ended
	)
	for op := range s.ops {
		batch = append(batch[:0], op)
		open := s.gather(&batch)
		if open && s.commitDelay > 0 && last > 1 && len(batch) < min(last, s.maxBatch) &&
			s.now().Sub(lastEnd) < s.commitDelay {
			// Calls are arriving concurrently: give the ones on their
			// way a moment to join, until the batch is as large as the
			// last one.
			delay.Reset(s.commitDelay)
			s.await(&batch, last, delay.C)
			delay.Stop()
		}
		last = len(batch)
		s.commit(ctx, batch)
		lastEnd = s.now()
		clear(batch)
	}
}

// gather adds the calls already waiting to batch, up to maxBatch, without
// blocking. It returns false when ops has been closed.
func (s *Store) gather(batch *[]*writeOp) bool {
	for len(*batch) < s.maxBatch {
		select {
		case op, ok := <-s.ops:
			if !ok {
				return false
			}
			*batch = append(*batch, op)
		default:
			return true
		}
	}
	return true
}

// await adds calls to batch as they arrive until it holds n, ops is closed
// or timeout fires.
func (s *Store) await(batch *[]*writeOp, n int, timeout <-chan time.Time) {
	for len(*batch) < n {
		select {
		case op, ok := <-s.ops:
			if !ok {
				return
			}
			*batch = append(*batch, op)
		case <-timeout:
			return
		}
	}
}

// commit runs batch in one transaction and answers every call in it.
func (s *Store) commit(ctx context.Context, batch []*writeOp) {
	defer func() {
		for _, op := range batch {
			if op.err != nil {
				s.noteFailure(op.err)
			}
			op.done <- op.err
		}
	}()
	// Most batches apply cleanly: run them without a savepoint per call.
	// If a call fails, undo the whole attempt and apply the batch again
	// with savepoints, so that each call keeps its own outcome.
	if len(batch) > 1 && s.apply(ctx, batch, false) {
		return
	}
	s.apply(ctx, batch, true)
}

// apply runs the batch in one transaction and commits it. Without
// savepoints it gives up (rolls back, clears every call's error and
// returns false) as soon as a call fails; with them, a failing call is
// undone alone. It returns true when the batch is settled: committed, or
// every call failed.
func (s *Store) apply(ctx context.Context, batch []*writeOp, savepoints bool) bool {
	failAll := func(err error) bool {
		for _, op := range batch {
			if op.err == nil {
				op.err = err
			}
		}
		return true
	}
	for _, op := range batch {
		op.err = nil
	}
	tx, err := s.wdb.BeginTx(ctx, nil)
	if err != nil {
		return failAll(fmt.Errorf("begin: %w", err))
	}
	// While writes fail, only a transaction that changes rows can show
	// that they work again; see totalChanges.
	changesBefore := int64(-1)
	if s.failure.Load() != nil {
		changesBefore = totalChanges(ctx, tx)
	}
	exec := func(stmt *sql.Stmt) error {
		_, err := tx.StmtContext(ctx, stmt).ExecContext(ctx)
		return err
	}
	applied := 0
	for _, op := range batch {
		if err := op.ctx.Err(); err != nil {
			op.err = err
			continue
		}
		if !savepoints {
			if op.err = op.fn(ctx, tx); op.err != nil {
				tx.Rollback()
				for _, o := range batch {
					o.err = nil
				}
				return false
			}
			applied++
			continue
		}
		if err := exec(s.hot.savepoint); err != nil {
			tx.Rollback()
			return failAll(fmt.Errorf("savepoint: %w", err))
		}
		if op.err = op.fn(ctx, tx); op.err != nil {
			if err := exec(s.hot.rollbackTo); err != nil {
				tx.Rollback()
				return failAll(fmt.Errorf("roll back to savepoint: %w", err))
			}
		}
		if err := exec(s.hot.release); err != nil {
			tx.Rollback()
			return failAll(fmt.Errorf("release savepoint: %w", err))
		}
		if op.err == nil {
			applied++
		}
	}
	if applied == 0 {
		tx.Rollback()
		return true
	}
	changed := changesBefore >= 0 && totalChanges(ctx, tx) > changesBefore
	if err := tx.Commit(); err != nil {
		return failAll(fmt.Errorf("commit: %w", err))
	}
	s.commits.Add(1)
	s.noteSuccess(changed)
	if applied > 1 {
		select {
		case s.dirty <- struct{}{}:
		default: // a checkpoint is already due
		}
	}
	if s.onCommit != nil {
		s.onCommit(applied)
	}
	return true
}

// checkpointer runs a passive checkpoint, at most one per interval, on a
// read connection after commits that carried several calls, until the
// writer has stopped.
//
// A checkpoint copies the pages committed to the WAL into the database
// file and syncs it. The writer does it itself, inside the commit that
// brings the WAL to walCheckpointPages, so the calls of that batch are
// answered only after it (SQLite ignores its errors: the commit stands).
// When calls come one at a time that costs least overall, one call now and
// then waiting for up to 4000 pages to be copied, and the copy does not
// compete with the next commit's sync. During a burst it holds up the whole
// batch and every call arriving meanwhile, and the longer the larger the
// database has grown: the load test's p99 doubled over 60,000 deliveries.
// So while commits carry several calls, this goroutine copies the WAL in
// the background as the writer goes on committing, and the writer's own
// checkpoint finds little left to copy.
func (s *Store) checkpointer(ctx context.Context, interval time.Duration) {
	defer close(s.checkpointed)
	wait := time.NewTimer(interval)
	wait.Stop()
	for {
		select {
		case <-s.dirty:
		case <-s.stopped:
			return
		}
		// An error leaves the pages in the WAL, where they are safe, for
		// the next pass or the writer's own checkpoint.
		_, _ = s.rdb.ExecContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)")
		wait.Reset(interval)
		select {
		case <-wait.C:
		case <-s.stopped:
			return
		}
	}
}

// hotStmts are the statements that every delivery runs, prepared once on
// the writer's connection: parsing SQL is a good part of a write's cost.
// Use them in a transaction through tx.StmtContext.
type hotStmts struct {
	savepoint, release, rollbackTo *sql.Stmt
	duplicate, insertDelivery      *sql.Stmt
	insertNewDelivery              *sql.Stmt
	supersede, insertDeployment    *sql.Stmt
}

// duplicateQuery finds the delivery that a delivery with id ?1 and body hash
// ?2 repeats, by id first, then by body: whether the id matched, its seq and
// its id. Duplicate rows never count; each arm uses its partial unique index.
const duplicateQuery = `SELECT 1, seq, COALESCE(delivery_id, '') FROM deliveries
		WHERE delivery_id = ?1 AND result <> 'duplicate'
	UNION ALL
	SELECT 0, seq, COALESCE(delivery_id, '') FROM deliveries
		WHERE body_sha256 = ?2 AND result <> 'duplicate'
	LIMIT 1`

// supersedeQuery marks the queued deployment of service ?2 superseded at ?1.
// A service has at most one queued deployment, since queuing one supersedes
// the one before (ClaimNext settles any older ones), so the row is found
// first and updated by id, which spares SQLite the list of rows to update
// that a multi-row UPDATE builds.
const supersedeQuery = `UPDATE deployments SET state = 'superseded', finished_at = ?1
	WHERE id = (SELECT id FROM deployments WHERE service = ?2 AND state = 'queued' ORDER BY id DESC LIMIT 1)`

// insertDeploymentQuery queues a deployment.
const insertDeploymentQuery = `INSERT INTO deployments
	(service, delivery_seq, trigger_kind, trigger_delivery_id, trigger_event, trigger_subject,
	 installation_id, run_id, run_number, tag, digest, force, dry_run, state, queued_at)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?)`

func prepareHot(ctx context.Context, db *sql.DB) (hotStmts, error) {
	var h hotStmts
	for _, p := range []struct {
		st    **sql.Stmt
		query string
	}{
		{&h.savepoint, "SAVEPOINT op"},
		{&h.release, "RELEASE op"},
		{&h.rollbackTo, "ROLLBACK TO op"},
		{&h.duplicate, duplicateQuery},
		{&h.insertDelivery, `INSERT INTO deliveries
			(delivery_id, event, action, body_sha256, received_at, result, reason)
			VALUES (?, ?, ?, ?, ?, ?, ?)`},
		// Inserts nothing when the partial unique indexes say the delivery
		// repeats one recorded before: the common case costs one statement.
		{&h.insertNewDelivery, `INSERT INTO deliveries
			(delivery_id, event, action, body_sha256, received_at, result, reason)
			VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`},
		{&h.supersede, supersedeQuery},
		{&h.insertDeployment, insertDeploymentQuery},
	} {
		st, err := db.PrepareContext(ctx, p.query)
		if err != nil {
			h.close()
			return hotStmts{}, fmt.Errorf("prepare %q: %w", p.query, err)
		}
		*p.st = st
	}
	return h, nil
}

func (h hotStmts) close() error {
	var errs []error
	for _, st := range []*sql.Stmt{h.savepoint, h.release, h.rollbackTo, h.duplicate,
		h.insertDelivery, h.insertNewDelivery, h.supersede, h.insertDeployment} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	return errors.Join(errs...)
}

// timeLayout stores times as fixed-width UTC text, so that they sort as
// text, read well in the sqlite3 shell and keep nanoseconds.
const timeLayout = "2006-01-02T15:04:05.000000000Z"

func formatTime(t time.Time) string { return t.UTC().Format(timeLayout) }

func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(timeLayout, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("parse stored time %q: %w", s, err)
	}
	return t, nil
}

// parseNullTime turns a nullable time column into a pointer.
func parseNullTime(ns sql.NullString) (*time.Time, error) {
	if !ns.Valid {
		return nil, nil
	}
	t, err := parseTime(ns.String)
	if err != nil {
		return nil, err
	}
	return &t, nil
}

// nullString stores "" as NULL.
func nullString(s string) sql.NullString { return sql.NullString{String: s, Valid: s != ""} }

// clampPage applies Page's documented defaults.
func clampPage(p deployer.Page) (limit int, before int64) {
	switch {
	case p.Limit == 0:
		limit = 50
	case p.Limit < 1:
		limit = 1
	case p.Limit > 500:
		limit = 500
	default:
		limit = p.Limit
	}
	return limit, p.Before
}
