package metrics_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/deployd/deployd/server/metrics"
)

func TestNotificationsCounter(t *testing.T) {
	m, err := metrics.New(metrics.Config{Registry: prometheus.NewRegistry(), History: history{}})
	if err != nil {
		t.Fatal(err)
	}
	count, err := m.Notifications([]string{"slack", "webhook"}, []string{"sent", "failed"})
	if err != nil {
		t.Fatal(err)
	}
	count("webhook", "sent")
	count("webhook", "sent")
	count("slack", "failed")
	wantLines(t, scrape(t, m),
		`deployd_notifications_total{kind="webhook",result="sent"} 2`,
		`deployd_notifications_total{kind="webhook",result="failed"} 0`,
		`deployd_notifications_total{kind="slack",result="failed"} 1`,
		`deployd_notifications_total{kind="slack",result="sent"} 0`,
	)
	if _, err := m.Notifications(nil, nil); err == nil {
		t.Error("registering the counter twice: no error")
	}
}
