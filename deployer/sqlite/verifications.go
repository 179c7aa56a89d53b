package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/deployd/deployd/deployer"
)

// writeVerification records d's verify-image outcome, if it has one.
func writeVerification(ctx context.Context, tx *sql.Tx, d deployer.Deployment) error {
	if d.Verification == nil {
		return nil
	}
	b, err := json.Marshal(d.Verification)
	if err != nil {
		return fmt.Errorf("encode verification: %w", err)
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO deployment_verifications (deployment_id, verification) VALUES (?, ?)
		ON CONFLICT (deployment_id) DO UPDATE SET verification = excluded.verification`, d.ID, string(b))
	return err
}

// readVerification returns deployment id's verify-image outcome, nil if it
// has none.
func readVerification(ctx context.Context, tx *sql.Tx, id int64) (*deployer.Verification, error) {
	var text string
	err := tx.QueryRowContext(ctx, "SELECT verification FROM deployment_verifications WHERE deployment_id = ?", id).Scan(&text)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	v := new(deployer.Verification)
	if err := json.Unmarshal([]byte(text), v); err != nil {
		return nil, fmt.Errorf("decode verification: %w", err)
	}
	return v, nil
}
