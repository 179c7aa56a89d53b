package fleet_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/deployd/deployd/deployer"
	"github.com/deployd/deployd/fleet"
)

// curveKey returns a new curve key pair and its public key.
func curveKey(t testing.TB) (nkeys.KeyPair, string) {
	t.Helper()
	return newKey(t, nkeys.CreateCurveKeys)
}

// newKey returns a key pair that create makes and its public key.
func newKey(t testing.TB, create func() (nkeys.KeyPair, error)) (nkeys.KeyPair, string) {
	t.Helper()
	kp, err := create()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return kp, pub
}

const secret = "ghs_sealedTokenThatMustNeverShow0123456789"

// A sealed credential opens for its agent, from its hub, for its intent,
// before it expires; and never carries the secret in clear text.
func TestSealedCredential(t *testing.T) {
	hubKey, hubPub := curveKey(t)
	agentKey, agentPub := curveKey(t)
	otherKey, otherPub := curveKey(t)
	now := time.Date(2026, 12, 4, 3, 0, 0, 0, time.UTC)
	in := intent("web-1", "backend", 42)
	cred := deployer.Credential{Source: "github_app", Username: "x-access-token", Password: deployer.NewPassword(secret)}

	box, err := fleet.SealCredential(hubKey, agentPub, in, cred, now)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(box, []byte(secret)) || bytes.Contains(box, []byte("x-access-token")) {
		t.Fatal("the sealed credential holds the credential in clear text")
	}
	in.Credential = box

	got, err := fleet.OpenCredential(agentKey, hubPub, in, now.Add(time.Minute))
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	if got.Source != cred.Source || got.Username != cred.Username || got.Password.Reveal() != secret {
		t.Errorf("opened %q %q, want the sealed credential", got.Source, got.Username)
	}

	otherIntent := in
	otherIntent.Seq = 43
	tampered := in
	tampered.Credential = bytes.Clone(box)
	tampered.Credential[len(box)-1] ^= 1
	forged, err := fleet.SealCredential(otherKey, agentPub, in, cred, now)
	if err != nil {
		t.Fatal(err)
	}
	forgedIntent := in
	forgedIntent.Credential = forged
	for _, tc := range []struct {
		name   string
		agent  nkeys.KeyPair
		hub    string
		intent fleet.Intent
		at     time.Time
	}{
		{"another agent's key", otherKey, hubPub, in, now},
		{"another sender than the hub", agentKey, otherPub, in, now},
		{"sealed by someone other than the hub", agentKey, hubPub, forgedIntent, now},
		{"another intent", agentKey, hubPub, otherIntent, now},
		{"tampered with", agentKey, hubPub, tampered, now},
		{"expired", agentKey, hubPub, in, now.Add(fleet.CredentialTTL)},
	} {
		_, err := fleet.OpenCredential(tc.agent, tc.hub, tc.intent, tc.at)
		if !errors.Is(err, fleet.ErrCredential) {
			t.Errorf("%s: open gave %v, want ErrCredential", tc.name, err)
		} else if strings.Contains(err.Error(), secret) {
			t.Errorf("%s: the error shows the secret", tc.name)
		}
	}

	none, err := fleet.OpenCredential(agentKey, hubPub, intent("web-1", "backend", 44), now)
	if err != nil || !none.Anonymous() {
		t.Errorf("an intent without a credential opened as %q, %v; want anonymous", none.Source, err)
	}
}
