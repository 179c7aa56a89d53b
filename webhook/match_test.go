package webhook

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/deployd/deployd/configs"
	"github.com/deployd/deployd/deployer"
)

// Values of the fixtures in testdata.
const (
	taggedDigest   = "sha256:3f1c2a9be0d44e67a1b9c5d8e7f60a21b3c4d5e6f708192a3b4c5d6e7f8091a2"
	appInstallID   = 52310042
	fixtureRunID   = 289782451
	fixtureRunNum  = 163
	fixtureHeadSHA = "3484a3fb816e0859fd6e1cea078d76385ff50625"
)

func ptr[T any](v T) *T { return &v }

// testConfig is a configuration with services on ghcr.io, on a local
// registry marked github_packages, and on a registry that is not.
//
//	backend  ghcr.io/acme-corp/v7/backend             latest, sha-*   workflow_run CI/CD on main, sha-{{.ShortSHA}}
//	local    localhost:5000/acme-corp/v7/backend      latest          (github_packages registry)
//	mirror   registry.example.com/acme-corp/v7/backend latest         (not github_packages)
//	web      ghcr.io/acme-corp/v7/web                 latest          workflow_run test.yml on any branch, run-{{.RunNumber}}
//	octo     ghcr.io/octo-org/octo-repo               latest          workflow_run "test" on master, run-{{.RunNumber}}
//	branchy  ghcr.io/acme-corp/v7/branchy             latest          workflow_run on feature/*, tag {{.Branch}}
func testConfig() *configs.Config {
	return &configs.Config{
		Registries: map[string]*configs.Registry{
			"localhost:5000":       {GitHubPackages: ptr(true)},
			"registry.example.com": {},
		},
		Services: map[string]*deployer.Service{
			"backend": {
				Image:      "ghcr.io/acme-corp/v7/backend",
				Repository: "acme-corp/v7",
				Tags:       []string{"latest", "sha-*"},
				On: deployer.DeployOn{WorkflowRun: &deployer.WorkflowRun{
					Workflows: []string{"CI/CD"},
					Branches:  []string{"main"},
					Tag:       "sha-{{.ShortSHA}}",
				}},
			},
			"local": {
				Image:      "localhost:5000/acme-corp/v7/backend",
				Repository: "Acme-Corp/v7",
				Tags:       []string{"latest"},
			},
			"mirror": {
				Image:      "registry.example.com/acme-corp/v7/backend",
				Repository: "acme-corp/v7",
				Tags:       []string{"*"},
			},
			"web": {
				Image:      "ghcr.io/acme-corp/v7/web",
				Repository: "acme-corp/v7",
				Tags:       []string{"latest"},
				On: deployer.DeployOn{WorkflowRun: &deployer.WorkflowRun{
					Workflows: []string{"test.yml"},
					Tag:       "run-{{.RunNumber}}",
				}},
			},
			"octo": {
				Image:      "ghcr.io/octo-org/octo-repo",
				Repository: "octo-org/octo-repo",
				Tags:       []string{"latest"},
				On: deployer.DeployOn{WorkflowRun: &deployer.WorkflowRun{
					Workflows: []string{"test"},
					Branches:  []string{"master"},
					Tag:       "run-{{.RunNumber}}",
				}},
			},
			"branchy": {
				Image:      "ghcr.io/acme-corp/v7/branchy",
				Repository: "acme-corp/v7",
				Tags:       []string{"latest"},
				On: deployer.DeployOn{WorkflowRun: &deployer.WorkflowRun{
					Branches: []string{"feature/*"},
					Tag:      "{{.Branch}}",
				}},
			},
		},
	}
}

