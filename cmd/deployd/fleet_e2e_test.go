package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/deployd/deployd/deployer/podmantest"
	"github.com/deployd/deployd/fleet"
	"github.com/deployd/deployd/internal/testlog"
)

// fleetStack is a hub with an embedded JetStream server and its agents,
// each a deployd process of its own with its own data directory, podman
// storage, container and port, all on loopback; the registry and the fake
// GitHub are newStack's.
type fleetStack struct {
	*stack
	t        *testing.T
	bin      string
	natsPort int
	hubDir   string
	hubConf  string
	hub      *process
	agents   map[string]*agentProc
}

// agentProc is one agent: its configuration and, while it runs, its
// process.
type agentProc struct {
	name   string
	podman *podmantest.Podman
	port   int
	config string
	creds  string
	env    []string
	proc   *process
}

// fleetOptions shape a fleetStack.
type fleetOptions struct {
	// policy is backend's rollout policy.
	policy string
	// runArgs[host] are more podman run arguments on host.
	runArgs map[string]string
	// resultTimeout is the hub's fleet.result_timeout; default 2m.
	resultTimeout string
	// external runs a nats-server process (built from the module) that
	// the hub and agents use instead of the hub's embedded server.
	external bool
}

// natsModes runs fn once with the hub's embedded JetStream server and
// once with an external nats-server process.
func natsModes(t *testing.T, fn func(t *testing.T, external bool)) {
	for _, mode := range []string{"embedded", "external"} {
		t.Run(mode, func(t *testing.T) { fn(t, mode == "external") })
	}
}

// newFleetStack writes the hub's configuration for backend on hosts,
// adds each host with deployd fleet add-host, writes each agent's
// configuration and starts the hub.
func newFleetStack(t *testing.T, opts fleetOptions, hosts ...string) *fleetStack {
	t.Helper()
	if opts.resultTimeout == "" {
		opts.resultTimeout = "2m"
	}
	s := newStack(t, stackOptions{})
	f := &fleetStack{stack: s, t: t, bin: buildDeployd(t), natsPort: podmantest.FreePort(t), hubDir: t.TempDir(),
		agents: map[string]*agentProc{}}
	dir := filepath.Dir(s.config)
	hubConf := func(nats string) string {
		return fmt.Sprintf(`
listen: 127.0.0.1:0
data_dir: %q
log: {level: debug, format: json}
reconcile_interval: 0
github:
  api_url: %s
  webhook_secret_file: %q
  app: {id: 4242, private_key_file: %q}
registries:
  %s: {credentials: [github_app], insecure: true, github_packages: true}
fleet:
  role: hub
  nats: %s
  result_timeout: %s
services:
  backend:
    image: %s
    repository: Acme-Corp/v7
    tags: ["latest"]
    hosts: [%s]
    rollout: %s
`, f.hubDir, s.github.URL, filepath.Join(dir, "webhook-secret"), filepath.Join(dir, "app.pem"), s.reg.Host(),
			nats, opts.resultTimeout, s.image, strings.Join(hosts, ", "), opts.policy)
	}
	f.hubConf = writeFile(t, dir, "hub.yaml", hubConf(fmt.Sprintf(`{listen: "127.0.0.1:%d"}`, f.natsPort)), 0o600)
	for _, h := range hosts {
		a := &agentProc{name: h, podman: podmantest.New(t), port: podmantest.FreePort(t)}
		adir := t.TempDir()
		creds := filepath.Join(adir, "fleet.creds")
		var out bytes.Buffer
		if err := run(context.Background(), []string{"fleet", "add-host", h, "--out", creds, "--config", f.hubConf},
			func(string) string { return "" }, &out, io.Discard); err != nil {
			t.Fatalf("fleet add-host %s: %v", h, err)
		}
		globalArgs := ""
		for _, arg := range a.podman.GlobalArgs() {
			globalArgs += fmt.Sprintf("%q, ", arg)
		}
		a.config = writeFile(t, adir, "agent.yaml", fmt.Sprintf(`
data_dir: %q
log: {level: debug, format: json}
reconcile_interval: 0
registries:
  %s: {insecure: true}
podman:
  command: %q
  global_args: [%s]
fleet:
  role: agent
  host: %s
  nats: {url: "nats://127.0.0.1:%d"}
  credentials_file: %q
services:
  backend:
    image: %s
    repository: Acme-Corp/v7
    tags: ["latest"]
    container:
      name: fleet-%s
      args: ["--network", "host", "-e", "PORT=%d"%s]
    health: {url: "http://127.0.0.1:%d/healthz", timeout: 15s, interval: 200ms}
`, filepath.Join(adir, "data"), s.reg.Host(), a.podman.Binary(), globalArgs, h, f.natsPort, creds,
			s.image, h, a.port, opts.runArgs[h], a.port), 0o600)
		a.env = append(os.Environ(), a.podman.Env()...)
		a.creds = creds
		f.agents[h] = a
	}
	if opts.external {
		f.startNATSServer(hosts)
		writeFile(t, dir, "hub.yaml", hubConf(fmt.Sprintf(`{url: "nats://127.0.0.1:%d"}`, f.natsPort)), 0o600)
	}
	f.hub = startProcess(t, f.bin, f.hubConf)
	return f
}

