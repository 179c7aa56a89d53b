package githubtest

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// GitHub's answers to a JWT it refuses.
const (
	MsgJWTUndecodable = "A JSON web token could not be decoded"
	MsgJWTExpired     = "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires"
	MsgJWTTooFar      = "'Expiration time' claim ('exp') is too far in the future"
	MsgJWTIssuedAt    = "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued"
)

// jwtLeeway is how far in the future the fake accepts a JWT's iat.
const jwtLeeway = 10 * time.Second

// TokenLifetime is how long the fake's installation tokens live, as GitHub's.
const TokenLifetime = time.Hour

// Down says how a FakeGitHub that is down fails.
type Down int

// The ways to be down.
const (
	// Up: answer normally.
	Up Down = iota
	// DownRefused: stop listening, so that connections are refused.
	DownRefused
	// DownHangUp: accept the connection and close it without an answer, as a
	// dead proxy or a network failure does.
	DownHangUp
	// Down500: answer 503 Service Unavailable.
	Down500
)

// Installation is an installation of the fake App.
type Installation struct {
	ID int64
	// Account is the user or organization the App is installed on.
	Account string
	// Repositories the installation may access; nil means all of the account's.
	Repositories []string
	// Permissions granted; nil means {"packages": "read", "metadata": "read",
	// "deployments": "write", "attestations": "read"}.
	Permissions map[string]string
}

// Mint records one minted installation token.
type Mint struct {
	InstallationID int64
	// Permissions and Repositories are what the request body asked for.
	Permissions  map[string]string
	Repositories []string
	Token        string
	ExpiresAt    time.Time
}

// Deployment records a POST /repos/{owner}/{repo}/deployments.
type Deployment struct {
	ID          int64
	Repository  string // owner/repo
	Ref         string
	Environment string
	Body        json.RawMessage
}

// DeploymentStatus records a POST /repos/{owner}/{repo}/deployments/{id}/statuses.
type DeploymentStatus struct {
	DeploymentID   int64
	Repository     string
	State          string
	EnvironmentURL string
	LogURL         string
	Description    string
	Body           json.RawMessage
}

// FakeGitHub is an httptest server that answers like GitHub's REST API for
// what deployd uses: GET /app, GET /app/installations/{id},
// GET /repos/{o}/{r}/installation, POST /app/installations/{id}/access_tokens,
// the Deployments API, attestations (GET /repos/{o}/{r}/attestations/{digest},
// see AddAttestation), the App's webhook delivery log
// (GET /app/hook/deliveries, POST /app/hook/deliveries/{id}/attempts). App
// endpoints check the JWT like GitHub (RS256 signed by the App's key, iss the
// App ID, exp in the future and at most 10 minutes ahead, iat not in the
// future) and answer 401 with GitHub's messages
// otherwise. Every method is safe for concurrent use.
type FakeGitHub struct {
	// URL is the API root, ending in a slash; point api_url at it.
	URL string
	// AppID is the App's ID.
	AppID int64

	server   *httptest.Server
	listener *switchListener
	t        testing.TB

	mu            sync.Mutex
	pub           *rsa.PublicKey
	clock         func() time.Time
	installations map[int64]Installation
	down          Down
	rateLimited   time.Time // reset time; zero: not limited
	requests      int
	mints         []Mint
	tokens        map[string]Mint
	deployments   []Deployment
	statuses      []DeploymentStatus
	hooks         hookLog

	attestations            map[string][]attestation // by "owner/repo@digest"
	attestationLists        int
	authorizedBundleFetches int
}

