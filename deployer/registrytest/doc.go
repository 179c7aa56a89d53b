// Package registrytest runs a real container registry with ghcr.io-style
// bearer-token authentication, for tests of code that pulls images.
//
// [Start] launches Debian's `docker-registry` (the CNCF distribution
// registry, 2.8) on a free 127.0.0.1 port, with filesystem storage in a
// temporary directory, and configures it with
//
//	auth:
//	  token: {realm, service, issuer, rootcertbundle}
//
// so that it behaves like ghcr.io: an unauthenticated request gets
// 401 with `WWW-Authenticate: Bearer realm=...,service=...,scope=...`, the
// client fetches a token from the realm with HTTP Basic credentials, and
// retries with `Authorization: Bearer TOKEN`.
//
// The realm is a token server written in Go (an httptest server on
// 127.0.0.1) that stands in for ghcr.io's. It answers
//
//   - 401 when the request carries no Basic credentials;
//   - 403 when the credentials are refused, which podman reports as
//     `Requesting bearer token: invalid status code from registry 403
//     (Forbidden)`, exactly the message seen against ghcr.io;
//   - 200 with {"token", "access_token", "expires_in", "issued_at"}
//     otherwise. The token is an ES256 JWT whose header carries the
//     signing certificate in `x5c`; that self-signed certificate is the
//     registry's rootcertbundle, so the registry verifies the signature,
//     issuer, audience (the service), exp/nbf and the `access` claim.
//
// The built-in push account ([Registry.PushUser], [Registry.PushPassword])
// is granted every action it asks for. Any other credential is decided by
// [Options.Authorize]. Granting a token with no actions (ok true, no
// actions) reproduces "login OK, pull denied": `podman login` succeeds
// because the token is valid, and the pull then fails because the token
// gives no access to the repository — what ghcr.io does with a GitHub App
// installation token and a private package the App cannot read.
//
// Every token request is recorded ([Registry.TokenRequests]) with the
// user name, requested scopes and granted actions; passwords are never
// recorded.
//
// When `docker-registry` is not installed, Start skips the test, unless
// the environment asks for end-to-end tests (DEPLOYD_E2E set to anything
// but "0" or "false", or CI=true), in which case it fails it: CI must
// never pass by skipping. scripts/install-test-deps installs it.
package registrytest
