package deployer

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"time"
)

// login writes the credential into the auth file through podman login,
// the password on stdin; an anonymous credential logs out instead so that
// a stale entry cannot be used.
func (j *job) login(ctx context.Context) error {
	start := time.Now()
	if err := prepareAuthFile(j.p.podman.AuthFile); err != nil {
		j.step(ctx, "login", start, err, "")
		return fail(ClassConfig, "check that deployd can write its data directory", err)
	}
	if j.cred.Anonymous() {
		_, err := j.podmanRun(ctx, j.p.stepTimeout, "logout", "--authfile", j.p.podman.AuthFile, j.spec.Host)
		if err != nil && !strings.Contains(err.Error(), "not logged in") {
			j.step(ctx, "login", start, err, "")
			return classifyRegistryError(j.spec.Image, j.cred.Source, err)
		}
		j.step(ctx, "login", start, nil, "anonymous access to "+j.spec.Host)
		return nil
	}
	args := []string{"login", "--authfile", j.p.podman.AuthFile, "--username", j.cred.Username, "--password-stdin"}
	if j.spec.Insecure {
		args = append(args, "--tls-verify=false")
	}
	_, err := j.podmanRunStdin(ctx, j.p.stepTimeout, strings.NewReader(j.cred.Password.Reveal()), append(args, j.spec.Host)...)
	if err != nil {
		f := classifyRegistryError(j.spec.Image, j.cred.Source, err)
		j.step(ctx, "login", start, f, "")
		return f
	}
	j.step(ctx, "login", start, nil, "logged in to "+j.spec.Host+" as "+j.cred.Username+" ("+j.cred.Source+")")
	return nil
}

// prepareAuthFile creates the registry auth file (mode 0600) when it is
// missing, as podman refuses a missing one, and tightens a looser mode.
func prepareAuthFile(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	switch {
	case err == nil:
		_, werr := f.WriteString(`{"auths":{}}` + "\n")
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return fmt.Errorf("create auth file: %w", werr)
		}
		return nil
	case !errors.Is(err, os.ErrExist):
		return fmt.Errorf("create auth file: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return fmt.Errorf("auth file mode: %w", err)
	}
	return nil
}

// withCredentials runs op with the chain's credential. When the registry
// refuses it (class auth), a GitHub App token is minted afresh and tried
// once more, then the source is put aside and op runs again with the next
// one. Transient failures (network, 5xx, 429) are retried with backoff
// within the pipeline's retry budget. Every attempt is a step in the log.
func withCredentials(ctx context.Context, j *job, name string, op func(context.Context) (string, error), okMsg func(string) string) (string, error) {
	const maxAttempts = 16 // a bound on top of the per-cause ones below
	var last error
	refreshed := map[string]bool{}
	retries := 0
	for range maxAttempts {
		if j.cred.Source == "" {
			c, err := j.p.creds.Credential(ctx, j.req)
			if err != nil {
				hint := "no credential source is left for " + j.spec.Image + "; see the credential health on the status page"
				if last != nil {
					hint = authHint(j.spec.Image, lastSource(last))
				}
				f := fail(ClassAuth, hint, err)
				j.step(ctx, "credentials", time.Now(), f, "")
				return "", f
			}
			j.cred = c
		}
		start := time.Now()
		out, err := op(ctx)
		if err == nil {
			j.p.creds.Accepted(j.req, j.cred.Source)
			j.step(ctx, name, start, nil, okMsg(out))
			return out, nil
		}
		f := classifyRegistryError(j.spec.Image, j.cred.Source, err)
		switch {
		case ctx.Err() != nil:
			j.step(ctx, name, start, f, "")
			return "", f
		case f.Class == ClassAuth && j.cred.Source == sourceGitHubApp && !refreshed[j.cred.Source]:
			refreshed[j.cred.Source] = true
			j.step(ctx, name, start, f, "registry refused the GitHub App token; retrying once with a freshly minted one")
			j.p.creds.Invalidate(j.req)
			j.cred = Credential{}
		case f.Class == ClassAuth:
			j.step(ctx, name, start, f, "registry refused credential "+j.cred.Source+"; putting it aside and trying the next source")
			j.p.creds.Denied(j.req, j.cred.Source, f.Error())
			j.passedOver = append(j.passedOver, j.cred.Source+": "+f.Error())
			last = &sourceError{source: j.cred.Source, err: f}
			j.cred = Credential{}
		case f.Transient() && retries < j.p.retry.Attempts-1:
			retries++
			wait := j.p.retry.backoff(retries)
			j.step(ctx, name, start, f, fmt.Sprintf("transient failure; retry %d of %d in %s", retries, j.p.retry.Attempts-1, wait.Round(time.Millisecond)))
			select {
			case <-ctx.Done():
				return "", fail(ClassNetwork, f.Hint, ctx.Err())
			case <-time.After(wait):
			}
		default:
			j.step(ctx, name, start, f, "")
			return "", f
		}
	}
	if last == nil {
		last = fail(ClassNetwork, "the registry kept failing; deployd will catch up on the next reconcile", errors.New("too many attempts"))
	}
	return "", last
}

// sourceGitHubApp is the credential source whose tokens can be minted afresh.
const sourceGitHubApp = "github_app"

// Retry is the budget for transient failures of one step of a deployment.
type Retry struct {
	// Attempts is how many times a step runs at most (default 4).
	Attempts int
	// Base is the first wait (default 1s); each retry doubles it, up to Max
	// (default 30s), plus up to half again of random jitter.
	Base, Max time.Duration
}

func (r Retry) withDefaults() Retry {
	if r.Attempts <= 0 {
		r.Attempts = 4
	}
	if r.Base <= 0 {
		r.Base = time.Second
	}
	if r.Max <= 0 {
		r.Max = 30 * time.Second
	}
	return r
}

// backoff returns the wait before retry n (1-based).
func (r Retry) backoff(n int) time.Duration {
	d := r.Base << (n - 1)
	if d > r.Max || d <= 0 {
		d = r.Max
	}
	return d + time.Duration(rand.Int64N(int64(d)/2+1))
}

// sourceError remembers which credential source a failure belongs to.
type sourceError struct {
	source string
	err    *Failure
}

func (e *sourceError) Error() string { return e.source + ": " + e.err.Error() }
func (e *sourceError) Unwrap() error { return e.err }

func lastSource(err error) string {
	var se *sourceError
	if errors.As(err, &se) {
		return se.source
	}
	return ""
}
