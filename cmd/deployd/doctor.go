package main

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

	"github.com/deployd/deployd/auth"
	"github.com/deployd/deployd/configs"
	"github.com/deployd/deployd/deployer"
)

// doctorCheckTimeout bounds each live check of doctor (one GitHub call, one
// registry resolve).
const doctorCheckTimeout = 15 * time.Second

// minWebhookSecretLen is the shortest webhook secret doctor accepts without
// a warning.
const minWebhookSecretLen = 16

func doctorCommand(ctx context.Context, e env, args []string) error {
	flags := newFlags(e, "doctor")
	configPath := flags.String("config", defaultConfigPath, "configuration file")
	strict := flags.Bool("strict", false, "exit non-zero on warnings too, such as a registry that only accepts a fallback credential")
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	d := &doctor{
		w:        e.stdout,
		getenv:   e.getenv,
		timeout:  doctorCheckTimeout,
		resolver: deployer.RegistryResolver{UserAgent: "deployd/" + version + " doctor"},
	}
	counts := d.run(ctx, *configPath)
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("doctor: %w", err)
	}
	if counts.fail > 0 || (*strict && counts.warn > 0) {
		return exitError{code: 1}
	}
	return nil
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

// doctorCounts counts the lines of each outcome.
type doctorCounts struct{ ok, warn, fail, skip int }

// doctor runs deployd's live checks in order (SPEC §7) and writes one line
// per check to w: the outcome, the check and a detail, and for WARN and
// FAIL an indented "fix:" line. It never writes a secret: tokens and keys
// stay in their redacting types and are revealed only to the registry.
// A doctor is used once, by one goroutine.
type doctor struct {
	w        io.Writer
	getenv   func(string) string
	timeout  time.Duration     // per check
	resolver deployer.Resolver // the registry digest lookup the pipeline uses
	counts   doctorCounts
}

// report writes one check's line, and its fix when there is one.
func (d *doctor) report(st checkStatus, check, detail, fix string) {
	switch st {
	case statusOK:
		d.counts.ok++
	case statusWarn:
		d.counts.warn++
	case statusFail:
		d.counts.fail++
	case statusSkip:
		d.counts.skip++
	}
	fmt.Fprintf(d.w, "%-4s  %s: %s\n", st, check, detail)
	if fix != "" && (st == statusWarn || st == statusFail) {
		fmt.Fprintf(d.w, "      fix: %s\n", fix)
	}
}

// run runs every check against the configuration at path and returns the
// counts. It stops after the first check when the configuration does not
// load.
func (d *doctor) run(ctx context.Context, path string) doctorCounts {
	cfg := d.checkConfig(path)
	if cfg != nil {
		d.checkWebhookSecret(cfg)
		d.checkDataDir(cfg)
		st := d.checkApp(ctx, cfg)
		d.checkRegistries(ctx, cfg, st)
	}
	c := d.counts
	fmt.Fprintf(d.w, "\n%d OK, %d WARN, %d FAIL, %d SKIP\n", c.ok, c.warn, c.fail, c.skip)
	return c
}

