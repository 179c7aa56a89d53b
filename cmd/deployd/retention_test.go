//go:build !loadtest

package main

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deployd/deployd/deployer"
	"github.com/deployd/deployd/deployer/sqlite"
)

// TestServePrunesOldDeliveries starts deployd, with the default retention
// (30 days), on a database that an earlier deployd without retention left
// with deliveries 40 days old: deployd switches the file to incremental
// vacuum at start-up and says so, its first pass deletes the old
// deliveries, keeps the recent ones and what arrives over HTTP, counts
// them in deployd_store_pruned_total and logs one summary line. The load
// script's retention window in the environment changes nothing in this
// (release) build: the recent deliveries would be outside it.
func TestServePrunesOldDeliveries(t *testing.T) {
	ctx := context.Background()
	dataDir := t.TempDir()
	old, err := sqlite.Open(ctx, filepath.Join(dataDir, "deployd.db"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for i := range 20 {
		d := deployer.Delivery{ID: fmt.Sprintf("old-%d", i), Event: "ping", Result: deployer.ResultIgnored,
			BodySHA256: fmt.Sprintf("%064x", i), ReceivedAt: now.Add(-40 * 24 * time.Hour)}
		if _, err := old.RecordDelivery(ctx, d, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := old.RecordDelivery(ctx, deployer.Delivery{ID: "recent", Event: "ping", Result: deployer.ResultIgnored,
		BodySHA256: fmt.Sprintf("%064x", 99), ReceivedAt: now.Add(-time.Hour)}, nil); err != nil {
		t.Fatal(err)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	d := startDeployd(t, intakeConfig(t, dataDir), map[string]string{
		"DEPLOYD_LOADTEST_RETENTION_WINDOW": "1s", "DEPLOYD_LOADTEST_RETENTION_INTERVAL": "1s"})
	if got := logLines(t, d.logs.String(), "info", "one-time VACUUM"); len(got) != 1 {
		t.Errorf("start-up log lines about the one-time VACUUM: %+v, want one", got)
	}
	tagged := fixture(t, "registry_package.published.container-tagged.json")
	if status, body := d.post(testSecret, delivery{event: "registry_package", id: "new", body: tagged}); status != http.StatusAccepted {
		t.Fatalf("delivery: %d %s, want 202", status, body)
	}

	// The first pass comes 10 seconds after start-up.
	deadline := time.Now().Add(2 * time.Minute)
	for len(listDeliveries(d)) != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("deliveries after 2 minutes: %v, want only recent and new", listDeliveries(d))
		}
		time.Sleep(200 * time.Millisecond)
	}
	got := listDeliveries(d)
	if _, ok := got["recent"]; !ok {
		t.Errorf("deliveries %v: the one inside the window is gone", got)
	}
	if _, ok := got["new"]; !ok {
		t.Errorf("deliveries %v: the one just received is gone", got)
	}
	if n, ok := metricValue(t, d, `deployd_store_pruned_total{table="deliveries"}`); ok && n != 20 {
		t.Errorf(`deployd_store_pruned_total{table="deliveries"} = %v, want 20`, n)
	}
	if n, ok := metricValue(t, d, `deployd_store_pruned_total{table="deployments"}`); ok && n != 0 {
		t.Errorf(`deployd_store_pruned_total{table="deployments"} = %v, want 0`, n)
	}
	lines := logLines(t, d.logs.String(), "info", "pruned old rows")
	if len(lines) != 1 || !strings.Contains(d.logs.String(), `"deliveries":20`) {
		t.Errorf("pass summaries: %+v, want one line with 20 deliveries", lines)
	}
}
