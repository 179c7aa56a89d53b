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
	"slices"
	"strings"

	sqlitedriver "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// fileMode is the mode of every file of the store: the database and the
// -wal, -shm and -journal files SQLite keeps next to it.
const fileMode fs.FileMode = 0o600

// companionSuffixes name the files SQLite keeps next to the database.
var companionSuffixes = []string{"-wal", "-shm", "-journal"}

// createPrivate creates the database file with mode 0600 when it is
// missing: SQLite gives the -wal, -shm and -journal files it creates the
// database file's mode, so they are private too, whatever the umask.
func createPrivate(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, fileMode)
	switch {
	case err == nil:
		if err := f.Close(); err != nil {
			return fmt.Errorf("create %s: %w", path, err)
		}
	case !errors.Is(err, fs.ErrExist):
		return fmt.Errorf("create %s: %w", path, err)
	}
	return nil
}

// privateFiles takes the group and others' bits off the store's files
// where they exist (a database made by an earlier deployd, a WAL left by a
// crash) and returns the paths it changed with their modes before. Open
// calls it only once the file is known to be deployd's database.
func privateFiles(path string) (tightened map[string]fs.FileMode, err error) {
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

// sqliteCode returns the primary SQLite result code err carries, 0 when it
// carries none.
func sqliteCode(err error) int {
	var e *sqlitedriver.Error
	if errors.As(err, &e) {
		return e.Code() & 0xff
	}
	return 0
}

// A DatabaseError means that the file at Path cannot be deployd's database:
// it is not a SQLite database, it is another program's, or it is damaged.
// Its message names the file, says which, and how to start afresh.
type DatabaseError struct {
	// Path is the database file.
	Path string
	// Problem says what is wrong with the file, in plain words.
	Problem string
	// Foreign is set when the file is a SQLite database of something else.
	Foreign bool
	// Err is SQLite's error, if there is one.
	Err error
}

// Error returns the problem, SQLite's error and, after "\nhint: ", Hint.
func (e *DatabaseError) Error() string {
	msg := "open store " + e.Path + ": " + e.Problem
	if e.Err != nil {
		msg += " (" + e.Err.Error() + ")"
	}
	return msg + "\nhint: " + e.Hint()
}

// Unwrap returns SQLite's error.
func (e *DatabaseError) Unwrap() error { return e.Err }

// Hint says how to start afresh with an empty database, and what that
// loses.
func (e *DatabaseError) Hint() string {
	dir := filepath.Dir(e.Path)
	moveAside := fmt.Sprintf("stop deployd and move the file aside together with its -wal and -shm files (mkdir %s && mv %s* %s/); deployd creates an empty database at the next start",
		filepath.Join(dir, "broken"), e.Path, filepath.Join(dir, "broken"))
	lost := "the services are defined in the configuration and are not lost; the deployment history, the memory of webhook deliveries " +
		"(a redelivery is no longer recognised as a duplicate) and the record of what runs and what it replaced are, " +
		"so the first reconcile deploys each service's default tag again"
	if e.Foreign {
		return "if the file belongs to another program, give deployd a data_dir of its own; if it is deployd's after all, " +
			moveAside + ": " + lost
	}
	return "to start afresh, " + moveAside + ": " + lost
}

// unusable turns an error of Open into a *DatabaseError for the file at
// abs when it says that the file is not a database or is damaged; other
// errors, such as a permission problem, are returned wrapped with path.
func unusable(abs, path string, err error) error {
	var fe *foreignDatabaseError
	switch {
	case errors.As(err, &fe):
		return &DatabaseError{Path: abs, Foreign: true,
			Problem: "not a deployd database: it is a SQLite database of something else (tables " + fe.list() + ")"}
	case sqliteCode(err) == sqlite3.SQLITE_NOTADB:
		return &DatabaseError{Path: abs, Err: err,
			Problem: "not a deployd database: the file is not a SQLite database, or its header is damaged"}
	case sqliteCode(err) == sqlite3.SQLITE_CORRUPT:
		return &DatabaseError{Path: abs, Err: err,
			Problem: "the database is damaged: SQLite finds its content malformed (a truncated or overwritten file)"}
	}
	return fmt.Errorf("open store %s: %w", path, err)
}

// foreignDatabaseError is a database that holds tables but not deployd's
// schema_migrations.
type foreignDatabaseError struct{ tables []string }

func (e *foreignDatabaseError) Error() string {
	return "not a deployd database: tables " + e.list() + " and no deployd schema_migrations"
}

// list names the first few tables.
func (e *foreignDatabaseError) list() string {
	const most = 5
	if len(e.tables) > most {
		return strings.Join(e.tables[:most], ", ") + fmt.Sprintf(" and %d more", len(e.tables)-most)
	}
	return strings.Join(e.tables, ", ")
}

// checkDatabase fails with a *foreignDatabaseError when the database at
// path holds tables but not deployd's schema_migrations (version, name,
// applied_at), and with SQLite's error when it is no database at all. It
// reads on a connection of its own without the store's pragmas, so that
// the file is left as it is: the WAL pragma would rewrite another
// program's database, and the migrations would add deployd's tables to
// it. An empty database is deployd's to set up.
func checkDatabase(ctx context.Context, path string) error {
	db, err := sql.Open("sqlite", dsn(path, url.Values{"_pragma": {"query_only(1)"}}))
	if err != nil {
		return fmt.Errorf("check database: %w", err)
	}
	defer db.Close()
	return checkSchema(ctx, db)
}

// checkSchema is checkDatabase on a connection the caller opened.
func checkSchema(ctx context.Context, db *sql.DB) error {
	tables, err := tableNames(ctx, db)
	if err != nil {
		return err
	}
	if len(tables) == 0 {
		return nil
	}
	if slices.Contains(tables, "schema_migrations") {
		var cols int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM pragma_table_info('schema_migrations')
			WHERE name IN ('version', 'name', 'applied_at')`).Scan(&cols); err != nil {
			return fmt.Errorf("read schema_migrations: %w", err)
		}
		if cols == 3 {
			return nil
		}
	}
	return &foreignDatabaseError{tables: tables}
}

// tableNames lists the tables of db in name order, SQLite's own left out.
func tableNames(ctx context.Context, db *sql.DB) ([]string, error) {
	rows, err := db.QueryContext(ctx,
		`SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite!_%' ESCAPE '!' ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	defer rows.Close()
	var tables []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, fmt.Errorf("list tables: %w", err)
		}
		tables = append(tables, name)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	return tables, nil
}
