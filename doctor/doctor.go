// Package doctor runs deployd's live checks (SPEC §7, deployd doctor):
// configuration, webhook secret, data_dir, the GitHub Actions OIDC issuer
// (with api.oidc), the GitHub App's key, JWT, installation and token, and
// for each service every registry credential source in order, each line
// OK, WARN, FAIL or SKIP with the fix. The
// explanations are those of the packages that talk to GitHub and the
// registry: github.Error's message and hint, and the credential chain's
// (registry.Chain.ExplainDenied and ExplainUnavailable). The registry
// itself is reached through the resolver and the error classifier the
// pipeline uses, passed in by the command.
package doctor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/deployd/deployd/auth/github"
	"github.com/deployd/deployd/auth/registry"
	"github.com/deployd/deployd/configs"
	"github.com/deployd/deployd/deployer"
)

// DefaultTimeout bounds each live check (one GitHub call, one registry
// resolve) when Config.Timeout is 0.
const DefaultTimeout = 15 * time.Second

// minWebhookSecretLen is the shortest webhook secret doctor accepts without
// a warning.
const minWebhookSecretLen = 16

// Resolver looks up the digest a tag points at in a registry, with exactly
// the credential given; deployer/podman's RegistryResolver implements it.
type Resolver interface {
	Digest(ctx context.Context, ref string, cred deployer.Credential, insecure bool) (string, error)
}

// Config is what Run needs.
type Config struct {
	// Out receives the report.
	Out io.Writer
	// Getenv expands ${VAR} in the configuration; nil means os.Getenv.
	Getenv func(string) string
	// Timeout bounds each live check; 0 means DefaultTimeout.
	Timeout time.Duration
	// Resolver is the registry digest lookup the pipeline uses. Required.
	Resolver Resolver
	// Classify reads an error of Resolver for image, made with source's
	// credential, as the pipeline does (deployer/podman's
	// ClassifyRegistryError): ClassAuth when the registry refused it.
	// Required.
	Classify func(image, source string, err error) *deployer.Failure
}

// Counts counts the check lines of each outcome.
type Counts struct{ OK, Warn, Fail, Skip int }

// Run runs every check against the configuration at path, in order, and
// writes one line per check to cfg.Out: the outcome, the check and a
// detail, and for WARN and FAIL an indented "fix:" line, then a summary.
// It stops after the first check when the configuration does not load.
// It never writes a secret: tokens and keys stay in their redacting types
// and are revealed only to the registry. It fails only when cfg lacks a
// dependency; what the checks find is in the counts.
func Run(ctx context.Context, cfg Config, path string) (Counts, error) {
	if cfg.Out == nil || cfg.Resolver == nil || cfg.Classify == nil {
		return Counts{}, errors.New("doctor: Out, Resolver and Classify are required")
	}
	d := &checker{w: cfg.Out, getenv: cfg.Getenv, timeout: cfg.Timeout, resolver: cfg.Resolver, classify: cfg.Classify}
	if d.getenv == nil {
		d.getenv = os.Getenv
	}
	if d.timeout <= 0 {
		d.timeout = DefaultTimeout
	}
	return d.run(ctx, path), nil
}

// checkStatus is the outcome of one check.
type checkStatus string

// The outcomes of a check. WARN is a problem that does not stop deploys (a
// group-readable key, a short webhook secret, a credential source that the
// registry refuses while the next one works); only FAIL makes doctor exit
// non-zero, unless --strict.
const (
	statusOK   checkStatus = "OK"
	statusWarn checkStatus = "WARN"
	statusFail checkStatus = "FAIL"
	statusSkip checkStatus = "SKIP"
)

// checker runs the checks of one Run. It is used once, by one goroutine.
type checker struct {
	w        io.Writer
	getenv   func(string) string
	timeout  time.Duration // per check
	resolver Resolver
	classify func(image, source string, err error) *deployer.Failure
	counts   Counts
}

// report writes one check's line, and its fix when there is one.
func (d *checker) report(st checkStatus, check, detail, fix string) {
	switch st {
	case statusOK:
		d.counts.OK++
	case statusWarn:
		d.counts.Warn++
	case statusFail:
		d.counts.Fail++
	case statusSkip:
		d.counts.Skip++
	}
	fmt.Fprintf(d.w, "%-4s  %s: %s\n", st, check, detail)
	if fix != "" && (st == statusWarn || st == statusFail) {
		fmt.Fprintf(d.w, "      fix: %s\n", fix)
	}
}

