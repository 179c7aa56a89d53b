package configs

import (
	"slices"
	"time"

	"github.com/deployd/deployd/deployer"
)

// Defaults of the configuration (SPEC §4).
const (
	DefaultListen            = "127.0.0.1:8080"
	DefaultDataDir           = "/var/lib/deployd"
	DefaultLogLevel          = "info"
	DefaultLogFormat         = "json"
	DefaultReconcileInterval = 10 * time.Minute
	DefaultGitHubAPIURL      = "https://api.github.com"
	DefaultPodmanCommand     = "podman"
	DefaultRegistryUsername  = "x-access-token"
	DefaultServiceTag        = "latest"
	DefaultHealthTimeout     = 60 * time.Second
	DefaultHealthInterval    = 2 * time.Second
	DefaultKeepImages        = 3
)

// DefaultDeliveryRecoveryInterval is github.delivery_recovery_interval's
// default.
const DefaultDeliveryRecoveryInterval = 10 * time.Minute

// ApplyDefaults fills every unset (zero) field with its default, as Parse
// does for keys absent from the file, and fills in each service's derived
// fields (Name, Host, DefaultTag, Insecure). It is meant for configurations
// built in code; call it before Validate. Unlike Parse, it cannot tell an
// explicit zero from an unset field, so it sets ReconcileInterval to 10m
// when zero, the retention keys to their defaults when zero and each
// service's Rollback to true when false: set them afterwards to turn
// reconciling, retention or rolling back off.
func (c *Config) ApplyDefaults() { c.applyDefaults(func(string) bool { return false }) }

// applyDefaults fills unset fields and the services' derived ones. isSet
// reports whether the file set the key at a YAML path; a key set
// explicitly keeps its value, even zero, so that "reconcile_interval: 0"
// means off, "rollback: false" does not roll back and "keep_images: 0" is
// refused.
func (c *Config) applyDefaults(isSet func(path string) bool) {
	setString(&c.Listen, DefaultListen)
	setString(&c.DataDir, DefaultDataDir)
	c.fleetDefaults()
	setString(&c.Log.Level, DefaultLogLevel)
	setString(&c.Log.Format, DefaultLogFormat)
	if c.ReconcileInterval == 0 && !isSet("reconcile_interval") {
		c.ReconcileInterval = Duration(DefaultReconcileInterval)
	}
	if c.GitHub.DeliveryRecoveryInterval == 0 && !isSet("github.delivery_recovery_interval") {
		c.GitHub.DeliveryRecoveryInterval = Duration(DefaultDeliveryRecoveryInterval)
	}
	c.applyRetentionDefaults(isSet)
	setString(&c.GitHub.APIURL, DefaultGitHubAPIURL)
	setString(&c.Podman.Command, DefaultPodmanCommand)
	c.API.OIDC.applyDefaults()
	setString(&c.Trust.Root, DefaultTrustRoot)

	for host, r := range c.Registries {
		if r == nil {
			r = &Registry{}
			c.Registries[host] = r
		}
		setString(&r.Username, DefaultRegistryUsername)
		if len(r.Credentials) == 0 && !isSet("registries."+host+".credentials") {
			r.Credentials = c.defaultCredentials(host, r)
		}
	}

	c.releaseSetDefaults(isSet)

	for name, s := range c.Services {
		if s == nil {
			s = &deployer.Service{}
			c.Services[name] = s
		}
		p := "services." + name
		s.Name = name
		setString(&s.Strategy, deployer.StrategyContainer)
		if len(s.Tags) == 0 && !isSet(p+".tags") {
			s.Tags = []string{DefaultServiceTag}
		}
		s.DefaultTag = ""
		if len(s.Tags) > 0 {
			s.DefaultTag = s.Tags[0] // Validate ensures it is a plain tag
		}
		s.Host, s.Insecure = "", false
		if img, err := ParseImage(s.Image); err == nil { // else Validate says what is wrong
			s.Host = img.Host
			if r := c.Registries[img.Host]; r != nil {
				s.Insecure = r.Insecure
			}
		}
		if w := s.On.WorkflowRun; w != nil {
			if t := s.DefaultTag; w.Tag == "" && deployer.ValidTag(t) {
				w.Tag = t
			}
			if len(w.Events) == 0 && !isSet(p+".on.workflow_run.events") {
				w.Events = DefaultRunEvents()
			}
		}
		if s.Strategy == deployer.StrategyContainer {
			setString(&s.Container.Name, name)
		}
		if s.Health.Timeout == 0 && !isSet(p+".health.timeout") {
			s.Health.Timeout = DefaultHealthTimeout
		}
		if s.Health.Interval == 0 && !isSet(p+".health.interval") {
			s.Health.Interval = DefaultHealthInterval
		}
		if !s.Rollback && !isSet(p+".rollback") {
			s.Rollback = true
		}
		if s.KeepImages == 0 && !isSet(p+".keep_images") {
			s.KeepImages = DefaultKeepImages
		}
		verifyDefaults(s)
		setString(&s.Rollout, deployer.RolloutAllAtOnce)
	}
}

// defaultCredentials returns the credential sources of a registry that does
// not list them: the GitHub App for a GitHub packages registry when an App
// is configured, then the token file when one is set, else anonymous.
func (c *Config) defaultCredentials(host string, r *Registry) []string {
	var creds []string
	if c.GitHub.App.configured() && c.IsGitHubPackages(host) {
		creds = append(creds, CredentialGitHubApp)
	}
	if r.TokenFile != "" {
		creds = append(creds, CredentialTokenFile)
	}
	if len(creds) == 0 {
		creds = []string{CredentialNone}
	}
	return slices.Clip(creds)
}

// configured reports whether any App setting is present.
func (a App) configured() bool { return a.ID != 0 || a.PrivateKeyFile != "" }

func setString(s *string, def string) {
	if *s == "" {
		*s = def
	}
}
