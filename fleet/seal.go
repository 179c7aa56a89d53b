package fleet

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/deployd/deployd/deployer"
)

// CredentialTTL is how long a sealed pull credential may be opened after
// the hub sealed it.
const CredentialTTL = 10 * time.Minute

// sealed is the clear text inside a sealed credential: the credential and
// the intent it was sealed for, so that it opens for that intent only.
type sealed struct {
	Host     string    `json:"host"`
	Service  string    `json:"service"`
	Seq      int64     `json:"seq"`
	Expires  time.Time `json:"expires"`
	Source   string    `json:"source"`
	Username string    `json:"username"`
	Password string    `json:"password"`
}

// ErrCredential is wrapped by OpenCredential's errors; they never carry
// the credential.
var ErrCredential = errors.New("sealed credential refused")

// SealCredential seals c for the intent in, to the agent whose curve
// public key ("X...") is agent, from the hub's curve key pair: only that
// agent can open it, it can tell that the hub sealed it, and it opens only
// for this intent until now+CredentialTTL. The result is what
// Intent.Credential carries; it never holds the secret in clear text.
func SealCredential(hub nkeys.KeyPair, agent string, in Intent, c deployer.Credential, now time.Time) ([]byte, error) {
	data, err := json.Marshal(sealed{
		Host: in.Host, Service: in.Service, Seq: in.Seq,
		Expires: now.Add(CredentialTTL),
		Source:  c.Source, Username: c.Username, Password: c.Password.Reveal(),
	})
	if err != nil {
		return nil, fmt.Errorf("seal credential: %w", err)
	}
	box, err := hub.Seal(data, agent)
	if err != nil {
		return nil, fmt.Errorf("seal credential for %s: %w", in.Host, err)
	}
	return box, nil
}

// OpenCredential opens the credential in.Credential with the agent's curve
// key pair, checking that the hub (curve public key hub) sealed it, for
// this intent, and that it has not expired at now. An intent without one
// yields the anonymous credential. Its errors wrap ErrCredential.
func OpenCredential(agent nkeys.KeyPair, hub string, in Intent, now time.Time) (deployer.Credential, error) {
	if len(in.Credential) == 0 {
		return deployer.Credential{Source: "none"}, nil
	}
	data, err := agent.Open(in.Credential, hub)
	if err != nil {
		return deployer.Credential{}, fmt.Errorf("%w: not sealed by the hub for this agent: %w", ErrCredential, err)
	}
	var s sealed
	if err := json.Unmarshal(data, &s); err != nil {
		return deployer.Credential{}, fmt.Errorf("%w: unreadable", ErrCredential)
	}
	switch {
	case s.Host != in.Host || s.Service != in.Service || s.Seq != in.Seq:
		return deployer.Credential{}, fmt.Errorf("%w: sealed for intent %d of %s on %s, not intent %d of %s on %s",
			ErrCredential, s.Seq, s.Service, s.Host, in.Seq, in.Service, in.Host)
	case !now.Before(s.Expires):
		return deployer.Credential{}, fmt.Errorf("%w: expired at %s", ErrCredential, s.Expires.UTC().Format(time.RFC3339))
	}
	return deployer.Credential{Source: s.Source, Username: s.Username, Password: deployer.NewPassword(s.Password)}, nil
}
