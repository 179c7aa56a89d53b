package configs

import (
	"maps"
	"path/filepath"
	"slices"

	"github.com/deployd/deployd/deployer"
)

// Trust roots (trust.root) that are not a file path.
const (
	TrustPublicGood = "public-good" // Sigstore's public-good instance, through TUF
	TrustGitHub     = "github"      // GitHub's own Sigstore instance, through TUF
)

// DefaultTrustRoot is trust.root's default.
const DefaultTrustRoot = TrustPublicGood

// Trust says which Sigstore trust root image attestations are verified
// against (services with verify.attestations warn or required).
type Trust struct {
	// Root is TrustPublicGood (default), TrustGitHub or the path of a
	// trusted_root.json file.
	Root string `yaml:"root"`
	// TUFURL is the TUF repository the trusted root of public-good or
	// github comes from (default: the instance's own).
	TUFURL string `yaml:"tuf_url"`
	// TUFRootFile is the TUF root.json the client starts from: required for
	// github (GitHub's TUF root), optional for public-good (sigstore-go
	// embeds it).
	TUFRootFile string `yaml:"tuf_root_file"`
}

// TrustFile reports whether trust.root names a trusted_root.json file
// rather than a TUF instance.
func (t Trust) TrustFile() bool { return t.Root != TrustPublicGood && t.Root != TrustGitHub }

// TUFCacheDir returns where the TUF client caches metadata: <data_dir>/tuf.
func (c *Config) TUFCacheDir() string { return filepath.Join(c.DataDir, "tuf") }

// Verifying reports whether any service verifies its images.
func (c *Config) Verifying() bool {
	for _, s := range c.Services {
		if s != nil && s.Verify.Enabled() {
			return true
		}
	}
	return false
}

// verifyDefaults fills a service's verify policy: off, the service's
// repository, SLSA provenance v1.
func verifyDefaults(s *deployer.Service) {
	setString(&s.Verify.Attestations, deployer.AttestationsOff)
	setString(&s.Verify.Repository, s.Repository)
	setString(&s.Verify.PredicateType, deployer.DefaultPredicateType)
}

// verify checks a service's verify policy.
func (v *validator) verify(p string, s *deployer.Service) {
	problems := s.Verify.Check()
	for _, key := range slices.Sorted(maps.Keys(problems)) {
		if key == "repository" && s.Verify.Repository == s.Repository {
			continue // services.NAME.repository says it already
		}
		v.add(p+".verify."+key, "%v", problems[key])
	}
	if s.Verify.Enabled() && len(s.Hosts) > 0 {
		// A fleet service deploys through its hosts' agents, which hold no
		// App key and cannot fetch attestations: refuse rather than deploy
		// unverified under a policy that says required.
		v.add(p+".verify.attestations", "not supported for a service with hosts: fleet agents cannot fetch attestations; verify on a single-host deployd or set attestations: off")
	}
	if s.Verify.Enabled() && !v.c.GitHub.App.configured() {
		v.add(p+".verify.attestations", "verifying attestations needs github.app: deployd fetches them from GitHub with an installation token (attestations: read)")
	}
}

// trust checks trust; only when some service verifies.
func (v *validator) trust() {
	t := v.c.Trust
	if !v.c.Verifying() {
		return
	}
	if t.Root == "" {
		v.add("trust.root", "required: %s, %s or the path of a trusted_root.json", TrustPublicGood, TrustGitHub)
	}
	if t.TrustFile() && (t.TUFURL != "" || t.TUFRootFile != "") {
		v.add("trust.root", "a trusted_root.json file is used as it is: tuf_url and tuf_root_file apply to %s and %s only", TrustPublicGood, TrustGitHub)
	}
	if t.Root == TrustGitHub && t.TUFRootFile == "" {
		v.add("trust.tuf_root_file", "required with root github: GitHub's TUF root.json, which deployd starts trusting from")
	}
	if t.TUFURL != "" {
		if err := checkHTTPURL(t.TUFURL); err != nil {
			v.add("trust.tuf_url", "%v", err)
		}
	}
}
