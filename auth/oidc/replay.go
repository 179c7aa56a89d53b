package oidc

import (
	"fmt"
	"sync"
	"time"
)

// replayCache remembers the ids of used tokens until they expire, so that
// a token is accepted once. It holds at most max ids. It is safe for
// concurrent use.
type replayCache struct {
	mu   sync.Mutex
	max  int
	seen map[string]time.Time // jti → exp
}

func newReplayCache(max int) *replayCache {
	return &replayCache{max: max, seen: make(map[string]time.Time)}
}

// use records id, of a token valid until exp, as used at now. It fails
// with ErrInvalid when id is remembered, and with ErrUnavailable when the
// memory is full of ids of tokens that have not expired: forgetting one
// early would let its token be replayed.
func (c *replayCache) use(id string, exp, now time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if until, ok := c.seen[id]; ok && !now.After(until) {
		return fmt.Errorf("%w: already used (each token is accepted once; request a new one for each call)", ErrInvalid)
	}
	if len(c.seen) >= c.max {
		for k, until := range c.seen {
			if now.After(until) {
				delete(c.seen, k)
			}
		}
		if len(c.seen) >= c.max {
			return fmt.Errorf("%w: %d tokens are in use and not expired yet, the most deployd remembers", ErrUnavailable, c.max)
		}
	}
	c.seen[id] = exp
	return nil
}
