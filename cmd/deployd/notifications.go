package main

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/rs/zerolog"

	"github.com/deployd/deployd/configs"
	"github.com/deployd/deployd/notify"
	"github.com/deployd/deployd/server/metrics"
)

// notificationTargets builds a target for each configured notification;
// it fails, naming the entry but never its URL, when one cannot be used.
func notificationTargets(cfg *configs.Config) ([]notify.Target, error) {
	var targets []notify.Target
	client := &http.Client{} // the webhooks'; each attempt has the notifier's timeout
	for i, n := range cfg.Notifications {
		t := notify.Target{Services: n.Services}
		for _, e := range n.Events {
			t.Events = append(t.Events, notify.Event(e))
		}
		if w := n.Webhook; w != nil {
			s, err := notify.NewWebhook(w.URL.Reveal(), []byte(w.Secret.Reveal()), client)
			if err != nil {
				return nil, fmt.Errorf("notifications[%d]: %w", i, err)
			}
			t.Kind, t.Sender = "webhook", s
		} else {
			s, err := notify.NewShoutrrr(n.URL.Reveal())
			if err != nil {
				return nil, fmt.Errorf("notifications[%d]: %w", i, err)
			}
			t.Kind, t.Sender = s.Kind(), s
		}
		targets = append(targets, t)
	}
	return targets, nil
}

// newNotifier starts the notifier of the configured notifications with
// its metrics, or returns nil when there are none.
func newNotifier(cfg *configs.Config, status notify.Status, mets *metrics.Metrics, log zerolog.Logger) (*notify.Notifier, error) {
	targets, err := notificationTargets(cfg)
	if err != nil || len(targets) == 0 {
		return nil, err
	}
	var kinds []string
	for _, t := range targets {
		if !slices.Contains(kinds, t.Kind) {
			kinds = append(kinds, t.Kind)
		}
	}
	count, err := mets.Notifications(kinds, notify.Results())
	if err != nil {
		return nil, err
	}
	return notify.New(notify.Config{Targets: targets, Status: status, PublicURL: cfg.PublicURL, Logger: log, Count: count})
}

// printNotifications checks that every notification can be used, as serve
// does, and lists them for check-config by kind, events and services,
// never their URLs.
func printNotifications(w io.Writer, cfg *configs.Config) error {
	targets, err := notificationTargets(cfg)
	if err != nil {
		return err
	}
	if len(targets) > 0 {
		fmt.Fprintf(w, "%d notification(s)\n", len(targets))
	}
	for i, t := range targets {
		events := notify.DefaultEvents()
		if len(t.Events) > 0 {
			events = t.Events
		}
		services := "all services"
		if len(t.Services) > 0 {
			services = strings.Join(t.Services, ", ")
		}
		fmt.Fprintf(w, "  [%d] %-12s %v for %s\n", i, t.Kind, events, services)
	}
	return nil
}
