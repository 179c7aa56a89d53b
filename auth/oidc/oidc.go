// Package oidc verifies GitHub Actions OIDC tokens and maps their claims
// to deployd's API scopes, so that a workflow can call the deploy API with
// the short-lived token GitHub gives it (permissions: id-token: write)
// instead of a stored secret.
//
// A token is accepted when it is an RS256 JWT signed by one of the
// issuer's keys (discovered at /.well-known/openid-configuration, fetched
// from its jwks_uri and cached by go-oidc), its iss is the issuer, its aud
// contains the configured audience, it has not expired, its nbf and iat
// are not in the future (30 seconds leeway), and its jti has not been seen
// before. Its scopes are those of the rules its claims match (Grant).
//
// Of deployd's packages it imports none.
package oidc

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"github.com/rs/zerolog"
)

// GitHubIssuer is the issuer of GitHub Actions OIDC tokens.
const GitHubIssuer = "https://token.actions.githubusercontent.com"

// clockLeeway is how far nbf and iat may be in the future, for clock skew
// between GitHub and this host.
const clockLeeway = 30 * time.Second

// maxTokenBytes bounds what Verify parses; GitHub's tokens are about 1.5 KB.
const maxTokenBytes = 8192

// defaultMaxReplay bounds the jti memory (see Config.MaxReplay).
const defaultMaxReplay = 10000

// fetchTimeout bounds one request to the issuer (discovery or keys).
const fetchTimeout = 10 * time.Second

// Discovery retry backoff while the issuer cannot be reached at start-up.
const (
	retryFirst = time.Second
	retryMax   = time.Minute
)

var (
	// ErrInvalid is returned (wrapped, with the reason) by Verify for a
	// token that is malformed, not signed by the issuer's keys with RS256,
	// expired, not yet valid, for another issuer or audience, or replayed.
	// The reason never quotes the token.
	ErrInvalid = errors.New("invalid GitHub Actions OIDC token")
	// ErrUnavailable is returned (wrapped, with the reason) by Verify when
	// no token can be checked for now: the issuer's discovery document
	// has not been read yet, or the token could not be recorded as used.
	ErrUnavailable = errors.New("GitHub Actions OIDC tokens cannot be checked right now")
)

// Config configures a Verifier.
type Config struct {
	// Issuer is the token issuer (default GitHubIssuer).
	Issuer string
	// Audience must be in each token's aud; required. A value of deployd's
	// own, so that a token minted for another service does not work here.
	Audience string
	// Rules map claims to scopes (see Rule).
	Rules []Rule
	// HTTPClient reaches the issuer (default: one with a 10s timeout).
	// The issuer's keys are fetched through it at most once every 10
	// seconds, however many tokens name a key id not cached.
	HTTPClient *http.Client
	// Now is the clock (default time.Now).
	Now func() time.Time
	// UsedTokens remembers the ids of accepted tokens. When nil, they are
	// kept in memory (see MaxReplay) and forgotten when the process ends,
	// so that a token used before a restart could be used once more after
	// it.
	UsedTokens UsedTokens
	// MaxReplay is how many token ids the memory of a nil UsedTokens holds
	// at once, each until its token expires (default 10000). When it is
	// full, tokens are refused with ErrUnavailable rather than forgetting
	// an id early.
	MaxReplay int
	// Log receives the discovery attempts at start-up, and why a token
	// could not be recorded as used.
	Log zerolog.Logger
}

// Claims is what a verified token says about the run that asked, and what
// the rules grant it. It holds no secret.
type Claims struct {
	// Subject is the token's sub, e.g. repo:OWNER/REPO:environment:production.
	Subject string `json:"sub"`
	// Repository and RepositoryOwner are names, for display only: rules
	// match the ids.
	Repository        string `json:"repository"`
	RepositoryOwner   string `json:"repository_owner"`
	RepositoryID      string `json:"-"` // canonical decimal
	RepositoryOwnerID string `json:"-"` // canonical decimal
	Ref               string `json:"ref"`
	Environment       string `json:"environment"`
	EventName         string `json:"event_name"`
	WorkflowRef       string `json:"workflow_ref"`
	JobWorkflowRef    string `json:"job_workflow_ref"`
	RunID             string `json:"-"`
	Actor             string `json:"actor"`
	// ID is the token's jti, safe to log.
	ID        string    `json:"jti"`
	ExpiresAt time.Time `json:"-"`
	// Scopes are what the rules grant; none when no rule matches.
	Scopes []string `json:"-"`
}

// Trigger says who asked, as a deployment records it:
// "oidc: WORKFLOW_REF run RUN_ID by ACTOR".
func (c Claims) Trigger() string {
	return fmt.Sprintf("oidc: %s run %s by %s", orUnknown(c.WorkflowRef), orUnknown(c.RunID), orUnknown(c.Actor))
}

