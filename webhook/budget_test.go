package webhook

import (
	"math/rand/v2"
	"runtime/debug"
	"sync"
	"testing"

	"golang.org/x/sync/semaphore"
)

const (
	testSmallReserve = 1 << 20
	testLargeBudget  = DefaultBodyBudget
)

// wantUsed checks that exactly used of the pool's limit is taken.
func wantUsed(t *testing.T, name string, s *semaphore.Weighted, limit, used int64) {
	t.Helper()
	if !s.TryAcquire(limit - used) {
		t.Errorf("%s: more than %d of %d bytes taken", name, used, limit)
		return
	}
	more := s.TryAcquire(1)
	if more {
		s.Release(1)
	}
	s.Release(limit - used)
	if more {
		t.Errorf("%s: less than %d of %d bytes taken", name, used, limit)
	}
}

func TestLease(t *testing.T) {
	b := newBodyBudget(testSmallReserve, testLargeBudget)
	used := func(small, large int64) {
		t.Helper()
		wantUsed(t, "small reserve", b.small, testSmallReserve, small)
		wantUsed(t, "large budget", b.large, testLargeBudget, large)
	}

	// A small body grows within the small reserve, then moves to the
	// large budget once it outgrows smallBodyBytes, giving the small
	// reserve back.
	a := lease{b: b}
	for _, n := range []int64{10 << 10, 200 << 10, smallBodyBytes, 100} {
		if !a.grow(n) {
			t.Fatalf("grow(%d) refused", n)
		}
	}
	used(smallBodyBytes, 0)
	if !a.grow(smallBodyBytes + 1) {
		t.Fatal("grow past smallBodyBytes refused")
	}
	used(0, smallBodyBytes+1)
	if !a.grow(MaxBodyBytes) {
		t.Fatal("grow(MaxBodyBytes) refused")
	}
	used(0, MaxBodyBytes)

	// The large budget cannot take a second large body...
	c := lease{b: b}
	if c.grow(testLargeBudget - MaxBodyBytes + 1) {
		t.Fatal("a second large body fit beyond the budget")
	}
	used(0, MaxBodyBytes)
	// ...but small bodies still fit, in their own reserve.
	var smalls []*lease
	for range testSmallReserve / smallBodyBytes {
		s := &lease{b: b}
		if !s.grow(smallBodyBytes) {
			t.Fatal("a small body was refused while only the large budget was taken")
		}
		smalls = append(smalls, s)
	}
	used(testSmallReserve, MaxBodyBytes)
	// Once the small reserve is full too, a small body overflows into
	// what the large budget has left, and beyond that is refused.
	rest := int64(testLargeBudget - MaxBodyBytes)
	for rest >= smallBodyBytes {
		s := &lease{b: b}
		if !s.grow(smallBodyBytes) {
			t.Fatalf("small body refused with %d bytes left in the large budget", rest)
		}
		smalls = append(smalls, s)
		rest -= smallBodyBytes
	}
	used(testSmallReserve, testLargeBudget-rest)
	if s := (lease{b: b}); s.grow(rest + 1) {
		t.Fatal("a small body fit although both pools were full")
	}

	// A refused grow keeps what the lease held.
	if a.grow(MaxBodyBytes + rest + 1) {
		t.Fatal("a lease grew beyond the large budget")
	}
	used(testSmallReserve, testLargeBudget-rest)

	// Release gives everything back, once.
	a.release()
	a.release()
	for _, s := range smalls {
		s.release()
	}
	used(0, 0)
}

// TestLeaseConcurrent grows and releases leases from many goroutines and
// checks that everything is given back. Run it with -race.
func TestLeaseConcurrent(t *testing.T) {
	b := newBodyBudget(testSmallReserve, testLargeBudget)
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for range 500 {
				l := lease{b: b}
				for n := int64(1 << 10); n <= MaxBodyBytes && l.grow(n); n += 1 + rng.Int64N(2*n) {
					if l.held != n {
						t.Errorf("held %d after grow(%d)", l.held, n)
						return
					}
				}
				l.release()
			}
		}()
	}
	wg.Wait()
	wantUsed(t, "small reserve", b.small, testSmallReserve, 0)
	wantUsed(t, "large budget", b.large, testLargeBudget, 0)
}

func TestLeaseSize(t *testing.T) {
	for _, tt := range []struct{ n, want int64 }{
		{0, 0},
		{10 << 10, 10 << 10},
		{smallBodyBytes, smallBodyBytes},
		{smallBodyBytes + 1, 512 << 10},
		{512 << 10, 512 << 10},
		{3 << 20, 4 << 20},
		{16 << 20, 16 << 20},
		{16<<20 + 1, MaxBodyBytes},
		{MaxBodyBytes, MaxBodyBytes},
	} {
		if got := leaseSize(tt.n); got != tt.want {
			t.Errorf("leaseSize(%d) = %d, want %d", tt.n, got, tt.want)
		}
	}
	for c := range largeClasses {
		if n := largeClassSize(c); largeClass(n) != c || (c > 0 && largeClass(largeClassSize(c-1)+1) != c) {
			t.Errorf("class %d (%d bytes) does not round trip", c, n)
		}
	}
	if largeClassSize(largeClasses-1) != MaxBodyBytes {
		t.Errorf("the last class holds %d bytes, want MaxBodyBytes", largeClassSize(largeClasses-1))
	}
}

func TestLargeBuffers(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(-1)) // a spare lives until a collection
	var lb largeBuffers
	a := lb.get(3 << 20)
	if len(a) != 0 || cap(a) != 4<<20 {
		t.Fatalf("get(3 MiB): len %d cap %d, want an empty 4 MiB buffer", len(a), cap(a))
	}
	a = append(a, "body"...)
	lb.put(a)
	if b := lb.get(1 << 20); cap(b) != 1<<20 {
		t.Errorf("get(1 MiB) after a 4 MiB put: cap %d, want a 1 MiB buffer", cap(b))
	}
	b := lb.get(4 << 20)
	if len(b) != 0 || &b[:1][0] != &a[0] {
		t.Error("get did not return the spare of its class")
	}
	if c := lb.get(4 << 20); &c[:1][0] == &a[0] {
		t.Error("the spare was handed out twice")
	}
	lb.put(make([]byte, 3<<20)) // not a class size: not kept
	lb.put(make([]byte, 0, MaxBodyBytes+1))
	if c := lb.get(4 << 20); cap(c) != 4<<20 {
		t.Errorf("get after putting a foreign buffer: cap %d", cap(c))
	}
}
