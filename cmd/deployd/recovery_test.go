package main

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/deployd/deployd/auth/github/githubtest"
	"github.com/deployd/deployd/deployer/podmantest"
	"github.com/deployd/deployd/webhook/webhooktest"
)

// recoveryStack is deployd with the App configured against the fake GitHub,
// whose webhook points at deployd's fixed address.
type recoveryStack struct {
	t       *testing.T
	github  *githubtest.FakeGitHub
	dataDir string
	addr    string
	keyFile string
	secret  string
}

func newRecoveryStack(t *testing.T) *recoveryStack {
	t.Helper()
	key, pemBytes := githubtest.NewKey(t)
	gh := githubtest.NewFakeGitHub(t, 4242, &key.PublicKey)
	gh.AddInstallation(githubtest.Installation{ID: fixtureInstallation, Account: "Acme-Corp"})
	dir := t.TempDir()
	s := &recoveryStack{t: t, github: gh, dataDir: t.TempDir(),
		addr:    fmt.Sprintf("127.0.0.1:%d", podmantest.FreePort(t)),
		keyFile: writeFile(t, dir, "app.pem", string(pemBytes), 0o600),
		secret:  writeFile(t, dir, "webhook-secret", testSecret+"\n", 0o600)}
	gh.SetHook("http://"+s.addr+"/webhooks/github", []byte(testSecret))
	return s
}

// config writes a config with github.delivery_recovery_interval set to
// interval and returns its path.
func (s *recoveryStack) config(interval string) string {
	s.t.Helper()
	cfg := strings.Replace(webhooktest.DeploydConfig(s.addr, s.dataDir, s.secret, "debug", "t-recovery-backend"),
		"github:\n", fmt.Sprintf("github:\n  api_url: %s\n  app: {id: 4242, private_key_file: %q}\n  delivery_recovery_interval: %s\n",
			s.github.URL, s.keyFile, interval), 1)
	return writeFile(s.t, s.t.TempDir(), "deployd.yaml", cfg, 0o600)
}

// pushDelivery is a tagged registry_package delivery for backend:latest
// whose body differs by n.
func pushDelivery(t *testing.T, n int) githubtest.HookDelivery {
	t.Helper()
	body := edit(t, fixture(t, "registry_package.published.container-tagged.json"), func(m map[string]any) {
		dig(m, "registry_package", "package_version", "container_metadata", "tag")["digest"] = fmt.Sprintf("sha256:%064x", n)
	})
	return githubtest.HookDelivery{GUID: fmt.Sprintf("0b7d1e00-recovery-%d", n), Event: "registry_package", Action: "published", Body: body}
}

// recoveredDelivery is a delivery as GET /api/v1/deliveries lists it.
type recoveredDelivery struct {
	ID            string  `json:"delivery_id"`
	Result        string  `json:"result"`
	DeploymentIDs []int64 `json:"deployment_ids"`
	Recovered     bool    `json:"recovered"`
}

func deliveriesByID(d *instance) map[string][]recoveredDelivery {
	var page struct {
		Deliveries []recoveredDelivery `json:"deliveries"`
	}
	d.getJSON("/api/v1/deliveries?limit=100", http.StatusOK, &page)
	got := map[string][]recoveredDelivery{}
	for _, del := range page.Deliveries {
		got[del.ID] = append(got[del.ID], del)
	}
	return got
}

