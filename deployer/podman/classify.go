package podman

import (
	"context"
	"errors"
	"net"
	"os/exec"
	"regexp"
	"strings"

	"github.com/containers/image/v5/docker"

	"github.com/deployd/deployd/deployer"
)

// fail wraps err as a deployer.Failure of class with hint.
func fail(class, hint string, err error) *deployer.Failure {
	return &deployer.Failure{Class: class, Hint: hint, Err: err}
}

// Signals in registry and podman error text. They are anchored on the
// registry's own wording (error codes such as "denied:", HTTP status
// phrases), so that local failures such as a file's "permission denied" or
// a digest that happens to contain "429" are not mistaken for them.
var (
	authSignal = regexp.MustCompile(`requesting bearer token.*\b40[13]\b|authentication required|insufficient_scope|` +
		`requested access to the resource is denied|not authorized|` +
		`(^|[\s:(])(denied|unauthorized):|\b401\b[^0-9a-z]*unauthorized|\b403\b[^0-9a-z]*forbidden|status(code)?:? ?40[13]\b`)
	notFoundSignal = regexp.MustCompile(`manifest unknown|name unknown|blob unknown|` +
		`\b404\b[^0-9a-z]*not found|status(code)?:? ?404\b`)
	transientSignal = regexp.MustCompile(`connection refused|connection reset|no such host|i/o timeout|` +
		`server misbehaving|too many requests|unexpected eof|` +
		`(status(code)?:? ?|status code from registry |unexpected http status: )(429|5[0-9][0-9])\b`)
	tlsSignal = regexp.MustCompile(`x509: |tls: |http: server gave http response to https client`)
)

// classifyRegistryError turns an error from the registry (resolve through
// containers/image, or podman login/pull) into a deployer.Failure. The raw
// "Requesting bearer token: invalid status code from registry 403
// (Forbidden)" of podman becomes an auth failure with a plain-words hint.
func classifyRegistryError(image, source string, err error) *deployer.Failure {
	var f *deployer.Failure
	if errors.As(err, &f) {
		return f
	}
	msg := strings.ToLower(err.Error())
	var unauthorized docker.ErrUnauthorizedForCredentials
	var ce *CommandError
	switch {
	case errors.As(err, &ce) && ce.ExitCode == -1 && errors.Is(err, exec.ErrNotFound):
		return fail(deployer.ClassPodman, "podman was not found: install it or set podman.command", err)
	case errors.As(err, &unauthorized), authSignal.MatchString(msg):
		return fail(deployer.ClassAuth, authHint(image, source), errors.New(plainAuthError(source, msg)))
	case notFoundSignal.MatchString(msg):
		return fail(deployer.ClassNotFound, "the registry has no such tag or digest for "+image+
			"; check that CI pushed it and that the service's image and tags are right", err)
	case tlsSignal.MatchString(msg):
		return fail(deployer.ClassConfig, "TLS with the registry failed: check the host's CA certificates and clock "+
			"(insecure: true is for local test registries only)", err)
	case errors.Is(err, context.DeadlineExceeded), isNetError(err), transientSignal.MatchString(msg):
		return fail(deployer.ClassNetwork, "the registry could not be reached or failed; deployd retries, and the reconcile loop catches up", err)
	}
	return fail(deployer.ClassPodman, "see the step log for podman's message", err)
}

// authHint explains an auth refusal for the credential source that was
// used, in general words: the pipeline gives its Credentials' own
// explanation instead when they offer one (deployer.Explainer), and doctor
// gives the chain's.
func authHint(image, source string) string {
	switch source {
	case "none", "":
		return "the registry wants credentials for " + image + ": configure github_app or token_file in the registry's credentials"
	}
	return "the registry refused the " + source + " credential for " + image +
		": check it in the registry's credentials; deployd doctor explains each source and its fix"
}

// plainAuthError says in plain words what the registry did with the
// credential, given the lower-cased raw message.
func plainAuthError(source, msg string) string {
	if source == "" {
		source = "anonymous"
	}
	switch {
	case strings.Contains(msg, "requesting bearer token") && strings.Contains(msg, "403"):
		return "the registry's token endpoint refused the " + source + " credential (403 Forbidden)"
	case strings.Contains(msg, "requesting bearer token") && strings.Contains(msg, "401"),
		strings.Contains(msg, "401 (unauthorized)"):
		return "the registry's token endpoint did not accept the " + source + " credential (401 Unauthorized)"
	case strings.Contains(msg, "denied"), strings.Contains(msg, "insufficient_scope"):
		return "the registry accepted the " + source + " credential but denied access to the image (DENIED)"
	}
	return "the registry refused the " + source + " credential (unauthorized)"
}

func isNetError(err error) bool {
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &ne) || errors.As(err, &oe)
}

// ClassifyRegistryError explains an error of [RegistryResolver.Digest] (or of
// podman login or pull) made with the credential of source for image: a
// *deployer.Failure whose Class says what went wrong (ClassAuth when the registry
// refused the credential) and whose Hint says how to fix it. The pipeline
// uses the same classification; doctor calls this to speak the same words.
func ClassifyRegistryError(image, source string, err error) *deployer.Failure {
	return classifyRegistryError(image, source, err)
}