// NewFakeGitHub starts a fake GitHub for App appID whose key pair has the
// public key pub. It is closed when the test ends.
func NewFakeGitHub(t testing.TB, appID int64, pub *rsa.PublicKey) *FakeGitHub {
	t.Helper()
	f := &FakeGitHub{
		AppID:         appID,
		pub:           pub,
		clock:         time.Now,
		installations: make(map[int64]Installation),
		tokens:        make(map[string]Mint),
	}
	ln, err := newSwitchListener()
	if err != nil {
		t.Fatalf("fake GitHub: %v", err)
	}
	f.t, f.listener = t, ln
	f.server = httptest.NewUnstartedServer(f.handler())
	_ = f.server.Listener.Close()
	f.server.Listener = ln
	f.server.Start()
	f.URL = f.server.URL + "/"
	t.Cleanup(f.server.Close)
	return f
}

// enterprisePrefix is where GitHub Enterprise Server serves its REST API.
const enterprisePrefix = "/api/v3/"

// EnterpriseURL returns the fake's API root the way GitHub Enterprise Server
// spells it (https://HOST/api/v3, no trailing slash); the fake answers there
// too.
func (f *FakeGitHub) EnterpriseURL() string {
	return f.server.URL + strings.TrimSuffix(enterprisePrefix, "/")
}

// Client returns an HTTP client for the fake's server.
func (f *FakeGitHub) Client() *http.Client { return f.server.Client() }

// SetClock sets the fake's clock, used for JWT checks, token expiry and the
// Date header.
func (f *FakeGitHub) SetClock(now func() time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.clock = now
}

// SetPublicKey replaces the key that JWTs must be signed with.
func (f *FakeGitHub) SetPublicKey(pub *rsa.PublicKey) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pub = pub
}

// AddInstallation installs the App (or replaces the installation with the
// same ID).
func (f *FakeGitHub) AddInstallation(in Installation) {
	if in.Permissions == nil {
		in.Permissions = map[string]string{"packages": "read", "metadata": "read", "deployments": "write", "attestations": "read"}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.installations[in.ID] = in
}

// RemoveInstallation uninstalls the App from an installation.
func (f *FakeGitHub) RemoveInstallation(id int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.installations, id)
}

// SetDown makes every request fail in the given way, or answer again (Up).
// Must be called from the test's goroutine (it may call t.Fatal).
func (f *FakeGitHub) SetDown(d Down) {
	f.mu.Lock()
	f.down = d
	f.mu.Unlock()
	if d == DownRefused {
		f.listener.refuse()
		f.server.CloseClientConnections()
		return
	}
	if err := f.listener.listen(); err != nil {
		f.t.Fatalf("fake GitHub: %v", err)
	}
}

// SetRateLimited makes every request answer 403 with X-RateLimit-Remaining 0
// and the given reset time; the zero time lifts the limit.
func (f *FakeGitHub) SetRateLimited(reset time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rateLimited = reset
}

// Requests returns how many requests reached the fake (including refused ones).
func (f *FakeGitHub) Requests() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests
}

// MintCount returns how many installation tokens were minted.
func (f *FakeGitHub) MintCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.mints)
}

// Mints returns every minted token with what its request asked for.
func (f *FakeGitHub) Mints() []Mint {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.mints)
}

// ValidToken reports whether token was minted by the fake and has not
// expired by the fake's clock: for a fake registry's token endpoint.
func (f *FakeGitHub) ValidToken(token string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.tokens[token]
	return ok && f.clock().Before(m.ExpiresAt)
}

// Deployments returns the recorded deployments.
func (f *FakeGitHub) Deployments() []Deployment {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.deployments)
}

// DeploymentStatuses returns the recorded deployment statuses.
func (f *FakeGitHub) DeploymentStatuses() []DeploymentStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.statuses)
}

