package deployer

import (
	"context"
	"fmt"
)

// Password is a registry password or token. It never prints: its String,
// GoString and Format forms are "[redacted]". Reveal returns the value.
type Password string

// Reveal returns the secret value.
func (p Password) Reveal() string { return string(p) }

// String returns "[redacted]".
func (Password) String() string { return "[redacted]" }

// GoString returns "[redacted]".
func (Password) GoString() string { return "[redacted]" }

// Format writes "[redacted]" whatever the verb, so no fmt verb prints the value.
func (Password) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte("[redacted]")) }

// MarshalText returns "[redacted]", so JSON and text encoders never see the value.
func (Password) MarshalText() ([]byte, error) { return []byte("[redacted]"), nil }

// Credential is one way to authenticate to a registry.
type Credential struct {
	// Source names where it came from: github_app, token_file or none.
	Source   string
	Username string
	Password Password
}

// Anonymous reports whether the credential carries nothing.
func (c Credential) Anonymous() bool { return c.Username == "" && c.Password == "" }

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
