package sqlite

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/deployd/deployd/deployer"
)

// This file holds behaviours every deployer.Store must show; it only uses the
// interface, so another implementation can run the same table.

func TestStoreContract(t *testing.T) {
	runStoreContract(t, func(t *testing.T) deployer.Store {
		s, _ := openTestStore(t)
		return s
	})
}

const (
	digestA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	digestB = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	digestC = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
)

// delivery returns a delivery whose id and body hash derive from name.
func delivery(name string) deployer.Delivery {
	sum := sha256.Sum256([]byte("body of " + name))
	return deployer.Delivery{
		ID:         name,
		Event:      "registry_package",
		Action:     "published",
		BodySHA256: hex.EncodeToString(sum[:]),
		Result:     deployer.ResultIgnored,
		Reason:     "no service matches",
	}
}

func request(service, tag string) deployer.Request {
	return deployer.Request{Service: service, Tag: tag, Trigger: deployer.Trigger{Kind: deployer.TriggerWebhook}}
}

func manual(service, tag string) deployer.Request {
	return deployer.Request{Service: service, Tag: tag, Trigger: deployer.Trigger{Kind: deployer.TriggerManual, Subject: "ci"}}
}

func runStoreContract(t *testing.T, open func(t *testing.T) deployer.Store) {
	ctx := context.Background()
	tests := []struct {
		name string
		run  func(t *testing.T, s deployer.Store)
	}{
		{"queued delivery is listed with its deployments", func(t *testing.T, s deployer.Store) {
			d := delivery("d1")
			d.Result = "" // the store decides: queued
			r := request("backend", "latest")
			r.Trigger = deployer.Trigger{InstallationID: 42}
			rc := must(s.RecordDelivery(ctx, d, []deployer.Request{r, request("web", "latest")}))(t)
			if rc.Duplicate || len(rc.Deployments) != 2 {
				t.Fatalf("receipt = %+v, want two deployments", rc)
			}
			ds := must(s.Deliveries(ctx, deployer.Page{}))(t)
			if len(ds) != 1 {
				t.Fatalf("deliveries = %+v, want 1", ds)
			}
			got := ds[0]
			if got.ID != "d1" || got.Event != d.Event || got.Action != d.Action || got.BodySHA256 != d.BodySHA256 ||
				got.Result != deployer.ResultQueued || !slices.Equal(got.DeploymentIDs, rc.Deployments) || got.Seq == 0 {
				t.Errorf("delivery = %+v, want queued with %v", got, rc.Deployments)
			}
			dep := must(s.Deployment(ctx, rc.Deployments[0]))(t)
			want := deployer.Trigger{Kind: deployer.TriggerWebhook, DeliveryID: "d1", Event: d.Event, InstallationID: 42}
			if dep.Service != "backend" || dep.Tag != "latest" || dep.State != deployer.StateQueued || dep.Trigger != want {
				t.Errorf("deployment = %+v, want queued backend:latest from %+v", dep, want)
			}
			if dep.QueuedAt.IsZero() || dep.StartedAt != nil || dep.FinishedAt != nil {
				t.Errorf("times = %v %v %v, want only queued_at", dep.QueuedAt, dep.StartedAt, dep.FinishedAt)
			}
		}},
		{"ignored delivery is stored with its reason", func(t *testing.T, s deployer.Store) {
			rc := must(s.RecordDelivery(ctx, delivery("d1"), nil))(t)
			if rc.Duplicate || len(rc.Deployments) != 0 {
				t.Fatalf("receipt = %+v, want empty", rc)
			}
			ds := must(s.Deliveries(ctx, deployer.Page{}))(t)
			if len(ds) != 1 || ds[0].Result != deployer.ResultIgnored || ds[0].Reason != "no service matches" ||
				ds[0].DeploymentIDs != nil || ds[0].ReceivedAt.IsZero() {
				t.Errorf("deliveries = %+v, want one ignored with reason", ds)
			}
		}},
		{"duplicate delivery id is recorded as a duplicate and queues nothing", func(t *testing.T, s deployer.Store) {
			orig := must(s.RecordDelivery(ctx, delivery("d1"), []deployer.Request{request("backend", "latest")}))(t)
			again := delivery("other body")
			again.ID = "d1"
			again.Action = "updated"
			rc := must(s.RecordDelivery(ctx, again, []deployer.Request{request("web", "latest")}))(t)
			if !rc.Duplicate || rc.Deployments != nil || rc.Ignored != "" {
				t.Fatalf("receipt = %+v, want duplicate only", rc)
			}
			assertCounts(t, s, 2, 1)
			ds := must(s.Deliveries(ctx, deployer.Page{}))(t)
			dup, first := ds[0], ds[1]
			if dup.ID != "d1" || dup.Result != deployer.ResultDuplicate || dup.BodySHA256 != again.BodySHA256 ||
				dup.Action != "updated" || dup.DeploymentIDs != nil || dup.ReceivedAt.IsZero() ||
				!strings.Contains(dup.Reason, "delivery id") || !strings.Contains(dup.Reason, fmt.Sprint(first.Seq)) {
				t.Errorf("newest delivery = %+v, want the duplicate naming seq %d", dup, first.Seq)
			}
			if dup.Seq <= first.Seq || first.Result != deployer.ResultQueued || !slices.Equal(first.DeploymentIDs, orig.Deployments) {
				t.Errorf("original = %+v, want queued with %v below the duplicate's seq %d", first, orig.Deployments, dup.Seq)
			}
			if got := must(s.QueuedServices(ctx))(t); !slices.Equal(got, []string{"backend"}) {
				t.Errorf("QueuedServices = %v, want [backend]", got)
			}
		}},
		{"duplicate body is recorded as a duplicate of the original", func(t *testing.T, s deployer.Store) {
			orig := must(s.RecordDelivery(ctx, delivery("d1"), []deployer.Request{request("backend", "latest")}))(t)
			// A captured body replayed under new ids, twice: both are
			// duplicates of d1, the first replay counts for nothing.
			for _, id := range []string{"d2", "d3"} {
				replay := delivery("d1")
				replay.ID = id
				rc := must(s.RecordDelivery(ctx, replay, []deployer.Request{request("backend", "latest")}))(t)
				if !rc.Duplicate || rc.Deployments != nil {
					t.Fatalf("receipt for %s = %+v, want duplicate", id, rc)
				}
			}
			assertCounts(t, s, 3, 1)
			ds := must(s.Deliveries(ctx, deployer.Page{}))(t)
			for i, id := range []string{"d3", "d2"} {
				if d := ds[i]; d.ID != id || d.Result != deployer.ResultDuplicate || d.DeploymentIDs != nil ||
					!strings.Contains(d.Reason, "same body as delivery d1") {
					t.Errorf("delivery %d = %+v, want %s, a duplicate of d1", i, d, id)
				}
			}
			if ds[0].Seq <= ds[1].Seq || ds[1].Seq <= ds[2].Seq || ds[2].ID != "d1" ||
				!slices.Equal(ds[2].DeploymentIDs, orig.Deployments) {
				t.Errorf("deliveries = %+v, want d3, d2, d1 newest first, d1 with the deployment", ds)
			}
			// The first deployment was not superseded by the replays.
			wantStates(t, s, map[int64]deployer.State{orig.Deployments[0]: deployer.StateQueued})
		}},
		{"a duplicate counts for nothing in later checks", func(t *testing.T, s deployer.Store) {
			must(s.RecordDelivery(ctx, delivery("d1"), nil))(t)
			replay := delivery("d1")
			replay.ID = "d2"
			if rc := must(s.RecordDelivery(ctx, replay, nil))(t); !rc.Duplicate {
				t.Fatalf("replay: %+v, want duplicate", rc)
			}
			// d2 was only seen as a duplicate: with a body of its own it
			// is a new delivery, as if the replay had never come.
			fresh := delivery("d2")
			rc := must(s.RecordDelivery(ctx, fresh, []deployer.Request{request("backend", "v1")}))(t)
			if rc.Duplicate || len(rc.Deployments) != 1 {
				t.Fatalf("d2 with its own body: %+v, want one deployment", rc)
			}
			// Now it is an original, and its id and body are taken.
			if rc := must(s.RecordDelivery(ctx, fresh, []deployer.Request{request("backend", "v2")}))(t); !rc.Duplicate {
				t.Errorf("d2 again: %+v, want duplicate", rc)
			}
			assertCounts(t, s, 4, 1)
			ds := must(s.Deliveries(ctx, deployer.Page{}))(t)
			if ds[0].Reason != fmt.Sprintf("delivery id seen before (seq %d)", ds[1].Seq) {
				t.Errorf("reason = %q, want the seq of the original d2 (%d)", ds[0].Reason, ds[1].Seq)
			}
		}},
		{"empty id and body hash never count as duplicates", func(t *testing.T, s deployer.Store) {
			for range 2 {
				d := delivery("x")
				d.ID, d.BodySHA256 = "", ""
				if rc := must(s.RecordDelivery(ctx, d, nil))(t); rc.Duplicate {
					t.Fatal("an empty id or hash was taken for a duplicate")
				}
			}
			assertCounts(t, s, 2, 0)
		}},
		{"invalid request records nothing", func(t *testing.T, s deployer.Store) {
			_, err := s.RecordDelivery(ctx, delivery("d1"), []deployer.Request{request("backend", "latest"), request("web", "bad tag!")})
			if !errors.Is(err, deployer.ErrBadTag) {
				t.Fatalf("err = %v, want ErrBadTag", err)
			}
			// Only the store decides that a delivery is a duplicate.
			for _, result := range []string{"", deployer.ResultQueued, deployer.ResultDuplicate, "whatever"} {
				d := delivery("d1")
				d.Result = result
				if _, err := s.RecordDelivery(ctx, d, nil); err == nil {
					t.Errorf("result %q without requests accepted", result)
				}
			}
			if _, err := s.Enqueue(ctx, deployer.Request{Tag: "latest"}); !errors.Is(err, deployer.ErrNoService) {
				t.Fatalf("err = %v, want ErrNoService", err)
			}
			assertCounts(t, s, 0, 0)
			// The id is still free.
			if rc := must(s.RecordDelivery(ctx, delivery("d1"), nil))(t); rc.Duplicate {
				t.Error("a refused delivery was remembered")
			}
		}},
		{"queuing supersedes queued deployments of the same service only", func(t *testing.T, s deployer.Store) {
			first := must(s.RecordDelivery(ctx, delivery("d1"), []deployer.Request{request("backend", "v1"), request("web", "v1")}))(t)
			second := must(s.RecordDelivery(ctx, delivery("d2"), []deployer.Request{request("backend", "v2")}))(t)
			manualDep := must(s.Enqueue(ctx, manual("web", "v3")))(t)
			wantStates(t, s, map[int64]deployer.State{
				first.Deployments[0]:  deployer.StateSuperseded,
				first.Deployments[1]:  deployer.StateSuperseded,
				second.Deployments[0]: deployer.StateQueued,
				manualDep.ID:          deployer.StateQueued,
			})
			old := must(s.Deployment(ctx, first.Deployments[0]))(t)
			if old.FinishedAt == nil {
				t.Error("superseded deployment has no finished_at")
			}
			if manualDep.State != deployer.StateQueued || manualDep.Trigger.Subject != "ci" || manualDep.ID <= second.Deployments[0] {
				t.Errorf("enqueued = %+v", manualDep)
			}
		}},
		{"queuing does not supersede running deployments", func(t *testing.T, s deployer.Store) {
			a := must(s.Enqueue(ctx, manual("backend", "v1")))(t)
			claimed, ok := must2(s.ClaimNext(ctx, "backend"))(t)
			if !ok || claimed.ID != a.ID {
				t.Fatalf("claimed %+v, %v", claimed, ok)
			}
			b := must(s.Enqueue(ctx, manual("backend", "v2")))(t)
			wantStates(t, s, map[int64]deployer.State{a.ID: deployer.StateRunning, b.ID: deployer.StateQueued})
		}},
		{"ClaimNext takes the newest and supersedes the rest", func(t *testing.T, s deployer.Store) {
			// Two requests in one delivery for the same service: the second wins.
			rc := must(s.RecordDelivery(ctx, delivery("d1"), []deployer.Request{request("backend", "v1"), request("backend", "v2")}))(t)
			other := must(s.Enqueue(ctx, manual("web", "v1")))(t)
			d, ok := must2(s.ClaimNext(ctx, "backend"))(t)
			if !ok || d.ID != rc.Deployments[1] || d.Tag != "v2" || d.State != deployer.StateRunning || d.StartedAt == nil {
				t.Fatalf("claimed %+v, %v; want v2 running", d, ok)
			}
			wantStates(t, s, map[int64]deployer.State{
				rc.Deployments[0]: deployer.StateSuperseded,
				rc.Deployments[1]: deployer.StateRunning,
				other.ID:          deployer.StateQueued,
			})
			if _, ok := must2(s.ClaimNext(ctx, "backend"))(t); ok {
				t.Error("claimed twice")
			}
			if _, ok := must2(s.ClaimNext(ctx, "nothing"))(t); ok {
				t.Error("claimed for a service with nothing queued")
			}
			got := must(s.Deployment(ctx, d.ID))(t)
			if got.StartedAt == nil || !got.StartedAt.Equal(*d.StartedAt) {
				t.Errorf("stored started_at %v, returned %v", got.StartedAt, d.StartedAt)
			}
		}},
		{"step log keeps order and fields", func(t *testing.T, s deployer.Store) {
			d := must(s.Enqueue(ctx, manual("backend", "v1")))(t)
			t0 := time.Date(2026, 3, 1, 10, 0, 0, 123456789, time.UTC)
			steps := []deployer.Step{
				{Name: "resolve", Started: t0, Duration: 1500 * time.Microsecond, Outcome: "ok", Message: "latest → " + digestA},
				{Name: "pull", Started: t0.Add(2 * time.Millisecond), Duration: 3 * time.Second, Outcome: "failed", Message: "denied"},
			}
			for _, st := range steps {
				if err := s.AppendStep(ctx, d.ID, st); err != nil {
					t.Fatal(err)
				}
			}
			got := must(s.Deployment(ctx, d.ID))(t)
			if !slices.EqualFunc(got.Steps, steps, func(a, b deployer.Step) bool {
				return a.Name == b.Name && a.Started.Equal(b.Started) && a.Duration == b.Duration &&
					a.Outcome == b.Outcome && a.Message == b.Message
			}) {
				t.Errorf("steps = %+v, want %+v", got.Steps, steps)
			}
			if err := s.AppendStep(ctx, d.ID+100, steps[0]); !errors.Is(err, deployer.ErrNotFound) {
				t.Errorf("AppendStep to unknown deployment: err = %v, want ErrNotFound", err)
			}
		}},
		{"a request's note starts the step log", func(t *testing.T, s deployer.Store) {
			const note = "the payload's digest is unusable; the tag latest is resolved at the registry instead"
			r := request("backend", "latest")
			r.Note = note
			rc := must(s.RecordDelivery(ctx, delivery("d1"), []deployer.Request{r, request("web", "latest")}))(t)
			m := manual("api", "v1")
			m.Note = note
			queued := must(s.Enqueue(ctx, m))(t)
			for _, id := range []int64{rc.Deployments[0], queued.ID} {
				if err := s.AppendStep(ctx, id, deployer.Step{Name: "resolve", Started: time.Now(), Outcome: "ok"}); err != nil {
					t.Fatal(err)
				}
				got := must(s.Deployment(ctx, id))(t)
				if len(got.Steps) != 2 || got.Steps[0].Name != deployer.StepRequest || got.Steps[0].Outcome != "ok" ||
					got.Steps[0].Message != note || !got.Steps[0].Started.Equal(got.QueuedAt) || got.Steps[1].Name != "resolve" {
					t.Errorf("deployment %d steps = %+v, want the note as step %q, then resolve", id, got.Steps, deployer.StepRequest)
				}
			}
			if len(queued.Steps) != 1 || queued.Steps[0].Message != note {
				t.Errorf("Enqueue returned steps %+v, want the note", queued.Steps)
			}
			if claimed, ok := must2(s.ClaimNext(ctx, "backend"))(t); !ok || len(claimed.Steps) != 2 || claimed.Steps[0].Message != note {
				t.Errorf("ClaimNext returned steps %+v, want the note and resolve", claimed.Steps)
			}
			if got := must(s.Deployment(ctx, rc.Deployments[1]))(t); len(got.Steps) != 0 {
				t.Errorf("a request without a note has steps %+v", got.Steps)
			}
		}},
		{"Finish records the outcome once", func(t *testing.T, s deployer.Store) {
			d := must(s.Enqueue(ctx, manual("backend", "latest")))(t)
			must2(s.ClaimNext(ctx, "backend"))(t)
			d.State = deployer.StateFailed
			d.Digest = digestA
			d.ErrorClass, d.Error, d.Hint = "auth", "registry refused the token", "grant the App access"
			if err := s.Finish(ctx, d); err != nil {
				t.Fatal(err)
			}
			got := must(s.Deployment(ctx, d.ID))(t)
			if got.State != deployer.StateFailed || got.Digest != digestA || got.ErrorClass != "auth" ||
				got.Error != d.Error || got.Hint != d.Hint || got.FinishedAt == nil || got.StartedAt == nil {
				t.Errorf("finished = %+v", got)
			}
			d.State = deployer.StateSucceeded
			if err := s.Finish(ctx, d); err == nil {
				t.Error("a finished deployment was finished again")
			}
			if got := must(s.Deployment(ctx, d.ID))(t); got.State != deployer.StateFailed {
				t.Errorf("state = %s after refused Finish, want failed", got.State)
			}
			if err := s.Finish(ctx, deployer.Deployment{ID: d.ID + 100, State: deployer.StateSucceeded}); !errors.Is(err, deployer.ErrNotFound) {
				t.Errorf("Finish unknown: err = %v, want ErrNotFound", err)
			}
		}},
		{"Finish keeps the requested digest when none is given and refuses non-final states", func(t *testing.T, s deployer.Store) {
			r := manual("backend", "")
			r.Digest = digestB
			d := must(s.Enqueue(ctx, r))(t)
			for _, st := range []deployer.State{deployer.StateRunning, deployer.StateQueued, "bogus"} {
				if err := s.Finish(ctx, deployer.Deployment{ID: d.ID, State: st}); err == nil {
					t.Errorf("Finish with state %q accepted", st)
				}
			}
			if err := s.Finish(ctx, deployer.Deployment{ID: d.ID, State: deployer.StateUnchanged}); err != nil {
				t.Fatal(err)
			}
			if got := must(s.Deployment(ctx, d.ID))(t); got.Digest != digestB || got.State != deployer.StateUnchanged {
				t.Errorf("got %+v", got)
			}
		}},
		{"InterruptRunning ends running deployments only", func(t *testing.T, s deployer.Store) {
			a := must(s.Enqueue(ctx, manual("backend", "v1")))(t)
			b := must(s.Enqueue(ctx, manual("web", "v1")))(t)
			must2(s.ClaimNext(ctx, "backend"))(t)
			must2(s.ClaimNext(ctx, "web"))(t)
			c := must(s.Enqueue(ctx, manual("web", "v2")))(t)
			ids := must(s.InterruptRunning(ctx))(t)
			if len(ids) != 2 || ids[0] != a.ID || ids[1] != b.ID {
				t.Errorf("interrupted %v, want [%d %d]", ids, a.ID, b.ID)
			}
			wantStates(t, s, map[int64]deployer.State{a.ID: deployer.StateInterrupted, b.ID: deployer.StateInterrupted, c.ID: deployer.StateQueued})
			if got := must(s.Deployment(ctx, a.ID))(t); got.FinishedAt == nil {
				t.Error("interrupted deployment has no finished_at")
			}
			if ids := must(s.InterruptRunning(ctx))(t); len(ids) != 0 {
				t.Errorf("second InterruptRunning = %v, want none", ids)
			}
		}},
		{"QueuedServices lists services with queued work", func(t *testing.T, s deployer.Store) {
			if got := must(s.QueuedServices(ctx))(t); len(got) != 0 {
				t.Errorf("empty store: %v", got)
			}
			must(s.Enqueue(ctx, manual("web", "v1")))(t)
			must(s.Enqueue(ctx, manual("backend", "v1")))(t)
			must(s.Enqueue(ctx, manual("backend", "v2")))(t)
			must(s.Enqueue(ctx, manual("worker", "v1")))(t)
			must2(s.ClaimNext(ctx, "worker"))(t)
			if got := must(s.QueuedServices(ctx))(t); !slices.Equal(got, []string{"backend", "web"}) {
				t.Errorf("QueuedServices = %v, want [backend web]", got)
			}
		}},
		{"Deployments pages newest first", func(t *testing.T, s deployer.Store) {
			var ids []int64
			for i := range 60 {
				svc := "backend"
				if i%3 == 0 {
					svc = "web"
				}
				ids = append(ids, must(s.Enqueue(ctx, manual(svc, fmt.Sprintf("v%d", i))))(t).ID)
			}
			all := must(s.Deployments(ctx, "", deployer.Page{}))(t)
			if len(all) != 50 || all[0].ID != ids[59] || all[49].ID != ids[10] {
				t.Fatalf("default page: %d rows from %d to %d", len(all), all[0].ID, all[len(all)-1].ID)
			}
			page := must(s.Deployments(ctx, "", deployer.Page{Limit: 7, Before: ids[20]}))(t)
			if got := idsOf(page); !slices.Equal(got, reversed(ids[13:20])) {
				t.Errorf("page before %d = %v", ids[20], got)
			}
			web := must(s.Deployments(ctx, "web", deployer.Page{Limit: 1000}))(t)
			if len(web) != 20 {
				t.Errorf("web deployments = %d, want 20", len(web))
			}
			for _, d := range web {
				if d.Service != "web" {
					t.Errorf("filter leaked %s", d.Service)
				}
			}
			if got := must(s.Deployments(ctx, "", deployer.Page{Limit: -3}))(t); len(got) != 1 {
				t.Errorf("negative limit gave %d rows, want 1", len(got))
			}
			if got := must(s.Deployments(ctx, "", deployer.Page{Before: ids[0]}))(t); len(got) != 0 {
				t.Errorf("before the first: %d rows", len(got))
			}
		}},
		{"Deliveries pages newest first", func(t *testing.T, s deployer.Store) {
			for i := range 12 {
				must(s.RecordDelivery(ctx, delivery(fmt.Sprintf("d%02d", i)), nil))(t)
			}
			first := must(s.Deliveries(ctx, deployer.Page{Limit: 5}))(t)
			second := must(s.Deliveries(ctx, deployer.Page{Limit: 5, Before: first[4].Seq}))(t)
			third := must(s.Deliveries(ctx, deployer.Page{Limit: 5, Before: second[4].Seq}))(t)
			var names []string
			for _, d := range slices.Concat(first, second, third) {
				names = append(names, d.ID)
			}
			want := []string{"d11", "d10", "d09", "d08", "d07", "d06", "d05", "d04", "d03", "d02", "d01", "d00"}
			if !slices.Equal(names, want) {
				t.Errorf("pages = %v, want %v", names, want)
			}
		}},
		{"Deployment of an unknown id is ErrNotFound", func(t *testing.T, s deployer.Store) {
			if _, err := s.Deployment(ctx, 12345); !errors.Is(err, deployer.ErrNotFound) {
				t.Errorf("err = %v, want ErrNotFound", err)
			}
		}},
		{"service status round trip", func(t *testing.T, s deployer.Store) {
			zero := must(s.ServiceStatus(ctx, "backend"))(t)
			if zero != (deployer.ServiceStatus{Name: "backend"}) {
				t.Errorf("unknown service = %+v", zero)
			}
			at := time.Date(2026, 3, 1, 10, 0, 0, 987654321, time.UTC)
			want := deployer.ServiceStatus{Name: "backend", Tag: "latest", Digest: digestA, PreviousDigest: digestB,
				Container: "v7-backend", LastDeploymentID: 7, LastRunNumber: 31, Degraded: true, UpdatedAt: at}
			if err := s.SetServiceStatus(ctx, want); err != nil {
				t.Fatal(err)
			}
			got := must(s.ServiceStatus(ctx, "backend"))(t)
			if !got.UpdatedAt.Equal(at) {
				t.Errorf("updated_at = %v, want %v", got.UpdatedAt, at)
			}
			got.UpdatedAt = at
			if got != want {
				t.Errorf("status = %+v, want %+v", got, want)
			}
		}},
		{"DigestReplaced follows what ran", func(t *testing.T, s deployer.Store) {
			set := func(digest string) {
				t.Helper()
				if err := s.SetServiceStatus(ctx, deployer.ServiceStatus{Name: "backend", Digest: digest}); err != nil {
					t.Fatal(err)
				}
			}
			replaced := func(svc, digest string) bool {
				t.Helper()
				return must(s.DigestReplaced(ctx, svc, digest))(t)
			}
			set(digestA)
			if replaced("backend", digestA) {
				t.Error("the running digest counts as replaced")
			}
			set(digestA) // same digest again: nothing replaced
			if replaced("backend", digestA) {
				t.Error("redeploying the same digest replaced it")
			}
			set(digestB)
			if !replaced("backend", digestA) || replaced("backend", digestB) {
				t.Error("after A → B: want A replaced, B not")
			}
			if replaced("web", digestA) {
				t.Error("history leaked across services")
			}
			if replaced("backend", digestC) {
				t.Error("a digest that never ran counts as replaced")
			}
			set(digestA) // a rollback brings A back
			if replaced("backend", digestA) || !replaced("backend", digestB) {
				t.Error("after B → A: want B replaced, A not")
			}
		}},
		{"PreviousDigest counts as replaced", func(t *testing.T, s deployer.Store) {
			err := s.SetServiceStatus(ctx, deployer.ServiceStatus{Name: "web", Digest: digestB, PreviousDigest: digestA})
			if err != nil {
				t.Fatal(err)
			}
			if !must(s.DigestReplaced(ctx, "web", digestA))(t) {
				t.Error("the previous digest is not replaced")
			}
		}},
		{"Ping answers", func(t *testing.T, s deployer.Store) {
			if err := s.Ping(ctx); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.run(t, open(t))
		})
	}
}