// checkConfig loads and validates the configuration; it returns nil, after
// listing every problem, when that fails.
func (d *doctor) checkConfig(path string) *configs.Config {
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
func (d *doctor) checkWebhookSecret(cfg *configs.Config) {
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
func (d *doctor) checkDataDir(cfg *configs.Config) {
	const check = "data_dir"
	fi, err := os.Stat(cfg.DataDir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		d.report(statusOK, check, cfg.DataDir+" does not exist yet; deployd serve creates it with mode 0700", "")
	case err != nil:
		d.report(statusFail, check, err.Error(), "check that deployd's user can reach "+cfg.DataDir)
	case fi.Mode().Perm()&0o077 != 0:
		d.report(statusWarn, check, fmt.Sprintf("%s lets group or others in (mode %04o); deployd's files in it are 0600, but the directory should be private too",
			cfg.DataDir, fi.Mode().Perm()), dataDirFix(cfg.DataDir))
	default:
		d.report(statusOK, check, fmt.Sprintf("%s, mode %04o", cfg.DataDir, fi.Mode().Perm()), "")
	}
}

// appState is what the GitHub App checks leave for the registry checks.
type appState struct {
	// app is nil when no App is configured or its key does not load.
	app *auth.App
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
func (d *doctor) checkApp(ctx context.Context, cfg *configs.Config) appState {
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
	app, err := auth.NewApp(auth.AppConfig{
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
func (d *doctor) checkKey(path string) *auth.PrivateKey {
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
	key, _, err := auth.LoadPrivateKey(path)
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
func (d *doctor) checkJWT(ctx context.Context, app *auth.App) bool {
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
func (d *doctor) checkInstallations(ctx context.Context, cfg *configs.Config, app *auth.App, problems map[string]string) map[int64]auth.InstallationInfo {
	infos := map[int64]auth.InstallationInfo{}
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
func (d *doctor) installation(ctx context.Context, app *auth.App, id int64) (auth.InstallationInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	info, err := app.Installation(ctx, id)
	if err != nil {
		return auth.InstallationInfo{}, fmt.Errorf("get installation %d: %w", id, err)
	}
	return info, nil
}

// installationForRepo looks up the installation covering owner/name within
// the check timeout.
func (d *doctor) installationForRepo(ctx context.Context, app *auth.App, owner, name string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	id, err := app.InstallationForRepo(ctx, owner, name)
	if err != nil {
		return 0, fmt.Errorf("find installation of %s/%s: %w", owner, name, err)
	}
	return id, nil
}

// describeInstallation says whose installation it is and what it covers.
func describeInstallation(info auth.InstallationInfo) string {
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
func (d *doctor) checkTokens(ctx context.Context, cfg *configs.Config, app *auth.App, infos map[int64]auth.InstallationInfo, problems map[string]string) {
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
func (d *doctor) mint(ctx context.Context, app *auth.App, repo string) (int64, time.Time, error) {
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
func (d *doctor) checkRegistries(ctx context.Context, cfg *configs.Config, st appState) {
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
func doctorChain(cfg *configs.Config, app *auth.App) (*auth.Chain, error) {
	regs := make(map[string]auth.RegistryCredentials, len(cfg.Registries))
	for host, r := range cfg.Registries {
		sources := r.Credentials
		if app == nil {
			sources = slices.DeleteFunc(slices.Clone(sources), func(s string) bool { return s == auth.SourceGitHubApp })
			if len(sources) == 0 {
				continue
			}
		}
		regs[host] = auth.RegistryCredentials{Username: r.Username, Sources: sources, TokenFile: r.TokenFile}
	}
	chain, err := auth.NewChain(auth.ChainConfig{Registries: regs, App: app, Logger: zerolog.Nop()})
	if err != nil {
		return nil, fmt.Errorf("build credential chain: %w", err)
	}
	return chain, nil
}

// checkService checks every credential source of one service's registry.
func (d *doctor) checkService(ctx context.Context, cfg *configs.Config, chain *auth.Chain, st appState, name string, s *deployer.Service) {
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
	req := auth.CredentialRequest{Host: img.Host, Image: img.String(), Repository: s.Repository}

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
func (d *doctor) trySource(ctx context.Context, chain *auth.Chain, st appState, req auth.CredentialRequest, ref string, reg *configs.Registry, src string) sourceResult {
	r := sourceResult{source: src, status: statusFail, word: "failed"}
	if src == auth.SourceGitHubApp {
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
		r.detail = "no credential: " + err.Error()
		r.fix = credentialFix(err, src, reg)
		return r
	}
	dc := deployer.Credential{Source: src}
	if !cred.Anonymous() {
		dc.Username, dc.Password = cred.Username, deployer.Password(cred.Password.Reveal())
	}
	digest, err := d.resolver.Digest(ctx, ref, dc, reg.Insecure)
	if err != nil {
		f := deployer.ClassifyRegistryError(req.Image, src, err)
		switch f.Class {
		case deployer.ClassAuth:
			r.word = "denied"
			r.detail, r.fix = explainDenied(chain, req, src, registryAnswer(err), reg)
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

// registryAnswer returns the registry's own words at the end of a resolve
// error, such as "403 Forbidden" or "requested access to the resource is
// denied", for the parentheses of a plain-words explanation.
func registryAnswer(err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		msg = msg[i+2:]
	}
	return msg
}

// appPackageAccess says how an App installation token can come to read a
// private package, and what does not help.
const appPackageAccess = "make the package inherit access from a repository the App is installed on " +
	"(package settings → \"Inherit access from source repository\"), the only way an installation token can read a private package; " +
	"\"Manage Actions access\" grants workflows' GITHUB_TOKEN, not the App"

// explainDenied says in plain words what it means that the registry refused
// the credential of src, and how to fix it.
func explainDenied(chain *auth.Chain, req auth.CredentialRequest, src, reason string, reg *configs.Registry) (detail, fix string) {
	creds := "registries." + req.Host + ".credentials"
	switch src {
	case auth.SourceGitHubApp:
		// Chain.Explain adds "the token_file credential is used instead"
		// when one is configured; doctor says what really happens instead.
		detail = fmt.Sprintf("registry denied the GitHub App token for %s (%s): GitHub App installation tokens cannot read this private package", req.Image, reason)
		fix = "for the App to read it, " + appPackageAccess
		if !slices.Contains(reg.Credentials, auth.SourceTokenFile) {
			fix = "add token_file with a classic personal access token that has read:packages to " + creds +
				", after github_app (the reliable fix); or " + appPackageAccess
		}
	case auth.SourceTokenFile:
		detail = chain.Explain(req.Host, req.Image, src, reason)
		fix = fmt.Sprintf("put a classic personal access token with read:packages that can see %s in %s", req.Image, reg.TokenFile)
	default:
		detail = chain.Explain(req.Host, req.Image, src, reason)
		fix = "list github_app or token_file in " + creds
	}
	return detail, fix
}

// credentialFix says how to fix a source that could not produce a credential.
func credentialFix(err error, src string, reg *configs.Registry) string {
	var ge *auth.GitHubError
	if errors.As(err, &ge) && ge.Hint != "" {
		return ge.Hint
	}
	if src == auth.SourceTokenFile {
		return fmt.Sprintf("write a classic personal access token with read:packages to %s (the token alone on one line, mode 0600)", reg.TokenFile)
	}
	return "check the credentials of the registry"
}

// explainGitHub returns a failed GitHub call's plain-words message and fix.
func explainGitHub(err error, defaultFix string) (msg, fix string) {
	var ge *auth.GitHubError
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
