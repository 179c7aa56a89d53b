// Command loadtest measures deployd's webhook intake under concurrent load
// against a bare net/http handler, in the same run on the same machine
// (SPEC §10: at least half the bare handler's throughput, p99 at most twice
// its p99, RSS under 40 MB after 100k deliveries).
//
// It builds deployd (or takes -deployd), starts it as `deployd serve` with a
// temporary configuration and data directory on 127.0.0.1, and starts the
// bare handler (HMAC-SHA256 + json.Unmarshal, nothing else) as a second
// process of its own binary. Then, for each server in turn, it drives -conns
// concurrent keep-alive connections that send unique signed registry_package
// deliveries (each with its own delivery id and a nonce in the body, so that
// deduplication never short-circuits) for -duration or -requests requests,
// whichever comes first, and prints throughput, latency percentiles, the
// ratios and each server's RSS. Every delivery matches a service and queues a
// deployment; the service's registry is 127.0.0.1:9, where nothing listens,
// so the deployments fail fast and back off and intake is what is measured.
// Finally it tops deployd up to -rss-after deliveries (bounded by
// -rss-timeout) and reports its RSS.
//
// Run it from anywhere in the repository:
//
//	go run ./scripts/loadtest
//	go run ./scripts/loadtest -duration 5s -rss-after 0
//
// The flood mode measures instead what unsigned bodies cost: it keeps
// 16 unsigned 24 MiB bodies in flight at once, trickled so that they are
// read concurrently, sends signed deliveries meanwhile, and reports
// deployd's peak RSS and how many signed deliveries were accepted
// (go run ./scripts/loadtest flood -help):
//
//	go run ./scripts/loadtest flood
//
// The retention mode sends 1,000,000 signed deliveries through deployd with
// retention on, with a deliveries window that the run crosses several
// times, and reports the p99 of the first 10% against the last 10%, the
// database file's size at checkpoints and deployd's RSS
// (go run ./scripts/loadtest retention -help):
//
//	go run ./scripts/loadtest retention
//
// All traffic goes to 127.0.0.1. The client and both servers share the
// machine's CPUs, so absolute figures are lower than on a dedicated server;
// the ratios compare like with like.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/deployd/deployd/webhook/webhooktest"
)

// secret is the webhook secret both servers verify.
const secret = "loadtest-webhook-secret-0123456789"

// fixturePath is the delivery body, relative to the module root.
const fixturePath = "webhook/testdata/registry_package.published.container-tagged.json"

