//go:build loadtest

package main

import (
	"fmt"
	"time"

	"github.com/deployd/deployd/deployer/sqlite"
)

// Environment variables read only by a binary built with -tags loadtest,
// which scripts/loadtest's retention mode builds: the configuration
// refuses a deliveries window shorter than GitHub's 3-day redelivery
// window, and a load run of minutes must cross the window several times.
// A release build ignores them (retention_release.go).
const (
	loadtestWindowEnv   = "DEPLOYD_LOADTEST_RETENTION_WINDOW"
	loadtestIntervalEnv = "DEPLOYD_LOADTEST_RETENTION_INTERVAL"
)

// loadtestRetention replaces r's deliveries window and pass interval with
// the Go durations in the environment, when set.
func loadtestRetention(r sqlite.Retention, getenv func(string) string) (sqlite.Retention, error) {
	for _, v := range []struct {
		name string
		dst  *time.Duration
	}{{loadtestWindowEnv, &r.Deliveries}, {loadtestIntervalEnv, &r.Interval}} {
		s := getenv(v.name)
		if s == "" {
			continue
		}
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return r, fmt.Errorf("%s=%q: want a positive Go duration", v.name, s)
		}
		*v.dst = d
	}
	return r, nil
}
