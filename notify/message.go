package notify

import (
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"strings"
	"time"

	"github.com/deployd/deployd/deployer"
)

// Bounds of the failing step's lines a message carries.
const (
	maxLines     = 10
	maxLineBytes = 300
	maxLogBytes  = 2048
)

// Message is one notification about one deployment, as the signed
// webhook's JSON body carries it and as Text renders it for chat and
// e-mail.
type Message struct {
	// ID identifies the notification (X-Deployd-Delivery): the same on
	// every attempt, so that a receiver can refuse a replay.
	ID string `json:"id"`
	// Event is what the notification is about.
	Event Event `json:"event"`
	// Time is when the notification was made (UTC).
	Time         time.Time `json:"time"`
	Service      string    `json:"service"`
	DeploymentID int64     `json:"deployment_id"`
	// State is the deployment's final state.
	State string `json:"state"`
	Tag   string `json:"tag,omitempty"`
	// Digest is the full digest; Text shows its first 12 hex digits.
	Digest string `json:"digest,omitempty"`
	// Trigger says who or what asked for the deployment, in words.
	Trigger    string `json:"trigger"`
	ErrorClass string `json:"error_class,omitempty"`
	Error      string `json:"error,omitempty"`
	Hint       string `json:"hint,omitempty"`
	// Step and Lines are the failing step's name and the last lines of its
	// log (at most 10, 2 KiB).
	Step  string   `json:"step,omitempty"`
	Lines []string `json:"lines,omitempty"`
	// URL is the deployment on the status page; empty without public_url.
	URL string `json:"url,omitempty"`
}

// newMessage builds the message about d for event.
func newMessage(d deployer.Deployment, event Event, publicURL string, now time.Time) Message {
	m := Message{
		ID: newID(), Event: event, Time: now.UTC().Truncate(time.Second),
		Service: d.Service, DeploymentID: d.ID, State: string(d.State),
		Tag: d.Tag, Digest: d.Digest, Trigger: triggerText(d.Trigger),
		ErrorClass: d.ErrorClass, Error: d.Error, Hint: d.Hint,
	}
	if s, ok := failingStep(d, event); ok {
		m.Step, m.Lines = s.Name, lastLines(s.Message, maxLines, maxLineBytes, maxLogBytes)
	}
	if publicURL != "" {
		m.URL = publicURL + "/#deployment-" + strconv.FormatInt(d.ID, 10)
	}
	return m
}

// newID returns a random notification id, 32 hex digits.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}

// failingStep returns the step a message about d quotes: the first failed
// step that is not a retried one (the cause), for a failure; the refused
// credential's step for a credential fallback.
func failingStep(d deployer.Deployment, event Event) (deployer.Step, bool) {
	var found deployer.Step
	ok := false
	for _, s := range d.Steps {
		if s.Outcome != "failed" {
			continue
		}
		if event == EventCredentialFallback {
			return s, true // the first refusal is the fallback's cause
		}
		found, ok = s, true // the last failure is what ended the deployment
	}
	if event == EventSucceeded {
		return deployer.Step{}, false
	}
	return found, ok
}

// triggerText says in words what asked for a deployment.
func triggerText(t deployer.Trigger) string {
	switch t.Kind {
	case deployer.TriggerWebhook:
		s := "webhook"
		if t.Event != "" {
			s += " " + t.Event
		}
		if t.RunNumber != 0 {
			s += " run #" + strconv.Itoa(t.RunNumber)
		}
		if t.DeliveryID != "" {
			s += " (delivery " + t.DeliveryID + ")"
		}
		return s
	case deployer.TriggerManual, deployer.TriggerRollback:
		if t.Subject != "" {
			return string(t.Kind) + " by " + t.Subject
		}
	}
	return string(t.Kind)
}

// lastLines returns the last n lines of text that are not blank, each cut
// to lineBytes and all together at most totalBytes (the newest lines are
// kept). Cuts fall on UTF-8 boundaries.
func lastLines(text string, n, lineBytes, totalBytes int) []string {
	var out []string
	total := 0
	lines := strings.Split(strings.ReplaceAll(text, "\r\n", "\n"), "\n")
	for i := len(lines) - 1; i >= 0 && len(out) < n; i-- {
		l := strings.TrimRight(lines[i], " \t\r")
		if strings.TrimSpace(l) == "" {
			continue
		}
		l = cut(l, lineBytes)
		if total+len(l) > totalBytes {
			break
		}
		total += len(l)
		out = append(out, l)
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// cut shortens s to at most max bytes, on a UTF-8 boundary, marking the cut.
func cut(s string, max int) string {
	if len(s) <= max {
		return s
	}
	const mark = "…"
	end := max - len(mark)
	for end > 0 && !utf8Start(s[end]) {
		end--
	}
	return s[:end] + mark
}

func utf8Start(b byte) bool { return b&0xC0 != 0x80 }

// Title is a one-line summary: "deployd: backend failed (health)".
func (m Message) Title() string {
	var what string
	switch m.Event {
	case EventFailed:
		what = "deploy failed"
	case EventRolledBack:
		what = "deploy rolled back"
	case EventDegraded:
		what = "deploy failed, service degraded"
	case EventCredentialFallback:
		what = "deployed with a fallback credential"
	case EventSucceeded:
		what = "deployed"
	default:
		what = string(m.Event)
	}
	t := "deployd: " + m.Service + " " + what
	if m.ErrorClass != "" && m.Event != EventCredentialFallback {
		t += " (" + m.ErrorClass + ")"
	}
	return t
}

// Text renders the message as plain text for chat and e-mail.
func (m Message) Text() string {
	var b strings.Builder
	ref := m.Tag
	if m.Digest != "" {
		if ref != "" {
			ref += " "
		}
		ref += "@" + deployer.ShortDigest(m.Digest)
	}
	b.WriteString("Deployment #" + strconv.FormatInt(m.DeploymentID, 10) + " of " + m.Service)
	if ref != "" {
		b.WriteString(" (" + ref + ")")
	}
	b.WriteString(": " + m.State + "\n")
	b.WriteString("Trigger: " + m.Trigger + "\n")
	if m.ErrorClass != "" {
		b.WriteString("Failure class: " + m.ErrorClass + "\n")
	}
	if m.Error != "" {
		b.WriteString("Error: " + cut(m.Error, maxLogBytes) + "\n")
	}
	if m.Hint != "" {
		b.WriteString("Hint: " + cut(m.Hint, maxLogBytes) + "\n")
	}
	if len(m.Lines) > 0 {
		b.WriteString("Last lines of step " + m.Step + ":\n")
		for _, l := range m.Lines {
			b.WriteString("  " + l + "\n")
		}
	}
	if m.URL != "" {
		b.WriteString(m.URL + "\n")
	}
	return strings.TrimRight(b.String(), "\n")
}