// startNATSServer builds nats-server from the module and runs it on the
// stack's NATS port with JetStream and the hub's and hosts' NKeys, each
// host with fleet.AgentPermissions, as an operator would configure it.
func (f *fleetStack) startNATSServer(hosts []string) {
	f.t.Helper()
	dir := f.t.TempDir()
	bin := filepath.Join(dir, "nats-server")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/nats-io/nats-server/v2").CombinedOutput(); err != nil {
		f.t.Fatalf("build nats-server: %v\n%s", err, out)
	}
	fleetDir := filepath.Join(f.hubDir, "fleet")
	keys, err := fleet.LoadHubKeys(fleetDir)
	if err != nil {
		f.t.Fatal(err)
	}
	hostKeys, err := fleet.Hosts(fleetDir)
	if err != nil {
		f.t.Fatal(err)
	}
	hubPub, _ := keys.NKey.PublicKey()
	users := fmt.Sprintf("    {nkey: %s}\n", hubPub)
	quote := func(subjects []string) string {
		q := make([]string, len(subjects))
		for i, s := range subjects {
			q[i] = fmt.Sprintf("%q", s)
		}
		return strings.Join(q, ", ")
	}
	for _, h := range hosts {
		pub, sub := fleet.AgentPermissions(h)
		users += fmt.Sprintf("    {nkey: %s, permissions: {publish: {allow: [%s]}, subscribe: {allow: [%s]}}}\n",
			hostKeys[h].UserKey, quote(pub), quote(sub))
	}
	conf := writeFile(f.t, dir, "nats.conf", fmt.Sprintf("listen: \"127.0.0.1:%d\"\njetstream {store_dir: %q}\nauthorization {\n  users: [\n%s  ]\n}\n",
		f.natsPort, filepath.Join(dir, "store"), users), 0o600)
	p := &process{logs: &testlog.Buffer{}}
	p.cmd = exec.Command(bin, "-c", conf)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(p.kill)
	waitFor(f.t, "nats-server to accept connections", func() bool { return strings.Contains(p.logs.String(), "Server is ready") })
}

// start starts host's agent process and waits until it runs.
func (f *fleetStack) start(host string) {
	f.t.Helper()
	a := f.agents[host]
	p := &process{logs: &testlog.Buffer{}}
	p.cmd = exec.Command(f.bin, "serve", "--config", a.config)
	p.cmd.Env = a.env
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(p.kill)
	a.proc = p
	waitFor(f.t, host+" to run", func() bool { return strings.Contains(p.logs.String(), "fleet agent running") })
}

// pushToAll starts every agent, pushes v1 and sends the hub its package
// delivery (id deliveryID); it returns the hub, v1's digest and the
// rollout's deployment once it ended.
func (f *fleetStack) pushToAll(deliveryID string) (*instance, string, deploymentJSON) {
	f.t.Helper()
	for _, h := range slices.Sorted(maps.Keys(f.agents)) {
		f.start(h)
	}
	hub := &instance{t: f.t, addr: f.hub.addr}
	v1 := f.push("latest", "v1")
	ids := hub.queue(delivery{event: "registry_package", id: deliveryID, body: f.packageEvent("latest", v1)})
	return hub, v1, waitDeployment(f.t, hub, ids[0])
}

// version returns what host's service answers on /version.
func (f *fleetStack) version(host string) string {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/version", f.agents[host].port))
	if err != nil {
		return "unreachable"
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b))
}

// hostDeployment is a host's deployment as the hub's API shows it.
type hostDeployment struct {
	deploymentJSON
	Host      string `json:"host"`
	RolloutID int64  `json:"rollout_id"`
}

// hostDeployments returns the hub's host deployments, newest first.
func (f *fleetStack) hostDeployments(i *instance) []hostDeployment {
	var r struct {
		Deployments []hostDeployment `json:"deployments"`
	}
	i.getJSON("/api/v1/deployments?service=backend&limit=100", http.StatusOK, &r)
	var out []hostDeployment
	for _, d := range r.Deployments {
		if d.Host != "" {
			out = append(out, d)
		}
	}
	return out
}