// run runs every check against the configuration at path and returns the
// counts. It stops after the first check when the configuration does not
// load.
func (d *checker) run(ctx context.Context, path string) Counts {
	cfg := d.checkConfig(path)
	if cfg != nil {
		d.checkWebhookSecret(cfg)
		d.checkDataDir(cfg)
		d.checkOIDC(ctx, cfg)
		st := d.checkApp(ctx, cfg)
		d.checkRegistries(ctx, cfg, st)
	}
	c := d.counts
	fmt.Fprintf(d.w, "\n%d OK, %d WARN, %d FAIL, %d SKIP\n", c.OK, c.Warn, c.Fail, c.Skip)
	return c
}

// checkConfig loads and validates the configuration; it returns nil, after
// listing every problem, when that fails.
func (d *checker) checkConfig(path string) *configs.Config {
	cfg, err := configs.Load(path, d.getenv)
	if err != nil {
		var ve *configs.ValidationError
		if !errors.As(err, &ve) {
			d.report(statusFail, "config", err.Error(), "give the configuration file with --config PATH")
			return nil
		}
		d.report(statusFail, "config", fmt.Sprintf("%s has %d problem(s); later checks need a valid configuration", path, len(ve.Problems)), "")
		for _, p := range ve.Problems {
			fmt.Fprintf(d.w, "      %s\n", p)
		}
		fmt.Fprintf(d.w, "      fix: correct the problems above; deployd check-config --config %s checks again\n", path)
		return nil
	}
	d.report(statusOK, "config", fmt.Sprintf("%s: %s, %s", path,
		plural(len(cfg.Services), "service"), plural(len(cfg.Registries), "registry")), "")
	return cfg
}

// checkWebhookSecret checks that the secret is set and strong, and that its
// file is private. The secret itself is never printed.
func (d *checker) checkWebhookSecret(cfg *configs.Config) {
	const check = "webhook secret"
	gh := cfg.GitHub
	n := len(gh.WebhookSecret.Reveal())
	from := "github.webhook_secret"
	if gh.WebhookSecretFile != "" {
		from = gh.WebhookSecretFile
	}
	if n == 0 {
		d.report(statusFail, check, "not set: deployd refuses unsigned webhooks",
			"write a random secret (openssl rand -hex 32) to a file, point github.webhook_secret_file at it and enter the same secret in the webhook's settings on GitHub")
		return
	}
	var warnings, fixes []string
	if n < minWebhookSecretLen {
		warnings = append(warnings, fmt.Sprintf("only %d characters long", n))
		fixes = append(fixes, fmt.Sprintf("use a random secret of at least %d characters (openssl rand -hex 32), here and in the webhook's settings on GitHub", minWebhookSecretLen))
	}
	if gh.WebhookSecretFile != "" {
		if fi, err := os.Stat(gh.WebhookSecretFile); err == nil && fi.Mode().Perm()&0o077 != 0 {
			warnings = append(warnings, fmt.Sprintf("the file is readable by group or others (mode %04o)", fi.Mode().Perm()))
			fixes = append(fixes, "chmod 600 "+gh.WebhookSecretFile)
		}
	}
	if len(warnings) > 0 {
		d.report(statusWarn, check, fmt.Sprintf("set from %s, but %s", from, strings.Join(warnings, "; ")), strings.Join(fixes, "; "))
		return
	}
	d.report(statusOK, check, fmt.Sprintf("set from %s (%d characters)", from, n), "")
}

// checkDataDir checks that data_dir, which holds the database and the
// registry auth file, lets neither group nor others in.
func (d *checker) checkDataDir(cfg *configs.Config) {
	const check = "data_dir"
	fi, err := os.Stat(cfg.DataDir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		d.report(statusOK, check, cfg.DataDir+" does not exist yet; deployd serve creates it with mode 0700", "")
	case err != nil:
		d.report(statusFail, check, err.Error(), "check that deployd's user can reach "+cfg.DataDir)
	case fi.Mode().Perm()&0o077 != 0:
		d.report(statusWarn, check, fmt.Sprintf("%s lets group or others in (mode %04o); deployd's files in it are 0600, but the directory should be private too",
			cfg.DataDir, fi.Mode().Perm()), DataDirFix(cfg.DataDir))
	default:
		d.report(statusOK, check, fmt.Sprintf("%s, mode %04o", cfg.DataDir, fi.Mode().Perm()), "")
	}
}

