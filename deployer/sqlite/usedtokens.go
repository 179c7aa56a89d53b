package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// usedTokensPruneBatch is how many expired used-token rows each insert
// deletes at most: more than one, so that the table shrinks back to the
// tokens not expired yet, and few, so that no insert waits long.
const usedTokensPruneBatch = 64

// UseTokenID records id, the jti of an API token valid until expiresAt, as
// used, synced to disk before it returns, and reports whether this was its
// first use: false when id is recorded already. Calls go through the single
// writer, so that of concurrent calls with one id exactly one reports true.
// Each call also deletes up to a few dozen rows of tokens expired by now,
// which keeps the table to the tokens not expired yet. Safe for concurrent
// use.
func (s *Store) UseTokenID(ctx context.Context, id string, expiresAt time.Time) (bool, error) {
	if id == "" {
		return false, errors.New("record used token: no token id")
	}
	var first bool
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx,
			`DELETE FROM used_tokens WHERE jti IN
			(SELECT jti FROM used_tokens WHERE expires_at < ? ORDER BY expires_at LIMIT ?)`,
			formatTime(s.now()), usedTokensPruneBatch); err != nil {
			return fmt.Errorf("delete expired: %w", err)
		}
		res, err := tx.ExecContext(ctx,
			`INSERT INTO used_tokens (jti, expires_at) VALUES (?, ?) ON CONFLICT (jti) DO NOTHING`,
			id, formatTime(expiresAt))
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		first = n == 1
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("record used token %s: %w", id, err)
	}
	return first, nil
}
