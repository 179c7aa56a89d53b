package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/deployd/deployd/deployer"
)

// releaseColumns are read by scanRelease, in this order.
const releaseColumns = `id, set_name, commit_sha, state, failed_member, reason, delivery_id, event,
	installation_id, run_id, run_number, created_at, started_at, finished_at`

func scanRelease(row scanner) (deployer.Release, error) {
	var (
		r                 deployer.Release
		created           string
		started, finished sql.NullString
	)
	err := row.Scan(&r.ID, &r.Set, &r.Commit, &r.State, &r.FailedMember, &r.Reason,
		&r.Trigger.DeliveryID, &r.Trigger.Event, &r.Trigger.InstallationID, &r.Trigger.RunID,
		&r.Trigger.RunNumber, &created, &started, &finished)
	if err != nil {
		return deployer.Release{}, err
	}
	if r.Trigger.Event != "" {
		r.Trigger.Kind = deployer.TriggerWebhook
		r.Trigger.Commit = r.Commit
	}
	if r.CreatedAt, err = parseTime(created); err != nil {
		return deployer.Release{}, err
	}
	if r.StartedAt, err = parseNullTime(started); err != nil {
		return deployer.Release{}, err
	}
	if r.FinishedAt, err = parseNullTime(finished); err != nil {
		return deployer.Release{}, err
	}
	return r, nil
}

// RecordReleaseDelivery records a delivery as RecordDelivery does and,
// in the same transaction, hands each intake to the release of its set
// and commit (see deployer.ReleaseStore). With intakes, the delivery is
// recorded as queued even when reqs is empty, and its reason (d.Reason,
// if any, first) names the release each intake went to; the receipt's
// Releases and Reason repeat the ids and the reason. Safe for concurrent
// use.
func (s *Store) RecordReleaseDelivery(ctx context.Context, d deployer.Delivery, reqs []deployer.Request, intakes []deployer.ReleaseIntake) (deployer.Receipt, []int64, error) {
	if len(intakes) == 0 {
		rec, err := s.RecordDelivery(ctx, d, reqs)
		return rec, nil, err
	}
	if d.Event == "" {
		return deployer.Receipt{}, nil, fmt.Errorf("record delivery %s: no event", d.ID)
	}
	for i, r := range reqs {
		if err := r.Validate(); err != nil {
			return deployer.Receipt{}, nil, fmt.Errorf("record delivery %s: request %d: %w", d.ID, i, err)
		}
	}
	for _, in := range intakes {
		for _, m := range in.Members {
			r := deployer.Request{Service: m.Service, Tag: m.Tag, Digest: m.Digest}
			if err := r.Validate(); err != nil {
				return deployer.Receipt{}, nil, fmt.Errorf("record delivery %s: release set %s: %w", d.ID, in.Set, err)
			}
		}
	}
	d.Result = deployer.ResultQueued
	var (
		rec    deployer.Receipt
		ids    []int64
		reason string
	)
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		ids = ids[:0]
		var (
			seq int64
			err error
		)
		rec, seq, err = s.recordDelivery(ctx, tx, d, reqs)
		if err != nil || rec.Duplicate {
			return err
		}
		now := s.now()
		notes := []string{}
		if d.Reason != "" {
			notes = append(notes, d.Reason)
		}
		for _, in := range intakes {
			id, note, err := s.takeIntake(ctx, tx, in, now)
			if err != nil {
				return fmt.Errorf("release set %s, commit %s: %w", in.Set, in.Commit, err)
			}
			ids = append(ids, id)
			notes = append(notes, note)
		}
		reason = strings.Join(notes, "; ")
		_, err = tx.ExecContext(ctx, "UPDATE deliveries SET reason = ? WHERE seq = ?", reason, seq)
		return err
	})
	if err != nil {
		return deployer.Receipt{}, nil, fmt.Errorf("record delivery %s: %w", d.ID, err)
	}
	if !rec.Duplicate {
		rec.Releases, rec.Reason = ids, reason
	}
	return rec, ids, nil
}

