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
	"sort"
	"time"

	"github.com/rs/zerolog"

	"github.com/deployd/deployd/configs"
	"github.com/deployd/deployd/deployer"
	"github.com/deployd/deployd/deployer/ghdeployments"
	"github.com/deployd/deployd/deployer/podman"
	"github.com/deployd/deployd/deployer/sqlite"
	"github.com/deployd/deployd/doctor"
	"github.com/deployd/deployd/server"
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
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data_dir: %w", err)
	}
	if mode, err := doctor.DataDirOpenMode(cfg.DataDir); err != nil {
		return err
	} else if mode != 0 {
		log.Warn().Str("data_dir", cfg.DataDir).Str("mode", fmt.Sprintf("%04o", mode)).
			Msg("data_dir lets group or others in; deployd's files in it are 0600, but the directory should be private too: " + doctor.DataDirFix(cfg.DataDir))
	}
	store, err := sqlite.Open(ctx, filepath.Join(cfg.DataDir, "deployd.db"),
		sqlite.WithLogger(log.With().Str("component", "store").Logger()))
	if err != nil {
		return err
	}
	defer func() {
		if err := store.Close(); err != nil {
			log.Error().Err(err).Msg("close store")
		}
	}()

	app, creds, err := newCredentials(cfg, log)
	if err != nil {
		return err
	}
	specs, err := serviceSpecs(cfg)
	if err != nil {
		return err
	}
	tokens, err := newAPITokens(cfg, log)
	if err != nil {
		return err
	}
	mets, err := newMetrics(cfg, store, app, creds)
	if err != nil {
		return err
	}
	if err := mets.SeedLastSuccess(ctx); err != nil {
		return err
	}
	// The status page's event stream hears of every deployment change.
	hub := server.NewHub(server.HubConfig{Logger: log.With().Str("component", "events").Logger()})
	// GitHub's Deployments API hears of deployments starting and ending
	// (github.deployments); nil, doing nothing, when off.
	ghDeploys, err := newGitHubDeployments(cfg, app, log)
	if err != nil {
		return err
	}
	defer ghDeploys.Close(ghdeployments.CloseTimeout) // after the queue's drain: reports its interrupted ends
	pipeline, err := podman.NewPipeline(podman.PipelineConfig{
		Services:    specs,
		Store:       store,
		Credentials: creds,
		Resolver:    podman.RegistryResolver{UserAgent: "deployd/" + version},
		Runner:      &podman.CommandRunner{Env: podman.ChildEnv(os.Environ())},
		Podman: podman.Config{
			Command:    cfg.Podman.Command,
			GlobalArgs: cfg.Podman.GlobalArgs,
			AuthFile:   cfg.AuthFile(),
		},
		Logger: log,
		Notify: notifyAll(mets.Step, hub.Publish),
	})
	if err != nil {
		return err
	}
	queue, err := deployer.NewQueue(deployer.QueueConfig{Store: store, Executor: pipeline, Logger: log, Notify: notifyAll(mets.Deployment, hub.Publish, ghDeploys.Notify)})
	if err != nil {
		return err
	}
	matcher, err := webhook.NewMatcher(cfg)
	if err != nil {
		return err
	}
	hook, err := webhook.NewHandler(webhook.HandlerConfig{
		Secret:   []byte(cfg.GitHub.WebhookSecret.Reveal()),
		Matcher:  matcher,
		Recorder: publishDeliveries(mets.CountDeliveries(queue), hub),
		Logger:   log.With().Str("component", "webhook").Logger(),
	})
	if err != nil {
		return err
	}
	srv, err := server.New(server.Config{
		Webhook:  mets.Webhook(hook),
		Store:    store,
		Writes:   store,
		Drainer:  queue,
		Services: serverServices(cfg),
		Logger:   log,
		// The write API, its tokens and /metrics.
		Tokens:        tokens,
		Queue:         queue,
		StatusPrivate: !cfg.StatusPublic(),
		PublicURL:     cfg.PublicURL,
		Metrics:       mets.Handler(),
		// The status page and its event stream.
		Events:      hub,
		Credentials: credentialHealth(app, creds),
	})
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	if err := queue.Start(ctx); err != nil {
		ln.Close()
		return err
	}
	reconciler, err := deployer.NewReconciler(deployer.ReconcilerConfig{
		Services: sortedSpecs(specs), Resolver: pipeline, Store: store, Queue: queue,
		Interval: cfg.ReconcileInterval.Std(), Logger: log,
	})
	if err != nil {
		ln.Close()
		drainQueue(ctx, queue, log)
		return err
	}
	reconcileCtx, stopReconcile := context.WithCancel(ctx)
	reconcileDone := make(chan struct{})
	go func() {
		defer close(reconcileDone)
		reconciler.Run(reconcileCtx)
	}()
	defer func() {
		stopReconcile()
		<-reconcileDone
	}()
	httpSrv := server.HTTPServer(cfg.Listen, srv, log)
	httpSrv.RegisterOnShutdown(hub.Close) // end event streams, or Shutdown waits for them
	serveErr := make(chan error, 1)
	go func() { serveErr <- httpSrv.Serve(ln) }()
	log.Info().Str("addr", ln.Addr().String()).Str("version", version).Int("services", len(specs)).Msg("listening")

	select {
	case err := <-serveErr:
		// The listener failed; still drain what runs.
		drainQueue(ctx, queue, log)
		return fmt.Errorf("serve http: %w", err)
	case <-ctx.Done():
	}
	// Shut down in order: stop intake (in-flight requests finish and are
	// recorded), then drain deployments, then (deferred) close the store.
	log.Info().Msg("shutting down: no new requests")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), httpShutdownTimeout)
	defer cancel()
	if err := httpSrv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Warn().Err(err).Msg("http shutdown")
	}
	log.Info().Msg("draining deployments")
	drainQueue(ctx, queue, log)
	log.Info().Msg("stopped")
	return nil
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

