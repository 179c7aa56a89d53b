package notify

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/nicholas-fedor/shoutrrr/pkg/router"
	"github.com/nicholas-fedor/shoutrrr/pkg/types"
)

// Shoutrrr sends messages to one shoutrrr service URL (slack://,
// discord://, teams://, ntfy://, smtp://, generic://, ...). Such URLs
// carry tokens and passwords: no error it returns contains the URL or any
// part of it that may be secret. Sends are serialized: shoutrrr's services
// keep per-message settings (the title) in their configuration. It is
// safe for concurrent use.
type Shoutrrr struct {
	kind    string
	service types.Service
	secrets []string // parts of the URL an error must not show
	sem     chan struct{}
}

// NewShoutrrr returns the sender for a shoutrrr URL. It fails, without
// repeating the URL, when the URL names no known service or the service
// refuses it.
func NewShoutrrr(rawURL string) (*Shoutrrr, error) {
	scheme, _, ok := strings.Cut(rawURL, "://")
	if !ok || scheme == "" {
		return nil, errors.New("notification url: want a shoutrrr URL such as slack://, ntfy:// or smtp://")
	}
	kind, _, _ := strings.Cut(strings.ToLower(scheme), "+")
	r, err := router.New(nil)
	if err != nil {
		return nil, fmt.Errorf("notification url: %w", err)
	}
	svc, err := r.Locate(rawURL)
	if err != nil {
		if errors.Is(err, router.ErrUnknownService) {
			return nil, fmt.Errorf("notification url: shoutrrr knows no service %q", safeScheme(kind))
		}
		return nil, fmt.Errorf("notification url: shoutrrr cannot use this %s URL; check its form in shoutrrr's documentation of the %s service", safeScheme(kind), safeScheme(kind))
	}
	return &Shoutrrr{kind: kind, service: svc, secrets: urlSecrets(rawURL), sem: make(chan struct{}, 1)}, nil
}

// Kind returns the service's name, the URL's scheme: slack, ntfy, smtp, ...
func (s *Shoutrrr) Kind() string { return s.kind }

// Send sends m's title and text. shoutrrr's services take no context:
// when ctx ends first, Send returns and the service's own timeout ends
// the call left behind.
func (s *Shoutrrr) Send(ctx context.Context, m Message) error {
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("send %s notification: %w", s.kind, ctx.Err())
	}
	done := make(chan error, 1)
	go func() {
		defer func() { <-s.sem }()
		done <- s.service.Send(m.Text(), &types.Params{"title": m.Title()})
	}()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("send %s notification: %s", s.kind, s.redact(err.Error()))
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("send %s notification: %w", s.kind, ctx.Err())
	}
}

// redact replaces every part of the URL that may be secret in text.
func (s *Shoutrrr) redact(text string) string {
	for _, p := range s.secrets {
		text = strings.ReplaceAll(text, p, "[redacted]")
	}
	return text
}

// minSecretLen is the shortest URL part redacted from errors: shorter
// ones are too common to be secrets (and would redact ordinary words).
const minSecretLen = 4

// urlSecrets returns the parts of a shoutrrr URL that an error must not
// show, longest first: the URL itself, and the user, password, path,
// query and fragment, whole and split at punctuation (services rebuild
// their API URLs from pieces of the token: slack://hook:A-B-C becomes
// .../services/A/B/C).
func urlSecrets(rawURL string) []string {
	whole := []string{rawURL}
	var split []string
	if u, err := url.Parse(rawURL); err == nil {
		whole = append(whole, u.Redacted(), u.RawQuery)
		if u.User != nil {
			split = append(split, u.User.Username())
			if pw, ok := u.User.Password(); ok {
				split = append(split, pw)
			}
		}
		split = append(split, u.Path, u.Fragment, u.Opaque)
		if unescaped, err := url.PathUnescape(u.Path); err == nil {
			split = append(split, unescaped)
		}
		for _, vs := range u.Query() {
			split = append(split, vs...)
		}
	}
	out := whole
	for _, p := range split {
		out = append(out, p)
		out = append(out, strings.FieldsFunc(p, func(r rune) bool { return strings.ContainsRune("/:@-_.,;=&?#+ %", r) })...)
	}
	out = slices.DeleteFunc(out, func(p string) bool { return len(p) < minSecretLen })
	slices.SortFunc(out, func(a, b string) int {
		if len(a) != len(b) {
			return len(b) - len(a)
		}
		return strings.Compare(a, b)
	})
	return slices.Compact(out)
}

// safeScheme returns a scheme for an error message, or "?" when it is not
// a plain scheme (it could be something pasted by mistake, a secret).
func safeScheme(s string) string {
	if len(s) > 20 || strings.Trim(s, "abcdefghijklmnopqrstuvwxyz0123456789") != "" {
		return "?"
	}
	return s
}
