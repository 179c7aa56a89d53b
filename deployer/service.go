package deployer

import "time"

// Strategies: how a new version is put in place.
const (
	StrategyContainer = "container"
	StrategySystemd   = "systemd"
	StrategyCommand   = "command"
)

// ServiceSpec is everything the pipeline needs to know about a service. The
// command builds it from the configuration.
type ServiceSpec struct {
	Name       string
	Host       string // registry host, "ghcr.io"
	Image      string // host/path without tag, "ghcr.io/acme/v7/backend"
	Repository string // GitHub OWNER/NAME, for down-scoped tokens
	DefaultTag string // the first tag pattern, used by manual deploys and reconcile
	Insecure   bool   // plain HTTP / no TLS verification (test registries)

	Strategy  string
	Container ContainerSpec
	Systemd   SystemdSpec
	Command   []string

	Health     HealthSpec
	Rollback   bool
	KeepImages int
	DryRun     bool
}

// ContainerSpec is the container strategy's podman run.
type ContainerSpec struct {
	Name    string
	Args    []string // podman run arguments, without image and --name
	Command []string // after the image
}

// SystemdSpec is the systemd strategy's unit.
type SystemdSpec struct {
	Unit string
	User bool
}

// HealthSpec is the health check run after a switch.
type HealthSpec struct {
	URL      string // empty: only "the container keeps running" is checked
	Timeout  time.Duration
	Interval time.Duration
}
