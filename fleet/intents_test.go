package fleet_test

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"

	"github.com/deployd/deployd/fleet"
)

// The intent stream keeps one intent per host and service, the newest; an
// agent reading late gets that one and only its own host's.
func TestIntentsLatestWinsPerHostAndService(t *testing.T) {
	_, js := hub(t, "web-1", "web-2")
	publish(t, js,
		intent("web-1", "backend", 1), intent("web-1", "backend", 2), intent("web-1", "backend", 3),
		intent("web-1", "frontend", 4),
		intent("web-2", "backend", 5))

	stream, err := js.Stream(testCtx(t), fleet.IntentStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 3 {
		t.Errorf("intent stream holds %d messages, want 3 (one per host and service)", info.State.Msgs)
	}

	agent, err := fleet.OpenIntents(testCtx(t), js, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	var got []int64
	for range 2 {
		p := next(t, agent)
		if p.Intent.Host != "web-1" {
			t.Errorf("web-1 got an intent for %s", p.Intent.Host)
		}
		got = append(got, p.Intent.Seq)
		if err := p.Done(testCtx(t)); err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, []int64{3, 4}) {
		t.Errorf("web-1 got intents %v, want [3 4]: the newest of each service", got)
	}
	settled(t, js, "web-1")
}

// Publish never lets the stream go backwards for a host and service.
func TestPublishRefusesAnOlderIntent(t *testing.T) {
	_, js := hub(t, "web-1")
	publish(t, js, intent("web-1", "backend", 7))
	for _, seq := range []int64{7, 6} {
		err := fleet.Publish(testCtx(t), js, intent("web-1", "backend", seq))
		if !errors.Is(err, fleet.ErrStale) {
			t.Errorf("publish %d after 7: %v, want ErrStale", seq, err)
		}
	}
	agent, err := fleet.OpenIntents(testCtx(t), js, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	if p := next(t, agent); p.Intent.Seq != 7 {
		t.Errorf("agent got intent %d, want 7", p.Intent.Seq)
	}
}

// An agent that took an intent and died before acking it gets, when it
// comes back, the intent the hub published meanwhile, never the old one.
func TestIntentsAgentBackAfterCrashGetsOnlyTheNewest(t *testing.T) {
	srv, js := hub(t, "web-1")
	publish(t, js, intent("web-1", "backend", 1))

	nc, agentJS := connect(t, srv.ClientURL())
	first, err := fleet.OpenIntents(testCtx(t), agentJS, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	if p := next(t, first); p.Intent.Seq != 1 {
		t.Fatalf("got intent %d, want 1", p.Intent.Seq)
	}
	nc.Close() // the agent dies holding intent 1, unacked

	publish(t, js, intent("web-1", "backend", 2), intent("web-1", "backend", 3))

	_, agentJS = connect(t, srv.ClientURL())
	again, err := fleet.OpenIntents(testCtx(t), agentJS, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	p := next(t, again)
	if p.Intent.Seq != 3 {
		t.Fatalf("agent back after a crash got intent %d, want 3 (the newest)", p.Intent.Seq)
	}
	if err := p.Done(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	settled(t, js, "web-1")
}

// An intent older than one already handed out (here published around
// Publish's check) and an intent naming another host are dropped; the
// next good one comes through.
func TestIntentsDropOlderAndMisaddressed(t *testing.T) {
	_, js := hub(t, "web-1")
	agent, err := fleet.OpenIntents(testCtx(t), js, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	var skipped []string
	agent.OnSkip = func(subject, reason string) { skipped = append(skipped, subject+": "+reason) }

	publish(t, js, intent("web-1", "backend", 5))
	p := next(t, agent)
	if err := p.Done(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	raw := func(subject string, in fleet.Intent) {
		t.Helper()
		data, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(testCtx(t), subject, data); err != nil {
			t.Fatal(err)
		}
	}
	raw(fleet.IntentSubject("web-1", "backend"), intent("web-1", "backend", 4))
	raw(fleet.IntentSubject("web-1", "frontend"), intent("web-2", "frontend", 9))
	raw(fleet.IntentSubject("web-1", "worker"), fleet.Intent{Seq: 10, Host: "web-1", Service: "worker"})
	publish(t, js, intent("web-1", "cron", 11))

	if p := next(t, agent); p.Intent.Seq != 11 {
		t.Errorf("got intent %d, want 11", p.Intent.Seq)
	} else if err := p.Done(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if len(skipped) != 3 {
		t.Errorf("dropped %d intents, want 3 (older, other host, no image or digest): %q", len(skipped), skipped)
	}
	settled(t, js, "web-1")
}

// The streams, the consumers and the newest intent live in the store
// directory: a restarted server still has them.
func TestIntentsSurviveAServerRestart(t *testing.T) {
	dir := t.TempDir()
	srv := startServer(t, dir)
	nc, js := connect(t, srv.ClientURL())
	if err := fleet.Setup(testCtx(t), js); err != nil {
		t.Fatal(err)
	}
	if err := fleet.AddAgent(testCtx(t), js, "web-1"); err != nil {
		t.Fatal(err)
	}
	publish(t, js, intent("web-1", "backend", 1), intent("web-1", "backend", 2))
	nc.Close()
	srv.Shutdown()

	srv = startServer(t, dir)
	_, js = connect(t, srv.ClientURL())
	agent, err := fleet.OpenIntents(testCtx(t), js, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	if p := next(t, agent); p.Intent.Seq != 2 {
		t.Errorf("after a restart the agent got intent %d, want 2", p.Intent.Seq)
	}
}

// An agent cannot bind to a consumer the hub has not made for its host.
func TestOpenIntentsNeedsTheHubToAddTheHost(t *testing.T) {
	_, js := hub(t, "web-1")
	if _, err := fleet.OpenIntents(testCtx(t), js, "web-9"); err == nil {
		t.Error("OpenIntents for a host the hub never added succeeded")
	}
	if _, err := fleet.OpenIntents(testCtx(t), js, "web.1"); !errors.Is(err, fleet.ErrBadName) {
		t.Errorf("OpenIntents for host web.1: %v, want ErrBadName", err)
	}
}
