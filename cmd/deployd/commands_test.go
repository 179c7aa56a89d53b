package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// localConfig is the configuration that runs without external services.
const localConfig = "../../configs/deployd.local.yaml"

func TestCommandVersion(t *testing.T) {
	stdout, _, err := cliRun([]string{"version"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := "deployd dev (commit unknown)\n"; stdout != want {
		t.Errorf("version printed %q, want %q", stdout, want)
	}
}

func TestCommandUsage(t *testing.T) {
	stdout, _, err := cliRun(nil, nil)
	var ue usageError
	if !errors.As(err, &ue) || exitCode(err) != 2 {
		t.Errorf("deployd without a command: %v, want a usage error (exit 2)", err)
	}
	if !strings.Contains(stdout, "usage: deployd COMMAND") || !strings.Contains(stdout, "check-config") {
		t.Errorf("deployd without a command printed:\n%s\nwant the usage with the command list", stdout)
	}

	_, stderr, err := cliRun([]string{"frobnicate"}, nil)
	if !errors.As(err, &ue) || exitCode(err) != 2 || !strings.Contains(err.Error(), `"frobnicate"`) {
		t.Errorf("unknown command: %v, want a usage error naming it (exit 2)", err)
	}
	if !strings.Contains(stderr, "usage: deployd COMMAND") {
		t.Errorf("unknown command printed to stderr:\n%s\nwant the usage", stderr)
	}
}

func TestCommandCheckConfig(t *testing.T) {
	stdout, _, err := cliRun([]string{"check-config", "--config", localConfig},
		map[string]string{"DEPLOYD_WEBHOOK_SECRET": testSecret})
	if err != nil {
		t.Fatalf("check-config %s: %v", localConfig, err)
	}
	for _, want := range []string{localConfig + ": OK", "1 service(s)", "demo", "127.0.0.1:5000/acme/demo", "strategy container"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("check-config output lacks %q:\n%s", want, stdout)
		}
	}

	if _, _, err := cliRun([]string{"check-config", "--config", localConfig}, nil); err == nil || !strings.Contains(err.Error(), "webhook_secret") {
		t.Errorf("check-config without DEPLOYD_WEBHOOK_SECRET: %v, want an error naming webhook_secret", err)
	}
}

// TestCommandCheckConfigListsEveryProblem checks that check-config reports
// every problem in one run, with YAML path and line, in line order: problems
// with the file's shape (unknown keys, wrong types) do not hide problems with
// its values.
func TestCommandCheckConfigListsEveryProblem(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		want       []string
	}{
		{"shape", `listen: 127.0.0.1:0
data_dir: %s
log: {level: [debug]}
github:
  webhook_secret: s3cret-value-that-must-not-leak
services:
  backend:
    image: ghcr.io/acme/backend
    tags: ["latest"]
    colour: blue
`, []string{
			"log.level (line 3): expected a single value",
			"services.backend.repository (line 7): required",
			"services.backend.image (line 8): registry ghcr.io is not configured",
			`services.backend.colour (line 10): unknown key "colour"`,
		}},
		{"shape and values", `listen: 127.0.0.1:0
data_dir: %s
github:
  webhook_secret: s3cret-value-that-must-not-leak
registries:
  ghcr.io:
    insecure: maybe
services:
  backend:
    image: ghcr.io/acme/backend
    repository: acme/app
    tags: ["latest", "v["]
    strategy: docker
    helth: {url: "http://127.0.0.1:8081/healthz"}
`, []string{
			`registries.ghcr.io.insecure (line 7): expected true or false, got "maybe"`,
			`services.backend.tags[1] (line 12): invalid pattern "v["`,
			`services.backend.strategy (line 13): unknown strategy "docker"`,
			`services.backend.helth (line 14): unknown key "helth" (did you mean "health"?)`,
		}},
		{"values", `listen: 127.0.0.1:0
data_dir: %s
log: {level: loud}
github:
  webhook_secret: s3cret-value-that-must-not-leak
services:
  backend:
    image: ghcr.io/acme/backend:latest
    tags: ["latest"]
    strategy: teleport
`, []string{
			"log.level (line 3)",
			"services.backend.repository (line 7)",
			"services.backend.image (line 8)",
			"services.backend.strategy (line 10)",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := writeFile(t, dir, "deployd.yaml", fmt.Sprintf(tc.body, dir), 0o600)
			stdout, _, err := cliRun([]string{"check-config", "--config", cfg}, nil)
			if err == nil {
				t.Fatalf("check-config on a broken file succeeded:\n%s", stdout)
			}
			if exitCode(err) == 0 {
				t.Errorf("exit code 0 for %v", err)
			}
			if strings.Contains(stdout, "OK") {
				t.Errorf("broken config reported OK:\n%s", stdout)
			}
			msg := err.Error()
			if !strings.Contains(msg, cfg) {
				t.Errorf("error does not name the file %s:\n%s", cfg, msg)
			}
			at := 0
			for _, want := range tc.want {
				i := strings.Index(msg, want)
				if i < 0 {
					t.Errorf("error lacks %q:\n%s", want, msg)
					continue
				}
				if i < at {
					t.Errorf("%q is out of line order:\n%s", want, msg)
				}
				at = i
			}
			if lines := strings.Count(msg, "\n") + 1; lines != len(tc.want) {
				t.Errorf("error has %d lines, want one per problem (%d):\n%s", lines, len(tc.want), msg)
			}
			if strings.Contains(msg, "s3cret-value") {
				t.Errorf("error shows the webhook secret:\n%s", msg)
			}
		})
	}
}

func TestCommandServeRefusesBadAppKey(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sec1, err := x509.MarshalECPrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, tc := range []struct {
		name, keyFile, want string
	}{
		{"missing", filepath.Join(dir, "no-such.pem"), "does not exist"},
		{"EC key", writeFile(t, dir, "ec.pem", string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})), 0o600), "not an RSA private key"},
		{"EC key in PKCS#8", writeFile(t, dir, "ec8.pem", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})), 0o600), "not an RSA private key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := t.TempDir()
			cfg := writeFile(t, t.TempDir(), "deployd.yaml", fmt.Sprintf(`
listen: 127.0.0.1:0
data_dir: %s
log: {level: error, format: json}
reconcile_interval: 0
github:
  webhook_secret: %s
  app:
    id: 12345
    private_key_file: %s
`, data, testSecret, tc.keyFile), 0o600)
			_, _, err := cliRun([]string{"serve", "--config", cfg}, nil)
			if err == nil {
				t.Fatal("serve started with a bad App key")
			}
			for _, want := range []string{"github.app.private_key_file", tc.keyFile, tc.want} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("serve: %v\nwant it to contain %q", err, want)
				}
			}
		})
	}
}
