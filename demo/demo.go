// Package demo is `deployd demo`: on a machine with podman and Debian's
// docker-registry it shows deployd at work in about a minute. It starts a
// local registry, builds a tiny web server image and pushes it twice,
// starts deployd against them with a generated configuration, and drives
// it as GitHub and an operator would: a signed registry_package webhook for
// each push (a deploy, then an upgrade) and a rollback through the API with
// a token it issues itself. Everything it creates lives under one temporary
// directory (the registry's storage, podman's storage, deployd's data) and
// is removed when it stops: the containers, the images, the registry
// process and the directory.
//
// Podman runs with its own storage (--root, --runroot, --tmpdir), so the
// demo never sees or touches the machine's other images and containers.
// On machines where podman's defaults cannot run a container (crun failing
// to set rlimits, as in some virtual machines), the demo notices it with a
// probe container and switches to runc and a containers.conf without
// default ulimits, for its own podman only.
package demo

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/deployd/deployd/auth/apitoken"
)

// Service is the name of the demo service in the generated configuration.
const Service = "demo"

// ServeFunc runs `deployd serve --config configPath` until ctx is done,
// writing deployd's log to logs. childEnv holds KEY=VALUE variables to add
// to the environment of the commands deployd runs (podman).
type ServeFunc func(ctx context.Context, configPath string, logs io.Writer, childEnv []string) error

// Options configure [Run].
type Options struct {
	// Serve runs deployd; required.
	Serve ServeFunc
	// Out receives the demo's progress, the status page URL among it.
	Out io.Writer
	// Listen is deployd's address; with port 0 a free port is chosen.
	Listen string
	// PodmanArgs, when not nil, are global podman options used instead of
	// detecting what this machine needs (such as --runtime runc).
	PodmanArgs []string
	// ExitAfterDemo ends the demo, and removes what it made, as soon as
	// the rollback is done, instead of waiting for ctx to be done.
	ExitAfterDemo bool
	// Podman, Registry and Go are the podman, docker-registry and go
	// commands; found on PATH (or at Debian's paths) when empty.
	Podman, Registry, Go string
}

// demo is one run: the paths and processes to remove at the end.
type demo struct {
	opts     Options
	out      io.Writer
	dir      string
	podman   *podmanCmd
	registry *registryProc
	client   *http.Client
	base     string // deployd's URL
	secret   []byte
	appPort  int
	image    string // HOST/PATH of the demo image, without tag
	logPath  string
	delivery int
}

// Run runs the demo until ctx is done (or, with ExitAfterDemo, until the
// rollback is done) and removes everything it created before returning.
// It returns an error when a tool is missing, a step fails, or a
// deployment does not end as the demo expects; the error then carries the
// last lines of deployd's log.
func Run(ctx context.Context, opts Options) (err error) {
	if opts.Serve == nil {
		return errors.New("demo: no serve function")
	}
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	if opts.Listen == "" {
		opts.Listen = "127.0.0.1:8080"
	}
	tools, err := findTools(opts)
	if err != nil {
		return err
	}
	// Not under a long TMPDIR: conmon's sockets live under podman's run
	// root, and Unix socket paths are limited to 108 bytes.
	base := os.TempDir()
	if len(base) > 20 {
		base = "/tmp"
	}
	dir, err := os.MkdirTemp(base, "deployd-demo")
	if err != nil {
		return fmt.Errorf("demo: make working directory: %w", err)
	}
	d := &demo{opts: opts, out: opts.Out, dir: dir, client: &http.Client{Timeout: 2 * time.Minute},
		logPath: filepath.Join(dir, "deployd.log")}
	fmt.Fprintf(d.out, "Working directory %s (removed when the demo stops)\n", dir)
	defer func() {
		if cerr := d.cleanup(); cerr != nil {
			err = errors.Join(err, cerr)
		} else {
			fmt.Fprintln(d.out, "Removed the demo's containers, images, registry and files.")
		}
	}()
	d.podman, err = newPodman(tools.podman, dir)
	if err != nil {
		return err
	}
	if err := d.run(ctx, tools); err != nil {
		if ctx.Err() != nil {
			// Stopped (Ctrl-C) half way: not a failure of the demo.
			fmt.Fprintln(d.out, "Stopped before the demo was complete.")
			return nil
		}
		return err
	}
	return nil
}

