package sqlite

import (
	"bytes"
	"context"
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
	for _, want := range []string{
		`"file":"` + path + `","mode":"0644","message":"store file was readable by group or others; made it 0600"`,
		`"file":"` + path + `-wal","mode":"0666","message":"store file was readable by group or others; made it 0600"`,
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %s:\n%s", want, logs.String())
		}
	}
}
