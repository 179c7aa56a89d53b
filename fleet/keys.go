package fleet

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/nats-io/nkeys"
)

// AgentCredentials is what an agent needs to join the fleet, written by
// deployd fleet add-host on the hub: its NATS NKey seed, its curve key
// seed (which opens the credentials the hub seals for it) and the hub's
// curve public key (which the hub seals them with).
type AgentCredentials struct {
	Host        string `json:"host"`
	NKeySeed    string `json:"nkey_seed"`
	CurveSeed   string `json:"curve_seed"`
	HubCurveKey string `json:"hub_curve_key"`
}

// ErrBadCredentials is wrapped by ParseAgentCredentials' and
// ParseHostKeys' errors; they never carry a seed.
var ErrBadCredentials = errors.New("invalid fleet credentials")

// ParseAgentCredentials reads an agent's credentials file and checks its
// keys. Its errors wrap ErrBadCredentials and name no seed.
func ParseAgentCredentials(data []byte) (AgentCredentials, error) {
	var c AgentCredentials
	if err := json.Unmarshal(data, &c); err != nil {
		return AgentCredentials{}, fmt.Errorf("%w: not the JSON deployd fleet add-host writes", ErrBadCredentials)
	}
	switch {
	case ValidName(c.Host) != nil:
		return AgentCredentials{}, fmt.Errorf("%w: host: %w", ErrBadCredentials, ValidName(c.Host))
	case !seedOf(c.NKeySeed, nkeys.PrefixByteUser):
		return AgentCredentials{}, fmt.Errorf("%w: nkey_seed is not a user NKey seed", ErrBadCredentials)
	case !seedOf(c.CurveSeed, nkeys.PrefixByteCurve):
		return AgentCredentials{}, fmt.Errorf("%w: curve_seed is not a curve key seed", ErrBadCredentials)
	case !nkeys.IsValidPublicCurveKey(c.HubCurveKey):
		return AgentCredentials{}, fmt.Errorf("%w: hub_curve_key is not a curve public key", ErrBadCredentials)
	}
	return c, nil
}

// seedOf reports whether seed is a valid seed of keys of the prefix.
func seedOf(seed string, prefix nkeys.PrefixByte) bool {
	p, _, err := nkeys.DecodeSeed([]byte(seed))
	return err == nil && p == prefix
}

// NKey returns the agent's NATS key pair.
func (c AgentCredentials) NKey() (nkeys.KeyPair, error) { return nkeys.FromSeed([]byte(c.NKeySeed)) }

// CurveKey returns the agent's curve key pair.
func (c AgentCredentials) CurveKey() (nkeys.KeyPair, error) {
	return nkeys.FromSeed([]byte(c.CurveSeed))
}

// HostKeys are a host's public keys, as the hub keeps them: the NKey its
// agent connects with and the curve key credentials are sealed to.
type HostKeys struct {
	Host     string `json:"host"`
	UserKey  string `json:"user_key"`
	CurveKey string `json:"curve_key"`
}

// ParseHostKeys reads a host's public keys and checks them; its errors
// wrap ErrBadCredentials.
func ParseHostKeys(data []byte) (HostKeys, error) {
	var h HostKeys
	if err := json.Unmarshal(data, &h); err != nil {
		return HostKeys{}, fmt.Errorf("%w: host keys are not JSON", ErrBadCredentials)
	}
	switch {
	case ValidName(h.Host) != nil:
		return HostKeys{}, fmt.Errorf("%w: host: %w", ErrBadCredentials, ValidName(h.Host))
	case !nkeys.IsValidPublicUserKey(h.UserKey):
		return HostKeys{}, fmt.Errorf("%w: user_key is not a user public key", ErrBadCredentials)
	case !nkeys.IsValidPublicCurveKey(h.CurveKey):
		return HostKeys{}, fmt.Errorf("%w: curve_key is not a curve public key", ErrBadCredentials)
	}
	return h, nil
}

// InboxPrefix is the reply subject prefix of host's agent: the only
// inbox it may subscribe to.
func InboxPrefix(host string) string { return "_INBOX." + host }

// AgentPermissions returns the subjects host's agent may publish and
// subscribe to: reading its own consumer and taking and acking its
// messages, publishing its own reports, and its own inbox. It can neither
// read another host's intents nor report for another host.
func AgentPermissions(host string) (publish, subscribe []string) {
	cons := AgentConsumer(host)
	publish = []string{
		"$JS.API.CONSUMER.INFO." + IntentStream + "." + cons,
		"$JS.API.CONSUMER.MSG.NEXT." + IntentStream + "." + cons,
		"$JS.ACK." + IntentStream + "." + cons + ".>",
		ReportPrefix + "." + host + ".>",
	}
	return publish, []string{InboxPrefix(host) + ".>"}
}

// HubKeys are the hub's own keys: the NKey it connects to NATS with and
// the curve key it seals credentials with.
type HubKeys struct {
	NKey  nkeys.KeyPair
	Curve nkeys.KeyPair
}

// hubKeyFile is the hub's key file in its fleet directory.
type hubKeyFile struct {
	NKeySeed  string `json:"nkey_seed"`
	CurveSeed string `json:"curve_seed"`
}