// Deliveries GitHub could not make while deployd was down are found in the
// App's delivery log at the next start and redelivered, exactly those and
// once each: the delivered ones are left alone, and a later pass (another
// restart) asks for nothing again.
func TestServeRecoversDeliveriesMissedWhileDown(t *testing.T) {
	s := newRecoveryStack(t)

	// deployd runs, without recovery, and receives two deliveries.
	d := startDeployd(t, s.config("0"), nil)
	delivered := []githubtest.HookDelivery{pushDelivery(t, 1), pushDelivery(t, 2)}
	for _, hd := range delivered {
		if status, err := s.github.Deliver(hd); err != nil || status != http.StatusAccepted {
			t.Fatalf("deliver %s: %d, %v; want 202", hd.GUID, status, err)
		}
	}
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}

	// deployd is down: three deliveries fail.
	missed := []githubtest.HookDelivery{pushDelivery(t, 3), pushDelivery(t, 4), pushDelivery(t, 5)}
	for _, hd := range missed {
		if status, err := s.github.Deliver(hd); err == nil || status != 0 {
			t.Fatalf("deliver %s while deployd is down: %d, %v; want no answer", hd.GUID, status, err)
		}
	}

	// At start, exactly those three are asked for, oldest first, and arrive
	// once each.
	d = startDeployd(t, s.config("1h"), nil)
	var want []string
	for _, hd := range missed {
		want = append(want, hd.GUID)
	}
	// GitHub may redeliver before deployd has noted that it asked (the fake
	// does, at once): wait for the pass to end as well as for the deliveries.
	waitFor(t, "the three missed deliveries are recorded and the pass is done", func() bool {
		got := deliveriesByID(d)
		return !slices.ContainsFunc(want, func(id string) bool { return len(got[id]) == 0 }) &&
			strings.Contains(d.logs.String(), "delivery recovery: pass done")
	})
	asked := s.github.RedeliveryRequests()
	if !slices.Equal(asked, want) {
		t.Fatalf("redeliveries asked for %v, want %v, oldest first", asked, want)
	}
	got := deliveriesByID(d)
	for _, id := range want {
		if ds := got[id]; len(ds) != 1 || !ds[0].Recovered || ds[0].Result != "queued" || len(ds[0].DeploymentIDs) != 1 {
			t.Errorf("missed delivery %s listed as %+v, want once, recovered, queued with one deployment", id, ds)
		}
	}
	for _, hd := range delivered {
		if ds := got[hd.GUID]; len(ds) != 1 || ds[0].Recovered {
			t.Errorf("delivered %s listed as %+v, want once, not recovered", hd.GUID, ds)
		}
	}
	if v, _ := metricValue(t, d, `deployd_redeliveries_total{result="requested"}`); v != 3 {
		t.Errorf("redeliveries requested = %v, want 3", v)
	}
	if v, _ := metricValue(t, d, `deployd_redeliveries_total{result="failed"}`); v != 0 {
		t.Errorf("redeliveries failed = %v, want 0", v)
	}
	page := getText(t, d, "/")
	if n := strings.Count(page, ">recovered</span>"); n != 3 {
		t.Errorf("status page marks %d deliveries recovered, want 3", n)
	}
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}

	// Another pass, at the next start, asks for nothing again.
	d = startDeployd(t, s.config("1h"), nil)
	waitFor(t, "the start-up pass reads the delivery log", func() bool {
		return strings.Contains(d.logs.String(), "delivery recovery: pass done")
	})
	if again := s.github.RedeliveryRequests(); len(again) != len(asked) {
		t.Errorf("second pass asked for %v, want nothing after %v", again[len(asked):], asked)
	}
	if got := deliveriesByID(d); len(got) != 5 {
		t.Errorf("%d delivery ids recorded, want 5: %v", len(got), got)
	}
}

// When GitHub's delivery log answers 500, the pass is logged and made again
// at the next interval, which then recovers the missed delivery.
func TestServeRetriesDeliveryRecoveryWhenTheLogFails(t *testing.T) {
	s := newRecoveryStack(t)
	hd := pushDelivery(t, 7)
	if status, err := s.github.Deliver(hd); err == nil || status != 0 {
		t.Fatalf("deliver while deployd is down: %d, %v; want no answer", status, err)
	}
	s.github.SetHookLogDown(true)
	d := startDeployd(t, s.config("200ms"), nil)
	waitFor(t, "the failed read of the delivery log is logged", func() bool {
		return strings.Contains(d.logs.String(), "the App's delivery log was not read to the end; will try again next pass")
	})
	if asked := s.github.RedeliveryRequests(); len(asked) != 0 {
		t.Fatalf("redeliveries asked for %v while the log failed", asked)
	}
	s.github.SetHookLogDown(false)
	waitFor(t, "the missed delivery is recovered at a later pass", func() bool {
		ds := deliveriesByID(d)[hd.GUID]
		return len(ds) == 1 && ds[0].Recovered
	})
	if asked := s.github.RedeliveryRequests(); !slices.Equal(asked, []string{hd.GUID}) {
		t.Errorf("redeliveries asked for %v, want [%s] once", asked, hd.GUID)
	}
}

// getText GETs path and returns the body, failing unless 200.
func getText(t *testing.T, d *instance, path string) string {
	t.Helper()
	resp, err := http.Get(d.url(path))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d, %v", path, resp.StatusCode, err)
	}
	return string(b)
}
