package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/deployd/deployd/deployer"
)

// ServiceStatus returns what runs for service name; a service never recorded
// yields a zero status with Name set. Safe for concurrent use.
func (s *Store) ServiceStatus(ctx context.Context, name string) (deployer.ServiceStatus, error) {
	st := deployer.ServiceStatus{Name: name}
	var updated string
	err := s.rdb.QueryRowContext(ctx, `SELECT tag, digest, previous_digest, container,
			last_deployment_id, last_run_number, last_run_id, degraded, credential, credential_note, updated_at
		FROM services WHERE name = ?`, name).Scan(&st.Tag, &st.Digest, &st.PreviousDigest,
		&st.Container, &st.LastDeploymentID, &st.LastRunNumber, &st.LastRunID, &st.Degraded, &st.Credential, &st.CredentialNote, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return st, nil
	}
	if err != nil {
		return deployer.ServiceStatus{}, fmt.Errorf("read status of service %s: %w", name, err)
	}
	if st.UpdatedAt, err = parseTime(updated); err != nil {
		return deployer.ServiceStatus{}, fmt.Errorf("read status of service %s: %w", name, err)
	}
	return st, nil
}

// SetServiceStatus replaces what runs for service st.Name. A zero UpdatedAt
// is replaced by the store's clock.
//
// It also keeps the digest history that DigestReplaced reads: st.Digest is
// recorded as running, and the digest that ran before (the stored one, and
// st.PreviousDigest) as replaced when it differs from st.Digest.
// Safe for concurrent use.
func (s *Store) SetServiceStatus(ctx context.Context, st deployer.ServiceStatus) error {
	if st.Name == "" {
		return errors.New("set service status: no service name")
	}
	var old string
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		now := s.now()
		updated := st.UpdatedAt
		if updated.IsZero() {
			updated = now
		}
		old = ""
		err := tx.QueryRowContext(ctx, "SELECT digest FROM services WHERE name = ?", st.Name).Scan(&old)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		at := formatTime(now)
		for _, replaced := range []string{old, st.PreviousDigest} {
			if replaced == "" || replaced == st.Digest {
				continue
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO service_digests (service, digest, last_ran_at, replaced_at)
				VALUES (?1, ?2, ?3, ?3)
				ON CONFLICT (service, digest) DO UPDATE SET replaced_at = COALESCE(replaced_at, excluded.replaced_at)`,
				st.Name, replaced, at); err != nil {
				return err
			}
		}
		if st.Digest != "" {
			if _, err := tx.ExecContext(ctx, `INSERT INTO service_digests (service, digest, last_ran_at, replaced_at)
				VALUES (?, ?, ?, NULL)
				ON CONFLICT (service, digest) DO UPDATE SET last_ran_at = excluded.last_ran_at, replaced_at = NULL`,
				st.Name, st.Digest, at); err != nil {
				return err
			}
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO services (name, tag, digest, previous_digest, container,
				last_deployment_id, last_run_number, last_run_id, degraded, credential, credential_note, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET tag = excluded.tag, digest = excluded.digest,
				previous_digest = excluded.previous_digest, container = excluded.container,
				last_deployment_id = excluded.last_deployment_id, last_run_number = excluded.last_run_number,
				last_run_id = excluded.last_run_id,
				degraded = excluded.degraded, credential = excluded.credential,
				credential_note = excluded.credential_note, updated_at = excluded.updated_at`,
			st.Name, st.Tag, st.Digest, st.PreviousDigest, st.Container,
			st.LastDeploymentID, st.LastRunNumber, st.LastRunID, st.Degraded, st.Credential, st.CredentialNote, formatTime(updated))
		return err
	})
	if err != nil {
		return fmt.Errorf("set status of service %s: %w", st.Name, err)
	}
	// Committed: mirror the history change, as the transaction made it.
	s.replacedMu.Lock()
	for _, replaced := range []string{old, st.PreviousDigest} {
		if replaced != "" && replaced != st.Digest {
			s.replaced[serviceDigest{st.Name, replaced}] = true
		}
	}
	if st.Digest != "" {
		delete(s.replaced, serviceDigest{st.Name, st.Digest})
	}
	s.replacedMu.Unlock()
	return nil
}

// DigestReplaced reports whether digest ran for service and another digest
// later took its place (and it does not run again now). It answers from
// memory. Safe for concurrent use.
func (s *Store) DigestReplaced(_ context.Context, service, digest string) (bool, error) {
	s.replacedMu.RLock()
	defer s.replacedMu.RUnlock()
	return s.replaced[serviceDigest{service, digest}], nil
}

// serviceDigest keys the replaced-digest memory.
type serviceDigest struct{ service, digest string }

// loadReplaced reads every replaced digest of every service.
func loadReplaced(ctx context.Context, db *sql.DB) (map[serviceDigest]bool, error) {
	rows, err := db.QueryContext(ctx, "SELECT service, digest FROM service_digests WHERE replaced_at IS NOT NULL")
	if err != nil {
		return nil, fmt.Errorf("load replaced digests: %w", err)
	}
	defer rows.Close()
	m := make(map[serviceDigest]bool)
	for rows.Next() {
		var k serviceDigest
		if err := rows.Scan(&k.service, &k.digest); err != nil {
			return nil, fmt.Errorf("load replaced digests: %w", err)
		}
		m[k] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("load replaced digests: %w", err)
	}
	return m, nil
}
