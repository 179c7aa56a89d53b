package recovery_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/deployd/deployd/auth/github"
	"github.com/deployd/deployd/deployer/recovery"
	"github.com/rs/zerolog"
)

var now = time.Date(2026, 5, 10, 12, 0, 0, 0, time.UTC)

// fakeLog is a delivery log, newest first, served two attempts a page.
type fakeLog struct {
	attempts []github.HookDelivery
	refuse   map[int64]bool // Redeliver fails for these attempt ids
	asked    []int64
	reads    int
}

func (l *fakeLog) HookDeliveries(_ context.Context, cursor string, perPage int) ([]github.HookDelivery, string, error) {
	l.reads++
	start, _ := strconv.Atoi(cursor)
	end := min(start+2, len(l.attempts))
	next := ""
	if end < len(l.attempts) {
		next = strconv.Itoa(end)
	}
	return l.attempts[start:end], next, nil
}

func (l *fakeLog) Redeliver(_ context.Context, id int64) error {
	l.asked = append(l.asked, id)
	if l.refuse[id] {
		return errors.New("refused")
	}
	return nil
}

type fakeStore struct {
	received map[string]bool
	asked    map[string]int64
	mark     time.Time
}

func (s *fakeStore) KnownDeliveries(_ context.Context, ids []string) (map[string]bool, error) {
	k := map[string]bool{}
	for _, id := range ids {
		_, asked := s.asked[id]
		k[id] = s.received[id] || asked
	}
	return k, nil
}

func (s *fakeStore) RecordRedelivery(_ context.Context, id string, attempt int64) error {
	s.asked[id] = attempt
	return nil
}

func (s *fakeStore) DeliveryLogMark(context.Context) (time.Time, error)      { return s.mark, nil }
func (s *fakeStore) SetDeliveryLogMark(_ context.Context, t time.Time) error { s.mark = t; return nil }

func attempt(id int64, guid string, ago time.Duration, status int) github.HookDelivery {
	return github.HookDelivery{ID: id, GUID: guid, DeliveredAt: now.Add(-ago), StatusCode: status, Event: "registry_package"}
}

func TestOnce(t *testing.T) {
	log := &fakeLog{attempts: []github.HookDelivery{
		attempt(7, "retried", 1*time.Minute, 202), // a later attempt of a failed one arrived
		attempt(6, "missed", 2*time.Minute, 0),
		attempt(5, "refused", 3*time.Minute, 503),
		attempt(4, "received", 4*time.Minute, 500), // deployd recorded it though GitHub saw a failure
		attempt(3, "retried", 5*time.Minute, 0),
		attempt(2, "ok", 6*time.Minute, 202),
		attempt(12, "old-a", 10*time.Hour, 202),
		attempt(11, "old-b", 11*time.Hour, 202),
		attempt(10, "old-c", 12*time.Hour, 202),
		attempt(9, "old-d", 13*time.Hour, 202),
		attempt(1, "too-old", 73*time.Hour, 0), // past GitHub's redelivery window
	}, refuse: map[int64]bool{5: true}}
	store := &fakeStore{received: map[string]bool{"received": true}, asked: map[string]int64{}}
	var counts []string
	r, err := recovery.New(recovery.Config{Log: log, Store: store, Interval: time.Minute,
		Count: func(res string) { counts = append(counts, res) }, Clock: func() time.Time { return now }, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}

	asked, err := r.Once(context.Background())
	if err == nil {
		t.Error("a pass with a refused redelivery reported no error")
	}
	if !slices.Equal(asked, []string{"missed"}) || !slices.Equal(log.asked, []int64{5, 6}) {
		t.Errorf("asked %v (attempts %v), want the refused one (5) and missed (6), oldest first", asked, log.asked)
	}
	if !slices.Equal(counts, []string{recovery.ResultFailed, recovery.ResultRequested}) {
		t.Errorf("counted %v, want failed, requested", counts)
	}
	if !store.mark.IsZero() {
		t.Errorf("mark moved to %v after a pass with a failure", store.mark)
	}

	// The next pass asks again only for the refused one, then moves the mark.
	delete(log.refuse, 5)
	log.asked = nil
	if asked, err := r.Once(context.Background()); err != nil || !slices.Equal(asked, []string{"refused"}) || !slices.Equal(log.asked, []int64{5}) {
		t.Errorf("second pass asked %v (attempts %v), %v; want refused (5) alone", asked, log.asked, err)
	}
	if !store.mark.Equal(now.Add(-time.Minute)) {
		t.Errorf("mark = %v, want the newest attempt's time %v", store.mark, now.Add(-time.Minute))
	}

	// With the mark set, a pass reads only back to it (less the overlap).
	log.attempts = append([]github.HookDelivery{attempt(8, "new", 0, 0)}, log.attempts...)
	log.asked, log.reads = nil, 0
	if asked, err := r.Once(context.Background()); err != nil || !slices.Equal(asked, []string{"new"}) {
		t.Errorf("third pass asked %v, %v; want new", asked, err)
	}
	if log.reads != 4 {
		t.Errorf("third pass read %d of 6 pages, want 4 (to the first attempt older than the mark less 5m)", log.reads)
	}
}
