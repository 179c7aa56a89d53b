package sqlite

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/deployd/deployd/deployer"
)

// backupFixture is a store holding a delivery with a deployment that ran
// and a service status, and a directory for backups.
type backupFixture struct {
	store *Store
	db    string
	dir   string
	dep   int64
}

func newBackupFixture(t *testing.T) *backupFixture {
	t.Helper()
	ctx := context.Background()
	s, db := openTestStore(t)
	rc := must(s.RecordDelivery(ctx, delivery("before-backup"), []deployer.Request{request("backend", "latest")}))(t)
	if _, _, err := s.ClaimNext(ctx, "backend"); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendStep(ctx, rc.Deployments[0], deployer.Step{Name: "pull", Outcome: "ok"}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetServiceStatus(ctx, deployer.ServiceStatus{Name: "backend", Digest: digestA}); err != nil {
		t.Fatal(err)
	}
	return &backupFixture{store: s, db: db, dir: t.TempDir(), dep: rc.Deployments[0]}
}

// openBackup opens the backup at path as a store and returns it.
func openBackup(t *testing.T, path string) *Store {
	t.Helper()
	b, err := Open(context.Background(), path)
	if err != nil {
		t.Fatalf("open the backup: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// wantOnly fails unless dir holds exactly the files names: no temporary
// file is left behind.
func wantOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if slices.Sort(names); !slices.Equal(got, names) {
		t.Errorf("%s holds %v, want %v", dir, got, names)
	}
}

// TestBackup lists what a backup of the store must do.
func TestBackup(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		run  func(t *testing.T, f *backupFixture)
	}{
		{"the copy is a deployd database holding what was committed", func(t *testing.T, f *backupFixture) {
			path := filepath.Join(f.dir, "deployd.db")
			if err := f.store.Backup(ctx, path, false); err != nil {
				t.Fatal(err)
			}
			wantOnly(t, f.dir, "deployd.db")
			b := openBackup(t, path)
			ds := must(b.Deliveries(ctx, deployer.Page{}))(t)
			if len(ds) != 1 || ds[0].ID != "before-backup" || !slices.Equal(ds[0].DeploymentIDs, []int64{f.dep}) {
				t.Errorf("deliveries in the backup: %+v, want before-backup with deployment %d", ds, f.dep)
			}
			dep := must(b.Deployment(ctx, f.dep))(t)
			if dep.Service != "backend" || dep.State != deployer.StateRunning || len(dep.Steps) != 1 || dep.Steps[0].Name != "pull" {
				t.Errorf("deployment in the backup: %+v, want backend running with its pull step", dep)
			}
			if st := must(b.ServiceStatus(ctx, "backend"))(t); st.Digest != digestA {
				t.Errorf("service status in the backup: %+v, want digest %s", st, digestA)
			}
		}},
		{"the copy is mode 0600", func(t *testing.T, f *backupFixture) {
			path := filepath.Join(f.dir, "backup.db")
			if err := f.store.Backup(ctx, path, false); err != nil {
				t.Fatal(err)
			}
			fi := must(os.Stat(path))(t)
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("backup has mode %04o, want 0600", fi.Mode().Perm())
			}
		}},
		{"an existing file is left as it is", func(t *testing.T, f *backupFixture) {
			path := filepath.Join(f.dir, "backup.db")
			if err := os.WriteFile(path, []byte("an older backup"), 0o600); err != nil {
				t.Fatal(err)
			}
			err := f.store.Backup(ctx, path, false)
			if !errors.Is(err, ErrBackupExists) || !strings.Contains(err.Error(), path) {
				t.Fatalf("backup onto an existing file: %v, want ErrBackupExists naming %s", err, path)
			}
			if got := must(os.ReadFile(path))(t); string(got) != "an older backup" {
				t.Errorf("the existing file now holds %q", got)
			}
			wantOnly(t, f.dir, "backup.db")
		}},
		{"overwrite replaces the file by renaming over it", func(t *testing.T, f *backupFixture) {
			path := filepath.Join(f.dir, "backup.db")
			if err := os.WriteFile(path, []byte("an older backup"), 0o644); err != nil {
				t.Fatal(err)
			}
			// A second name for the old file: it keeps the old content
			// only if the backup never wrote into that file.
			if err := os.Link(path, filepath.Join(f.dir, "old")); err != nil {
				t.Fatal(err)
			}
			if err := f.store.Backup(ctx, path, true); err != nil {
				t.Fatal(err)
			}
			if got := must(os.ReadFile(filepath.Join(f.dir, "old")))(t); string(got) != "an older backup" {
				t.Errorf("the old file was written into: it holds %d bytes", len(got))
			}
			if fi := must(os.Stat(path))(t); fi.Mode().Perm() != 0o600 {
				t.Errorf("backup has mode %04o, want 0600", fi.Mode().Perm())
			}
			wantOnly(t, f.dir, "backup.db", "old")
			if ds := must(openBackup(t, path).Deliveries(ctx, deployer.Page{}))(t); len(ds) != 1 {
				t.Errorf("deliveries in the backup: %+v, want 1", ds)
			}
		}},
		{"the store's own files are refused, even with overwrite", func(t *testing.T, f *backupFixture) {
			for _, p := range []string{f.db, f.db + "-wal", filepath.Join(filepath.Dir(f.db), ".", "deployd.db")} {
				if err := f.store.Backup(ctx, p, true); err == nil || !strings.Contains(err.Error(), "the store's own file") {
					t.Errorf("backup onto %s: %v, want a refusal", p, err)
				}
			}
			if ds := must(f.store.Deliveries(ctx, deployer.Page{}))(t); len(ds) != 1 {
				t.Errorf("the store holds %d deliveries after the refusals, want 1", len(ds))
			}
		}},
		{"a failed copy leaves nothing behind", func(t *testing.T, f *backupFixture) {
			cctx, cancel := context.WithCancel(ctx)
			cancel()
			path := filepath.Join(f.dir, "backup.db")
			if err := f.store.Backup(cctx, path, false); !errors.Is(err, context.Canceled) {
				t.Errorf("backup with an ended context: %v, want context.Canceled", err)
			}
			if err := f.store.Backup(ctx, filepath.Join(f.dir, "missing", "backup.db"), false); err == nil {
				t.Error("backup into a missing directory succeeded")
			}
			wantOnly(t, f.dir)
		}},
		{"every write acknowledged before the backup began is in it", func(t *testing.T, f *backupFixture) {
			var (
				mu    sync.Mutex
				acked []string
				wg    sync.WaitGroup
				stop  = make(chan struct{})
			)
			for w := range 4 {
				wg.Go(func() {
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						id := fmt.Sprintf("w%d-%d", w, i)
						if _, err := f.store.RecordDelivery(ctx, delivery(id), nil); err != nil {
							t.Error(err)
							return
						}
						mu.Lock()
						acked = append(acked, id)
						mu.Unlock()
					}
				})
			}
			waitFor := func(n int) {
				for {
					mu.Lock()
					l := len(acked)
					mu.Unlock()
					if l >= n {
						return
					}
					must(f.store.Deliveries(ctx, deployer.Page{Limit: 1}))(t) // yield to the writers
				}
			}
			waitFor(50)
			mu.Lock()
			before := slices.Clone(acked)
			mu.Unlock()
			path := filepath.Join(f.dir, "backup.db")
			err := f.store.Backup(ctx, path, false)
			close(stop)
			wg.Wait()
			if err != nil {
				t.Fatal(err)
			}
			in := map[string]bool{}
			b := openBackup(t, path)
			for p := (deployer.Page{Limit: 500}); ; {
				ds := must(b.Deliveries(ctx, p))(t)
				if len(ds) == 0 {
					break
				}
				for _, d := range ds {
					in[d.ID] = true
				}
				p.Before = ds[len(ds)-1].Seq
			}
			for _, id := range before {
				if !in[id] {
					t.Errorf("delivery %s, acknowledged before the backup, is not in it", id)
				}
			}
			if len(in) < len(before)+1 {
				t.Errorf("backup holds %d deliveries, want at least %d", len(in), len(before)+1)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.run(t, newBackupFixture(t))
		})
	}
}

// TestBackupFile copies a database it does not open as a store: a missing
// one is not created and another program's is refused.
func TestBackupFile(t *testing.T) {
	ctx := context.Background()
	f := newBackupFixture(t)
	path := filepath.Join(f.dir, "backup.db")
	if err := BackupFile(ctx, f.db, path, false); err != nil {
		t.Fatal(err)
	}
	wantOnly(t, f.dir, "backup.db")
	if ds := must(openBackup(t, path).Deliveries(ctx, deployer.Page{}))(t); len(ds) != 1 || ds[0].ID != "before-backup" {
		t.Errorf("deliveries in the backup: %+v, want before-backup", ds)
	}

	refused := t.TempDir()
	missing := filepath.Join(t.TempDir(), "deployd.db")
	if err := BackupFile(ctx, missing, filepath.Join(refused, "none.db"), false); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("backup of a missing database: %v, want not found", err)
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the missing database was created: %v", err)
	}

	notes := filepath.Join(t.TempDir(), "notes.db")
	if err := os.WriteFile(notes, []byte(strings.Repeat("not a database\n", 100)), 0o600); err != nil {
		t.Fatal(err)
	}
	var de *DatabaseError
	if err := BackupFile(ctx, notes, filepath.Join(refused, "notes.db"), false); !errors.As(err, &de) {
		t.Errorf("backup of a file that is no database: %v, want a *DatabaseError", err)
	}
	wantOnly(t, refused)
}
