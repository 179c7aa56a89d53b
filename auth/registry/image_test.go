package registry

import (
	"strings"
	"testing"
)

func TestSplitImage(t *testing.T) {
	digest := "@sha256:" + strings.Repeat("ab", 32)
	for _, tc := range []struct {
		host, image        string
		wantHost, wantPath string
	}{
		{"ghcr.io", "ghcr.io/acme/v7/backend:latest", "ghcr.io", "acme/v7/backend"},
		{"ghcr.io", "acme/v7/backend", "ghcr.io", "acme/v7/backend"},
		{"GHCR.IO ", " ghcr.io/acme/app", "ghcr.io", "acme/app"},
		{"", "ghcr.io/acme/v7/backend" + digest, "ghcr.io", "acme/v7/backend"},
		{"ghcr.io", "ghcr.io/acme/app:v1" + digest, "ghcr.io", "acme/app"},
		{"ghcr.io", "backend", "ghcr.io", "backend"},
		{"127.0.0.1:5000", "127.0.0.1:5000/acme/app:1", "127.0.0.1:5000", "acme/app"},
		{"", "127.0.0.1:5000/acme/app", "127.0.0.1:5000", "acme/app"},
		{"", "localhost/app:dev", "localhost", "app"},
		{"docker.io", "library/nginx", "docker.io", "library/nginx"},
		{"docker.io", "nginx", "docker.io", "library/nginx"},
		{"docker.io", "docker.io/library/nginx:1.27", "docker.io", "library/nginx"},
		{"", "nginx:1.27", "docker.io", "library/nginx"},
		// Not a reference: kept as given, so every call agrees on it.
		{"ghcr.io", "Not A Ref", "ghcr.io", "Not A Ref"},
	} {
		host, path := splitImage(tc.host, tc.image)
		if host != tc.wantHost || path != tc.wantPath {
			t.Errorf("splitImage(%q, %q) = %q, %q; want %q, %q", tc.host, tc.image, host, path, tc.wantHost, tc.wantPath)
		}
	}
}