func main() {
	modes := map[string]func(context.Context, []string, io.Writer) error{"flood": runFlood, "retention": runRetention}
	if mode, ok := modes[arg(1)]; ok {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := mode(ctx, os.Args[2:], os.Stdout)
		stop()
		if err != nil {
			fmt.Fprintf(os.Stderr, "loadtest %s: %v\n", os.Args[1], err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "serve-bare" {
		if err := serveBare(); err != nil {
			fmt.Fprintln(os.Stderr, "loadtest serve-bare:", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(1)
	}
}

// arg is the command line's argument i, "" when there is none.
func arg(i int) string {
	if i < len(os.Args) {
		return os.Args[i]
	}
	return ""
}

// options are the command-line flags.
type options struct {
	duration   time.Duration
	rounds     int
	requests   int
	conns      int
	deployd    string
	logLevel   string
	dataDir    string
	rssAfter   int
	rssTimeout time.Duration
}

func parseOptions(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "how long to load each server (at most 2m)")
	fs.IntVar(&o.rounds, "rounds", 1, "load each server this many times, alternating which goes first (at most 10)")
	fs.IntVar(&o.requests, "requests", 200_000, "at most this many requests per server and round")
	fs.IntVar(&o.conns, "conns", 16, "concurrent keep-alive connections (at most 256)")
	fs.StringVar(&o.deployd, "deployd", "", "deployd binary to run; default: build ./cmd/deployd")
	fs.StringVar(&o.logLevel, "log-level", "warn", "deployd's log.level (its JSON logs go to a file in the temporary directory)")
	fs.StringVar(&o.dataDir, "data-dir", "", "parent of deployd's temporary data directory; default the system temp dir (its disk decides the cost of a sync)")
	fs.IntVar(&o.rssAfter, "rss-after", 100_000, "top deployd up to this many deliveries, then report its RSS; 0 skips")
	fs.DurationVar(&o.rssTimeout, "rss-timeout", 2*time.Minute, "time budget for the top-up (at most 10m)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case o.duration <= 0 || o.duration > 2*time.Minute:
		return o, errors.New("-duration must be between 0 and 2m")
	case o.rounds <= 0 || o.rounds > 10:
		return o, errors.New("-rounds must be between 1 and 10")
	case o.requests <= 0:
		return o, errors.New("-requests must be positive")
	case o.conns <= 0 || o.conns > 256:
		return o, errors.New("-conns must be between 1 and 256")
	case o.rssAfter < 0 || o.rssAfter > 1_000_000:
		return o, errors.New("-rss-after must be between 0 and 1000000")
	case o.rssTimeout <= 0 || o.rssTimeout > 10*time.Minute:
		return o, errors.New("-rss-timeout must be between 0 and 10m")
	}
	return o, nil
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	o, err := parseOptions(args, os.Stderr)
	if err != nil {
		return err
	}
	root, bodies, tmp, err := prepare(ctx, o.dataDir)
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	bin, err := deploydBinary(ctx, o.deployd, root, tmp)
	if err != nil {
		return err
	}
	bare, err := startBare(ctx)
	if err != nil {
		return err
	}
	defer bare.stop()
	deployd, err := startDeployd(ctx, bin, tmp, o.logLevel)
	if err != nil {
		return err
	}
	defer deployd.stop()

	fmt.Fprintf(stdout, "deployd webhook intake load test: %d keep-alive connections per server, unique signed %d-byte registry_package deliveries, %d round(s) of %s or %d requests per server.\n",
		o.conns, bodies.Size(), o.rounds, o.duration, o.requests)
	fmt.Fprintf(stdout, "The client, the bare server and deployd (log level %s) share this machine's %d CPUs: figures are lower than on a dedicated server, the ratios compare like with like. CPU/req is the server process's own CPU time per request.\n\n",
		o.logLevel, runtime.NumCPU())

	servers := []*server{{name: "bare", child: bare}, {name: "deployd", child: deployd}}
	for round := range o.rounds {
		order := servers
		if round%2 == 1 { // alternate who goes first, against drift in the machine's load
			order = []*server{servers[1], servers[0]}
		}
		for _, srv := range order {
			if err := srv.load(ctx, bodies, o.conns, o.duration, o.requests); err != nil {
				return err
			}
		}
		if o.rounds > 1 {
			b, d := servers[0].rounds[round], servers[1].rounds[round]
			fmt.Fprintf(stdout, "round %d: bare %.0f req/s p99 %s; deployd %.0f req/s p99 %s; throughput ratio %.2f, p99 ratio %.2f\n",
				round+1, b.throughput(), round3(b.percentile(99)), d.throughput(), round3(d.percentile(99)),
				d.throughput()/b.throughput(), float64(d.percentile(99))/float64(b.percentile(99)))
		}
	}
	if o.rounds > 1 {
		fmt.Fprintln(stdout)
	}
	w := bufio.NewWriter(stdout)
	fmt.Fprintf(w, "%-8s %9s %7s %9s %9s %9s %9s %9s %9s\n", "server", "requests", "errors", "req/s", "CPU/req", "p50", "p99", "p99.9", "RSS")
	for _, srv := range servers {
		r := srv.total()
		fmt.Fprintf(w, "%-8s %9d %7d %9.0f %9s %9s %9s %9s %9s\n", srv.name, r.ok+r.errors, r.errors, r.throughput(), round3(srv.cpuPerRequest()),
			round3(r.percentile(50)), round3(r.percentile(99)), round3(r.percentile(99.9)), rss(srv.child.pid()))
	}
	br, dr := servers[0].total(), servers[1].total()
	tr := dr.throughput() / br.throughput()
	pr := float64(dr.percentile(99)) / float64(br.percentile(99))
	fmt.Fprintf(w, "\ndeployd/bare throughput: %.2f (target at least 0.5) %s\n", tr, verdict(tr >= 0.5))
	fmt.Fprintf(w, "deployd p99 / bare p99:  %.2f (target at most 2)   %s\n", pr, verdict(pr <= 2))
	fmt.Fprintf(w, "deployd/bare CPU per request: %.2f\n", float64(servers[1].cpuPerRequest())/float64(servers[0].cpuPerRequest()))
	for _, srv := range servers {
		if err := srv.total().firstErr; err != nil {
			fmt.Fprintf(w, "first %s error: %v\n", srv.name, err)
		}
	}
	w.Flush()

	if o.rssAfter > 0 {
		sent := dr.ok + dr.errors
		if more := o.rssAfter - sent; more > 0 {
			fmt.Fprintf(stdout, "\nsending deployd %d more deliveries (to %d in all, at most %s)...\n", more, o.rssAfter, o.rssTimeout)
			top, err := load(ctx, deployd.url, bodies, o.conns, o.rssTimeout, more)
			if err != nil {
				return err
			}
			sent += top.ok + top.errors
			if top.errors > 0 {
				fmt.Fprintf(stdout, "%d errors; first: %v\n", top.errors, top.firstErr)
			}
		}
		// Let the runtime return what it can, as it would between bursts.
		time.Sleep(2 * time.Second)
		fmt.Fprintf(stdout, "deployd RSS after %d deliveries: %s (peak %s; target under 40 MB)\n", sent, rss(deployd.pid()), peakRSS(deployd.pid()))
	}
	return nil
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT MET"
}

func round3(d time.Duration) string {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	}
	return d.Round(time.Microsecond).String()
}

// server is one server under test and its load phases.
type server struct {
	name   string
	child  *child
	rounds []result
	cpu    time.Duration // the process's CPU time during the phases
}

// load runs one load phase against the server and records its CPU time.
func (s *server) load(ctx context.Context, b *bodies, conns int, d time.Duration, maxRequests int) error {
	cpu0 := processCPU(s.child.pid())
	r, err := load(ctx, s.child.url, b, conns, d, maxRequests)
	if err != nil {
		return fmt.Errorf("%s: %w", s.name, err)
	}
	s.cpu += processCPU(s.child.pid()) - cpu0
	s.rounds = append(s.rounds, r)
	return nil
}

// total merges the rounds.
func (s *server) total() result {
	var t result
	for _, r := range s.rounds {
		t.ok += r.ok
		t.errors += r.errors
		t.elapsed += r.elapsed
		t.latencies = append(t.latencies, r.latencies...)
		if t.firstErr == nil {
			t.firstErr = r.firstErr
		}
	}
	slices.Sort(t.latencies)
	return t
}

// cpuPerRequest is the server's CPU time per answered request.
func (s *server) cpuPerRequest() time.Duration {
	if n := s.total().ok; n > 0 {
		return s.cpu / time.Duration(n)
	}
	return 0
}

// processCPU is the user and system CPU time of process pid, from
// /proc/PID/stat (Linux only; 0 elsewhere), in clock ticks of 10ms.
func processCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name, field 2, is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond // USER_HZ is 100 on Linux
}

// prepare finds the module root, makes the signed deliveries of the
// fixture and a temporary directory under dataDir ("": the system's) for
// deployd, which the caller removes.
func prepare(ctx context.Context, dataDir string) (root string, b *bodies, tmp string, err error) {
	if root, err = moduleRoot(ctx); err != nil {
		return "", nil, "", err
	}
	raw, err := os.ReadFile(filepath.Join(root, fixturePath))
	if err != nil {
		return "", nil, "", err
	}
	if b, err = newBodies(raw, secret); err != nil {
		return "", nil, "", err
	}
	if tmp, err = os.MkdirTemp(dataDir, "deployd-loadtest-"); err != nil {
		return "", nil, "", err
	}
	return root, b, tmp, nil
}

// moduleRoot is the directory of the go.mod of the working directory.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == os.DevNull {
		return "", errors.New("run loadtest from inside the deployd repository (go env GOMOD finds no module)")
	}
	return filepath.Dir(gomod), nil
}

