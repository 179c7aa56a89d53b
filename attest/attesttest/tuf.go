package attesttest

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// TUF is a TUF repository over HTTP whose one target is s's
// trusted_root.json, as Sigstore's and GitHub's TUF repositories serve
// theirs: one key per top-level role, consistent snapshots.
type TUF struct {
	// URL is the repository's base URL (trust.tuf_url).
	URL string
	// Root is the repository's root.json, the client's trust anchor
	// (trust.tuf_root_file).
	Root []byte

	server *httptest.Server
	mu     sync.Mutex
	files  map[string][]byte
	gets   int
}

// ServeTUF starts a TUF repository serving TrustedRoot(validUntil), its
// metadata expiring at expires (zero: a day from now). It is closed when
// the test ends, or by Close.
func (s *Sigstore) ServeTUF(t testing.TB, validUntil, expires time.Time) *TUF {
	t.Helper()
	trusted, err := s.TrustedRoot(validUntil)
	if err != nil {
		t.Fatal(err)
	}
	if expires.IsZero() {
		expires = time.Now().Add(24 * time.Hour)
	}
	files, root, err := tufRepository(trusted, expires.UTC())
	if err != nil {
		t.Fatal(err)
	}
	r := &TUF{Root: root, files: files}
	r.server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		b, ok := r.files[req.URL.Path]
		r.gets++
		r.mu.Unlock()
		if !ok {
			http.NotFound(w, req)
			return
		}
		_, _ = w.Write(b)
	}))
	r.URL = r.server.URL
	t.Cleanup(r.Close)
	return r
}

// Close stops serving: the repository becomes unreachable.
func (r *TUF) Close() { r.server.Close() }

// Requests returns how many requests the repository answered.
func (r *TUF) Requests() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gets
}

// tufRepository signs the four top-level roles over one target,
// trusted_root.json, and returns the files by URL path and root.json.
func tufRepository(trusted []byte, expires time.Time) (map[string][]byte, []byte, error) {
	root := metadata.Root(expires)
	targets := metadata.Targets(expires)
	snapshot := metadata.Snapshot(expires)
	timestamp := metadata.Timestamp(expires)
	sum := sha256.Sum256(trusted)
	name := "trusted_root.json"
	tf, err := metadata.TargetFile().FromBytes(name, trusted, "sha256")
	if err != nil {
		return nil, nil, fmt.Errorf("target: %w", err)
	}
	targets.Signed.Targets[name] = tf
	signers := map[string]signature.Signer{}
	for _, role := range []string{metadata.ROOT, metadata.TARGETS, metadata.SNAPSHOT, metadata.TIMESTAMP} {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, nil, fmt.Errorf("%s key: %w", role, err)
		}
		key, err := metadata.KeyFromPublicKey(priv.Public())
		if err != nil {
			return nil, nil, fmt.Errorf("%s key: %w", role, err)
		}
		if err := root.Signed.AddKey(key, role); err != nil {
			return nil, nil, fmt.Errorf("%s key: %w", role, err)
		}
		if signers[role], err = signature.LoadSigner(priv, crypto.Hash(0)); err != nil {
			return nil, nil, fmt.Errorf("%s signer: %w", role, err)
		}
	}
	files := map[string][]byte{fmt.Sprintf("/targets/%x.%s", sum, name): trusted}
	sign := func(path string, sign func(signature.Signer) (*metadata.Signature, error), role string, encode func(bool) ([]byte, error)) ([]byte, error) {
		if _, err := sign(signers[role]); err != nil {
			return nil, fmt.Errorf("sign %s: %w", role, err)
		}
		b, err := encode(false)
		if err != nil {
			return nil, fmt.Errorf("encode %s: %w", role, err)
		}
		files[path] = b
		return b, nil
	}
	rootJSON, err := sign("/1.root.json", root.Sign, metadata.ROOT, root.ToBytes)
	if err != nil {
		return nil, nil, err
	}
	if _, err := sign("/1.targets.json", targets.Sign, metadata.TARGETS, targets.ToBytes); err != nil {
		return nil, nil, err
	}
	if _, err := sign("/1.snapshot.json", snapshot.Sign, metadata.SNAPSHOT, snapshot.ToBytes); err != nil {
		return nil, nil, err
	}
	if _, err := sign("/timestamp.json", timestamp.Sign, metadata.TIMESTAMP, timestamp.ToBytes); err != nil {
		return nil, nil, err
	}
	return files, rootJSON, nil
}
