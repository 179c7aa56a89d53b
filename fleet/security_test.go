package fleet_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/deployd/deployd/fleet"
	"github.com/deployd/deployd/fleet/natsembed"
)

// userKey returns a new NATS user key pair and its public key.
func userKey(t *testing.T) (nkeys.KeyPair, string) {
	t.Helper()
	return newKey(t, nkeys.CreateUser)
}

// asUser returns connection options for the NKey kp, with host's inbox
// prefix when host is set, collecting asynchronous errors in errs.
func asUser(t *testing.T, kp nkeys.KeyPair, host string, errs chan<- error) []nats.Option {
	t.Helper()
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	opts := []nats.Option{nats.Nkey(pub, kp.Sign), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case errs <- err:
		default:
		}
	})}
	if host != "" {
		opts = append(opts, nats.CustomInboxPrefix(fleet.InboxPrefix(host)))
	}
	return opts
}

// With the agents' permissions, an agent takes its own intents and
// reports for its own host, and can do neither for another host.
func TestAgentPermissionsConfineAnAgentToItsHost(t *testing.T) {
	hubKey, hubPub := userKey(t)
	web1Key, web1Pub := userKey(t)
	_, web2Pub := userKey(t)
	users := []natsembed.User{{PublicKey: hubPub}}
	for host, pub := range map[string]string{"web-1": web1Pub, "web-2": web2Pub} {
		p, s := fleet.AgentPermissions(host)
		users = append(users, natsembed.User{PublicKey: pub, Publish: p, Subscribe: s})
	}
	srv := startServer(t, t.TempDir(), users...)
	errs := make(chan error, 16)
	_, js := connect(t, srv.ClientURL(), asUser(t, hubKey, "", errs)...)
	if err := fleet.Setup(testCtx(t), js); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"web-1", "web-2"} {
		if err := fleet.AddAgent(testCtx(t), js, h); err != nil {
			t.Fatal(err)
		}
	}
	publish(t, js, intent("web-1", "backend", 1), intent("web-2", "backend", 2))

	agentErrs := make(chan error, 16)
	nc, agentJS := connect(t, srv.ClientURL(), asUser(t, web1Key, "web-1", agentErrs)...)
	own, err := fleet.OpenIntents(testCtx(t), agentJS, "web-1")
	if err != nil {
		t.Fatalf("web-1 opening its own intents: %v", err)
	}
	p := next(t, own)
	if p.Intent.Seq != 1 {
		t.Errorf("web-1 got intent %d", p.Intent.Seq)
	}
	if err := p.Done(testCtx(t)); err != nil {
		t.Fatalf("web-1 acking its intent: %v", err)
	}
	if _, err := agentJS.Publish(testCtx(t), fleet.ReportSubject("web-1", "backend"), []byte(`{}`)); err != nil {
		t.Errorf("web-1 reporting for itself: %v", err)
	}

	// Refused requests get no answer: bound the wait for one.
	refused, cancel := context.WithTimeout(testCtx(t), 3*time.Second)
	defer cancel()
	if _, err := fleet.OpenIntents(refused, agentJS, "web-2"); err == nil {
		t.Error("web-1 opened web-2's intents")
	}
	refused, cancel = context.WithTimeout(testCtx(t), 3*time.Second)
	defer cancel()
	if _, err := agentJS.Publish(refused, fleet.ReportSubject("web-2", "backend"), []byte(`{}`)); err == nil {
		t.Error("web-1 published a report for web-2")
	}
	if _, err := nc.SubscribeSync(fleet.IntentPrefix + ".>"); err == nil {
		_ = nc.Flush()
	}
	if _, err := nc.SubscribeSync(fleet.InboxPrefix("web-2") + ".>"); err == nil {
		_ = nc.Flush()
	}
	violations := 0
	deadline := time.After(10 * time.Second)
	for violations < 2 {
		select {
		case err := <-agentErrs:
			if strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
				violations++
			}
		case <-deadline:
			t.Fatalf("%d permission violations for subscribing to all intents and to web-2's inbox, want 2", violations)
		}
	}
	info, err := js.Stream(testCtx(t), fleet.ReportStream)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := info.GetLastMsgForSubject(testCtx(t), fleet.ReportSubject("web-2", "backend")); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Errorf("looking for a report for web-2 from web-1 in the report stream: %v, want none there", err)
	}
}
