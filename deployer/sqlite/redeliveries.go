package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// KnownDeliveries returns which of the delivery ids ids the store has a
// record of: a delivery received with that id, or a redelivery already asked
// for. Safe for concurrent use.
func (s *Store) KnownDeliveries(ctx context.Context, ids []string) (map[string]bool, error) {
	known := make(map[string]bool, len(ids))
	for start := 0; start < len(ids); start += 500 {
		chunk := ids[start:min(start+500, len(ids))]
		marks := strings.TrimSuffix(strings.Repeat("?,", len(chunk)), ",")
		args := make([]any, 0, 2*len(chunk))
		for _, id := range chunk {
			args = append(args, id)
		}
		args = append(args, args...)
		rows, err := s.rdb.QueryContext(ctx,
			`SELECT delivery_id FROM deliveries WHERE delivery_id IN (`+marks+`)
			UNION SELECT delivery_id FROM redeliveries WHERE delivery_id IN (`+marks+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("look up deliveries: %w", err)
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return nil, fmt.Errorf("look up deliveries: %w", err)
			}
			known[id] = true
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("look up deliveries: %w", err)
		}
	}
	return known, nil
}

// RecordRedelivery remembers that GitHub was asked to redeliver the delivery
// id (attempt attemptID of the delivery log), synced to disk before it
// returns. Recording an id again changes nothing. Safe for concurrent use.
func (s *Store) RecordRedelivery(ctx context.Context, id string, attemptID int64) error {
	if id == "" {
		return errors.New("record redelivery: no delivery id")
	}
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx,
			`INSERT INTO redeliveries (delivery_id, attempt_id, requested_at) VALUES (?, ?, ?)
			ON CONFLICT (delivery_id) DO NOTHING`, id, attemptID, formatTime(s.now()))
		return err
	})
	if err != nil {
		return fmt.Errorf("record redelivery %s: %w", id, err)
	}
	return nil
}

// DeliveryLogMark returns how far the delivery log was read, as
// SetDeliveryLogMark left it; the zero time when never. Safe for concurrent
// use.
func (s *Store) DeliveryLogMark(ctx context.Context) (time.Time, error) {
	var v string
	err := s.rdb.QueryRowContext(ctx, `SELECT read_upto FROM delivery_log_mark WHERE id = 1`).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("read delivery log mark: %w", err)
	}
	t, err := parseTime(v)
	if err != nil {
		return time.Time{}, fmt.Errorf("read delivery log mark: %w", err)
	}
	return t, nil
}

// SetDeliveryLogMark records that the delivery log was read up to t. Safe
// for concurrent use.
func (s *Store) SetDeliveryLogMark(ctx context.Context, t time.Time) error {
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx,
			`INSERT INTO delivery_log_mark (id, read_upto) VALUES (1, ?)
			ON CONFLICT (id) DO UPDATE SET read_upto = excluded.read_upto`, formatTime(t))
		return err
	})
	if err != nil {
		return fmt.Errorf("set delivery log mark: %w", err)
	}
	return nil
}
