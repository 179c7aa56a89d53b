package registry

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/containers/image/v5/docker"
	"github.com/docker/distribution/registry/api/errcode"

	"github.com/deployd/deployd/auth/github"
	"github.com/deployd/deployd/deployer"
)

// ErrNoCredential is matched (errors.Is) by the *ChainError returned when no
// source could give a credential for an image.
var ErrNoCredential = errors.New("no usable registry credential")

// Explain returns, in plain words with the fix, in one line, what it means
// that the registry refused source's credential for image with reason
// (ExplainDenied gives the fix apart). It does not change the chain.
func (c *Chain) Explain(host, image, source, reason string) string {
	host, image = splitImage(host, image)
	ref := host + "/" + image
	r := c.registries[host]
	switch source {
	case SourceGitHubApp:
		msg := appDenied(ref, reason)
		if r != nil && contains(r.sources, SourceTokenFile) {
			return msg + "; the token_file credential is used instead"
		}
		return msg + fmt.Sprintf("; add a token_file with a read:packages token to the credentials of %s", host)
	case SourceTokenFile:
		path := "token_file"
		if r != nil && r.tokenFile != nil {
			path = r.tokenFile.path
		}
		return fmt.Sprintf("registry denied the token in %s for %s (%s): it must be a classic personal access token with read:packages that can see the package", path, ref, reason)
	case SourceNone:
		return fmt.Sprintf("registry requires a login for %s (%s): list github_app or token_file in the credentials of %s", ref, reason, host)
	default:
		return fmt.Sprintf("registry denied the %s credential for %s (%s)", source, ref, reason)
	}
}

// appDenied says what it means that the registry refused a GitHub App
// installation token for ref.
func appDenied(ref, reason string) string {
	return fmt.Sprintf("registry denied the GitHub App token for %s (%s): GitHub App installation tokens cannot read this private package", ref, reason)
}

// appPackageAccess says how an App installation token can come to read a
// private package, and what does not help.
const appPackageAccess = "make the package inherit access from a repository the App is installed on " +
	"(package settings → \"Inherit access from source repository\"), the only way an installation token can read a private package; " +
	"\"Manage Actions access\" grants workflows' GITHUB_TOKEN, not the App"

// Explanation is a problem with one credential source in plain words,
// Detail, and how to fix it, Fix, naming the configuration keys to change.
// Neither ever contains a credential.
type Explanation struct {
	Detail string
	Fix    string
}

// ExplainDenied explains that the registry refused source's credential for
// image with reason (the registry's own words, see Answer), with the fix
// apart: for doctor, which checks every source and says itself what
// deploys fall back to. It does not change the chain.
func (c *Chain) ExplainDenied(host, image, source, reason string) Explanation {
	host, image = splitImage(host, image)
	ref := host + "/" + image
	creds := "registries." + host + ".credentials"
	r := c.registries[host]
	switch source {
	case SourceGitHubApp:
		e := Explanation{Detail: appDenied(ref, reason), Fix: "for the App to read it, " + appPackageAccess}
		if r == nil || !contains(r.sources, SourceTokenFile) {
			e.Fix = "add token_file with a classic personal access token that has read:packages to " + creds +
				", after github_app (the reliable fix); or " + appPackageAccess
		}
		return e
	case SourceTokenFile:
		path := "token_file"
		if r != nil && r.tokenFile != nil {
			path = r.tokenFile.path
		}
		return Explanation{
			Detail: c.Explain(host, image, source, reason),
			Fix:    fmt.Sprintf("put a classic personal access token with read:packages that can see %s in %s", ref, path),
		}
	default:
		return Explanation{Detail: c.Explain(host, image, source, reason), Fix: "list github_app or token_file in " + creds}
	}
}

// ExplainRefusal is the hint for a deployment that the registry refused
// source's credential for: what was refused and ExplainDenied's fix, so the
// pipeline and doctor give the same advice (deployer.Explainer).
func (c *Chain) ExplainRefusal(req deployer.CredentialRequest, source string) string {
	host, image := splitImage(req.Host, req.Image)
	what := "the registry wants credentials for "
	switch source {
	case SourceGitHubApp:
		what = "the registry refused the GitHub App token for "
	case SourceTokenFile:
		what = "the registry refused the token in token_file for "
	}
	return what + host + "/" + image + ": " + c.ExplainDenied(host, image, source, "").Fix
}

// ExplainUnavailable explains that source could not produce a credential
// for host: err is the error of SourceCredential. The fix is the GitHub
// App's own (a *github.Error's hint) when the App failed.
func (c *Chain) ExplainUnavailable(host, source string, err error) Explanation {
	e := Explanation{Detail: "no credential: " + err.Error(), Fix: "check the credentials of the registry"}
	var ge *github.Error
	r := c.registries[strings.ToLower(strings.TrimSpace(host))]
	switch {
	case errors.As(err, &ge) && ge.Hint != "":
		e.Fix = ge.Hint
	case source == SourceTokenFile && r != nil && r.tokenFile != nil:
		e.Fix = fmt.Sprintf("write a classic personal access token with read:packages to %s (the token alone on one line, mode 0600)", r.tokenFile.path)
	}
	return e
}