func (d *demo) run(ctx context.Context, tools tools) error {
	fmt.Fprintln(d.out, "Building the demo app...")
	tarPath, err := buildApp(ctx, tools.goCmd, d.dir)
	if err != nil {
		return err
	}
	fmt.Fprintln(d.out, "Starting a local registry...")
	if d.registry, err = startRegistry(ctx, tools.registry, d.dir); err != nil {
		return err
	}
	d.image = d.registry.host + "/deployd/demo"

	if err := d.podman.configure(ctx, d.opts.PodmanArgs, tarPath, tools.runc, d.out); err != nil {
		return err
	}
	if err := d.writeConfig(); err != nil {
		return err
	}

	serveCtx, stopServe := context.WithCancel(context.WithoutCancel(ctx))
	served := make(chan error, 1)
	logs, err := os.OpenFile(d.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		stopServe()
		return fmt.Errorf("demo: open deployd's log: %w", err)
	}
	go func() {
		served <- d.opts.Serve(serveCtx, filepath.Join(d.dir, "deployd.yaml"), logs, d.podman.env)
	}()
	defer func() {
		stopServe()
		<-served
		logs.Close()
	}()
	if err := d.waitReady(ctx, served); err != nil {
		return d.withLog(err)
	}
	fmt.Fprintf(d.out, "deployd is running: status page %s/\n", d.base)

	steps := []struct {
		what, version, want string
	}{
		{"deploy", "v1", "succeeded"},
		{"upgrade", "v2", "succeeded"},
	}
	for _, st := range steps {
		digest, err := d.podman.push(ctx, tarPath, d.image+":latest", st.version, d.dir)
		if err != nil {
			return err
		}
		fmt.Fprintf(d.out, "Pushed %s:latest (%s) as %s; sending a signed registry_package webhook\n", d.image, st.version, shortDigest(digest))
		id, err := d.sendWebhook(ctx, digest)
		if err != nil {
			return d.withLog(err)
		}
		if err := d.expect(ctx, id, st.what, st.want, st.version); err != nil {
			return d.withLog(err)
		}
	}
	fmt.Fprintln(d.out, "Rolling back through the API with a token the demo issued...")
	id, err := d.rollback(ctx)
	if err != nil {
		return d.withLog(err)
	}
	if err := d.expect(ctx, id, "rollback", "succeeded", "v1"); err != nil {
		return d.withLog(err)
	}
	fmt.Fprintf(d.out, "Demo complete: a deploy, an upgrade and a rollback. Status page: %s/\n", d.base)
	if d.opts.ExitAfterDemo {
		return nil
	}
	fmt.Fprintln(d.out, "Press Ctrl-C to stop the demo and remove everything it created.")
	select {
	case <-ctx.Done():
		return nil
	case err := <-served:
		served <- err // for the deferred wait
		return d.withLog(fmt.Errorf("demo: deployd stopped: %w", err))
	}
}

