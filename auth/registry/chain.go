// Package registry is the registry credential chain: for each registry
// host, its credential sources in order (a GitHub App installation token, a
// token file, anonymous access), which of them the registry accepted or
// refused, and the explanations of its refusals with the fix.
//
// The chain speaks the deployer's vocabulary: it takes a
// deployer.CredentialRequest, hands out a deployer.Credential and is the
// deployer.Credentials the pipeline asks. Of deployd's packages it imports
// deployer for that vocabulary, github, whose App mints the tokens, and
// auth, for the token file's permission warning.
package registry

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/containers/image/v5/docker/reference"
	"github.com/rs/zerolog"

	"github.com/deployd/deployd/auth/github"
	"github.com/deployd/deployd/deployer"
)

// Credential sources, as named in a registry's credentials list.
const (
	// SourceGitHubApp mints a GitHub App installation token.
	SourceGitHubApp = "github_app"
	// SourceTokenFile reads a personal access token from a file.
	SourceTokenFile = "token_file"
	// SourceNone pulls anonymously.
	SourceNone = "none"
)

// DefaultUsername is the registry username sent with tokens when the
// registry configures none; ghcr.io accepts it for installation tokens.
const DefaultUsername = "x-access-token"

// DefaultPutAsideFor is how long a source that a registry denied for an
// image is first put aside for that image; each refusal in a row doubles
// it, up to DefaultMaxPutAsideFor.
const DefaultPutAsideFor = time.Minute

// DefaultMaxPutAsideFor is the longest put-aside.
const DefaultMaxPutAsideFor = 15 * time.Minute

// HostConfig configures the credential sources of one registry host.
type HostConfig struct {
	// Username goes with token credentials; "" means DefaultUsername.
	Username string
	// Sources are tried in order: SourceGitHubApp, SourceTokenFile, SourceNone.
	Sources []string
	// TokenFile is the path of the personal access token (SourceTokenFile).
	TokenFile string
}

// ChainConfig is what NewChain needs.
type ChainConfig struct {
	// Registries maps a registry host ("ghcr.io", "127.0.0.1:5000") to its
	// sources. Images on other hosts are pulled anonymously.
	Registries map[string]HostConfig
	// App mints installation tokens; required when a registry lists
	// SourceGitHubApp.
	App *github.App
	// PutAsideFor is how long a denied source is first put aside for an
	// image; 0 means DefaultPutAsideFor. Each refusal in a row doubles
	// it, up to MaxPutAsideFor; an acceptance starts it over.
	PutAsideFor time.Duration
	// MaxPutAsideFor caps the put-aside; 0 means DefaultMaxPutAsideFor
	// (or PutAsideFor, when that is longer).
	MaxPutAsideFor time.Duration
	// Clock tells the time; nil means time.Now.
	Clock func() time.Time
	// Logger receives fallbacks and denials (never a secret).
	Logger zerolog.Logger
}

// Chain hands out registry credentials from each host's ordered sources and
// learns from the caller which ones the registry accepts: a source that the
// registry denied for an image is put aside for that image for a while, and
// the other sources are tried first. Putting sources aside reorders the
// chain but never empties it: when every source left is put aside, they
// are all tried again in order. A put-aside starts short and doubles with
// each refusal in a row; it ends early when the source's credential changes
// (new token_file content, a freshly minted App token) and is ignored for
// requests with IgnorePutAside. Put-asides live in memory only. All methods
// are safe for concurrent use.
//
// A Chain is the deployer's deployer.Credentials. Its loop for one image:
//
//	cred, err := chain.Credential(ctx, req)   // err: *ChainError, nothing left
//	... login and pull with cred ...
//	on success:            chain.Accepted(req, cred.Source)
//	on 401/403 (1st time): chain.Invalidate(req); ask again
//	on 401/403 again:      chain.Denied(req, cred.Source, reason);
//	                       add cred.Source to req.Refused; ask again
type Chain struct {
	app         *github.App
	registries  map[string]*registry
	putAsideFor time.Duration
	maxPutAside time.Duration
	clock       func() time.Time
	log         zerolog.Logger

	mu      sync.Mutex
	aside   map[imageSource]*putAside
	given   map[imageSource]fingerprint
	health  map[hostSource]*sourceState
	lastApp map[hostImage]appGrant
}

