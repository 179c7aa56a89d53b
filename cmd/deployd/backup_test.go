package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/deployd/deployd/deployer"
	"github.com/deployd/deployd/deployer/sqlite"
)

// postIgnored sends a signed delivery of an event deployd ignores but
// records, and reports whether deployd acknowledged it (2xx). It is safe
// to call from any goroutine.
func postIgnored(d *instance, id string) (bool, error) {
	body := fmt.Appendf(nil, `{"action":"opened","issue":{"title":%q}}`, id)
	req, err := http.NewRequest(http.MethodPost, d.url("/webhooks/github"), bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", "issues")
	req.Header.Set("X-GitHub-Delivery", id)
	req.Header.Set("X-Hub-Signature-256", sign(testSecret, body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	return resp.StatusCode/100 == 2, nil
}

// TestCommandBackup takes `deployd backup` while deployd serves and
// deliveries are being written: every delivery acknowledged before the
// backup started is in the copy, which is a deployd database of mode 0600,
// and deployd goes on acknowledging deliveries meanwhile. An existing file
// is only replaced with --force.
func TestCommandBackup(t *testing.T) {
	ctx := context.Background()
	cfg := intakeConfig(t, t.TempDir())
	d := startDeployd(t, cfg, nil)
	queued := d.queue(delivery{event: "registry_package", id: "before-backup",
		body: fixture(t, "registry_package.published.container-tagged.json")})

	var (
		mu    sync.Mutex
		acked []string
		wg    sync.WaitGroup
		stop  = make(chan struct{})
	)
	ackedNow := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(acked)
	}
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("writer%d-%d", w, i)
				ok, err := postIgnored(d, id)
				if err != nil || !ok {
					t.Errorf("delivery %s: acknowledged %v, %v", id, ok, err)
					return
				}
				mu.Lock()
				acked = append(acked, id)
				mu.Unlock()
			}
		})
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
	waitFor(t, "40 deliveries acknowledged", func() bool { return len(ackedNow()) >= 40 })

	dir := t.TempDir()
	path := filepath.Join(dir, "deployd-backup.db")
	before := ackedNow()
	stdout, stderr, err := cliRun([]string{"backup", "--config", cfg, path}, nil)
	if err != nil {
		t.Fatalf("deployd backup: %v\n%s", err, stderr)
	}
	if !strings.Contains(stdout, "to "+path) {
		t.Errorf("deployd backup printed %q, want it to name %s", stdout, path)
	}
	// deployd goes on acknowledging deliveries after the backup.
	after := len(ackedNow())
	waitFor(t, "a delivery acknowledged after the backup", func() bool { return len(ackedNow()) > after })
	close(stop)
	wg.Wait()

	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("backup has mode %04o, want 0600", fi.Mode().Perm())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("backup directory holds %d files, want only the backup", len(ents))
	}
	content, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	// The copy is a deployd database holding every acknowledged delivery.
	restored := filepath.Join(t.TempDir(), "deployd.db")
	if err := os.WriteFile(restored, content, 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := sqlite.Open(ctx, restored)
	if err != nil {
		t.Fatalf("open the backup: %v", err)
	}
	defer b.Close()
	in := map[string]bool{}
	for p := (deployer.Page{Limit: 500}); ; {
		ds, err := b.Deliveries(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) == 0 {
			break
		}
		for _, del := range ds {
			in[del.ID] = true
		}
		p.Before = ds[len(ds)-1].Seq
	}
	for _, id := range append([]string{"before-backup"}, before...) {
		if !in[id] {
			t.Errorf("delivery %s, acknowledged before the backup, is not in it", id)
		}
	}
	dep, err := b.Deployment(ctx, queued[0])
	if err != nil || dep.Service != "backend" || dep.Trigger.DeliveryID != "before-backup" {
		t.Errorf("deployment %d in the backup: %+v, %v; want the one before-backup queued", queued[0], dep, err)
	}

	// An existing file is kept unless --force.
	_, _, err = cliRun([]string{"backup", "--config", cfg, path}, nil)
	if err == nil || exitCode(err) != 1 || !errors.Is(err, sqlite.ErrBackupExists) || !strings.Contains(err.Error(), "--force") {
		t.Errorf("backup onto an existing file: %v, want a refusal that mentions --force", err)
	}
	if now, _ := os.ReadFile(path); !bytes.Equal(now, content) {
		t.Error("the refused backup changed the existing file")
	}
	if _, stderr, err := cliRun([]string{"backup", path, "--force", "--config", cfg}, nil); err != nil {
		t.Errorf("backup --force onto an existing file: %v\n%s", err, stderr)
	}

	if _, _, err := cliRun([]string{"backup", "--config", cfg}, nil); exitCode(err) != 2 || !strings.Contains(fmt.Sprint(err), "name the backup file") {
		t.Errorf("backup without PATH: %v, want a usage error", err)
	}
}
