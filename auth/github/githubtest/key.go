// Package githubtest provides test doubles for GitHub: FakeGitHub, an
// httptest server that checks the App JWT the way GitHub does and mints
// installation tokens, and NewKey, which makes App keys. It imports none of
// deployd's packages, so any package's tests can use it.
package githubtest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"testing"
)

// NewKey generates a 2048-bit RSA key and returns it with its PKCS#1 PEM
// encoding ("RSA PRIVATE KEY"), the form GitHub's App settings page gives.
func NewKey(t testing.TB) (*rsa.PrivateKey, []byte) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatalf("generate RSA key: %v", err)
	}
	return k, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
}

// PKCS8 returns k encoded as PKCS#8 PEM ("PRIVATE KEY"), the form openssl
// converts App keys to.
func PKCS8(t testing.TB, k any) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatalf("marshal PKCS#8 key: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}
