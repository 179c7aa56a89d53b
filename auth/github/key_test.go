package github_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deployd/deployd/auth/github"
	"github.com/deployd/deployd/auth/github/githubtest"
)

func writeFile(t *testing.T, name string, data []byte, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // WriteFile's mode is masked by umask
		t.Fatal(err)
	}
	return p
}

func TestLoadPrivateKeyPKCS1AndPKCS8(t *testing.T) {
	k, pkcs1 := appKey(t)
	for name, data := range map[string][]byte{"pkcs1": pkcs1, "pkcs8": githubtest.PKCS8(t, k)} {
		t.Run(name, func(t *testing.T) {
			key, warn, err := github.LoadPrivateKey(writeFile(t, "app.pem", data, 0o600))
			if err != nil {
				t.Fatal(err)
			}
			if warn != "" {
				t.Errorf("warning for a 0600 file: %s", warn)
			}
			if !key.Public().Equal(&k.PublicKey) {
				t.Fatal("loaded a different key")
			}
			// The key signs JWTs that the fake GitHub accepts.
			e := newEnv(t, func(c *github.AppConfig) { c.Key = key })
			if _, err := e.app.Verify(context.Background()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestLoadPrivateKeyWarnsWhenOthersCanRead(t *testing.T) {
	_, data := appKey(t)
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604} {
		p := writeFile(t, "app.pem", data, mode)
		_, warn, err := github.LoadPrivateKey(p)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(warn, "readable by group or others") || !strings.Contains(warn, "chmod 600 "+p) {
			t.Errorf("mode %o: warning %q", mode, warn)
		}
	}
}

func TestLoadPrivateKeyErrors(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalECPrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	const garbage = "THIS-IS-SECRET-GARBAGE-CONTENT"
	brokenRSA := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: []byte(garbage)})
	dir := t.TempDir()
	for _, tc := range []struct {
		name  string
		path  string
		want  string
		isErr error
	}{
		{"missing", filepath.Join(dir, "nope.pem"), "does not exist", nil},
		{"directory", dir, "is a directory", nil},
		{"empty path", "", "no key file configured", nil},
		{"garbage", writeFile(t, "g.pem", []byte(garbage), 0o600), "not a PEM file", github.ErrNotPEM},
		{"broken PKCS#1", writeFile(t, "b.pem", brokenRSA, 0o600), "not a valid PKCS#1 key", nil},
		{"ECDSA PKCS#8", writeFile(t, "ec8.pem", githubtest.PKCS8(t, ec), 0o600), "ECDSA key; GitHub App keys are RSA", github.ErrNotRSA},
		{"EC SEC1", writeFile(t, "ec.pem", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER}), 0o600), "EC key", github.ErrNotRSA},
		{"Ed25519", writeFile(t, "ed.pem", githubtest.PKCS8(t, ed), 0o600), "Ed25519", github.ErrNotRSA},
		{"certificate", writeFile(t, "c.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte(garbage)}), 0o600), `"CERTIFICATE"`, github.ErrNotRSA},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key, _, err := github.LoadPrivateKey(tc.path)
			if err == nil || key != nil {
				t.Fatalf("LoadPrivateKey(%s) = %v, %v; want an error", tc.path, key, err)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.path) {
				t.Errorf("error %q lacks %q or the path", err, tc.want)
			}
			if tc.isErr != nil && !errors.Is(err, tc.isErr) {
				t.Errorf("error %v is not %v", err, tc.isErr)
			}
			if strings.Contains(err.Error(), garbage) || strings.Contains(err.Error(), "BEGIN") {
				t.Errorf("error shows the file content: %v", err)
			}
		})
	}
}

func TestParsePrivateKeyNeverShowsMaterial(t *testing.T) {
	_, data := appKey(t)
	key, err := github.ParsePrivateKey(data)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := github.ParsePrivateKey(data[:len(data)/2]); err == nil {
		t.Fatal("half a key parsed")
	} else if strings.Contains(err.Error(), string(data[40:80])) {
		t.Errorf("error shows key material: %v", err)
	}
	assertRedacted(t, key)
}
