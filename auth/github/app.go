package github

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	gogithub "github.com/google/go-github/v62/github"
	"github.com/rs/zerolog"
	"golang.org/x/sync/singleflight"
)

// Timings of the App's credentials.
const (
	// jwtBackdate is how far in the past a JWT's iat lies, to absorb small
	// clock differences with GitHub.
	jwtBackdate = 60 * time.Second
	// jwtLifetime is how far in the future a JWT's exp lies. GitHub refuses
	// an exp more than 10 minutes ahead; iat-to-exp is exactly 10 minutes.
	jwtLifetime = 9 * time.Minute
	// RefreshBefore is how long before expires_at a cached installation
	// token is replaced by a fresh one.
	RefreshBefore = 5 * time.Minute
	// retryBackoff is how long a cached token is served without asking
	// GitHub again after a failed refresh.
	retryBackoff = 30 * time.Second
	// installationTTL is how long a repository's installation id is cached.
	installationTTL = time.Hour
	// defaultTimeout bounds one GitHub API call.
	defaultTimeout = 30 * time.Second
)

// DefaultAPIURL is github.com's REST API.
const DefaultAPIURL = "https://api.github.com/"

// packagesRead is the permission set of registry pull tokens.
func packagesRead() Permissions { return Permissions{"packages": "read"} }

// Permissions are the permissions an installation token is down-scoped to,
// as GitHub names them: {"packages": "read"}, {"deployments": "write"}.
type Permissions map[string]string

// String lists the permissions sorted by name: "deployments: write, packages: read".
func (p Permissions) String() string {
	names := slices.Sorted(maps.Keys(p))
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = n + ": " + p[n]
	}
	return strings.Join(parts, ", ")
}

// github converts p to go-github's type, refusing names go-github does not
// know and levels other than read, write and admin.
func (p Permissions) github() (*gogithub.InstallationPermissions, error) {
	if len(p) == 0 {
		return nil, errors.New("no permissions: an installation token must be down-scoped")
	}
	for n, v := range p {
		if v != "read" && v != "write" && v != "admin" {
			return nil, fmt.Errorf("permission %s: level %q is not read, write or admin", n, v)
		}
	}
	b, err := json.Marshal(map[string]string(p))
	if err != nil {
		return nil, fmt.Errorf("encode permissions: %w", err)
	}
	var gp gogithub.InstallationPermissions
	if err := json.Unmarshal(b, &gp); err != nil {
		return nil, fmt.Errorf("decode permissions: %w", err)
	}
	back, err := json.Marshal(&gp)
	if err != nil {
		return nil, fmt.Errorf("encode permissions: %w", err)
	}
	var known map[string]string
	if err := json.Unmarshal(back, &known); err != nil {
		return nil, fmt.Errorf("decode permissions: %w", err)
	}
	for n := range p {
		if _, ok := known[n]; !ok && !newerPermissions[n] {
			return nil, fmt.Errorf("unknown GitHub App permission %q", n)
		}
	}
	return &gp, nil
}

// newerPermissions are App permissions GitHub has that go-github v62 does
// not know; the token request sends them all the same.
var newerPermissions = map[string]bool{"attestations": true}

// AppConfig is what NewApp needs. ID and Key are required; the rest have
// defaults.
type AppConfig struct {
	// ID is the App ID from the App's settings page.
	ID int64
	// Key is the App's private key (LoadPrivateKey, ParsePrivateKey).
	Key *PrivateKey
	// APIURL is GitHub's REST API root: https://api.github.com (default),
	// https://HOST/api/v3 for GitHub Enterprise Server, a fake in tests.
	APIURL string
	// InstallationID is the installation used when a request names none;
	// 0 means look it up from the repository.
	InstallationID int64
	// Transport carries the requests; nil means http.DefaultTransport.
	Transport http.RoundTripper
	// Timeout bounds each GitHub API call; 0 means 30s.
	Timeout time.Duration
	// Clock tells the time for JWTs and token expiry; nil means time.Now.
	Clock func() time.Time
	// Logger receives warnings (a stale token served) and mint events. It is
	// used when the call's context carries no zerolog logger.
	Logger zerolog.Logger
}

