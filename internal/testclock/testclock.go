// Package testclock is a clock for tests that moves only when told to.
package testclock

import (
	"sync"
	"time"
)

// Clock is a settable clock, safe for concurrent use. Pass its Now method
// wherever code takes a func() time.Time.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// New returns a Clock that reads t until it is moved.
func New(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Add moves the clock by d.
func (c *Clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