// DataDirOpenMode returns the permission bits of data_dir when they let
// group or others in, 0 when they do not or dir does not exist yet: for
// serve's start-up warning, which DataDirFix completes.
func DataDirOpenMode(dir string) (fs.FileMode, error) {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("check data_dir: %w", err)
	}
	if fi.Mode().Perm()&0o077 == 0 {
		return 0, nil
	}
	return fi.Mode().Perm(), nil
}

// DataDirFix says how to make data_dir private.
func DataDirFix(dir string) string {
	return "chmod 700 " + dir + " (under systemd: StateDirectoryMode=0700)"
}

// appState is what the GitHub App checks leave for the registry checks.
type appState struct {
	// app is nil when no App is configured or its key does not load.
	app *github.App
	// why github_app credentials cannot be tried at all; "" when they can.
	why string
	// repoProblem says, per service repository, why github_app credentials
	// cannot be tried for it (installation not found, mint failed).
	repoProblem map[string]string
}

// The GitHub App checks, in order.
const (
	checkAppKey       = "App key"
	checkAppJWT       = "App JWT"
	checkInstallation = "installation"
	checkToken        = "installation token"
)

// checkApp runs the App checks: key file, JWT, installation, token.
func (d *checker) checkApp(ctx context.Context, cfg *configs.Config) appState {
	skip := func(from int, why string) {
		for _, c := range []string{checkAppKey, checkAppJWT, checkInstallation, checkToken}[from:] {
			d.report(statusSkip, c, why, "")
		}
	}
	if cfg.GitHub.App.ID == 0 {
		skip(0, "no GitHub App configured (github.app)")
		return appState{why: "no GitHub App is configured"}
	}
	key := d.checkKey(cfg.GitHub.App.PrivateKeyFile)
	if key == nil {
		skip(1, "needs the App key")
		return appState{why: "the App key does not load (see App key above)"}
	}
	app, err := github.NewApp(github.AppConfig{
		ID:             cfg.GitHub.App.ID,
		Key:            key,
		APIURL:         cfg.GitHub.APIURL,
		InstallationID: cfg.GitHub.App.InstallationID,
		Timeout:        d.timeout,
		Logger:         zerolog.Nop(),
	})
	if err != nil {
		d.report(statusFail, checkAppJWT, err.Error(), "check github.app.id and github.api_url")
		skip(2, "needs the App")
		return appState{why: "the App is misconfigured (see App JWT above)"}
	}
	if !d.checkJWT(ctx, app) {
		skip(2, "needs GitHub to accept the App JWT")
		return appState{app: app, why: "GitHub refused the App JWT (see App JWT above)"}
	}
	st := appState{app: app, repoProblem: map[string]string{}}
	infos := d.checkInstallations(ctx, cfg, app, st.repoProblem)
	d.checkTokens(ctx, cfg, app, infos, st.repoProblem)
	return st
}

// checkKey checks that the App key file is readable, an RSA key, and not
// readable by every user of the host. It returns the key, or nil when it
// does not load.
func (d *checker) checkKey(path string) *github.PrivateKey {
	const fromSettings = "download a private key from the App's settings page on GitHub (Private keys) and point github.app.private_key_file at it"
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		d.report(statusFail, checkAppKey, path+" does not exist", fromSettings)
		return nil
	case errors.Is(err, fs.ErrPermission):
		d.report(statusFail, checkAppKey, path+" is not readable by this user (permission denied)",
			fmt.Sprintf("make the user deployd runs as the owner (chown USER %s) and chmod 600 %s", path, path))
		return nil
	case err != nil:
		d.report(statusFail, checkAppKey, fmt.Sprintf("stat key file: %v", err), fromSettings)
		return nil
	}
	key, _, err := github.LoadPrivateKey(path)
	if err != nil {
		d.report(statusFail, checkAppKey, err.Error(), fromSettings)
		return nil
	}
	mode := fi.Mode().Perm()
	detail := fmt.Sprintf("%s: RSA %d-bit key, mode %04o", path, key.Public().N.BitLen(), mode)
	switch {
	case mode&0o007 != 0:
		d.report(statusFail, checkAppKey, detail+": every user of this host can read or change the key that signs as the App",
			fmt.Sprintf("chmod 600 %s (owned by the user deployd runs as)", path))
	case mode&0o070 != 0:
		d.report(statusWarn, checkAppKey, detail+": readable or writable by the file's group",
			fmt.Sprintf("chmod 600 %s unless only deployd's own group can read it", path))
	default:
		d.report(statusOK, checkAppKey, detail, "")
	}
	return key
}

