package fleet_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/rs/zerolog"

	"github.com/deployd/deployd/deployer"
	"github.com/deployd/deployd/deployer/sqlite"
	"github.com/deployd/deployd/fleet"
	"github.com/deployd/deployd/internal/testlog"
)

// openStore opens a SQLite store under dir, closed at the end of the test.
func openStore(t testing.TB, dir string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), filepath.Join(dir, "deployd.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// chain hands out one token credential, as the registry chain would.
type chain struct{ denied []string }

func (c *chain) Credential(context.Context, deployer.CredentialRequest) (deployer.Credential, error) {
	return deployer.Credential{Source: "github_app", Username: "x-access-token", Password: deployer.NewPassword(secret)}, nil
}
func (c *chain) Denied(_ deployer.CredentialRequest, source, _ string) {
	c.denied = append(c.denied, source)
}
func (c *chain) Accepted(deployer.CredentialRequest, string) {}
func (c *chain) Invalidate(deployer.CredentialRequest)       {}

// tags resolves tags from a map, as the registry would.
type tags struct {
	mu sync.Mutex
	m  map[string]string
}

func (r *tags) Digest(_ context.Context, ref string, cred deployer.Credential, _ bool) (string, error) {
	if cred.Password.Reveal() != secret {
		return "", errors.New("resolve without the chain's credential")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if d, ok := r.m[ref]; ok {
		return d, nil
	}
	return "", fmt.Errorf("%s: manifest unknown", ref)
}

func (r *tags) set(ref, digest string) {
	r.mu.Lock()
	r.m[ref] = digest
	r.mu.Unlock()
}

const image = "127.0.0.1:5000/acme/backend"

// fakeHost is an agent with an executor that puts digests "in place" in
// its own store, failing health for the digests in fail.
type fakeHost struct {
	name  string
	store *sqlite.Store
	agent *fleet.Agent
	fail  map[string]bool

	mu   sync.Mutex
	ran  []string // digests carried out, in order
	pass []string // the passwords the executor got
	stop func()
}

func (h *fakeHost) ranDigests() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.ran)
}

// Execute is the host's executor.
func (h *fakeHost) Execute(ctx context.Context, d deployer.Deployment) deployer.Deployment {
	cred, err := h.agent.Credentials().Credential(ctx, deployer.CredentialRequest{Image: image})
	h.mu.Lock()
	h.ran = append(h.ran, d.Digest)
	if err == nil {
		h.pass = append(h.pass, cred.Password.Reveal())
	}
	h.mu.Unlock()
	for _, name := range []string{"pull", "switch", "verify"} {
		st := deployer.Step{Name: name, Started: time.Now(), Outcome: "ok", Message: name + " " + deployer.ShortDigest(d.Digest)}
		if name == "verify" && h.fail[d.Digest] {
			st.Outcome = "failed"
		}
		if err := h.store.AppendStep(ctx, d.ID, st); err != nil {
			panic(err)
		}
		d.Steps = append(d.Steps, st)
		h.agent.Notify(d)
	}
	if h.fail[d.Digest] {
		d.State, d.ErrorClass, d.Error = deployer.StateRolledBack, deployer.ClassHealth, "health check failed"
		return d
	}
	if err := h.store.SetServiceStatus(ctx, deployer.ServiceStatus{Name: d.Service, Digest: d.Digest}); err != nil {
		panic(err)
	}
	d.State = deployer.StateSucceeded
	return d
}

// fleetTest is a hub and its hosts over one embedded server.
type fleetTest struct {
	t       *testing.T
	srv     interface{ ClientURL() string }
	js      jetstream.JetStream
	hubKey  nkeys.KeyPair
	hubPub  string
	agents  map[string]string // host → curve public key
	keys    map[string]nkeys.KeyPair
	store   *sqlite.Store
	hub     *fleet.Hub
	tags    *tags
	chain   *chain
	log     *testlog.Buffer
	hosts   map[string]*fakeHost
	service deployer.Service
}