// App is a GitHub App: it signs JWTs with the App's key and mints
// installation tokens, caching each until RefreshBefore its expiry with at
// most one mint in flight per (installation, permissions, repositories).
// All methods are safe for concurrent use.
type App struct {
	id             int64
	key            *PrivateKey
	installationID int64
	apiURL         string
	gh             *gogithub.Client
	clock          func() time.Time
	log            zerolog.Logger
	timeout        time.Duration

	flights singleflight.Group

	mu       sync.Mutex
	tokens   map[tokenKey]*cachedToken
	installs map[string]cachedInstall // "owner/repo" lower-case → id
	stats    AppStats                 // counters only; Tokens filled by Stats
}

type tokenKey struct {
	installation int64
	permissions  string // Permissions.String()
	repositories string // sorted, comma-separated
}

func (k tokenKey) String() string {
	return fmt.Sprintf("%d|%s|%s", k.installation, k.permissions, k.repositories)
}

type cachedToken struct {
	token      Token
	expires    time.Time
	minted     time.Time
	retryAfter time.Time // after a failed refresh: serve cached until then
}

type cachedInstall struct {
	id      int64
	fetched time.Time
}

// NewApp checks cfg and returns an App. It makes no request: call Verify to
// check the App ID and key against GitHub.
func NewApp(cfg AppConfig) (*App, error) {
	if cfg.ID <= 0 {
		return nil, errors.New("new GitHub App: the App ID must be a positive number")
	}
	if cfg.Key == nil {
		return nil, errors.New("new GitHub App: no private key")
	}
	if cfg.InstallationID < 0 {
		return nil, errors.New("new GitHub App: the installation id must not be negative")
	}
	apiURL, err := normalizeAPIURL(cfg.APIURL)
	if err != nil {
		return nil, fmt.Errorf("new GitHub App: %w", err)
	}
	a := &App{
		id:             cfg.ID,
		key:            cfg.Key,
		installationID: cfg.InstallationID,
		apiURL:         apiURL.String(),
		clock:          cfg.Clock,
		log:            cfg.Logger,
		timeout:        cfg.Timeout,
		tokens:         make(map[tokenKey]*cachedToken),
		installs:       make(map[string]cachedInstall),
	}
	if a.clock == nil {
		a.clock = time.Now
	}
	if a.timeout <= 0 {
		a.timeout = defaultTimeout
	}
	base := cfg.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	a.gh = gogithub.NewClient(&http.Client{
		Transport: &jwtTransport{app: a, base: base},
		Timeout:   a.timeout,
	})
	a.gh.BaseURL = apiURL
	return a, nil
}

// normalizeAPIURL parses GitHub's API root and ends it with a slash, as
// go-github requires.
func normalizeAPIURL(s string) (*url.URL, error) {
	if s == "" {
		s = DefaultAPIURL
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("api_url %q: %w", s, err)
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("api_url %q: want an http(s) URL such as %s or https://HOST/api/v3", s, DefaultAPIURL)
	}
	if u.User != nil {
		return nil, fmt.Errorf("api_url: must not contain credentials")
	}
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
	}
	u.RawQuery, u.Fragment = "", ""
	return u, nil
}

// String describes the App without its key or tokens: "GitHub App 123 at URL".
func (a *App) String() string { return fmt.Sprintf("GitHub App %d at %s", a.id, a.apiURL) }

// Format prints String for every verb, so that printing an App never
// reflects over its key, its cached tokens or its locks.
func (a *App) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, a.String()) }

// ID returns the App ID.
func (a *App) ID() int64 { return a.id }

// APIURL returns the API root the App talks to, ending in a slash.
func (a *App) APIURL() string { return a.apiURL }

