package configs

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"time"
)

// Fleet roles.
const (
	// FleetRoleHub receives webhooks and API calls, decides what deploys
	// and sends intents to the agents of a service's hosts.
	FleetRoleHub = "hub"
	// FleetRoleAgent runs on a fleet host and carries out its intents.
	FleetRoleAgent = "agent"
)

// DefaultNATSListen is the embedded NATS server's default client address.
const DefaultNATSListen = "127.0.0.1:4222"

// Fleet configures deployd as a fleet hub or agent. Its zero value is the
// single-host deployd.
type Fleet struct {
	// Role is "" (single host, the default), FleetRoleHub or
	// FleetRoleAgent.
	Role string `yaml:"role"`
	// Host is an agent's host name, as services' hosts lists name it.
	Host string `yaml:"host"`
	// NATS says where the fleet's NATS is and how to reach it.
	NATS NATS `yaml:"nats"`
	// CredentialsFile is an agent's credentials, written by deployd
	// fleet add-host on the hub: its NATS NKey and curve key seeds, and
	// the hub's curve public key.
	CredentialsFile string `yaml:"credentials_file"`
	// ResultTimeout is how long a hub waits for one host's result before
	// it marks the host's deployment interrupted (default 10m).
	ResultTimeout Duration `yaml:"result_timeout"`
}

// NATS configures the fleet's NATS connection.
type NATS struct {
	// Listen is the client address of the hub's embedded JetStream
	// server (default 127.0.0.1:4222), used when URL is empty.
	Listen string `yaml:"listen"`
	// URL points a hub or an agent at a NATS server: for an agent, the
	// hub's; for a hub, an existing cluster instead of the embedded server.
	URL string `yaml:"url"`
}

// FleetDir is where a hub keeps its fleet keys and the hosts added to
// it: <data_dir>/fleet.
func (c *Config) FleetDir() string { return filepath.Join(c.DataDir, "fleet") }

func (c *Config) fleetDefaults() {
	if c.Fleet.Role == FleetRoleHub {
		setString(&c.Fleet.NATS.Listen, DefaultNATSListen)
		if c.Fleet.ResultTimeout == 0 {
			c.Fleet.ResultTimeout = Duration(defaultResultTimeout)
		}
	}
}

// fleet checks the fleet section and what each role demands: an agent
// holds no webhook secret or App key and needs its host, its hub's URL
// and its credentials; only a hub's services list hosts.
func (v *validator) fleet() {
	f := &v.c.Fleet
	switch f.Role {
	case "":
	case FleetRoleHub:
		if f.NATS.URL == "" {
			if host, _, err := net.SplitHostPort(f.NATS.Listen); err != nil {
				v.add("fleet.nats.listen", "want HOST:PORT: %v", err)
			} else if ip := net.ParseIP(host); ip == nil {
				v.add("fleet.nats.listen", "want an IP address, not %q", host)
			}
		}
		if f.ResultTimeout <= 0 {
			v.add("fleet.result_timeout", "must be positive")
		}
	case FleetRoleAgent:
		if err := checkHostName(f.Host); err != nil {
			v.add("fleet.host", "%v", err)
		}
		if f.NATS.URL == "" {
			v.add("fleet.nats.url", "required for an agent: the hub's NATS URL")
		}
		if f.CredentialsFile == "" {
			v.add("fleet.credentials_file", "required for an agent: the file deployd fleet add-host wrote on the hub")
		}
	default:
		v.add("fleet.role", "must be %s, %s or empty (one host), not %q", FleetRoleHub, FleetRoleAgent, f.Role)
	}
	if f.NATS.URL != "" {
		if u, err := url.Parse(f.NATS.URL); err != nil || (u.Scheme != "nats" && u.Scheme != "tls") || u.Host == "" {
			v.add("fleet.nats.url", "want nats://HOST:PORT or tls://HOST:PORT")
		} else if u.User != nil {
			v.add("fleet.nats.url", "must not hold a user or password: agents authenticate with their NKey")
		}
	}
	if f.Role != FleetRoleHub {
		for name, s := range v.c.Services {
			if len(s.Hosts) > 0 {
				v.add("services."+name+".hosts", "only a hub (fleet.role: hub) sends services to hosts")
			}
		}
	}
}

// checkHostName checks a fleet host name: 1 to 64 of [A-Za-z0-9_-], so
// that it is one NATS subject token.
func checkHostName(h string) error {
	if !validHostName(h) {
		return fmt.Errorf("host %q must be 1 to 64 of A-Z a-z 0-9 _ -", h)
	}
	return nil
}

// defaultResultTimeout is fleet.result_timeout's default.
const defaultResultTimeout = 10 * time.Minute

// agentHoldsNoGitHubSecrets refuses GitHub secrets on an agent: the hub
// holds them, and an agent receives no webhooks.
func (v *validator) agentHoldsNoGitHubSecrets() {
	gh := &v.c.GitHub
	if gh.WebhookSecret != "" || gh.WebhookSecretFile != "" {
		v.add("github.webhook_secret", "an agent (fleet.role: agent) takes no webhooks: remove the webhook secret, the hub holds it")
	}
	if gh.App.configured() {
		v.add("github.app", "an agent (fleet.role: agent) mints no tokens: remove the App, the hub holds its key")
	}
	if gh.Deployments {
		v.add("github.deployments", "an agent (fleet.role: agent) reports to the hub, not to GitHub")
	}
}