func newFleet(t *testing.T, policy string, hosts ...string) *fleetTest {
	t.Helper()
	srv, js := hub(t, hosts...)
	f := &fleetTest{t: t, srv: srv, js: js, agents: map[string]string{}, keys: map[string]nkeys.KeyPair{},
		tags: &tags{m: map[string]string{}}, chain: &chain{}, log: &testlog.Buffer{}, hosts: map[string]*fakeHost{}}
	f.hubKey, f.hubPub = curveKey(t)
	for _, h := range hosts {
		f.keys[h], f.agents[h] = curveKey(t)
	}
	f.service = deployer.Service{Name: "backend", Image: image, Host: "127.0.0.1:5000", Hosts: hosts, Rollout: policy}
	f.store = openStore(t, t.TempDir())
	var err error
	f.hub, err = fleet.NewHub(fleet.HubConfig{
		Services: map[string]deployer.Service{"backend": f.service}, Store: f.store,
		Credentials: f.chain, Resolver: f.tags, JetStream: js, Key: f.hubKey, Agents: f.agents,
		ResultTimeout: 3 * time.Second, Logger: zerolog.New(f.log),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.hub.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("hub Run: %v", err)
		}
	})
	return f
}

// startHost starts host's agent with a fake executor (its store kept
// across restarts).
func (f *fleetTest) startHost(name string, fail ...string) *fakeHost {
	f.t.Helper()
	h := f.hosts[name]
	if h == nil {
		h = &fakeHost{name: name, store: openStore(f.t, f.t.TempDir()), fail: map[string]bool{}}
		f.hosts[name] = h
	}
	for _, d := range fail {
		h.fail[d] = true
	}
	_, js := connect(f.t, f.srv.ClientURL())
	agent, err := fleet.NewAgent(fleet.AgentConfig{Host: name, Services: map[string]deployer.Service{"backend": f.service},
		Store: h.store, JetStream: js, Key: f.keys[name], HubKey: f.hubPub, Logger: zerolog.New(f.log)})
	if err != nil {
		f.t.Fatal(err)
	}
	h.agent = agent
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- agent.Run(ctx, h) }()
	h.stop = func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			f.t.Errorf("agent %s Run: %v", name, err)
		}
	}
	f.t.Cleanup(func() {
		if h.stop != nil {
			h.stop()
			h.stop = nil
		}
	})
	return h
}

// push points latest at digest and runs one webhook deployment of it
// through the hub, returning the deployment as the hub ended it.
func (f *fleetTest) push(digest string) deployer.Deployment {
	f.t.Helper()
	f.tags.set(image+":latest", digest)
	ctx := testCtx(f.t)
	if _, err := f.store.Enqueue(ctx, deployer.Request{Service: "backend", Tag: "latest",
		Trigger: deployer.Trigger{Kind: deployer.TriggerWebhook, DeliveryID: "d-" + digest[7:15]}}); err != nil {
		f.t.Fatal(err)
	}
	d, ok, err := f.store.ClaimNext(ctx, "backend")
	if err != nil || !ok {
		f.t.Fatalf("claim: %v %v", ok, err)
	}
	d = f.hub.Execute(ctx, d)
	if err := f.store.Finish(ctx, d); err != nil {
		f.t.Fatal(err)
	}
	return d
}

// hostDeployments returns the host deployments of rollout id by host.
func (f *fleetTest) hostDeployments(id int64) map[string]deployer.Deployment {
	f.t.Helper()
	ds, err := f.store.RolloutDeployments(testCtx(f.t), id)
	if err != nil {
		f.t.Fatal(err)
	}
	out := map[string]deployer.Deployment{}
	for _, d := range ds {
		out[d.Host] = d
	}
	return out
}

// lastRollout returns the id of the newest host deployment's rollout.
func (f *fleetTest) lastRollout() int64 {
	f.t.Helper()
	ds, err := f.store.Deployments(testCtx(f.t), "backend", deployer.Page{Limit: 1})
	if err != nil || len(ds) == 0 {
		f.t.Fatalf("deployments: %v", err)
	}
	for _, d := range ds {
		if d.RolloutID != 0 {
			return d.RolloutID
		}
	}
	f.t.Fatal("no host deployment")
	return 0
}