// checkJWT asks GitHub who the App is (GET /app) and reports whether GitHub
// accepts the App's JWT.
func (d *checker) checkJWT(ctx context.Context, app *github.App) bool {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	info, err := app.Verify(ctx)
	if err != nil {
		msg, fix := explainGitHub(err, "check github.app.id, github.api_url and this host's network")
		d.report(statusFail, checkAppJWT, msg, fix)
		return false
	}
	d.report(statusOK, checkAppJWT, fmt.Sprintf("GitHub accepts the JWT of App %d: %q (%s), owned by %s, at %s",
		app.ID(), info.Name, info.Slug, info.Owner, app.APIURL()), "")
	return true
}

// checkInstallations finds the installation of the App: the configured one,
// else the one covering each service's repository. It records repositories
// without an installation in problems and returns what GitHub says about
// each installation found, by id.
func (d *checker) checkInstallations(ctx context.Context, cfg *configs.Config, app *github.App, problems map[string]string) map[int64]github.InstallationInfo {
	infos := map[int64]github.InstallationInfo{}
	repos := serviceRepositories(cfg, func(*configs.Registry) bool { return true })
	if id := cfg.GitHub.App.InstallationID; id > 0 {
		info, err := d.installation(ctx, app, id)
		if err != nil {
			msg, fix := explainGitHub(err, "check github.app.installation_id")
			d.report(statusFail, checkInstallation, msg, fix)
			for _, r := range repos {
				problems[r] = "the installation was not found (see installation above)"
			}
			return infos
		}
		infos[id] = info
		d.report(statusOK, checkInstallation, fmt.Sprintf("installation %d (github.app.installation_id) %s", id, describeInstallation(info)), "")
		return infos
	}
	if len(repos) == 0 {
		d.report(statusSkip, checkInstallation, "no service names a repository to look it up for", "")
		return infos
	}
	for _, repo := range repos {
		check := checkInstallation + " for " + repo
		owner, name, _ := strings.Cut(repo, "/")
		id, err := d.installationForRepo(ctx, app, owner, name)
		if err != nil {
			msg, fix := explainGitHub(err, "check the service's repository and github.api_url")
			d.report(statusFail, check, msg, fix)
			problems[repo] = "the App's installation on " + repo + " was not found (see installation above)"
			continue
		}
		info, ok := infos[id]
		if !ok {
			// Account and permissions are a courtesy; the id is what counts.
			if i, err := d.installation(ctx, app, id); err == nil {
				info, ok = i, true
				infos[id] = i
			}
		}
		detail := fmt.Sprintf("installation %d", id)
		if ok {
			detail += " " + describeInstallation(info)
		}
		d.report(statusOK, check, detail, "")
	}
	return infos
}

// installation fetches one installation within the check timeout.
func (d *checker) installation(ctx context.Context, app *github.App, id int64) (github.InstallationInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	info, err := app.Installation(ctx, id)
	if err != nil {
		return github.InstallationInfo{}, fmt.Errorf("get installation %d: %w", id, err)
	}
	return info, nil
}

// installationForRepo looks up the installation covering owner/name within
// the check timeout.
func (d *checker) installationForRepo(ctx context.Context, app *github.App, owner, name string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	id, err := app.InstallationForRepo(ctx, owner, name)
	if err != nil {
		return 0, fmt.Errorf("find installation of %s/%s: %w", owner, name, err)
	}
	return id, nil
}

// describeInstallation says whose installation it is and what it covers.
func describeInstallation(info github.InstallationInfo) string {
	s := "on " + info.Account
	switch info.RepositorySelection {
	case "all":
		s += ", all repositories"
	case "selected":
		s += ", selected repositories"
	}
	return s
}

