package main

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deployd/deployd/internal/e2e"

	"github.com/deployd/deployd/internal/testlog"
	_ "modernc.org/sqlite" // the "sqlite" driver, to make other programs' databases
)

// logLine is the part of a deployd log line the tests read.
type logLine struct {
	Level   string `json:"level"`
	Message string `json:"message"`
	File    string `json:"file"`
	DataDir string `json:"data_dir"`
	Mode    string `json:"mode"`
}

// logLines returns the JSON log lines at level whose message contains msg.
func logLines(t *testing.T, logs, level, msg string) []logLine {
	t.Helper()
	var out []logLine
	sc := bufio.NewScanner(strings.NewReader(logs))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l logLine
		if jsonUnmarshal(sc.Text(), &l) == nil && l.Level == level && strings.Contains(l.Message, msg) {
			out = append(out, l)
		}
	}
	return out
}

// wantMode fails the test unless every path exists with mode want.
func wantMode(t *testing.T, want fs.FileMode, paths ...string) {
	t.Helper()
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			t.Errorf("%s: %v", filepath.Base(p), err)
			continue
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s has mode %04o, want %04o", filepath.Base(p), got, want)
		}
	}
}

// TestServeKeepsItsFilesPrivate runs deployd in a data_dir that everyone
// may list (0755, systemd's StateDirectory default) under umask 0: the
// database, its WAL and shared-memory files and the registry auth file are
// 0600 all the same, and deployd warns about the directory. Files that an
// earlier deployd left readable are made 0600 and logged. Not parallel:
// the umask is the process's.
func TestServeKeepsItsFilesPrivate(t *testing.T) {
	s := newStack(t, stackOptions{})
	if err := os.Chmod(s.dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	old := syscall.Umask(0)
	t.Cleanup(func() { syscall.Umask(old) })

	d := startDeployd(t, s.config, nil)
	warned := logLines(t, d.logs.String(), "warn", "data_dir lets group or others in")
	if len(warned) != 1 || warned[0].DataDir != s.dataDir || warned[0].Mode != "0755" ||
		!strings.Contains(warned[0].Message, "chmod 700 "+s.dataDir) {
		t.Errorf("start-up warnings about data_dir: %+v, want one naming %s, mode 0755 and the chmod", warned, s.dataDir)
	}
	db := filepath.Join(s.dataDir, "deployd.db")
	auth := filepath.Join(s.dataDir, "auth.json")
	wantMode(t, 0o600, db, db+"-wal", db+"-shm")

	v1 := s.push("latest", "v1")
	ids := d.queue(delivery{event: "registry_package", id: "private-1", body: s.packageEvent("latest", v1)})
	if dep := waitDeployment(t, d, ids[0]); dep.State != "succeeded" {
		t.Fatalf("deployment: %s (%s %s), want succeeded", dep.State, dep.ErrorClass, dep.Error)
	}
	wantMode(t, 0o600, auth, db, db+"-wal", db+"-shm")

	// Files left readable by group and others (by an earlier deployd, or
	// an operator's copy) are made 0600 and logged.
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{db, auth} {
		if err := os.Chmod(p, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	d = startDeployd(t, s.config, nil)
	wantMode(t, 0o600, db, db+"-wal", db+"-shm")
	if got := logLines(t, d.logs.String(), "warn", "store file was readable by group or others"); len(got) != 1 || got[0].File != db || got[0].Mode != "0644" {
		t.Errorf("warnings about the database's mode: %+v, want one for %s, mode 0644", got, db)
	}
	v2 := s.push("latest", "v2")
	ids = d.queue(delivery{event: "registry_package", id: "private-2", body: s.packageEvent("latest", v2)})
	if dep := waitDeployment(t, d, ids[0]); dep.State != "succeeded" {
		t.Fatalf("deployment after the restart: %s (%s %s), want succeeded", dep.State, dep.ErrorClass, dep.Error)
	}
	wantMode(t, 0o600, auth)
	if got := logLines(t, d.logs.String(), "warn", "registry auth file was readable by group or others"); len(got) != 1 || got[0].File != auth || got[0].Mode != "0644" {
		t.Errorf("warnings about the auth file's mode: %+v, want one for %s, mode 0644", got, auth)
	}
}

// TestServeReadinessFollowsStoreWrites fills the file system under
// data_dir (a small tmpfs) until deliveries are refused: /readyz then says
// not ready and why, /metrics counts the failed writes, and once space is
// freed the next successful write makes deployd ready again.
func TestServeReadinessFollowsStoreWrites(t *testing.T) {
	mnt := t.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=4m,mode=0700"); err != nil {
		e2e.Missing(t, fmt.Sprintf("cannot mount a tmpfs to fill (needs root or CAP_SYS_ADMIN): %v", err))
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	d := startDeployd(t, intakeConfig(t, filepath.Join(mnt, "data")), nil)
	d.getJSON("/readyz", http.StatusOK, nil)
	if n, ok := metricValue(t, d, "deployd_store_write_errors_total"); ok && n != 0 {
		t.Errorf("deployd_store_write_errors_total = %v before any failure, want 0", n)
	}

	filler := filepath.Join(mnt, "filler")
	fillDisk(t, filler)
	// The WAL may still have room for a few deliveries; each one is
	// recorded (200) until one cannot be (503).
	post := func(id string) (int, string) {
		return d.post(testSecret, delivery{event: "issues", id: id, body: fmt.Appendf(nil, `{"action":"opened","id":%q}`, id)})
	}
	refused := ""
	for i := 0; refused == "" && i < 5000; i++ {
		switch status, body := post(fmt.Sprintf("full-%d", i)); status {
		case http.StatusOK:
		case http.StatusServiceUnavailable:
			refused = body
			t.Logf("delivery %d on the full disk refused: %s", i+1, body)
		default:
			t.Fatalf("delivery on a full disk: %d %s, want 200 or 503", status, body)
		}
	}
	if refused == "" {
		t.Fatal("deliveries were still recorded after 5000 on a full disk")
	}
	var ready struct {
		Status string `json:"status"`
		Reason string `json:"reason"`
		Since  string `json:"since"`
	}
	d.getJSON("/readyz", http.StatusServiceUnavailable, &ready)
	if ready.Status != "store writes fail" || ready.Reason != "database or disk is full" {
		t.Errorf("/readyz after a refused delivery: %+v, want status %q with reason %q", ready, "store writes fail", "database or disk is full")
	}
	if _, err := time.Parse(time.RFC3339, ready.Since); err != nil {
		t.Errorf("/readyz since %q: %v", ready.Since, err)
	}
	if n, ok := metricValue(t, d, "deployd_store_write_errors_total"); ok && n < 1 {
		t.Errorf("deployd_store_write_errors_total = %v after a refused delivery, want at least 1", n)
	}
	if got := logLines(t, d.logs.String(), "error", "store writes fail"); len(got) != 1 {
		t.Errorf("%d error lines saying the store writes fail, want 1 (at the first failure)", len(got))
	}

	// Freeing space is not enough: readiness waits for a write to succeed.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	d.getJSON("/readyz", http.StatusServiceUnavailable, nil)
	if status, body := post("after-free"); status != http.StatusOK || !strings.Contains(body, "ignored") {
		t.Fatalf("delivery after freeing space: %d %s, want 200 ignored", status, body)
	}
	d.getJSON("/readyz", http.StatusOK, &ready)
	if ready.Status != "ready" {
		t.Errorf("/readyz after a successful write: %+v, want ready", ready)
	}
	if got := logLines(t, d.logs.String(), "info", "store writes succeed again"); len(got) != 1 {
		t.Errorf("%d lines saying the store writes succeed again, want 1", len(got))
	}
	if got := listDeliveries(d)["after-free"]; !slices.Equal(got, []string{"ignored"}) {
		t.Errorf("delivery after freeing space listed as %q, want ignored", got)
	}
}

// fillDisk writes path until its file system is full.
func fillDisk(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill the disk: %v", err)
			}
			break
		}
	}
	// The last pages a partial write left room for.
	for {
		if _, err := f.Write(buf[:512]); err != nil {
			return
		}
	}
}

