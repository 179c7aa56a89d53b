package configs

import (
	"strings"
	"testing"
	"time"
)

func TestRetentionDefaultsAndOff(t *testing.T) {
	const day = 24 * time.Hour
	tests := []struct {
		name        string
		yaml        string
		deliveries  time.Duration
		deployments int
	}{
		{"unset", "", 30 * day, 1000},
		{"null means unset", "retention: ~\n", 30 * day, 1000},
		{"zero keeps forever", "retention: {deliveries: 0, deployments: 0}\n", 0, 0},
		{"zero days", "retention: {deliveries: 0d}\n", 0, 1000},
		{"days", "retention: {deliveries: 7d, deployments: 50}\n", 7 * day, 50},
		{"days and hours", "retention: {deliveries: 3d12h}\n", 3*day + 12*time.Hour, 1000},
		{"go duration", "retention: {deliveries: 96h}\n", 4 * day, 1000},
		{"exactly the redelivery window", "retention: {deliveries: 72h}\n", 3 * day, 1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustParse(t, minimal+tt.yaml, nil)
			if got := c.Retention.Deliveries.Std(); got != tt.deliveries {
				t.Errorf("retention.deliveries = %v, want %v", got, tt.deliveries)
			}
			if got := c.Retention.Deployments; got != tt.deployments {
				t.Errorf("retention.deployments = %d, want %d", got, tt.deployments)
			}
		})
	}
}

func TestRetentionRefused(t *testing.T) {
	tests := []struct {
		name, yaml, path string
		line             int
		msg              string
	}{
		{"shorter than the redelivery window", "retention:\n  deliveries: 2d\n", "retention.deliveries", 11, "shorter than GitHub's redelivery window (3d)"},
		{"just short of it", "retention:\n  deliveries: 71h59m\n", "retention.deliveries", 11, "use at least 3d, or 0"},
		{"negative deployments", "retention:\n  deployments: -1\n", "retention.deployments", 11, "must not be negative"},
		{"not a number", "retention:\n  deployments: many\n", "retention.deployments", 11, "expected"},
		{"bare number of days", "retention:\n  deliveries: 30\n", "retention.deliveries", 11, "invalid length of time \"30\""},
		{"negative window", "retention:\n  deliveries: -3d\n", "retention.deliveries", 11, "invalid length of time"},
		{"a list", "retention:\n  deliveries: [3d]\n", "retention.deliveries", 11, "expected"},
		{"unknown key", "retention:\n  delivery: 3d\n", "retention.delivery", 11, `unknown key "delivery"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse(t, minimal+tt.yaml, nil)
			wantProblem(t, problems(t, err), tt.path, tt.line, tt.msg)
		})
	}
}

func TestParseWindow(t *testing.T) {
	const day = 24 * time.Hour
	tests := []struct {
		in   string
		want time.Duration
		err  bool
	}{
		{"0", 0, false},
		{"0d", 0, false},
		{"30d", 30 * day, false},
		{"1d30m", day + 30*time.Minute, false},
		{"90m", 90 * time.Minute, false},
		{"", 0, true},
		{"d", 0, true},
		{"1dd", 0, true},
		{"+1d", 0, true},
		{"1d-1h", 0, true},
		{"-1h", 0, true},
		{"1.5d", 0, true},
		{"999999999999d", 0, true},
		{"soon", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseWindow(tt.in)
		if tt.err != (err != nil) || (!tt.err && got.Std() != tt.want) {
			t.Errorf("ParseWindow(%q) = %v, %v; want %v, error %v", tt.in, got.Std(), err, tt.want, tt.err)
		}
		if err != nil && !strings.Contains(err.Error(), "30d") {
			t.Errorf("ParseWindow(%q) error %q does not show how to write one", tt.in, err)
		}
	}
	for d, want := range map[time.Duration]string{0: "0", 30 * day: "30d", 90 * time.Minute: "1h30m0s", 3*day + time.Hour: "3d1h0m0s"} {
		if got := Window(d).String(); got != want {
			t.Errorf("Window(%v).String() = %q, want %q", d, got, want)
		}
	}
}

// FuzzParseWindow: ParseWindow never panics, never yields a negative
// window, and reads what String writes back to the same value.
func FuzzParseWindow(f *testing.F) {
	for _, s := range []string{"0", "0d", "30d", "3d12h", "72h", "1d-1h", "+1d", "999999999999d", "1.5h", "d", "2562047h47m16.854775807s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		w, err := ParseWindow(s)
		if err != nil {
			return
		}
		if w < 0 {
			t.Fatalf("ParseWindow(%q) = %v, negative", s, w.Std())
		}
		again, err := ParseWindow(w.String())
		if err != nil || again != w {
			t.Fatalf("ParseWindow(%q) = %v, written %q, read back %v, %v", s, w.Std(), w.String(), again.Std(), err)
		}
	})
}