func newTestMatcher(t testing.TB, cfg *configs.Config) *Matcher {
	t.Helper()
	m, err := NewMatcher(cfg)
	if err != nil {
		t.Fatalf("NewMatcher: %v", err)
	}
	return m
}

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// variant decodes a fixture, applies edits and encodes it again. An edit
// maps a dotted path to a new value; a nil value deletes the key.
func variant(t testing.TB, name string, edits map[string]any) []byte {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(fixture(t, name), &doc); err != nil {
		t.Fatal(err)
	}
	for p, v := range edits {
		keys := strings.Split(p, ".")
		obj := doc
		for _, k := range keys[:len(keys)-1] {
			next, ok := obj[k].(map[string]any)
			if !ok {
				next = map[string]any{}
				obj[k] = next
			}
			obj = next
		}
		if v == nil {
			delete(obj, keys[len(keys)-1])
		} else {
			obj[keys[len(keys)-1]] = v
		}
	}
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// withNote returns reqs with note set.
func withNote(reqs []deployer.Request, note string) []deployer.Request {
	for i := range reqs {
		reqs[i].Note = note
	}
	return reqs
}

// tagOnly returns reqs without their digests.
func tagOnly(reqs []deployer.Request) []deployer.Request {
	for i := range reqs {
		reqs[i].Digest = ""
	}
	return reqs
}

func webhookTrigger(event string, installation int64) deployer.Trigger {
	return deployer.Trigger{Kind: deployer.TriggerWebhook, Event: event, InstallationID: installation}
}

func runTrigger(installation int64) deployer.Trigger {
	tr := webhookTrigger(EventWorkflowRun, installation)
	tr.RunID, tr.RunNumber = fixtureRunID, fixtureRunNum
	return tr
}

func TestMatch(t *testing.T) {
	m := newTestMatcher(t, testConfig())
	const (
		rpTagged   = "registry_package.published.container-tagged.json"
		pkgTagged  = "package.published.container-tagged.json"
		rpUntagged = "registry_package.published.container-untagged.json"
		wrDone     = "workflow_run.completed.json"
	)
	// A successful run of CI/CD on main in acme-corp/v7, started by a push
	// to acme-corp/v7 itself.
	acmeRun := map[string]any{
		"repository.full_name":                   "Acme-Corp/v7",
		"workflow_run.name":                      "CI/CD",
		"workflow_run.head_branch":               "main",
		"workflow_run.path":                      ".github/workflows/test.yml",
		"workflow_run.event":                     "push",
		"workflow_run.head_repository.full_name": "Acme-Corp/v7",
	}
	with := func(base map[string]any, edits map[string]any) map[string]any {
		out := map[string]any{}
		for k, v := range base {
			out[k] = v
		}
		for k, v := range edits {
			out[k] = v
		}
		return out
	}
	// except returns base without keys, for edits that delete what base sets
	// (variant applies edits in no particular order).
	except := func(base map[string]any, keys ...string) map[string]any {
		out := with(base, nil)
		for _, k := range keys {
			delete(out, k)
		}
		return out
	}
	backendLatest := func(event string, inst int64) []deployer.Request {
		return []deployer.Request{
			{Service: "backend", Tag: "latest", Digest: taggedDigest, Trigger: webhookTrigger(event, inst)},
			{Service: "local", Tag: "latest", Digest: taggedDigest, Trigger: webhookTrigger(event, inst)},
		}
	}

	tests := []struct {
		name   string
		event  string
		body   []byte
		action string
		want   []deployer.Request
		reason string // substring of Decision.Reason when want is empty
		ping   string // expected zen for ping
	}{
		// Every fixture as published.
		{name: "registry_package tagged (App delivery)", event: EventRegistryPackage, body: fixture(t, rpTagged),
			action: "published", want: backendLatest(EventRegistryPackage, appInstallID)},
		{name: "package tagged (repository hook)", event: EventPackage, body: fixture(t, pkgTagged),
			action: "published", want: backendLatest(EventPackage, 0)},
		{name: "registry_package untagged platform manifest", event: EventRegistryPackage, body: fixture(t, rpUntagged),
			action: "published", reason: "untagged"},
		{name: "octokit package example (untagged placeholder)", event: EventPackage, body: fixture(t, "package.published.json"),
			action: "published", reason: "untagged"},
		{name: "octokit registry_package example (untagged placeholder)", event: EventRegistryPackage, body: fixture(t, "registry_package.published.json"),
			action: "published", reason: "untagged"},
		{name: "workflow_run completed (started by repository_dispatch)", event: EventWorkflowRun, body: fixture(t, wrDone), action: "completed",
			reason: `the run was started by "repository_dispatch", not one of service octo's workflow_run events (push)`},
		{name: "workflow_run completed, started by a push", event: EventWorkflowRun, body: variant(t, wrDone, map[string]any{"workflow_run.event": "push"}),
			action: "completed", want: []deployer.Request{{Service: "octo", Tag: "run-163", Trigger: runTrigger(0)}}},
		{name: "workflow_run requested", event: EventWorkflowRun, body: fixture(t, "workflow_run.requested.json"),
			action: "requested", reason: "not completed"},
		{name: "ping", event: EventPing, body: fixture(t, "ping.json"), reason: "ping", ping: "Anything added dilutes everything else."},
		{name: "ping from an App hook", event: EventPing, body: fixture(t, "ping.app.json"), reason: "ping", ping: "Anything added dilutes everything else."},

		// Package variants.
		{name: "updated action", event: EventRegistryPackage, body: variant(t, rpTagged, map[string]any{"action": "updated"}),
			action: "updated", want: backendLatest(EventRegistryPackage, appInstallID)},
		{name: "other action", event: EventRegistryPackage, body: variant(t, rpTagged, map[string]any{"action": "deleted"}),
			action: "deleted", reason: `action "deleted"`},
		{name: "upper-case namespace", event: EventPackage, body: variant(t, pkgTagged, map[string]any{"package.namespace": "ACME-CORP"}),
			action: "published", want: backendLatest(EventPackage, 0)},
		{name: "no namespace: owner login", event: EventPackage, body: variant(t, pkgTagged, map[string]any{"package.namespace": nil, "package.owner.login": "AcMe-CoRp"}),
			action: "published", want: backendLatest(EventPackage, 0)},
		{name: "lower-case package type", event: EventRegistryPackage, body: variant(t, rpTagged, map[string]any{"registry_package.package_type": "container", "registry_package.ecosystem": "container"}),
			action: "published", want: backendLatest(EventRegistryPackage, appInstallID)},
		{name: "not a container", event: EventRegistryPackage, body: variant(t, rpTagged, map[string]any{"registry_package.package_type": "npm", "registry_package.ecosystem": "npm"}),
			action: "published", reason: "not a container"},
		{name: "other repository", event: EventRegistryPackage, body: variant(t, rpTagged, map[string]any{"repository.full_name": "mallory/v7"}),
			action: "published", reason: `repository "mallory/v7" is not service backend's repository`},
		{name: "no repository", event: EventRegistryPackage, body: variant(t, rpTagged, map[string]any{"repository": nil}),
			action: "published", reason: "names no repository"},
		{name: "tag matching no glob", event: EventRegistryPackage, body: variant(t, rpTagged, map[string]any{"registry_package.package_version.container_metadata.tag.name": "dev"}),
			action: "published", reason: `tag "dev" matches none of service backend's tags`},
		{name: "tag matching one service's glob", event: EventRegistryPackage, body: variant(t, rpTagged, map[string]any{"registry_package.package_version.container_metadata.tag.name": "sha-abc1234"}),
			action: "published", want: []deployer.Request{{Service: "backend", Tag: "sha-abc1234", Digest: taggedDigest, Trigger: webhookTrigger(EventRegistryPackage, appInstallID)}}},
		{name: "invalid tag", event: EventRegistryPackage, body: variant(t, rpTagged, map[string]any{"registry_package.package_version.container_metadata.tag.name": "-x;rm"}),
			action: "published", reason: "not a valid image tag"},
		{name: "invalid tag digest: package_version.version", event: EventRegistryPackage, body: variant(t, rpTagged, map[string]any{"registry_package.package_version.container_metadata.tag.digest": "sha256:6c62fb45"}),
			action: "published", want: withNote(backendLatest(EventRegistryPackage, appInstallID),
				`the payload's tag digest "sha256:6c62fb45" is unusable (not sha256: and 64 hex digits); deploying its package_version.version `+taggedDigest+` instead`)},
		{name: "invalid tag digest and version: tag only", event: EventRegistryPackage, body: variant(t, rpTagged, map[string]any{
			"registry_package.package_version.container_metadata.tag.digest": "sha256:6c62fb45", "registry_package.package_version.version": "1.0"}),
			action: "published", want: withNote(tagOnly(backendLatest(EventRegistryPackage, appInstallID)),
				`the payload's digest "sha256:6c62fb45" is unusable (not sha256: and 64 hex digits); the tag latest is resolved at the registry instead`)},
		{name: "upper-case tag digest", event: EventRegistryPackage, body: variant(t, rpTagged, map[string]any{
			"registry_package.package_version.container_metadata.tag.digest": strings.ToUpper(taggedDigest), "registry_package.package_version.version": nil}),
			action: "published", want: withNote(tagOnly(backendLatest(EventRegistryPackage, appInstallID)),
				`the payload's digest "SHA256:3F1C2A9BE0D44E67A1B9C5D8E7F60A21B3C4D5E6F708192A3B4C5D6E7F8091A2" is unusable (not sha256: and 64 hex digits); the tag latest is resolved at the registry instead`)},
		{name: "no tag digest: package_version.version", event: EventRegistryPackage, body: variant(t, rpTagged, map[string]any{"registry_package.package_version.container_metadata.tag.digest": ""}),
			action: "published", want: backendLatest(EventRegistryPackage, appInstallID)},
		{name: "tag digest wins over package_version.version", event: EventRegistryPackage, body: variant(t, rpTagged, map[string]any{"registry_package.package_version.version": "sha256:" + strings.Repeat("0", 64)}),
			action: "published", want: backendLatest(EventRegistryPackage, appInstallID)},
		{name: "no digest: tag only", event: EventRegistryPackage, body: variant(t, rpTagged, map[string]any{
			"registry_package.package_version.container_metadata.tag.digest": "", "registry_package.package_version.version": nil}),
			action: "published", want: tagOnly(backendLatest(EventRegistryPackage, appInstallID))},
		{name: "image of no service", event: EventRegistryPackage, body: variant(t, rpTagged, map[string]any{"registry_package.name": "v7/worker"}),
			action: "published", reason: `no service deploys image path "acme-corp/v7/worker"`},
		{name: "other owner", event: EventRegistryPackage, body: variant(t, rpTagged, map[string]any{"registry_package.namespace": "mallory"}),
			action: "published", reason: `"mallory/v7/backend"`},

		// workflow_run variants.
		{name: "one run deploys backend and web", event: EventWorkflowRun, body: variant(t, wrDone, acmeRun), action: "completed",
			want: []deployer.Request{
				{Service: "backend", Tag: "sha-3484a3f", Trigger: runTrigger(0)},
				{Service: "web", Tag: "run-163", Trigger: runTrigger(0)},
			}},
		{name: "run with installation", event: EventWorkflowRun, body: variant(t, wrDone, with(acmeRun, map[string]any{"installation": map[string]any{"id": 77, "node_id": "x"}})),
			action: "completed", want: []deployer.Request{
				{Service: "backend", Tag: "sha-3484a3f", Trigger: runTrigger(77)},
				{Service: "web", Tag: "run-163", Trigger: runTrigger(77)},
			}},
		{name: "workflow path only in workflow object", event: EventWorkflowRun, body: variant(t, wrDone, with(acmeRun, map[string]any{"workflow_run.name": "Other", "workflow_run.path": nil})),
			action: "completed", want: []deployer.Request{{Service: "web", Tag: "run-163", Trigger: runTrigger(0)}}},
		{name: "branch mismatch", event: EventWorkflowRun, body: variant(t, wrDone, with(acmeRun, map[string]any{"workflow_run.head_branch": "develop"})),
			action: "completed", want: []deployer.Request{{Service: "web", Tag: "run-163", Trigger: runTrigger(0)}}},
		{name: "workflow mismatch", event: EventWorkflowRun, body: variant(t, wrDone, with(acmeRun, map[string]any{
			"workflow_run.name": "Lint", "workflow_run.path": ".github/workflows/lint.yml", "workflow.name": "Lint", "workflow.path": ".github/workflows/lint.yml"})),
			action: "completed", reason: `workflow "Lint" is not one of service backend's workflows`},
		{name: "head repository in another case", event: EventWorkflowRun, body: variant(t, wrDone, with(acmeRun, map[string]any{"workflow_run.head_repository.full_name": "acme-corp/V7"})),
			action: "completed", want: []deployer.Request{
				{Service: "backend", Tag: "sha-3484a3f", Trigger: runTrigger(0)},
				{Service: "web", Tag: "run-163", Trigger: runTrigger(0)},
			}},
		{name: "fork's run on its own main", event: EventWorkflowRun, body: variant(t, wrDone, with(acmeRun, map[string]any{"workflow_run.head_repository.full_name": "mallory/v7"})),
			action: "completed", reason: `the run built head repository "mallory/v7", not service backend's repository (runs of forks never deploy)`},
		{name: "fork's pull request", event: EventWorkflowRun, body: variant(t, wrDone, with(acmeRun, map[string]any{"workflow_run.head_repository.full_name": "mallory/v7", "workflow_run.event": "pull_request"})),
			action: "completed", reason: `the run built head repository "mallory/v7", not service web's repository`},
		{name: "no head repository", event: EventWorkflowRun, body: variant(t, wrDone, with(except(acmeRun, "workflow_run.head_repository.full_name"), map[string]any{"workflow_run.head_repository": nil})),
			action: "completed", reason: "the run names no head repository to prove it built service backend's repository"},
		{name: "head repository without a name", event: EventWorkflowRun, body: variant(t, wrDone, with(acmeRun, map[string]any{"workflow_run.head_repository.full_name": ""})),
			action: "completed", reason: "names no head repository"},
		{name: "started by pull_request", event: EventWorkflowRun, body: variant(t, wrDone, with(acmeRun, map[string]any{"workflow_run.event": "pull_request"})),
			action: "completed", reason: `the run was started by "pull_request", which never deploys service backend: a pull_request run builds a pull request's code`},
		{name: "started by pull_request_target", event: EventWorkflowRun, body: variant(t, wrDone, with(acmeRun, map[string]any{"workflow_run.event": "pull_request_target"})),
			action: "completed", reason: `the run was started by "pull_request_target", which never deploys service web`},
		{name: "started by workflow_run", event: EventWorkflowRun, body: variant(t, wrDone, with(acmeRun, map[string]any{"workflow_run.event": "workflow_run"})),
			action: "completed", reason: `the run was started by "workflow_run", which never deploys service backend: a workflow_run run follows another run`},
		{name: "started by an event not listed", event: EventWorkflowRun, body: variant(t, wrDone, with(acmeRun, map[string]any{"workflow_run.event": "workflow_dispatch"})),
			action: "completed", reason: `the run was started by "workflow_dispatch", not one of service backend's workflow_run events (push)`},
		{name: "no event", event: EventWorkflowRun, body: variant(t, wrDone, with(acmeRun, map[string]any{"workflow_run.event": nil})),
			action: "completed", reason: `the run was started by "", not one of service backend's workflow_run events`},
		{name: "run from another repository", event: EventWorkflowRun, body: variant(t, wrDone, with(acmeRun, map[string]any{"repository.full_name": "mallory/v7"})),
			action: "completed", reason: `repository "mallory/v7" is not service backend's repository`},
		{name: "run failed", event: EventWorkflowRun, body: variant(t, wrDone, with(acmeRun, map[string]any{"workflow_run.conclusion": "failure"})),
			action: "completed", reason: `concluded "failure"`},
		{name: "run without head sha", event: EventWorkflowRun, body: variant(t, wrDone, with(acmeRun, map[string]any{"workflow_run.head_sha": "HEAD"})),
			action: "completed", reason: "not a commit id"},
		{name: "template yields an invalid tag", event: EventWorkflowRun, body: variant(t, wrDone, with(acmeRun, map[string]any{"workflow_run.head_branch": "feature/x"})),
			action: "completed", want: []deployer.Request{{Service: "web", Tag: "run-163", Trigger: runTrigger(0)}}},
		{name: "template yields an invalid tag, nothing else matches", event: EventWorkflowRun, body: variant(t, wrDone, with(acmeRun, map[string]any{"workflow_run.head_branch": "feature/x", "workflow_run.path": ".github/workflows/other.yml", "workflow.path": ".github/workflows/other.yml"})),
			action: "completed", reason: `service branchy's tag template yields "feature/x", not a valid tag`},

		// Other events.
		{name: "unknown event", event: "push", body: []byte(`{"action":"created","ref":"refs/heads/main"}`), action: "created", reason: `event "push" is not handled`},
		{name: "unknown event, no action", event: "star", body: []byte(`{"starred_at":null}`), reason: `event "star" is not handled`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := m.Match(tt.event, tt.body)
			if err != nil {
				t.Fatalf("Match: %v", err)
			}
			if d.Action != tt.action {
				t.Errorf("Action = %q, want %q", d.Action, tt.action)
			}
			if !reflect.DeepEqual(withoutCommit(d.Requests), tt.want) { // TestMatchCommit checks the commit
				t.Errorf("Requests =\n%+v\nwant\n%+v\n(reason %q)", d.Requests, tt.want, d.Reason)
			}
			if len(tt.want) > 0 && d.Reason != "" {
				t.Errorf("Reason = %q with requests", d.Reason)
			}
			if len(tt.want) == 0 && !strings.Contains(d.Reason, tt.reason) {
				t.Errorf("Reason = %q, want it to contain %q", d.Reason, tt.reason)
			}
			if d.Ping != (tt.ping != "") || d.Zen != tt.ping {
				t.Errorf("Ping, Zen = %v, %q, want zen %q", d.Ping, d.Zen, tt.ping)
			}
			for _, r := range d.Requests {
				if err := r.Validate(); err != nil {
					t.Errorf("request %+v: %v", r, err)
				}
			}
		})
	}
}

