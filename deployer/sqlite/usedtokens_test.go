package sqlite

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/deployd/deployd/internal/testclock"
)

// usedTokenRows counts the rows of used_tokens.
func usedTokenRows(t *testing.T, s *Store) int {
	t.Helper()
	var n int
	if err := s.rdb.QueryRowContext(context.Background(), `SELECT count(*) FROM used_tokens`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A token id is used once: the second use reports a conflict, also after
// the store is closed and opened again, and other ids are not affected.
func TestUseTokenIDOnceAcrossRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "deployd.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(5 * time.Minute)
	if first := must(s.UseTokenID(ctx, "jti-1", exp))(t); !first {
		t.Fatal("first use of jti-1 reported as a replay")
	}
	if first := must(s.UseTokenID(ctx, "jti-1", exp))(t); first {
		t.Error("second use of jti-1 reported as the first")
	}
	if first := must(s.UseTokenID(ctx, "jti-2", exp))(t); !first {
		t.Error("first use of jti-2 reported as a replay")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, id := range []string{"jti-1", "jti-2"} {
		if first := must(s.UseTokenID(ctx, id, exp))(t); first {
			t.Errorf("use of %s after a restart reported as the first", id)
		}
	}
	if _, err := s.UseTokenID(ctx, "", exp); err == nil {
		t.Error("an empty token id was recorded")
	}
}

// Rows of expired tokens are deleted by later inserts, a batch at a time,
// so that the table shrinks to the tokens not expired yet; rows not expired
// stay.
func TestUseTokenIDDeletesExpiredRows(t *testing.T) {
	ctx := context.Background()
	clock := testclock.New(time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC))
	s, _ := openTestStore(t, WithClock(clock.Now))
	const old = 3*usedTokensPruneBatch + 5
	for i := range old {
		if first := must(s.UseTokenID(ctx, fmt.Sprint("old-", i), clock.Now().Add(time.Minute)))(t); !first {
			t.Fatalf("old-%d reported as a replay", i)
		}
	}
	live := clock.Now().Add(time.Hour)
	if !must(s.UseTokenID(ctx, "live", live))(t) {
		t.Fatal("live reported as a replay")
	}
	if n := usedTokenRows(t, s); n != old+1 {
		t.Fatalf("%d rows before any token expired, want %d", n, old+1)
	}

	clock.Add(2 * time.Minute) // the old tokens have expired, live has not
	if !must(s.UseTokenID(ctx, "new-0", live))(t) {
		t.Fatal("new-0 reported as a replay")
	}
	if n, want := usedTokenRows(t, s), old+1-usedTokensPruneBatch+1; n != want {
		t.Errorf("after one insert past expiry: %d rows, want %d (one batch of expired rows deleted)", n, want)
	}
	for i := 1; i < 4; i++ {
		if !must(s.UseTokenID(ctx, fmt.Sprint("new-", i), live))(t) {
			t.Fatalf("new-%d reported as a replay", i)
		}
	}
	if n := usedTokenRows(t, s); n != 1+4 {
		t.Errorf("after four inserts past expiry: %d rows, want the 5 not expired", n)
	}
	if first := must(s.UseTokenID(ctx, "live", live))(t); first {
		t.Error("live, not expired, was forgotten by the cleanup")
	}
}

// Of many concurrent uses of one token id, exactly one is the first.
func TestUseTokenIDConcurrentlyOneWins(t *testing.T) {
	ctx := context.Background()
	s, _ := openTestStore(t)
	const n = 32
	exp := time.Now().Add(5 * time.Minute)
	var (
		wg            sync.WaitGroup
		mu            sync.Mutex
		firsts, fails int
	)
	start := make(chan struct{})
	for range n {
		wg.Go(func() {
			<-start
			first, err := s.UseTokenID(ctx, "same-jti", exp)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				fails++
				t.Error(err)
			case first:
				firsts++
			}
		})
	}
	close(start)
	wg.Wait()
	if firsts != 1 || fails != 0 {
		t.Errorf("%d of %d concurrent uses were the first (%d failed), want exactly 1", firsts, n, fails)
	}
}

// A write that fails is an error, never a first use.
func TestUseTokenIDFailsWhenTheStoreCannotWrite(t *testing.T) {
	ctx := context.Background()
	s, _ := openTestStore(t)
	limitPages(t, s, 0)
	var err error
	for i := 0; i < 1000 && err == nil; i++ {
		var first bool
		first, err = s.UseTokenID(ctx, fmt.Sprintf("jti-%d-%0200d", i, i), time.Now().Add(time.Hour))
		if err != nil && first {
			t.Fatal("a failed write reported a first use")
		}
	}
	if err == nil {
		t.Fatal("1000 token ids fitted into a database capped at its size")
	}
}