var (
	_ deployer.Credentials = (*Chain)(nil)
	_ deployer.Explainer   = (*Chain)(nil)
)

type registry struct {
	host      string
	username  string
	sources   []string
	tokenFile *tokenFile // nil unless the sources include token_file
}

type hostImage struct{ host, image string }

type hostSource struct{ host, source string }

type imageSource struct{ host, image, source string }

// putAside is what the chain remembers of refusals of a source for an
// image. It outlives the put-aside itself, to count refusals in a row.
type putAside struct {
	reason string
	// until ends the put-aside; zero or past when none is in force.
	until time.Time
	// strikes counts refusals since the source was last accepted.
	strikes int
	// refused identifies the credential refused; zero when unknown.
	refused fingerprint
}

// fingerprint identifies a credential without keeping its secret.
type fingerprint [sha256.Size]byte

func fingerprintOf(c deployer.Credential) fingerprint {
	return sha256.Sum256([]byte(c.Username + "\x00" + c.Password.Reveal()))
}

type sourceState struct {
	state   HealthState
	reason  string
	image   string
	updated time.Time
	expires time.Time
}

type appGrant struct {
	installation int64
	repositories []string
}

// NewChain checks cfg and returns a Chain. Every registry must list at least
// one known source, SourceGitHubApp needs App, SourceTokenFile needs a
// TokenFile. The token files are read on first use, not here.
func NewChain(cfg ChainConfig) (*Chain, error) {
	c := &Chain{
		app:         cfg.App,
		registries:  make(map[string]*registry, len(cfg.Registries)),
		putAsideFor: cfg.PutAsideFor,
		maxPutAside: cfg.MaxPutAsideFor,
		clock:       cfg.Clock,
		log:         cfg.Logger,
		aside:       make(map[imageSource]*putAside),
		given:       make(map[imageSource]fingerprint),
		health:      make(map[hostSource]*sourceState),
		lastApp:     make(map[hostImage]appGrant),
	}
	if c.clock == nil {
		c.clock = time.Now
	}
	if c.putAsideFor <= 0 {
		c.putAsideFor = DefaultPutAsideFor
	}
	if c.maxPutAside <= 0 {
		c.maxPutAside = DefaultMaxPutAsideFor
	}
	c.maxPutAside = max(c.maxPutAside, c.putAsideFor)
	files := make(map[string]*tokenFile)
	var problems []string
	for host, rc := range cfg.Registries {
		h := strings.ToLower(strings.TrimSpace(host))
		if h == "" {
			problems = append(problems, "a registry has an empty host name")
			continue
		}
		r := &registry{host: h, username: rc.Username}
		if r.username == "" {
			r.username = DefaultUsername
		}
		if len(rc.Sources) == 0 {
			problems = append(problems, fmt.Sprintf("registry %s: no credential sources (want %s, %s or %s)", h, SourceGitHubApp, SourceTokenFile, SourceNone))
		}
		seen := make(map[string]bool)
		for _, s := range rc.Sources {
			if seen[s] {
				problems = append(problems, fmt.Sprintf("registry %s: credential source %s is listed twice", h, s))
				continue
			}
			seen[s] = true
			switch s {
			case SourceGitHubApp:
				if cfg.App == nil {
					problems = append(problems, fmt.Sprintf("registry %s: credential source %s needs the GitHub App (github.app)", h, s))
				}
			case SourceTokenFile:
				if rc.TokenFile == "" {
					problems = append(problems, fmt.Sprintf("registry %s: credential source %s needs token_file", h, s))
					continue
				}
				f := files[rc.TokenFile]
				if f == nil {
					f = &tokenFile{path: rc.TokenFile}
					files[rc.TokenFile] = f
				}
				r.tokenFile = f
			case SourceNone:
			default:
				problems = append(problems, fmt.Sprintf("registry %s: unknown credential source %q (want %s, %s or %s)", h, s, SourceGitHubApp, SourceTokenFile, SourceNone))
			}
			r.sources = append(r.sources, s)
		}
		if _, dup := c.registries[h]; dup {
			problems = append(problems, fmt.Sprintf("registry %s is configured twice", h))
		}
		c.registries[h] = r
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return nil, fmt.Errorf("registry credentials: %s", strings.Join(problems, "; "))
	}
	return c, nil
}

