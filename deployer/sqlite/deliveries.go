package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/deployd/deployd/deployer"
)

// RecordDelivery commits a webhook delivery and queues its requests in one
// transaction, which is synced to disk before RecordDelivery returns.
//
// A delivery whose ID or BodySHA256 matches a delivery recorded before that
// was not itself a duplicate (empty values never match) is stored with result
// "duplicate" and a reason naming the original, queues nothing and yields
// Receipt{Duplicate: true}. Otherwise the delivery is stored with d.Result
// and d.Reason, except that when reqs is not empty its result is "queued"
// and the queued deployments are linked to it. A zero d.ReceivedAt is
// replaced by the store's clock. A request with no Trigger.Kind is a webhook
// request, and a webhook request's empty Trigger.DeliveryID and
// Trigger.Event are taken from d.
//
// It fails without writing anything when a request is invalid or, with no
// requests, d.Result is not ignored or rejected (only the store finds
// duplicates); it returns ctx's error if ctx ends before the write started.
// Safe for concurrent use: concurrent calls share one commit.
func (s *Store) RecordDelivery(ctx context.Context, d deployer.Delivery, reqs []deployer.Request) (deployer.Receipt, error) {
	if len(reqs) == 0 && !validResult(d.Result) {
		return deployer.Receipt{}, fmt.Errorf("record delivery %s: no requests and result %q is not ignored or rejected", d.ID, d.Result)
	}
	if d.Event == "" {
		return deployer.Receipt{}, fmt.Errorf("record delivery %s: no event", d.ID)
	}
	for i, r := range reqs {
		if err := r.Validate(); err != nil {
			return deployer.Receipt{}, fmt.Errorf("record delivery %s: request %d: %w", d.ID, i, err)
		}
	}

	var rcpt deployer.Receipt
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		rcpt, _, err = s.recordDelivery(ctx, tx, d, reqs)
		return err
	})
	if err != nil {
		return deployer.Receipt{}, fmt.Errorf("record delivery %s: %w", d.ID, err)
	}
	return rcpt, nil
}

// recordDelivery is RecordDelivery's transaction, after the checks; seq
// is the delivery's, 0 for a duplicate.
func (s *Store) recordDelivery(ctx context.Context, tx *sql.Tx, d deployer.Delivery, reqs []deployer.Request) (rcpt deployer.Receipt, seq int64, err error) {
	var (
		sameID   bool
		origSeq  int64
		origID   string
		result   = d.Result
		reason   = d.Reason
		now      = s.now()
		received = d.ReceivedAt
	)
	if len(reqs) > 0 {
		result = deployer.ResultQueued
	}
	if received.IsZero() {
		received = now
	}
	// Insert it as new; the partial unique indexes refuse a repeat.
	res, err := tx.StmtContext(ctx, s.hot.insertNewDelivery).ExecContext(ctx,
		nullString(d.ID), d.Event, d.Action, nullString(d.BodySHA256),
		formatTime(received), result, reason)
	if err != nil {
		return rcpt, 0, err
	}
	if n, err := res.RowsAffected(); err != nil {
		return rcpt, 0, err
	} else if n == 0 {
		// A repeat: record it as a duplicate naming the original.
		if err := tx.StmtContext(ctx, s.hot.duplicate).QueryRowContext(ctx,
			nullString(d.ID), nullString(d.BodySHA256)).Scan(&sameID, &origSeq, &origID); err != nil {
			return rcpt, 0, fmt.Errorf("find the delivery this one repeats: %w", err)
		}
		rcpt.Duplicate = true
		_, err := tx.StmtContext(ctx, s.hot.insertDelivery).ExecContext(ctx,
			nullString(d.ID), d.Event, d.Action, nullString(d.BodySHA256), formatTime(received),
			deployer.ResultDuplicate, duplicateReason(sameID, origSeq, origID))
		return rcpt, 0, err
	}
	seq, err = res.LastInsertId()
	if err != nil {
		return rcpt, 0, err
	}
	for _, r := range reqs {
		if r.Trigger.Kind == "" {
			r.Trigger.Kind = deployer.TriggerWebhook
		}
		if r.Trigger.Kind == deployer.TriggerWebhook {
			if r.Trigger.DeliveryID == "" {
				r.Trigger.DeliveryID = d.ID
			}
			if r.Trigger.Event == "" {
				r.Trigger.Event = d.Event
			}
		}
		dep, err := s.queue(ctx, tx, r, seq, now)
		if err != nil {
			return rcpt, 0, err
		}
		rcpt.Deployments = append(rcpt.Deployments, dep.ID)
	}
	return rcpt, seq, nil
}

// validResult reports whether a caller may give r as the result of a
// delivery that queues nothing. "duplicate" is not one: the store finds
// duplicates, and a row marked so never counts as an original.
func validResult(r string) bool {
	switch r {
	case deployer.ResultIgnored, deployer.ResultRejected:
		return true
	}
	return false
}

// duplicateReason names the delivery that a duplicate repeats: origSeq, with
// the delivery id origID, matched by id when sameID and by body otherwise.
func duplicateReason(sameID bool, origSeq int64, origID string) string {
	switch {
	case sameID:
		return fmt.Sprintf("delivery id seen before (seq %d)", origSeq)
	case origID != "":
		return fmt.Sprintf("same body as delivery %s (seq %d)", origID, origSeq)
	default:
		return fmt.Sprintf("same body as the delivery of seq %d", origSeq)
	}
}

// Deliveries lists recorded deliveries newest first (by Seq), with the ids of
// the deployments each queued. p.Before is a Seq. Safe for concurrent use.
func (s *Store) Deliveries(ctx context.Context, p deployer.Page) ([]deployer.Delivery, error) {
	limit, before := clampPage(p)
	q := `SELECT d.seq, COALESCE(d.delivery_id, ''), d.event, d.action, COALESCE(d.body_sha256, ''),
			d.received_at, d.result, d.reason,
			(SELECT group_concat(id) FROM deployments WHERE delivery_seq = d.seq),
			EXISTS (SELECT 1 FROM redeliveries r WHERE r.delivery_id = d.delivery_id)
		FROM deliveries d`
	args := []any{}
	if before != 0 {
		q += " WHERE d.seq < ?"
		args = append(args, before)
	}
	q += " ORDER BY d.seq DESC LIMIT ?"
	args = append(args, limit)

	rows, err := s.rdb.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list deliveries: %w", err)
	}
	defer rows.Close()
	out := []deployer.Delivery{}
	for rows.Next() {
		var (
			d        deployer.Delivery
			received string
			ids      sql.NullString
		)
		if err := rows.Scan(&d.Seq, &d.ID, &d.Event, &d.Action, &d.BodySHA256,
			&received, &d.Result, &d.Reason, &ids, &d.Recovered); err != nil {
			return nil, fmt.Errorf("list deliveries: %w", err)
		}
		if d.ReceivedAt, err = parseTime(received); err != nil {
			return nil, fmt.Errorf("list deliveries: %w", err)
		}
		if d.DeploymentIDs, err = parseIDs(ids.String); err != nil {
			return nil, fmt.Errorf("list deliveries: %w", err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list deliveries: %w", err)
	}
	return out, nil
}

// parseIDs reads group_concat's comma-separated ids into ascending order.
func parseIDs(s string) ([]int64, error) {
	if s == "" {
		return nil, nil
	}
	parts := strings.Split(s, ",")
	ids := make([]int64, 0, len(parts))
	for _, p := range parts {
		id, err := strconv.ParseInt(p, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("parse deployment id %q: %w", p, err)
		}
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids, nil
}