// logger returns the context's logger if it carries one, else the App's.
func (a *App) logger(ctx context.Context) *zerolog.Logger {
	if l := zerolog.Ctx(ctx); l.GetLevel() != zerolog.Disabled {
		return l
	}
	return &a.log
}

// signJWT returns the App's JWT: RS256, iss the App ID, iat backdated by a
// minute, exp nine minutes ahead.
func (a *App) signJWT() (string, error) {
	now := a.clock()
	claims := jwt.RegisteredClaims{
		Issuer:    strconv.FormatInt(a.id, 10),
		IssuedAt:  jwt.NewNumericDate(now.Add(-jwtBackdate)),
		ExpiresAt: jwt.NewNumericDate(now.Add(jwtLifetime)),
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodRS256, claims).SignedString(a.key.k)
	if err != nil {
		return "", fmt.Errorf("sign App JWT: %w", err)
	}
	return s, nil
}

// jwtTransport authenticates every request as the App.
type jwtTransport struct {
	app  *App
	base http.RoundTripper
}

func (t *jwtTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	s, err := t.app.signJWT()
	if err != nil {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, err
	}
	r := req.Clone(req.Context())
	r.Header.Set("Authorization", "Bearer "+s)
	return t.base.RoundTrip(r)
}

// AppInfo is what GitHub says about the App (GET /app).
type AppInfo struct {
	ID          int64       `json:"id"`
	Slug        string      `json:"slug"`
	Name        string      `json:"name"`
	Owner       string      `json:"owner"`
	Permissions Permissions `json:"permissions"`
}

// Verify checks that GitHub accepts the App's JWT (GET /app) and returns
// what GitHub knows about the App. A rejected JWT is a *Error of kind
// KindBadJWT whose hint names the likely cause (App ID, key or clock).
func (a *App) Verify(ctx context.Context) (AppInfo, error) {
	app, _, err := a.gh.Apps.Get(ctx, "")
	if err != nil {
		return AppInfo{}, classify(call{op: "GET /app", appID: a.id}, err, a.clock())
	}
	info := AppInfo{
		ID:          app.GetID(),
		Slug:        app.GetSlug(),
		Name:        app.GetName(),
		Owner:       app.GetOwner().GetLogin(),
		Permissions: permissionsOf(app.GetPermissions()),
	}
	if info.ID != 0 && info.ID != a.id {
		return info, fmt.Errorf("GET /app: GitHub answered for App %d, not App %d", info.ID, a.id)
	}
	return info, nil
}

// InstallationInfo is what GitHub says about one installation of the App.
type InstallationInfo struct {
	ID                  int64       `json:"id"`
	Account             string      `json:"account"`
	RepositorySelection string      `json:"repository_selection"` // "all" or "selected"
	Permissions         Permissions `json:"permissions"`
}

// Installation fetches one installation of the App
// (GET /app/installations/{id}). An unknown id is a *Error of kind
// KindNotInstalled.
func (a *App) Installation(ctx context.Context, installationID int64) (InstallationInfo, error) {
	inst, _, err := a.gh.Apps.GetInstallation(ctx, installationID)
	if err != nil {
		return InstallationInfo{}, classify(call{
			op: fmt.Sprintf("GET /app/installations/%d", installationID), appID: a.id, installation: installationID,
		}, err, a.clock())
	}
	return InstallationInfo{
		ID:                  inst.GetID(),
		Account:             inst.GetAccount().GetLogin(),
		RepositorySelection: inst.GetRepositorySelection(),
		Permissions:         permissionsOf(inst.GetPermissions()),
	}, nil
}

func permissionsOf(p *gogithub.InstallationPermissions) Permissions {
	if p == nil {
		return nil
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil
	}
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		return nil
	}
	return Permissions(m)
}

