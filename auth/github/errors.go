package github

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	gogithub "github.com/google/go-github/v62/github"
)

// ErrorKind classifies a failed GitHub call so that callers (the pipeline,
// doctor, the status page) can branch on it and show the right fix.
type ErrorKind string

// The kinds of Error.
const (
	// KindBadJWT: GitHub answered 401 to the App's JWT. The App ID or key is
	// wrong, or this host's clock is off.
	KindBadJWT ErrorKind = "bad_jwt"
	// KindNotInstalled: the App is not installed where it was asked to act
	// (no installation for the repository, unknown installation id, or a
	// repository outside the installation).
	KindNotInstalled ErrorKind = "not_installed"
	// KindPermission: the installation lacks a permission that was asked for
	// (Packages read).
	KindPermission ErrorKind = "missing_permission"
	// KindRateLimited: GitHub's rate limit is exhausted until RateLimitReset.
	KindRateLimited ErrorKind = "rate_limited"
	// KindUnreachable: GitHub could not be reached or answered 5xx.
	KindUnreachable ErrorKind = "unreachable"
	// KindOther: any other error answer from GitHub.
	KindOther ErrorKind = "github_error"
)

// Error is a failed GitHub API call explained in plain words: Message
// says what went wrong, Hint says how to fix it. Neither ever contains a
// token or key. Err is the underlying go-github or network error.
type Error struct {
	Kind ErrorKind
	// Op is the call that failed, e.g. "GET /app".
	Op string
	// Status is the HTTP status GitHub answered, 0 if none.
	Status  int
	Message string
	Hint    string
	// ClockOffset is GitHub's clock minus this host's, from the Date header
	// of a 401 answer; 0 when unknown.
	ClockOffset time.Duration
	// RateLimitReset is when the exhausted rate limit resets (KindRateLimited).
	RateLimitReset time.Time
	Err            error
}

// Error returns the message and the hint.
func (e *Error) Error() string {
	if e.Hint == "" {
		return e.Message
	}
	return e.Message + "; " + e.Hint
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// clockSkewLimit is the clock offset beyond which a rejected JWT is blamed
// on this host's clock.
const clockSkewLimit = 30 * time.Second

// call names a GitHub API call for error messages.
type call struct {
	op           string // "GET /app"
	appID        int64
	installation int64  // 0 if not about one installation
	repository   string // "owner/repo" for the installation lookup
	repositories []string
	permissions  Permissions
}

// classify turns an error from go-github into a *Error. It returns
// ctx.Err() wrapped when the caller gave up. now is this host's clock when the
// answer arrived.
func classify(c call, err error, now time.Time) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("%s: %w", c.op, err)
	}
	ge := &Error{Op: c.op, Err: err}

	var rle *gogithub.RateLimitError
	var abuse *gogithub.AbuseRateLimitError
	var er *gogithub.ErrorResponse
	switch {
	case errors.As(err, &rle):
		ge.Status = statusOf(rle.Response)
		ge.RateLimitReset = rle.Rate.Reset.Time
		rateLimited(ge, "primary")
	case errors.As(err, &abuse):
		ge.Status = statusOf(abuse.Response)
		if abuse.RetryAfter != nil {
			ge.RateLimitReset = now.Add(*abuse.RetryAfter)
		}
		rateLimited(ge, "secondary")
	case errors.As(err, &er) && er.Response != nil:
		ge.Status = er.Response.StatusCode
		explainStatus(ge, c, er, now)
	case errors.Is(err, context.DeadlineExceeded):
		ge.Kind = KindUnreachable
		ge.Message = fmt.Sprintf("GitHub did not answer %s in time", c.op)
		ge.Hint = "check this host's network, DNS and proxy settings and github.api_url; githubstatus.com shows GitHub outages"
	default:
		ge.Kind = KindUnreachable
		ge.Message = fmt.Sprintf("cannot reach GitHub for %s: %v", c.op, err)
		ge.Hint = "check this host's network, DNS and proxy settings and github.api_url"
	}
	return ge
}

func statusOf(r *http.Response) int {
	if r == nil {
		return 0
	}
	return r.StatusCode
}

func rateLimited(ge *Error, which string) {
	ge.Kind = KindRateLimited
	ge.Message = fmt.Sprintf("GitHub's %s rate limit is exhausted (%s)", which, ge.Op)
	if !ge.RateLimitReset.IsZero() {
		ge.Message += fmt.Sprintf(" until %s", ge.RateLimitReset.UTC().Format(time.RFC3339))
	}
	ge.Hint = "wait until the reset; deployd reuses cached tokens meanwhile"
}

