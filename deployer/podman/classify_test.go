package podman

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/deployd/deployd/deployer"
)

func TestClassifyRegistryError(t *testing.T) {
	const image = "ghcr.io/acme/v7/backend"
	cases := []struct {
		name, msg string
		want      string
	}{
		{"podman's token endpoint 403", "Error: initializing source docker://ghcr.io/acme/v7/backend:latest: Requesting bearer token: invalid status code from registry 403 (Forbidden)", deployer.ClassAuth},
		{"containers/image token endpoint 403", "resolve x: Requesting bearer token: received unexpected HTTP status: 403 Forbidden", deployer.ClassAuth},
		{"pull denied after login", "Error: initializing source docker://x@sha256:ab: reading manifest sha256:ab in x: denied: requested access to the resource is denied", deployer.ClassAuth},
		{"containers/image denied", "resolve x: reading digest latest in x: requested access to the resource is denied", deployer.ClassAuth},
		{"unauthorized code", "reading manifest latest in x: unauthorized: authentication required", deployer.ClassAuth},
		{"login 401", "Error: logging into \"ghcr.io\": invalid username/password: 401 Unauthorized", deployer.ClassAuth},
		{"manifest unknown", "reading manifest latest in x: manifest unknown", deployer.ClassNotFound},
		{"HEAD 404", "resolve x: StatusCode: 404, \"\"", deployer.ClassNotFound},
		{"connection refused", "pinging container registry 127.0.0.1:9: Get \"https://127.0.0.1:9/v2/\": dial tcp 127.0.0.1:9: connect: connection refused", deployer.ClassNetwork},
		{"rate limited", "reading manifest latest in x: received unexpected HTTP status: 429 Too Many Requests", deployer.ClassNetwork},
		{"registry 503", "Requesting bearer token: invalid status code from registry 503 (Service Unavailable)", deployer.ClassNetwork},
		{"tls", "pinging container registry ghcr.io: Get \"https://ghcr.io/v2/\": x509: certificate signed by unknown authority", deployer.ClassConfig},
		{"local permission denied", "Error: open /var/lib/deployd/auth.json: permission denied", deployer.ClassPodman},
		{"429 inside a digest", "Error: writing blob sha256:0429a5003e: no space left on device", deployer.ClassPodman},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := classifyRegistryError(image, "github_app", errors.New(c.msg))
			if f.Class != c.want {
				t.Errorf("%q classed %s, want %s", c.msg, f.Class, c.want)
			}
			if f.Hint == "" {
				t.Error("no hint")
			}
			if f.Class == deployer.ClassAuth && strings.Contains(f.Error(), "Requesting bearer token") {
				t.Errorf("auth failure shows the raw registry message: %q", f.Error())
			}
		})
	}
	if f := classifyRegistryError(image, "none", fmt.Errorf("resolve: %w", context.DeadlineExceeded)); f.Class != deployer.ClassNetwork {
		t.Errorf("deadline classed %s, want network", f.Class)
	}
	missing := &CommandError{Argv: []string{"podman"}, ExitCode: -1, Err: exec.ErrNotFound}
	if f := classifyRegistryError(image, "none", missing); f.Class != deployer.ClassPodman || !strings.Contains(f.Hint, "podman.command") {
		t.Errorf("missing podman: %s %q", f.Class, f.Hint)
	}
}