// streams returns every message of the fleet's streams, read with the
// hub's own NATS key.
func (f *fleetStack) streams() []byte {
	f.t.Helper()
	keys, err := fleet.LoadHubKeys(filepath.Join(f.hubDir, "fleet"))
	if err != nil {
		f.t.Fatal(err)
	}
	pub, _ := keys.NKey.PublicKey()
	nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", f.natsPort), nats.Nkey(pub, keys.NKey.Sign))
	if err != nil {
		f.t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var all bytes.Buffer
	for _, name := range []string{fleet.IntentStream, fleet.ReportStream} {
		stream, err := js.Stream(ctx, name)
		if err != nil {
			f.t.Fatal(err)
		}
		info, err := stream.Info(ctx)
		if err != nil {
			f.t.Fatal(err)
		}
		for seq := info.State.FirstSeq; seq > 0 && seq <= info.State.LastSeq; seq++ {
			m, err := stream.GetMsg(ctx, seq)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				continue
			}
			if err != nil {
				f.t.Fatal(err)
			}
			all.Write(m.Data)
		}
	}
	return all.Bytes()
}

// assertNoToken checks that no installation token the fake GitHub minted
// is in the streams, in any process's log or in the argv of the podman
// processes (read from the agents' podman event logs is not needed: the
// pipeline passes secrets on stdin, and the single-host tests check argv).
func (f *fleetStack) assertNoToken() {
	f.t.Helper()
	mints := f.github.Mints()
	if len(mints) == 0 {
		f.t.Fatal("the hub minted no installation token")
	}
	raw := f.streams()
	logs := f.hub.logs.String()
	for _, a := range f.agents {
		if a.proc != nil {
			logs += a.proc.logs.String()
		}
	}
	for _, m := range mints {
		if bytes.Contains(raw, []byte(m.Token)) {
			f.t.Error("an installation token is in the fleet's streams in clear text")
		}
		if strings.Contains(logs, m.Token) {
			f.t.Error("an installation token is in a log")
		}
	}
}

// One webhook to the hub: all three agents, each its own process with
// its own podman, run the new digest; the token minted for the pull never
// appears in the streams or logs.
func TestEndToEndFleetAllAtOnce(t *testing.T) {
	natsModes(t, func(t *testing.T, external bool) {
		f := newFleetStack(t, fleetOptions{policy: "all-at-once", external: external}, "web-1", "web-2", "web-3")
		hub, v1, dep := f.pushToAll("fleet-1")
		if dep.State != "succeeded" || dep.Digest != v1 {
			t.Fatalf("rollout: %s %s (%s); steps %+v\nhub logs:\n%s", dep.State, dep.Error, dep.ErrorClass, dep.Steps, f.hub.logs.String())
		}
		for _, h := range []string{"web-1", "web-2", "web-3"} {
			if got := f.version(h); got != "v1" {
				t.Errorf("%s answers %q, want v1", h, got)
			}
			if out, err := f.agents[h].podman.Run(context.Background(), "container", "inspect", "--format", "{{.ImageDigest}}", "fleet-"+h); err != nil || out != v1 {
				t.Errorf("podman on %s: container runs %q (%v), want %s", h, out, err, v1)
			}
		}
		hds := f.hostDeployments(hub)
		if len(hds) != 3 {
			t.Fatalf("hub shows %d host deployments, want 3", len(hds))
		}
		for _, hd := range hds {
			hub.getJSON(fmt.Sprintf("/api/v1/deployments/%d", hd.ID), http.StatusOK, &hd)
			var steps []string
			for _, s := range hd.Steps {
				steps = append(steps, s.Name)
			}
			if hd.State != "succeeded" || hd.RolloutID == 0 || !strings.Contains(strings.Join(steps, ","), "pull,switch,verify") {
				t.Errorf("%s: %s in rollout %d, steps %v", hd.Host, hd.State, hd.RolloutID, steps)
			}
		}
		f.assertNoToken()
	})
}

