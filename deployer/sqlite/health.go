package sqlite

import (
	"context"
	"database/sql"
	"time"

	sqlite3 "modernc.org/sqlite/lib"
)

// storageFailures name, in SQLite's own words (sqlite3_errstr), the result
// codes that mean the database cannot be written: the disk, the file or the
// lock failed, not the call. These texts name no file and hold no data.
var storageFailures = map[int]string{
	sqlite3.SQLITE_FULL:     "database or disk is full",
	sqlite3.SQLITE_IOERR:    "disk I/O error",
	sqlite3.SQLITE_READONLY: "attempt to write a readonly database",
	sqlite3.SQLITE_CORRUPT:  "database disk image is malformed",
	sqlite3.SQLITE_NOTADB:   "file is not a database",
	sqlite3.SQLITE_CANTOPEN: "unable to open database file",
	sqlite3.SQLITE_PERM:     "access permission denied",
	sqlite3.SQLITE_BUSY:     "database is locked",
	sqlite3.SQLITE_LOCKED:   "database table is locked",
	sqlite3.SQLITE_NOMEM:    "out of memory",
}

// writeFailure is why writes fail, from the first failed write on.
type writeFailure struct {
	reason string    // a storageFailures text
	since  time.Time // the first failed write of this run of failures
}

// WriteFailure reports why the store's last write failed: reason is
// SQLite's words for it (such as "database or disk is full"), which name no
// file and hold no data, and since is when writes began to fail. reason is
// "" when the last write succeeded or none has failed. Only failures of the
// storage count (a full disk, an I/O error, a read-only, locked or damaged
// database), not a call's own errors. It costs one atomic load and is safe
// for concurrent use.
func (s *Store) WriteFailure() (reason string, since time.Time) {
	if f := s.failure.Load(); f != nil {
		return f.reason, f.since
	}
	return "", time.Time{}
}

// WriteErrors returns how many write calls have failed because of the
// storage since Open (see WriteFailure). Safe for concurrent use.
func (s *Store) WriteErrors() int64 { return s.writeErrors.Load() }

// noteFailure counts a write call that failed with err and, when err is a
// failure of the storage, marks writes failing. Called by the writer
// goroutine only, before the call is answered, so that whoever hears of
// the failure finds it in WriteFailure.
func (s *Store) noteFailure(err error) {
	reason, ok := storageFailures[sqliteCode(err)]
	if !ok {
		return
	}
	s.writeErrors.Add(1)
	cur := s.failure.Load()
	switch {
	case cur == nil:
		s.failure.Store(&writeFailure{reason: reason, since: s.now().UTC()})
		s.log.Error().Err(err).Str("reason", reason).Msg("store writes fail")
	case cur.reason != reason:
		s.failure.Store(&writeFailure{reason: reason, since: cur.since})
		s.log.Error().Err(err).Str("reason", reason).Msg("store writes fail")
	}
}

// noteSuccess clears the failure after a committed transaction that
// changed rows (changed is from totalChanges).
func (s *Store) noteSuccess(changed bool) {
	if changed && s.failure.Load() != nil {
		s.failure.Store(nil)
		s.log.Info().Msg("store writes succeed again")
	}
}

// totalChanges returns the rows the writer's connection has inserted,
// updated or deleted since it opened, -1 when it cannot tell. apply asks
// only while writes fail: a transaction that changed nothing (Ping's, a
// claim that found nothing queued) commits without touching the disk and
// so proves nothing.
func totalChanges(ctx context.Context, tx *sql.Tx) int64 {
	var n int64
	if err := tx.QueryRowContext(ctx, "SELECT total_changes()").Scan(&n); err != nil {
		return -1
	}
	return n
}
