package metrics

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Notifications registers deployd_notifications_total, created at zero for
// each of kinds (the notification targets' kinds) and results, and returns
// the function that counts one result of a kind: notify.Config.Count. It
// fails when the counter is already registered.
func (m *Metrics) Notifications(kinds, results []string) (func(kind, result string), error) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "notifications_total",
		Help: "Notifications by target kind (slack, ntfy, smtp, webhook, ...) and result (sent, retried, failed, dropped).",
	}, []string{"kind", "result"})
	for _, k := range kinds {
		for _, r := range results {
			c.WithLabelValues(k, r)
		}
	}
	if err := m.reg.Register(c); err != nil {
		return nil, fmt.Errorf("register notification metrics: %w", err)
	}
	return func(kind, result string) { c.WithLabelValues(kind, result).Inc() }, nil
}
