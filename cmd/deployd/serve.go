package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"

	"github.com/deployd/deployd/auth/github"
	"github.com/deployd/deployd/auth/registry"
	"github.com/deployd/deployd/configs"
	"github.com/deployd/deployd/deployer"
	"github.com/deployd/deployd/deployer/ghdeployments"
	"github.com/deployd/deployd/deployer/podman"
	"github.com/deployd/deployd/deployer/recovery"
	"github.com/deployd/deployd/deployer/sqlite"
	"github.com/deployd/deployd/doctor"
	"github.com/deployd/deployd/notify"
	"github.com/deployd/deployd/server"
	"github.com/deployd/deployd/server/metrics"
	"github.com/deployd/deployd/webhook"
)

// Shutdown budget: how long in-flight requests and then running
// deployments get before they are cut off.
const (
	httpShutdownTimeout  = 15 * time.Second
	drainShutdownTimeout = 2 * time.Minute
)

func serveCommand(ctx context.Context, e env, args []string) error {
	fs := newFlags(e, "serve")
	configPath := fs.String("config", defaultConfigPath, "configuration file")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := configs.Load(*configPath, e.getenv)
	if err != nil {
		return err
	}
	log, err := newLogger(cfg.Log, e.stderr)
	if err != nil {
		return err
	}
	return serve(ctx, cfg, log, e)
}

// newLogger builds deployd's logger from the log settings.
func newLogger(c configs.Log, w io.Writer) (zerolog.Logger, error) {
	level, err := zerolog.ParseLevel(c.Level)
	if err != nil || c.Level == "" {
		return zerolog.Nop(), fmt.Errorf("log.level %q: want debug, info, warn or error", c.Level)
	}
	if c.Format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339}
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger(), nil
}

// serve runs deployd until ctx ends, then shuts down in order: stop
// intake, drain deployments, close the store.
func serve(ctx context.Context, cfg *configs.Config, log zerolog.Logger, e env) error {
	if cfg.Fleet.Role == configs.FleetRoleAgent {
		return serveAgent(ctx, cfg, log, e)
	}
	store, err := openStore(ctx, cfg, log, e.getenv)
	if err != nil {
		return err
	}
	defer closeStore(store, log)
	app, chain, err := newCredentials(cfg, log)
	if err != nil {
		return err
	}
	out, err := newOutputs(ctx, cfg, store, app, chain, log)
	if err != nil {
		return err
	}
	defer out.close() // after the queue's drain: reports the ends of what it cut short
	services := cfg.ServiceList()
	images, err := newImageVerifier(cfg, app)
	if err != nil {
		return err
	}
	fl, err := startFleetHub(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer fl.close() // after the queue's drain: rollouts still wait for results
	queue, reconciler, err := newDeployments(cfg, services, store, chain, images, out, e.childEnv, fl, log)
	if err != nil {
		return err
	}
	releaser, intake, err := newReleaser(cfg, store, queue, out, log)
	if err != nil {
		return err
	}
	handler, err := newHandler(ctx, cfg, services, store, queue, intake, credentialHealth(app, chain), out, log)
	if err != nil {
		return err
	}
	recoverer, err := newRecoverer(cfg, app, store, out, log)
	if err != nil {
		return err
	}
	d := &daemon{listen: cfg.Listen, handler: handler, hub: out.hub, queue: queue, reconciler: reconciler,
		recoverer: recoverer, releaser: releaser, services: len(services), log: log}
	return d.run(ctx)
}

// openStore creates data_dir, warns when it is open to group or others,
// and opens the store in it, with the configured retention.
func openStore(ctx context.Context, cfg *configs.Config, log zerolog.Logger, getenv func(string) string) (*sqlite.Store, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data_dir: %w", err)
	}
	if mode, err := doctor.DataDirOpenMode(cfg.DataDir); err != nil {
		return nil, err
	} else if mode != 0 {
		log.Warn().Str("data_dir", cfg.DataDir).Str("mode", fmt.Sprintf("%04o", mode)).
			Msg("data_dir lets group or others in; deployd's files in it are 0600, but the directory should be private too: " + doctor.DataDirFix(cfg.DataDir))
	}
	retention, err := storeRetention(cfg, getenv)
	if err != nil {
		return nil, err
	}
	return sqlite.Open(ctx, storePath(cfg),
		sqlite.WithLogger(log.With().Str("component", "store").Logger()),
		sqlite.WithRetention(retention))
}

// storePath is the database file in data_dir.
func storePath(cfg *configs.Config) string { return filepath.Join(cfg.DataDir, "deployd.db") }

