package oidc

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// UsedTokens remembers the ids (jti) of the tokens Verify accepted, each
// until its token expires, so that a token is accepted once. deployd keeps
// them in its store, so that a restart does not forget them.
type UsedTokens interface {
	// UseTokenID records id, of a token valid until expiresAt, as used,
	// and reports whether it was the first use: false when id was
	// recorded before. It must be atomic: of concurrent calls with the
	// same id, one at most reports true. An error means the use could not
	// be checked; the token is then refused.
	UseTokenID(ctx context.Context, id string, expiresAt time.Time) (bool, error)
}

// replayCache is the UsedTokens of a Verifier given none: ids in memory,
// lost when the process ends. It holds at most max ids. It is safe for
// concurrent use.
type replayCache struct {
	now  func() time.Time
	mu   sync.Mutex
	max  int
	seen map[string]time.Time // jti → exp
}

func newReplayCache(max int, now func() time.Time) *replayCache {
	return &replayCache{now: now, max: max, seen: make(map[string]time.Time)}
}

// UseTokenID records id, of a token valid until exp, as used. It fails
// with ErrUnavailable when the memory is full of ids of tokens that have
// not expired: forgetting one early would let its token be replayed.
func (c *replayCache) UseTokenID(_ context.Context, id string, exp time.Time) (bool, error) {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if until, ok := c.seen[id]; ok && !now.After(until) {
		return false, nil
	}
	if len(c.seen) >= c.max {
		for k, until := range c.seen {
			if now.After(until) {
				delete(c.seen, k)
			}
		}
		if len(c.seen) >= c.max {
			return false, fmt.Errorf("%w: %d tokens are in use and not expired yet, the most deployd remembers", ErrUnavailable, c.max)
		}
	}
	c.seen[id] = exp
	return true, nil
}
