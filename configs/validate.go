package configs

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/containers/image/v5/docker/reference"

	"github.com/deployd/deployd/deployer"
)

// Problem is one thing wrong with a configuration.
type Problem struct {
	Path    string // YAML path, e.g. "services.backend.tags[0]"
	Line    int    // line in the file, 0 if unknown
	Message string // what is wrong; never contains a secret
}

// String returns "path (line N): message", or "path: message" without a line.
func (p Problem) String() string {
	if p.Line > 0 {
		return fmt.Sprintf("%s (line %d): %s", p.Path, p.Line, p.Message)
	}
	return p.Path + ": " + p.Message
}

// ValidationError lists every problem found in a configuration.
type ValidationError struct {
	Problems []Problem
}

// Error returns the problems one per line.
func (e *ValidationError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// newValidationError sorts problems by line, those without a line last.
func newValidationError(problems []Problem) *ValidationError {
	slices.SortStableFunc(problems, func(a, b Problem) int {
		if (a.Line == 0) != (b.Line == 0) {
			if a.Line == 0 {
				return 1
			}
			return -1
		}
		return cmp.Compare(a.Line, b.Line)
	})
	return &ValidationError{Problems: problems}
}

// Validation vocabularies.
var (
	logLevels    = []string{"trace", "debug", "info", "warn", "error"}
	logFormats   = []string{"json", "console"}
	strategies   = []string{deployer.StrategyContainer, deployer.StrategySystemd, deployer.StrategyCommand}
	credentials  = []string{CredentialGitHubApp, CredentialTokenFile, CredentialNone}
	repositoryRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}$`)
	// serviceNameRE also fits podman container names, API paths and token scopes.
	serviceNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)
)

// Validate checks the configuration, defaults already applied (Parse does
// that; code that builds a Config calls ApplyDefaults first). It returns nil
// or a *ValidationError listing every problem with its YAML path, and line
// when the Config came from Parse. It does not read files.
func (c *Config) Validate() error {
	v := &validator{c: c}
	v.top()
	v.fleet()
	if v.c.Fleet.Role == FleetRoleAgent {
		v.agentHoldsNoGitHubSecrets()
	} else {
		v.github()
	}
	v.registries()
	v.oidc()
	v.trust()
	v.retention()
	for _, name := range slices.Sorted(maps.Keys(c.Services)) {
		v.service(name, c.Services[name])
	}
	v.notifications()
	v.releaseSets()
	if len(v.problems) == 0 {
		return nil
	}
	return newValidationError(v.problems)
}

type validator struct {
	c        *Config
	problems []Problem
}

// add adds a problem at path, unless the value there could not be read:
// that was reported already.
func (v *validator) add(path, format string, args ...any) {
	if v.unread(path) {
		return
	}
	v.problems = append(v.problems, v.c.problem(path, fmt.Sprintf(format, args...)))
}

// addKey adds a problem with the key at path itself, which stands even when
// its value could not be read.
func (v *validator) addKey(path, format string, args ...any) {
	v.problems = append(v.problems, v.c.problem(path, fmt.Sprintf(format, args...)))
}

// unread reports whether the value at one of paths, or at a key above it,
// could not be read from the file, so that checks that depend on it would
// only repeat that problem.
func (v *validator) unread(paths ...string) bool {
	for _, p := range paths {
		for {
			if v.c.unread[p] {
				return true
			}
			i := strings.LastIndexAny(p, ".[")
			if i < 0 {
				break
			}
			p = p[:i]
		}
	}
	return false
}

// problem returns a Problem at path with the line of path or its nearest
// ancestor in the file.
func (c *Config) problem(path, msg string) Problem {
	return Problem{Path: path, Line: c.line(path), Message: msg}
}

func (c *Config) line(path string) int {
	for path != "" {
		if l, ok := c.lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return 0
}

func (v *validator) top() {
	c := v.c
	if err := checkListen(c.Listen); err != nil {
		v.add("listen", "%v", err)
	}
	if c.PublicURL != "" {
		if err := checkHTTPURL(c.PublicURL); err != nil {
			v.add("public_url", "%v", err)
		}
	}
	if c.DataDir == "" {
		v.add("data_dir", "required")
	}
	if !slices.Contains(logLevels, c.Log.Level) {
		v.add("log.level", "unknown level %q (one of %s)", c.Log.Level, strings.Join(logLevels, ", "))
	}
	if !slices.Contains(logFormats, c.Log.Format) {
		v.add("log.format", "unknown format %q (one of %s)", c.Log.Format, strings.Join(logFormats, ", "))
	}
	if c.ReconcileInterval < 0 {
		v.add("reconcile_interval", "must not be negative (0 turns reconciling off)")
	}
	if c.GitHub.DeliveryRecoveryInterval < 0 {
		v.add("github.delivery_recovery_interval", "must not be negative (0 turns delivery recovery off)")
	}
	if c.Podman.Command == "" {
		v.add("podman.command", "required")
	}
}

func (v *validator) github() {
	gh := &v.c.GitHub
	if err := checkHTTPURL(gh.APIURL); err != nil {
		v.add("github.api_url", "%v", err)
	}
	switch {
	case gh.WebhookSecret != "":
	case gh.WebhookSecretFile != "":
		v.add("github.webhook_secret_file", "the file %s is empty or was not read: deployd refuses to accept unsigned webhooks", gh.WebhookSecretFile)
	case !v.unread("github.webhook_secret_file"):
		v.add("github.webhook_secret", "required: set github.webhook_secret or github.webhook_secret_file (deployd refuses to accept unsigned webhooks)")
	}
	app := gh.App
	if app.configured() {
		if app.ID <= 0 {
			v.add("github.app.id", "required with github.app.private_key_file: the App ID, a positive number")
		}
		if app.PrivateKeyFile == "" {
			v.add("github.app.private_key_file", "required with github.app.id: the path of the App's private key (PEM)")
		}
	}
	if app.InstallationID < 0 {
		v.add("github.app.installation_id", "must not be negative (0: from the webhook payload or looked up)")
	}
	if gh.Deployments && !app.configured() && !v.unread("github.app.id", "github.app.private_key_file") {
		v.add("github.deployments", "reporting to GitHub's Deployments API needs github.app")
	}
}

func (v *validator) registries() {
	for _, host := range slices.Sorted(maps.Keys(v.c.Registries)) {
		r := v.c.Registries[host]
		p := "registries." + host
		if r == nil {
			continue // ApplyDefaults replaces nil entries
		}
		if !validRegistryHost(host) {
			v.addKey(p, "%q is not a registry host (HOST or HOST:PORT, e.g. ghcr.io or 127.0.0.1:5000)", host)
		}
		if r.Username == "" {
			v.add(p+".username", "required")
		}
		if len(r.Credentials) == 0 {
			v.add(p+".credentials", "list at least one source: %s (none: anonymous)", strings.Join(credentials, ", "))
		}
		seen := map[string]bool{}
		for i, src := range r.Credentials {
			cp := fmt.Sprintf("%s.credentials[%d]", p, i)
			switch {
			case !slices.Contains(credentials, src):
				v.add(cp, "unknown credential source %q (one of %s)", src, strings.Join(credentials, ", "))
			case seen[src]:
				v.add(cp, "%s listed twice", src)
			case src == CredentialTokenFile && r.TokenFile == "" && !v.unread(p+".token_file"):
				v.add(cp, "token_file source needs %s.token_file", p)
			case src == CredentialGitHubApp && (v.c.GitHub.App.ID <= 0 || v.c.GitHub.App.PrivateKeyFile == "") &&
				!v.unread("github.app.id", "github.app.private_key_file"):
				v.add(cp, "github_app source needs github.app.id and github.app.private_key_file")
			}
			seen[src] = true
		}
	}
}

func (v *validator) service(name string, s *deployer.Service) {
	p := "services." + name
	if s == nil {
		v.add(p, "empty service: image, repository and a strategy are needed")
		return
	}
	if !serviceNameRE.MatchString(name) {
		v.addKey(p, "service name %q must be 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit", name)
	}
	if s.Image == "" {
		v.add(p+".image", "required: the image repository, e.g. ghcr.io/OWNER/NAME")
	} else if img, err := ParseImage(s.Image); err != nil {
		v.add(p+".image", "%v", err)
	} else if _, ok := v.c.Registries[img.Host]; !ok && !v.unread("registries") {
		v.add(p+".image", "registry %s is not configured: add it under registries (only images on configured registries are pulled)", img.Host)
	}
	if s.Repository == "" {
		v.add(p+".repository", "required: the GitHub repository OWNER/NAME allowed to trigger deploys")
	} else if !repositoryRE.MatchString(s.Repository) || strings.HasSuffix(s.Repository, "/.") || strings.HasSuffix(s.Repository, "/..") {
		v.add(p+".repository", "%q is not a GitHub repository OWNER/NAME", s.Repository)
	}
	v.tags(p, s)
	if w := s.On.WorkflowRun; w != nil {
		v.workflowRun(p+".on.workflow_run", w, p+".tags[0]")
	}
	if !v.unread(p + ".strategy") {
		v.strategy(p, s)
	}
	if s.Health.URL != "" {
		if err := checkHTTPURL(s.Health.URL); err != nil {
			v.add(p+".health.url", "%v", err)
		}
	}
	if s.Health.Timeout <= 0 {
		v.add(p+".health.timeout", "must be positive")
	}
	if s.Health.Interval <= 0 {
		v.add(p+".health.interval", "must be positive")
	}
	if s.KeepImages < 1 {
		v.add(p+".keep_images", "must be at least 1 (the running image)")
	}
	v.verify(p, s)
	v.hosts(p, s)
}

func (v *validator) tags(p string, s *deployer.Service) {
	if len(s.Tags) == 0 {
		v.add(p+".tags", "list at least one tag; the first is the default for manual deploys")
		return
	}
	for i, t := range s.Tags {
		if err := checkTagPattern(t); err != nil {
			v.add(fmt.Sprintf("%s.tags[%d]", p, i), "%v", err)
		} else if i == 0 && IsTagPattern(t) {
			v.add(p+".tags[0]", "the first tag is the default for manual deploys and reconciling: it must be a plain tag, not the pattern %q", t)
		}
	}
}

// workflowRun checks w at path p; defaultTag is the path of the tag that an
// empty w.Tag stands for.
func (v *validator) workflowRun(p string, w *deployer.WorkflowRun, defaultTag string) {
	if len(w.Workflows) == 0 {
		v.add(p+".workflows", "list at least one workflow name or path (.github/workflows/FILE.yml)")
	}
	for i, name := range w.Workflows {
		if strings.TrimSpace(name) == "" {
			v.add(fmt.Sprintf("%s.workflows[%d]", p, i), "empty workflow name")
		}
	}
	for i, b := range w.Branches {
		bp := fmt.Sprintf("%s.branches[%d]", p, i)
		if strings.TrimSpace(b) == "" {
			v.add(bp, "empty branch name")
		} else if _, err := path.Match(b, ""); err != nil {
			v.add(bp, "invalid branch pattern %q (path.Match syntax: * ? [a-z] \\x)", b)
		}
	}
	v.runEvents(p+".events", w.Events)
	if w.Tag == "" {
		if v.unread(defaultTag) {
			return
		}
		v.add(p+".tag", "required: a template such as sha-{{.ShortSHA}} (or make the service's first tag a plain tag)")
		return
	}
	if _, err := ExecuteTag(w.Tag, sampleTagData()); err != nil {
		v.add(p+".tag", "%v (fields: .SHA .ShortSHA .Branch .RunID .RunNumber)", err)
	}
}

func (v *validator) strategy(p string, s *deployer.Service) {
	switch s.Strategy {
	case deployer.StrategyContainer:
		if s.Container.Name == "" {
			v.add(p+".container.name", "required for strategy container")
		} else if !serviceNameRE.MatchString(s.Container.Name) {
			v.add(p+".container.name", "%q is not a container name (letters, digits, '_', '.', '-')", s.Container.Name)
		}
		for i, a := range s.Container.Args {
			if a == "--name" || strings.HasPrefix(a, "--name=") {
				v.add(fmt.Sprintf("%s.container.args[%d]", p, i), "set the name with container.name, not --name")
			}
		}
	case deployer.StrategySystemd:
		u := s.Systemd.Unit
		switch {
		case u == "":
			v.add(p+".systemd.unit", "required for strategy systemd, e.g. v7-backend.service")
		case strings.HasPrefix(u, "-") || strings.ContainsAny(u, "/ \t\n"):
			v.add(p+".systemd.unit", "%q is not a unit name", u)
		}
	case deployer.StrategyCommand:
		if (len(s.Command) == 0 || s.Command[0] == "") && !v.unread(p+".command[0]") {
			v.add(p+".command", "required for strategy command: the program and its arguments, e.g. [\"/usr/local/bin/restart-backend\"]")
		}
	default:
		v.add(p+".strategy", "unknown strategy %q (one of %s)", s.Strategy, strings.Join(strategies, ", "))
	}
}

// checkListen checks a host:port listen address.
func checkListen(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not HOST:PORT (e.g. 127.0.0.1:8080)", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q: port must be a number from 0 to 65535", addr)
	}
	return nil
}

// checkHTTPURL checks an absolute http or https URL.
// The URL is quoted in the error unless it may contain credentials.
func checkHTTPURL(s string) error {
	if strings.Contains(s, "@") {
		return errors.New("URL must not contain credentials (user@ or user:password@)")
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an absolute http(s) URL", s)
	}
	return nil
}

// validRegistryHost reports whether host is a registry HOST[:PORT] as it
// appears at the start of a fully qualified image name.
func validRegistryHost(host string) bool {
	named, err := reference.ParseNormalizedNamed(host + "/x")
	return err == nil && reference.Domain(named) == host
}

// runEvents checks on.workflow_run.events: known events that only the
// repository itself or its maintainers start, each listed once.
func (v *validator) runEvents(p string, events []string) {
	allowed := DeployableRunEvents()
	if len(events) == 0 {
		v.add(p, "list at least one event: %s", strings.Join(allowed, ", "))
		return
	}
	seen := map[string]bool{}
	for i, e := range events {
		ep := fmt.Sprintf("%s[%d]", p, i)
		switch {
		case CheckRunEvent(e) != nil:
			v.add(ep, "%v", CheckRunEvent(e))
		case seen[e]:
			v.add(ep, "%s listed twice", e)
		}
		seen[e] = true
	}
}

// hosts checks a service's fleet hosts and rollout policy: each host a
// name that can be a NATS subject token, none twice.
func (v *validator) hosts(p string, s *deployer.Service) {
	seen := map[string]bool{}
	for i, h := range s.Hosts {
		switch {
		case checkHostName(h) != nil:
			v.add(fmt.Sprintf("%s.hosts[%d]", p, i), "%v", checkHostName(h))
		case seen[h]:
			v.add(fmt.Sprintf("%s.hosts[%d]", p, i), "host %q is listed twice", h)
		}
		seen[h] = true
	}
	if s.Rollout != deployer.RolloutAllAtOnce && s.Rollout != deployer.RolloutOneByOne {
		v.add(p+".rollout", "must be %s or %s, not %q", deployer.RolloutAllAtOnce, deployer.RolloutOneByOne, s.Rollout)
	}
}

// validHostName reports whether h is a fleet host name: 1 to 64 of
// [A-Za-z0-9_-], so that it is one NATS subject token.
func validHostName(h string) bool {
	return h != "" && len(h) <= 64 &&
		strings.Trim(h, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") == ""
}