// outputs hear of deployments and deliveries: the metrics, the status
// page's event stream, with github.deployments GitHub's Deployments API
// (github is nil, doing nothing, when that is off) and the notifications
// (notify is nil when there are none).
type outputs struct {
	metrics *metrics.Metrics
	hub     *server.Hub
	github  *ghdeployments.Reporter
	notify  *notify.Notifier
	// releases hears of member deployments' ends (nil: no release sets).
	releases *deployer.Releaser
}

// newOutputs builds the outputs; the metrics start with the last
// successes in the store. app and chain may be nil.
func newOutputs(ctx context.Context, cfg *configs.Config, store *sqlite.Store, app *github.App, chain *registry.Chain, log zerolog.Logger) (*outputs, error) {
	mets, err := newMetrics(cfg, store, app, chain)
	if err != nil {
		return nil, err
	}
	if err := mets.SeedLastSuccess(ctx); err != nil {
		return nil, err
	}
	gh, err := newGitHubDeployments(cfg, app, log)
	if err != nil {
		return nil, err
	}
	notifier, err := newNotifier(cfg, store, mets, log)
	if err != nil {
		gh.Close(0) // nothing was reported yet
		return nil, err
	}
	hub := server.NewHub(server.HubConfig{Logger: log.With().Str("component", "events").Logger()})
	return &outputs{metrics: mets, hub: hub, github: gh, notify: notifier}, nil
}

// step hears of every pipeline step of a deployment.
func (o *outputs) step(d deployer.Deployment) {
	o.metrics.Step(d)
	o.hub.Publish(d)
}

// change hears of every change of a deployment's state in the queue.
func (o *outputs) change(d deployer.Deployment) {
	o.metrics.Deployment(d)
	o.hub.Publish(d)
	o.github.Notify(d)
	o.notify.Notify(d)
	o.releases.Observe(d)
}

// close waits, a bounded time, for GitHub and the notification receivers
// to hear the last reports.
func (o *outputs) close() {
	o.github.Close(ghdeployments.CloseTimeout)
	o.notify.Close(notify.CloseTimeout)
}

// newDeployments builds the machinery that carries deployments out: the
// pipeline on this host, the queue that runs it per service and the
// reconciler that catches up with the registries. images verifies the
// attestations of services that ask for it (nil when none does). childEnv is added to the
// environment of the commands the pipeline runs.
func newDeployments(cfg *configs.Config, services []deployer.Service, store *sqlite.Store, chain *registry.Chain, images deployer.ImageVerifier, out *outputs, childEnv []string, fl *fleetHub, log zerolog.Logger) (*deployer.Queue, *deployer.Reconciler, error) {
	pipeline, err := podman.NewPipeline(podman.PipelineConfig{
		Services:    servicesByName(services),
		Store:       store,
		Credentials: chain,
		Resolver:    podman.RegistryResolver{UserAgent: "deployd/" + version},
		Runner:      &podman.CommandRunner{Env: append(podman.ChildEnv(os.Environ()), childEnv...)},
		Podman: podman.Config{
			Command:    cfg.Podman.Command,
			GlobalArgs: cfg.Podman.GlobalArgs,
			AuthFile:   cfg.AuthFile(),
		},
		Logger: log,
		Notify: out.step,
		Images: images,
	})
	if err != nil {
		return nil, nil, err
	}
	var exec deployer.Executor = pipeline
	if fl != nil {
		if exec, err = fl.executor(cfg, services, store, chain, pipeline, log); err != nil {
			return nil, nil, err
		}
	}
	queue, err := deployer.NewQueue(deployer.QueueConfig{Store: store, Executor: exec, Logger: log, Notify: out.change})
	if err != nil {
		return nil, nil, err
	}
	reconciler, err := deployer.NewReconciler(deployer.ReconcilerConfig{
		Services: outsideReleaseSets(cfg, services), Resolver: pipeline, Store: store, Queue: queue,
		Interval: cfg.ReconcileInterval.Std(), Logger: log,
	})
	if err != nil {
		return nil, nil, err
	}
	return queue, reconciler, nil
}

// newRecoverer builds the recovery of missed deliveries from the App's
// delivery log, or returns nil when there is no App or
// github.delivery_recovery_interval is 0.
func newRecoverer(cfg *configs.Config, app *github.App, store *sqlite.Store, out *outputs, log zerolog.Logger) (*recovery.Recoverer, error) {
	if app == nil || cfg.GitHub.DeliveryRecoveryInterval <= 0 {
		return nil, nil
	}
	return recovery.New(recovery.Config{Log: app, Store: store, Interval: cfg.GitHub.DeliveryRecoveryInterval.Std(),
		Count: out.metrics.Redelivery, Logger: log})
}