// takeIntake gives one intake to the release of its set and commit and
// returns that release's id and a note for the delivery's reason.
func (s *Store) takeIntake(ctx context.Context, tx *sql.Tx, in deployer.ReleaseIntake, now time.Time) (int64, string, error) {
	at := formatTime(now)
	short := shortCommit(in.Commit)
	var (
		id    int64
		state deployer.ReleaseState
	)
	err := tx.QueryRowContext(ctx, `SELECT id, state FROM releases
		WHERE set_name = ? AND commit_sha = ? AND state IN ('waiting', 'queued', 'running')
		ORDER BY id DESC LIMIT 1`, in.Set, in.Commit).Scan(&id, &state)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		state = deployer.ReleaseWaiting
		if in.Gate {
			state = deployer.ReleaseQueued
		}
		t := in.Trigger
		if !in.Gate {
			t = deployer.Trigger{}
		}
		err = tx.QueryRowContext(ctx, `INSERT INTO releases
			(set_name, commit_sha, state, delivery_id, event, installation_id, run_id, run_number, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
			in.Set, in.Commit, state, t.DeliveryID, t.Event, t.InstallationID, t.RunID, t.RunNumber, at).Scan(&id)
		if err != nil {
			return 0, "", err
		}
		if err := putMembers(ctx, tx, id, in.Members, true); err != nil {
			return 0, "", err
		}
		if in.Gate {
			return id, fmt.Sprintf("release %d of set %s (commit %s) queued", id, in.Set, short), supersedeReleases(ctx, tx, in.Set, id, at)
		}
		return id, fmt.Sprintf("held in release %d of set %s (commit %s) until the commit's workflow run succeeds", id, in.Set, short), nil
	case err != nil:
		return 0, "", err
	}
	switch {
	case in.Gate && state == deployer.ReleaseWaiting:
		t := in.Trigger
		if _, err := tx.ExecContext(ctx, `UPDATE releases SET state = 'queued', delivery_id = ?, event = ?,
				installation_id = ?, run_id = ?, run_number = ? WHERE id = ?`,
			t.DeliveryID, t.Event, t.InstallationID, t.RunID, t.RunNumber, id); err != nil {
			return 0, "", err
		}
		// The held package events keep their tag and digest.
		if err := putMembers(ctx, tx, id, in.Members, false); err != nil {
			return 0, "", err
		}
		return id, fmt.Sprintf("release %d of set %s (commit %s) queued with the package events it held", id, in.Set, short), supersedeReleases(ctx, tx, in.Set, id, at)
	case in.Gate:
		return id, fmt.Sprintf("release %d of set %s (commit %s) is already %s; this run adds nothing", id, in.Set, short, state), nil
	case state == deployer.ReleaseWaiting:
		if err := putMembers(ctx, tx, id, in.Members, true); err != nil {
			return 0, "", err
		}
		return id, fmt.Sprintf("held in release %d of set %s (commit %s) until the commit's workflow run succeeds", id, in.Set, short), nil
	}
	// A package event for a commit whose run came first: its digest pins
	// the members that have not been queued yet.
	for _, m := range in.Members {
		if m.Digest == "" {
			continue
		}
		if _, err := tx.ExecContext(ctx, `UPDATE release_members SET digest = ?, tag = ?
			WHERE release_id = ? AND service = ? AND NOT EXISTS
				(SELECT 1 FROM deployments WHERE release_id = ? AND service = ?)`,
			m.Digest, m.Tag, id, m.Service, id, m.Service); err != nil {
			return 0, "", err
		}
	}
	return id, fmt.Sprintf("matched to release %d of set %s (commit %s), %s", id, in.Set, short, state), nil
}

// putMembers adds members to release id; replace says whether a member
// already there takes the new tag and digest.
func putMembers(ctx context.Context, tx *sql.Tx, id int64, members []deployer.ReleaseMember, replace bool) error {
	q := `INSERT INTO release_members (release_id, service, tag, digest, delivery_id) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (release_id, service) DO NOTHING`
	if replace {
		q = `INSERT INTO release_members (release_id, service, tag, digest, delivery_id) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (release_id, service) DO UPDATE SET tag = excluded.tag, digest = excluded.digest,
				delivery_id = excluded.delivery_id`
	}
	for _, m := range members {
		if _, err := tx.ExecContext(ctx, q, id, m.Service, m.Tag, m.Digest, m.DeliveryID); err != nil {
			return fmt.Errorf("record member %s of release %d: %w", m.Service, id, err)
		}
	}
	return nil
}

// supersedeReleases marks the queued releases of set older than id superseded.
func supersedeReleases(ctx context.Context, tx *sql.Tx, set string, id int64, at string) error {
	_, err := tx.ExecContext(ctx, `UPDATE releases SET state = 'superseded', finished_at = ?,
			reason = 'release ' || ? || ' of a newer commit was queued first'
		WHERE set_name = ? AND state = 'queued' AND id < ?`, at, id, set, id)
	return err
}

func shortCommit(c string) string {
	if len(c) > 7 {
		return c[:7]
	}
	return c
}

// ClaimRelease marks the newest queued release of set running, the older
// queued ones superseded, and returns it with its members; ok is false
// when none is queued. Safe for concurrent use.
func (s *Store) ClaimRelease(ctx context.Context, set string) (deployer.Release, bool, error) {
	var (
		r  deployer.Release
		ok bool
	)
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		r, ok = deployer.Release{}, false
		var id int64
		err := tx.QueryRowContext(ctx,
			"SELECT id FROM releases WHERE set_name = ? AND state = 'queued' ORDER BY id DESC LIMIT 1", set).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		at := formatTime(s.now())
		if err := supersedeReleases(ctx, tx, set, id, at); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "UPDATE releases SET state = 'running', started_at = ? WHERE id = ?", at, id); err != nil {
			return err
		}
		if r, err = readRelease(ctx, tx, id); err != nil {
			return err
		}
		ok = true
		return nil
	})
	if err != nil {
		return deployer.Release{}, false, fmt.Errorf("claim next release of %s: %w", set, err)
	}
	return r, ok, nil
}

// FinishRelease records the end of release r.ID: r.State (a final state),
// r.FailedMember and r.Reason, at the store's clock. It refuses a release
// that already ended. Safe for concurrent use.
func (s *Store) FinishRelease(ctx context.Context, r deployer.Release) error {
	if !r.State.Final() {
		return fmt.Errorf("finish release %d: %q is not a final state", r.ID, r.State)
	}
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE releases SET state = ?, failed_member = ?, reason = ?, finished_at = ?
			WHERE id = ? AND state IN ('waiting', 'queued', 'running')`,
			r.State, r.FailedMember, r.Reason, formatTime(s.now()), r.ID)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 1 {
			return err
		}
		return alreadyEnded(ctx, tx, "release", r.ID)
	})
	if err != nil {
		return fmt.Errorf("finish release %d: %w", r.ID, err)
	}
	return nil
}

