package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/deployd/deployd/configs"
	"github.com/deployd/deployd/deployer"
)

// Client defaults.
const (
	defaultAPIURL     = "http://127.0.0.1:8080"
	defaultWait       = 10 * time.Minute
	clientTimeout     = 30 * time.Second
	maxClientResponse = 8 << 20
)

// apiFlags are the flags every API client command takes.
type apiFlags struct {
	config    *string
	url       *string
	token     *string
	tokenFile *string
}

func addAPIFlags(flags *flag.FlagSet) apiFlags {
	return apiFlags{
		config:    flags.String("config", defaultConfigPath, "configuration file, for the listen address when --url is not given"),
		url:       flags.String("url", "", "deployd's base URL (default: http://LISTEN from --config, else "+defaultAPIURL+")"),
		token:     flags.String("token", "", "API token (default: $DEPLOYD_TOKEN); prefer the variable or --token-file, which other users cannot see"),
		tokenFile: flags.String("token-file", "", "file holding the API token"),
	}
}

// apiClient talks to deployd's HTTP API.
type apiClient struct {
	base  string // without trailing slash
	token string
	http  *http.Client
}

// newAPIClient resolves the URL and the token. A token is optional for
// reading when the status is public.
func newAPIClient(e env, f apiFlags, explicitConfig bool) (*apiClient, error) {
	base, err := apiURL(e, f, explicitConfig)
	if err != nil {
		return nil, err
	}
	tok := *f.token
	if tok == "" && *f.tokenFile != "" {
		b, err := os.ReadFile(*f.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("read --token-file: %w", err)
		}
		tok = strings.TrimSpace(string(b))
	}
	if tok == "" {
		tok = strings.TrimSpace(e.getenv("DEPLOYD_TOKEN"))
	}
	return &apiClient{base: base, token: tok, http: &http.Client{}}, nil
}

// apiURL is --url, else http://LISTEN of the configuration, else the
// default. A configuration that cannot be loaded is an error only when
// --config was given.
func apiURL(e env, f apiFlags, explicitConfig bool) (string, error) {
	if *f.url != "" {
		u, err := url.Parse(*f.url)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return "", usageError{fmt.Sprintf("--url %q: want http(s)://HOST[:PORT]", *f.url)}
		}
		return strings.TrimRight(*f.url, "/"), nil
	}
	cfg, err := configs.Load(*f.config, e.getenv)
	if err != nil {
		if explicitConfig {
			return "", err
		}
		if !errors.Is(err, fs.ErrNotExist) {
			fmt.Fprintf(e.stderr, "note: could not read %s (%v); using %s\n", *f.config, err, defaultAPIURL)
		}
		return defaultAPIURL, nil
	}
	return "http://" + dialAddr(cfg.Listen), nil
}

// dialAddr turns a listen address into one to connect to: an unspecified
// host becomes the loopback address.
func dialAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port)
}

// apiError is an error answer of the API.
type apiError struct {
	Status     int                  `json:"-"`
	Message    string               `json:"error"`
	Hint       string               `json:"hint"`
	RequestID  string               `json:"request_id"`
	Deployment *deployer.Deployment `json:"deployment"`
}

func (e *apiError) Error() string {
	msg := fmt.Sprintf("%s (HTTP %d)", e.Message, e.Status)
	if e.Hint != "" {
		msg += "\nhint: " + e.Hint
	}
	return msg
}

// do sends a request and decodes a 2xx answer into out. An error answer
// becomes an *apiError.
func (c *apiClient) do(ctx context.Context, method, path string, body any, timeout time.Duration, out any) (int, http.Header, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return 0, nil, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "deployd-cli/"+version)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		// The error names the URL, which holds no secret.
		return 0, nil, fmt.Errorf("%s %s: %w", method, c.base+path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxClientResponse))
	if err != nil {
		return resp.StatusCode, resp.Header, fmt.Errorf("read answer of %s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		ae := &apiError{Status: resp.StatusCode}
		if json.Unmarshal(data, ae) != nil || ae.Message == "" {
			ae.Message = strings.TrimSpace(string(data))
			if len(ae.Message) > 200 {
				ae.Message = ae.Message[:200] + "..."
			}
			if ae.Message == "" {
				ae.Message = http.StatusText(resp.StatusCode)
			}
		}
		return resp.StatusCode, resp.Header, ae
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, resp.Header, fmt.Errorf("decode answer of %s %s: %w", method, path, err)
		}
	}
	return resp.StatusCode, resp.Header, nil
}

