package sqlite

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// fileMode is the mode of every file of the store: the database and the
// -wal, -shm and -journal files SQLite keeps next to it.
const fileMode fs.FileMode = 0o600

// companionSuffixes name the files SQLite keeps next to the database.
var companionSuffixes = []string{"-wal", "-shm", "-journal"}

// privateFiles makes the store's files readable by their owner only. It
// creates the database file with mode 0600 when it is missing: SQLite gives
// the -wal, -shm and -journal files it creates the database file's mode, so
// they are private too, whatever the umask. It also takes the group and
// others' bits off those files where they already exist (a database made
// by an earlier deployd, a WAL left by a crash) and returns the paths it
// changed with their modes before.
func privateFiles(path string) (tightened map[string]fs.FileMode, err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, fileMode)
	switch {
	case err == nil:
		if err := f.Close(); err != nil {
			return nil, fmt.Errorf("create %s: %w", path, err)
		}
	case !errors.Is(err, fs.ErrExist):
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	for _, p := range append([]string{path}, companions(path)...) {
		fi, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("check mode of %s: %w", p, err)
		}
		if fi.Mode().Perm()&0o077 == 0 {
			continue
		}
		if err := os.Chmod(p, fileMode); err != nil {
			return nil, fmt.Errorf("make %s private: %w", p, err)
		}
		if tightened == nil {
			tightened = map[string]fs.FileMode{}
		}
		tightened[p] = fi.Mode().Perm()
	}
	return tightened, nil
}

// companions returns the paths of the files SQLite keeps next to path.
func companions(path string) []string {
	out := make([]string, len(companionSuffixes))
	for i, s := range companionSuffixes {
		out[i] = path + s
	}
	return out
}
