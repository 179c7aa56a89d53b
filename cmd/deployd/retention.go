package main

import (
	"github.com/deployd/deployd/configs"
	"github.com/deployd/deployd/deployer/sqlite"
)

// storeRetention is the store's retention as the configuration sets it,
// changed only in a binary built for the load script (see
// retention_loadtest.go).
func storeRetention(cfg *configs.Config, getenv func(string) string) (sqlite.Retention, error) {
	r := sqlite.Retention{
		Deliveries:  cfg.Retention.Deliveries.Std(),
		Deployments: cfg.Retention.Deployments,
	}
	return loadtestRetention(r, getenv)
}

// prunedByTable reads what the store's retention deleted, by table, for
// deployd_store_pruned_total.
func prunedByTable(store *sqlite.Store) func() map[string]int64 {
	return func() map[string]int64 {
		p := store.PrunedTotal()
		return map[string]int64{
			"deliveries":   int64(p.Deliveries),
			"deployments":  int64(p.Deployments),
			"redeliveries": int64(p.Redeliveries),
		}
	}
}
