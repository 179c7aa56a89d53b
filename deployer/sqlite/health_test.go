package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/deployd/deployd/deployer"
	"github.com/deployd/deployd/internal/testclock"
)

// limitPages caps the database at its current size plus extra pages, on the
// writer's connection, so that writes beyond it fail with SQLITE_FULL as on
// a full disk.
func limitPages(t *testing.T, s *Store, extra int) {
	t.Helper()
	err := s.write(context.Background(), func(ctx context.Context, tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, "PRAGMA page_count").Scan(&n); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA max_page_count = %d", n+extra))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestWriteFailureLastsUntilAWriteSucceeds(t *testing.T) {
	ctx := context.Background()
	clock := testclock.New(time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC))
	var logs bytes.Buffer
	s, _ := openTestStore(t, WithClock(clock.Now), WithLogger(zerolog.New(&logs)))
	if reason, _ := s.WriteFailure(); reason != "" || s.WriteErrors() != 0 {
		t.Fatalf("fresh store: failure %q, %d write errors", reason, s.WriteErrors())
	}

	// A call's own error is not a failure of the storage.
	if err := s.AppendStep(ctx, 999, deployer.Step{Name: "pull", Outcome: "ok"}); !errors.Is(err, deployer.ErrNotFound) {
		t.Fatalf("AppendStep to a missing deployment: %v", err)
	}
	if reason, _ := s.WriteFailure(); reason != "" || s.WriteErrors() != 0 {
		t.Errorf("after a call's own error: failure %q, %d write errors; want none", reason, s.WriteErrors())
	}

	limitPages(t, s, 0)
	var (
		failedAt time.Time // of the first failure
		failures int
	)
	for i := 0; failures < 2; i++ {
		if i == 1000 {
			t.Fatal("1000 deliveries fitted into a database capped at its size")
		}
		clock.Add(time.Second)
		if _, err := s.RecordDelivery(ctx, delivery(fmt.Sprint("d", i)), nil); err != nil {
			if !strings.Contains(err.Error(), "database or disk is full") {
				t.Fatalf("delivery %d: %v, want database or disk is full", i, err)
			}
			if failures++; failures == 1 {
				failedAt = clock.Now()
			}
		}
	}
	reason, since := s.WriteFailure()
	if reason != "database or disk is full" || !since.Equal(failedAt) {
		t.Errorf("WriteFailure() = %q, %v; want database or disk is full since the first failure, %v", reason, since, failedAt)
	}
	if n := s.WriteErrors(); n != 2 {
		t.Errorf("WriteErrors() = %d, want 2", n)
	}

	// Transactions that change nothing commit without the disk: they
	// prove nothing about it.
	if err := s.Ping(ctx); err != nil {
		t.Errorf("Ping on a full database: %v", err)
	}
	if _, ok, err := s.ClaimNext(ctx, "backend"); err != nil || ok {
		t.Errorf("ClaimNext with nothing queued: %v %v", ok, err)
	}
	if reason, _ := s.WriteFailure(); reason == "" {
		t.Error("a transaction that changed nothing cleared the failure")
	}

	limitPages(t, s, 1000)
	if _, err := s.RecordDelivery(ctx, delivery("after"), nil); err != nil {
		t.Fatalf("delivery after making room: %v", err)
	}
	if reason, _ := s.WriteFailure(); reason != "" {
		t.Errorf("WriteFailure() = %q after a successful write, want none", reason)
	}
	if n := s.WriteErrors(); n != 2 {
		t.Errorf("WriteErrors() = %d after the recovery, want still 2", n)
	}
	if got := strings.Count(logs.String(), `"store writes fail"`); got != 1 {
		t.Errorf("%d log lines say the writes fail, want 1 for the whole run of failures:\n%s", got, logs.String())
	}
	if !strings.Contains(logs.String(), `"store writes succeed again"`) {
		t.Errorf("the recovery is not logged:\n%s", logs.String())
	}
}