// serviceSpecs turns the configured services into the pipeline's specs.
func serviceSpecs(cfg *configs.Config) (map[string]deployer.ServiceSpec, error) {
	specs := make(map[string]deployer.ServiceSpec, len(cfg.Services))
	for name, s := range cfg.Services {
		img, err := configs.ParseImage(s.Image)
		if err != nil {
			return nil, fmt.Errorf("service %s: %w", name, err)
		}
		reg := cfg.Registries[img.Host]
		spec := deployer.ServiceSpec{
			Name:       name,
			Host:       img.Host,
			Image:      img.String(),
			Repository: s.Repository,
			Insecure:   reg != nil && reg.Insecure,
			Strategy:   s.Strategy,
			Container:  deployer.ContainerSpec{Name: s.Container.Name, Args: s.Container.Args, Command: s.Container.Command},
			Systemd:    deployer.SystemdSpec{Unit: s.Systemd.Unit, User: s.Systemd.User},
			Command:    s.Command,
			Health:     deployer.HealthSpec{URL: s.Health.URL, Timeout: s.Health.Timeout.Std(), Interval: s.Health.Interval.Std()},
			Rollback:   s.RollbackEnabled(),
			KeepImages: s.KeepImages,
			DryRun:     s.DryRun,
		}
		spec.DefaultTag = s.DefaultTag()
		specs[name] = spec
	}
	return specs, nil
}

// sortedSpecs lists the specs in name order.
func sortedSpecs(specs map[string]deployer.ServiceSpec) []deployer.ServiceSpec {
	out := make([]deployer.ServiceSpec, 0, len(specs))
	for _, s := range specs {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// serverServices lists the services for the API, sorted by name.
func serverServices(cfg *configs.Config) []server.Service {
	out := make([]server.Service, 0, len(cfg.Services))
	for name, s := range cfg.Services {
		out = append(out, server.Service{Name: name, Image: s.Image, Strategy: s.Strategy, Tags: s.Tags, DefaultTag: s.DefaultTag()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
