package configs

import (
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
)

// Notification is one receiver of deployd's notifications: a shoutrrr URL
// (url or url_file) or a signed JSON webhook (webhook), exactly one.
type Notification struct {
	// URL is a shoutrrr URL: slack://, discord://, teams://, ntfy://,
	// smtp://, generic://, ... It carries tokens and passwords, so it never
	// prints; give it from a file (URLFile) or the environment (${VAR}).
	URL Secret `yaml:"url"`
	// URLFile is a file holding the shoutrrr URL (trailing newlines are
	// ignored); Parse reads it into URL. Only one of the two may be set.
	URLFile string `yaml:"url_file"`
	// Webhook is the signed generic JSON webhook.
	Webhook *NotificationWebhook `yaml:"webhook"`
	// Events the receiver hears of (NotificationEvents); default all but
	// succeeded.
	Events []string `yaml:"events"`
	// Services whose deployments the receiver hears of; default all.
	Services []string `yaml:"services"`
}

// NotificationWebhook is a generic JSON webhook whose bodies are signed
// with HMAC-SHA256 under a shared secret.
type NotificationWebhook struct {
	// URL is the absolute http(s) URL the messages are posted to.
	URL Secret `yaml:"url"`
	// Secret is the shared key of the signature; SecretFile a file holding
	// it, which Parse reads into Secret. One of the two is required.
	Secret     Secret `yaml:"secret"`
	SecretFile string `yaml:"secret_file"`
}

// NotificationEvents returns the events a notification may list, as the
// notify package names them.
func NotificationEvents() []string {
	return []string{"failed", "rolled_back", "degraded", "credential_fallback", "succeeded"}
}

// notificationPath is the YAML path of notifications[i].
func notificationPath(i int) string { return fmt.Sprintf("notifications[%d]", i) }

// readNotificationFiles reads url_file and webhook.secret_file into their
// values.
func (c *Config) readNotificationFiles() []Problem {
	var problems []Problem
	read := func(path, file, what string, into *Secret) {
		b, err := os.ReadFile(file)
		if err != nil {
			problems = append(problems, c.problem(path, fmt.Sprintf("cannot read the %s: %v", what, describeFileError(err))))
			return
		}
		*into = Secret(strings.TrimRight(string(b), "\r\n"))
	}
	for i := range c.Notifications {
		n := &c.Notifications[i]
		p := notificationPath(i)
		switch {
		case n.URLFile == "":
		case n.URL != "":
			problems = append(problems, c.problem(p+".url", "set either url or url_file, not both"))
		default:
			read(p+".url_file", n.URLFile, "notification URL", &n.URL)
		}
		if w := n.Webhook; w != nil && w.SecretFile != "" {
			if w.Secret != "" {
				problems = append(problems, c.problem(p+".webhook.secret", "set either secret or secret_file, not both"))
				continue
			}
			read(p+".webhook.secret_file", w.SecretFile, "webhook secret", &w.Secret)
		}
	}
	return problems
}

// notifications checks each notification. Messages never quote a URL:
// URLs carry secrets.
func (v *validator) notifications() {
	for i, n := range v.c.Notifications {
		p := notificationPath(i)
		shoutrrr := n.URL != "" || n.URLFile != ""
		switch {
		case shoutrrr && n.Webhook != nil:
			v.add(p, "set either url (or url_file) or webhook, not both")
		case !shoutrrr && n.Webhook == nil && !v.unread(p+".url", p+".url_file", p+".webhook"):
			v.add(p, "set url (a shoutrrr URL such as slack://... or ntfy://...), url_file or webhook")
		case n.URL != "":
			if scheme, _, ok := strings.Cut(n.URL.Reveal(), "://"); !ok || scheme == "" || strings.ContainsAny(scheme, "/@:?# ") {
				where := p + ".url"
				if n.URLFile != "" {
					where = p + ".url_file"
				}
				v.add(where, "not a shoutrrr URL: want SERVICE://..., such as slack://, discord://, teams://, ntfy:// or smtp:// (the value is not shown: it may hold a secret)")
			}
		}
		if w := n.Webhook; w != nil {
			if u, err := url.Parse(w.URL.Reveal()); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				v.add(p+".webhook.url", "required: an absolute http(s) URL (the value is not shown: it may hold a secret)")
			}
			switch {
			case w.Secret != "":
			case w.SecretFile != "":
				v.add(p+".webhook.secret_file", "the file %s is empty or was not read: the webhook's messages must be signed", w.SecretFile)
			case !v.unread(p + ".webhook.secret_file"):
				v.add(p+".webhook.secret", "required: set secret or secret_file, the key that signs the messages")
			}
		}
		seen := map[string]bool{}
		for j, e := range n.Events {
			ep := fmt.Sprintf("%s.events[%d]", p, j)
			switch {
			case !slices.Contains(NotificationEvents(), e):
				v.add(ep, "unknown event %q (one of %s)", e, strings.Join(NotificationEvents(), ", "))
			case seen[e]:
				v.add(ep, "event %q listed twice", e)
			}
			seen[e] = true
		}
		for j, s := range n.Services {
			if _, ok := v.c.Services[s]; !ok {
				v.add(fmt.Sprintf("%s.services[%d]", p, j), "unknown service %q", s)
			}
		}
	}
}
