package podman

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	"github.com/deployd/deployd/deployer"
)

// ensureLogin makes podman's auth file hold the job's credential for the
// registry: podman login with the password on stdin, or podman logout for
// an anonymous credential, so that a stale entry cannot be used. A login
// this pipeline already wrote for the same credential is reused. Logins are
// serialized: services share the auth file.
func (j *job) ensureLogin(ctx context.Context) error {
	p := j.p
	p.loginMu.Lock()
	defer p.loginMu.Unlock()
	key := loginKey(j.cred)
	if p.logins[j.spec.Host] == key {
		j.loginReused = true
		return nil
	}
	j.loginReused = false
	delete(p.logins, j.spec.Host)
	start := time.Now()
	was, err := prepareAuthFile(p.podman.AuthFile)
	if err != nil {
		return fail(deployer.ClassConfig, "check that deployd can write its data directory", err)
	}
	if was != 0 {
		j.log.Warn().Str("file", p.podman.AuthFile).Str("mode", fmt.Sprintf("%04o", was)).
			Msg("registry auth file was readable by group or others; made it 0600")
	}
	if j.cred.Anonymous() {
		_, err := j.podmanRun(ctx, p.stepTimeout, "logout", "--authfile", p.podman.AuthFile, j.spec.Host)
		if err != nil && !strings.Contains(err.Error(), "not logged in") {
			return err
		}
		j.step(ctx, "login", start, nil, "anonymous access to "+j.spec.Host)
	} else {
		args := []string{"login", "--authfile", p.podman.AuthFile, "--username", j.cred.Username, "--password-stdin"}
		if j.spec.Insecure {
			args = append(args, "--tls-verify=false")
		}
		if _, err := j.podmanRunStdin(ctx, p.stepTimeout, strings.NewReader(j.cred.Password.Reveal()), append(args, j.spec.Host)...); err != nil {
			return err
		}
		j.step(ctx, "login", start, nil, "logged in to "+j.spec.Host+" as "+j.cred.Username+" ("+j.cred.Source+")")
	}
	p.logins[j.spec.Host] = key
	return nil
}

// forgetLogin drops the remembered login for the job's registry, so that
// the next ensureLogin writes the auth file again.
func (j *job) forgetLogin() {
	j.p.loginMu.Lock()
	defer j.p.loginMu.Unlock()
	delete(j.p.logins, j.spec.Host)
}

// loginKey identifies a credential without keeping its secret readable.
func loginKey(c deployer.Credential) [sha256.Size]byte {
	return sha256.Sum256([]byte(c.Source + "\x00" + c.Username + "\x00" + c.Password.Reveal()))
}

// prepareAuthFile creates the registry auth file (mode 0600) when it is
// missing, as podman refuses a missing one, and makes an existing one 0600.
// It returns the mode before when that let group or others in, else 0.
func prepareAuthFile(path string) (was os.FileMode, err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	switch {
	case err == nil:
		_, werr := f.WriteString(`{"auths":{}}` + "\n")
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return 0, fmt.Errorf("create auth file: %w", werr)
		}
		return 0, nil
	case !errors.Is(err, os.ErrExist):
		return 0, fmt.Errorf("create auth file: %w", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return 0, fmt.Errorf("auth file mode: %w", err)
	}
	if fi.Mode().Perm() == 0o600 {
		return 0, nil
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return 0, fmt.Errorf("auth file mode: %w", err)
	}
	if fi.Mode().Perm()&0o077 == 0 {
		return 0, nil
	}
	return fi.Mode().Perm(), nil
}