// GitHub's published package examples (the octokit fixtures) carry a
// tag digest of 40 hex digits, which is no sha256 digest, and a valid digest
// in package_version.version. A tagged push of that shape still deploys.
func TestMatchGitHubExampleDigest(t *testing.T) {
	const (
		exampleTagDigest = "sha256:6c62fb45fe66bfb1ea9a66abc38f6a0cc974292b"
		exampleVersion   = "sha256:3da1996a8115d7616457760d9920b815241d0a03b34cf5f04e9a0e9d8de37498"
	)
	cfg := testConfig()
	cfg.Services["hello"] = &deployer.Service{
		Image:      "ghcr.io/codertocat/hello-world/hello-world-npm",
		Repository: "Codertocat/hello-world-npm",
		Tags:       []string{"latest"},
	}
	m := newTestMatcher(t, cfg)
	for event, file := range map[string]string{EventRegistryPackage: "registry_package.published.json", EventPackage: "package.published.json"} {
		tag := event + ".package_version.container_metadata.tag.name"
		version := event + ".package_version.version"
		tests := []struct {
			name  string
			edits map[string]any
			want  deployer.Request
		}{
			{"tagged, version a digest", map[string]any{tag: "latest"}, deployer.Request{Digest: exampleVersion,
				Note: `the payload's tag digest "` + exampleTagDigest + `" is unusable (not sha256: and 64 hex digits); deploying its package_version.version ` + exampleVersion + ` instead`}},
			{"tagged, no version", map[string]any{tag: "latest", version: nil}, deployer.Request{
				Note: `the payload's digest "` + exampleTagDigest + `" is unusable (not sha256: and 64 hex digits); the tag latest is resolved at the registry instead`}},
		}
		for _, tt := range tests {
			t.Run(event+"/"+tt.name, func(t *testing.T) {
				d, err := m.Match(event, variant(t, file, tt.edits))
				if err != nil {
					t.Fatal(err)
				}
				want := tt.want
				want.Service, want.Tag, want.Trigger = "hello", "latest", webhookTrigger(event, 0)
				if len(d.Requests) != 1 || !reflect.DeepEqual(withoutCommit(d.Requests)[0], want) {
					t.Fatalf("Requests =\n%+v\nwant\n%+v\n(reason %q)", d.Requests, want, d.Reason)
				}
			})
		}
	}
}

