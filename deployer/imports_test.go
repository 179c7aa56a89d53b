package deployer_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/deployd/deployd"

// goPackage is what go list says about one of the module's packages.
type goPackage struct {
	ImportPath string
	Imports    []string // of the package itself, not of its tests
	Deps       []string // everything it builds on, recursively
}

// listPackages runs go list over the whole module.
func listPackages(t *testing.T) map[string]goPackage {
	t.Helper()
	root, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	cmd := exec.Command("go", "list", "-json=ImportPath,Imports,Deps", "./...")
	cmd.Dir = strings.TrimSuffix(strings.TrimSpace(string(root)), "/go.mod")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v: %s", err, stderr.String())
	}
	pkgs := map[string]goPackage{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p goPackage
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		pkgs[p.ImportPath] = p
	}
	return pkgs
}

// ours returns the paths in paths that are packages of this module.
func ours(paths []string) []string {
	var own []string
	for _, p := range paths {
		if p == module || strings.HasPrefix(p, module+"/") {
			own = append(own, p)
		}
	}
	return own
}

// TestImportRules keeps the layout the README's Development section
// describes: deployer is the vocabulary and imports nothing of the project
// (nor containers/image, which the podman executor brings); the store and
// the podman executor build on deployer alone; GitHub Deployments
// reporting and doctor import only what they report on or check, and demo
// only the API token key it issues its token with; each
// other package imports only what the README says it does; and only
// the command wires the podman executor, so that another executor can take
// its place, and runs doctor and demo.
func TestImportRules(t *testing.T) {
	pkgs := listPackages(t)
	var (
		deployer      = module + "/deployer"
		sqlite        = module + "/deployer/sqlite"
		podman        = module + "/deployer/podman"
		ghdeployments = module + "/deployer/ghdeployments"
		recovery      = module + "/deployer/recovery"
		doctor        = module + "/doctor"
		demo          = module + "/demo"
		command       = module + "/cmd/deployd"
		configs       = module + "/configs"
		github        = module + "/auth/github"
		registry      = module + "/auth/registry"
		apitoken      = module + "/auth/apitoken"
		oidc          = module + "/auth/oidc"
		actionstest   = module + "/auth/oidc/actionstest"
		auth          = module + "/auth"
		server        = module + "/server"
		httperr       = module + "/server/httperr"
		metrics       = module + "/server/metrics"
		webhook       = module + "/webhook"
		notify        = module + "/notify"
		attest        = module + "/attest"
		attesttest    = module + "/attest/attesttest"
		fleet         = module + "/fleet"
		natsembed     = module + "/fleet/natsembed"
	)
	for _, name := range []string{deployer, sqlite, podman, ghdeployments, recovery, doctor, demo, command, configs, github, registry, apitoken, oidc, actionstest, auth, server, httperr, metrics, webhook, notify, attest, attesttest, fleet, natsembed} {
		if _, ok := pkgs[name]; !ok {
			t.Fatalf("go list does not know %s: the rules below name a package that moved", name)
		}
	}
	if own := ours(pkgs[deployer].Imports); len(own) > 0 {
		t.Errorf("deployer imports %v; it must import nothing of the project", own)
	}
	for _, dep := range pkgs[deployer].Deps {
		if strings.HasPrefix(dep, "github.com/containers/") {
			t.Errorf("deployer builds on %s; registry and podman code belongs in deployer/podman", dep)
		}
	}
	// Of the project, each of these may import only the packages listed.
	allowed := map[string][]string{
		sqlite:        {deployer},
		podman:        {deployer},
		ghdeployments: {deployer, github},
		recovery:      {deployer, github},
		doctor:        {deployer, configs, github, registry, oidc},
		demo:          {apitoken},
		configs:       {deployer},
		auth:          {},
		github:        {auth},
		apitoken:      {auth},
		oidc:          {},
		actionstest:   {},
		registry:      {deployer, github, auth},
		httperr:       {deployer},
		webhook:       {deployer, configs, httperr},
		server:        {deployer, httperr, github, registry},
		metrics:       {deployer, github, registry},
		notify:        {deployer},
		attest:        {deployer},
		attesttest:    {},
		fleet:         {deployer},
		natsembed:     {},
	}
	for _, name := range slices.Sorted(maps.Keys(allowed)) {
		for _, imp := range ours(pkgs[name].Imports) {
			if !slices.Contains(allowed[name], imp) {
				t.Errorf("%s imports %s; of the project it may import only %v", name, imp, allowed[name])
			}
		}
	}
	var names []string
	for name := range pkgs {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if name == command {
			continue
		}
		if slices.Contains(pkgs[name].Imports, podman) {
			t.Errorf("%s imports deployer/podman; only cmd/deployd may (others speak deployer's Executor)", name)
		}
		if slices.Contains(pkgs[name].Imports, doctor) {
			t.Errorf("%s imports doctor; only cmd/deployd may (doctor is the deployd doctor command's checks)", name)
		}
		if slices.Contains(pkgs[name].Imports, demo) {
			t.Errorf("%s imports demo; only cmd/deployd may (demo is the deployd demo command)", name)
		}
	}
}