// One by one, with an image that fails health on the second host: the
// first keeps it, the second fails, the third never hears of it, and the
// rollout fails naming them.
func TestEndToEndFleetOneByOneStopsAtTheFailingHost(t *testing.T) {
	natsModes(t, func(t *testing.T, external bool) {
		f := newFleetStack(t, fleetOptions{policy: "one-by-one", runArgs: map[string]string{"web-2": `, "-e", "HEALTHY=false"`},
			external: external},
			"web-1", "web-2", "web-3")
		hub, _, dep := f.pushToAll("fleet-obo")
		if dep.State != "failed" || !strings.Contains(dep.Error, "web-2") || !strings.Contains(dep.Error, "not sent to web-3") {
			t.Fatalf("rollout: %s %q, want failed naming web-2 and web-3", dep.State, dep.Error)
		}
		if got := f.version("web-1"); got != "v1" {
			t.Errorf("web-1 answers %q, want v1 (left on the new version)", got)
		}
		if out, err := f.agents["web-3"].podman.Run(context.Background(), "ps", "-a", "--format", "{{.Names}}"); err != nil || out != "" {
			t.Errorf("web-3 has containers %q (%v), want none: it was never sent the image", out, err)
		}
		states := map[string]string{}
		for _, hd := range f.hostDeployments(hub) {
			states[hd.Host] = hd.State
		}
		if states["web-1"] != "succeeded" || (states["web-2"] != "failed" && states["web-2"] != "rolled_back") || states["web-3"] != "" {
			t.Errorf("host deployments %v; want web-1 succeeded, web-2 failed, none for web-3", states)
		}
	})
}

// An agent SIGKILLed before the intents and started after two pushes
// runs only the newer. The hub gives up waiting for it after
// fleet.result_timeout, marking its deployments interrupted, and records
// the newer one's result when it comes.
func TestEndToEndFleetAgentDownConvergesToTheNewest(t *testing.T) {
	natsModes(t, func(t *testing.T, external bool) {
		f := newFleetStack(t, fleetOptions{policy: "all-at-once", resultTimeout: "3s", external: external}, "web-1", "web-2")
		f.start("web-1")
		f.start("web-2")
		f.agents["web-2"].proc.kill()
		hub := &instance{t: t, addr: f.hub.addr}

		v1 := f.push("latest", "v1")
		hub.queue(delivery{event: "registry_package", id: "fleet-down-1", body: f.packageEvent("latest", v1)})
		waitFor(t, "web-1 to run v1", func() bool { return f.version("web-1") == "v1" })
		v2 := f.push("latest", "v2")
		ids := hub.queue(delivery{event: "registry_package", id: "fleet-down-2", body: f.packageEvent("latest", v2)})
		if dep := waitDeployment(t, hub, ids[0]); dep.State != "failed" || !strings.Contains(dep.Error, "no result from host web-2") {
			t.Fatalf("second rollout with web-2 down: %s %q", dep.State, dep.Error)
		}
		if got := f.version("web-1"); got != "v2" {
			t.Fatalf("web-1 answers %q, want v2", got)
		}

		f.start("web-2")
		waitFor(t, "web-2 to run v2", func() bool { return f.version("web-2") == "v2" })
		out, err := f.agents["web-2"].podman.Run(context.Background(), "images", "--format", "{{.Digest}}")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out, v1) || !strings.Contains(out, v2) {
			t.Errorf("web-2's images %q; want v2 (%s) only, not v1 (%s), which was replaced before it came back", out, v2, v1)
		}
		waitFor(t, "the hub to record web-2's late result", func() bool {
			for _, hd := range f.hostDeployments(hub) {
				if hd.Host == "web-2" && hd.Digest == v2 && hd.State == "succeeded" {
					return true
				}
			}
			return false
		})
	})
}

// An agent started with another host's NKey is refused by the hub's NATS:
// web-1's key, relabelled web-2 in its credentials file, cannot read
// web-2's intents, and the process stops saying so.
func TestEndToEndFleetAgentWithAnotherHostsKeyIsRefused(t *testing.T) {
	natsModes(t, func(t *testing.T, external bool) {
		f := newFleetStack(t, fleetOptions{policy: "all-at-once", external: external}, "web-1", "web-2")
		web1, err := os.ReadFile(f.agents["web-1"].creds)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		rogueCreds := writeFile(t, dir, "rogue.creds", strings.Replace(string(web1), `"host": "web-1"`, `"host": "web-2"`, 1), 0o600)
		conf, err := os.ReadFile(f.agents["web-2"].config)
		if err != nil {
			t.Fatal(err)
		}
		rogue := writeFile(t, dir, "rogue.yaml", strings.Replace(string(conf), f.agents["web-2"].creds, rogueCreds, 1), 0o600)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, f.bin, "serve", "--config", rogue)
		cmd.Env = f.agents["web-2"].env
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("an agent with web-1's key serving as web-2 ran and exited cleanly:\n%s", out)
		}
		if ctx.Err() != nil {
			t.Fatalf("the rogue agent was not refused within a minute:\n%s", out)
		}
		if !strings.Contains(string(out), "open intents for web-2") {
			t.Errorf("the rogue agent stopped without saying it could not read web-2's intents:\n%s", out)
		}
	})
}
