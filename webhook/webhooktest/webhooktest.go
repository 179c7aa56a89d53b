package webhooktest

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
)

// MaxBodyBytes is the cap BareHandler reads a body under: the same as
// webhook.MaxBodyBytes (GitHub caps payloads at 25 MiB).
const MaxBodyBytes = 25 << 20

// Sign returns the X-Hub-Signature-256 value GitHub sends for body:
// "sha256=" and the hex HMAC-SHA256 of body under secret.
func Sign(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// BareHandler is the reference handler: it reads the body under
// MaxBodyBytes, checks the HMAC-SHA256 signature, unmarshals the JSON into
// the fields deployd's matcher reads and answers 202 with a JSON body.
func BareHandler(secret []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
		if err != nil {
			http.Error(w, "too large", http.StatusRequestEntityTooLarge)
			return
		}
		want, err := hex.DecodeString(strings.TrimPrefix(r.Header.Get("X-Hub-Signature-256"), "sha256="))
		mac := hmac.New(sha256.New, secret)
		mac.Write(body)
		if err != nil || !hmac.Equal(mac.Sum(nil), want) {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		var ev packagePayload
		if err := json.Unmarshal(body, &ev); err != nil {
			http.Error(w, "bad json", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusAccepted)
		_ = json.NewEncoder(w).Encode(map[string][]int64{"deployments": {1}})
	})
}

// packagePayload is what BareHandler decodes of a package event: the
// fields deployd's matcher reads, as webhook's own payload type declares
// them (keep the two alike).
type packagePayload struct {
	Action          string       `json:"action"`
	Package         *packageInfo `json:"package"`
	RegistryPackage *packageInfo `json:"registry_package"`
	Repository      *struct {
		FullName string `json:"full_name"`
	} `json:"repository"`
	Installation *struct {
		ID int64 `json:"id"`
	} `json:"installation"`
}

type packageInfo struct {
	Name        string `json:"name"`
	Namespace   string `json:"namespace"`
	Ecosystem   string `json:"ecosystem"`
	PackageType string `json:"package_type"`
	Owner       *struct {
		Login string `json:"login"`
	} `json:"owner"`
	PackageVersion *struct {
		ContainerMetadata *struct {
			Tag *struct {
				Name   string `json:"name"`
				Digest string `json:"digest"`
			} `json:"tag"`
		} `json:"container_metadata"`
	} `json:"package_version"`
}

// nonceLen is the length of every nonce: 16 hex digits.
const nonceLen = 16

// Deliveries makes unique signed deliveries of one JSON object: the
// template compacted as GitHub sends it, with a string field holding a
// 16-hex-digit nonce added last. A body is prefix + nonce + suffix, and the
// HMAC state after the prefix is computed once, so that a delivery costs
// about a microsecond and little memory. Safe for concurrent use.
type Deliveries struct {
	prefix, suffix []byte
	mac            hash.Cloner // HMAC state after prefix; cloned, never written
	seq            atomic.Int64
}

// Delivery is what varies between two deliveries of one Deliveries.
type Delivery struct {
	Seq       int64  // 1 for the first delivery made, then 2, 3, ...
	Nonce     string // the nonce field's value
	Signature string // the X-Hub-Signature-256 value
}

// NewDeliveries returns a generator of deliveries of template, a JSON
// object, with the nonce in the field nonceField, signed with secret.
func NewDeliveries(template, secret []byte, nonceField string) (*Deliveries, error) {
	var compact bytes.Buffer
	if err := json.Compact(&compact, template); err != nil {
		return nil, fmt.Errorf("template: %w", err)
	}
	obj := bytes.TrimSpace(compact.Bytes())
	if len(obj) < 2 || obj[0] != '{' || obj[len(obj)-1] != '}' {
		return nil, errors.New("template: not a JSON object")
	}
	key, err := json.Marshal(nonceField)
	if err != nil {
		return nil, err
	}
	sep := ","
	if len(obj) == 2 {
		sep = ""
	}
	prefix := append(bytes.Clone(obj[:len(obj)-1]), sep...)
	prefix = append(append(prefix, key...), `:"`...)
	mac, ok := hmac.New(sha256.New, secret).(hash.Cloner)
	if !ok {
		return nil, errors.New("HMAC state cannot be cloned")
	}
	mac.Write(prefix)
	return &Deliveries{prefix: prefix, suffix: []byte(`"}`), mac: mac}, nil
}

// Size is the length of every body.
func (g *Deliveries) Size() int { return len(g.prefix) + nonceLen + len(g.suffix) }

// Next returns a delivery never made before by g.
func (g *Deliveries) Next() Delivery {
	seq := g.seq.Add(1)
	nonce := fmt.Sprintf("%016x", seq)
	h, err := g.mac.Clone()
	if err != nil {
		panic(fmt.Sprintf("clone HMAC state: %v", err))
	}
	h.Write([]byte(nonce))
	h.Write(g.suffix)
	return Delivery{Seq: seq, Nonce: nonce, Signature: "sha256=" + hex.EncodeToString(h.Sum(nil))}
}

// Make returns n deliveries never made before by g.
func (g *Deliveries) Make(n int) []Delivery {
	out := make([]Delivery, n)
	for i := range out {
		out[i] = g.Next()
	}
	return out
}

// Reader returns d's body as a reader, without copying the shared parts.
func (g *Deliveries) Reader(d Delivery) io.Reader {
	return io.MultiReader(bytes.NewReader(g.prefix), strings.NewReader(d.Nonce), bytes.NewReader(g.suffix))
}

// Body returns d's body.
func (g *Deliveries) Body(d Delivery) []byte {
	out := make([]byte, 0, g.Size())
	out = append(out, g.prefix...)
	out = append(out, d.Nonce...)
	return append(out, g.suffix...)
}

// DeploydConfig is a deployd configuration whose one service, backend,
// matches the fixtures' container package (Acme-Corp/v7, v7/backend, tag
// latest) on a registry at 127.0.0.1:9, where nothing listens: deliveries
// queue deployments, which then fail fast. It logs JSON at level.
func DeploydConfig(listen, dataDir, secretFile, level, container string) string {
	return fmt.Sprintf(`listen: %s
data_dir: %q
log: {level: %s, format: json}
reconcile_interval: 0
github:
  webhook_secret_file: %q
registries:
  127.0.0.1:9:
    credentials: [none]
    insecure: true
    github_packages: true
services:
  backend:
    image: 127.0.0.1:9/acme-corp/v7/backend
    repository: Acme-Corp/v7
    tags: ["latest"]
    container: {name: %s}
`, listen, dataDir, level, secretFile, container)
}
