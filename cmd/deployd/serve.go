package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"

	"github.com/deployd/deployd/configs"
	"github.com/deployd/deployd/deployer"
	"github.com/deployd/deployd/deployer/sqlite"
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
	if mode, err := dataDirOpenMode(cfg.DataDir); err != nil {
		return err
	} else if mode != 0 {
		log.Warn().Str("data_dir", cfg.DataDir).Str("mode", fmt.Sprintf("%04o", mode)).
			Msg("data_dir lets group or others in; deployd's files in it are 0600, but the directory should be private too: " + dataDirFix(cfg.DataDir))
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
	services := cfg.ServiceList()
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
	defer ghDeploys.Close(ghDeploymentsCloseTimeout) // after the queue's drain: reports its interrupted ends
	pipeline, err := deployer.NewPipeline(deployer.PipelineConfig{
		Services:    servicesByName(services),
		Store:       store,
		Credentials: chainCredentials{creds},
		Resolver:    deployer.RegistryResolver{UserAgent: "deployd/" + version},
		Runner:      &deployer.CommandRunner{Env: deployer.ChildEnv(os.Environ())},
		Podman: deployer.PodmanConfig{
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
		Services: services,
		Logger:   log,
		// The write API, its tokens and /metrics.
		Tokens:        tokens,
		Queue:         queue,
		StatusPrivate: !cfg.StatusPublic(),
		PublicURL:     cfg.PublicURL,
		Metrics:       mets.Handler(),
		// The status page and its event stream.
		Events:      hub,
		Credentials: newCredentialReport(app, creds),
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
		Services: services, Resolver: pipeline, Store: store, Queue: queue,
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
	log.Info().Str("addr", ln.Addr().String()).Str("version", version).Int("services", len(services)).Msg("listening")

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

// dataDirOpenMode returns the permission bits of data_dir when they let
// group or others in, 0 when they do not or dir does not exist yet.
func dataDirOpenMode(dir string) (fs.FileMode, error) {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("check data_dir: %w", err)
	}
	if fi.Mode().Perm()&0o077 == 0 {
		return 0, nil
	}
	return fi.Mode().Perm(), nil
}

// dataDirFix says how to make data_dir private.
func dataDirFix(dir string) string {
	return "chmod 700 " + dir + " (under systemd: StateDirectoryMode=0700)"
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