// Answer returns the registry's own words in err, an error of a registry
// client (containers/image, as deployer/podman's resolver returns it), for
// the reason of Explain and ExplainDenied: the message of the registry's
// error code ("requested access to the resource is denied"), else the
// unexpected HTTP status it answered ("403 Forbidden"), else "401
// Unauthorized" when it refused the credentials. It returns "" when err
// (nil included) holds none of these.
func Answer(err error) string {
	var ec errcode.Error
	var status docker.UnexpectedHTTPStatusError
	var unauthorized docker.ErrUnauthorizedForCredentials
	switch {
	case errors.As(err, &ec):
		if ec.Message != "" {
			return ec.Message
		}
		return ec.Code.Message()
	case errors.As(err, &status):
		return fmt.Sprintf("%d %s", status.StatusCode, http.StatusText(status.StatusCode))
	case errors.As(err, &unauthorized):
		// It does not unwrap: look into its cause.
		if a := Answer(unauthorized.Err); a != "" {
			return a
		}
		return "401 Unauthorized"
	}
	return ""
}

// Attempt is one source tried for an image, and why it gave nothing.
type Attempt struct {
	Source string `json:"source"`
	// Denied: the registry refused this source for the image and it is put
	// aside until Until.
	Denied bool      `json:"denied"`
	Until  time.Time `json:"until,omitzero"`
	// Reason is the registry's answer (Denied) or the source's error.
	Reason string `json:"reason"`
	// Err is the source's error when it could not produce a credential.
	Err error `json:"-"`
}

// ChainError says that no source gave a usable credential for an image:
// each source tried with why, and a hint at the fix. It never contains a
// credential.
type ChainError struct {
	Host     string
	Image    string // path without host, tag or digest
	Attempts []Attempt
	Hint     string
}

// Error lists every source with its reason, then the hint.
func (e *ChainError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "no registry credential left for %s/%s", e.Host, e.Image)
	for i, a := range e.Attempts {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(a.describe())
	}
	if e.Hint != "" {
		b.WriteString("; ")
		b.WriteString(e.Hint)
	}
	return b.String()
}

// Is matches ErrNoCredential.
func (e *ChainError) Is(target error) bool { return target == ErrNoCredential }

// Unwrap returns the errors of sources that failed to produce a credential,
// so that errors.As finds a *github.Error.
func (e *ChainError) Unwrap() []error {
	var errs []error
	for _, a := range e.Attempts {
		if a.Err != nil {
			errs = append(errs, a.Err)
		}
	}
	return errs
}

func (a Attempt) describe() string {
	if !a.Denied {
		return fmt.Sprintf("%s failed: %s", a.Source, a.Reason)
	}
	what := "the " + a.Source + " credential"
	switch a.Source {
	case SourceGitHubApp:
		what = "the GitHub App token"
	case SourceTokenFile:
		what = "the token_file token"
	case SourceNone:
		what = "anonymous access"
	}
	return fmt.Sprintf("registry denied %s (%s), put aside until %s", what, a.Reason, a.Until.UTC().Format(time.RFC3339))
}

func newChainError(r *registry, image string, attempts []Attempt) *ChainError {
	e := &ChainError{Host: r.host, Image: image, Attempts: attempts}
	ref := r.host + "/" + image
	byName := make(map[string]Attempt, len(attempts))
	for _, a := range attempts {
		byName[a.Source] = a
	}
	var hints []string
	app, appTried := byName[SourceGitHubApp]
	file, fileTried := byName[SourceTokenFile]
	fileConfigured := contains(r.sources, SourceTokenFile)
	if appTried && app.Denied {
		h := fmt.Sprintf("GitHub App installation tokens cannot read the private package %s (ghcr.io accepts the login, then denies the pull)", ref)
		if !fileConfigured {
			h += fmt.Sprintf(": add token_file to the credentials of %s with a classic personal access token that has read:packages, or grant the App access to the package", r.host)
		}
		hints = append(hints, h)
	}
	// A GitHub App that failed to mint has its hint in its reason already.
	if fileTried && file.Denied {
		hints = append(hints, fmt.Sprintf("the token in %s was refused: it must be a classic personal access token with read:packages that can see %s", r.tokenFile.path, ref))
	}
	if a, ok := byName[SourceNone]; ok && a.Denied {
		hints = append(hints, fmt.Sprintf("%s requires a login for %s: list github_app or token_file in its credentials", r.host, ref))
	}
	e.Hint = strings.Join(hints, "; ")
	return e
}