// InstallationForRepo returns the id of the App's installation that covers
// owner/repo (GET /repos/{owner}/{repo}/installation), cached for an hour.
// An App not installed there is a *Error of kind KindNotInstalled.
func (a *App) InstallationForRepo(ctx context.Context, owner, repo string) (int64, error) {
	if owner == "" || repo == "" {
		return 0, fmt.Errorf("find installation: repository %q/%q: want owner and name", owner, repo)
	}
	full := strings.ToLower(owner + "/" + repo)
	a.mu.Lock()
	c, ok := a.installs[full]
	a.mu.Unlock()
	if ok && a.clock().Sub(c.fetched) < installationTTL {
		return c.id, nil
	}
	v, err := a.flight(ctx, "installation|"+full, func(ctx context.Context) (any, error) {
		inst, _, err := a.gh.Apps.FindRepositoryInstallation(ctx, owner, repo)
		if err != nil {
			return nil, classify(call{
				op: fmt.Sprintf("GET /repos/%s/%s/installation", owner, repo), appID: a.id, repository: owner + "/" + repo,
			}, err, a.clock())
		}
		if inst.GetID() == 0 {
			return nil, fmt.Errorf("GET /repos/%s/%s/installation: GitHub answered without an installation id", owner, repo)
		}
		a.mu.Lock()
		a.installs[full] = cachedInstall{id: inst.GetID(), fetched: a.clock()}
		a.mu.Unlock()
		return inst.GetID(), nil
	})
	if err != nil {
		return 0, err
	}
	return v.(int64), nil
}

// ResolveInstallation picks the installation for a request: installationID
// if non-zero (from the webhook delivery), else the configured one, else
// the installation covering repository ("owner/name"). It fails when none
// of the three is available.
func (a *App) ResolveInstallation(ctx context.Context, installationID int64, repository string) (int64, error) {
	if installationID > 0 {
		return installationID, nil
	}
	if a.installationID > 0 {
		return a.installationID, nil
	}
	owner, name, ok := strings.Cut(repository, "/")
	if !ok || owner == "" || name == "" || strings.Contains(name, "/") {
		if repository == "" {
			return 0, errors.New("no GitHub App installation: the request names none, github.app.installation_id is 0 and the service has no repository to look it up")
		}
		return 0, fmt.Errorf("no GitHub App installation: repository %q is not owner/name", repository)
	}
	return a.InstallationForRepo(ctx, owner, name)
}

// InstallationToken returns an installation token down-scoped to
// packages: read and to repositories (names, with or without "owner/"; none
// means every repository of the installation), with its expiry. See
// ScopedToken for caching and failure behaviour.
func (a *App) InstallationToken(ctx context.Context, installationID int64, repositories []string) (Token, time.Time, error) {
	return a.ScopedToken(ctx, installationID, packagesRead(), repositories)
}

type minted struct {
	token   Token
	expires time.Time
}

// ScopedToken returns an installation token with the given permissions and
// repositories (POST /app/installations/{id}/access_tokens), with its expiry.
//
// Tokens are cached per (installation, permissions, repositories) until
// RefreshBefore their expiry; concurrent callers for one key share a single
// mint. When a refresh fails but the cached token has not expired yet, the
// cached token is returned and a warning logged. Otherwise the error is a
// *Error explaining the failure (or the context's error).
func (a *App) ScopedToken(ctx context.Context, installationID int64, perms Permissions, repositories []string) (Token, time.Time, error) {
	if installationID <= 0 {
		return Token{}, time.Time{}, fmt.Errorf("mint installation token: invalid installation id %d", installationID)
	}
	gp, err := perms.github()
	if err != nil {
		return Token{}, time.Time{}, fmt.Errorf("mint installation token: %w", err)
	}
	repos := repoNames(repositories)
	k := tokenKey{installation: installationID, permissions: perms.String(), repositories: strings.Join(repos, ",")}
	if m, ok := a.cached(k, a.clock()); ok {
		return m.token, m.expires, nil
	}
	v, err := a.flight(ctx, "token|"+k.String(), func(ctx context.Context) (any, error) {
		return a.refresh(ctx, k, gp, perms, repos)
	})
	if err != nil {
		return Token{}, time.Time{}, err
	}
	m := v.(minted)
	return m.token, m.expires, nil
}

