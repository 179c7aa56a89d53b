// Package configs loads and validates deployd's YAML configuration.
//
// Loading is a pipeline: parse strictly (unknown keys are errors), expand
// ${VAR} from the environment, apply defaults, read *_file secrets, then
// Validate what could be read. The problems of every step are reported
// together, each with its YAML path and line.
//
// Services load straight into deployer.Service, the one service type every
// package uses; configs fills in what the file does not spell out there
// (the name, the registry host, the default tag, the registry's insecure
// setting).
package configs

import (
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/deployd/deployd/deployer"
)

// Config is the whole configuration file.
//
// A Config returned by Load or Parse is complete (defaults applied) and
// valid; it is not modified afterwards and is safe for concurrent reads.
type Config struct {
	// Listen is the HTTP listen address HOST:PORT (default 127.0.0.1:8080).
	Listen string `yaml:"listen"`
	// PublicURL is the absolute URL deployd is reached at, for links on the
	// status page and in GitHub deployment statuses (optional).
	PublicURL string `yaml:"public_url"`
	// DataDir holds the SQLite database and the registry auth file
	// (default /var/lib/deployd).
	DataDir string `yaml:"data_dir"`
	// Log configures deployd's own log.
	Log Log `yaml:"log"`
	// ReconcileInterval is how often every service is checked against its
	// registry (default 10m; 0 turns reconciling off).
	ReconcileInterval Duration `yaml:"reconcile_interval"`

	// GitHub configures webhooks, the GitHub App and deployments.
	GitHub GitHub `yaml:"github"`
	// Registries configures each registry host services pull from; a
	// service image must be on one of them.
	Registries map[string]*Registry `yaml:"registries"`
	// Podman configures how podman is run.
	Podman Podman `yaml:"podman"`
	// API configures the operator API.
	API API `yaml:"api"`
	// Status configures the status page and read API.
	Status Status `yaml:"status"`
	// Trust is the Sigstore trust root of image verification.
	Trust Trust `yaml:"trust"`
	// Retention bounds what the store keeps of deliveries and deployments.
	Retention Retention `yaml:"retention"`
	// Services are the deployable services by name, loaded straight into
	// deployer's type: see deployer.Service for their keys.
	Services map[string]*deployer.Service `yaml:"services"`
	// Notifications are the receivers of word of failed, rolled back and
	// degraded deployments and credential fallbacks (see Notification).
	Notifications []Notification `yaml:"notifications"`
	// ReleaseSets group services whose images of one commit go live
	// together, by name, loaded straight into deployer's type: see
	// deployer.ReleaseSet for their keys.
	ReleaseSets map[string]*deployer.ReleaseSet `yaml:"release_sets"`
	// Fleet makes deployd a fleet hub or agent; empty, it deploys on its
	// own host only.
	Fleet Fleet `yaml:"fleet"`

	// lines maps the YAML path of every key read by Parse to its line, so
	// that Validate can point at it. It is nil for a Config built in code.
	lines map[string]int
	// unread holds the YAML paths whose values Parse could not read and
	// has already reported; Validate does not report them, or what only
	// their absence causes, again.
	unread map[string]bool
}

// Log configures deployd's own log.
type Log struct {
	Level  string `yaml:"level"`  // trace | debug | info (default) | warn | error
	Format string `yaml:"format"` // json (default) | console
}

// GitHub configures the GitHub side: webhooks, the App and deployments.
type GitHub struct {
	// APIURL is the GitHub REST API (default https://api.github.com).
	APIURL string `yaml:"api_url"`
	// WebhookSecret verifies webhook signatures. Parse fills it from
	// WebhookSecretFile when that is set; it is never empty after Parse.
	WebhookSecret Secret `yaml:"webhook_secret"`
	// WebhookSecretFile is a file holding the webhook secret (trailing
	// newlines are ignored). Only one of the two may be set.
	WebhookSecretFile string `yaml:"webhook_secret_file"`
	// App is the GitHub App; its zero value means no App.
	App App `yaml:"app"`
	// Deployments reports deploys to GitHub's Deployments API (needs App).
	Deployments bool `yaml:"deployments"`
	// DeliveryRecoveryInterval is how often the App's webhook delivery log
	// is read for deliveries that never arrived, which GitHub is then asked
	// to redeliver (default 10m, also done at start-up; 0 turns it off).
	// Used only with App.
	DeliveryRecoveryInterval Duration `yaml:"delivery_recovery_interval"`
}

// App identifies the GitHub App whose installation tokens deployd mints.
type App struct {
	// ID is the App ID.
	ID int64 `yaml:"id"`
	// PrivateKeyFile is the App's PEM private key; it is read by the code
	// that signs App JWTs, not by Parse.
	PrivateKeyFile string `yaml:"private_key_file"`
	// InstallationID 0 means: from the webhook payload, else looked up for
	// the service's repository.
	InstallationID int64 `yaml:"installation_id"`
}

// Credential sources of a registry, tried in order.
const (
	CredentialGitHubApp = "github_app"
	CredentialTokenFile = "token_file"
	CredentialNone      = "none"
)

