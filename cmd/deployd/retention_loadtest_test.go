//go:build loadtest

package main

import (
	"strings"
	"testing"
	"time"

	"github.com/deployd/deployd/configs"
)

// In a binary built for the load script, the environment sets a short
// deliveries window and pass interval; a bad value is refused.
func TestLoadtestRetentionFromTheEnvironment(t *testing.T) {
	cfg := &configs.Config{Retention: configs.Retention{Deliveries: configs.Window(30 * 24 * time.Hour), Deployments: 1000}}
	env := map[string]string{loadtestWindowEnv: "90s", loadtestIntervalEnv: "2s"}
	r, err := storeRetention(cfg, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if r.Deliveries != 90*time.Second || r.Interval != 2*time.Second || r.Deployments != 1000 {
		t.Errorf("retention %+v, want 90s, 2s and the configured 1000 deployments", r)
	}
	env[loadtestWindowEnv] = "soon"
	if _, err := storeRetention(cfg, func(k string) string { return env[k] }); err == nil || !strings.Contains(err.Error(), loadtestWindowEnv) {
		t.Errorf("bad window: %v, want an error naming %s", err, loadtestWindowEnv)
	}
}
