package github

import (
	"bytes"
	"strings"
	"testing"

	"github.com/golang/snappy"
)

// TestDecodeBundleCapsDecompressedSize: a small compressed body that would
// decompress beyond MaxBundleSize is refused before it is decompressed.
func TestDecodeBundleCapsDecompressedSize(t *testing.T) {
	big := snappy.Encode(nil, make([]byte, MaxBundleSize+1))
	if len(big) > 1<<20 {
		t.Fatalf("test body is %d bytes compressed; zeros should compress", len(big))
	}
	if _, err := decodeBundle(big); err == nil || !strings.Contains(err.Error(), "beyond the") {
		t.Fatalf("error %v, want the size limit", err)
	}
	ok := []byte(`{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}`)
	got, err := decodeBundle(snappy.Encode(nil, ok))
	if err != nil || !bytes.Equal(got, ok) {
		t.Fatalf("decoded %q, %v", got, err)
	}
	if _, err := decodeBundle(ok); err == nil {
		t.Fatal("an uncompressed body decoded")
	}
}

// FuzzDecodeBundle: no input panics or decodes beyond the limit.
func FuzzDecodeBundle(f *testing.F) {
	f.Add(snappy.Encode(nil, []byte(`{"a":1}`)))
	f.Add(snappy.Encode(nil, make([]byte, 1000)))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := decodeBundle(b)
		if err == nil && len(out) > MaxBundleSize {
			t.Fatalf("decoded %d bytes", len(out))
		}
	})
}
