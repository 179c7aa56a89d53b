package deployer

import (
	"errors"
	"strings"
	"testing"
)

func TestValidTag(t *testing.T) {
	for tag, want := range map[string]bool{
		"latest": true, "_x": true, "v1.2-rc_3": true, "sha-3484a3f": true, "X": true,
		strings.Repeat("x", 128): true, strings.Repeat("x", 129): false,
		"": false, ".x": false, "-x": false, "a:b": false, "a/b": false, "a b": false,
		"v1\n": false, "é": false, "a@sha256": false,
	} {
		if got := ValidTag(tag); got != want {
			t.Errorf("ValidTag(%q) = %v, want %v", tag, got, want)
		}
	}
}

func TestValidDigest(t *testing.T) {
	hex64 := strings.Repeat("0123456789abcdef", 4)
	for d, want := range map[string]bool{
		"sha256:" + hex64:                  true,
		"sha256:" + strings.ToUpper(hex64): false,
		"sha256:" + hex64[:63]:             false,
		"sha256:" + hex64 + "0":            false,
		"sha256:" + hex64[:63] + "g":       false,
		"sha512:" + hex64:                  false,
		"SHA256:" + hex64:                  false,
		hex64:                              false,
		"":                                 false,
	} {
		if got := ValidDigest(d); got != want {
			t.Errorf("ValidDigest(%q) = %v, want %v", d, got, want)
		}
	}
}

func TestRequestValidate(t *testing.T) {
	digest := "sha256:" + strings.Repeat("ab", 32)
	for _, tt := range []struct {
		r    Request
		want error
	}{
		{Request{Service: "web", Tag: "v1"}, nil},
		{Request{Service: "web", Digest: digest}, nil},
		{Request{Service: "web", Tag: "v1", Digest: digest}, nil},
		{Request{Tag: "v1"}, ErrNoService},
		{Request{Service: "web"}, ErrNoTagOrRef},
		{Request{Service: "web", Tag: "-v1"}, ErrBadTag},
		{Request{Service: "web", Digest: "sha256:abc"}, ErrBadDigest},
	} {
		if err := tt.r.Validate(); !errors.Is(err, tt.want) {
			t.Errorf("%+v.Validate() = %v, want %v", tt.r, err, tt.want)
		}
	}
}