// withCredentials runs op with the chain's credential, after prepare (when
// not nil; the pull logs podman in there). When the registry refuses the
// credential (class auth), a login that was reused is written afresh once,
// a GitHub App token is minted afresh and tried once more, then the source
// is put aside, joins the job's refused sources (never offered again in
// this deployment), and op runs again with the next one. Transient failures
// (network, 5xx, 429) are retried with backoff within the deployment's
// retry budget. Every attempt is a step in the log.
func withCredentials(ctx context.Context, j *job, name string, prepare, op func(context.Context) (string, error), okMsg func(string) string) (string, error) {
	const maxAttempts = 16 // a bound on top of the per-cause ones below
	var last error
	refreshed := map[string]bool{}
	relogged := false
	for range maxAttempts {
		if j.cred.Source == "" {
			c, err := j.p.creds.Credential(ctx, j.req)
			if err != nil {
				hint := "no credential source is left for " + j.spec.Image + "; see the credential health on the status page"
				if last != nil {
					hint = j.refusalHint(lastSource(last))
				}
				f := fail(deployer.ClassAuth, hint, err)
				j.step(ctx, "credentials", time.Now(), f, "")
				return "", f
			}
			j.cred = c
		}
		stepName := name
		start := time.Now()
		var out string
		var err error
		if prepare != nil {
			if _, err = prepare(ctx); err != nil {
				stepName = "login"
			}
		}
		if err == nil {
			start = time.Now()
			out, err = op(ctx)
		}
		if err == nil {
			j.p.creds.Accepted(j.req, j.cred.Source)
			j.step(ctx, name, start, nil, okMsg(out))
			return out, nil
		}
		f := classifyRegistryError(j.spec.Image, j.cred.Source, err)
		if f.Class == deployer.ClassAuth {
			j.forgetLogin()
			f.Hint = j.refusalHint(j.cred.Source)
		}
		switch {
		case ctx.Err() != nil:
			j.step(ctx, stepName, start, f, "")
			return "", f
		case f.Class == deployer.ClassAuth && j.loginReused && !relogged:
			relogged = true
			j.step(ctx, stepName, start, f, "registry refused the credential in the auth file; logging in afresh")
		case f.Class == deployer.ClassAuth && j.cred.Source == sourceGitHubApp && !refreshed[j.cred.Source]:
			refreshed[j.cred.Source] = true
			j.step(ctx, stepName, start, f, "registry refused the GitHub App token; retrying once with a freshly minted one")
			j.p.creds.Invalidate(j.req)
			j.cred = deployer.Credential{}
		case f.Class == deployer.ClassAuth:
			j.step(ctx, stepName, start, f, "registry refused credential "+j.cred.Source+"; putting it aside and trying the next source")
			j.p.creds.Denied(j.req, j.cred.Source, f.Error())
			j.req.Refused = append(j.req.Refused, j.cred.Source)
			j.passedOver = append(j.passedOver, j.cred.Source+": "+f.Error())
			last = &sourceError{source: j.cred.Source, err: f}
			j.cred = deployer.Credential{}
		case f.Transient() && j.retries < j.p.retry.Attempts-1:
			j.retries++
			wait := j.p.retry.backoff(j.retries)
			j.step(ctx, stepName, start, f, fmt.Sprintf("transient failure; retry %d of %d in %s", j.retries, j.p.retry.Attempts-1, wait.Round(time.Millisecond)))
			select {
			case <-ctx.Done():
				return "", fail(deployer.ClassNetwork, f.Hint, ctx.Err())
			case <-time.After(wait):
			}
		default:
			j.step(ctx, stepName, start, f, "")
			return "", f
		}
	}
	if last == nil {
		last = fail(deployer.ClassNetwork, "the registry kept failing; deployd will catch up on the next reconcile", errors.New("too many attempts"))
	}
	return "", last
}

// refusalHint is the hint for the registry refusing source's credential:
// the credentials' own explanation when they offer one (the chain knows the
// registry's configuration), else authHint's general one.
func (j *job) refusalHint(source string) string {
	if ex, ok := j.p.creds.(deployer.Explainer); ok {
		return ex.ExplainRefusal(j.req, source)
	}
	return authHint(j.spec.Image, source)
}

// sourceGitHubApp is the credential source whose tokens can be minted afresh.
const sourceGitHubApp = "github_app"

// Retry is the budget for transient failures of one deployment, shared by
// its registry steps (resolve, login, pull).
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
	err    *deployer.Failure
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
