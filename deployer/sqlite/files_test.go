package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/rs/zerolog"
)

// TestStoreFilesArePrivate opens a store under umask 0 in a directory
// everyone may list: the database, the WAL and the shared-memory file are
// 0600 all the same. Not parallel: the umask is the process's.
func TestStoreFilesArePrivate(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	old := syscall.Umask(0)
	defer syscall.Umask(old)

	path := filepath.Join(dir, "deployd.db")
	var logs bytes.Buffer
	s, err := Open(context.Background(), path, WithLogger(zerolog.New(&logs)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.RecordDelivery(context.Background(), delivery("d1"), nil); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, %v; want mode 0600", filepath.Base(p), fi.Mode(), err)
		}
	}
	if logs.Len() != 0 {
		t.Errorf("a new store logged %s", logs.String())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Files that group or others may read are made 0600, each logged.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+"-wal", nil, 0o666); err != nil { // as a crash may leave it
		t.Fatal(err)
	}
	s, err = Open(context.Background(), path, WithLogger(zerolog.New(&logs)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("reopened, %s: %v, %v; want mode 0600", filepath.Base(p), fi.Mode(), err)
		}
	}
	// The empty WAL is gone once Open has checked the database (SQLite
	// removes it when the checking connection closes); the store's new one
	// has the database's mode, checked above.
	want := `"file":"` + path + `","mode":"0644","message":"store file was readable by group or others; made it 0600"`
	if !strings.Contains(logs.String(), want) {
		t.Errorf("log lacks %s:\n%s", want, logs.String())
	}
}

func TestOpenRefusesUnusableDatabases(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()

	text := filepath.Join(dir, "text.db")
	if err := os.WriteFile(text, []byte("not a database\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	other := filepath.Join(dir, "other.db")
	db, err := sql.Open("sqlite", other)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("CREATE TABLE notes (id INTEGER PRIMARY KEY); CREATE TABLE tags (name TEXT)"); err != nil {
		t.Fatal(err)
	}
	db.Close()

	// A table called schema_migrations is not enough: deployd's has
	// version, name and applied_at.
	migrateTool := filepath.Join(dir, "migrate-tool.db")
	if db, err = sql.Open("sqlite", migrateTool); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("CREATE TABLE schema_migrations (version INTEGER, dirty INTEGER)"); err != nil {
		t.Fatal(err)
	}
	db.Close()

	for _, c := range []struct {
		path    string
		foreign bool
		problem string
	}{
		{text, false, "the file is not a SQLite database"},
		{other, true, "a SQLite database of something else (tables notes, tags)"},
		{migrateTool, true, "a SQLite database of something else (tables schema_migrations)"},
	} {
		// Another program's file keeps its mode: deployd refuses it and
		// changes nothing.
		if err := os.Chmod(c.path, 0o644); err != nil {
			t.Fatal(err)
		}
		s, err := Open(ctx, c.path)
		if fi, err := os.Stat(c.path); err != nil || fi.Mode().Perm() != 0o644 {
			t.Errorf("%s: mode after Open %v (%v), want 0644 unchanged", filepath.Base(c.path), fi.Mode().Perm(), err)
		}
		if err == nil {
			s.Close()
			t.Errorf("%s: opened", filepath.Base(c.path))
			continue
		}
		var de *DatabaseError
		if !errors.As(err, &de) || de.Path != c.path || de.Foreign != c.foreign || !strings.Contains(de.Problem, c.problem) {
			t.Errorf("%s: %v, want a DatabaseError for the file with problem %q (foreign %v)", filepath.Base(c.path), err, c.problem, c.foreign)
		}
		if _, err := os.Stat(c.path + "-wal"); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: Open made a WAL (%v)", filepath.Base(c.path), err)
		}
	}

	// A database deployd made opens again.
	path := filepath.Join(dir, "deployd.db")
	for range 2 {
		s, err := Open(ctx, path)
		if err != nil {
			t.Fatalf("open deployd's own database: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