// bodies makes unique signed deliveries of one fixture (see
// webhooktest.Deliveries), with delivery ids unique across runs. Safe for
// concurrent use.
type bodies struct {
	*webhooktest.Deliveries
	run string
}

func newBodies(fixture []byte, secret string) (*bodies, error) {
	g, err := webhooktest.NewDeliveries(fixture, []byte(secret), "deployd_loadtest_nonce")
	if err != nil {
		return nil, fmt.Errorf("fixture: %w", err)
	}
	return &bodies{Deliveries: g, run: strconv.FormatInt(time.Now().UnixNano(), 36)}, nil
}

// request returns a new delivery for url.
func (b *bodies) request(url string) (*http.Request, error) {
	d := b.Next()
	req, err := http.NewRequest(http.MethodPost, url, b.Reader(d))
	if err != nil {
		return nil, err
	}
	req.ContentLength = int64(b.Size())
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "GitHub-Hookshot/loadtest")
	req.Header.Set("X-GitHub-Event", "registry_package")
	req.Header.Set("X-GitHub-Delivery", "loadtest-"+b.run+"-"+strconv.FormatInt(d.Seq, 10))
	req.Header.Set("X-Hub-Signature-256", d.Signature)
	return req, nil
}

// result is one load phase's outcome.
type result struct {
	ok, errors int
	elapsed    time.Duration
	latencies  []time.Duration // of the answered requests, sorted
	firstErr   error
}

func (r result) throughput() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.ok) / r.elapsed.Seconds()
}

func (r result) percentile(p float64) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	i := int(float64(len(r.latencies)) * p / 100)
	return r.latencies[min(i, len(r.latencies)-1)]
}

