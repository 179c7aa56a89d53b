package oidc

import (
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"
)

// minKeyFetchInterval is the least time between two fetches of the
// issuer's keys. go-oidc fetches them again for every token whose key id
// it has not cached, and anyone who can reach deployd can send such
// tokens: without a bound, each would make deployd ask GitHub.
const minKeyFetchInterval = 10 * time.Second

// discoveryPath is the path of the issuer's discovery document.
const discoveryPath = "/.well-known/openid-configuration"

// errKeysFetchedRecently refuses a key fetch within minKeyFetchInterval of
// the previous one.
var errKeysFetchedRecently = errors.New("the issuer's keys were fetched less than 10s ago")

// keyFetchLimiter is the transport to the issuer: it lets a request for
// anything but the discovery document (that is, for the keys) through at
// most once per minKeyFetchInterval, and refuses the others at once. The
// keys already cached stay in use: go-oidc keeps them when a fetch fails.
// It is safe for concurrent use.
type keyFetchLimiter struct {
	next http.RoundTripper
	now  func() time.Time

	mu   sync.Mutex
	last time.Time // of the last key fetch let through; zero before the first
}

// RoundTrip implements http.RoundTripper.
func (l *keyFetchLimiter) RoundTrip(req *http.Request) (*http.Response, error) {
	if !strings.HasSuffix(req.URL.Path, discoveryPath) {
		l.mu.Lock()
		now := l.now()
		if !l.last.IsZero() && now.Sub(l.last) < minKeyFetchInterval {
			l.mu.Unlock()
			return nil, errKeysFetchedRecently
		}
		l.last = now
		l.mu.Unlock()
	}
	return l.next.RoundTrip(req)
}

// limitKeyFetches returns a copy of c whose transport is limited by a
// keyFetchLimiter.
func limitKeyFetches(c *http.Client, now func() time.Time) *http.Client {
	next := c.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	limited := *c
	limited.Transport = &keyFetchLimiter{next: next, now: now}
	return &limited
}
