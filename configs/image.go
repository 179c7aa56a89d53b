package configs

import (
	"fmt"

	"github.com/containers/image/v5/docker/reference"
)

// ImageName is a service image split into registry host and repository path,
// e.g. "ghcr.io" and "acme/v7/backend".
type ImageName struct {
	Host string
	Path string
}

// String returns "host/path".
func (n ImageName) String() string { return n.Host + "/" + n.Path }

// ParseImage parses a service image: a fully qualified repository name with
// neither tag nor digest ("ghcr.io/acme/v7/backend").
func ParseImage(image string) (ImageName, error) {
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return ImageName{}, fmt.Errorf("parse image %q: %w", image, err)
	}
	if !reference.IsNameOnly(named) {
		return ImageName{}, fmt.Errorf("image %q must name a repository without tag or digest", image)
	}
	if named.String() != image {
		return ImageName{}, fmt.Errorf("image %q must be fully qualified, as %q", image, named.String())
	}
	return ImageName{Host: reference.Domain(named), Path: reference.Path(named)}, nil
}
