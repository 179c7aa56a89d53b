// Package e2e decides what an end-to-end test does when a tool it needs
// (podman, docker-registry, chromium) is missing: skip on a developer's
// machine, fail where end-to-end tests are required.
package e2e

import (
	"os"
	"testing"
)

// Required reports whether the environment demands end-to-end tests:
// DEPLOYD_E2E is set to anything but "", "0" or "false", or CI is "true"
// or "1".
func Required() bool {
	if v := os.Getenv("DEPLOYD_E2E"); v != "" && v != "0" && v != "false" {
		return true
	}
	v := os.Getenv("CI")
	return v == "true" || v == "1"
}

// Missing ends t because of what msg says is missing: a failure when
// end-to-end tests are required, a skip otherwise.
func Missing(t testing.TB, msg string) {
	t.Helper()
	if Required() {
		t.Fatal(msg + "; DEPLOYD_E2E or CI is set, so end-to-end tests must not be skipped")
	}
	t.Skip(msg + "; set DEPLOYD_E2E=1 to make this a failure")
}
