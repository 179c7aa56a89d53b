package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/deployd/deployd/deployer"
)

// deploymentColumns are read by scanDeployment, in this order.
const deploymentColumns = `id, service, trigger_kind, trigger_delivery_id, trigger_event,
	trigger_subject, installation_id, run_id, run_number, tag, digest, force, dry_run, state,
	queued_at, started_at, finished_at, error_class, error, hint, release_id,
	host, COALESCE(rollout_id, 0)`

type scanner interface{ Scan(dest ...any) error }

func scanDeployment(row scanner) (deployer.Deployment, error) {
	var (
		d                 deployer.Deployment
		queued            string
		started, finished sql.NullString
	)
	dest := []any{&d.ID, &d.Service, &d.Trigger.Kind, &d.Trigger.DeliveryID, &d.Trigger.Event,
		&d.Trigger.Subject, &d.Trigger.InstallationID, &d.Trigger.RunID, &d.Trigger.RunNumber,
		&d.Tag, &d.Digest, &d.Force, &d.DryRun, &d.State,
		&queued, &started, &finished, &d.ErrorClass, &d.Error, &d.Hint, &d.ReleaseID,
		&d.Host, &d.RolloutID}
	err := row.Scan(dest...)
	if err != nil {
		return deployer.Deployment{}, err
	}
	if d.QueuedAt, err = parseTime(queued); err != nil {
		return deployer.Deployment{}, err
	}
	if d.StartedAt, err = parseNullTime(started); err != nil {
		return deployer.Deployment{}, err
	}
	if d.FinishedAt, err = parseNullTime(finished); err != nil {
		return deployer.Deployment{}, err
	}
	return d, nil
}

// queue inserts r as a queued deployment, first superseding the one of the
// same service still queued (there is at most one; see supersedeQuery).
// deliverySeq is 0 when no delivery asked.
func (s *Store) queue(ctx context.Context, tx *sql.Tx, r deployer.Request, deliverySeq int64, now time.Time) (deployer.Deployment, error) {
	at := formatTime(now)
	if _, err := tx.StmtContext(ctx, s.hot.supersede).ExecContext(ctx, at, r.Service); err != nil {
		return deployer.Deployment{}, fmt.Errorf("supersede queued deployments of %s: %w", r.Service, err)
	}
	seq := sql.NullInt64{Int64: deliverySeq, Valid: deliverySeq != 0}
	res, err := tx.StmtContext(ctx, s.hot.insertDeployment).ExecContext(ctx,
		r.Service, seq, r.Trigger.Kind, r.Trigger.DeliveryID, r.Trigger.Event, r.Trigger.Subject,
		r.Trigger.InstallationID, r.Trigger.RunID, r.Trigger.RunNumber, r.Tag, r.Digest,
		r.Force, r.DryRun, at)
	if err != nil {
		return deployer.Deployment{}, fmt.Errorf("queue deployment of %s: %w", r.Service, err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return deployer.Deployment{}, fmt.Errorf("queue deployment of %s: %w", r.Service, err)
	}
	d := deployer.Deployment{
		ID:        id,
		Service:   r.Service,
		Trigger:   r.Trigger,
		Tag:       r.Tag,
		Digest:    r.Digest,
		Force:     r.Force,
		DryRun:    r.DryRun,
		State:     deployer.StateQueued,
		QueuedAt:  now.UTC().Round(0),
		ReleaseID: r.ReleaseID,
	}
	if r.ReleaseID != 0 {
		// Only release members have one, so not in the prepared insert.
		if _, err := tx.ExecContext(ctx, "UPDATE deployments SET release_id = ? WHERE id = ?", r.ReleaseID, id); err != nil {
			return deployer.Deployment{}, fmt.Errorf("link the deployment of %s to release %d: %w", r.Service, r.ReleaseID, err)
		}
	}
	if r.Note != "" {
		// Rare (a webhook whose digest could not be used), so not a prepared statement.
		st := deployer.Step{Name: deployer.StepRequest, Started: d.QueuedAt, Outcome: "ok", Message: r.Note}
		if _, err := tx.ExecContext(ctx, `INSERT INTO deployment_steps
			(deployment_id, seq, name, started_at, duration_ns, outcome, message) VALUES (?, 1, ?, ?, 0, ?, ?)`,
			id, st.Name, at, st.Outcome, st.Message); err != nil {
			return deployer.Deployment{}, fmt.Errorf("record the note of the deployment of %s: %w", r.Service, err)
		}
		d.Steps = []deployer.Step{st}
	}
	return d, nil
}

// finishQuery settles deployment ?9 in state ?1, unless it already ended.
const finishQuery = `UPDATE deployments SET
		state = ?, digest = CASE WHEN ? = '' THEN digest ELSE ? END,
		dry_run = dry_run OR ?,
		error_class = ?, error = ?, hint = ?, finished_at = ?
	WHERE id = ? AND state IN ('queued', 'running')`

// Enqueue queues a request that comes from no delivery (manual, rollback,
// reconcile), superseding the deployments of its service still queued, and
// returns the queued deployment once it is committed. It fails without
// writing when r is invalid. Safe for concurrent use.
func (s *Store) Enqueue(ctx context.Context, r deployer.Request) (deployer.Deployment, error) {
	if err := r.Validate(); err != nil {
		return deployer.Deployment{}, fmt.Errorf("enqueue %s: %w", r.Service, err)
	}
	var d deployer.Deployment
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		d, err = s.queue(ctx, tx, r, 0, s.now())
		return err
	})
	if err != nil {
		return deployer.Deployment{}, fmt.Errorf("enqueue %s: %w", r.Service, err)
	}
	return d, nil
}