func (f *FakeGitHub) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /app", f.app(f.getApp))
	mux.HandleFunc("GET /app/installations/{id}", f.app(f.getInstallation))
	mux.HandleFunc("GET /repos/{owner}/{repo}/installation", f.app(f.repoInstallation))
	mux.HandleFunc("POST /app/installations/{id}/access_tokens", f.app(f.accessToken))
	mux.HandleFunc("POST /repos/{owner}/{repo}/deployments", f.installation(f.createDeployment))
	mux.HandleFunc("POST /repos/{owner}/{repo}/deployments/{id}/statuses", f.installation(f.createStatus))
	mux.HandleFunc("GET /repos/{owner}/{repo}/attestations/{digest}", f.installation(f.listAttestations))
	mux.HandleFunc("GET /attestation-bundles", f.bundleByURL)
	mux.HandleFunc("GET /app/hook/deliveries", f.app(f.listHookDeliveries))
	mux.HandleFunc("POST /app/hook/deliveries/{id}/attempts", f.app(f.redeliver))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "Not Found")
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.requests++
		down, limit, now := f.down, f.rateLimited, f.clock()
		f.mu.Unlock()
		switch down {
		case DownHangUp:
			if hj, ok := w.(http.Hijacker); ok {
				if conn, _, err := hj.Hijack(); err == nil {
					_ = conn.Close()
					return
				}
			}
			panic(http.ErrAbortHandler)
		case Down500:
			writeError(w, http.StatusServiceUnavailable, "Service Unavailable")
			return
		}
		w.Header().Set("Date", now.UTC().Format(http.TimeFormat))
		if p, ok := strings.CutPrefix(r.URL.Path, enterprisePrefix); ok {
			r = r.Clone(r.Context())
			r.URL.Path, r.URL.RawPath = "/"+p, ""
		}
		if !limit.IsZero() {
			w.Header().Set("X-RateLimit-Limit", "5000")
			w.Header().Set("X-RateLimit-Remaining", "0")
			w.Header().Set("X-RateLimit-Used", "5000")
			w.Header().Set("X-RateLimit-Reset", strconv.FormatInt(limit.Unix(), 10))
			w.Header().Set("X-RateLimit-Resource", "core")
			writeError(w, http.StatusForbidden, fmt.Sprintf("API rate limit exceeded for app ID %d.", f.AppID))
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// app wraps an App endpoint: the JWT must be valid.
func (f *FakeGitHub) app(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if msg := f.checkJWT(r); msg != "" {
			writeError(w, http.StatusUnauthorized, msg)
			return
		}
		h(w, r)
	}
}

// checkJWT returns GitHub's message for a refused JWT, "" if it is valid.
func (f *FakeGitHub) checkJWT(r *http.Request) string {
	f.mu.Lock()
	pub, now := f.pub, f.clock()
	f.mu.Unlock()
	raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return MsgJWTUndecodable
	}
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(raw, claims, func(*jwt.Token) (any, error) { return pub, nil },
		jwt.WithValidMethods([]string{"RS256"}), jwt.WithoutClaimsValidation())
	if err != nil {
		return MsgJWTUndecodable
	}
	switch iss := claims["iss"].(type) {
	case string:
		if iss != strconv.FormatInt(f.AppID, 10) {
			return MsgJWTUndecodable
		}
	case float64:
		if iss != float64(f.AppID) {
			return MsgJWTUndecodable
		}
	default:
		return MsgJWTUndecodable
	}
	exp, ok := numericClaim(claims, "exp")
	if !ok || !exp.After(now) {
		return MsgJWTExpired
	}
	iat, ok := numericClaim(claims, "iat")
	if !ok || iat.After(now.Add(jwtLeeway)) {
		return MsgJWTIssuedAt
	}
	if exp.Sub(iat) > 10*time.Minute || exp.After(now.Add(10*time.Minute+jwtLeeway)) {
		return MsgJWTTooFar
	}
	return ""
}

func numericClaim(c jwt.MapClaims, name string) (time.Time, bool) {
	v, ok := c[name].(float64)
	if !ok || math.IsNaN(v) || v != math.Trunc(v) {
		return time.Time{}, false
	}
	return time.Unix(int64(v), 0), true
}