// writeConfig writes the webhook secret, the API token key and deployd's
// configuration into the working directory.
func (d *demo) writeConfig() error {
	listen, err := listenAddr(d.opts.Listen)
	if err != nil {
		return err
	}
	d.base = "http://" + listen
	if d.appPort, err = freePort(); err != nil {
		return err
	}
	d.secret = []byte(rand.Text())
	if err := os.WriteFile(filepath.Join(d.dir, "webhook-secret"), d.secret, 0o600); err != nil {
		return fmt.Errorf("demo: write webhook secret: %w", err)
	}
	key, err := apitoken.GenerateKey()
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	if err := os.WriteFile(filepath.Join(d.dir, "api-key"), key, 0o600); err != nil {
		return fmt.Errorf("demo: write API token key: %w", err)
	}
	data := filepath.Join(d.dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	var global []string
	for _, a := range d.podman.global {
		global = append(global, strconv.Quote(a))
	}
	q := strconv.Quote
	config := fmt.Sprintf(`# Written by deployd demo; removed when it stops.
listen: %s
public_url: %s
data_dir: %s
log: {level: info, format: console}
reconcile_interval: 0
github:
  webhook_secret_file: %s
registries:
  %s:
    credentials: [none]
    insecure: true
    github_packages: true
podman:
  command: %s
  global_args: [%s]
api:
  token_key_file: %s
services:
  %s:
    image: %s
    repository: deployd/demo
    tags: ["latest"]
    container:
      name: deployd-demo
      args: ["--network", "host", "-e", "PORT=%d"]
    health: {url: "http://127.0.0.1:%d/healthz", timeout: 30s, interval: 250ms}
    keep_images: 3
`, q(listen), q(d.base), q(data), q(filepath.Join(d.dir, "webhook-secret")), d.registry.host,
		q(d.podman.bin), strings.Join(global, ", "), q(filepath.Join(d.dir, "api-key")),
		Service, d.image, d.appPort, d.appPort)
	if err := os.WriteFile(filepath.Join(d.dir, "deployd.yaml"), []byte(config), 0o600); err != nil {
		return fmt.Errorf("demo: write deployd's configuration: %w", err)
	}
	return nil
}

// waitReady waits until deployd answers /readyz.
func (d *demo) waitReady(ctx context.Context, served chan error) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.base+"/readyz", nil)
		if err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		resp, err := d.client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case err := <-served:
			served <- err
			return fmt.Errorf("demo: deployd stopped before it was ready: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("demo: deployd not ready on %s after 30s", d.base)
		}
	}
}

