package configs

import (
	"bytes"
	"os"
	"testing"
)

// FuzzParse feeds arbitrary bytes to Parse: it must never panic, and a
// configuration it accepts must validate again.
func FuzzParse(f *testing.F) {
	for _, name := range []string{"deployd.example.yaml", "deployd.local.yaml"} {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(minimal))
	// Unreadable values under anchors and merges.
	f.Add([]byte("services: {a: &s {tags: [[1], x], keep_images: x}, b: {<<: [*s, ~]}, c: *s}\n"))
	f.Add([]byte("registries: {<<: [5, {}], x: 1, ? [a] : 1}\nservices: {a: {<<: ~, strategy: [x]}}\n"))
	getenv := func(k string) string {
		if k == "UNSET" {
			return ""
		}
		return "/tmp/" + k
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(bytes.NewReader(data), getenv)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("accepted config does not validate: %v", err)
		}
	})
}
