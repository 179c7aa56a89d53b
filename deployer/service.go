package deployer

import "time"

// Strategies: how a new version is put in place.
const (
	StrategyContainer = "container"
	StrategySystemd   = "systemd"
	StrategyCommand   = "command"
)

// Rollout policies: how a new version reaches a service's fleet hosts.
const (
	// RolloutAllAtOnce sends the new version to every host at once.
	RolloutAllAtOnce = "all-at-once"
	// RolloutOneByOne sends it to the next host only once the previous
	// one runs it healthy, and stops at the first failure, leaving the
	// hosts not reached on the old version.
	RolloutOneByOne = "one-by-one"
)

// Service is one deployable service: everything the pipeline, the webhook
// matcher and the API know about it. The configuration package loads it
// straight from the YAML file (the yaml tags are its keys under
// services.NAME) and fills in the fields the file does not spell out
// (Name, Host, DefaultTag, Insecure) and the defaults. A loaded Service is
// not modified and is safe for concurrent reads.
type Service struct {
	// Name is the service's key under services.
	Name string `yaml:"-"`
	// Image is the fully qualified image repository without tag or
	// digest, on a configured registry: "ghcr.io/acme/v7/backend".
	Image string `yaml:"image"`
	// Repository is the GitHub repository OWNER/NAME allowed to trigger
	// deploys; also used to down-scope tokens.
	Repository string `yaml:"repository"`
	// Tags are path.Match patterns of pushed tags that deploy (default
	// ["latest"]). The first must be a plain tag: it is DefaultTag.
	Tags []string `yaml:"tags"`
	// On says which events deploy the service.
	On DeployOn `yaml:"on"`

	// Strategy is how a new image goes live: StrategyContainer (default),
	// StrategySystemd or StrategyCommand.
	Strategy string `yaml:"strategy"`
	// Container configures the container strategy.
	Container Container `yaml:"container"`
	// Systemd configures the systemd strategy.
	Systemd Systemd `yaml:"systemd"`
	// Command is the argv run by the command strategy, with DEPLOY_SERVICE
	// DEPLOY_IMAGE DEPLOY_TAG DEPLOY_DIGEST DEPLOY_ID in its environment.
	Command []string `yaml:"command"`

	// Health configures the check after a switch.
	Health Health `yaml:"health"`
	// Rollback restores the previous image when a deploy fails (default
	// true).
	Rollback bool `yaml:"rollback"`
	// KeepImages is how many images of the service are kept (default 3).
	KeepImages int `yaml:"keep_images"`
	// DryRun records what a deploy would do and changes nothing.
	DryRun bool `yaml:"dry_run"`
	// Verify is the image verification policy: whether the attestations
	// of the digest are checked before it is pulled, and against which
	// identity.
	Verify Verify `yaml:"verify"`

	// Hosts are the fleet hosts (agents' fleet.host names) the service
	// runs on; empty means the host deployd runs on, as without a fleet.
	Hosts []string `yaml:"hosts"`
	// Rollout is how a new version reaches Hosts: RolloutAllAtOnce
	// (default) or RolloutOneByOne.
	Rollout string `yaml:"rollout"`

	// Host is the registry host of Image, "ghcr.io".
	Host string `yaml:"-"`
	// DefaultTag is the first of Tags ("" without tags): what manual
	// deploys and reconciling deploy when no tag is given.
	DefaultTag string `yaml:"-"`
	// Insecure allows plain HTTP and skips TLS verification with the
	// registry (its insecure setting: local test registries only).
	Insecure bool `yaml:"-"`
}

// PackageEnabled reports whether package events deploy the service (default true).
func (s *Service) PackageEnabled() bool { return s.On.Package == nil || *s.On.Package }

// DeployOn says which webhook events deploy a service.
type DeployOn struct {
	// Package deploys on package and registry_package events for a
	// matching tag; nil means the default, true (see PackageEnabled).
	Package *bool `yaml:"package"`
	// WorkflowRun, if set, deploys when a matching workflow run succeeds.
	WorkflowRun *WorkflowRun `yaml:"workflow_run"`
}

// WorkflowRun deploys a service when a matching workflow run succeeds.
type WorkflowRun struct {
	// Workflows are workflow names or paths (.github/workflows/ci.yml);
	// at least one is required.
	Workflows []string `yaml:"workflows"`
	// Branches are patterns (path.Match syntax) of the head branches
	// whose runs deploy; empty means any branch.
	Branches []string `yaml:"branches"`
	// Tag is a text/template over the run (.SHA .ShortSHA .Branch .RunID
	// .RunNumber) giving the tag to deploy; empty means the service's
	// default tag. See configs.ExecuteTag.
	Tag string `yaml:"tag"`
	// Events are the events (workflow_run.event) whose runs deploy, from
	// configs.DeployableRunEvents (default [push]). Runs started by
	// pull_request, pull_request_target or workflow_run never deploy: see
	// configs.RefusedRunEvent.
	Events []string `yaml:"events"`
}

// Container configures the container strategy's podman run.
type Container struct {
	// Name is the container name (default: the service name).
	Name string `yaml:"name"`
	// Args are podman run arguments, without the image and --name.
	Args []string `yaml:"args"`
	// Command is the optional command after the image.
	Command []string `yaml:"command"`
}

// Systemd configures the systemd strategy's unit.
type Systemd struct {
	// Unit is the unit restarted, e.g. v7-backend.service.
	Unit string `yaml:"unit"`
	// User uses the user's service manager (systemctl --user).
	User bool `yaml:"user"`
}

// Health configures the health check run after a switch.
type Health struct {
	// URL is polled until it answers 2xx; empty means only "the container
	// keeps running" is checked.
	URL string `yaml:"url"`
	// Timeout bounds the whole check (default 60s).
	Timeout time.Duration `yaml:"timeout"`
	// Interval is the time between polls (default 2s).
	Interval time.Duration `yaml:"interval"`
}
