package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// Retention says what the store deletes, in the background, and how.
// A zero Deliveries and a zero Deployments keep everything, and no pruner
// runs.
//
// A pass deletes, in this order and each in batches of Batch rows, one
// transaction per batch that shares no commit with other writes:
//
//   - deployments of a service beyond its newest Deployments, except those
//     queued or running, the service's last deployment (services.
//     last_deployment_id), its two newest succeeded ones and the newest
//     succeeded or unchanged one of the digest that runs and of the digest
//     that ran before it (the rollback target); their step logs go with
//     them;
//   - deliveries received more than Deliveries ago, except those a kept
//     deployment refers to;
//   - redeliveries asked for more than Deliveries ago, except those of a
//     delivery that is kept.
//
// What runs for each service and the history of the digests that ran
// (which keeps webhooks from deploying backwards) are never deleted. After
// a pass that deleted rows, the free pages are given back to the file
// system (PRAGMA incremental_vacuum) but for a reserve that the next rows
// reuse, so that the file neither grows nor churns.
type Retention struct {
	// Deliveries is how long deliveries and redeliveries are kept; 0
	// keeps them forever. The store does not refuse a short one: the
	// configuration holds it to GitHub's redelivery window.
	Deliveries time.Duration
	// Deployments is how many deployments of each service are kept, the
	// newest; 0 keeps them all.
	Deployments int
	// Interval is the time between two passes (default 1m). The first
	// comes firstPassDelay after Open, or Interval if that is shorter.
	Interval time.Duration
	// Batch is how many rows one transaction deletes at most (default
	// 200). After each batch the pruner pauses as long as it took, up to
	// 50ms.
	Batch int
}

// Pruned is what one pass deleted.
type Pruned struct {
	Deployments  int
	Deliveries   int
	Redeliveries int
	// FreedPages is how many free pages of the file were given back.
	FreedPages int
}

// Total is the number of rows the pass deleted.
func (p Pruned) Total() int { return p.Deployments + p.Deliveries + p.Redeliveries }

func (r Retention) enabled() bool { return r.Deliveries > 0 || r.Deployments > 0 }

// Retention defaults.
const (
	defaultPruneInterval = time.Minute
	defaultPruneBatch    = 200
	// vacuumPages is how many free pages one transaction gives back.
	vacuumPages = 1000
	// firstPassDelay is when the first pass comes after Open: soon, so
	// that a database grown large shrinks from the start, but not in the
	// middle of start-up.
	firstPassDelay = 10 * time.Second
)

// WithRetention makes the store delete what r says it need not keep: a
// pass every r.Interval on a goroutine of its own, until Close. With
// either limit set, Open also makes sure the database uses incremental
// auto-vacuum, which a database created before needs a one-time VACUUM for
// (logged; it rewrites the whole file, holding up Open).
func WithRetention(r Retention) Option {
	return func(o *options) {
		if r.Interval <= 0 {
			r.Interval = defaultPruneInterval
		}
		if r.Batch <= 0 {
			r.Batch = defaultPruneBatch
		}
		o.retention = r
	}
}

// incrementalVacuum switches the database to auto_vacuum=INCREMENTAL, so
// that incremental_vacuum can shrink it. A database without tables takes
// the setting with a VACUUM that has nothing to copy; one that has tables
// needs a VACUUM that rewrites the file (SQLite does it in a transaction: if it fails, the database is
// as it was, and deployd goes on without shrinking the file).
func incrementalVacuum(ctx context.Context, db *sql.DB, log zerolog.Logger) error {
	var mode int
	if err := db.QueryRowContext(ctx, "PRAGMA auto_vacuum").Scan(&mode); err != nil {
		return fmt.Errorf("read auto_vacuum: %w", err)
	}
	const incremental = 2
	if mode == incremental {
		return nil
	}
	var tables, pages, pageSize int64
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_schema").Scan(&tables); err != nil {
		return fmt.Errorf("read schema: %w", err)
	}
	if _, err := db.ExecContext(ctx, "PRAGMA auto_vacuum = INCREMENTAL"); err != nil {
		return fmt.Errorf("set auto_vacuum: %w", err)
	}
	if tables == 0 {
		// A new database: the VACUUM that writes the setting into the
		// file's header has nothing to copy.
		if _, err := db.ExecContext(ctx, "VACUUM"); err != nil {
			return fmt.Errorf("set auto_vacuum: %w", err)
		}
		return nil
	}
	_ = db.QueryRowContext(ctx, "PRAGMA page_count").Scan(&pages)
	_ = db.QueryRowContext(ctx, "PRAGMA page_size").Scan(&pageSize)
	log.Info().Str("size", fmt.Sprintf("%.1f MiB", float64(pages*pageSize)/(1<<20))).
		Msg("store: switching the database to incremental vacuum for retention: a one-time VACUUM rewrites it, which may take a while and needs as much free space again")
	start := time.Now()
	if _, err := db.ExecContext(ctx, "VACUUM"); err != nil {
		log.Warn().Err(err).Msg("store: the one-time VACUUM failed and changed nothing; old rows are still deleted and their space reused, but the file cannot shrink until it succeeds at a later start")
		return nil
	}
	log.Info().Dur("took", time.Since(start)).Msg("store: switched the database to incremental vacuum")
	return nil
}

