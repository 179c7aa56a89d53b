package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
)

// ErrBackupExists is returned by Backup and BackupFile when the backup file
// already exists and overwriting it was not asked for.
var ErrBackupExists = errors.New("backup file exists")

// Backup writes a consistent copy of the store's database to path, as of
// one moment: every write committed before Backup began is in it. It copies
// with SQLite's VACUUM INTO on a read-only connection of its own, which in
// WAL mode neither waits for the writer nor holds it up (the WAL grows while
// the copy runs and is checkpointed afterwards). See BackupFile for how the
// file is written.
func (s *Store) Backup(ctx context.Context, path string, overwrite bool) error {
	return BackupFile(ctx, s.path, path, overwrite)
}

// BackupFile writes a consistent copy of the deployd database at db to
// path without opening db as a store: it applies no migrations and writes
// nothing to db, so it may run while a deployd serves from db.
//
// The copy is written to a temporary file (mode 0600) in path's directory,
// synced, and then moved to path, so that path is either absent or a
// complete database, never part of one. When path exists BackupFile fails
// with ErrBackupExists unless overwrite is set; path is never db itself or
// one of the files SQLite keeps next to it. A db that is missing is not
// created, and one that is not deployd's database is a *DatabaseError.
func BackupFile(ctx context.Context, db, path string, overwrite bool) error {
	if err := backupFile(ctx, db, path, overwrite); err != nil {
		return fmt.Errorf("back up store %s to %s: %w", db, path, err)
	}
	return nil
}

func backupFile(ctx context.Context, db, path string, overwrite bool) (err error) {
	src, err := filepath.Abs(db)
	if err != nil {
		return err
	}
	dst, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	if err := notTheStore(src, dst); err != nil {
		return err
	}
	if _, err := os.Stat(src); err != nil {
		return err // a missing database is not created
	}
	if !overwrite {
		if _, err := os.Lstat(dst); err == nil {
			return ErrBackupExists
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}

	rdb, err := sql.Open("sqlite", dsn(src, url.Values{
		"mode":    {"ro"}, // query_only(1) would refuse VACUUM INTO
		"_pragma": {"busy_timeout(5000)"},
	}))
	if err != nil {
		return err
	}
	defer rdb.Close()
	rdb.SetMaxOpenConns(1)
	if err := checkSchema(ctx, rdb); err != nil {
		return unusable(src, db, err)
	}

	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return err
	}
	tmpName := tmp.Name()
	defer func() {
		if err != nil {
			os.Remove(tmpName)
		}
	}()
	// VACUUM INTO writes into an empty file and keeps its mode.
	if err := tmp.Chmod(fileMode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if _, err := rdb.ExecContext(ctx, "VACUUM INTO ?", tmpName); err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	if err := syncFile(tmpName); err != nil {
		return err
	}
	if err := publish(tmpName, dst, overwrite); err != nil {
		return err
	}
	return syncFile(filepath.Dir(dst))
}

// notTheStore refuses a backup path that is the database or one of its
// companion files: moving a copy there would replace the live files.
func notTheStore(src, dst string) error {
	for _, p := range append([]string{src}, companions(src)...) {
		if p == dst {
			return fmt.Errorf("%s is the store's own file", dst)
		}
	}
	if a, err := os.Stat(src); err == nil {
		if b, err := os.Stat(dst); err == nil && os.SameFile(a, b) {
			return fmt.Errorf("%s is the store's own file", dst)
		}
	}
	return nil
}

// publish moves the finished copy tmp to dst. Without overwrite it links
// tmp to dst, which fails when dst exists even if it appeared meanwhile;
// where the file system has no hard links it renames after checking.
func publish(tmp, dst string, overwrite bool) error {
	if overwrite {
		return os.Rename(tmp, dst)
	}
	err := os.Link(tmp, dst)
	switch {
	case err == nil:
		return os.Remove(tmp)
	case errors.Is(err, fs.ErrExist):
		return ErrBackupExists
	}
	if _, serr := os.Lstat(dst); serr == nil {
		return ErrBackupExists
	} else if !errors.Is(serr, fs.ErrNotExist) {
		return serr
	}
	return os.Rename(tmp, dst)
}

// syncFile flushes the file or directory at path to disk.
func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return f.Close()
}