// checkTokens mints, for the repository of each service on a registry that
// uses github_app, the packages: read token the registry will get. It
// records repositories whose mint failed in problems.
func (d *checker) checkTokens(ctx context.Context, cfg *configs.Config, app *github.App, infos map[int64]github.InstallationInfo, problems map[string]string) {
	repos := serviceRepositories(cfg, func(r *configs.Registry) bool {
		return slices.Contains(r.Credentials, configs.CredentialGitHubApp)
	})
	if len(repos) == 0 {
		d.report(statusSkip, checkToken, "no registry lists github_app in its credentials", "")
		return
	}
	for _, repo := range repos {
		check := checkToken + " for " + repo
		if p := problems[repo]; p != "" {
			d.report(statusSkip, check, "needs the installation", "")
			continue
		}
		id, expires, err := d.mint(ctx, app, repo)
		if err != nil {
			msg, fix := explainGitHub(err, "check the App's permissions (Packages: Read-only) and its installation")
			d.report(statusFail, check, msg, fix)
			problems[repo] = "minting its token failed (see installation token above)"
			continue
		}
		detail := fmt.Sprintf("packages: read, down-scoped to %s (installation %d), expires %s (in %s)",
			repo, id, expires.UTC().Format(time.RFC3339), strings.TrimSuffix(time.Until(expires).Round(time.Minute).String(), "0s"))
		info, known := infos[id]
		if level := info.Permissions["packages"]; known && info.Permissions != nil && level == "" {
			d.report(statusWarn, check, detail+", but the installation lists no packages permission",
				"in the App's settings (Permissions & events) grant Packages: Read-only, then accept the new permissions on the installation")
			continue
		} else if known && level != "" {
			detail += fmt.Sprintf("; the installation grants packages: %s", level)
		}
		d.report(statusOK, check, detail, "")
	}
}

// mint resolves the installation of repo and mints its token within the
// check timeout. The token stays in the App's cache, where the registry
// checks find it; it is not returned.
func (d *checker) mint(ctx context.Context, app *github.App, repo string) (int64, time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	id, err := app.ResolveInstallation(ctx, 0, repo)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("resolve installation: %w", err)
	}
	_, expires, err := app.InstallationToken(ctx, id, []string{repo})
	if err != nil {
		return id, time.Time{}, fmt.Errorf("mint token: %w", err)
	}
	return id, expires, nil
}

// sourceResult is what one credential source gave for one service.
type sourceResult struct {
	source string
	status checkStatus // OK, FAIL (did not work) or SKIP (not tried)
	word   string      // for the summary: "OK", "denied", "failed", "not checked"
	detail string
	fix    string
}

// checkRegistries checks, for each service and each credential source of
// its registry in order, that the registry grants a pull token and that the
// default tag resolves to a digest, then says which source deploys will use.
func (d *checker) checkRegistries(ctx context.Context, cfg *configs.Config, st appState) {
	chain, err := doctorChain(cfg, st.app)
	if err != nil {
		d.report(statusFail, "registry credentials", err.Error(), "check the credentials of each registry")
		return
	}
	for _, name := range sortedNames(cfg.Services) {
		d.checkService(ctx, cfg, chain, st, name, cfg.Services[name])
	}
}

// doctorChain builds the credential chain of the configuration. Without a
// usable App, github_app is left out of the chain (doctor reports it as not
// checked), so that the other sources can still be checked.
func doctorChain(cfg *configs.Config, app *github.App) (*registry.Chain, error) {
	regs := make(map[string]registry.HostConfig, len(cfg.Registries))
	for host, r := range cfg.Registries {
		sources := r.Credentials
		if app == nil {
			sources = slices.DeleteFunc(slices.Clone(sources), func(s string) bool { return s == registry.SourceGitHubApp })
			if len(sources) == 0 {
				continue
			}
		}
		regs[host] = registry.HostConfig{Username: r.Username, Sources: sources, TokenFile: r.TokenFile}
	}
	chain, err := registry.NewChain(registry.ChainConfig{Registries: regs, App: app, Logger: zerolog.Nop()})
	if err != nil {
		return nil, fmt.Errorf("build credential chain: %w", err)
	}
	return chain, nil
}

