package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/deployd/deployd/deployer"
)

// StartRollout records the rollout of deployment parent (running, with
// its digest resolved) under policy and returns the rollout's id. A
// deployment has at most one rollout. Safe for concurrent use.
func (s *Store) StartRollout(ctx context.Context, parent deployer.Deployment, policy string) (int64, error) {
	var id int64
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, `INSERT INTO rollouts (deployment_id, service, policy, digest, created_at)
			VALUES (?, ?, ?, ?, ?) RETURNING id`,
			parent.ID, parent.Service, policy, parent.Digest, formatTime(s.now())).Scan(&id)
	})
	if err != nil {
		return 0, fmt.Errorf("start rollout of deployment %d: %w", parent.ID, err)
	}
	return id, nil
}

// StartHostDeployment records host's deployment in rollout rolloutID: a
// running deployment of parent's service, trigger, tag and digest, with
// Host and RolloutID set, and returns it. It is never queued, so the queue
// never claims it. Safe for concurrent use.
func (s *Store) StartHostDeployment(ctx context.Context, rolloutID int64, parent deployer.Deployment, host string) (deployer.Deployment, error) {
	var d deployer.Deployment
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		at := formatTime(s.now())
		var err error
		d, err = scanDeployment(tx.QueryRowContext(ctx, `INSERT INTO deployments
			(service, trigger_kind, trigger_delivery_id, trigger_event, trigger_subject,
			 installation_id, run_id, run_number, tag, digest, force, dry_run, state, queued_at,
			 started_at, host, rollout_id)
			SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, id FROM rollouts WHERE id = ?
			RETURNING `+s.columns,
			parent.Service, parent.Trigger.Kind, parent.Trigger.DeliveryID, parent.Trigger.Event,
			parent.Trigger.Subject, parent.Trigger.InstallationID, parent.Trigger.RunID,
			parent.Trigger.RunNumber, parent.Tag, parent.Digest, parent.Force, parent.DryRun,
			at, at, host, rolloutID))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("rollout %d: %w", rolloutID, deployer.ErrNotFound)
		}
		return err
	})
	if err != nil {
		return deployer.Deployment{}, fmt.Errorf("start deployment of %s on %s: %w", parent.Service, host, err)
	}
	return d, nil
}

// FinishHostDeployment records the end of host deployment d.ID as Finish
// does, and what now runs for its service on its host: running, the digest
// the host reported running afterwards ("" leaves what was known). Unlike Finish it
// also accepts a deployment marked interrupted: a host's result may come
// in after the hub gave up waiting or restarted, and the host's truth
// wins. It refuses a deployment that is not a host's. Safe for concurrent
// use.
func (s *Store) FinishHostDeployment(ctx context.Context, d deployer.Deployment, running string) error {
	if !validState(d.State) || !d.State.Final() {
		return fmt.Errorf("finish host deployment %d: %q is not a final state", d.ID, d.State)
	}
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var service, host, tag string
		err := tx.QueryRowContext(ctx, `UPDATE deployments SET state = ?, digest = COALESCE(NULLIF(?, ''), digest),
				error_class = ?, error = ?, hint = ?, finished_at = ?
			WHERE id = ? AND host <> '' AND state IN ('running', 'interrupted')
			RETURNING service, host, tag`,
			d.State, d.Digest, d.ErrorClass, d.Error, d.Hint, formatTime(s.now()), d.ID).Scan(&service, &host, &tag)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("no running host deployment %d: %w", d.ID, deployer.ErrNotFound)
		}
		if err != nil {
			return err
		}
		runningTag := ""
		if running == d.Digest {
			runningTag = tag
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO host_services (service, host, tag, digest, state, deployment_id, updated_at)
			VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
			ON CONFLICT (service, host) DO UPDATE SET
				tag = CASE WHEN ?4 <> '' THEN ?3 ELSE tag END,
				digest = CASE WHEN ?4 <> '' THEN ?4 ELSE digest END,
				state = ?5, deployment_id = ?6, updated_at = ?7
			WHERE deployment_id <= ?6`,
			service, host, runningTag, running, d.State, d.ID, formatTime(s.now()))
		return err
	})
	if err != nil {
		return fmt.Errorf("finish host deployment %d: %w", d.ID, err)
	}
	return nil
}

// HostStatuses returns what runs for service on each fleet host that
// reported, by host name. Safe for concurrent use.
func (s *Store) HostStatuses(ctx context.Context, service string) ([]deployer.HostStatus, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT service, host, tag, digest, state, deployment_id, updated_at
		FROM host_services WHERE service = ? ORDER BY host`, service)
	if err != nil {
		return nil, fmt.Errorf("read host statuses of %s: %w", service, err)
	}
	defer rows.Close()
	var out []deployer.HostStatus
	for rows.Next() {
		var (
			h       deployer.HostStatus
			updated string
		)
		if err := rows.Scan(&h.Service, &h.Host, &h.Tag, &h.Digest, &h.State, &h.DeploymentID, &updated); err != nil {
			return nil, fmt.Errorf("read host statuses of %s: %w", service, err)
		}
		if h.UpdatedAt, err = parseTime(updated); err != nil {
			return nil, fmt.Errorf("read host statuses of %s: %w", service, err)
		}
		out = append(out, h)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read host statuses of %s: %w", service, err)
	}
	return out, nil
}

// RolloutDeployments returns the host deployments of rollout id, oldest
// first, with their step logs. Safe for concurrent use.
func (s *Store) RolloutDeployments(ctx context.Context, id int64) ([]deployer.Deployment, error) {
	tx, err := s.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("read rollout %d: %w", id, err)
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, "SELECT "+s.columns+" FROM deployments WHERE rollout_id = ? ORDER BY id", id)
	if err != nil {
		return nil, fmt.Errorf("read rollout %d: %w", id, err)
	}
	var out []deployer.Deployment
	for rows.Next() {
		d, err := scanDeployment(rows)
		if err != nil {
			rows.Close()
			return nil, fmt.Errorf("read rollout %d: %w", id, err)
		}
		out = append(out, d)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read rollout %d: %w", id, err)
	}
	for i := range out {
		if out[i].Steps, err = readSteps(ctx, tx, out[i].ID); err != nil {
			return nil, fmt.Errorf("read rollout %d: %w", id, err)
		}
	}
	return out, nil
}