// cached returns the cached token for k when it is fresh, or when a recent
// refresh failed and it is still valid.
func (a *App) cached(k tokenKey, now time.Time) (minted, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	e := a.tokens[k]
	if e == nil {
		return minted{}, false
	}
	if now.Before(e.expires.Add(-RefreshBefore)) {
		return minted{e.token, e.expires}, true
	}
	if now.Before(e.expires) && now.Before(e.retryAfter) {
		a.stats.StaleServed++
		return minted{e.token, e.expires}, true
	}
	return minted{}, false
}

// flight runs fn once per key at a time, on a context detached from the
// first caller's cancellation but bounded by the App's timeout; each caller
// stops waiting when its own ctx ends.
func (a *App) flight(ctx context.Context, key string, fn func(context.Context) (any, error)) (any, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("GitHub App: %w", err)
	}
	ch := a.flights.DoChan(key, func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.timeout)
		defer cancel()
		return fn(fctx)
	})
	select {
	case r := <-ch:
		return r.Val, r.Err
	case <-ctx.Done():
		return nil, fmt.Errorf("GitHub App: %w", ctx.Err())
	}
}

// refresh mints a token for k unless another flight just did.
func (a *App) refresh(ctx context.Context, k tokenKey, gp *gogithub.InstallationPermissions, perms Permissions, repos []string) (minted, error) {
	if m, ok := a.cached(k, a.clock()); ok {
		return m, nil
	}
	log := a.logger(ctx)
	tok, err := a.createToken(ctx, k.installation, repos, gp, perms)
	now := a.clock()
	if err == nil && (tok.GetToken() == "" || tok.ExpiresAt == nil) {
		err = errors.New("GitHub answered without a token or expiry")
	}
	if err != nil {
		err = classify(call{
			op:           fmt.Sprintf("POST /app/installations/%d/access_tokens", k.installation),
			appID:        a.id,
			installation: k.installation,
			repositories: repos,
			permissions:  perms,
		}, err, now)
		a.mu.Lock()
		defer a.mu.Unlock()
		a.stats.MintFailures++
		var ge *Error
		if errors.As(err, &ge) && ge.Kind == KindNotInstalled && ge.Status == http.StatusNotFound {
			for repo, c := range a.installs {
				if c.id == k.installation {
					delete(a.installs, repo)
				}
			}
		}
		e := a.tokens[k]
		if e == nil || !now.Before(e.expires) {
			return minted{}, err
		}
		e.retryAfter = now.Add(retryBackoff)
		if ge != nil && ge.RateLimitReset.After(e.retryAfter) {
			e.retryAfter = ge.RateLimitReset
		}
		a.stats.StaleServed++
		log.Warn().Err(err).
			Int64("installation_id", k.installation).
			Strs("repositories", repos).
			Time("expires_at", e.expires).
			Msg("cannot refresh the GitHub App installation token; using the cached one until it expires")
		return minted{e.token, e.expires}, nil
	}
	e := &cachedToken{token: NewToken(tok.GetToken()), expires: tok.GetExpiresAt().Time, minted: now}
	a.mu.Lock()
	a.tokens[k] = e
	a.stats.Mints++
	a.mu.Unlock()
	log.Info().
		Int64("installation_id", k.installation).
		Str("permissions", k.permissions).
		Strs("repositories", repos).
		Time("expires_at", e.expires).
		Msg("minted GitHub App installation token")
	return minted{e.token, e.expires}, nil
}

