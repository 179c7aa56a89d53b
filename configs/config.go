// Package configs loads and validates deployd's YAML configuration.
//
// Loading is a pipeline: parse strictly (unknown keys are errors), expand
// ${VAR} from the environment, apply defaults, read *_file secrets, then
// Validate, which reports every problem at once with its YAML path and line.
package configs

import "time"

// Config is the whole configuration file.
type Config struct {
	Listen            string   `yaml:"listen"`
	PublicURL         string   `yaml:"public_url"`
	DataDir           string   `yaml:"data_dir"`
	Log               Log      `yaml:"log"`
	ReconcileInterval Duration `yaml:"reconcile_interval"`

	GitHub     GitHub               `yaml:"github"`
	Registries map[string]*Registry `yaml:"registries"`
	Podman     Podman               `yaml:"podman"`
	API        API                  `yaml:"api"`
	Status     Status               `yaml:"status"`
	Services   map[string]*Service  `yaml:"services"`
}

// Log configures deployd's own log.
type Log struct {
	Level  string `yaml:"level"`  // debug | info | warn | error
	Format string `yaml:"format"` // json | console
}

// GitHub configures the GitHub side: webhooks, the App and deployments.
type GitHub struct {
	APIURL            string `yaml:"api_url"`
	WebhookSecret     Secret `yaml:"webhook_secret"`
	WebhookSecretFile string `yaml:"webhook_secret_file"`
	App               App    `yaml:"app"`
	Deployments       bool   `yaml:"deployments"`
}

// App identifies the GitHub App whose installation tokens deployd mints.
type App struct {
	ID             int64  `yaml:"id"`
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
	Username    string   `yaml:"username"`
	Credentials []string `yaml:"credentials"`
	TokenFile   string   `yaml:"token_file"`
	Insecure    bool     `yaml:"insecure"`
	// GitHubPackages marks a registry whose images GitHub package events
	// name. Nil means the default: true for ghcr.io only.
	GitHubPackages *bool `yaml:"github_packages"`
}

// Podman configures how deployd runs podman.
type Podman struct {
	Command    string   `yaml:"command"`
	GlobalArgs []string `yaml:"global_args"`
	AuthFile   string   `yaml:"auth_file"`
}

// API configures the operator API.
type API struct {
	TokenKeyFile string `yaml:"token_key_file"`
}

// Status configures the status page and read API.
type Status struct {
	// Public nil means the default, true.
	Public *bool `yaml:"public"`
}

// Deploy strategies.
const (
	StrategyContainer = "container"
	StrategySystemd   = "systemd"
	StrategyCommand   = "command"
)

// Service is one deployable service.
type Service struct {
	Image      string    `yaml:"image"`
	Repository string    `yaml:"repository"`
	Tags       []string  `yaml:"tags"`
	On         On        `yaml:"on"`
	Strategy   string    `yaml:"strategy"`
	Container  Container `yaml:"container"`
	Systemd    Systemd   `yaml:"systemd"`
	Command    []string  `yaml:"command"`
	Health     Health    `yaml:"health"`
	Rollback   *bool     `yaml:"rollback"` // nil means the default, true
	KeepImages int       `yaml:"keep_images"`
	DryRun     bool      `yaml:"dry_run"`
}

// On says which events deploy a service.
type On struct {
	Package     *bool        `yaml:"package"` // nil means the default, true
	WorkflowRun *WorkflowRun `yaml:"workflow_run"`
}

// WorkflowRun deploys a service when a matching workflow run succeeds.
type WorkflowRun struct {
	Workflows []string `yaml:"workflows"`
	Branches  []string `yaml:"branches"`
	// Tag is a text/template over .SHA .ShortSHA .Branch .RunID .RunNumber.
	Tag string `yaml:"tag"`
}

// Container configures the container strategy.
type Container struct {
	Name    string   `yaml:"name"`
	Args    []string `yaml:"args"`
	Command []string `yaml:"command"`
}

// Systemd configures the systemd strategy.
type Systemd struct {
	Unit string `yaml:"unit"`
	User bool   `yaml:"user"`
}

// Health configures the health check after a switch.
type Health struct {
	URL      string   `yaml:"url"`
	Timeout  Duration `yaml:"timeout"`
	Interval Duration `yaml:"interval"`
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

// PackageEnabled reports whether package events deploy the service (default true).
func (s *Service) PackageEnabled() bool { return s.On.Package == nil || *s.On.Package }

// RollbackEnabled reports whether a failed deploy rolls back (default true).
func (s *Service) RollbackEnabled() bool { return s.Rollback == nil || *s.Rollback }

// StatusPublic reports whether the status page and read API need no token (default true).
func (c *Config) StatusPublic() bool { return c.Status.Public == nil || *c.Status.Public }