// ExpireReleases marks the waiting releases of set created before
// createdBefore expired with reason, and returns them. Safe for concurrent
// use.
func (s *Store) ExpireReleases(ctx context.Context, set string, createdBefore time.Time, reason string) ([]deployer.Release, error) {
	var out []deployer.Release
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		out = out[:0]
		rows, err := tx.QueryContext(ctx, `UPDATE releases SET state = 'expired', reason = ?, finished_at = ?
			WHERE set_name = ? AND state = 'waiting' AND created_at < ? RETURNING id`,
			reason, formatTime(s.now()), set, formatTime(createdBefore))
		if err != nil {
			return err
		}
		ids, err := scanIDs(rows)
		if err != nil {
			return err
		}
		for _, id := range ids {
			r, err := readRelease(ctx, tx, id)
			if err != nil {
				return err
			}
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("expire releases of %s: %w", set, err)
	}
	return out, nil
}

func scanIDs(rows *sql.Rows) ([]int64, error) {
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// InterruptRunningReleases marks every running release interrupted and
// returns their ids. deployd calls it once at start-up. Safe for
// concurrent use.
func (s *Store) InterruptRunningReleases(ctx context.Context) ([]int64, error) {
	var ids []int64
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `UPDATE releases SET state = 'interrupted', finished_at = ?,
				reason = 'deployd stopped while this release ran'
			WHERE state = 'running' RETURNING id`, formatTime(s.now()))
		if err != nil {
			return err
		}
		ids, err = scanIDs(rows)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("interrupt running releases: %w", err)
	}
	return ids, nil
}

// Release returns release id with its members, read in one snapshot, or
// an error wrapping deployer.ErrNotFound. Safe for concurrent use.
func (s *Store) Release(ctx context.Context, id int64) (deployer.Release, error) {
	tx, err := s.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return deployer.Release{}, fmt.Errorf("read release %d: %w", id, err)
	}
	defer tx.Rollback()
	r, err := readRelease(ctx, tx, id)
	if err != nil {
		return deployer.Release{}, fmt.Errorf("read release %d: %w", id, err)
	}
	return r, nil
}

