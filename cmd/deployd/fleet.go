package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/rs/zerolog"

	"github.com/deployd/deployd/configs"
	"github.com/deployd/deployd/deployer"
	"github.com/deployd/deployd/deployer/podman"
	"github.com/deployd/deployd/deployer/sqlite"
	"github.com/deployd/deployd/fleet"
	"github.com/deployd/deployd/fleet/natsembed"
)

func fleetCommand(_ context.Context, e env, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(e.stderr, "usage: deployd fleet add-host NAME [--out PATH] [--config PATH]")
		if len(args) == 0 {
			return usageError{"fleet: no subcommand given (add-host)"}
		}
		return nil
	}
	if args[0] != "add-host" {
		return usageError{fmt.Sprintf("fleet: unknown subcommand %q (want add-host)", args[0])}
	}
	fs := newFlags(e, "fleet add-host")
	configPath := fs.String("config", defaultConfigPath, "the hub's configuration file")
	out := fs.String("out", "", "write the agent's credentials to this new file (mode 0600) instead of printing them")
	if len(args) < 2 || strings.HasPrefix(args[1], "-") {
		return usageError{"fleet add-host: name the host: deployd fleet add-host NAME"}
	}
	host := args[1]
	if err := parseFlags(fs, args[2:]); err != nil {
		return err
	}
	cfg, err := configs.Load(*configPath, e.getenv)
	if err != nil {
		return err
	}
	if cfg.Fleet.Role != configs.FleetRoleHub {
		return fmt.Errorf("fleet add-host: %s is not a hub's configuration (fleet.role: hub)", *configPath)
	}
	keys, err := fleet.LoadHubKeys(cfg.FleetDir())
	if err != nil {
		return err
	}
	creds, err := fleet.AddHost(cfg.FleetDir(), host, keys)
	if err != nil {
		return err
	}
	data, err := json.MarshalIndent(creds, "", "  ")
	if err != nil {
		return fmt.Errorf("fleet add-host: %w", err)
	}
	data = append(data, '\n')
	credsPath := *out
	if credsPath != "" {
		if err := fleet.WriteNew(credsPath, data); err != nil {
			return fmt.Errorf("fleet add-host: %w", err)
		}
		fmt.Fprintf(e.stdout, "Wrote %s's credentials to %s. Copy it to the host (mode 0600) and restart the hub.\n", host, credsPath)
	} else {
		credsPath = "/etc/deployd/fleet.creds"
		fmt.Fprintf(e.stdout, "Credentials of %s (secret: store them as %s on the host, mode 0600):\n\n%s\n", host, credsPath, data)
		fmt.Fprintln(e.stdout, "Restart the hub so that its NATS server lets the host in.")
	}
	url := cfg.Fleet.NATS.URL
	if url == "" {
		url = "nats://" + cfg.Fleet.NATS.Listen
	}
	fmt.Fprintf(e.stdout, "\nThe host's configuration:\n\nfleet:\n  role: agent\n  host: %s\n  nats: {url: %q}\n  credentials_file: %s\n", host, url, credsPath)
	return nil
}

// closeStore closes the store, logging a failure.
func closeStore(store *sqlite.Store, log zerolog.Logger) {
	if err := store.Close(); err != nil {
		log.Error().Err(err).Msg("close store")
	}
}

// fleetHub is a hub's side of the fleet: its NATS (embedded or not), its
// JetStream and its keys; executor wraps the local pipeline in the hub's
// executor once the deployments are built.
type fleetHub struct {
	srv   *natsembed.Server // nil with fleet.nats.url
	nc    *nats.Conn
	js    jetstream.JetStream
	keys  fleet.HubKeys
	hosts map[string]fleet.HostKeys
	hub   *fleet.Hub
	stop  func()
}

// startFleetHub starts or reaches the hub's NATS and sets the fleet's
// streams and the hosts' consumers up; it returns nil without a hub role.
func startFleetHub(ctx context.Context, cfg *configs.Config, log zerolog.Logger) (*fleetHub, error) {
	if cfg.Fleet.Role != configs.FleetRoleHub {
		return nil, nil
	}
	keys, err := fleet.LoadHubKeys(cfg.FleetDir())
	if err != nil {
		return nil, err
	}
	hosts, err := fleet.Hosts(cfg.FleetDir())
	if err != nil {
		return nil, err
	}
	f := &fleetHub{keys: keys, hosts: hosts}
	url := cfg.Fleet.NATS.URL
	if url == "" {
		hubUser, err := keys.NKey.PublicKey()
		if err != nil {
			return nil, fmt.Errorf("hub key: %w", err)
		}
		users := []natsembed.User{{PublicKey: hubUser}}
		for _, name := range fleet.SortedHosts(hosts) {
			pub, sub := fleet.AgentPermissions(name)
			users = append(users, natsembed.User{PublicKey: hosts[name].UserKey, Publish: pub, Subscribe: sub})
		}
		if f.srv, err = natsembed.Start(natsembed.Config{Listen: cfg.Fleet.NATS.Listen,
			StoreDir: filepath.Join(cfg.FleetDir(), "jetstream"), Users: users}); err != nil {
			return nil, err
		}
		url = f.srv.ClientURL()
	}
	if f.nc, err = connectNATS(url, keys.NKey, "", log); err != nil {
		f.close()
		return nil, err
	}
	if f.js, err = jetstream.New(f.nc); err != nil {
		f.close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	if err := fleet.Setup(ctx, f.js); err != nil {
		f.close()
		return nil, err
	}
	for _, name := range fleet.SortedHosts(hosts) {
		if err := fleet.AddAgent(ctx, f.js, name); err != nil {
			f.close()
			return nil, err
		}
	}
	log.Info().Str("nats", url).Int("hosts", len(hosts)).Bool("embedded", f.srv != nil).Msg("fleet hub ready")
	return f, nil
}

// connectNATS connects with the NKey kp, using the inbox prefix when set.
func connectNATS(url string, kp nkeys.KeyPair, inbox string, log zerolog.Logger) (*nats.Conn, error) {
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("nats key: %w", err)
	}
	opts := []nats.Option{nats.Nkey(pub, kp.Sign), nats.Name("deployd"), nats.MaxReconnects(-1),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Warn().Err(err).Msg("nats")
		})}
	if inbox != "" {
		opts = append(opts, nats.CustomInboxPrefix(inbox))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to nats %s: %w", url, err)
	}
	return nc, nil
}

