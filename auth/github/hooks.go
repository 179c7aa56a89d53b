package github

import (
	"context"
	"errors"
	"fmt"
	"time"

	gogithub "github.com/google/go-github/v62/github"
)

// HookDelivery is one attempt in the App's webhook delivery log: an original
// delivery or a redelivery of it (both carry the same GUID).
type HookDelivery struct {
	// ID is the attempt's id in the log, what Redeliver takes.
	ID int64
	// GUID is the delivery's X-GitHub-Delivery.
	GUID string
	// DeliveredAt is when GitHub made the attempt.
	DeliveredAt time.Time
	// Redelivery is true for an attempt that repeats an earlier one.
	Redelivery bool
	// StatusCode is the receiver's HTTP status; 0 when none answered.
	StatusCode int
	// Event and Action name the webhook event.
	Event, Action string
}

// Arrived reports whether the receiver answered the attempt 2xx.
func (d HookDelivery) Arrived() bool { return d.StatusCode >= 200 && d.StatusCode < 300 }

// HookDeliveries reads one page of the App's webhook delivery log
// (GET /app/hook/deliveries), newest first, starting at cursor ("" for the
// newest). It returns the page and the cursor of the next one, "" after the
// last. A failed call is a *Error (or the context's error).
func (a *App) HookDeliveries(ctx context.Context, cursor string, perPage int) ([]HookDelivery, string, error) {
	ds, resp, err := a.gh.Apps.ListHookDeliveries(ctx, &gogithub.ListCursorOptions{PerPage: perPage, Cursor: cursor})
	if err != nil {
		return nil, "", classify(call{op: "GET /app/hook/deliveries", appID: a.id}, err, a.clock())
	}
	out := make([]HookDelivery, 0, len(ds))
	for _, d := range ds {
		out = append(out, HookDelivery{
			ID:          d.GetID(),
			GUID:        d.GetGUID(),
			DeliveredAt: d.GetDeliveredAt().Time,
			Redelivery:  d.GetRedelivery(),
			StatusCode:  d.GetStatusCode(),
			Event:       d.GetEvent(),
			Action:      d.GetAction(),
		})
	}
	return out, resp.Cursor, nil
}

// Redeliver asks GitHub to deliver the attempt id of the App's delivery log
// again (POST /app/hook/deliveries/{id}/attempts), which GitHub accepts with
// 202 and carries out on its own. A failed call is a *Error (or the
// context's error).
func (a *App) Redeliver(ctx context.Context, id int64) error {
	_, _, err := a.gh.Apps.RedeliverHookDelivery(ctx, id)
	var accepted *gogithub.AcceptedError
	if err == nil || errors.As(err, &accepted) {
		return nil
	}
	return classify(call{op: fmt.Sprintf("POST /app/hook/deliveries/%d/attempts", id), appID: a.id}, err, a.clock())
}