// newHandler builds deployd's HTTP surface: the server, with the webhook
// handler mounted in it.
func newHandler(ctx context.Context, cfg *configs.Config, services []deployer.Service, store *sqlite.Store, queue *deployer.Queue, intake webhook.Recorder, creds server.Credentials, out *outputs, log zerolog.Logger) (http.Handler, error) {
	tokens, err := newAPITokens(ctx, cfg, store, log)
	if err != nil {
		return nil, err
	}
	matcher, err := webhook.NewMatcher(cfg)
	if err != nil {
		return nil, err
	}
	hook, err := webhook.NewHandler(webhook.HandlerConfig{
		Secret:   []byte(cfg.GitHub.WebhookSecret.Reveal()),
		Matcher:  matcher,
		Recorder: publishDeliveries(out.metrics.CountDeliveries(intake), out.hub),
		Logger:   log.With().Str("component", "webhook").Logger(),
	})
	if err != nil {
		return nil, err
	}
	return server.New(server.Config{
		Services: services,
		Webhook:  out.metrics.Webhook(hook),
		Reads: server.Reads{Store: store, WriteHealth: store, Events: out.hub, Credentials: creds,
			Metrics: out.metrics.Handler(), Releases: store},
		Queue:  queue,
		Auth:   server.Auth{Tokens: tokens, StatusPrivate: !cfg.StatusPublic(), PublicURL: cfg.PublicURL},
		Logger: log,
	})
}

// daemon is deployd wired: what serve runs.
type daemon struct {
	listen     string
	handler    http.Handler
	hub        *server.Hub // its event streams end when the HTTP server shuts down
	queue      *deployer.Queue
	reconciler *deployer.Reconciler
	recoverer  *recovery.Recoverer // nil: off
	releaser   *deployer.Releaser  // nil: no release sets
	services   int
	log        zerolog.Logger
}

// run listens, starts the deployments and the reconciler and serves until
// ctx ends or the listener fails; then it stops intake (in-flight requests
// finish and are recorded) and drains the deployments.
func (d *daemon) run(ctx context.Context) error {
	ln, err := net.Listen("tcp", d.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", d.listen, err)
	}
	if err := d.queue.Start(ctx); err != nil {
		ln.Close()
		return err
	}
	if err := d.releaser.Start(ctx); err != nil {
		ln.Close()
		drainQueue(ctx, d.queue, d.log)
		return err
	}
	defer d.releaser.Shutdown() // after the drain: members that end meanwhile are recorded
	stopReconciler := d.startReconciler(ctx)
	defer stopReconciler()
	httpSrv := server.HTTPServer(d.listen, d.handler, d.log)
	httpSrv.RegisterOnShutdown(d.hub.Close) // end event streams, or Shutdown waits for them
	serveErr := make(chan error, 1)
	go func() { serveErr <- httpSrv.Serve(ln) }()
	d.log.Info().Str("addr", ln.Addr().String()).Str("version", version).Int("services", d.services).Msg("listening")
	// Redeliveries arrive at the webhook: ask for them once it serves.
	stopRecoverer := d.startRecoverer(ctx)

	select {
	case err := <-serveErr:
		// The listener failed; still drain what runs.
		stopRecoverer()
		drainQueue(ctx, d.queue, d.log)
		return fmt.Errorf("serve http: %w", err)
	case <-ctx.Done():
	}
	stopRecoverer() // ask for no redelivery that intake would refuse
	d.log.Info().Msg("shutting down: no new requests")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), httpShutdownTimeout)
	defer cancel()
	if err := httpSrv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		d.log.Warn().Err(err).Msg("http shutdown")
	}
	d.log.Info().Msg("draining deployments")
	drainQueue(ctx, d.queue, d.log)
	d.log.Info().Msg("stopped")
	return nil
}

// startReconciler runs the reconciler until the returned function is
// called, which waits for it to stop.
func (d *daemon) startReconciler(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.reconciler.Run(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

// startRecoverer runs the recoverer, if any, until the returned function
// is called, which waits for it to stop.
func (d *daemon) startRecoverer(ctx context.Context) (stop func()) {
	if d.recoverer == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.recoverer.Run(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

// drainQueue waits for running deployments, at most drainShutdownTimeout;
// what is cut short resumes at the next start.
func drainQueue(ctx context.Context, queue *deployer.Queue, log zerolog.Logger) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), drainShutdownTimeout)
	defer cancel()
	if err := queue.Shutdown(dctx); err != nil {
		log.Warn().Err(err).Msg("deployments cut short by shutdown; they resume at the next start")
	}
}

// servicesByName indexes services by name.
func servicesByName(services []deployer.Service) map[string]deployer.Service {
	m := make(map[string]deployer.Service, len(services))
	for _, s := range services {
		m[s.Name] = s
	}
	return m
}