// checkService checks every credential source of one service's registry.
func (d *checker) checkService(ctx context.Context, cfg *configs.Config, chain *registry.Chain, st appState, name string, s *deployer.Service) {
	check := "pull " + name
	img, err := configs.ParseImage(s.Image)
	if err != nil {
		d.report(statusFail, check, err.Error(), "fix services."+name+".image")
		return
	}
	tag := s.DefaultTag
	if tag == "" || configs.IsTagPattern(tag) {
		d.report(statusSkip, check, fmt.Sprintf("the first tag %q is a pattern: there is no tag to resolve", tag),
			"make the first of services."+name+".tags a plain tag for manual deploys and reconciling")
		return
	}
	reg := cfg.Registries[img.Host]
	if reg == nil {
		d.report(statusFail, check, "registry "+img.Host+" is not configured", "add it under registries")
		return
	}
	ref := img.String() + ":" + tag
	req := deployer.CredentialRequest{Host: img.Host, Image: img.String(), Repository: s.Repository}

	results := make([]sourceResult, len(reg.Credentials))
	chosen := -1
	for i, src := range reg.Credentials {
		results[i] = d.trySource(ctx, chain, st, req, ref, reg, src)
		if chosen < 0 && results[i].status == statusOK {
			chosen = i
		}
	}

	var path []string
	skipped := 0
	for i, r := range results {
		c := check + " via " + r.source
		path = append(path, r.source+" "+r.word)
		switch {
		case r.status == statusOK:
			d.report(statusOK, c, r.detail, "")
		case r.status == statusSkip:
			skipped++
			d.report(statusSkip, c, r.detail, "")
		case chosen >= 0:
			// Deploys work through another source: a warning, not a failure.
			role := "deploys fall back to " + results[chosen].source
			if i > chosen {
				role = "this fallback would not help if " + results[chosen].source + " stopped working"
			}
			d.report(statusWarn, c, r.detail+"; "+role, r.fix)
		default:
			d.report(statusFail, c, r.detail, r.fix)
		}
	}
	summary := strings.Join(path, " → ")
	switch {
	case chosen == 0:
		d.report(statusOK, check, fmt.Sprintf("%s: deploys will use %s", summary, results[chosen].source), "")
	case chosen > 0:
		d.report(statusWarn, check, fmt.Sprintf("%s: deploys will use %s", summary, results[chosen].source),
			"deploys work; fix the sources marked above to restore the preferred one, or list "+results[chosen].source+" first in registries."+img.Host+".credentials")
	case skipped == len(results):
		d.report(statusSkip, check, summary+": no credential source could be checked", "")
	default:
		d.report(statusFail, check, fmt.Sprintf("%s: no credential source can pull %s", summary, ref),
			"make one of the credential sources above work")
	}
}

// trySource gets a credential from one source and resolves ref with it.
func (d *checker) trySource(ctx context.Context, chain *registry.Chain, st appState, req deployer.CredentialRequest, ref string, reg *configs.Registry, src string) sourceResult {
	r := sourceResult{source: src, status: statusFail, word: "failed"}
	if src == registry.SourceGitHubApp {
		why := st.why
		if why == "" {
			why = st.repoProblem[req.Repository]
		}
		if why != "" {
			r.status, r.word, r.detail = statusSkip, "not checked", "not tried: "+why
			return r
		}
	}
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	cred, err := chain.SourceCredential(ctx, req, src)
	if err != nil {
		e := chain.ExplainUnavailable(req.Host, src, err)
		r.detail, r.fix = e.Detail, e.Fix
		return r
	}
	digest, err := d.resolver.Digest(ctx, ref, cred, reg.Insecure)
	if err != nil {
		f := d.classify(req.Image, src, err)
		switch f.Class {
		case deployer.ClassAuth:
			reason := registry.Answer(err)
			if reason == "" {
				reason = f.Error()
			}
			e := chain.ExplainDenied(req.Host, req.Image, src, reason)
			r.word, r.detail, r.fix = "denied", e.Detail, e.Fix
		case deployer.ClassPodman: // not classified: no podman involved here
			r.detail, r.fix = f.Error(), "check the service's image and that the registry answers at "+req.Host
		default:
			r.detail, r.fix = f.Error(), f.Hint
		}
		return r
	}
	r.status, r.word = statusOK, "OK"
	r.detail = fmt.Sprintf("pull token granted; %s is %s", ref, digest)
	return r
}

// explainGitHub returns a failed GitHub call's plain-words message and fix.
func explainGitHub(err error, defaultFix string) (msg, fix string) {
	var ge *github.Error
	if errors.As(err, &ge) {
		fix = ge.Hint
		if fix == "" {
			fix = defaultFix
		}
		return ge.Message, fix
	}
	return err.Error(), defaultFix
}

// serviceRepositories returns the distinct repositories of the services
// whose image is on a registry that keep accepts, sorted.
func serviceRepositories(cfg *configs.Config, keep func(*configs.Registry) bool) []string {
	var repos []string
	for _, s := range cfg.Services {
		img, err := configs.ParseImage(s.Image)
		if err != nil || s.Repository == "" {
			continue
		}
		if r := cfg.Registries[img.Host]; r != nil && keep(r) && !slices.Contains(repos, s.Repository) {
			repos = append(repos, s.Repository)
		}
	}
	slices.Sort(repos)
	return repos
}

// sortedNames returns the keys of m, sorted.
func sortedNames[V any](m map[string]V) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// plural returns "1 service" or "2 services" ("registry" becomes
// "registries").
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	if strings.HasSuffix(noun, "y") {
		return fmt.Sprintf("%d %sies", n, strings.TrimSuffix(noun, "y"))
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