func TestMatchPackageEventsDisabled(t *testing.T) {
	cfg := testConfig()
	cfg.Services["backend"].On.Package = ptr(false)
	m := newTestMatcher(t, cfg)
	d, err := m.Match(EventRegistryPackage, fixture(t, "registry_package.published.container-tagged.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Requests) != 1 || d.Requests[0].Service != "local" {
		t.Fatalf("Requests = %+v, want only local", d.Requests)
	}

	cfg.Services["local"].On.Package = ptr(false)
	m = newTestMatcher(t, cfg)
	d, err = m.Match(EventRegistryPackage, fixture(t, "registry_package.published.container-tagged.json"))
	if err != nil {
		t.Fatal(err)
	}
	want := "service backend does not deploy on package events; service local does not deploy on package events"
	if len(d.Requests) != 0 || d.Reason != want {
		t.Fatalf("Decision = %+v, want no requests and reason %q", d, want)
	}
}

func TestMatchGitHubPackagesRegistry(t *testing.T) {
	// Unmark the local registry: only ghcr.io's backend remains.
	cfg := testConfig()
	cfg.Registries["localhost:5000"].GitHubPackages = ptr(false)
	m := newTestMatcher(t, cfg)
	d, err := m.Match(EventPackage, fixture(t, "package.published.container-tagged.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Requests) != 1 || d.Requests[0].Service != "backend" {
		t.Fatalf("Requests = %+v, want only backend", d.Requests)
	}
	// Mark the mirror: it deploys too (its glob is "*").
	cfg.Registries["registry.example.com"].GitHubPackages = ptr(true)
	m = newTestMatcher(t, cfg)
	d, err = m.Match(EventPackage, fixture(t, "package.published.container-tagged.json"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range d.Requests {
		got = append(got, r.Service)
	}
	if want := []string{"backend", "mirror"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("services = %v, want %v", got, want)
	}
}

func TestMatchMalformed(t *testing.T) {
	m := newTestMatcher(t, testConfig())
	tagged := fixture(t, "package.published.container-tagged.json")
	tests := []struct {
		name  string
		event string
		body  string
	}{
		{"not JSON", EventRegistryPackage, "Hello, World!"},
		{"empty", EventPing, ""},
		{"array", EventWorkflowRun, "[]"},
		{"null", EventPackage, "null"},
		{"truncated", EventPackage, string(tagged[:len(tagged)/2])},
		{"trailing garbage", EventPackage, string(tagged) + "}"},
		{"action not a string", EventRegistryPackage, `{"action":5,"registry_package":{}}`},
		{"package under the other key", EventPackage, `{"action":"published","registry_package":{"name":"v7/backend"}}`},
		{"no registry_package object", EventRegistryPackage, `{"action":"published"}`},
		{"no workflow_run object", EventWorkflowRun, `{"action":"completed"}`},
		{"workflow_run of the wrong type", EventWorkflowRun, `{"action":"completed","workflow_run":"x"}`},
		{"zen of the wrong type", EventPing, `{"zen":1}`},
		{"unknown event, not JSON", "push", "{"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := m.Match(tt.event, []byte(tt.body))
			if !errors.Is(err, ErrMalformedPayload) {
				t.Fatalf("Match = %+v, %v; want ErrMalformedPayload", d, err)
			}
		})
	}
}

func TestNewMatcherRefuses(t *testing.T) {
	tests := []struct {
		name string
		edit func(*configs.Config)
		want string
	}{
		{"bad image", func(c *configs.Config) { c.Services["web"].Image = "ghcr.io/Acme/Web" }, `service "web"`},
		{"image with tag", func(c *configs.Config) { c.Services["web"].Image = "ghcr.io/acme/web:latest" }, "without tag"},
		{"bad glob", func(c *configs.Config) { c.Services["web"].Tags = []string{"[a-"} }, `tag pattern "[a-"`},
		{"bad branch glob", func(c *configs.Config) { c.Services["backend"].On.WorkflowRun.Branches = []string{"[x"} }, "branch pattern"},
		{"template does not parse", func(c *configs.Config) { c.Services["web"].On.WorkflowRun.Tag = "{{.SHA" }, "parse workflow_run tag template"},
		{"template names an unknown field", func(c *configs.Config) { c.Services["web"].On.WorkflowRun.Tag = "{{.Commit}}" }, "run workflow_run tag template"},
		{"template yields no tag", func(c *configs.Config) { c.Services["web"].On.WorkflowRun.Tag = "{{.Branch}}/{{.SHA}}" }, "not a valid tag"},
		{"no template, first tag a glob", func(c *configs.Config) {
			c.Services["web"].On.WorkflowRun.Tag = ""
			c.Services["web"].Tags = []string{"v*"}
		}, "no tag template"},
		{"no settings", func(c *configs.Config) { c.Services["nil"] = nil }, `service "nil": no settings`},
		{"pull_request runs", func(c *configs.Config) { c.Services["web"].On.WorkflowRun.Events = []string{"push", "pull_request"} },
			`workflow_run events: runs started by pull_request never deploy`},
		{"unknown run event", func(c *configs.Config) { c.Services["web"].On.WorkflowRun.Events = []string{"check_suite"} },
			`workflow_run events: unknown event "check_suite" (one of push, workflow_dispatch, release, schedule)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			tt.edit(cfg)
			m, err := NewMatcher(cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewMatcher = %v, %v; want an error containing %q", m, err, tt.want)
			}
		})
	}
	if _, err := NewMatcher(nil); err == nil {
		t.Error("NewMatcher(nil) succeeded")
	}
	// Every problem is reported at once.
	cfg := testConfig()
	cfg.Services["web"].Tags = []string{"[a-"}
	cfg.Services["octo"].On.WorkflowRun.Tag = "{{.Nope}}"
	_, err := NewMatcher(cfg)
	if err == nil || !strings.Contains(err.Error(), `service "web"`) || !strings.Contains(err.Error(), `service "octo"`) {
		t.Fatalf("NewMatcher = %v, want both services named", err)
	}
}

func TestEmptyTemplateUsesFirstTag(t *testing.T) {
	cfg := testConfig()
	cfg.Services["web"].On.WorkflowRun.Tag = ""
	m := newTestMatcher(t, cfg)
	d, err := m.Match(EventWorkflowRun, variant(t, "workflow_run.completed.json", map[string]any{"repository.full_name": "acme-corp/v7",
		"workflow_run.head_repository.full_name": "acme-corp/v7", "workflow_run.event": "push"}))
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Requests) != 1 || d.Requests[0].Service != "web" || d.Requests[0].Tag != "latest" {
		t.Fatalf("Requests = %+v, want web:latest", d.Requests)
	}
}

func TestMatchListedRunEvents(t *testing.T) {
	cfg := testConfig()
	cfg.Services["backend"].On.WorkflowRun.Events = []string{"push", "workflow_dispatch"}
	m := newTestMatcher(t, cfg)
	run := func(event string) []byte {
		return variant(t, "workflow_run.completed.json", map[string]any{
			"repository.full_name": "acme-corp/v7", "workflow_run.head_repository.full_name": "acme-corp/v7",
			"workflow_run.name": "CI/CD", "workflow_run.head_branch": "main", "workflow_run.event": event})
	}
	// web's test.yml matches the fixture's run too, with the default [push].
	for event, want := range map[string][]string{"push": {"backend", "web"}, "workflow_dispatch": {"backend"}} {
		d, err := m.Match(EventWorkflowRun, run(event))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range d.Requests {
			got = append(got, r.Service)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("run started by %s deploys %v (reason %q), want %v", event, got, d.Reason, want)
		}
	}
	d, err := m.Match(EventWorkflowRun, run("schedule"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`not one of service backend's workflow_run events (push, workflow_dispatch)`, `not one of service web's workflow_run events (push)`} {
		if len(d.Requests) != 0 || !strings.Contains(d.Reason, want) {
			t.Errorf("run started by schedule: %+v, want ignored with %q", d, want)
		}
	}
}

func TestWorkflowFilters(t *testing.T) {
	f := &runFilter{workflows: []string{"ci-cd.yml"}}
	paths := []string{".github/workflows/ci-cd.yml@refs/heads/main", ""}
	if !f.matchWorkflow([]string{"", ""}, paths) {
		t.Error("file name did not match a path with @ref")
	}
	if f.matchWorkflow([]string{"", ""}, []string{"", ""}) {
		t.Error("empty names and paths matched")
	}
	if (&runFilter{workflows: []string{""}}).matchWorkflow([]string{"", ""}, []string{"", ""}) {
		t.Error("an empty configured workflow matched an empty name")
	}
	if !(&runFilter{}).matchWorkflow(nil, nil) {
		t.Error("no workflow filter did not match")
	}
	b := &runFilter{branches: []string{"release/*"}}
	if !b.matchBranch("release/1.2") || b.matchBranch("release/1/2") || b.matchBranch("main") {
		t.Error("branch glob matched wrongly")
	}
}

func TestQuoteClips(t *testing.T) {
	long := strings.Repeat("x", 10*maxQuoted)
	if q := quote(long); len(q) > maxQuoted+10 {
		t.Fatalf("quote kept %d bytes", len(q))
	}
	m := newTestMatcher(t, testConfig())
	d, err := m.Match(long, []byte(`{}`))
	if err != nil || len(d.Reason) > 2*maxQuoted {
		t.Fatalf("reason %q (%v) not clipped", d.Reason, err)
	}
}
