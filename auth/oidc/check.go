package oidc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// maxDocumentBytes bounds what CheckIssuer reads of the discovery document
// and of the key set.
const maxDocumentBytes = 1 << 20

// ErrIssuerUnreachable is returned (wrapped, with the cause) by CheckIssuer
// when the issuer's discovery document or key set could not be fetched: a
// network error, a timeout or a status other than 200. A running Verifier
// then keeps using the keys it has cached.
var ErrIssuerUnreachable = errors.New("OIDC issuer unreachable")

// IssuerInfo is what CheckIssuer found.
type IssuerInfo struct {
	// JWKSURI is the discovery document's jwks_uri.
	JWKSURI string
	// RSAKeys counts the key set's RSA keys, the kind RS256 tokens are
	// signed with.
	RSAKeys int
}

// CheckIssuer fetches issuer's discovery document and key set through
// client, as a Verifier does, and checks that the document names issuer as
// its issuer and that the key set has an RSA key. It fails with
// ErrIssuerUnreachable when either cannot be fetched, and with another
// error when what was fetched is wrong.
func CheckIssuer(ctx context.Context, client *http.Client, issuer string) (IssuerInfo, error) {
	if client == nil {
		client = &http.Client{Timeout: fetchTimeout}
	}
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	discovery := strings.TrimSuffix(issuer, "/") + "/.well-known/openid-configuration"
	if err := getJSON(ctx, client, discovery, &doc); err != nil {
		return IssuerInfo{}, fmt.Errorf("discovery document: %w", err)
	}
	if doc.Issuer != issuer {
		return IssuerInfo{}, fmt.Errorf("discovery document %s names the issuer %q, not %q", discovery, doc.Issuer, issuer)
	}
	if doc.JWKSURI == "" {
		return IssuerInfo{}, fmt.Errorf("discovery document %s has no jwks_uri", discovery)
	}
	var set struct {
		Keys []struct {
			Kty string `json:"kty"`
		} `json:"keys"`
	}
	if err := getJSON(ctx, client, doc.JWKSURI, &set); err != nil {
		return IssuerInfo{}, fmt.Errorf("key set: %w", err)
	}
	info := IssuerInfo{JWKSURI: doc.JWKSURI}
	for _, k := range set.Keys {
		if k.Kty == "RSA" {
			info.RSAKeys++
		}
	}
	if info.RSAKeys == 0 {
		return info, fmt.Errorf("key set %s has no RSA key, so no RS256 token can be verified", doc.JWKSURI)
	}
	return info, nil
}

// getJSON GETs url and decodes its JSON answer into v.
func getJSON(ctx context.Context, client *http.Client, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrIssuerUnreachable, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: GET %s: %s", ErrIssuerUnreachable, url, resp.Status)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxDocumentBytes)).Decode(v); err != nil {
		return fmt.Errorf("GET %s: not JSON: %w", url, err)
	}
	return nil
}