// createToken asks GitHub for an installation token. Permissions that
// go-github knows go through its type; newerPermissions are added to the
// request body as they are.
func (a *App) createToken(ctx context.Context, installation int64, repos []string, gp *gogithub.InstallationPermissions, perms Permissions) (*gogithub.InstallationToken, error) {
	body := map[string]any{"permissions": gp}
	if len(repos) > 0 {
		body["repositories"] = repos
	}
	var extra map[string]string
	for n, v := range perms {
		if newerPermissions[n] {
			if extra == nil {
				extra = map[string]string{}
			}
			extra[n] = v
		}
	}
	if extra != nil {
		b, err := json.Marshal(gp)
		if err != nil {
			return nil, fmt.Errorf("encode permissions: %w", err)
		}
		all := map[string]string{}
		if err := json.Unmarshal(b, &all); err != nil {
			return nil, fmt.Errorf("decode permissions: %w", err)
		}
		maps.Copy(all, extra)
		body["permissions"] = all
	}
	req, err := a.gh.NewRequest(http.MethodPost, fmt.Sprintf("app/installations/%d/access_tokens", installation), body)
	if err != nil {
		return nil, fmt.Errorf("build token request: %w", err)
	}
	var tok gogithub.InstallationToken
	if _, err := a.gh.Do(ctx, req, &tok); err != nil {
		return nil, err
	}
	return &tok, nil
}

// Invalidate drops the cached tokens of an installation for exactly these
// repositories (any permissions), so that the next call mints a fresh one:
// for when a registry refused the token.
func (a *App) Invalidate(installationID int64, repositories []string) {
	repos := strings.Join(repoNames(repositories), ",")
	a.mu.Lock()
	defer a.mu.Unlock()
	for k := range a.tokens {
		if k.installation == installationID && k.repositories == repos {
			delete(a.tokens, k)
		}
	}
}

// repoNames returns the repository names without owner, lower-cased,
// sorted and de-duplicated.
func repoNames(repositories []string) []string {
	seen := make(map[string]bool, len(repositories))
	var out []string
	for _, r := range repositories {
		if i := strings.LastIndexByte(r, '/'); i >= 0 {
			r = r[i+1:]
		}
		r = strings.ToLower(strings.TrimSpace(r))
		if r == "" || seen[r] {
			continue
		}
		seen[r] = true
		out = append(out, r)
	}
	sort.Strings(out)
	return out
}

// AppStats counts the App's token work, for metrics and the status page.
type AppStats struct {
	// Mints is the number of tokens minted.
	Mints int64 `json:"mints"`
	// MintFailures is the number of failed mint requests.
	MintFailures int64 `json:"mint_failures"`
	// StaleServed counts cached tokens served after a failed refresh.
	StaleServed int64 `json:"stale_served"`
	// Tokens describes each cached token (never its value).
	Tokens []TokenInfo `json:"tokens"`
}

// TokenInfo describes one cached installation token.
type TokenInfo struct {
	InstallationID int64     `json:"installation_id"`
	Permissions    string    `json:"permissions"`
	Repositories   []string  `json:"repositories"`
	MintedAt       time.Time `json:"minted_at"`
	ExpiresAt      time.Time `json:"expires_at"`
	RefreshAt      time.Time `json:"refresh_at"`
}

// Stats returns the counters and the cached tokens, sorted by installation,
// permissions and repositories.
func (a *App) Stats() AppStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.stats
	s.Tokens = make([]TokenInfo, 0, len(a.tokens))
	for k, e := range a.tokens {
		var repos []string
		if k.repositories != "" {
			repos = strings.Split(k.repositories, ",")
		}
		s.Tokens = append(s.Tokens, TokenInfo{
			InstallationID: k.installation,
			Permissions:    k.permissions,
			Repositories:   repos,
			MintedAt:       e.minted,
			ExpiresAt:      e.expires,
			RefreshAt:      e.expires.Add(-RefreshBefore),
		})
	}
	sort.Slice(s.Tokens, func(i, j int) bool {
		x, y := s.Tokens[i], s.Tokens[j]
		if x.InstallationID != y.InstallationID {
			return x.InstallationID < y.InstallationID
		}
		if x.Permissions != y.Permissions {
			return x.Permissions < y.Permissions
		}
		return strings.Join(x.Repositories, ",") < strings.Join(y.Repositories, ",")
	})
	return s
}