// executor returns the hub's executor, deployments of services without
// hosts going to local; it starts the reading of the agents' reports.
func (f *fleetHub) executor(cfg *configs.Config, services []deployer.Service, store *sqlite.Store, creds deployer.Credentials, local deployer.Executor, log zerolog.Logger) (deployer.Executor, error) {
	agents := map[string]string{}
	for name, h := range f.hosts {
		agents[name] = h.CurveKey
	}
	hub, err := fleet.NewHub(fleet.HubConfig{Services: servicesByName(services), Local: local, Store: store,
		Credentials: creds, Resolver: podman.RegistryResolver{UserAgent: "deployd/" + version},
		JetStream: f.js, Key: f.keys.Curve, Agents: agents, ResultTimeout: cfg.Fleet.ResultTimeout.Std(),
		Logger: log.With().Str("component", "fleet").Logger()})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := hub.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			log.Error().Err(err).Msg("fleet reports stopped")
		}
	}()
	f.hub, f.stop = hub, func() { cancel(); <-done }
	return hub, nil
}

// close stops the reports, the connection and the embedded server; nil
// does nothing.
func (f *fleetHub) close() {
	if f == nil {
		return
	}
	if f.stop != nil {
		f.stop()
	}
	if f.nc != nil {
		f.nc.Close()
	}
	if f.srv != nil {
		f.srv.Shutdown()
	}
}

// serveAgent runs deployd as a fleet agent until ctx ends: it carries out
// its host's intents with the podman pipeline and reports to the hub. It
// takes no webhooks and serves no API.
func serveAgent(ctx context.Context, cfg *configs.Config, log zerolog.Logger, e env) error {
	data, err := os.ReadFile(cfg.Fleet.CredentialsFile)
	if err != nil {
		return fmt.Errorf("fleet.credentials_file: %w", err)
	}
	creds, err := fleet.ParseAgentCredentials(data)
	if err != nil {
		return fmt.Errorf("fleet.credentials_file %s: %w", cfg.Fleet.CredentialsFile, err)
	}
	if creds.Host != cfg.Fleet.Host {
		return fmt.Errorf("fleet.credentials_file %s is host %s's, not %s's", cfg.Fleet.CredentialsFile, creds.Host, cfg.Fleet.Host)
	}
	nk, err := creds.NKey()
	if err != nil {
		return fmt.Errorf("fleet credentials: %w", err)
	}
	curve, err := creds.CurveKey()
	if err != nil {
		return fmt.Errorf("fleet credentials: %w", err)
	}
	store, err := openStore(ctx, cfg, log, e.getenv)
	if err != nil {
		return err
	}
	defer closeStore(store, log)
	if ids, err := store.InterruptRunning(ctx); err != nil {
		return err
	} else if len(ids) > 0 {
		log.Warn().Ints64("deployment_ids", ids).Msg("deployments interrupted by the last stop")
	}
	nc, err := connectNATS(cfg.Fleet.NATS.URL, nk, fleet.InboxPrefix(cfg.Fleet.Host), log)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	agent, err := fleet.NewAgent(fleet.AgentConfig{Host: cfg.Fleet.Host, Services: servicesByName(cfg.ServiceList()),
		Store: store, JetStream: js, Key: curve, HubKey: creds.HubCurveKey,
		Logger: log.With().Str("component", "fleet").Logger()})
	if err != nil {
		return err
	}
	pipeline, err := podman.NewPipeline(podman.PipelineConfig{
		Services:    servicesByName(cfg.ServiceList()),
		Store:       store,
		Credentials: agent.Credentials(),
		Resolver:    podman.RegistryResolver{UserAgent: "deployd/" + version},
		Runner:      &podman.CommandRunner{Env: append(podman.ChildEnv(os.Environ()), e.childEnv...)},
		Podman:      podman.Config{Command: cfg.Podman.Command, GlobalArgs: cfg.Podman.GlobalArgs, AuthFile: cfg.AuthFile()},
		Logger:      log,
		Notify:      agent.Notify,
	})
	if err != nil {
		return err
	}
	log.Info().Str("host", cfg.Fleet.Host).Str("nats", cfg.Fleet.NATS.URL).Msg("fleet agent running")
	if err := agent.Run(ctx, pipeline); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	log.Info().Msg("stopped")
	return nil
}
