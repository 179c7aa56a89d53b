package main

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/deployd/deployd/configs"
	"github.com/deployd/deployd/notify"
)

// notifyConfig writes a configuration with the given notifications entries.
func notifyConfig(t *testing.T, notifications string) string {
	t.Helper()
	dir := t.TempDir()
	return writeFile(t, dir, "deployd.yaml", fmt.Sprintf(`
listen: 127.0.0.1:0
data_dir: %q
log: {format: json}
github: {webhook_secret: %s}
registries: {"127.0.0.1:5000": {insecure: true}}
services:
  demo: {image: 127.0.0.1:5000/acme/demo, repository: acme/demo}
notifications:
%s`, filepath.Join(dir, "data"), testSecret, notifications), 0o600)
}

const notifySecret = "xoxb-n0tify-s3cret"

func TestCheckConfigListsNotificationsWithoutURLs(t *testing.T) {
	cfg := notifyConfig(t, `
  - url: "slack://hook:WNA3PBYV6-F20DUQND3RQ-n0tifyS3cr3tPakR8phF0zi0@webhook"
    events: [failed]
  - webhook: {url: "https://hooks.example.test/`+notifySecret+`", secret: `+notifySecret+`}
    services: [demo]
`)
	stdout, stderr, err := cliRun([]string{"check-config", "--config", cfg}, nil)
	if err != nil {
		t.Fatalf("check-config: %v\n%s", err, stderr)
	}
	for _, want := range []string{"2 notification(s)", "[0] slack", "[failed] for all services", "[1] webhook", "for demo"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("check-config output lacks %q:\n%s", want, stdout)
		}
	}
	for _, args := range [][]string{{"check-config", "--config", cfg}, {"doctor", "--config", cfg}} {
		stdout, stderr, err := cliRun(args, nil)
		if strings.Contains(stdout+stderr+fmt.Sprint(err), "n0tify") {
			t.Errorf("%s shows a notification URL or secret:\n%s\n%s\n%v", args[0], stdout, stderr, err)
		}
	}
}

// TestUnusableNotificationURLStopsStartUp: a URL that names no shoutrrr
// service, or one the service refuses, stops check-config and serve with
// an error naming the entry, never the URL.
func TestUnusableNotificationURLStopsStartUp(t *testing.T) {
	for _, u := range []string{"nosuchservice://" + notifySecret + "@host", "slack://" + notifySecret} {
		cfg := notifyConfig(t, `  - url: "`+u+`"`+"\n")
		for _, cmd := range []string{"check-config", "serve"} {
			_, stderr, err := cliRun([]string{cmd, "--config", cfg}, nil)
			if err == nil || !strings.Contains(err.Error(), "notifications[0]") {
				t.Errorf("%s with %s: %v, want an error naming notifications[0]", cmd, strings.SplitN(u, ":", 2)[0], err)
				continue
			}
			if strings.Contains(err.Error()+stderr, "n0tify") {
				t.Errorf("%s shows the URL: %v\n%s", cmd, err, stderr)
			}
		}
	}
}

// TestNotificationEventsAgree keeps the events the configuration accepts
// and those the notifier knows the same.
func TestNotificationEventsAgree(t *testing.T) {
	var known []string
	for _, e := range notify.Events() {
		known = append(known, string(e))
	}
	if got := configs.NotificationEvents(); !slices.Equal(got, known) {
		t.Errorf("configs accepts %v, notify knows %v", got, known)
	}
}
