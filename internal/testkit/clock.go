package testkit

import (
	"sync"
	"time"
)

// Clock is a fake clock for a component's Now: it moves only when advanced.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a Clock set to now.
func NewClock() *Clock { return &Clock{t: time.Now()} }

// Now is the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock on by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}