// parseNamed parses flags around one positional argument, the service
// name, which may come before or after the flags.
func parseNamed(flags *flag.FlagSet, args []string) (string, error) {
	var name string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return "", exitError{code: 0}
		}
		return "", usageError{err.Error()}
	}
	rest := flags.Args()
	if name == "" && len(rest) > 0 {
		name, rest = rest[0], rest[1:]
	}
	if len(rest) > 0 {
		return "", usageError{fmt.Sprintf("unexpected argument %q", rest[0])}
	}
	if name == "" {
		return "", usageError{"name the service, e.g. deployd " + strings.TrimPrefix(flags.Name(), "deployd ") + " backend"}
	}
	return name, nil
}

// flagGiven reports whether the flag was set on the command line.
func flagGiven(flags *flag.FlagSet, name string) bool {
	given := false
	flags.Visit(func(f *flag.Flag) {
		if f.Name == name {
			given = true
		}
	})
	return given
}

// writeResult is the answer of a deploy or rollback.
type writeResult struct {
	deployer.Deployment
}

// writeCall is one deploy or rollback from the command line.
type writeCall struct {
	verb    string // deploy | rollback
	service string
	body    any
	wait    bool
	timeout time.Duration
	dryRun  bool
}

func deployCommand(ctx context.Context, e env, args []string) error {
	flags := newFlags(e, "deploy")
	af := addAPIFlags(flags)
	tag := flags.String("tag", "", "tag to deploy (default: the service's first tag)")
	digest := flags.String("digest", "", "exact digest to deploy, sha256:...")
	wait := flags.Bool("wait", false, "wait for the deployment to end; exit non-zero unless it succeeded")
	timeout := flags.Duration("timeout", defaultWait, "how long --wait waits (at most 10m)")
	dryRun := flags.Bool("dry-run", false, "resolve and record what would be deployed, change nothing")
	force := flags.Bool("force", false, "deploy even when the digest already runs")
	name, err := parseNamed(flags, args)
	if err != nil {
		return err
	}
	if *tag != "" && *digest != "" {
		return usageError{"give --tag or --digest, not both"}
	}
	if *tag != "" && !deployer.ValidTag(*tag) {
		return usageError{"--tag: " + deployer.ErrBadTag.Error()}
	}
	if *digest != "" && !deployer.ValidDigest(*digest) {
		return usageError{"--digest: " + deployer.ErrBadDigest.Error()}
	}
	c, err := newAPIClient(e, af, flagGiven(flags, "config"))
	if err != nil {
		return err
	}
	body := map[string]any{}
	if *tag != "" {
		body["tag"] = *tag
	}
	if *digest != "" {
		body["digest"] = *digest
	}
	if *force {
		body["force"] = true
	}
	return c.write(ctx, e, writeCall{verb: "deploy", service: name, body: body, wait: *wait, timeout: *timeout, dryRun: *dryRun})
}

func rollbackCommand(ctx context.Context, e env, args []string) error {
	flags := newFlags(e, "rollback")
	af := addAPIFlags(flags)
	wait := flags.Bool("wait", false, "wait for the rollback to end; exit non-zero unless it succeeded")
	timeout := flags.Duration("timeout", defaultWait, "how long --wait waits (at most 10m)")
	dryRun := flags.Bool("dry-run", false, "resolve and record what would be deployed, change nothing")
	name, err := parseNamed(flags, args)
	if err != nil {
		return err
	}
	c, err := newAPIClient(e, af, flagGiven(flags, "config"))
	if err != nil {
		return err
	}
	return c.write(ctx, e, writeCall{verb: "rollback", service: name, wait: *wait, timeout: *timeout, dryRun: *dryRun})
}

