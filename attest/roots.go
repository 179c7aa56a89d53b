package attest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/tuf"
	"github.com/sigstore/sigstore-go/pkg/verify"
)

// Roots hands out the trusted material to verify with and the evidence
// it calls for (timestamps, transparency log entries).
type Roots interface {
	Material() (root.TrustedMaterial, []verify.VerifierOption, error)
}

// Trust root names in the configuration.
const (
	RootPublicGood = "public-good" // Sigstore's public-good instance: public repositories
	RootGitHub     = "github"      // GitHub's own instance: private repositories
)

// GitHubTUFURL is the TUF repository of GitHub's Sigstore instance.
const GitHubTUFURL = "https://tuf-repo.github.com"

// Evidence for each instance, as GitHub's own verification asks it:
// public-good signs with Fulcio certificates that carry SCTs and logs every
// signature in Rekor; GitHub's instance timestamps signatures with its
// timestamping authority instead of logging them.
func publicGoodEvidence() []verify.VerifierOption {
	return []verify.VerifierOption{verify.WithSignedCertificateTimestamps(1), verify.WithTransparencyLog(1), verify.WithObserverTimestamps(1)}
}

func githubEvidence() []verify.VerifierOption {
	return []verify.VerifierOption{verify.WithSignedTimestamps(1)}
}

// evidenceFor derives the evidence a trusted root file calls for from what
// it trusts: transparency logs (with SCTs when it lists CT logs), else
// signed timestamps.
func evidenceFor(tm root.TrustedMaterial) []verify.VerifierOption {
	if len(tm.RekorLogs()) > 0 {
		opts := []verify.VerifierOption{verify.WithTransparencyLog(1), verify.WithObserverTimestamps(1)}
		if len(tm.CTLogs()) > 0 {
			opts = append(opts, verify.WithSignedCertificateTimestamps(1))
		}
		return opts
	}
	return githubEvidence()
}

// FileRoot is a trusted_root.json read once.
type FileRoot struct {
	tm       *root.TrustedRoot
	evidence []verify.VerifierOption
}

// NewFileRoot reads the trusted root at path.
func NewFileRoot(path string) (*FileRoot, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read trusted root: %w", err)
	}
	return ParseRoot(b)
}

// ParseRoot reads a trusted_root.json document.
func ParseRoot(b []byte) (*FileRoot, error) {
	tm, err := root.NewTrustedRootFromJSON(b)
	if err != nil {
		return nil, fmt.Errorf("parse trusted root: %w", err)
	}
	return &FileRoot{tm: tm, evidence: evidenceFor(tm)}, nil
}

// Material returns the file's trusted root. It never fails.
func (f *FileRoot) Material() (root.TrustedMaterial, []verify.VerifierOption, error) {
	return f.tm, f.evidence, nil
}

// TUFConfig says where a TUFRoot gets the trusted root.
type TUFConfig struct {
	// Instance is RootPublicGood or RootGitHub.
	Instance string
	// URL is the TUF repository; empty means the instance's.
	URL string
	// InitialRoot is the TUF root.json the client starts from; empty means
	// the one sigstore-go embeds (public-good only).
	InitialRoot []byte
	// CacheDir holds the TUF metadata and targets between runs
	// (<data_dir>/tuf).
	CacheDir string
	// Refresh is how often the trusted root is read again from the cache
	// (and the repository, once the cached metadata expires); 0 means 24h.
	Refresh time.Duration
}

// TUFRoot is a trusted root obtained through TUF. The client uses its
// cache for as long as the cached metadata is valid (ForceCache) and only
// then goes to the repository, so verification works offline for that
// long. Loading is lazy and retried at the next verification when it
// fails. It is safe for concurrent use.
type TUFRoot struct {
	opts     *tuf.Options
	evidence []verify.VerifierOption
	refresh  time.Duration

	mu     sync.Mutex
	tm     *root.TrustedRoot
	loaded time.Time
}

// NewTUFRoot checks cfg and returns a TUFRoot; it makes no request.
func NewTUFRoot(cfg TUFConfig) (*TUFRoot, error) {
	opts := tuf.DefaultOptions()
	var evidence []verify.VerifierOption
	switch cfg.Instance {
	case RootPublicGood:
		evidence = publicGoodEvidence()
	case RootGitHub:
		opts.RepositoryBaseURL = GitHubTUFURL
		evidence = githubEvidence()
		if len(cfg.InitialRoot) == 0 {
			return nil, errors.New("new TUF root: GitHub's instance needs its TUF root.json (trust.tuf_root_file)")
		}
	default:
		return nil, fmt.Errorf("new TUF root: unknown instance %q", cfg.Instance)
	}
	if cfg.URL != "" {
		opts.RepositoryBaseURL = cfg.URL
	}
	if len(cfg.InitialRoot) > 0 {
		opts.Root = cfg.InitialRoot
	}
	if cfg.CacheDir == "" {
		return nil, errors.New("new TUF root: no cache directory")
	}
	opts.CachePath = filepath.Clean(cfg.CacheDir)
	opts.ForceCache = true
	refresh := cfg.Refresh
	if refresh <= 0 {
		refresh = 24 * time.Hour
	}
	return &TUFRoot{opts: opts, evidence: evidence, refresh: refresh}, nil
}

// Material returns the trusted root, loading it through TUF when it was
// never loaded or was loaded more than Refresh ago. When a reload fails,
// the root loaded before is kept; with none, the error says why.
func (t *TUFRoot) Material() (root.TrustedMaterial, []verify.VerifierOption, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tm != nil && time.Since(t.loaded) < t.refresh {
		return t.tm, t.evidence, nil
	}
	c, err := tuf.New(t.opts)
	if err == nil {
		var tm *root.TrustedRoot
		if tm, err = root.GetTrustedRoot(c); err == nil {
			t.tm, t.loaded = tm, time.Now()
			return tm, t.evidence, nil
		}
	}
	if t.tm != nil {
		return t.tm, t.evidence, nil
	}
	return nil, nil, fmt.Errorf("trust root through TUF from %s (cache %s): %w", t.opts.RepositoryBaseURL, t.opts.CachePath, err)
}
