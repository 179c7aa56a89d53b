package podman

import (
	"context"
	"fmt"

	"github.com/containers/image/v5/docker"
	"github.com/containers/image/v5/docker/reference"
	"github.com/containers/image/v5/types"

	"github.com/deployd/deployd/deployer"
)

// Resolver looks up the digest a tag points at in a registry.
type Resolver interface {
	Digest(ctx context.Context, ref string, cred deployer.Credential, insecure bool) (string, error)
}

// RegistryResolver resolves tags with containers/image, talking to the
// registry directly (no podman), with exactly the given credential: no
// auth file or system configuration is consulted. It is safe for concurrent use.
type RegistryResolver struct {
	// UserAgent is sent to registries.
	UserAgent string
}

// Digest returns the manifest digest of ref ("host/path:tag" or
// "host/path@sha256:…") as "sha256:…".
func (r RegistryResolver) Digest(ctx context.Context, ref string, cred deployer.Credential, insecure bool) (string, error) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return "", fmt.Errorf("parse reference %q: %w", ref, err)
	}
	imgRef, err := docker.NewReference(reference.TagNameOnly(named))
	if err != nil {
		return "", fmt.Errorf("reference %q: %w", ref, err)
	}
	sys := &types.SystemContext{
		DockerAuthConfig:        &types.DockerAuthConfig{Username: cred.Username, Password: cred.Password.Reveal()},
		DockerRegistryUserAgent: r.UserAgent,
		// Never fall back to the host's registries.conf or auth files; the
		// host's certs.d still supplies CAs for private registries.
		SystemRegistriesConfPath:    "/dev/null",
		SystemRegistriesConfDirPath: "/dev/null",
	}
	if insecure {
		sys.DockerInsecureSkipTLSVerify = types.OptionalBoolTrue
	}
	d, err := docker.GetDigest(ctx, sys, imgRef)
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", ref, err)
	}
	return d.String(), nil
}