// explainStatus fills in a Error from an HTTP error answer.
func explainStatus(ge *Error, c call, er *gogithub.ErrorResponse, now time.Time) {
	r := er.Response
	msg := strings.TrimSpace(er.Message)
	answer := strconv.Itoa(r.StatusCode)
	if msg != "" {
		answer += " " + msg
	}
	lower := strings.ToLower(msg)
	switch {
	case r.StatusCode == http.StatusUnauthorized:
		ge.Kind = KindBadJWT
		ge.Message = fmt.Sprintf("GitHub rejected the JWT of App %d (%s: %s)", c.appID, c.op, answer)
		if off, ok := clockOffset(r, now); ok {
			ge.ClockOffset = off
			if off > clockSkewLimit || off < -clockSkewLimit {
				dir := "behind"
				if off < 0 {
					dir = "ahead of"
				}
				ge.Hint = fmt.Sprintf("this host's clock is %s %s GitHub's (from the Date header); fix time synchronisation (chrony, systemd-timesyncd)", abs(off).Round(time.Second), dir)
				return
			}
		}
		ge.Hint = fmt.Sprintf("check that github.app.id (%d) is the App's ID and that the private key file holds a current key of that App (App settings, Private keys)", c.appID)

	case r.StatusCode == http.StatusTooManyRequests ||
		(r.StatusCode == http.StatusForbidden && (r.Header.Get("X-RateLimit-Remaining") == "0" || strings.Contains(lower, "rate limit"))):
		ge.RateLimitReset = rateLimitReset(r, now)
		rateLimited(ge, "primary")
		if strings.Contains(lower, "secondary") {
			rateLimited(ge, "secondary")
		}

	case r.StatusCode == http.StatusNotFound:
		ge.Kind = KindNotInstalled
		switch {
		case c.repository != "":
			ge.Message = fmt.Sprintf("GitHub App %d is not installed on %s (%s: %s)", c.appID, c.repository, c.op, answer)
			ge.Hint = fmt.Sprintf("install the App on %s, or on its owner with access to that repository (App settings, Install App)", c.repository)
		case c.installation != 0:
			ge.Message = fmt.Sprintf("installation %d of GitHub App %d was not found (%s: %s)", c.installation, c.appID, c.op, answer)
			ge.Hint = "check github.app.installation_id, or whether the App was uninstalled and installed again (the id changes)"
		default:
			ge.Kind = KindOther
			ge.Message = fmt.Sprintf("GitHub answered %s to %s", answer, c.op)
			ge.Hint = "check github.api_url (GitHub Enterprise: https://HOST/api/v3)"
		}

	case r.StatusCode == http.StatusForbidden || r.StatusCode == http.StatusUnprocessableEntity:
		if r.StatusCode == http.StatusUnprocessableEntity && strings.Contains(lower, "repositor") {
			ge.Kind = KindNotInstalled
			ge.Message = fmt.Sprintf("installation %d of GitHub App %d cannot access repository %s (%s: %s)",
				c.installation, c.appID, strings.Join(c.repositories, ", "), c.op, answer)
			ge.Hint = "add the repository to the installation's repository access (organization or user settings, GitHub Apps, Configure)"
			return
		}
		ge.Kind = KindPermission
		ge.Message = fmt.Sprintf("installation %d of GitHub App %d was refused %s (%s: %s)",
			c.installation, c.appID, c.permissions, c.op, answer)
		ge.Hint = fmt.Sprintf("in the App's settings (Permissions & events) grant %s, then accept the new permissions on the installation", c.permissions.settings())

	case r.StatusCode >= 500:
		ge.Kind = KindUnreachable
		ge.Message = fmt.Sprintf("GitHub is failing: %s answered %s", c.op, answer)
		ge.Hint = "GitHub or a proxy in front of it is having trouble; githubstatus.com shows GitHub outages"

	default:
		ge.Kind = KindOther
		ge.Message = fmt.Sprintf("GitHub answered %s to %s", answer, c.op)
	}
}

// settings names permissions as the App's settings page does:
// "Packages: Read-only".
func (p Permissions) settings() string {
	names := slices.Sorted(maps.Keys(p))
	parts := make([]string, len(names))
	for i, n := range names {
		level := map[string]string{"read": "Read-only", "write": "Read and write", "admin": "Admin"}[p[n]]
		if level == "" {
			level = p[n]
		}
		title := strings.ReplaceAll(n, "_", " ")
		if title != "" {
			title = strings.ToUpper(title[:1]) + title[1:]
		}
		parts[i] = title + ": " + level
	}
	return strings.Join(parts, ", ")
}

// clockOffset returns GitHub's clock minus this host's, from the Date header.
func clockOffset(r *http.Response, now time.Time) (time.Duration, bool) {
	d := r.Header.Get("Date")
	if d == "" {
		return 0, false
	}
	t, err := http.ParseTime(d)
	if err != nil {
		return 0, false
	}
	return t.Sub(now), true
}

// rateLimitReset reads when a rate limit resets from X-RateLimit-Reset (Unix
// seconds) or Retry-After (seconds).
func rateLimitReset(r *http.Response, now time.Time) time.Time {
	if s := r.Header.Get("X-RateLimit-Reset"); s != "" {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return time.Unix(n, 0)
		}
	}
	if s := r.Header.Get("Retry-After"); s != "" {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return now.Add(time.Duration(n) * time.Second)
		}
	}
	return time.Time{}
}

func abs(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}