// write sends a deploy or rollback and reports its outcome. It returns a
// non-zero exit when the request was refused, the deployment failed, or
// --wait ran out.
func (c *apiClient) write(ctx context.Context, e env, w writeCall) error {
	if c.token == "" {
		return usageError{"no API token: set DEPLOYD_TOKEN or pass --token-file (make one with deployd token issue --scope deploy:" + w.service + ")"}
	}
	if w.wait && (w.timeout <= 0 || w.timeout > 10*time.Minute) {
		return usageError{"--timeout must be from 1s to 10m"}
	}
	q := url.Values{}
	timeout := clientTimeout
	if w.wait {
		q.Set("wait", w.timeout.String())
		timeout += w.timeout
	}
	if w.dryRun {
		q.Set("dry_run", "true")
	}
	path := "/api/v1/services/" + url.PathEscape(w.service) + "/" + w.verb
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var res writeResult
	status, hdr, err := c.do(ctx, http.MethodPost, path, w.body, timeout, &res)
	var ae *apiError
	if errors.As(err, &ae) {
		fmt.Fprintln(e.stderr, "deployd:", ae.Message)
		if ae.Hint != "" {
			fmt.Fprintln(e.stderr, "hint:", ae.Hint)
		}
		if ae.Deployment != nil {
			printSteps(e.stderr, *ae.Deployment)
		}
		return exitError{code: 1}
	}
	if err != nil {
		return err
	}
	d := res.Deployment
	where := c.base + hdr.Get("Location")
	if status == http.StatusAccepted {
		fmt.Fprintf(e.stdout, "deployment %d of %s queued (%s): %s\n", d.ID, d.Service, target(d), where)
		return nil
	}
	fmt.Fprintf(e.stdout, "deployment %d of %s %s: %s", d.ID, d.Service, d.State, target(d))
	if d.StartedAt != nil && d.FinishedAt != nil {
		fmt.Fprintf(e.stdout, " in %s", d.FinishedAt.Sub(*d.StartedAt).Round(100*time.Millisecond))
	}
	if d.DryRun {
		fmt.Fprint(e.stdout, " (dry run)")
	}
	fmt.Fprintln(e.stdout)
	printSteps(e.stdout, d)
	return nil
}

// target is what a deployment deploys, for messages.
func target(d deployer.Deployment) string {
	switch {
	case d.Tag != "" && d.Digest != "":
		return "tag " + d.Tag + " " + deployer.ShortDigest(d.Digest)
	case d.Tag != "":
		return "tag " + d.Tag
	case d.Digest != "":
		return "digest " + deployer.ShortDigest(d.Digest)
	}
	return "default tag"
}

func printSteps(w io.Writer, d deployer.Deployment) {
	for _, s := range d.Steps {
		fmt.Fprintf(w, "  %-11s %-7s %8s  %s\n", s.Name, s.Outcome, s.Duration.Round(time.Millisecond), s.Message)
	}
}

// serviceRow is what GET /api/v1/services says of one service.
type serviceRow struct {
	Name           string                 `json:"name"`
	Image          string                 `json:"image"`
	Status         deployer.ServiceStatus `json:"status"`
	LastDeployment *deployer.Deployment   `json:"last_deployment"`
}

func statusCommand(ctx context.Context, e env, args []string) error {
	flags := newFlags(e, "status")
	af := addAPIFlags(flags)
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	c, err := newAPIClient(e, af, flagGiven(flags, "config"))
	if err != nil {
		return err
	}
	var body struct {
		Services []serviceRow `json:"services"`
	}
	if _, _, err := c.do(ctx, http.MethodGet, "/api/v1/services", nil, clientTimeout, &body); err != nil {
		var ae *apiError
		if errors.As(err, &ae) {
			fmt.Fprintln(e.stderr, "deployd:", ae.Message)
			if ae.Hint != "" {
				fmt.Fprintln(e.stderr, "hint:", ae.Hint)
			}
			return exitError{code: 1}
		}
		return err
	}
	printStatus(e.stdout, body.Services, time.Now())
	return nil
}

// printStatus writes the services as a table.
func printStatus(w io.Writer, rows []serviceRow, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tSTATE\tTAG\tDIGEST\tLAST DEPLOY\tWHEN")
	for _, r := range rows {
		state, last, when := "never deployed", "-", "-"
		if d := r.LastDeployment; d != nil {
			state = string(d.State)
			last = fmt.Sprintf("#%d %s", d.ID, triggerText(d.Trigger))
			at := d.QueuedAt
			if d.FinishedAt != nil {
				at = *d.FinishedAt
			}
			when = ago(now.Sub(at))
		}
		if r.Status.Degraded {
			state += " (degraded)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, state, orDash(r.Status.Tag), orDash(deployer.ShortDigest(r.Status.Digest)), last, when)
	}
	_ = tw.Flush() // w is the terminal; nothing to do on error
}

func triggerText(t deployer.Trigger) string {
	switch {
	case t.Subject != "":
		return string(t.Kind) + " by " + t.Subject
	case t.Event != "":
		return string(t.Kind) + " " + t.Event
	}
	return string(t.Kind)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// ago renders a duration in the past the way people say it.
func ago(d time.Duration) string {
	switch {
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}