// installation wraps a repository endpoint: the request must carry a valid
// installation token whose installation covers the repository.
func (f *FakeGitHub) installation(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		tok, ok := strings.CutPrefix(auth, "token ")
		if !ok {
			tok, _ = strings.CutPrefix(auth, "Bearer ")
		}
		f.mu.Lock()
		m, known := f.tokens[tok]
		valid := known && f.clock().Before(m.ExpiresAt)
		in, installed := f.installations[m.InstallationID]
		f.mu.Unlock()
		if !valid {
			writeError(w, http.StatusUnauthorized, "Bad credentials")
			return
		}
		owner, repo := r.PathValue("owner"), r.PathValue("repo")
		if !installed || !covers(in, owner, repo) ||
			(m.Repositories != nil && !slices.Contains(m.Repositories, strings.ToLower(repo))) {
			writeError(w, http.StatusNotFound, "Not Found")
			return
		}
		h(w, r)
	}
}

func (f *FakeGitHub) getApp(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"id":    f.AppID,
		"slug":  "deployd-test",
		"name":  "deployd test",
		"owner": map[string]any{"login": "acme", "type": "Organization"},
		"permissions": map[string]string{
			"packages": "read", "metadata": "read", "deployments": "write",
		},
		"events": []string{"registry_package", "workflow_run"},
	})
}

func (f *FakeGitHub) getInstallation(w http.ResponseWriter, r *http.Request) {
	id, _ := strconv.ParseInt(r.PathValue("id"), 10, 64)
	f.mu.Lock()
	in, ok := f.installations[id]
	f.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	writeJSON(w, http.StatusOK, installationJSON(f.AppID, in))
}

