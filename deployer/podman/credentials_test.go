package podman_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/deployd/deployd/deployer"
	"github.com/deployd/deployd/deployer/podman"
	"github.com/deployd/deployd/deployer/sqlite"
)

func openStore(t *testing.T, dir string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), filepath.Join(dir, "deployd.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// recordingCredentials hands out the first of its sources that the request
// has not had refused, and records every request.
type recordingCredentials struct {
	mu       sync.Mutex
	sources  []string
	requests []deployer.CredentialRequest
}

func (c *recordingCredentials) Credential(_ context.Context, req deployer.CredentialRequest) (deployer.Credential, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	req.Refused = slices.Clone(req.Refused)
	c.requests = append(c.requests, req)
	for _, s := range c.sources {
		if !slices.Contains(req.Refused, s) {
			return deployer.Credential{Source: s, Username: "x-access-token", Password: deployer.NewPassword("secret-" + s)}, nil
		}
	}
	return deployer.Credential{}, errors.New("no registry credential left")
}

func (c *recordingCredentials) Denied(deployer.CredentialRequest, string, string) {}
func (c *recordingCredentials) Accepted(deployer.CredentialRequest, string)       {}
func (c *recordingCredentials) Invalidate(deployer.CredentialRequest)             {}

// refusingResolver is a registry that refuses every credential.
type refusingResolver struct{}

func (refusingResolver) Digest(context.Context, string, deployer.Credential, bool) (string, error) {
	return "", errors.New("requesting bearer token: invalid status code from registry 403 (Forbidden)")
}

// refusingPipeline is a pipeline for one service whose registry refuses
// every credential that creds hand out.
func refusingPipeline(t *testing.T, store *sqlite.Store, creds deployer.Credentials) *podman.Pipeline {
	t.Helper()
	p, err := podman.NewPipeline(podman.PipelineConfig{
		Services: map[string]deployer.Service{"backend": {
			Name: "backend", Host: "ghcr.io", Image: "ghcr.io/acme/v7/backend", Repository: "acme/v7",
			DefaultTag: "latest", Strategy: deployer.StrategyContainer,
		}},
		Store:       store,
		Credentials: creds,
		Resolver:    refusingResolver{},
		Runner:      &podman.CommandRunner{},
		Podman:      podman.Config{Command: "podman", AuthFile: filepath.Join(t.TempDir(), "auth.json")},
		Logger:      zerolog.Nop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPipelineAsksForUntriedSourcesAndRetriesAllWhenAsked: after each
// refusal the pipeline asks again naming every source refused so far, so
// that a chain whose sources are all put aside can still offer each once;
// deployments an operator asked for ask the chain to ignore put-asides.
func TestPipelineAsksForUntriedSourcesAndRetriesAllWhenAsked(t *testing.T) {
	for _, tc := range []struct {
		trigger deployer.Trigger
		retry   bool
	}{
		{deployer.Trigger{Kind: deployer.TriggerWebhook, DeliveryID: "d-1"}, false},
		{deployer.Trigger{Kind: deployer.TriggerReconcile}, false},
		{deployer.Trigger{Kind: deployer.TriggerManual, Subject: "ops"}, true},
		{deployer.Trigger{Kind: deployer.TriggerRollback, Subject: "ops"}, true},
	} {
		t.Run(string(tc.trigger.Kind), func(t *testing.T) {
			store := openStore(t, t.TempDir())
			creds := &recordingCredentials{sources: []string{"github_app", "token_file"}}
			p := refusingPipeline(t, store, creds)
			d, err := store.Enqueue(context.Background(), deployer.Request{Service: "backend", Tag: "latest", Trigger: tc.trigger})
			if err != nil {
				t.Fatal(err)
			}
			got := p.Execute(context.Background(), d)
			if got.State != deployer.StateFailed || got.ErrorClass != deployer.ClassAuth {
				t.Fatalf("deployment %s %s (%s), want failed auth", got.State, got.ErrorClass, got.Error)
			}
			var asked []string
			for _, r := range creds.requests {
				asked = append(asked, fmt.Sprintf("%v", r.Refused))
				if r.IgnorePutAside != tc.retry {
					t.Errorf("request %+v: IgnorePutAside %v, want %v", r, r.IgnorePutAside, tc.retry)
				}
			}
			// The App token is retried once fresh, then each source is refused in turn.
			if want := "[] [] [github_app] [github_app token_file]"; strings.Join(asked, " ") != want {
				t.Errorf("refused sources of the successive requests: %s, want %s", strings.Join(asked, " "), want)
			}
		})
	}
}

// explainingCredentials are recordingCredentials that explain refusals.
type explainingCredentials struct{ recordingCredentials }

func (*explainingCredentials) ExplainRefusal(req deployer.CredentialRequest, source string) string {
	return "explained: " + source + " refused for " + req.Image
}

// TestPipelineHintFromTheCredentials: when the credentials explain a
// refusal (the chain does, knowing the registry's configuration), an auth
// failure's hint is their explanation for the last source refused.
func TestPipelineHintFromTheCredentials(t *testing.T) {
	store := openStore(t, t.TempDir())
	creds := &explainingCredentials{recordingCredentials{sources: []string{"github_app", "token_file"}}}
	p := refusingPipeline(t, store, creds)
	d, err := store.Enqueue(context.Background(), deployer.Request{Service: "backend", Tag: "latest", Trigger: deployer.Trigger{Kind: deployer.TriggerManual}})
	if err != nil {
		t.Fatal(err)
	}
	got := p.Execute(context.Background(), d)
	if want := "explained: token_file refused for ghcr.io/acme/v7/backend"; got.ErrorClass != deployer.ClassAuth || got.Hint != want {
		t.Errorf("deployment %s %s, hint %q; want auth with hint %q", got.State, got.ErrorClass, got.Hint, want)
	}
}