// pruner runs a pass every interval until ctx ends.
func (s *Store) pruner(ctx context.Context) {
	defer close(s.pruned)
	t := time.NewTimer(min(firstPassDelay, s.retention.Interval))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		t.Reset(s.retention.Interval)
		p, err := s.Prune(ctx)
		if ctx.Err() != nil {
			return // closing: the pass was cut short, not failed
		}
		if err != nil {
			s.log.Warn().Err(err).Int("deployments", p.Deployments).Int("deliveries", p.Deliveries).
				Int("redeliveries", p.Redeliveries).Msg("store: pruning old rows failed; trying again at the next pass")
		}
	}
}

// PrunedTotal returns what the passes have deleted since Open, for
// example to feed a metric. FreedPages is left zero. Safe for concurrent
// use.
func (s *Store) PrunedTotal() Pruned {
	return Pruned{
		Deployments:  int(s.prunedDeployments.Load()),
		Deliveries:   int(s.prunedDeliveries.Load()),
		Redeliveries: int(s.prunedRedeliveries.Load()),
	}
}

// Prune runs one pass of the retention set by WithRetention now, and
// returns what it deleted, also when it fails part way. It logs a summary
// of the pass. Without WithRetention it deletes nothing. Safe for
// concurrent use, but passes are meant to run one at a time.
func (s *Store) Prune(ctx context.Context) (Pruned, error) {
	var p Pruned
	r := s.retention
	if !r.enabled() {
		return p, nil
	}
	start := time.Now()
	err := s.prune(ctx, r, &p)
	if err == nil && p.Total() > 0 {
		p.FreedPages, err = s.vacuum(ctx)
	}
	ev := s.log.Debug()
	if p.Total() > 0 {
		ev = s.log.Info()
	}
	ev.Int("deployments", p.Deployments).Int("deliveries", p.Deliveries).Int("redeliveries", p.Redeliveries).
		Int("freed_pages", p.FreedPages).Dur("took", time.Since(start)).Msg("store: pruned old rows")
	s.prunedDeployments.Add(int64(p.Deployments))
	s.prunedDeliveries.Add(int64(p.Deliveries))
	s.prunedRedeliveries.Add(int64(p.Redeliveries))
	if err != nil {
		return p, fmt.Errorf("prune store: %w", err)
	}
	return p, nil
}

func (s *Store) prune(ctx context.Context, r Retention, p *Pruned) error {
	if r.Deployments > 0 {
		if err := s.pruneDeployments(ctx, r, &p.Deployments); err != nil {
			return err
		}
	}
	if r.Deliveries > 0 {
		cutoff := formatTime(s.now().Add(-r.Deliveries))
		if err := s.pruneDeliveries(ctx, r.Batch, cutoff, &p.Deliveries); err != nil {
			return err
		}
		if err := s.pruneRedeliveries(ctx, r.Batch, cutoff, &p.Redeliveries); err != nil {
			return err
		}
	}
	return nil
}

// batchPause bounds the pause after a pruning batch; see pruneStep.
const batchPause = 50 * time.Millisecond

// pruneStep runs fn in a transaction of its own on the writer's
// connection, whose page cache the pruner's reads share rather than
// grow another, and returns the rows fn deleted. Then it waits as long as
// the transaction took (at most batchPause), so that the deliveries that
// arrived meanwhile are committed before the next batch.
func (s *Store) pruneStep(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) (int64, error)) (int, error) {
	var n int64
	start := time.Now()
	err := s.writeAlone(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		n, err = fn(ctx, tx)
		return err
	})
	if err != nil {
		return 0, err
	}
	if n > 0 {
		pause := time.NewTimer(min(time.Since(start), batchPause))
		defer pause.Stop()
		select {
		case <-pause.C:
		case <-ctx.Done():
			return int(n), ctx.Err()
		}
	}
	return int(n), nil
}