// ClaimNext marks the newest queued deployment of service running, marks the
// older queued ones superseded, and returns it with its step log (the
// request's note, if it has one); ok is false when none is
// queued. It does not check that no other deployment of the service runs:
// that is the caller's single worker per service. Safe for concurrent use.
func (s *Store) ClaimNext(ctx context.Context, service string) (deployer.Deployment, bool, error) {
	var (
		d  deployer.Deployment
		ok bool
	)
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		d, ok = deployer.Deployment{}, false
		var id int64
		err := tx.QueryRowContext(ctx,
			"SELECT id FROM deployments WHERE service = ? AND state = 'queued' ORDER BY id DESC LIMIT 1",
			service).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		at := formatTime(s.now())
		if _, err := tx.ExecContext(ctx,
			"UPDATE deployments SET state = 'superseded', finished_at = ? WHERE service = ? AND state = 'queued' AND id < ?",
			at, service, id); err != nil {
			return err
		}
		d, err = scanDeployment(tx.QueryRowContext(ctx,
			"UPDATE deployments SET state = 'running', started_at = ? WHERE id = ? RETURNING "+s.columns,
			at, id))
		if err != nil {
			return err
		}
		// The log holds the request's note, if any, for the pipeline to go on from.
		if d.Steps, err = readSteps(ctx, tx, id); err != nil {
			return err
		}
		ok = true
		return nil
	})
	if err != nil {
		return deployer.Deployment{}, false, fmt.Errorf("claim next deployment of %s: %w", service, err)
	}
	return d, ok, nil
}

// AppendStep adds s to the end of deployment id's step log. It returns an
// error wrapping deployer.ErrNotFound when the deployment does not exist.
// Safe for concurrent use.
func (s *Store) AppendStep(ctx context.Context, id int64, st deployer.Step) error {
	if st.Name == "" {
		return fmt.Errorf("append step to deployment %d: step has no name", id)
	}
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if err := deploymentExists(ctx, tx, id); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO deployment_steps
			(deployment_id, seq, name, started_at, duration_ns, outcome, message)
			VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM deployment_steps WHERE deployment_id = ?1),
			        ?2, ?3, ?4, ?5, ?6)`,
			id, st.Name, formatTime(st.Started), int64(st.Duration), st.Outcome, st.Message)
		return err
	})
	if err != nil {
		return fmt.Errorf("append step %s to deployment %d: %w", st.Name, id, err)
	}
	return nil
}

func deploymentExists(ctx context.Context, tx *sql.Tx, id int64) error {
	var one int
	err := tx.QueryRowContext(ctx, "SELECT 1 FROM deployments WHERE id = ?", id).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return deployer.ErrNotFound
	}
	return err
}

// Finish records the end of deployment d.ID: d.State (which must be a final
// state), d.Digest when not empty (the resolved digest), the failure fields,
// d.Verification when set (the verify-image step's outcome),
// and d.FinishedAt or, when nil, the store's clock. It refuses a deployment
// that is not queued or running, and returns an error wrapping
// deployer.ErrNotFound for one that does not exist. Steps are not touched;
// see AppendStep. Safe for concurrent use.
func (s *Store) Finish(ctx context.Context, d deployer.Deployment) error {
	if !validState(d.State) || !d.State.Final() {
		return fmt.Errorf("finish deployment %d: %q is not a final state", d.ID, d.State)
	}
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		finished := s.now()
		if d.FinishedAt != nil {
			finished = *d.FinishedAt
		}
		res, err := tx.ExecContext(ctx, finishQuery,
			d.State, d.Digest, d.Digest, d.DryRun, d.ErrorClass, d.Error, d.Hint, formatTime(finished), d.ID)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 1 {
			if err != nil {
				return err
			}
			return writeVerification(ctx, tx, d)
		}
		return alreadyEnded(ctx, tx, "deployment", d.ID)
	})
	if err != nil {
		return fmt.Errorf("finish deployment %d: %w", d.ID, err)
	}
	return nil
}

// alreadyEnded says why the row id of the deployments or releases table
// (what names "deployment" or "release") could not be settled: it does not
// exist (deployer.ErrNotFound), or it had already ended.
func alreadyEnded(ctx context.Context, tx *sql.Tx, what string, id int64) error {
	var state string
	err := tx.QueryRowContext(ctx, "SELECT state FROM "+what+"s WHERE id = ?", id).Scan(&state)
	if errors.Is(err, sql.ErrNoRows) {
		return deployer.ErrNotFound
	}
	if err != nil {
		return err
	}
	return fmt.Errorf("%s is already %s", what, state)
}

func validState(s deployer.State) bool {
	switch s {
	case deployer.StateQueued, deployer.StateRunning, deployer.StateSucceeded,
		deployer.StateUnchanged, deployer.StateFailed, deployer.StateRolledBack,
		deployer.StateSuperseded, deployer.StateInterrupted:
		return true
	}
	return false
}

// InterruptRunning marks every running deployment interrupted, with the
// store's clock as its end, and returns their ids, oldest first. deployd
// calls it once at start-up, before any worker claims work. Safe for
// concurrent use.
func (s *Store) InterruptRunning(ctx context.Context) ([]int64, error) {
	var ids []int64
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		ids = ids[:0]
		rows, err := tx.QueryContext(ctx, "SELECT id FROM deployments WHERE state = 'running' ORDER BY id")
		if err != nil {
			return err
		}
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return err
			}
			ids = append(ids, id)
		}
		if err := rows.Close(); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE deployments SET state = 'interrupted', finished_at = ?,
				error = CASE WHEN error = '' THEN 'deployd stopped while this deployment ran' ELSE error END
			WHERE state = 'running'`, formatTime(s.now()))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("interrupt running deployments: %w", err)
	}
	return ids, nil
}