// metricValue scrapes /metrics and returns the value of the metric without
// labels called name; ok is false, and the test marked failed, when there
// is none.
func metricValue(t *testing.T, d *instance, name string) (v float64, ok bool) {
	t.Helper()
	resp, err := http.Get(d.url("/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", l, err)
			}
			return f, true
		}
	}
	t.Errorf("no metric %s in /metrics", name)
	return 0, false
}

// TestServeExplainsAnUnusableDatabase starts deployd on a database file
// that is not a SQLite database, on another program's SQLite database and
// on a truncated deployd database: each time deployd refuses to start with
// an error that names the file, says what is wrong with it and how to start
// afresh, and leaves the file as it was.
func TestServeExplainsAnUnusableDatabase(t *testing.T) {
	notSQLite := func(t *testing.T, db string) {
		if err := os.WriteFile(db, []byte("deployd.db: not a database but notes\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	foreign := func(t *testing.T, db string) {
		other, err := sql.Open("sqlite", db)
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		if _, err := other.Exec(`CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); INSERT INTO notes (body) VALUES ('keep me')`); err != nil {
			t.Fatal(err)
		}
	}
	truncated := func(t *testing.T, db string) {
		// A database deployd made and used, cut in half.
		d := startDeployd(t, intakeConfig(t, filepath.Dir(db)), nil)
		for i := range 200 {
			id := fmt.Sprintf("before-%d", i)
			if status, body := d.post(testSecret, delivery{event: "issues", id: id, body: fmt.Appendf(nil, `{"action":"opened","id":%q}`, id)}); status != http.StatusOK {
				t.Fatalf("delivery: %d %s", status, body)
			}
		}
		if err := d.stop(); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(db)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(db, fi.Size()/2); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		name    string
		make    func(t *testing.T, db string)
		problem string
		hint    string
	}{
		{"not a SQLite database", notSQLite, "not a deployd database: the file is not a SQLite database", "to start afresh, stop deployd and move the file aside"},
		{"another program's database", foreign, "not a deployd database: it is a SQLite database of something else (tables notes)", "if the file belongs to another program, give deployd a data_dir of its own"},
		{"truncated deployd database", truncated, "the database is damaged", "to start afresh, stop deployd and move the file aside"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dataDir := t.TempDir()
			db := filepath.Join(dataDir, "deployd.db")
			c.make(t, db)
			before, err := os.ReadFile(db)
			if err != nil {
				t.Fatal(err)
			}

			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var logs testlog.Buffer
			err = run(ctx, []string{"serve", "--config", intakeConfig(t, dataDir)}, func(string) string { return "" }, io.Discard, &logs)
			if err == nil {
				t.Fatal("deployd started on an unusable database")
			}
			msg := err.Error()
			broken := filepath.Join(dataDir, "broken")
			for _, want := range []string{
				"open store " + db + ": " + c.problem,
				"\nhint: " + c.hint,
				"mkdir " + broken + " && mv " + db + "* " + broken + "/",
				"deployd creates an empty database at the next start",
				"the services are defined in the configuration and are not lost",
				"the deployment history, the memory of webhook deliveries",
			} {
				if !strings.Contains(msg, want) {
					t.Errorf("error lacks %q:\n%s", want, msg)
				}
			}
			if strings.Contains(logs.String(), `"listening"`) {
				t.Error("deployd listened although its database is unusable")
			}
			after, err := os.ReadFile(db)
			if err != nil {
				t.Fatal(err)
			}
			if string(after) != string(before) {
				t.Error("deployd changed the unusable database file")
			}
		})
	}
}

// The data_dir check of doctor: a directory that group or others may
// enter is a warning with the fix.
func TestDoctorDataDir(t *testing.T) {
	f := newDoctorFixture(t)
	path := f.write(doctorConfig{noApp: true, credentials: []string{"none"}})
	dataDir := filepath.Join(filepath.Dir(path), "data")

	out, _ := f.doctor(path)
	wantLine(t, out, "OK", "data_dir", dataDir+" does not exist yet")

	if err := os.Mkdir(dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	out, _ = f.doctor(path)
	wantLine(t, out, "OK", "data_dir", dataDir+", mode 0700")

	if err := os.Chmod(dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	out, _ = f.doctor(path)
	wantLine(t, out, "WARN", "data_dir", dataDir+" lets group or others in (mode 0755)",
		"fix: chmod 700 "+dataDir+" (under systemd: StateDirectoryMode=0700)")
}