// String describes the chain without any credential: its hosts and sources.
func (c *Chain) String() string {
	hosts := make([]string, 0, len(c.registries))
	for h, r := range c.registries {
		hosts = append(hosts, h+": "+strings.Join(r.sources, ", "))
	}
	sort.Strings(hosts)
	return "registry credential chain (" + strings.Join(hosts, "; ") + ")"
}

// Format prints String for every verb, so that printing a Chain never
// reflects over its state or its locks.
func (c *Chain) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, c.String()) }

// Credential returns a credential for req.Image from the first source of
// the host, in configured order, that is neither in req.Refused nor put
// aside for that image and that can produce one. A source that fails to
// produce one (GitHub unreachable, token file missing) is skipped for this
// call only and logged. When every source left is put aside, the first of
// them that produces a credential is returned: a put-aside reorders the
// chain, it never empties it. A put-aside source whose credential changed
// since the refusal (new token_file content, a freshly minted App token)
// is no longer put aside. With req.IgnorePutAside, put-asides are ignored.
// Images on hosts without configuration get an anonymous credential.
//
// req.Host "" means req.Image's own host (docker.io for a short name such
// as "nginx"); req.Image may carry a host, a tag or a digest
// ("ghcr.io/acme/v7/backend:latest" and "acme/v7/backend" on ghcr.io are
// the same image). req.Repository ("owner/name", may be "") finds the App
// installation and down-scopes its token; req.InstallationID 0 means the
// configured installation, else the one covering req.Repository.
//
// When no source is left, the error is a *ChainError (errors.Is
// ErrNoCredential) that lists each source with why it was refused and a hint.
func (c *Chain) Credential(ctx context.Context, req deployer.CredentialRequest) (deployer.Credential, error) {
	host, image := splitImage(req.Host, req.Image)
	r := c.registries[host]
	if r == nil {
		return deployer.Credential{Source: SourceNone}, nil
	}
	var attempts []Attempt
	var aside []deployer.Credential // produced, but put aside: the last resort
	for _, src := range r.sources {
		if contains(req.Refused, src) {
			attempts = append(attempts, c.refusedAttempt(host, image, src))
			continue
		}
		cred, err := c.produce(ctx, r, image, req, src)
		if err != nil {
			if ctx.Err() != nil {
				return deployer.Credential{}, fmt.Errorf("registry credential for %s/%s: %w", host, image, ctx.Err())
			}
			c.log.Warn().Err(err).Str("registry", host).Str("image", image).Str("source", src).
				Msg("registry credential source failed; trying the next one")
			attempts = append(attempts, Attempt{Source: src, Reason: err.Error(), Err: err})
			continue
		}
		if !req.IgnorePutAside && c.putAside(host, image, cred) {
			aside = append(aside, cred)
			continue
		}
		if len(attempts) > 0 || len(aside) > 0 {
			c.log.Info().Str("registry", host).Str("image", image).Str("source", cred.Source).
				Strs("skipped", append(attemptSources(attempts), credentialSources(aside)...)).
				Msg("using a fallback registry credential source")
		}
		return cred, nil
	}
	if len(aside) > 0 {
		c.log.Info().Str("registry", host).Str("image", image).Str("source", aside[0].Source).
			Strs("put_aside", credentialSources(aside)).
			Msg("every registry credential source left is put aside; trying them again in order")
		return aside[0], nil
	}
	return deployer.Credential{}, newChainError(r, image, attempts)
}

// putAside reports whether cred's source is put aside for image. A
// put-aside ends when its time is up or when cred differs from the
// credential that was refused.
func (c *Chain) putAside(host, image string, cred deployer.Credential) bool {
	k := imageSource{host, image, cred.Source}
	now := c.clock()
	c.mu.Lock()
	defer c.mu.Unlock()
	pa := c.aside[k]
	if pa == nil || !now.Before(pa.until) {
		return false
	}
	if cred.Source == SourceNone {
		return true
	}
	fp := fingerprintOf(cred)
	switch pa.refused {
	case fingerprint{}: // refused before the chain handed anything out
		pa.refused = fp
	case fp:
	default:
		pa.until = time.Time{}
		c.log.Info().Str("registry", host).Str("image", image).Str("source", cred.Source).
			Msg("the credential of a source put aside changed; trying it again")
		return false
	}
	return true
}

