package github

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/golang/snappy"
	gogithub "github.com/google/go-github/v62/github"
)

// attestationsRead is the permission set of attestation tokens.
func attestationsRead() Permissions { return Permissions{"attestations": "read"} }

// Limits of the attestations a digest may have, against a runaway answer.
const (
	// MaxBundleSize caps one bundle, inline or fetched from its
	// bundle_url after snappy decompression.
	MaxBundleSize = 4 << 20
	// maxAttestationPages caps the pages of one listing (100 each).
	maxAttestationPages = 10
)

// AttestationsConfig is what NewAttestations needs.
type AttestationsConfig struct {
	// App mints the installation tokens (attestations: read, one
	// repository). Required.
	App *App
	// Transport carries the API requests and the bundle_url fetches; nil
	// means http.DefaultTransport.
	Transport http.RoundTripper
	// Timeout bounds each HTTP request; 0 means the App's timeout.
	Timeout time.Duration
}

// Attestations lists the attestations of an image digest
// (GET /repos/{owner}/{repo}/attestations/sha256:..., paged) with an
// installation token of the App down-scoped to attestations: read and the
// one repository, and fetches the bundles GitHub answers as a pre-signed
// bundle_url (snappy compressed) without the token. It is safe for
// concurrent use.
type Attestations struct {
	app     *App
	gh      *gogithub.Client // unauthenticated; each call adds its token
	bundles *http.Client     // never carries the token
}

// NewAttestations checks cfg and returns a client. It makes no request.
func NewAttestations(cfg AttestationsConfig) (*Attestations, error) {
	if cfg.App == nil {
		return nil, errors.New("new attestations client: no GitHub App")
	}
	gh, err := cfg.App.restClient(cfg.Transport, cfg.Timeout)
	if err != nil {
		return nil, fmt.Errorf("new attestations client: %w", err)
	}
	return &Attestations{app: cfg.App, gh: gh, bundles: &http.Client{Transport: cfg.Transport, Timeout: gh.Client().Timeout}}, nil
}

// restClient returns an unauthenticated go-github client for the App's API
// root over transport, each request bounded by timeout (0: the App's).
func (a *App) restClient(transport http.RoundTripper, timeout time.Duration) (*gogithub.Client, error) {
	base, err := url.Parse(a.APIURL())
	if err != nil {
		return nil, err
	}
	if timeout <= 0 {
		timeout = a.timeout
	}
	gh := gogithub.NewClient(&http.Client{Transport: transport, Timeout: timeout})
	gh.BaseURL = base
	return gh, nil
}

// attestationPage is one page of GitHub's answer.
type attestationPage struct {
	Attestations []struct {
		Bundle    json.RawMessage `json:"bundle"`
		BundleURL string          `json:"bundle_url"`
	} `json:"attestations"`
}

