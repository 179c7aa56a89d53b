// Package github is deployd's GitHub App: the App's JWT, the installation
// tokens minted with it (cached, down-scoped, one mint in flight), GitHub's
// errors explained in plain words with the fix (Error), and the
// Deployments API client (DeploymentReporter).
//
// Of deployd's packages it imports only auth, to read the key file. It
// takes plain values (an App ID, a key, an API URL, a transport, a clock, a
// logger) so that the command can wire it from the configuration and tests
// can point it at the fake GitHub in package githubtest.
//
// go-github's package has the same name: this package imports it as
// gogithub, and so does any file of deployd that needs both.
//
// Secrets are a type: a Token, a PrivateKey. Their fmt, JSON and text forms
// are "[redacted]"; only Token.Reveal gives the value, and only at the place
// that hands it to the registry, podman or GitHub.
package github

import (
	"fmt"
	"io"
)

// redacted is what every printed form of a secret shows.
const redacted = "[redacted]"

// Token is a secret string: an installation token, a personal access token,
// any credential. Its String, GoString, Format (every verb), MarshalJSON and
// MarshalText forms are "[redacted]"; Reveal returns the value.
//
// The value sits behind a pointer so that even a Token inside an unexported
// struct field, which fmt prints by reflection without calling its methods,
// shows as an address and never as the text. The zero Token is empty.
// A Token is immutable and safe for concurrent use.
type Token struct {
	v *string
}

// NewToken wraps s as a Token.
func NewToken(s string) Token {
	return Token{v: &s}
}

// Reveal returns the secret value. Call it only where the value leaves the
// process for its intended recipient (a registry, podman's stdin).
func (t Token) Reveal() string {
	if t.v == nil {
		return ""
	}
	return *t.v
}

// IsZero reports whether the token is empty.
func (t Token) IsZero() bool {
	return t.v == nil || *t.v == ""
}

// String returns "[redacted]".
func (t Token) String() string { return redacted }

// GoString returns "[redacted]", so %#v does not print the value either.
func (t Token) GoString() string { return redacted }

// Format prints "[redacted]" for every verb (%s, %v, %q, %x, ...).
func (t Token) Format(f fmt.State, _ rune) {
	_, _ = io.WriteString(f, redacted)
}

// MarshalJSON returns the JSON string "[redacted]".
func (t Token) MarshalJSON() ([]byte, error) {
	return []byte(`"` + redacted + `"`), nil
}

// MarshalText returns "[redacted]"; it also covers YAML and zerolog's
// Interface/Any fields, which fall back to text or JSON marshalling.
func (t Token) MarshalText() ([]byte, error) {
	return []byte(redacted), nil
}
