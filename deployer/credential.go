package deployer

import (
	"context"
	"fmt"
)

// Password is a registry password or token. It never prints: its String,
// GoString and Format forms are "[redacted]", and the value sits behind a
// pointer, so that even a struct that holds a Password in an unexported
// field (which fmt prints without calling its methods) shows an address,
// not the secret. Reveal returns the value. The zero Password is empty.
type Password struct{ v *string }

// NewPassword wraps s as a Password.
func NewPassword(s string) Password { return Password{v: &s} }

// Reveal returns the secret value.
func (p Password) Reveal() string {
	if p.v == nil {
		return ""
	}
	return *p.v
}

// IsZero reports whether the password is empty.
func (p Password) IsZero() bool { return p.v == nil || *p.v == "" }

// String returns "[redacted]".
func (Password) String() string { return "[redacted]" }

// GoString returns "[redacted]".
func (Password) GoString() string { return "[redacted]" }

// Format writes "[redacted]" whatever the verb, so no fmt verb prints the value.
func (Password) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte("[redacted]")) }

// MarshalText returns "[redacted]", so JSON and text encoders never see the value.
func (Password) MarshalText() ([]byte, error) { return []byte("[redacted]"), nil }

// Explainer is what a Credentials may also offer: the hint for a
// deployment whose registry refused source's credential for req's image, in
// plain words naming the configuration to change. The executor uses it for
// auth failures when its Credentials offers it.
type Explainer interface {
	ExplainRefusal(req CredentialRequest, source string) string
}

// Credential is one way to authenticate to a registry.
type Credential struct {
	// Source names where it came from: github_app, token_file or none.
	Source   string
	Username string
	Password Password
}

// Anonymous reports whether the credential carries nothing.
func (c Credential) Anonymous() bool { return c.Username == "" && c.Password.IsZero() }

// CredentialRequest says which image a credential is for.
type CredentialRequest struct {
	Host           string // registry host, "ghcr.io"
	Image          string // host/path, "ghcr.io/acme/v7/backend"
	Repository     string // the service's GitHub repository, OWNER/NAME
	InstallationID int64  // from the webhook delivery, 0 if unknown
	// Refused lists the sources the registry already refused during this
	// deployment; the chain does not offer them again.
	Refused []string
	// IgnorePutAside asks for every source in order, even those put aside
	// after earlier refusals: set for deployments an operator asked for.
	IgnorePutAside bool
}

// Credentials is the registry credential chain an Executor uses (auth's
// chain, for deployer/podman's pipeline). The executor reports back
// whether the registry accepted what it got, so the chain can put a
// refused source aside and offer the next one.
type Credentials interface {
	// Credential returns the first usable credential for the image that
	// is not in req.Refused.
	Credential(ctx context.Context, req CredentialRequest) (Credential, error)
	// Denied puts the source aside for the image, with the reason.
	Denied(req CredentialRequest, source, reason string)
	// Accepted records that the registry accepted the source for the image.
	Accepted(req CredentialRequest, source string)
	// Invalidate forgets a cached token for the image, so that the next
	// Credential mints a fresh one.
	Invalidate(req CredentialRequest)
}
