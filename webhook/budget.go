package webhook

import (
	"sync"
	"weak"

	"golang.org/x/sync/semaphore"
)

// Defaults of the body budget (see HandlerConfig).
const (
	// DefaultBodyBudget is what bodies over smallBodyBytes may hold in
	// total while they are read: one delivery of MaxBodyBytes fits.
	DefaultBodyBudget = 32 << 20
	// DefaultSmallBodyReserve is what bodies of at most smallBodyBytes may
	// hold in total, apart from DefaultBodyBudget: hundreds of typical
	// (10 KB) deliveries at once.
	DefaultSmallBodyReserve = 8 << 20
)

// smallBodyBytes is the largest body that the small-body reserve takes.
const smallBodyBytes = preallocBodyBytes

// bodyBudget bounds the memory that the bodies being read hold in total,
// before their signature is checked, in two pools: a reserve for small
// bodies, so that large ones in flight never crowd out a typical delivery,
// and a budget for large ones. A small body that does not fit in the
// reserve draws on the large budget. Safe for concurrent use.
type bodyBudget struct {
	small, large *semaphore.Weighted
	largeLimit   int64
}

func newBodyBudget(small, large int64) *bodyBudget {
	return &bodyBudget{small: semaphore.NewWeighted(small), large: semaphore.NewWeighted(large), largeLimit: large}
}

// lease is what one body holds of a bodyBudget: held bytes of one pool.
// Its zero value with b set holds nothing. A lease belongs to one request
// and is not safe for concurrent use.
type lease struct {
	b    *bodyBudget
	from *semaphore.Weighted // the pool held draws on; nil when held is 0
	held int64
}

// grow makes the lease cover n bytes, never waiting: it reports false when
// the budget cannot spare them, the lease then holding what it held
// before. A lease that outgrows smallBodyBytes, or that the small reserve
// cannot cover, moves to the large pool.
func (l *lease) grow(n int64) bool {
	if n <= l.held {
		return true
	}
	if n <= smallBodyBytes && l.from != l.b.large && l.b.small.TryAcquire(n-l.held) {
		l.from, l.held = l.b.small, n
		return true
	}
	if l.from == l.b.large {
		if !l.b.large.TryAcquire(n - l.held) {
			return false
		}
		l.held = n
		return true
	}
	if !l.b.large.TryAcquire(n) {
		return false
	}
	l.release()
	l.from, l.held = l.b.large, n
	return true
}

// release gives back everything the lease holds.
func (l *lease) release() {
	if l.from != nil {
		l.from.Release(l.held)
		l.from, l.held = nil, 0
	}
}

// Buffers of large bodies (over smallBodyBytes) come in size classes,
// powers of two from twice smallBodyBytes, the last one MaxBodyBytes: a
// large body's lease and buffer are the size of its class, so that what a
// body holds of the budget is the memory it holds, and buffers can be
// recycled from one large body to the next. Otherwise every large body
// would leave its buffer to the garbage collector, which lets garbage grow
// as large as what is in use before it collects.
const largeClasses = 7 // 512 KiB ... 16 MiB, 25 MiB

// largeClass is the class of a buffer of at least n bytes, the last class
// for n over MaxBodyBytes.
func largeClass(n int) int {
	c := 0
	for c < largeClasses-1 && largeClassSize(c) < n {
		c++
	}
	return c
}

// largeClassSize is the buffer size of class c.
func largeClassSize(c int) int { return min((2*smallBodyBytes)<<c, MaxBodyBytes) }

// leaseSize is what a body of n bytes holds of the budget: n for a small
// body, its class's size for a large one.
func leaseSize(n int64) int64 {
	if n <= smallBodyBytes {
		return n
	}
	return int64(largeClassSize(largeClass(int(n))))
}

// largeBuffers keeps, for each class, the buffer of the large body that
// ended last, weakly: the next large body of the class reuses it, unless
// the garbage collector has taken it meanwhile. So while large bodies keep
// coming they rarely leave garbage, and a spare buffer neither counts as
// live memory for the collector's pacing nor stops it from taking the
// buffer when they stop. (A sync.Pool holds its buffers strongly, and per
// processor, where a body served on another processor may not find them.)
// Safe for concurrent use.
type largeBuffers struct {
	mu    sync.Mutex
	spare [largeClasses]weak.Pointer[[]byte]
}

// get returns an empty buffer of n's class, the spare one if it is still
// there.
func (lb *largeBuffers) get(n int) []byte {
	c := largeClass(n)
	lb.mu.Lock()
	w := lb.spare[c]
	lb.spare[c] = weak.Pointer[[]byte]{}
	lb.mu.Unlock()
	if b := w.Value(); b != nil {
		return (*b)[:0]
	}
	return make([]byte, 0, largeClassSize(c))
}

// put keeps b, a buffer from get that its body is done with, as the spare
// of its class.
func (lb *largeBuffers) put(b []byte) {
	c := largeClass(cap(b))
	if largeClassSize(c) != cap(b) {
		return // not from get
	}
	spare := b[:0]
	lb.mu.Lock()
	lb.spare[c] = weak.Make(&spare)
	lb.mu.Unlock()
}
