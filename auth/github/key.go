package github

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"

	"github.com/deployd/deployd/auth"
)

// PrivateKey is the GitHub App's RSA private key. Like Token, it never
// prints: String, GoString, Format, MarshalJSON and MarshalText give
// "[redacted]". It is immutable and safe for concurrent use.
type PrivateKey struct {
	k *rsa.PrivateKey
}

// NewPrivateKey wraps an RSA key, for callers (and tests) that hold one
// already. It returns nil for a nil key.
func NewPrivateKey(k *rsa.PrivateKey) *PrivateKey {
	if k == nil {
		return nil
	}
	return &PrivateKey{k: k}
}

// Public returns the public half of the key.
func (p *PrivateKey) Public() *rsa.PublicKey { return &p.k.PublicKey }

// String returns "[redacted]".
func (p *PrivateKey) String() string { return redacted }

// GoString returns "[redacted]".
func (p *PrivateKey) GoString() string { return redacted }

// Format prints "[redacted]" for every verb.
func (p *PrivateKey) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, redacted) }

// MarshalJSON returns the JSON string "[redacted]".
func (p *PrivateKey) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText returns "[redacted]".
func (p *PrivateKey) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// ErrNotPEM is returned (wrapped) when the key material is not PEM.
var ErrNotPEM = errors.New("not a PEM file")

// ErrNotRSA is returned (wrapped) when the PEM block holds a key that is not
// RSA. GitHub App keys are always RSA.
var ErrNotRSA = errors.New("not an RSA private key")

// ParsePrivateKey parses a PEM-encoded RSA private key in PKCS#1
// ("RSA PRIVATE KEY") or PKCS#8 ("PRIVATE KEY") form, as downloaded from the
// App's settings page. Errors say what is wrong with the material but never
// contain it.
func ParsePrivateKey(pemBytes []byte) (*PrivateKey, error) {
	k, err := parseKey(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("parse App private key: %w", err)
	}
	return k, nil
}

func parseKey(pemBytes []byte) (*PrivateKey, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, fmt.Errorf("%w (expected the .pem file downloaded from the App's settings page)", ErrNotPEM)
	}
	switch block.Type {
	case "RSA PRIVATE KEY":
		k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, errors.New("the RSA PRIVATE KEY block is not a valid PKCS#1 key")
		}
		return &PrivateKey{k: k}, nil
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, errors.New("the PRIVATE KEY block is not a valid PKCS#8 key")
		}
		switch k := k.(type) {
		case *rsa.PrivateKey:
			return &PrivateKey{k: k}, nil
		case *ecdsa.PrivateKey:
			return nil, fmt.Errorf("%w: it is an ECDSA key; GitHub App keys are RSA", ErrNotRSA)
		case ed25519.PrivateKey:
			return nil, fmt.Errorf("%w: it is an Ed25519 key; GitHub App keys are RSA", ErrNotRSA)
		default:
			return nil, fmt.Errorf("%w: it is a %T; GitHub App keys are RSA", ErrNotRSA, k)
		}
	case "EC PRIVATE KEY":
		return nil, fmt.Errorf("%w: it is an EC key; GitHub App keys are RSA", ErrNotRSA)
	case "OPENSSH PRIVATE KEY":
		return nil, fmt.Errorf("%w: it is an OpenSSH key; download the App's private key from its GitHub settings page", ErrNotRSA)
	case "ENCRYPTED PRIVATE KEY":
		return nil, errors.New("the key is encrypted (ENCRYPTED PRIVATE KEY); use the unencrypted key downloaded from the App's settings page")
	default:
		return nil, fmt.Errorf("%w: the PEM block is %q", ErrNotRSA, block.Type)
	}
}

// LoadPrivateKey reads and parses the App's private key file (PKCS#1 or
// PKCS#8 PEM). It fails with a message naming the path when the file is
// missing, unreadable, not PEM or not RSA; the key material never appears in
// an error.
//
// warning is non-empty when the file is readable by its group or by others:
// the key still loads, and the caller should log or report the warning.
func LoadPrivateKey(path string) (key *PrivateKey, warning string, err error) {
	if path == "" {
		return nil, "", errors.New("load App private key: no key file configured")
	}
	data, mode, err := auth.ReadSecretFile("load App private key", path, "")
	if err != nil {
		return nil, "", err
	}
	key, err = parseKey(data)
	if err != nil {
		return nil, "", fmt.Errorf("load App private key %s: %w", path, err)
	}
	return key, auth.PermissionWarning("App private key", path, mode), nil
}
