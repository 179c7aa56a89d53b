package podmantest

import "testing"

func TestUnescapeMountPoint(t *testing.T) {
	for in, want := range map[string]string{
		`/tmp/pt1/root/shm`:     "/tmp/pt1/root/shm",
		`/tmp/a\040b`:           "/tmp/a b",
		`/tmp/tab\011and\134bs`: "/tmp/tab\tand\\bs",
		`/tmp/not\08escape\`:    `/tmp/not\08escape\`,
		`/tmp/short\04`:         `/tmp/short\04`,
	} {
		if got := unescapeMountPoint(in); got != want {
			t.Errorf("unescapeMountPoint(%q) = %q, want %q", in, got, want)
		}
	}
}