// LoadHubKeys reads the hub's keys from dir (data_dir/fleet), creating
// them, and dir, the first time (mode 0600, dir 0700).
func LoadHubKeys(dir string) (HubKeys, error) {
	path := filepath.Join(dir, "hub.json")
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		data, err = createHubKeys(dir, path)
	}
	if err != nil {
		return HubKeys{}, fmt.Errorf("hub keys: %w", err)
	}
	var f hubKeyFile
	if err := json.Unmarshal(data, &f); err != nil || !seedOf(f.NKeySeed, nkeys.PrefixByteUser) || !seedOf(f.CurveSeed, nkeys.PrefixByteCurve) {
		return HubKeys{}, fmt.Errorf("hub keys: %s is damaged; remove it and add the hosts again", path)
	}
	nk, err := nkeys.FromSeed([]byte(f.NKeySeed))
	if err != nil {
		return HubKeys{}, fmt.Errorf("hub keys: %w", err)
	}
	ck, err := nkeys.FromSeed([]byte(f.CurveSeed))
	if err != nil {
		return HubKeys{}, fmt.Errorf("hub keys: %w", err)
	}
	return HubKeys{NKey: nk, Curve: ck}, nil
}

func createHubKeys(dir, path string) ([]byte, error) {
	nk, err := nkeys.CreateUser()
	if err != nil {
		return nil, err
	}
	ck, err := nkeys.CreateCurveKeys()
	if err != nil {
		return nil, err
	}
	nseed, err := nk.Seed()
	if err != nil {
		return nil, err
	}
	cseed, err := ck.Seed()
	if err != nil {
		return nil, err
	}
	data, err := json.Marshal(hubKeyFile{NKeySeed: string(nseed), CurveSeed: string(cseed)})
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := WriteNew(path, data); err != nil {
		return nil, err
	}
	return data, nil
}

// WriteNew writes data to a new file at path, mode 0600, as the fleet's
// keys and credentials are kept; it fails if the file exists.
func WriteNew(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// AddHost makes host's keys, records its public keys in dir
// (data_dir/fleet/hosts/HOST.json) and returns the agent's credentials.
// It refuses a host already added.
func AddHost(dir, host string, hub HubKeys) (AgentCredentials, error) {
	if err := ValidName(host); err != nil {
		return AgentCredentials{}, fmt.Errorf("add host: %w", err)
	}
	nk, err := nkeys.CreateUser()
	if err != nil {
		return AgentCredentials{}, fmt.Errorf("add host %s: %w", host, err)
	}
	ck, err := nkeys.CreateCurveKeys()
	if err != nil {
		return AgentCredentials{}, fmt.Errorf("add host %s: %w", host, err)
	}
	var c AgentCredentials
	var h HostKeys
	c.Host, h.Host = host, host
	for _, k := range []struct {
		kp        nkeys.KeyPair
		seed, pub *string
	}{{nk, &c.NKeySeed, &h.UserKey}, {ck, &c.CurveSeed, &h.CurveKey}} {
		seed, err := k.kp.Seed()
		if err != nil {
			return AgentCredentials{}, fmt.Errorf("add host %s: %w", host, err)
		}
		if *k.pub, err = k.kp.PublicKey(); err != nil {
			return AgentCredentials{}, fmt.Errorf("add host %s: %w", host, err)
		}
		*k.seed = string(seed)
	}
	if c.HubCurveKey, err = hub.Curve.PublicKey(); err != nil {
		return AgentCredentials{}, fmt.Errorf("add host %s: %w", host, err)
	}
	data, err := json.Marshal(h)
	if err != nil {
		return AgentCredentials{}, fmt.Errorf("add host %s: %w", host, err)
	}
	hostsDir := filepath.Join(dir, "hosts")
	if err := os.MkdirAll(hostsDir, 0o700); err != nil {
		return AgentCredentials{}, fmt.Errorf("add host %s: %w", host, err)
	}
	if err := WriteNew(filepath.Join(hostsDir, host+".json"), data); errors.Is(err, os.ErrExist) {
		return AgentCredentials{}, fmt.Errorf("add host %s: already added; to give it new keys, remove %s first", host, filepath.Join(hostsDir, host+".json"))
	} else if err != nil {
		return AgentCredentials{}, fmt.Errorf("add host %s: %w", host, err)
	}
	return c, nil
}

// Hosts reads the public keys of every host added in dir, by host name.
func Hosts(dir string) (map[string]HostKeys, error) {
	entries, err := os.ReadDir(filepath.Join(dir, "hosts"))
	if errors.Is(err, os.ErrNotExist) {
		return map[string]HostKeys{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read fleet hosts: %w", err)
	}
	out := map[string]HostKeys{}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || e.IsDir() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, "hosts", e.Name()))
		if err != nil {
			return nil, fmt.Errorf("read fleet host %s: %w", name, err)
		}
		h, err := ParseHostKeys(data)
		if err != nil || h.Host != name {
			return nil, fmt.Errorf("read fleet host %s: %w", name, errors.Join(err, ErrBadCredentials))
		}
		out[name] = h
	}
	return out, nil
}

// SortedHosts returns the names of hosts, sorted.
func SortedHosts(hosts map[string]HostKeys) []string {
	names := make([]string, 0, len(hosts))
	for n := range hosts {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}