// Releases lists releases newest first (by id) with their members, only
// those of set when it is not empty. p.Before is a release id. Safe for
// concurrent use.
func (s *Store) Releases(ctx context.Context, set string, p deployer.Page) ([]deployer.Release, error) {
	limit, before := clampPage(p)
	tx, err := s.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("list releases: %w", err)
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT id FROM releases
		WHERE (?1 = '' OR set_name = ?1) AND (?2 = 0 OR id < ?2) ORDER BY id DESC LIMIT ?3`, set, before, limit)
	if err != nil {
		return nil, fmt.Errorf("list releases: %w", err)
	}
	ids, err := scanIDs(rows)
	if err != nil {
		return nil, fmt.Errorf("list releases: %w", err)
	}
	out := make([]deployer.Release, 0, len(ids))
	for _, id := range ids {
		r, err := readRelease(ctx, tx, id)
		if err != nil {
			return nil, fmt.Errorf("list releases: %w", err)
		}
		out = append(out, r)
	}
	return out, nil
}

// PreviousRelease returns the newest succeeded release of set older than
// release before, with its members; ok is false when there is none. Safe
// for concurrent use.
func (s *Store) PreviousRelease(ctx context.Context, set string, before int64) (deployer.Release, bool, error) {
	tx, err := s.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return deployer.Release{}, false, fmt.Errorf("read the release before %d: %w", before, err)
	}
	defer tx.Rollback()
	var id int64
	err = tx.QueryRowContext(ctx, `SELECT id FROM releases WHERE set_name = ? AND state = 'succeeded' AND id < ?
		ORDER BY id DESC LIMIT 1`, set, before).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return deployer.Release{}, false, nil
	}
	if err != nil {
		return deployer.Release{}, false, fmt.Errorf("read the release before %d: %w", before, err)
	}
	r, err := readRelease(ctx, tx, id)
	if err != nil {
		return deployer.Release{}, false, fmt.Errorf("read the release before %d: %w", before, err)
	}
	return r, true, nil
}

// readRelease reads release id and its members. A member's digest is
// the one its deployment deployed, once it did; its state is that
// deployment's, and a rollback deployment of the release is shown apart.
func readRelease(ctx context.Context, tx *sql.Tx, id int64) (deployer.Release, error) {
	r, err := scanRelease(tx.QueryRowContext(ctx, "SELECT "+releaseColumns+" FROM releases WHERE id = ?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return deployer.Release{}, deployer.ErrNotFound
	}
	if err != nil {
		return deployer.Release{}, err
	}
	rows, err := tx.QueryContext(ctx, `SELECT m.service, m.tag, m.digest, m.delivery_id,
			COALESCE(d.id, 0), COALESCE(d.state, ''), COALESCE(d.digest, ''),
			COALESCE(b.id, 0), COALESCE(b.state, '')
		FROM release_members m
		LEFT JOIN deployments d ON d.id = (SELECT MAX(id) FROM deployments
			WHERE release_id = m.release_id AND service = m.service AND trigger_kind <> 'rollback')
		LEFT JOIN deployments b ON b.id = (SELECT MAX(id) FROM deployments
			WHERE release_id = m.release_id AND service = m.service AND trigger_kind = 'rollback')
		WHERE m.release_id = ? ORDER BY m.service`, id)
	if err != nil {
		return deployer.Release{}, err
	}
	defer rows.Close()
	r.Members = []deployer.ReleaseMember{}
	for rows.Next() {
		var (
			m      deployer.ReleaseMember
			digest string
		)
		if err := rows.Scan(&m.Service, &m.Tag, &m.Digest, &m.DeliveryID, &m.DeploymentID, &m.State, &digest,
			&m.RollbackID, &m.RollbackState); err != nil {
			return deployer.Release{}, err
		}
		if digest != "" && (m.State == deployer.StateSucceeded || m.State == deployer.StateUnchanged) {
			m.Digest = digest
		}
		r.Members = append(r.Members, m)
	}
	return r, rows.Err()
}

// deploymentColumnsOf returns deploymentColumns as db can read them: a
// database opened with migrations before 0007 or 0011 (tests of older
// migrations) has no release_id, or no host and rollout_id, which then
// read as 0 and "".
func deploymentColumnsOf(ctx context.Context, db *sql.DB) (string, error) {
	has := map[string]bool{}
	rows, err := db.QueryContext(ctx, "SELECT name FROM pragma_table_info('deployments')")
	if err != nil {
		return "", fmt.Errorf("read the deployments table's columns: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return "", fmt.Errorf("read the deployments table's columns: %w", err)
		}
		has[name] = true
	}
	if err := rows.Err(); err != nil {
		return "", fmt.Errorf("read the deployments table's columns: %w", err)
	}
	cols := deploymentColumns
	if !has["release_id"] {
		cols = strings.Replace(cols, "release_id", "0", 1)
	}
	if !has["host"] {
		cols = strings.Replace(cols, "host, COALESCE(rollout_id, 0)", "'', 0", 1)
	}
	return cols, nil
}