// QueuedServices lists, in name order, the services that have queued
// deployments. Safe for concurrent use.
func (s *Store) QueuedServices(ctx context.Context) ([]string, error) {
	rows, err := s.rdb.QueryContext(ctx,
		"SELECT DISTINCT service FROM deployments WHERE state = 'queued' ORDER BY service")
	if err != nil {
		return nil, fmt.Errorf("list queued services: %w", err)
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, fmt.Errorf("list queued services: %w", err)
		}
		out = append(out, name)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list queued services: %w", err)
	}
	return out, nil
}

// Deployment returns deployment id with its step log and verification, read in one snapshot,
// or an error wrapping deployer.ErrNotFound. Safe for concurrent use.
func (s *Store) Deployment(ctx context.Context, id int64) (deployer.Deployment, error) {
	tx, err := s.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return deployer.Deployment{}, fmt.Errorf("read deployment %d: %w", id, err)
	}
	defer tx.Rollback()
	d, err := scanDeployment(tx.QueryRowContext(ctx,
		"SELECT "+s.columns+" FROM deployments WHERE id = ?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return deployer.Deployment{}, fmt.Errorf("read deployment %d: %w", id, deployer.ErrNotFound)
	}
	if err != nil {
		return deployer.Deployment{}, fmt.Errorf("read deployment %d: %w", id, err)
	}
	if d.Steps, err = readSteps(ctx, tx, id); err != nil {
		return deployer.Deployment{}, fmt.Errorf("read deployment %d: %w", id, err)
	}
	if d.Verification, err = readVerification(ctx, tx, id); err != nil {
		return deployer.Deployment{}, fmt.Errorf("read deployment %d: %w", id, err)
	}
	return d, nil
}

func readSteps(ctx context.Context, tx *sql.Tx, id int64) ([]deployer.Step, error) {
	rows, err := tx.QueryContext(ctx, `SELECT name, started_at, duration_ns, outcome, message
		FROM deployment_steps WHERE deployment_id = ? ORDER BY seq`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var steps []deployer.Step
	for rows.Next() {
		var (
			st      deployer.Step
			started string
			dur     int64
		)
		if err := rows.Scan(&st.Name, &started, &dur, &st.Outcome, &st.Message); err != nil {
			return nil, err
		}
		if st.Started, err = parseTime(started); err != nil {
			return nil, err
		}
		st.Duration = time.Duration(dur)
		steps = append(steps, st)
	}
	return steps, rows.Err()
}

// Deployments lists deployments newest first (by id), only those of service
// when it is not empty. p.Before is a deployment id. Steps are not filled in;
// Deployment returns them. Safe for concurrent use.
func (s *Store) Deployments(ctx context.Context, service string, p deployer.Page) ([]deployer.Deployment, error) {
	limit, before := clampPage(p)
	q := "SELECT " + s.columns + " FROM deployments WHERE 1 = 1"
	args := []any{}
	if service != "" {
		q += " AND service = ?"
		args = append(args, service)
	}
	if before != 0 {
		q += " AND id < ?"
		args = append(args, before)
	}
	q += " ORDER BY id DESC LIMIT ?"
	args = append(args, limit)

	rows, err := s.rdb.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list deployments: %w", err)
	}
	defer rows.Close()
	out := []deployer.Deployment{}
	for rows.Next() {
		d, err := scanDeployment(rows)
		if err != nil {
			return nil, fmt.Errorf("list deployments: %w", err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list deployments: %w", err)
	}
	return out, nil
}