func (f *FakeGitHub) repoInstallation(w http.ResponseWriter, r *http.Request) {
	owner, repo := r.PathValue("owner"), r.PathValue("repo")
	f.mu.Lock()
	var found *Installation
	for _, in := range f.installations {
		if covers(in, owner, repo) && (found == nil || in.ID < found.ID) {
			found = &in
		}
	}
	f.mu.Unlock()
	if found == nil {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	writeJSON(w, http.StatusOK, installationJSON(f.AppID, *found))
}

func covers(in Installation, owner, repo string) bool {
	if !strings.EqualFold(in.Account, owner) {
		return false
	}
	if in.Repositories == nil {
		return true
	}
	return slices.ContainsFunc(in.Repositories, func(r string) bool { return strings.EqualFold(r, repo) })
}

func installationJSON(appID int64, in Installation) map[string]any {
	sel := "all"
	if in.Repositories != nil {
		sel = "selected"
	}
	return map[string]any{
		"id":                   in.ID,
		"app_id":               appID,
		"account":              map[string]any{"login": in.Account},
		"repository_selection": sel,
		"permissions":          in.Permissions,
	}
}

var levels = map[string]int{"read": 1, "write": 2, "admin": 3}

func (f *FakeGitHub) accessToken(w http.ResponseWriter, r *http.Request) {
	id, _ := strconv.ParseInt(r.PathValue("id"), 10, 64)
	var body struct {
		Repositories  []string          `json:"repositories"`
		RepositoryIDs []int64           `json:"repository_ids"`
		Permissions   map[string]string `json:"permissions"`
	}
	if r.ContentLength != 0 {
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			writeError(w, http.StatusBadRequest, "Problems parsing JSON")
			return
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	in, ok := f.installations[id]
	if !ok {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	for name, level := range body.Permissions {
		granted, ok := in.Permissions[name]
		if levels[level] == 0 || !ok || levels[granted] < levels[level] {
			writeError(w, http.StatusUnprocessableEntity, "The permissions requested are not granted to this installation.")
			return
		}
	}
	var repos []string
	for _, repo := range body.Repositories {
		if !covers(in, in.Account, repo) {
			writeError(w, http.StatusUnprocessableEntity, "There is at least one repository that does not exist or is not accessible to the parent installation.")
			return
		}
		repos = append(repos, strings.ToLower(repo))
	}
	perms := body.Permissions
	if perms == nil {
		perms = in.Permissions
	}
	m := Mint{
		InstallationID: id,
		Permissions:    body.Permissions,
		Repositories:   repos,
		Token:          "ghs_" + randomHex(20),
		ExpiresAt:      f.clock().Add(TokenLifetime).UTC().Truncate(time.Second),
	}
	f.mints = append(f.mints, m)
	f.tokens[m.Token] = m
	resp := map[string]any{
		"token":                m.Token,
		"expires_at":           m.ExpiresAt.Format(time.RFC3339),
		"permissions":          perms,
		"repository_selection": "all",
	}
	if repos != nil {
		resp["repository_selection"] = "selected"
		var rs []map[string]any
		for _, name := range repos {
			rs = append(rs, map[string]any{"name": name, "full_name": strings.ToLower(in.Account) + "/" + name})
		}
		resp["repositories"] = rs
	}
	writeJSON(w, http.StatusCreated, resp)
}

func (f *FakeGitHub) createDeployment(w http.ResponseWriter, r *http.Request) {
	raw, body, ok := readBody(w, r)
	if !ok {
		return
	}
	ref, _ := body["ref"].(string)
	if ref == "" {
		writeError(w, http.StatusUnprocessableEntity, "Invalid request.\n\n\"ref\" wasn't supplied.")
		return
	}
	env, _ := body["environment"].(string)
	if env == "" {
		env = "production"
	}
	repo := r.PathValue("owner") + "/" + r.PathValue("repo")
	f.mu.Lock()
	d := Deployment{ID: int64(len(f.deployments) + 1), Repository: repo, Ref: ref, Environment: env, Body: raw}
	f.deployments = append(f.deployments, d)
	f.mu.Unlock()
	writeJSON(w, http.StatusCreated, map[string]any{
		"id": d.ID, "ref": d.Ref, "environment": d.Environment,
		"url": fmt.Sprintf("%srepos/%s/deployments/%d", f.URL, repo, d.ID),
	})
}

func (f *FakeGitHub) createStatus(w http.ResponseWriter, r *http.Request) {
	id, _ := strconv.ParseInt(r.PathValue("id"), 10, 64)
	raw, body, ok := readBody(w, r)
	if !ok {
		return
	}
	repo := r.PathValue("owner") + "/" + r.PathValue("repo")
	str := func(k string) string { s, _ := body[k].(string); return s }
	s := DeploymentStatus{
		DeploymentID: id, Repository: repo, State: str("state"),
		EnvironmentURL: str("environment_url"), LogURL: str("log_url"), Description: str("description"),
		Body: raw,
	}
	f.mu.Lock()
	known := id >= 1 && id <= int64(len(f.deployments)) && f.deployments[id-1].Repository == repo
	if known {
		f.statuses = append(f.statuses, s)
	}
	n := len(f.statuses)
	f.mu.Unlock()
	if !known {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	switch s.State {
	case "error", "failure", "inactive", "in_progress", "queued", "pending", "success":
	default:
		writeError(w, http.StatusUnprocessableEntity, "Validation Failed")
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"id": n, "state": s.State, "environment_url": s.EnvironmentURL, "log_url": s.LogURL})
}

func readBody(w http.ResponseWriter, r *http.Request) (json.RawMessage, map[string]any, bool) {
	var raw json.RawMessage
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&raw); err != nil {
		writeError(w, http.StatusBadRequest, "Problems parsing JSON")
		return nil, nil, false
	}
	var body map[string]any
	if err := json.Unmarshal(raw, &body); err != nil {
		writeError(w, http.StatusBadRequest, "Problems parsing JSON")
		return nil, nil, false
	}
	return raw, body, true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{
		"message":           msg,
		"documentation_url": "https://docs.github.com/rest",
		"status":            strconv.Itoa(status),
	})
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(errors.New("githubtest: no randomness"))
	}
	return hex.EncodeToString(b)
}
