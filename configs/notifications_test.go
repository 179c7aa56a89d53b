package configs

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestNotifications(t *testing.T) {
	dir := t.TempDir()
	urlFile := filepath.Join(dir, "slack-url")
	if err := os.WriteFile(urlFile, []byte("slack://hook:a-b-c@webhook\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	secretFile := filepath.Join(dir, "notify-secret")
	if err := os.WriteFile(secretFile, []byte("sign-key\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := mustParse(t, minimal+`
notifications:
  - url_file: `+urlFile+`
    events: [failed, degraded]
    services: [backend]
  - url: ${NTFY_URL}
  - webhook: {url: "https://hooks.example.test/d", secret_file: `+secretFile+`}
    events: [succeeded]
`, map[string]string{"NTFY_URL": "ntfy://ntfy.example.test/topic"})
	ns := c.Notifications
	if len(ns) != 3 {
		t.Fatalf("notifications: %d, want 3", len(ns))
	}
	if ns[0].URL.Reveal() != "slack://hook:a-b-c@webhook" || !slices.Equal(ns[0].Events, []string{"failed", "degraded"}) || !slices.Equal(ns[0].Services, []string{"backend"}) {
		t.Errorf("first: url from file %q, events %v, services %v", ns[0].URL.Reveal(), ns[0].Events, ns[0].Services)
	}
	if ns[1].URL.Reveal() != "ntfy://ntfy.example.test/topic" || len(ns[1].Events) != 0 {
		t.Errorf("second: url from the environment %q, events %v (want none: the default)", ns[1].URL.Reveal(), ns[1].Events)
	}
	if w := ns[2].Webhook; w == nil || w.URL.Reveal() != "https://hooks.example.test/d" || w.Secret.Reveal() != "sign-key" {
		t.Errorf("third: webhook %+v", w)
	}
}

func TestNotificationProblems(t *testing.T) {
	_, err := parse(t, minimal+`notifications:
  - events: [failed]
  - url: "slack//no-scheme"
  - url: "slack://x"
    webhook: {url: "https://h/x", secret: k}
  - webhook: {url: "ftp://h/x"}
  - url_file: /nonexistent/notify-url
  - url: "ntfy://h/t"
    events: [failed, exploded, failed]
    services: [backend, nosuch]
  - url: "ntfy://h/t"
    url_file: /nonexistent/notify-url
`, nil)
	ps := problems(t, err)
	// minimal ends at line 9; the list starts on line 10.
	wantProblem(t, ps, "notifications[0]", 11, "set url")
	wantProblem(t, ps, "notifications[1].url", 12, "not a shoutrrr URL")
	wantProblem(t, ps, "notifications[2]", 13, "not both")
	wantProblem(t, ps, "notifications[3].webhook.url", 15, "absolute http(s) URL")
	wantProblem(t, ps, "notifications[3].webhook.secret", 15, "required")
	wantProblem(t, ps, "notifications[4].url_file", 16, "cannot read the notification URL")
	wantProblem(t, ps, "notifications[5].events[1]", 18, `unknown event "exploded"`)
	wantProblem(t, ps, "notifications[5].events[2]", 18, "listed twice")
	wantProblem(t, ps, "notifications[5].services[1]", 19, `unknown service "nosuch"`)
	wantProblem(t, ps, "notifications[6].url", 20, "not both")
	for _, p := range ps {
		if p.Path == "notifications[4]" {
			t.Errorf("an unreadable url_file is also reported as missing: %v", p)
		}
	}
}
