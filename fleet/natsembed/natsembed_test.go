package natsembed_test

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/deployd/deployd/fleet/natsembed"
)

// With users, only they connect, each limited to its subjects.
func TestStartWithNKeyUsers(t *testing.T) {
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := user.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := natsembed.Start(natsembed.Config{
		Listen: "127.0.0.1:0", StoreDir: t.TempDir(),
		Users: []natsembed.User{{PublicKey: pub, Publish: []string{"allowed.>"}, Subscribe: []string{"_INBOX.>"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()

	if nc, err := nats.Connect(srv.ClientURL()); err == nil {
		nc.Close()
		t.Fatal("a client without an NKey connected")
	}
	denied := make(chan error, 1)
	nc, err := nats.Connect(srv.ClientURL(),
		nats.Nkey(pub, user.Sign),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { denied <- err }))
	if err != nil {
		t.Fatalf("the user's NKey was refused: %v", err)
	}
	defer nc.Close()
	if err := nc.Publish("other.subject", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-denied:
		if !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
			t.Errorf("publish outside the user's subjects: %v, want a permissions violation", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no permissions violation for a publish outside the user's subjects")
	}
}

// A bad configuration is refused before anything starts.
func TestStartRefusesABadConfig(t *testing.T) {
	for _, cfg := range []natsembed.Config{
		{Listen: "127.0.0.1:0"},
		{Listen: "no-port", StoreDir: t.TempDir()},
		{Listen: "127.0.0.1:http", StoreDir: t.TempDir()},
	} {
		if srv, err := natsembed.Start(cfg); err == nil {
			srv.Shutdown()
			t.Errorf("Start(%+v) succeeded", cfg)
		}
	}
}