// Bundles returns the Sigstore bundles (JSON) GitHub holds for digest
// ("sha256:<hex>") in repository ("owner/name"), acting as installationID
// (0: the configured one, else the one covering the repository). A digest
// without attestations is no error: the list is empty. A failed call is a
// *Error naming the request (or the context's error); a bundle_url that
// cannot be fetched, or a bundle beyond MaxBundleSize, is an error too.
func (a *Attestations) Bundles(ctx context.Context, repository string, installationID int64, digest string) ([][]byte, error) {
	owner, name, ok := strings.Cut(repository, "/")
	if !ok || owner == "" || name == "" || strings.Contains(name, "/") {
		return nil, fmt.Errorf("list attestations: repository %q is not owner/name", repository)
	}
	if !strings.HasPrefix(digest, "sha256:") || strings.ContainsAny(digest, "/?#") {
		return nil, fmt.Errorf("list attestations: %q is not a sha256 digest", digest)
	}
	inst, err := a.app.ResolveInstallation(ctx, installationID, repository)
	if err != nil {
		return nil, fmt.Errorf("list attestations: %w", err)
	}
	tok, _, err := a.app.ScopedToken(ctx, inst, attestationsRead(), []string{repository})
	if err != nil {
		return nil, fmt.Errorf("list attestations: %w", err)
	}
	gh := a.gh.WithAuthToken(tok.Reveal())
	op := fmt.Sprintf("GET /repos/%s/%s/attestations/%s", owner, name, digest)
	u := fmt.Sprintf("repos/%s/%s/attestations/%s?per_page=100", url.PathEscape(owner), url.PathEscape(name), digest)
	var out [][]byte
	for page := 0; ; page++ {
		if page == maxAttestationPages {
			return nil, fmt.Errorf("%s: more than %d pages of attestations", op, maxAttestationPages)
		}
		req, err := gh.NewRequest(http.MethodGet, u, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
		var p attestationPage
		resp, err := gh.Do(ctx, req, &p)
		if err != nil {
			var er *gogithub.ErrorResponse
			if errors.As(err, &er) && er.Response != nil && er.Response.StatusCode == http.StatusNotFound && page == 0 {
				return nil, nil // GitHub answers 404 for a digest without attestations
			}
			return nil, fmt.Errorf("list attestations: %w", classify(call{
				op: op, appID: a.app.id, installation: inst, repository: repository,
				repositories: []string{repository}, permissions: attestationsRead(),
			}, err, a.app.clock()))
		}
		for _, at := range p.Attestations {
			b, err := a.bundle(ctx, at.Bundle, at.BundleURL)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", op, err)
			}
			out = append(out, b)
		}
		if resp.After == "" {
			return out, nil
		}
		u = fmt.Sprintf("repos/%s/%s/attestations/%s?per_page=100&after=%s", url.PathEscape(owner), url.PathEscape(name), digest, url.QueryEscape(resp.After))
	}
}

// bundle returns an attestation's bundle: inline, or fetched from its
// pre-signed URL without GitHub's token and snappy-decompressed, capped at
// MaxBundleSize.
func (a *Attestations) bundle(ctx context.Context, inline json.RawMessage, bundleURL string) ([]byte, error) {
	if len(inline) > 0 && !bytes.Equal(inline, []byte("null")) {
		if len(inline) > MaxBundleSize {
			return nil, fmt.Errorf("bundle of %d bytes is beyond the %d byte limit", len(inline), MaxBundleSize)
		}
		return inline, nil
	}
	if bundleURL == "" {
		return nil, errors.New("an attestation has neither bundle nor bundle_url")
	}
	u, err := url.Parse(bundleURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, errors.New("an attestation's bundle_url is not an http(s) URL")
	}
	where := u.Scheme + "://" + u.Host + u.Path // the query is the URL's signature: keep it out of errors
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("fetch bundle from %s: %w", where, err)
	}
	resp, err := a.bundles.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch bundle from %s: %w", where, redactURLError(err))
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch bundle from %s: %s", where, resp.Status)
	}
	// Snappy's block format grows at most by about a sixth: a compressed
	// body beyond that bound cannot decompress within the limit.
	compressed, err := io.ReadAll(io.LimitReader(resp.Body, int64(snappy.MaxEncodedLen(MaxBundleSize))+1))
	if err != nil {
		return nil, fmt.Errorf("fetch bundle from %s: %w", where, err)
	}
	return decodeBundle(compressed)
}

// decodeBundle snappy-decompresses a fetched bundle, refusing one whose
// decompressed size is beyond MaxBundleSize before decompressing it.
func decodeBundle(compressed []byte) ([]byte, error) {
	n, err := snappy.DecodedLen(compressed)
	if err != nil {
		return nil, fmt.Errorf("bundle is not snappy compressed: %w", err)
	}
	if n > MaxBundleSize {
		return nil, fmt.Errorf("bundle of %d bytes decompressed is beyond the %d byte limit", n, MaxBundleSize)
	}
	b, err := snappy.Decode(nil, compressed)
	if err != nil {
		return nil, fmt.Errorf("decompress bundle: %w", err)
	}
	return b, nil
}

// redactURLError drops the URL (and its signature) from a transport error.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