// Registry configures how deployd authenticates to one registry host.
type Registry struct {
	// Username for registry login (default x-access-token).
	Username string `yaml:"username"`
	// Credentials are the sources tried in order, the first one the
	// registry accepts wins: CredentialGitHubApp, CredentialTokenFile,
	// CredentialNone. Default: github_app when an App is configured and
	// the registry is a GitHub packages registry, then token_file when
	// TokenFile is set; [none] if neither.
	Credentials []string `yaml:"credentials"`
	// TokenFile holds a token (e.g. a classic PAT with read:packages) for
	// the token_file source; it is read when used, not by Parse.
	TokenFile string `yaml:"token_file"`
	// Insecure allows plain HTTP and skips TLS verification: for local
	// test registries only.
	Insecure bool `yaml:"insecure"`
	// GitHubPackages marks a registry whose images GitHub package events
	// name. Nil means the default: true for ghcr.io only.
	GitHubPackages *bool `yaml:"github_packages"`
}

// Podman configures how deployd runs podman.
type Podman struct {
	// Command is the podman binary (default podman).
	Command string `yaml:"command"`
	// GlobalArgs come before every podman subcommand (e.g. --remote).
	GlobalArgs []string `yaml:"global_args"`
	// AuthFile is the registry auth file; "" means <data_dir>/auth.json.
	// Use Config.AuthFile.
	AuthFile string `yaml:"auth_file"`
}

// API configures the operator API.
type API struct {
	// TokenKeyFile holds the key API tokens are signed with; it is read
	// by the code that issues and checks tokens, not by Parse.
	TokenKeyFile string `yaml:"token_key_file"`
	// OIDC accepts GitHub Actions OIDC tokens too; nil: only API tokens.
	OIDC *OIDC `yaml:"oidc"`
}

// Status configures the status page and read API.
type Status struct {
	// Public nil means the default, true.
	Public *bool `yaml:"public"`
}

// Events that start workflow runs, as GitHub names them in a run's "event",
// that on.workflow_run.events may list.
const (
	RunEventPush             = "push"
	RunEventWorkflowDispatch = "workflow_dispatch"
	RunEventRelease          = "release"
	RunEventSchedule         = "schedule"
)

// DeployableRunEvents returns the events on.workflow_run.events may list:
// those only the repository's own pushes, its maintainers or its schedule
// start, never someone else's pull request.
func DeployableRunEvents() []string {
	return []string{RunEventPush, RunEventWorkflowDispatch, RunEventRelease, RunEventSchedule}
}

// DefaultRunEvents returns the default of on.workflow_run.events, [push].
func DefaultRunEvents() []string { return []string{RunEventPush} }

// CheckRunEvent returns why event may not be listed in a service's
// on.workflow_run.events, or nil when it may.
func CheckRunEvent(event string) error {
	allowed := strings.Join(DeployableRunEvents(), ", ")
	if why := RefusedRunEvent(event); why != "" {
		return fmt.Errorf("runs started by %s never deploy: %s (deployable events: %s)", event, why, allowed)
	}
	if !slices.Contains(DeployableRunEvents(), event) {
		return fmt.Errorf("unknown event %q (one of %s)", event, allowed)
	}
	return nil
}

// RefusedRunEvent returns why runs started by event never deploy, or ""
// when event is not one of those: pull_request, pull_request_target and
// workflow_run.
func RefusedRunEvent(event string) string {
	switch event {
	case "pull_request":
		return "a pull_request run builds a pull request's code, and anyone can open one from a fork"
	case "pull_request_target":
		return "a pull_request_target run acts on a pull request, and anyone can open one from a fork"
	case "workflow_run":
		return "a workflow_run run follows another run, which a pull request may have started"
	}
	return ""
}

// Duration is a time.Duration written the Go way in YAML ("60s", "10m").
type Duration time.Duration

// Secret is a string that never prints: its String, GoString, Format and
// JSON forms are "[redacted]". Reveal returns the value.
type Secret string

// DefaultGitHubPackagesHost is the registry whose images GitHub package
// events name unless the configuration says otherwise.
const DefaultGitHubPackagesHost = "ghcr.io"

// IsGitHubPackages reports whether GitHub package events name images on the
// registry host: the registry's github_packages setting, else true for
// ghcr.io only.
func (c *Config) IsGitHubPackages(host string) bool {
	if r := c.Registries[host]; r != nil && r.GitHubPackages != nil {
		return *r.GitHubPackages
	}
	return host == DefaultGitHubPackagesHost
}

// AuthFile returns the registry auth file podman uses: podman.auth_file,
// else <data_dir>/auth.json.
func (c *Config) AuthFile() string {
	if c.Podman.AuthFile != "" {
		return c.Podman.AuthFile
	}
	return filepath.Join(c.DataDir, "auth.json")
}

// ServiceList returns the services in name order.
func (c *Config) ServiceList() []deployer.Service {
	out := make([]deployer.Service, 0, len(c.Services))
	for _, name := range slices.Sorted(maps.Keys(c.Services)) {
		if s := c.Services[name]; s != nil {
			out = append(out, *s)
		}
	}
	return out
}

// StatusPublic reports whether the status page and read API need no token (default true).
func (c *Config) StatusPublic() bool { return c.Status.Public == nil || *c.Status.Public }
