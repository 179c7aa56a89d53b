package githubtest

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/golang/snappy"
)

// attestationsPageSize is how many attestations the fake answers per page
// unless per_page asks for fewer.
const attestationsPageSize = 30

// attestation is one stored attestation of a digest.
type attestation struct {
	bundle []byte
	// byURL serves the bundle at a pre-signed bundle_url, snappy
	// compressed, instead of inline.
	byURL bool
}

// AddAttestation stores a Sigstore bundle (JSON) as an attestation of
// digest in repository ("owner/name"), answered by
// GET /repos/{owner}/{repo}/attestations/{digest} to an installation token
// with attestations: read. With byURL the answer carries a bundle_url
// instead of the bundle, as GitHub does for large or newer attestations:
// a pre-signed URL on the fake that serves the bundle snappy compressed
// and refuses requests that carry an Authorization header.
func (f *FakeGitHub) AddAttestation(repository, digest string, bundle []byte, byURL bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.attestations == nil {
		f.attestations = map[string][]attestation{}
	}
	k := strings.ToLower(repository) + "@" + digest
	f.attestations[k] = append(f.attestations[k], attestation{bundle: append([]byte(nil), bundle...), byURL: byURL})
}

// AttestationRequests returns how many attestation list requests were
// answered, and how many bundle_url fetches carried an Authorization
// header (and were refused).
func (f *FakeGitHub) AttestationRequests() (lists, authorizedBundleFetches int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.attestationLists, f.authorizedBundleFetches
}

func (f *FakeGitHub) listAttestations(w http.ResponseWriter, r *http.Request) {
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "token ")
	if t, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		tok = t
	}
	repo := strings.ToLower(r.PathValue("owner") + "/" + r.PathValue("repo"))
	digest := r.PathValue("digest")
	f.mu.Lock()
	granted := levels[f.tokens[tok].Permissions["attestations"]] >= levels["read"]
	all := f.attestations[repo+"@"+digest]
	f.attestationLists++
	f.mu.Unlock()
	if !granted {
		writeError(w, http.StatusForbidden, "Resource not accessible by integration")
		return
	}
	if len(all) == 0 {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	size := attestationsPageSize
	if n, err := strconv.Atoi(r.URL.Query().Get("per_page")); err == nil && n > 0 && n < size {
		size = n
	}
	start := 0
	if a := r.URL.Query().Get("after"); a != "" {
		n, err := strconv.Atoi(a)
		if err != nil || n < 0 || n > len(all) {
			writeError(w, http.StatusBadRequest, "Invalid cursor")
			return
		}
		start = n
	}
	end := min(start+size, len(all))
	var out []map[string]any
	for i := start; i < end; i++ {
		a := all[i]
		entry := map[string]any{"repository_id": 1}
		if a.byURL {
			q := url.Values{"repo": {repo}, "digest": {digest}, "i": {strconv.Itoa(i)}, "sig": {randomHex(8)}}
			entry["bundle_url"] = f.URL + "attestation-bundles?" + q.Encode()
		} else {
			entry["bundle"] = json.RawMessage(a.bundle)
		}
		out = append(out, entry)
	}
	if end < len(all) {
		next := *r.URL
		q := next.Query()
		q.Set("after", strconv.Itoa(end))
		next.RawQuery = q.Encode()
		w.Header().Set("Link", `<`+strings.TrimSuffix(f.URL, "/")+next.RequestURI()+`>; rel="next"`)
	}
	writeJSON(w, http.StatusOK, map[string]any{"attestations": out})
}

// bundleByURL serves a bundle_url: the bundle snappy compressed, to a
// request without credentials only.
func (f *FakeGitHub) bundleByURL(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	i, _ := strconv.Atoi(q.Get("i"))
	f.mu.Lock()
	all := f.attestations[q.Get("repo")+"@"+q.Get("digest")]
	authorized := r.Header.Get("Authorization") != ""
	if authorized {
		f.authorizedBundleFetches++
	}
	f.mu.Unlock()
	if authorized {
		// A pre-signed URL carries its own authorization.
		writeError(w, http.StatusBadRequest, "Only one auth mechanism allowed")
		return
	}
	if i < 0 || i >= len(all) || !all[i].byURL {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	w.Header().Set("Content-Type", "application/x-snappy")
	_, _ = w.Write(snappy.Encode(nil, all[i].bundle))
}