// load sends deliveries to url from conns goroutines, each with a
// connection of its own, until d has passed or max requests were sent.
// Only 202 answers count as ok.
func load(ctx context.Context, url string, b *bodies, conns int, d time.Duration, maxRequests int) (result, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var (
		issued   atomic.Int64
		mu       sync.Mutex
		res      result
		wg       sync.WaitGroup
		firstErr error
	)
	per := make([][]time.Duration, conns)
	start := time.Now()
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client, closeClient := keepAliveClient()
			defer closeClient()
			lat := make([]time.Duration, 0, 1024)
			errs := 0
			for ctx.Err() == nil && issued.Add(1) <= int64(maxRequests) {
				req, err := b.request(url + "/webhooks/github")
				if err != nil {
					errs++
					continue
				}
				t0 := time.Now()
				err = post(client, req.WithContext(ctx))
				took := time.Since(t0)
				switch {
				case err == nil:
					lat = append(lat, took)
				case ctx.Err() != nil: // cut off at the deadline: not an error
				default:
					errs++
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
			mu.Lock()
			per[i] = lat
			res.errors += errs
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	for _, l := range per {
		res.latencies = append(res.latencies, l...)
	}
	slices.Sort(res.latencies)
	res.ok = len(res.latencies)
	res.firstErr = firstErr
	if res.ok == 0 {
		return res, fmt.Errorf("no delivery to %s was accepted: %v", url, firstErr)
	}
	return res, nil
}

// keepAliveClient is an HTTP client of one keep-alive connection, and
// what closes it.
func keepAliveClient() (*http.Client, func()) {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxConnsPerHost:     1,
		MaxIdleConnsPerHost: 1,
		DisableCompression:  true,
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}, tr.CloseIdleConnections
}

// post sends req and reads the whole answer, which must be 202.
func post(client *http.Client, req *http.Request) error {
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("status %d: %s", resp.StatusCode, bytes.TrimSpace(body))
	}
	return nil
}

// child is a server process started by the load test.
type child struct {
	cmd  *exec.Cmd
	url  string
	done chan struct{}
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// stop sends SIGTERM and waits; SIGKILL after 30s.
func (c *child) stop() {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

func startChild(cmd *exec.Cmd) (*child, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

// startBare runs this binary's bare handler and waits for its address.
func startBare(ctx context.Context) (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, self, "serve-bare")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	c, err := startChild(cmd)
	if err != nil {
		return nil, fmt.Errorf("start bare server: %w", err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		c.stop()
		return nil, fmt.Errorf("bare server: %w", err)
	}
	c.url = "http://" + strings.TrimSpace(line)
	return c, nil
}

// startDeployd runs `deployd serve` with a configuration in dir and waits
// until /healthz answers.
func startDeployd(ctx context.Context, bin, dir, level string) (*child, error) {
	return startDeploydWith(ctx, bin, dir, level, "", nil)
}

// startDeploydWith is startDeployd with extra top-level configuration
// (YAML) and extra KEY=VALUE environment variables for deployd.
func startDeploydWith(ctx context.Context, bin, dir, level, extraConfig string, env []string) (*child, error) {
	// A free port picked here, since at level warn deployd does not log
	// its address. Another process could take it meanwhile; unlikely.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	secretFile := filepath.Join(dir, "webhook-secret")
	if err := os.WriteFile(secretFile, []byte(secret), 0o600); err != nil {
		return nil, err
	}
	config := filepath.Join(dir, "deployd.yaml")
	if err := os.WriteFile(config, []byte(webhooktest.DeploydConfig(addr, filepath.Join(dir, "data"), secretFile, level, "loadtest-backend")+extraConfig), 0o600); err != nil {
		return nil, err
	}
	logs, err := os.Create(filepath.Join(dir, "deployd.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, bin, "serve", "--config", config)
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	c, err := startChild(cmd)
	if err != nil {
		logs.Close()
		return nil, fmt.Errorf("start deployd: %w", err)
	}
	go func() {
		<-c.done
		logs.Close()
	}()
	c.url = "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(c.url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return c, nil
			}
		}
		select {
		case <-c.done:
			tail, _ := os.ReadFile(logs.Name())
			return nil, fmt.Errorf("deployd exited before answering:\n%s", tail)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			c.stop()
			return nil, errors.New("deployd did not answer /healthz within 30s")
		}
	}
}

// serveBare is the reference server: it prints its address, then serves
// the bare handler until SIGTERM.
func serveBare() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: webhooktest.BareHandler([]byte(secret)), ReadHeaderTimeout: 10 * time.Second}
	fmt.Println(ln.Addr().String())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// rss is the process's resident set size, from /proc (Linux only).
func rss(pid int) string { return procStatus(pid, "VmRSS") }

// peakRSS is the process's peak resident set size.
func peakRSS(pid int) string { return procStatus(pid, "VmHWM") }

func procStatus(pid int, field string) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "n/a"
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				return "n/a"
			}
			return fmt.Sprintf("%.1f MB", float64(kb)/1024)
		}
	}
	return "n/a"
}
