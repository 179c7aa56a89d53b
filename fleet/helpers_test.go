package fleet_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/deployd/deployd/fleet"
	"github.com/deployd/deployd/fleet/natsembed"
)

// startServer starts an embedded JetStream server storing under dir and
// stops it at the end of the test.
func startServer(t testing.TB, dir string, users ...natsembed.User) *natsembed.Server {
	t.Helper()
	srv, err := natsembed.Start(natsembed.Config{Listen: "127.0.0.1:0", StoreDir: dir, Users: users})
	if err != nil {
		t.Fatalf("start embedded nats: %v", err)
	}
	t.Cleanup(srv.Shutdown)
	return srv
}

// connect connects to url and returns its JetStream context; the
// connection closes at the end of the test.
func connect(t testing.TB, url string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("connect to %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return nc, js
}

// testCtx returns a context that ends with the test, or after a minute.
func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// digest returns a well-formed digest made of the hex digit c.
func digest(c byte) string {
	b := make([]byte, 64)
	for i := range b {
		b[i] = c
	}
	return "sha256:" + string(b)
}

// intent returns a valid intent of service for host with the given seq.
func intent(host, service string, seq int64) fleet.Intent {
	return fleet.Intent{
		Seq: seq, RolloutID: seq, Host: host, Service: service,
		Image: "127.0.0.1:5000/acme/" + service, Tag: "latest",
		Digest: digest("0123456789abcdef"[seq%16]), IssuedAt: time.Unix(1_700_000_000+seq, 0).UTC(),
	}
}

// hub starts a server, sets up the fleet's streams and the named agents'
// consumers, and returns the server and the hub's JetStream.
func hub(t testing.TB, hosts ...string) (*natsembed.Server, jetstream.JetStream) {
	t.Helper()
	srv := startServer(t, t.TempDir())
	_, js := connect(t, srv.ClientURL())
	ctx := testCtx(t)
	if err := fleet.Setup(ctx, js); err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts {
		if err := fleet.AddAgent(ctx, js, h); err != nil {
			t.Fatal(err)
		}
	}
	return srv, js
}

// publish publishes intents and fails the test on an error.
func publish(t testing.TB, js jetstream.JetStream, ins ...fleet.Intent) {
	t.Helper()
	for _, in := range ins {
		if err := fleet.Publish(testCtx(t), js, in); err != nil {
			t.Fatalf("publish %d: %v", in.Seq, err)
		}
	}
}

// next takes the next intent and fails the test on an error.
func next(t testing.TB, in *fleet.Intents) *fleet.Pending {
	t.Helper()
	p, err := in.Next(testCtx(t))
	if err != nil {
		t.Fatalf("next intent: %v", err)
	}
	return p
}

// settled checks that host's consumer has nothing left to hand out or
// waiting for an ack.
func settled(t testing.TB, js jetstream.JetStream, host string) {
	t.Helper()
	cons, err := js.Consumer(testCtx(t), fleet.IntentStream, fleet.AgentConsumer(host))
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if info.NumPending != 0 || info.NumAckPending != 0 {
		t.Errorf("consumer of %s: %d pending, %d waiting for an ack; want none", host, info.NumPending, info.NumAckPending)
	}
}