func orUnknown(s string) string {
	if s == "" {
		return "?"
	}
	return s
}

// Verifier checks GitHub Actions OIDC tokens. It is safe for concurrent
// use.
type Verifier struct {
	issuer   string
	audience string
	rules    []Rule
	now      func() time.Time
	used     UsedTokens
	log      zerolog.Logger
	ready    chan struct{}

	mu       sync.Mutex
	verifier *gooidc.IDTokenVerifier // nil until discovery succeeded
}

// New checks cfg and returns a Verifier that reads the issuer's discovery
// document in the background, retrying with backoff until it succeeds or
// ctx ends, so that an issuer unreachable at start-up does not stop
// deployd: until then Verify fails with ErrUnavailable. It fails for a
// missing audience or a bad rule.
func New(ctx context.Context, cfg Config) (*Verifier, error) {
	if cfg.Issuer == "" {
		cfg.Issuer = GitHubIssuer
	}
	if strings.TrimSpace(cfg.Audience) == "" {
		return nil, errors.New("new OIDC verifier: no audience")
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: fetchTimeout}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxReplay <= 0 {
		cfg.MaxReplay = defaultMaxReplay
	}
	if cfg.UsedTokens == nil {
		cfg.UsedTokens = newReplayCache(cfg.MaxReplay, cfg.Now)
	}
	rules := make([]Rule, 0, len(cfg.Rules))
	for i, r := range cfg.Rules {
		n, err := r.normalize()
		if err != nil {
			return nil, fmt.Errorf("new OIDC verifier: rule %d: %w", i, err)
		}
		rules = append(rules, n)
	}
	v := &Verifier{issuer: cfg.Issuer, audience: cfg.Audience, rules: rules, now: cfg.Now,
		used: cfg.UsedTokens, log: cfg.Log, ready: make(chan struct{})}
	client := limitKeyFetches(cfg.HTTPClient, cfg.Now)
	go v.discover(gooidc.ClientContext(ctx, client), cfg.Log)
	return v, nil
}

// discover reads the discovery document until it succeeds or ctx ends.
// Each failure is logged with its cause, which Verify does not repeat to
// clients.
func (v *Verifier) discover(ctx context.Context, log zerolog.Logger) {
	wait := retryFirst
	for {
		p, err := gooidc.NewProvider(ctx, v.issuer)
		if err == nil {
			verifier := p.Verifier(&gooidc.Config{
				ClientID:             v.audience,
				SupportedSigningAlgs: []string{gooidc.RS256},
				Now:                  v.now,
			})
			v.mu.Lock()
			v.verifier = verifier
			v.mu.Unlock()
			close(v.ready)
			log.Info().Str("issuer", v.issuer).Msg("OIDC issuer discovered: GitHub Actions tokens are accepted")
			return
		}
		log.Warn().Err(err).Str("issuer", v.issuer).Dur("retry_in", wait).
			Msg("OIDC issuer discovery failed: GitHub Actions tokens are refused until it succeeds")
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, retryMax)
	}
}

// Ready is closed once the issuer's discovery document has been read and
// tokens can be checked.
func (v *Verifier) Ready() <-chan struct{} { return v.ready }

// Issued reports whether token looks like one of this issuer's: a JWT
// whose (unverified) payload names the issuer as iss. It decides which
// verifier a bearer token goes to, and proves nothing.
func (v *Verifier) Issued(token string) bool {
	iss, ok := unverifiedIssuer(token)
	return ok && iss == v.issuer
}

// unverifiedIssuer returns the iss claim of a compact JWT without checking
// anything else, and whether there is one.
func unverifiedIssuer(token string) (string, bool) {
	if len(token) > maxTokenBytes {
		return "", false
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "", false
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", false
	}
	var c struct {
		Issuer string `json:"iss"`
	}
	if err := json.Unmarshal(payload, &c); err != nil || c.Issuer == "" {
		return "", false
	}
	return c.Issuer, true
}