// must returns a function that fails t on err and otherwise returns v.
func must[T any](v T, err error) func(t *testing.T) T {
	return func(t *testing.T) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func must2[T any](v T, ok bool, err error) func(t *testing.T) (T, bool) {
	return func(t *testing.T) (T, bool) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v, ok
	}
}

func assertCounts(t *testing.T, s deployer.Store, deliveries, deployments int) {
	t.Helper()
	ctx := context.Background()
	if got := must(s.Deliveries(ctx, deployer.Page{Limit: 500}))(t); len(got) != deliveries {
		t.Errorf("%d deliveries stored, want %d", len(got), deliveries)
	}
	if got := must(s.Deployments(ctx, "", deployer.Page{Limit: 500}))(t); len(got) != deployments {
		t.Errorf("%d deployments stored, want %d", len(got), deployments)
	}
}

func wantStates(t *testing.T, s deployer.Store, want map[int64]deployer.State) {
	t.Helper()
	for id, st := range want {
		d, err := s.Deployment(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if d.State != st {
			t.Errorf("deployment %d (%s %s) is %s, want %s", id, d.Service, d.Tag, d.State, st)
		}
	}
}

func idsOf(ds []deployer.Deployment) []int64 {
	var ids []int64
	for _, d := range ds {
		ids = append(ids, d.ID)
	}
	return ids
}

func reversed[T any](s []T) []T {
	c := slices.Clone(s)
	slices.Reverse(c)
	return c
}
