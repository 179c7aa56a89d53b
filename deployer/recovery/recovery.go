// Package recovery recovers webhook deliveries that never reached deployd.
// GitHub does not retry a failed delivery, but it keeps the GitHub App's
// delivery log for three days and redelivers an entry of it on request. A
// Recoverer reads that log at start-up and every interval, back to where its
// last complete pass ended, and asks GitHub to redeliver each delivery that
// no attempt delivered and that the store has no record of: once per
// delivery id, remembered in the store.
package recovery

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/deployd/deployd/auth/github"
	"github.com/deployd/deployd/deployer"
	"github.com/rs/zerolog"
)

// Window is how long GitHub keeps a delivery it can redeliver.
const Window = 3 * 24 * time.Hour

// overlap is how far before the end of the last pass a pass reads again, for
// attempts logged out of order.
const overlap = 5 * time.Minute

// perPage is how many attempts one request to the log asks for (GitHub's
// most).
const perPage = 100

// Results counted by Config.Count.
const (
	ResultRequested = "requested" // GitHub accepted a redelivery request
	ResultFailed    = "failed"    // the request failed; asked again next pass
)

// Log is the App's webhook delivery log; *github.App satisfies it.
type Log interface {
	// HookDeliveries returns a page of the log, newest first, and the next
	// page's cursor ("" after the last).
	HookDeliveries(ctx context.Context, cursor string, perPage int) ([]github.HookDelivery, string, error)
	// Redeliver asks GitHub to deliver an attempt again.
	Redeliver(ctx context.Context, attemptID int64) error
}

// Store is what the Recoverer remembers; *sqlite.Store satisfies it.
type Store interface {
	// KnownDeliveries returns which ids were received or asked for.
	KnownDeliveries(ctx context.Context, ids []string) (map[string]bool, error)
	// RecordRedelivery remembers that id was asked for.
	RecordRedelivery(ctx context.Context, id string, attemptID int64) error
	// DeliveryLogMark and SetDeliveryLogMark keep where the log was read up to.
	DeliveryLogMark(ctx context.Context) (time.Time, error)
	SetDeliveryLogMark(ctx context.Context, t time.Time) error
}

// Config is what New needs. Log and Store are required.
type Config struct {
	Log   Log
	Store Store
	// Interval between passes; 0 turns recovery off.
	Interval time.Duration
	// Count, if set, hears of each redelivery request's result
	// (ResultRequested, ResultFailed).
	Count func(result string)
	// Clock tells the time; nil means time.Now.
	Clock  func() time.Time
	Logger zerolog.Logger
}

// Recoverer asks GitHub to redeliver missed deliveries. Its passes run one
// at a time (Run); Once is safe to call while Run runs.
type Recoverer struct {
	log      Log
	store    Store
	interval time.Duration
	count    func(string)
	clock    func() time.Time
	logger   zerolog.Logger
}

// New checks cfg and returns a Recoverer. It makes no request.
func New(cfg Config) (*Recoverer, error) {
	if cfg.Log == nil {
		return nil, errors.New("new recoverer: no delivery log")
	}
	if cfg.Store == nil {
		return nil, errors.New("new recoverer: no store")
	}
	r := &Recoverer{log: cfg.Log, store: cfg.Store, interval: cfg.Interval, count: cfg.Count,
		clock: cfg.Clock, logger: cfg.Logger.With().Str("component", "recovery").Logger()}
	if r.clock == nil {
		r.clock = time.Now
	}
	if r.count == nil {
		r.count = func(string) {}
	}
	return r, nil
}

// Run makes a pass at once and then every interval until ctx ends. A pass
// that fails is logged and made again at the next interval. It returns at
// once when the interval is 0.
func (r *Recoverer) Run(ctx context.Context) {
	if r.interval <= 0 {
		return
	}
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		asked, err := r.Once(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			r.logger.Warn().Err(err).Dur("retry_in", r.interval).Int("redeliveries", len(asked)).
				Msg("delivery recovery: the App's delivery log was not read to the end; will try again next pass")
		case err == nil:
			r.logger.Debug().Int("redeliveries", len(asked)).Msg("delivery recovery: pass done")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Once reads the delivery log back to where the last complete pass ended
// (at most Window ago) and asks GitHub to redeliver every delivery that no
// attempt delivered and the store has no record of. It returns the ids it
// asked for. Only a pass that read the log to its end and whose every
// request was accepted moves the mark on, so what failed is looked at
// again next time. Deliveries are asked for oldest first.
func (r *Recoverer) Once(ctx context.Context) ([]string, error) {
	now := r.clock()
	since := now.Add(-Window)
	mark, err := r.store.DeliveryLogMark(ctx)
	if err != nil {
		return nil, err
	}
	if m := mark.Add(-overlap); m.After(since) {
		since = m
	}

	type entry struct {
		attemptID int64
		arrived   bool
		event     string
	}
	byID := map[string]*entry{}
	var order []string // ids, newest attempt first
	var newest time.Time
	cursor := ""
	for {
		page, next, err := r.log.HookDeliveries(ctx, cursor, perPage)
		if err != nil {
			return nil, err
		}
		older := false
		for _, d := range page {
			if d.DeliveredAt.After(newest) {
				newest = d.DeliveredAt
			}
			if d.DeliveredAt.Before(since) {
				older = true
				continue
			}
			if d.GUID == "" {
				continue
			}
			e, ok := byID[d.GUID]
			if !ok {
				e = &entry{attemptID: d.ID, event: d.Event}
				byID[d.GUID] = e
				order = append(order, d.GUID)
			}
			e.arrived = e.arrived || d.Arrived()
		}
		if older || next == "" || len(page) == 0 {
			break
		}
		cursor = next
	}

	// Oldest first, so that of two pushes of one service the newer arrives
	// last and wins in the queue, as it did when they were first sent.
	var missed []string
	for _, id := range slices.Backward(order) {
		if !byID[id].arrived {
			missed = append(missed, id)
		}
	}
	known, err := r.store.KnownDeliveries(ctx, missed)
	if err != nil {
		return nil, err
	}
	var asked []string
	var failed error
	for _, id := range missed {
		if known[id] {
			continue
		}
		e := byID[id]
		log := r.logger.With().Str(deployer.KeyDeliveryID, id).Str("event", e.event).Int64("attempt_id", e.attemptID).Logger()
		if err := r.log.Redeliver(ctx, e.attemptID); err != nil {
			r.count(ResultFailed)
			log.Warn().Err(err).Msg("delivery recovery: GitHub refused to redeliver a missed delivery; will ask again next pass")
			failed = errors.Join(failed, err)
			continue
		}
		if err := r.store.RecordRedelivery(ctx, id, e.attemptID); err != nil {
			// GitHub redelivers it; the store knows it by its id once it arrives.
			log.Warn().Err(err).Msg("delivery recovery: redelivery requested but not remembered")
			failed = errors.Join(failed, err)
		}
		r.count(ResultRequested)
		log.Info().Msg("delivery recovery: asked GitHub to redeliver a delivery that never arrived")
		asked = append(asked, id)
	}
	if failed != nil {
		return asked, failed
	}
	if newest.After(mark) {
		if err := r.store.SetDeliveryLogMark(ctx, newest); err != nil {
			return asked, err
		}
	}
	return asked, nil
}