// streamBytes returns every message stored in stream, concatenated.
func streamBytes(t *testing.T, js jetstream.JetStream, name string) []byte {
	t.Helper()
	stream, err := js.Stream(testCtx(t), name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	var all bytes.Buffer
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && seq > 0; seq++ {
		m, err := stream.GetMsg(testCtx(t), seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		all.Write(m.Data)
	}
	return all.Bytes()
}

// One push reaches every host at once; each host's deployment is its own
// row with the agent's steps; the credential reached each executor sealed
// and never sat in the streams or the logs in clear text.
func TestHubAllAtOnce(t *testing.T) {
	f := newFleet(t, deployer.RolloutAllAtOnce, "web-1", "web-2", "web-3")
	for _, h := range []string{"web-1", "web-2", "web-3"} {
		f.startHost(h)
	}
	d := f.push(digest('a'))
	if d.State != deployer.StateSucceeded {
		t.Fatalf("rollout ended %s: %s", d.State, d.Error)
	}
	hds := f.hostDeployments(f.lastRollout())
	for _, name := range []string{"web-1", "web-2", "web-3"} {
		hd := hds[name]
		if hd.State != deployer.StateSucceeded || hd.Digest != digest('a') {
			t.Errorf("%s: %s %s, want succeeded with a", name, hd.State, hd.Digest)
		}
		var names []string
		for _, s := range hd.Steps {
			names = append(names, s.Name)
		}
		if !slices.Equal(names, []string{deployer.StepRequest, "pull", "switch", "verify"}) {
			t.Errorf("%s's steps on the hub: %v", name, names)
		}
		h := f.hosts[name]
		if got := h.ranDigests(); !slices.Equal(got, []string{digest('a')}) {
			t.Errorf("%s ran %v", name, got)
		}
		if !slices.Equal(h.pass, []string{secret}) {
			t.Errorf("%s's executor got passwords %q, want the chain's", name, h.pass)
		}
	}
	st, err := f.store.ServiceStatus(testCtx(t), "backend")
	if err != nil || st.Digest != digest('a') {
		t.Errorf("service status %+v %v, want a", st, err)
	}
	hs, err := f.store.HostStatuses(testCtx(t), "backend")
	if err != nil || len(hs) != 3 {
		t.Fatalf("host statuses %+v %v", hs, err)
	}
	for _, h := range hs {
		if h.Digest != digest('a') {
			t.Errorf("%s runs %q, want a", h.Host, h.Digest)
		}
	}
	for _, name := range []string{fleet.IntentStream, fleet.ReportStream} {
		raw := streamBytes(t, f.js, name)
		if len(raw) == 0 {
			t.Errorf("stream %s is empty", name)
		}
		if bytes.Contains(raw, []byte(secret)) {
			t.Errorf("stream %s holds the token in clear text", name)
		}
	}
	if strings.Contains(f.log.String(), secret) {
		t.Error("the logs hold the token")
	}

	// The same push again changes nothing anywhere.
	if again := f.push(digest('a')); again.State != deployer.StateUnchanged {
		t.Errorf("the same digest again: %s, want unchanged", again.State)
	}
	if got := f.hosts["web-1"].ranDigests(); len(got) != 1 {
		t.Errorf("web-1 ran %v after an unchanged push", got)
	}
}

// One by one: a host that fails health stops the rollout; the host before
// keeps the new version, the host after never hears of it, and the
// rollout fails naming both.
func TestHubOneByOneStopsAtTheFirstFailure(t *testing.T) {
	f := newFleet(t, deployer.RolloutOneByOne, "web-1", "web-2", "web-3")
	f.startHost("web-1")
	f.startHost("web-2", digest('b'))
	f.startHost("web-3")
	if d := f.push(digest('a')); d.State != deployer.StateSucceeded {
		t.Fatalf("first rollout: %s %s", d.State, d.Error)
	}
	d := f.push(digest('b'))
	if d.State != deployer.StateFailed || d.ErrorClass != deployer.ClassHealth {
		t.Fatalf("rollout of a digest failing on web-2 ended %s (%s), want failed (health)", d.State, d.ErrorClass)
	}
	if !strings.Contains(d.Error, "web-2") || !strings.Contains(d.Error, "not sent to web-3") {
		t.Errorf("rollout error %q does not name the failing and the untouched host", d.Error)
	}
	hds := f.hostDeployments(f.lastRollout())
	if len(hds) != 2 || hds["web-1"].State != deployer.StateSucceeded || hds["web-2"].State != deployer.StateRolledBack {
		t.Errorf("host deployments: web-1 %s, web-2 %s, %d in all; want succeeded, rolled_back, 2", hds["web-1"].State, hds["web-2"].State, len(hds))
	}
	if got := f.hosts["web-3"].ranDigests(); !slices.Equal(got, []string{digest('a')}) {
		t.Errorf("web-3 ran %v, want only a", got)
	}
	running := map[string]string{}
	hs, err := f.store.HostStatuses(testCtx(t), "backend")
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		running[h.Host] = h.Digest
	}
	if running["web-1"] != digest('b') || running["web-2"] != digest('a') || running["web-3"] != digest('a') {
		t.Errorf("running per host %v; want web-1 on b, web-2 and web-3 on a", running)
	}
	if st, _ := f.store.ServiceStatus(testCtx(t), "backend"); st.Digest != digest('a') {
		t.Errorf("the service's digest moved to %s after a failed rollout", deployer.ShortDigest(st.Digest))
	}
}

// An agent down during two pushes gets only the newer when it returns;
// the hub marks the host's deployments it gave up waiting for interrupted,
// and records the late result of the newer one.
func TestHubAgentDownGetsOnlyTheNewest(t *testing.T) {
	f := newFleet(t, deployer.RolloutAllAtOnce, "web-1", "web-2")
	f.startHost("web-1")
	for _, c := range []byte{'a', 'b'} {
		d := f.push(digest(c))
		if d.State != deployer.StateFailed || !strings.Contains(d.Error, "no result from host web-2") {
			t.Fatalf("push %c with web-2 down ended %s: %q", c, d.State, d.Error)
		}
	}
	newest := f.lastRollout()
	if hd := f.hostDeployments(newest)["web-2"]; hd.State != deployer.StateInterrupted {
		t.Fatalf("web-2's deployment while down: %s, want interrupted", hd.State)
	}

	h := f.startHost("web-2")
	deadline := time.Now().Add(30 * time.Second)
	for f.hostDeployments(newest)["web-2"].State != deployer.StateSucceeded {
		if time.Now().After(deadline) {
			t.Fatalf("web-2 back: its deployment of b is %s", f.hostDeployments(newest)["web-2"].State)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := h.ranDigests(); !slices.Equal(got, []string{digest('b')}) {
		t.Errorf("web-2 back after two pushes ran %v, want only b", got)
	}
	if d := f.push(digest('b')); d.State != deployer.StateUnchanged {
		t.Errorf("b again once every host runs it: %s, want unchanged", d.State)
	}
}

// A report naming another host's deployment is refused: a host can only
// speak of its own deployments.
func TestHubRefusesAReportForAnotherHostsDeployment(t *testing.T) {
	f := newFleet(t, deployer.RolloutAllAtOnce, "web-1", "web-2")
	f.startHost("web-1")
	f.startHost("web-2", digest('a'))
	f.push(digest('a'))
	victim := f.hostDeployments(f.lastRollout())["web-2"]
	if victim.State != deployer.StateRolledBack {
		t.Fatalf("web-2: %s", victim.State)
	}
	forged := fmt.Sprintf(`{"kind":"step","host":"web-1","service":"backend","seq":%d,"step":{"name":"forged","outcome":"ok"}}`, victim.ID)
	if _, err := f.js.Publish(testCtx(t), fleet.ReportSubject("web-1", "backend"), []byte(forged)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(f.log.String(), "report refused") {
		if time.Now().After(deadline) {
			t.Fatal("the forged report was not refused")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, s := range f.hostDeployments(f.lastRollout())["web-2"].Steps {
		if s.Name == "forged" {
			t.Error("web-1's report landed in web-2's deployment")
		}
	}
}

// A service without hosts is the local executor's, exactly as without a
// fleet.
func TestHubServiceWithoutHostsRunsLocally(t *testing.T) {
	_, js := hub(t)
	key, _ := curveKey(t)
	var local []int64
	h, err := fleet.NewHub(fleet.HubConfig{
		Services: map[string]deployer.Service{"web": {Name: "web", Image: image}},
		Local: deployer.ExecutorFunc(func(_ context.Context, d deployer.Deployment) deployer.Deployment {
			local = append(local, d.ID)
			d.State = deployer.StateSucceeded
			return d
		}),
		Store: openStore(t, t.TempDir()), Credentials: &chain{}, Resolver: &tags{}, JetStream: js, Key: key,
	})
	if err != nil {
		t.Fatal(err)
	}
	if d := h.Execute(testCtx(t), deployer.Deployment{ID: 7, Service: "web"}); d.State != deployer.StateSucceeded || !slices.Equal(local, []int64{7}) {
		t.Errorf("local service: %s, local executor saw %v", d.State, local)
	}
	if _, err := fleet.NewHub(fleet.HubConfig{
		Services: map[string]deployer.Service{"web": {Name: "web", Image: image, Hosts: []string{"web-9"}}},
		Store:    openStore(t, t.TempDir()), Credentials: &chain{}, Resolver: &tags{}, JetStream: js, Key: key,
	}); err == nil || !strings.Contains(err.Error(), "fleet add-host web-9") {
		t.Errorf("a host without an agent key: %v", err)
	}
}
