package deployer

import (
	"context"
	"errors"
	"net"
	"strings"

	"github.com/containers/image/v5/docker"
)

// Failure classes (SPEC §6). Transient classes are retried; the others are
// reported with a hint.
const (
	ClassAuth     = "auth"
	ClassNotFound = "not_found"
	ClassNetwork  = "network"
	ClassPodman   = "podman"
	ClassHealth   = "health"
	ClassConfig   = "config"
)

// Failure is why a deployment failed: a class to branch on, the cause, and
// a hint a person can act on.
type Failure struct {
	Class string
	Hint  string
	Err   error
}

func (f *Failure) Error() string { return f.Err.Error() }

func (f *Failure) Unwrap() error { return f.Err }

// fail wraps err as a Failure of class with hint.
func fail(class, hint string, err error) *Failure {
	return &Failure{Class: class, Hint: hint, Err: err}
}

// classifyRegistryError turns an error from the registry (resolve through
// containers/image, or podman login/pull) into a Failure. The raw
// "Requesting bearer token: invalid status code from registry 403
// (Forbidden)" of podman becomes an auth failure with a plain-words hint.
func classifyRegistryError(image, source string, err error) *Failure {
	var f *Failure
	if errors.As(err, &f) {
		return f
	}
	msg := strings.ToLower(err.Error())
	var unauthorized docker.ErrUnauthorizedForCredentials
	switch {
	case errors.As(err, &unauthorized),
		strings.Contains(msg, "requesting bearer token"),
		strings.Contains(msg, "403 (forbidden)"),
		strings.Contains(msg, "401 (unauthorized)"),
		strings.Contains(msg, "unauthorized"),
		strings.Contains(msg, "denied"),
		strings.Contains(msg, "authentication required"):
		return fail(ClassAuth, authHint(image, source), errors.New(plainAuthError(source, msg)))
	case strings.Contains(msg, "manifest unknown"),
		strings.Contains(msg, "name unknown"),
		strings.Contains(msg, "not found"),
		strings.Contains(msg, "statuscode: 404"): // a HEAD answer has no body to name the error
		return fail(ClassNotFound, "the registry has no such tag or digest for "+image+
			"; check that CI pushed it and that the service's image and tags are right", err)
	case errors.Is(err, context.DeadlineExceeded), isNetError(err),
		strings.Contains(msg, "connection refused"),
		strings.Contains(msg, "no such host"),
		strings.Contains(msg, "i/o timeout"),
		strings.Contains(msg, "tls: "),
		strings.Contains(msg, "429"), strings.Contains(msg, "too many requests"),
		strings.Contains(msg, "500 "), strings.Contains(msg, "502 "), strings.Contains(msg, "503 "), strings.Contains(msg, "504 "):
		return fail(ClassNetwork, "the registry could not be reached or failed; deployd retries, and the reconcile loop catches up", err)
	}
	return fail(ClassPodman, "see the step log for podman's message", err)
}

// authHint explains an auth refusal for the credential source that was used.
func authHint(image, source string) string {
	switch source {
	case "github_app":
		return "the registry refused the GitHub App token for " + image +
			": GitHub App installation tokens cannot read some private packages; grant the App access to the package " +
			"(package settings → Manage Actions access / repository access) or add a token_file with a read:packages token to the registry's credentials"
	case "token_file":
		return "the registry refused the token in token_file for " + image +
			": check that it is a classic token with read:packages that has not expired"
	case "none", "":
		return "the registry wants credentials for " + image + ": configure github_app or token_file in the registry's credentials"
	}
	return "the registry refused the credential (" + source + ") for " + image
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

// Transient reports whether a failure may go away by itself (network, 5xx, 429).
func (f *Failure) Transient() bool { return f.Class == ClassNetwork }

// ClassifyRegistryError explains an error of [RegistryResolver.Digest] (or of
// podman login or pull) made with the credential of source for image: a
// *Failure whose Class says what went wrong (ClassAuth when the registry
// refused the credential) and whose Hint says how to fix it. The pipeline
// uses the same classification; doctor calls this to speak the same words.
func ClassifyRegistryError(image, source string, err error) *Failure {
	return classifyRegistryError(image, source, err)
}
