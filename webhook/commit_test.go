package webhook

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/deployd/deployd/deployer"
)

// withoutCommit returns copies of reqs without their trigger's commit, for
// tests about everything else.
func withoutCommit(reqs []deployer.Request) []deployer.Request {
	if reqs == nil {
		return nil
	}
	out := make([]deployer.Request, len(reqs))
	for i, r := range reqs {
		r.Trigger.Commit = ""
		out[i] = r
	}
	return out
}

// The commit of a request is what release sets match package events to
// workflow runs by: a run's head_sha; a package version's revision label,
// else its target_oid when that is a commit and not the version's digest.
func TestMatchCommit(t *testing.T) {
	m := newTestMatcher(t, testConfig())
	const (
		commit = "0123456789abcdef0123456789abcdef01234567"
		other  = "89abcdef0123456789abcdef0123456789abcdef"
		pkg    = "package.published.container-tagged.json"
		label  = "package.package_version.container_metadata.labels.revision"
		oid    = "package.package_version.target_oid"
		// The fixture's version and tag digest, without "sha256:".
		digestHex = "3f1c2a9be0d44e67a1b9c5d8e7f60a21b3c4d5e6f708192a3b4c5d6e7f8091a2"
	)
	run := map[string]any{
		"repository.full_name": "Acme-Corp/v7", "workflow_run.name": "CI/CD", "workflow_run.head_branch": "main",
		"workflow_run.event": "push", "workflow_run.head_repository.full_name": "Acme-Corp/v7",
		"workflow_run.head_sha": commit,
	}
	tests := []struct {
		name, event, file string
		edits             map[string]any
		want              string
	}{
		{"run: head_sha", EventWorkflowRun, "workflow_run.completed.json", run, commit},
		{"package: revision label", EventPackage, pkg, map[string]any{label: commit, oid: other}, commit},
		{"package: target_oid without a label", EventPackage, pkg, map[string]any{label: "", oid: other}, other},
		{"package: the fixture's target_oid", EventPackage, pkg, nil, "9b8e7d6c5b4a39281706f5e4d3c2b1a098765432"},
		{"package: a label that is no commit", EventPackage, pkg, map[string]any{label: "v1.2.3", oid: nil}, ""},
		{"package: target_oid that is the digest's hex", EventPackage, pkg, map[string]any{label: "", oid: digestHex}, ""},
		{"package: a 40-digit target_oid that ends the digest", EventPackage, pkg, map[string]any{label: "", oid: digestHex[24:]}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := m.Match(tt.event, variant(t, tt.file, tt.edits))
			if err != nil {
				t.Fatal(err)
			}
			if len(d.Requests) == 0 {
				t.Fatalf("no requests: %s", d.Reason)
			}
			for _, r := range d.Requests {
				if r.Trigger.Commit != tt.want {
					t.Errorf("%s: commit %q, want %q", r.Service, r.Trigger.Commit, tt.want)
				}
			}
		})
	}
}

// FuzzPackageCommit: whatever a package version's revision label,
// target_oid, version and tag digest hold, the commit read from them is
// empty or a commit id, and never the hex of the version's digests.
func FuzzPackageCommit(f *testing.F) {
	const (
		sha    = "0123456789abcdef0123456789abcdef01234567"
		digest = "sha256:3f1c2a9be0d44e67a1b9c5d8e7f60a21b3c4d5e6f708192a3b4c5d6e7f8091a2"
	)
	f.Add(sha, "", digest, digest)
	f.Add("", sha, digest, digest)
	f.Add("v1.2.3", digest[7:], digest, "")
	f.Add("", digest[len(digest)-40:], "", digest)
	f.Add("", "9b8e7d6c5b4a39281706f5e4d3c2b1a098765432", "sha256:6c62fb45fe66bfb1ea9a66abc38f6a0cc974292b", "")
	f.Fuzz(func(t *testing.T, revision, targetOID, version, tagDigest string) {
		var p packageInfo
		if err := json.Unmarshal(fmt.Appendf(nil, `{"package_version": {"version": %q, "target_oid": %q,
			"container_metadata": {"tag": {"name": "latest", "digest": %q}, "labels": {"revision": %q}}}}`,
			version, targetOID, tagDigest, revision), &p); err != nil {
			t.Skip("not encodable as JSON text")
		}
		got := p.commit()
		if got == "" {
			return
		}
		if !isCommitSHA(got) {
			t.Fatalf("commit %q is not a commit id", got)
		}
		if got != revision && (strings.HasSuffix(version, got) || strings.HasSuffix(tagDigest, got)) {
			t.Fatalf("commit %q is the hex of a digest of the version", got)
		}
	})
}