// deleted runs a DELETE and returns how many rows it deleted.
func deleted(ctx context.Context, tx *sql.Tx, query string, args ...any) (int64, error) {
	res, err := tx.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// pruneDeployments deletes the deployments of each service beyond the
// newest keep, but for those Retention names.
func (s *Store) pruneDeployments(ctx context.Context, r Retention, n *int) error {
	service := ""
	for {
		// The next service, by the index: no scan of every deployment.
		var next sql.NullString
		if _, err := s.pruneStep(ctx, func(ctx context.Context, tx *sql.Tx) (int64, error) {
			return 0, tx.QueryRowContext(ctx, "SELECT MIN(service) FROM deployments WHERE service > ?", service).Scan(&next)
		}); err != nil {
			return fmt.Errorf("list services with deployments: %w", err)
		}
		if !next.Valid {
			return nil
		}
		service = next.String
		if err := s.pruneServiceDeployments(ctx, service, r, n); err != nil {
			return fmt.Errorf("deployments of %s: %w", service, err)
		}
	}
}

func (s *Store) pruneServiceDeployments(ctx context.Context, service string, r Retention, n *int) error {
	// The newest deployment beyond the kept ones (none: nothing to do),
	// and the older ones kept all the same. Deployments queued later have
	// larger ids, and replace what these name only above top, so they
	// hold for the whole pass.
	var (
		top  int64
		keep []int64
	)
	if _, err := s.pruneStep(ctx, func(ctx context.Context, tx *sql.Tx) (int64, error) {
		err := tx.QueryRowContext(ctx, "SELECT id FROM deployments WHERE service = ? ORDER BY id DESC LIMIT 1 OFFSET ?",
			service, r.Deployments).Scan(&top)
		if errors.Is(err, sql.ErrNoRows) {
			top = 0
			return 0, nil
		}
		if err != nil {
			return 0, err
		}
		keep, err = rollbackDeployments(ctx, tx, service)
		return 0, err
	}); err != nil || top == 0 {
		return err
	}
	notKept := ""
	args := []any{service, 0, 0}
	if len(keep) > 0 {
		notKept = " AND id NOT IN (" + strings.TrimSuffix(strings.Repeat("?,", len(keep)), ",") + ")"
		for _, id := range keep {
			args = append(args, id)
		}
	}
	del := `DELETE FROM deployments WHERE service = ? AND id > ? AND id <= ?
		AND state <> 'queued' AND state <> 'running'` + notKept
	var cursor int64
	for cursor < top {
		var hi int64
		d, err := s.pruneStep(ctx, func(ctx context.Context, tx *sql.Tx) (int64, error) {
			if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(id), 0) FROM (SELECT id FROM deployments
				WHERE service = ? AND id > ? AND id <= ? ORDER BY id LIMIT ?)`, service, cursor, top, r.Batch).Scan(&hi); err != nil || hi == 0 {
				return 0, err
			}
			args[1], args[2] = cursor, hi
			return deleted(ctx, tx, del, args...)
		})
		*n += d
		if err != nil || hi == 0 {
			return err
		}
		cursor = hi
	}
	return nil
}

// rollbackDeployments returns the deployments of service that are kept
// whatever their age: its last deployment, its two newest succeeded ones,
// and the newest succeeded or unchanged one of the digest that runs and of
// the one that ran before it.
func rollbackDeployments(ctx context.Context, tx *sql.Tx, service string) ([]int64, error) {
	var keep []int64
	var (
		digest, previous string
		last             int64
	)
	err := tx.QueryRowContext(ctx, "SELECT digest, previous_digest, last_deployment_id FROM services WHERE name = ?",
		service).Scan(&digest, &previous, &last)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("read status: %w", err)
	}
	if last != 0 {
		keep = append(keep, last)
	}
	rows, err := tx.QueryContext(ctx,
		"SELECT id FROM deployments WHERE service = ? AND state = 'succeeded' ORDER BY id DESC LIMIT 2", service)
	if err != nil {
		return nil, fmt.Errorf("find succeeded deployments: %w", err)
	}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, fmt.Errorf("find succeeded deployments: %w", err)
		}
		keep = append(keep, id)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, fmt.Errorf("find succeeded deployments: %w", err)
	}
	for _, d := range []string{digest, previous} {
		if d == "" {
			continue
		}
		var id int64
		err := tx.QueryRowContext(ctx, `SELECT id FROM deployments WHERE service = ? AND digest = ?
			AND (state = 'succeeded' OR state = 'unchanged') ORDER BY id DESC LIMIT 1`, service, d).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("find the deployment of %s: %w", d, err)
		}
		keep = append(keep, id)
	}
	return keep, nil
}

// pruneDeliveries deletes, oldest first, the deliveries received before
// cutoff that no deployment refers to. It walks them by seq, which follows
// the order they were received in, and stops at the first one inside the
// window; the next pass starts again from the oldest, so that a delivery
// whose deployment has gone since is deleted then.
func (s *Store) pruneDeliveries(ctx context.Context, batch int, cutoff string, n *int) error {
	var cursor int64
	for {
		var (
			hi   int64
			last bool
		)
		d, err := s.pruneStep(ctx, func(ctx context.Context, tx *sql.Tx) (int64, error) {
			var err error
			if hi, last, err = oldDeliveries(ctx, tx, cursor, batch, cutoff); err != nil || hi == cursor {
				return 0, err
			}
			return deleted(ctx, tx, `DELETE FROM deliveries WHERE seq > ? AND seq <= ? AND received_at < ?
				AND NOT EXISTS (SELECT 1 FROM deployments WHERE delivery_seq = deliveries.seq)`, cursor, hi, cutoff)
		})
		*n += d
		if err != nil || hi == cursor || last {
			return err
		}
		cursor = hi
	}
}

// oldDeliveries reads up to batch deliveries after seq cursor and returns
// the seq of the last of those received before cutoff, before the first
// that was not; last is true when no older ones follow.
func oldDeliveries(ctx context.Context, tx *sql.Tx, cursor int64, batch int, cutoff string) (hi int64, last bool, err error) {
	rows, err := tx.QueryContext(ctx, "SELECT seq, received_at FROM deliveries WHERE seq > ? ORDER BY seq LIMIT ?", cursor, batch)
	if err != nil {
		return 0, false, fmt.Errorf("read old deliveries: %w", err)
	}
	defer rows.Close()
	hi, seen := cursor, 0
	for rows.Next() {
		var (
			seq      int64
			received string
		)
		if err := rows.Scan(&seq, &received); err != nil {
			return 0, false, fmt.Errorf("read old deliveries: %w", err)
		}
		seen++
		if received >= cutoff {
			return hi, true, rows.Err()
		}
		hi = seq
	}
	if err := rows.Err(); err != nil {
		return 0, false, fmt.Errorf("read old deliveries: %w", err)
	}
	return hi, seen < batch, nil
}

// pruneRedeliveries deletes the redeliveries asked for before cutoff,
// unless the delivery they brought is kept.
func (s *Store) pruneRedeliveries(ctx context.Context, batch int, cutoff string, n *int) error {
	for {
		d, err := s.pruneStep(ctx, func(ctx context.Context, tx *sql.Tx) (int64, error) {
			return deleted(ctx, tx, `DELETE FROM redeliveries WHERE rowid IN (
				SELECT r.rowid FROM redeliveries r WHERE r.requested_at < ?
					AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.delivery_id = r.delivery_id AND d.result <> 'duplicate')
				LIMIT ?)`, cutoff, batch)
		})
		*n += d
		if err != nil || d < batch {
			return err
		}
	}
}

// vacuum gives the file's free pages back to the file system, vacuumPages
// per transaction, down to a reserve of an eighth of the pages in use, and
// returns how many it gave back. The reserve is for the rows that arrive
// until the next pass, which reuse free pages rather than grow the file:
// steady pruning frees no more than that, and a pass that deleted a lot
// (the first one on a database grown large) shrinks the file. A database
// that could not be switched to incremental vacuum has none to give.
func (s *Store) vacuum(ctx context.Context) (int, error) {
	freed := 0
	for {
		var before, after int
		err := s.writeAlone(ctx, func(ctx context.Context, tx *sql.Tx) error {
			var total int
			if err := tx.QueryRowContext(ctx, "PRAGMA freelist_count").Scan(&before); err != nil {
				return err
			}
			if err := tx.QueryRowContext(ctx, "PRAGMA page_count").Scan(&total); err != nil {
				return err
			}
			after = before
			n := min(before-(total-before)/8, vacuumPages)
			if n <= 0 {
				return nil
			}
			// Each page freed is a result row: read them all, or only
			// the first would be freed.
			rows, err := tx.QueryContext(ctx, "PRAGMA incremental_vacuum("+strconv.Itoa(n)+")")
			if err != nil {
				return err
			}
			for rows.Next() {
			}
			if err := errors.Join(rows.Err(), rows.Close()); err != nil {
				return err
			}
			return tx.QueryRowContext(ctx, "PRAGMA freelist_count").Scan(&after)
		})
		if err != nil {
			return freed, fmt.Errorf("incremental vacuum: %w", err)
		}
		if after >= before {
			return freed, nil
		}
		freed += before - after
	}
}