// Verify checks token (see the package documentation) and returns its
// claims with the scopes the rules grant, which may be none: deciding
// whether they suffice is the caller's. A token that passes every check
// is used up: the same token is refused afterwards, until it expires and
// after. The errors wrap ErrInvalid or ErrUnavailable and say why without
// quoting the token. ctx bounds the fetch of the issuer's keys that a
// token signed with a key id not seen before causes.
func (v *Verifier) Verify(ctx context.Context, token string) (Claims, error) {
	if token == "" || len(token) > maxTokenBytes {
		return Claims{}, fmt.Errorf("%w: empty or longer than %d bytes", ErrInvalid, maxTokenBytes)
	}
	v.mu.Lock()
	verifier := v.verifier
	v.mu.Unlock()
	if verifier == nil {
		return Claims{}, fmt.Errorf("%w: the issuer %s has not been reached yet (deployd keeps trying)", ErrUnavailable, v.issuer)
	}
	idt, err := verifier.Verify(ctx, token)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: %s", ErrInvalid, verifyReason(err))
	}
	var c Claims
	var times struct {
		NotBefore *jsonTime `json:"nbf"`
		IssuedAt  *jsonTime `json:"iat"`
	}
	var ids struct {
		RepositoryID      idClaim `json:"repository_id"`
		RepositoryOwnerID idClaim `json:"repository_owner_id"`
		RunID             idClaim `json:"run_id"`
	}
	if err := idt.Claims(&c); err != nil {
		return Claims{}, fmt.Errorf("%w: claims are malformed", ErrInvalid)
	}
	if err := idt.Claims(&times); err != nil {
		return Claims{}, fmt.Errorf("%w: nbf or iat is malformed", ErrInvalid)
	}
	if err := idt.Claims(&ids); err != nil {
		return Claims{}, fmt.Errorf("%w: repository_id, repository_owner_id or run_id is malformed", ErrInvalid)
	}
	c.RepositoryID, c.RepositoryOwnerID, c.RunID = string(ids.RepositoryID), string(ids.RepositoryOwnerID), string(ids.RunID)
	c.ExpiresAt = idt.Expiry
	now := v.now()
	switch {
	case times.NotBefore != nil && time.Time(*times.NotBefore).After(now.Add(clockLeeway)):
		return Claims{}, fmt.Errorf("%w: not valid yet (nbf is in the future)", ErrInvalid)
	case times.IssuedAt != nil && time.Time(*times.IssuedAt).After(now.Add(clockLeeway)):
		return Claims{}, fmt.Errorf("%w: issued in the future", ErrInvalid)
	case c.ID == "":
		return Claims{}, fmt.Errorf("%w: no jti, so a replay could not be told apart", ErrInvalid)
	}
	if err := v.use(ctx, c); err != nil {
		return Claims{}, err
	}
	c.Scopes = Grant(v.rules, c)
	return c, nil
}

// use records the token of c as used, and fails with ErrInvalid when it
// was used before, or with ErrUnavailable when that could not be checked.
// The cause of a failed check goes to the log, not to the error: it may
// name the store's files.
func (v *Verifier) use(ctx context.Context, c Claims) error {
	first, err := v.used.UseTokenID(ctx, c.ID, c.ExpiresAt)
	switch {
	case errors.Is(err, ErrUnavailable):
		return err
	case err != nil:
		v.log.Error().Err(err).Str("jti", c.ID).Msg("OIDC token refused: it could not be recorded as used")
		return fmt.Errorf("%w: the token could not be recorded as used, so a replay could not be told apart", ErrUnavailable)
	case !first:
		return fmt.Errorf("%w: already used (each token is accepted once; request a new one for each call)", ErrInvalid)
	}
	return nil
}

// verifyReason turns a go-oidc error into a short reason of our own words,
// so that nothing from the token (go-oidc quotes its iss and aud) is
// echoed.
func verifyReason(err error) string {
	var expired *gooidc.TokenExpiredError
	msg := err.Error()
	switch {
	case errors.As(err, &expired):
		return "expired"
	case strings.HasPrefix(msg, "oidc: malformed jwt"):
		return "malformed, or not signed with RS256"
	case strings.HasPrefix(msg, "failed to verify signature"):
		return "not signed by a key of the issuer (unknown key id, bad signature, or the issuer's keys could not be fetched)"
	case strings.HasPrefix(msg, "oidc: id token issued by a different provider"):
		return "wrong issuer"
	case strings.HasPrefix(msg, "oidc: expected audience"):
		return "wrong audience"
	case strings.Contains(msg, "nbf"):
		return "not valid yet (nbf is in the future)"
	}
	return "claims are malformed"
}

// jsonTime is a NumericDate: seconds since the epoch, possibly fractional.
type jsonTime time.Time

func (t *jsonTime) UnmarshalJSON(b []byte) error {
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return err
	}
	f, err := n.Float64()
	if err != nil {
		return err
	}
	// Clamp to what time.Unix can hold, so that a huge nbf stays in the
	// future rather than wrapping around into the past.
	const maxSeconds = 1 << 40
	f = max(min(f, maxSeconds), -maxSeconds)
	*t = jsonTime(time.Unix(int64(f), 0))
	return nil
}

// idClaim is a numeric GitHub id claim in canonical decimal form. GitHub
// sends ids as strings; a JSON number is accepted too. Anything else, or
// no claim, is "" (which no rule matches).
type idClaim string

func (id *idClaim) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var n json.Number
		if err := json.Unmarshal(b, &n); err != nil {
			*id = ""
			return nil
		}
		s = n.String()
	}
	c, _ := CanonicalID(s)
	*id = idClaim(c)
	return nil
}
