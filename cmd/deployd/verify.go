package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/deployd/deployd/attest"
	"github.com/deployd/deployd/auth/github"
	"github.com/deployd/deployd/configs"
	"github.com/deployd/deployd/deployer"
)

// newImageVerifier builds the verify-image step's verifier when some
// service verifies its images: attestations from GitHub through the App,
// verified against trust.root. It returns nil when no service verifies.
func newImageVerifier(cfg *configs.Config, app *github.App) (deployer.ImageVerifier, error) {
	if !cfg.Verifying() {
		return nil, nil
	}
	if app == nil {
		return nil, errors.New("image verification needs github.app: attestations are fetched with its installation tokens")
	}
	roots, err := newTrustRoot(cfg.Trust, cfg.TUFCacheDir())
	if err != nil {
		return nil, err
	}
	verifier, err := attest.NewVerifier(roots, nil)
	if err != nil {
		return nil, err
	}
	source, err := github.NewAttestations(github.AttestationsConfig{App: app})
	if err != nil {
		return nil, err
	}
	return attest.NewChecker(source, verifier, nil)
}

// newTrustRoot reads trust.root: a trusted_root.json file at once, or a
// TUF instance whose trusted root is fetched (or read from the cache in
// cacheDir) at the first verification.
func newTrustRoot(t configs.Trust, cacheDir string) (attest.Roots, error) {
	if t.TrustFile() {
		r, err := attest.NewFileRoot(t.Root)
		if err != nil {
			return nil, fmt.Errorf("trust.root: %w", err)
		}
		return r, nil
	}
	var initial []byte
	if t.TUFRootFile != "" {
		b, err := os.ReadFile(t.TUFRootFile)
		if err != nil {
			return nil, fmt.Errorf("trust.tuf_root_file: %w", err)
		}
		initial = b
	}
	if err := os.MkdirAll(cacheDir, 0o700); err != nil {
		return nil, fmt.Errorf("create the TUF cache: %w", err)
	}
	r, err := attest.NewTUFRoot(attest.TUFConfig{Instance: t.Root, URL: t.TUFURL, InitialRoot: initial, CacheDir: cacheDir})
	if err != nil {
		return nil, fmt.Errorf("trust.root: %w", err)
	}
	return r, nil
}