// sendWebhook posts a registry_package delivery for the demo image's
// latest tag at digest, signed as GitHub signs it, and returns the
// deployment it queued.
func (d *demo) sendWebhook(ctx context.Context, digest string) (int64, error) {
	d.delivery++
	body, err := json.Marshal(map[string]any{
		"action": "published",
		"registry_package": map[string]any{
			"name": "demo", "namespace": "deployd", "ecosystem": "CONTAINER", "package_type": "CONTAINER",
			"owner": map[string]any{"login": "deployd"},
			"package_version": map[string]any{
				"version":            digest,
				"container_metadata": map[string]any{"tag": map[string]any{"name": "latest", "digest": digest}},
			},
		},
		"repository": map[string]any{"full_name": "deployd/demo"},
	})
	if err != nil {
		return 0, fmt.Errorf("demo: webhook body: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.base+"/webhooks/github", bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("demo: %w", err)
	}
	mac := hmac.New(sha256.New, d.secret)
	mac.Write(body)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", "registry_package")
	req.Header.Set("X-GitHub-Delivery", fmt.Sprintf("deployd-demo-%s-%d", filepath.Base(d.dir), d.delivery))
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	var answer struct {
		Deployments []int64 `json:"deployments"`
	}
	if err := d.do(req, http.StatusAccepted, &answer); err != nil {
		return 0, fmt.Errorf("demo: webhook: %w", err)
	}
	if len(answer.Deployments) != 1 {
		return 0, fmt.Errorf("demo: webhook queued %d deployments, want 1", len(answer.Deployments))
	}
	return answer.Deployments[0], nil
}

// rollback asks deployd's API to roll the demo service back and returns
// the deployment it queued.
func (d *demo) rollback(ctx context.Context) (int64, error) {
	key, _, err := apitoken.LoadKey(filepath.Join(d.dir, "api-key"))
	if err != nil {
		return 0, fmt.Errorf("demo: %w", err)
	}
	token, err := key.Issue("deployd-demo", []string{"deploy:" + Service}, time.Hour)
	if err != nil {
		return 0, fmt.Errorf("demo: issue API token: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.base+"/api/v1/services/"+Service+"/rollback", nil)
	if err != nil {
		return 0, fmt.Errorf("demo: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	var answer struct {
		ID int64 `json:"id"`
	}
	if err := d.do(req, http.StatusAccepted, &answer); err != nil {
		return 0, fmt.Errorf("demo: rollback: %w", err)
	}
	return answer.ID, nil
}

// deployment is the part of the API's deployment that the demo reads.
type deployment struct {
	ID         int64  `json:"id"`
	State      string `json:"state"`
	Digest     string `json:"digest"`
	Error      string `json:"error"`
	ErrorClass string `json:"error_class"`
}

// expect waits for deployment id to end, checks it ended in state want and
// that the app answers version.
func (d *demo) expect(ctx context.Context, id int64, what, want, version string) error {
	start := time.Now()
	var dep deployment
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/api/v1/deployments/%d", d.base, id), nil)
		if err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		if err := d.do(req, http.StatusOK, &dep); err != nil {
			return fmt.Errorf("demo: %s: %w", what, err)
		}
		if dep.State != "queued" && dep.State != "running" {
			break
		}
		if time.Since(start) > 2*time.Minute {
			return fmt.Errorf("demo: %s: deployment %d still %s after 2 minutes", what, id, dep.State)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	if dep.State != want {
		return fmt.Errorf("demo: %s: deployment %d ended %s (%s: %s), want %s", what, id, dep.State, dep.ErrorClass, dep.Error, want)
	}
	got, err := d.appVersion(ctx)
	if err != nil {
		return fmt.Errorf("demo: %s: %w", what, err)
	}
	if got != version {
		return fmt.Errorf("demo: %s: the app answers version %q, want %q", what, got, version)
	}
	fmt.Fprintf(d.out, "  %s: deployment %d %s in %s, the app on http://127.0.0.1:%d/ answers %s\n",
		what, id, dep.State, time.Since(start).Round(100*time.Millisecond), d.appPort, got)
	return nil
}

// appVersion asks the running demo app for its version.
func (d *demo) appVersion(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/version", d.appPort), nil)
	if err != nil {
		return "", err
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return "", fmt.Errorf("ask the app its version: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if err != nil {
		return "", fmt.Errorf("ask the app its version: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// do sends req and decodes the JSON answer into v unless the status is
// not want.
func (d *demo) do(req *http.Request, want int, v any) error {
	resp, err := d.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", req.Method, req.URL.Path, err)
	}
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: %s: %s", req.Method, req.URL.Path, resp.Status, bytes.TrimSpace(b))
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", req.Method, req.URL.Path, err)
	}
	return nil
}

// withLog adds the last lines of deployd's log to err.
func (d *demo) withLog(err error) error {
	b, rerr := os.ReadFile(d.logPath)
	if rerr != nil || len(b) == 0 {
		return err
	}
	const max = 4000
	if len(b) > max {
		b = b[len(b)-max:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return fmt.Errorf("%w\nlast lines of deployd's log:\n%s", err, bytes.TrimSpace(b))
}

// cleanup removes the containers, images, registry and working directory.
func (d *demo) cleanup() error {
	var errs []error
	if d.podman != nil {
		errs = append(errs, d.podman.removeAll())
	}
	if d.registry != nil {
		d.registry.stop()
	}
	errs = append(errs, removeDir(d.dir))
	return errors.Join(errs...)
}

// listenAddr returns addr, with a free port when its port is 0.
func listenAddr(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("demo: listen address %q: %w", addr, err)
	}
	if port != "0" {
		return addr, nil
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", fmt.Errorf("demo: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	addr, err := listenAddr("127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	_, port, _ := net.SplitHostPort(addr)
	return strconv.Atoi(port)
}

func shortDigest(d string) string {
	if len(d) > len("sha256:")+12 {
		return d[:len("sha256:")+12]
	}
	return d
}