// refusedAttempt describes a source the caller reports as refused.
func (c *Chain) refusedAttempt(host, image, src string) Attempt {
	c.mu.Lock()
	defer c.mu.Unlock()
	a := Attempt{Source: src, Denied: true, Reason: "refused"}
	if pa := c.aside[imageSource{host, image, src}]; pa != nil {
		a.Reason, a.Until = pa.reason, pa.until
	}
	return a
}

// SourceCredential returns a credential from one named source of req's host,
// whether or not it is put aside: for doctor, which checks every source.
// It fails when the source is not configured for the host or cannot
// produce a credential.
func (c *Chain) SourceCredential(ctx context.Context, req deployer.CredentialRequest, source string) (deployer.Credential, error) {
	host, image := splitImage(req.Host, req.Image)
	r := c.registries[host]
	if r == nil || !contains(r.sources, source) {
		return deployer.Credential{}, fmt.Errorf("registry %s: credential source %s is not configured", host, source)
	}
	return c.produce(ctx, r, image, req, source)
}

// produce gets a credential from one source and records the outcome, with
// the expiry of a GitHub App token for Health.
func (c *Chain) produce(ctx context.Context, r *registry, image string, req deployer.CredentialRequest, src string) (deployer.Credential, error) {
	cred := deployer.Credential{Source: src}
	var expires time.Time // zero: no known expiry
	var err error
	switch src {
	case SourceGitHubApp:
		var id int64
		id, err = c.app.ResolveInstallation(ctx, req.InstallationID, req.Repository)
		if err != nil {
			break
		}
		var repos []string
		if req.Repository != "" {
			repos = []string{req.Repository}
		}
		var tok github.Token
		tok, expires, err = c.app.InstallationToken(ctx, id, repos)
		if err == nil {
			cred.Username, cred.Password = r.username, deployer.NewPassword(tok.Reveal())
			c.mu.Lock()
			c.lastApp[hostImage{r.host, image}] = appGrant{installation: id, repositories: repos}
			c.mu.Unlock()
		}
	case SourceTokenFile:
		cred.Username = r.username
		cred.Password, err = r.tokenFile.read(&c.log)
	case SourceNone:
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.state(r.host, src)
	if err != nil {
		if ctx.Err() == nil {
			st.state, st.reason, st.image, st.updated = HealthFailed, err.Error(), image, c.clock()
		}
		return deployer.Credential{}, err
	}
	c.given[imageSource{r.host, image, src}] = fingerprintOf(cred)
	if !expires.IsZero() {
		st.expires = expires
	}
	if st.state == HealthFailed {
		st.state, st.reason, st.updated = HealthUnknown, "", c.clock()
	}
	return cred, nil
}

// state returns the health record of a host's source; c.mu must be held.
func (c *Chain) state(host, src string) *sourceState {
	k := hostSource{host, src}
	st := c.health[k]
	if st == nil {
		st = &sourceState{state: HealthUnknown}
		c.health[k] = st
	}
	return st
}

// Denied reports that the registry refused the credential of source for
// req's image (at login, at the token endpoint or at the pull): the
// credential the chain last handed out for it. The source is put aside for that image,
// first for the chain's PutAsideFor, twice as long with each refusal in a
// row, at most MaxPutAsideFor; reason (the registry's answer, never the
// credential) is kept for the error, Health and the log.
func (c *Chain) Denied(req deployer.CredentialRequest, source, reason string) {
	host, image := splitImage(req.Host, req.Image)
	k := imageSource{host, image, source}
	now := c.clock()
	c.mu.Lock()
	pa := c.aside[k]
	if pa == nil {
		pa = &putAside{}
		c.aside[k] = pa
	}
	pa.strikes++
	pa.reason, pa.refused = reason, c.given[k]
	pa.until = now.Add(c.putAsideTime(pa.strikes))
	until := pa.until
	st := c.state(host, source)
	st.state, st.reason, st.image, st.updated = HealthDenied, reason, image, now
	c.mu.Unlock()
	c.log.Warn().Str("registry", host).Str("image", image).Str("source", source).
		Str("reason", reason).Time("until", until).
		Msg("registry denied the credential; putting this source aside for the image")
}

// putAsideTime is the put-aside after strikes refusals in a row.
func (c *Chain) putAsideTime(strikes int) time.Duration {
	d := c.putAsideFor
	for i := 1; i < strikes && d < c.maxPutAside; i++ {
		d *= 2
	}
	return min(d, c.maxPutAside)
}

// Accepted reports that the registry accepted the credential of source for
// req's image. It ends any put-aside of that source for the image, and the next
// refusal is put aside for the shortest time again.
func (c *Chain) Accepted(req deployer.CredentialRequest, source string) {
	host, image := splitImage(req.Host, req.Image)
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.aside, imageSource{host, image, source})
	st := c.state(host, source)
	st.state, st.reason, st.image, st.updated = HealthOK, "", image, c.clock()
}

