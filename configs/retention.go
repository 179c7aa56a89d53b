package configs

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Retention says how long the store keeps webhook deliveries and how many
// deployments of each service it keeps. Whatever duplicate detection,
// delivery recovery or a rollback still needs is kept regardless; see the
// README's Retention section.
type Retention struct {
	// Deliveries is how long webhook deliveries are kept (default 30d; 0
	// keeps them forever). At least MinDeliveryRetention: duplicate
	// detection and delivery recovery need the deliveries of GitHub's
	// redelivery window.
	Deliveries Window `yaml:"deliveries"`
	// Deployments is how many deployments of each service are kept, the
	// newest (default 1000; 0 keeps them all).
	Deployments int `yaml:"deployments"`
}

// Retention defaults and limits.
const (
	DefaultDeliveryRetention   = 30 * 24 * time.Hour
	DefaultDeploymentRetention = 1000
	// MinDeliveryRetention is GitHub's redelivery window: a delivery can
	// be redelivered (and must be recognised as a duplicate) and is read
	// back from the App's delivery log for that long.
	MinDeliveryRetention = 3 * 24 * time.Hour
)

// Window is a length of time written in days ("30d") or as a Go duration
// ("720h", "3d12h"); "0" is zero.
type Window time.Duration

// ParseWindow reads a Window: an optional whole number of days with the
// unit d, followed by an optional Go duration ("30d", "3d12h", "90m"), or
// "0". Negative values are refused.
func ParseWindow(s string) (Window, error) {
	bad := fmt.Errorf("invalid length of time %q: write days such as 30d, or a Go duration such as 72h", s)
	if s == "0" {
		return 0, nil
	}
	var days int64
	rest := s
	if i := strings.IndexByte(s, 'd'); i >= 0 {
		n, err := strconv.ParseInt(s[:i], 10, 64)
		// Whole days only, without a sign, and few enough to fit.
		if err != nil || s[0] < '0' || s[0] > '9' || n > int64(maxDuration/(24*time.Hour)) {
			return 0, bad
		}
		days, rest = n, s[i+1:]
	}
	if days == 0 && rest == "" && s != "0d" {
		return 0, bad
	}
	var extra time.Duration
	if rest != "" {
		d, err := time.ParseDuration(rest)
		if err != nil || d < 0 || rest[0] == '+' || rest[0] == '-' {
			return 0, bad
		}
		extra = d
	}
	total := time.Duration(days) * 24 * time.Hour
	if total > maxDuration-extra {
		return 0, bad
	}
	return Window(total + extra), nil
}

const maxDuration = time.Duration(1<<63 - 1)

// UnmarshalYAML reads a Window with ParseWindow.
func (w *Window) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("expected a length of time such as 30d or 72h")
	}
	v, err := ParseWindow(n.Value)
	if err != nil {
		return err
	}
	*w = v
	return nil
}

// MarshalYAML writes the window the way ParseWindow reads it.
func (w Window) MarshalYAML() (any, error) { return w.String(), nil }

// String writes the window in days when it is whole days ("30d"), else as
// days followed by a Go duration ("3d12h0m0s"), "0" when zero.
func (w Window) String() string {
	d := time.Duration(w)
	const day = 24 * time.Hour
	switch {
	case d == 0:
		return "0"
	case d < day:
		return d.String()
	case d%day == 0:
		return strconv.FormatInt(int64(d/day), 10) + "d"
	}
	return strconv.FormatInt(int64(d/day), 10) + "d" + (d % day).String()
}

// Std returns w as a time.Duration.
func (w Window) Std() time.Duration { return time.Duration(w) }

// retention checks the retention keys.
func (v *validator) retention() {
	r := v.c.Retention
	if d := r.Deliveries.Std(); d < 0 {
		v.add("retention.deliveries", "must not be negative (0 keeps deliveries forever)")
	} else if d != 0 && d < MinDeliveryRetention {
		v.add("retention.deliveries", "%s is shorter than GitHub's redelivery window (3d): a redelivered delivery would no longer be recognised as a duplicate, and delivery recovery would ask for it again; use at least 3d, or 0 to keep deliveries forever", r.Deliveries)
	}
	if r.Deployments < 0 {
		v.add("retention.deployments", "must not be negative (0 keeps every deployment)")
	}
}

// applyRetentionDefaults fills the retention keys the file did not set.
func (c *Config) applyRetentionDefaults(isSet func(path string) bool) {
	if c.Retention.Deliveries == 0 && !isSet("retention.deliveries") {
		c.Retention.Deliveries = Window(DefaultDeliveryRetention)
	}
	if c.Retention.Deployments == 0 && !isSet("retention.deployments") {
		c.Retention.Deployments = DefaultDeploymentRetention
	}
}
