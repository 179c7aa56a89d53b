//go:build !loadtest

package main

import "github.com/deployd/deployd/deployer/sqlite"

// loadtestRetention returns r as it is: only a binary built with the
// loadtest tag reads a retention window from the environment.
func loadtestRetention(r sqlite.Retention, _ func(string) string) (sqlite.Retention, error) {
	return r, nil
}
