package fleet_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deployd/deployd/fleet"
)

// The hub's keys are made once and kept; each added host gets keys of its
// own, its public half kept by the hub, its credentials parse back, and a
// host cannot be added twice.
func TestHubKeysAndAddHost(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "fleet")
	keys, err := fleet.LoadHubKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	again, err := fleet.LoadHubKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := keys.Curve.PublicKey()
	second, _ := again.Curve.PublicKey()
	if first != second {
		t.Error("the hub's curve key changed between loads")
	}
	if fi, err := os.Stat(filepath.Join(dir, "hub.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("hub key file: %v %v, want mode 0600", fi.Mode(), err)
	}

	creds, err := fleet.AddHost(dir, "web-1", keys)
	if err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(creds)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := fleet.ParseAgentCredentials(data)
	if err != nil || parsed != creds {
		t.Fatalf("credentials do not parse back: %v", err)
	}
	if parsed.HubCurveKey != first {
		t.Error("the agent's credentials name another hub key")
	}
	hosts, err := fleet.Hosts(dir)
	if err != nil {
		t.Fatal(err)
	}
	nk, _ := parsed.NKey()
	ck, _ := parsed.CurveKey()
	userPub, _ := nk.PublicKey()
	curvePub, _ := ck.PublicKey()
	if h := hosts["web-1"]; len(hosts) != 1 || h.UserKey != userPub || h.CurveKey != curvePub {
		t.Errorf("hosts: %+v", hosts)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "hosts", "web-1.json"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), creds.NKeySeed) || strings.Contains(string(raw), creds.CurveSeed) {
		t.Error("the hub keeps the agent's seeds")
	}
	if _, err := fleet.AddHost(dir, "web-1", keys); err == nil || !strings.Contains(err.Error(), "already added") {
		t.Errorf("adding web-1 again: %v", err)
	}
	if _, err := fleet.AddHost(dir, "../web", keys); !errors.Is(err, fleet.ErrBadName) {
		t.Errorf("adding ../web: %v, want ErrBadName", err)
	}
}

// A credentials file that is not one is refused without showing a seed.
func TestParseAgentCredentialsRefuses(t *testing.T) {
	keys, err := fleet.LoadHubKeys(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	good, err := fleet.AddHost(t.TempDir(), "web-1", keys)
	if err != nil {
		t.Fatal(err)
	}
	swapped := good
	swapped.NKeySeed, swapped.CurveSeed = good.CurveSeed, good.NKeySeed
	noHub := good
	noHub.HubCurveKey = ""
	for name, c := range map[string]fleet.AgentCredentials{"swapped seeds": swapped, "no hub key": noHub} {
		data, _ := json.Marshal(c)
		_, err := fleet.ParseAgentCredentials(data)
		if !errors.Is(err, fleet.ErrBadCredentials) {
			t.Errorf("%s: %v, want ErrBadCredentials", name, err)
		} else if strings.Contains(err.Error(), good.NKeySeed) || strings.Contains(err.Error(), good.CurveSeed) {
			t.Errorf("%s: the error shows a seed", name)
		}
	}
}

// ParseAgentCredentials either refuses a file or returns keys that load.
func FuzzParseAgentCredentials(f *testing.F) {
	keys, err := fleet.LoadHubKeys(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	good, err := fleet.AddHost(f.TempDir(), "web-1", keys)
	if err != nil {
		f.Fatal(err)
	}
	data, _ := json.Marshal(good)
	f.Add(data)
	f.Add([]byte(`{"host":"web-1","nkey_seed":"SUxx","curve_seed":"SXxx","hub_curve_key":"Xxx"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := fleet.ParseAgentCredentials(data)
		if err != nil {
			return
		}
		if _, err := c.NKey(); err != nil {
			t.Fatalf("accepted an NKey seed that does not load: %v", err)
		}
		if _, err := c.CurveKey(); err != nil {
			t.Fatalf("accepted a curve seed that does not load: %v", err)
		}
		if fleet.ValidName(c.Host) != nil {
			t.Fatalf("accepted host %q", c.Host)
		}
	})
}
