package sqlite

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/deployd/deployd/deployer"
)

// The store knows a delivery id once it was received or its redelivery was
// asked for, asks are remembered once each and across a restart, and a
// delivery whose redelivery was asked for is listed as recovered.
func TestRedeliveries(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "deployd.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.RecordDelivery(ctx, delivery("received"), []deployer.Request{request("backend", "v1")}); err != nil {
		t.Fatal(err)
	}
	known := must(s.KnownDeliveries(ctx, []string{"received", "missed", "asked"}))(t)
	if !known["received"] || known["missed"] || known["asked"] {
		t.Errorf("known before any ask = %v, want only received", known)
	}
	if mark := must(s.DeliveryLogMark(ctx))(t); !mark.IsZero() {
		t.Errorf("mark of a new store = %v, want zero", mark)
	}
	for range 2 {
		if err := s.RecordRedelivery(ctx, "asked", 17); err != nil {
			t.Fatal(err)
		}
	}
	mark := time.Date(2026, 5, 1, 7, 30, 0, 0, time.UTC)
	if err := s.SetDeliveryLogMark(ctx, mark); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordRedelivery(ctx, "", 1); err == nil {
		t.Error("a redelivery without a delivery id was recorded")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	known = must(s.KnownDeliveries(ctx, []string{"received", "missed", "asked"}))(t)
	if !known["received"] || known["missed"] || !known["asked"] {
		t.Errorf("known after the ask and a restart = %v, want received and asked", known)
	}
	var n int
	if err := s.rdb.QueryRow(`SELECT count(*) FROM redeliveries`).Scan(&n); err != nil || n != 1 {
		t.Errorf("redeliveries rows = %d, %v; want 1", n, err)
	}
	if got := must(s.DeliveryLogMark(ctx))(t); !got.Equal(mark) {
		t.Errorf("mark after a restart = %v, want %v", got, mark)
	}

	asked := delivery("asked")
	asked.BodySHA256 = "" // a body of its own
	if _, err := s.RecordDelivery(ctx, asked, []deployer.Request{request("web", "v1")}); err != nil {
		t.Fatal(err)
	}
	for _, d := range must(s.Deliveries(ctx, deployer.Page{}))(t) {
		if want := d.ID == "asked"; d.Recovered != want {
			t.Errorf("delivery %s recovered = %v, want %v", d.ID, d.Recovered, want)
		}
	}
}