// Invalidate drops the cached GitHub App token last handed out for req's
// image, so that the next Credential mints a fresh one: the pipeline
// retries a refused token once with a fresh one before calling Denied.
func (c *Chain) Invalidate(req deployer.CredentialRequest) {
	host, image := splitImage(req.Host, req.Image)
	c.mu.Lock()
	g, ok := c.lastApp[hostImage{host, image}]
	c.mu.Unlock()
	if ok && c.app != nil {
		c.app.Invalidate(g.installation, g.repositories)
	}
}

// HealthState is what the chain knows about a source of a registry.
type HealthState string

// The states of a credential source.
const (
	// HealthUnknown: the registry has not yet judged a credential of this source.
	HealthUnknown HealthState = "unknown"
	// HealthOK: the registry accepted it last time.
	HealthOK HealthState = "ok"
	// HealthDenied: the registry refused it last time.
	HealthDenied HealthState = "denied"
	// HealthFailed: the source could not produce a credential last time.
	HealthFailed HealthState = "failed"
)

// SourceHealth is the state of one credential source of one registry, for
// the status page and doctor. It holds no secret.
type SourceHealth struct {
	Host   string      `json:"host"`
	Source string      `json:"source"`
	State  HealthState `json:"state"`
	// Reason is why the source was denied or failed.
	Reason string `json:"reason,omitempty"`
	// Image is the image of the last report.
	Image   string    `json:"image,omitempty"`
	Updated time.Time `json:"updated,omitzero"`
	// PutAsideUntil is the latest end of a put-aside of this source for any
	// image, zero when none is in force.
	PutAsideUntil time.Time `json:"put_aside_until,omitzero"`
	// Expires is the expiry of the last token handed out (github_app).
	Expires time.Time `json:"expires,omitzero"`
}

// Health returns every configured source of every registry, hosts sorted,
// sources in their configured order.
func (c *Chain) Health() []SourceHealth {
	now := c.clock()
	hosts := slices.Sorted(maps.Keys(c.registries))
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []SourceHealth
	for _, h := range hosts {
		for _, src := range c.registries[h].sources {
			sh := SourceHealth{Host: h, Source: src, State: HealthUnknown}
			if st := c.health[hostSource{h, src}]; st != nil {
				sh.State, sh.Reason, sh.Image, sh.Updated, sh.Expires = st.state, st.reason, st.image, st.updated, st.expires
			}
			for k, pa := range c.aside {
				if k.host == h && k.source == src && now.Before(pa.until) && pa.until.After(sh.PutAsideUntil) {
					sh.PutAsideUntil = pa.until
				}
			}
			out = append(out, sh)
		}
	}
	return out
}

func credentialSources(cs []deployer.Credential) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Source
	}
	return out
}

func attemptSources(as []Attempt) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.Source
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// splitImage returns the lower-case registry host and the repository path
// of image, without tag or digest. host, when given, is the registry; an
// image without a host of its own ("acme/app") is then taken to be on it,
// not on Docker Hub. With host empty, the host is the image's own, Docker
// Hub's "docker.io" for a short name. An image that is not a valid
// reference (configuration validation rules that out) is returned as given,
// so that calls about it still agree with one another.
func splitImage(host, image string) (string, string) {
	host = strings.ToLower(strings.TrimSpace(host))
	image = strings.TrimSpace(image)
	named, err := reference.ParseNormalizedNamed(image)
	if err == nil && host != "" && !strings.HasPrefix(image, reference.Domain(named)+"/") {
		// The image names no host; ParseNormalizedNamed put it on Docker Hub.
		named, err = reference.ParseNormalizedNamed(host + "/" + image)
	}
	if err != nil {
		return host, image
	}
	named = reference.TrimNamed(named)
	if host == "" {
		host = strings.ToLower(reference.Domain(named))
	}
	return host, reference.Path(named)
}
