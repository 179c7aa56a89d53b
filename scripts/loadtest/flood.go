package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// floodUsage introduces the flood mode in -help.
const floodUsage = `usage: loadtest flood [flags]

Starts deployd, then keeps -bodies unsigned bodies of -size MiB each in flight
at once (a wrong X-Hub-Signature-256, each body trickled over -body-time, so
that they really are read concurrently) for -duration, while one connection
sends signed deliveries every -signed-every. Reports deployd's peak RSS
(VmHWM) and how many signed deliveries were accepted.

`

// floodOptions are the flood mode's flags.
type floodOptions struct {
	bodies      int
	sizeMiB     int
	bodyTime    time.Duration
	duration    time.Duration
	signedEvery time.Duration
	chunked     bool
	deployd     string
	logLevel    string
}

func parseFloodOptions(args []string, stderr io.Writer) (floodOptions, error) {
	var o floodOptions
	fs := flag.NewFlagSet("loadtest flood", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), floodUsage)
		fs.PrintDefaults()
	}
	fs.IntVar(&o.bodies, "bodies", 16, "unsigned bodies in flight at once (at most 64)")
	fs.IntVar(&o.sizeMiB, "size", 24, "size of each unsigned body in MiB (at most 25, deployd's limit)")
	fs.DurationVar(&o.bodyTime, "body-time", 4*time.Second, "how long sending one unsigned body takes")
	fs.DurationVar(&o.duration, "duration", 12*time.Second, "how long to keep the bodies coming (at most 2m)")
	fs.DurationVar(&o.signedEvery, "signed-every", 20*time.Millisecond, "interval between two signed deliveries")
	fs.BoolVar(&o.chunked, "chunked", false, "send the unsigned bodies chunked, without Content-Length")
	fs.StringVar(&o.deployd, "deployd", "", "deployd binary to run; default: build ./cmd/deployd")
	fs.StringVar(&o.logLevel, "log-level", "warn", "deployd's log.level")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case o.bodies <= 0 || o.bodies > 64:
		return o, errors.New("-bodies must be between 1 and 64")
	case o.sizeMiB <= 0 || o.sizeMiB > 25:
		return o, errors.New("-size must be between 1 and 25")
	case o.bodyTime <= 0 || o.bodyTime > time.Minute:
		return o, errors.New("-body-time must be between 0 and 1m")
	case o.duration <= 0 || o.duration > 2*time.Minute:
		return o, errors.New("-duration must be between 0 and 2m")
	case o.signedEvery <= 0:
		return o, errors.New("-signed-every must be positive")
	}
	return o, nil
}

// runFlood is the flood mode: see floodUsage.
func runFlood(ctx context.Context, args []string, stdout io.Writer) error {
	o, err := parseFloodOptions(args, os.Stderr)
	if err != nil {
		return err
	}
	root, signed, tmp, err := prepare(ctx, "")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin, err := deploydBinary(ctx, o.deployd, root, tmp)
	if err != nil {
		return err
	}
	deployd, err := startDeployd(ctx, bin, tmp, o.logLevel)
	if err != nil {
		return err
	}
	defer deployd.stop()

	// A few signed deliveries first, so that the start figure includes
	// what serving them costs.
	if _, err := load(ctx, deployd.url, signed, 1, 10*time.Second, 50); err != nil {
		return err
	}
	mode := "with Content-Length"
	if o.chunked {
		mode = "chunked"
	}
	fmt.Fprintf(stdout, "deployd unsigned-body flood: %d unsigned %d MiB bodies in flight at once (%s, each sent over %s) for %s, and a signed %d-byte delivery every %s on one connection.\n",
		o.bodies, o.sizeMiB, mode, o.bodyTime, o.duration, signed.Size(), o.signedEvery)
	fmt.Fprintf(stdout, "deployd RSS before: %s (peak so far %s)\n", rss(deployd.pid()), peakRSS(deployd.pid()))

	fctx, cancel := context.WithTimeout(ctx, o.duration)
	defer cancel()
	var (
		wg       sync.WaitGroup
		unsigned = newTally()
		accepted = newTally()
	)
	for range o.bodies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			floodWorker(fctx, deployd.url, int64(o.sizeMiB)<<20, o.bodyTime, o.chunked, unsigned)
		}()
	}
	var lat []time.Duration
	wg.Add(1)
	go func() {
		defer wg.Done()
		lat = signedWorker(fctx, deployd.url, signed, o.signedEvery, accepted)
	}()
	wg.Wait()

	slices.Sort(lat)
	fmt.Fprintf(stdout, "unsigned bodies answered: %s\n", unsigned)
	fmt.Fprintf(stdout, "signed deliveries: %d sent, %d accepted (202); answers %s", accepted.total(), accepted.count("202"), accepted)
	if len(lat) > 0 {
		fmt.Fprintf(stdout, "; latency p50 %s, p99 %s, max %s", round3(lat[len(lat)/2]), round3(lat[len(lat)*99/100]), round3(lat[len(lat)-1]))
	}
	fmt.Fprintln(stdout)
	fmt.Fprintf(stdout, "deployd peak RSS (VmHWM): %s; RSS now %s\n", peakRSS(deployd.pid()), rss(deployd.pid()))
	return nil
}

// deploydBinary returns bin, or builds ./cmd/deployd of the module at
// root into dir when bin is empty.
func deploydBinary(ctx context.Context, bin, root, dir string, tags ...string) (string, error) {
	if bin != "" {
		return bin, nil
	}
	bin = filepath.Join(dir, "deployd")
	args := []string{"build", "-o", bin}
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	build := exec.CommandContext(ctx, "go", append(args, "./cmd/deployd")...)
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/deployd: %v\n%s", err, out)
	}
	return bin, nil
}

// floodWorker sends unsigned bodies of size bytes, one after the other,
// each trickled over bodyTime, until ctx ends, and tallies the answers.
// After an answer that came before the body was sent it waits a tenth of
// bodyTime, so that refusals do not turn into a busy loop.
func floodWorker(ctx context.Context, url string, size int64, bodyTime time.Duration, chunked bool, t *tally) {
	tr := &http.Transport{
		DialContext:        (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxConnsPerHost:    1,
		DisableCompression: true,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: bodyTime + time.Minute}
	for ctx.Err() == nil {
		body := newTrickle(ctx, size, bodyTime)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/webhooks/github", body)
		if err != nil {
			t.add("error")
			return
		}
		if !chunked {
			req.ContentLength = size
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-GitHub-Event", "registry_package")
		req.Header.Set("X-GitHub-Delivery", fmt.Sprintf("flood-%d", time.Now().UnixNano()))
		req.Header.Set("X-Hub-Signature-256", "sha256="+strings.Repeat("0", 64))
		resp, err := client.Do(req)
		switch {
		case err != nil && ctx.Err() != nil:
			return // cut off at the end of the run: not counted
		case err != nil:
			t.add("error")
		default:
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			t.add(fmt.Sprint(resp.StatusCode))
		}
		if body.sent < body.size {
			select {
			case <-ctx.Done():
			case <-time.After(bodyTime / 10):
			}
		}
	}
}

// trickleChunk is the most of an unsigned body written at once.
const trickleChunk = 64 << 10

// trickle is a body of size bytes of JSON whitespace, yielded at an even
// pace over d, in pieces of at most trickleChunk.
type trickle struct {
	ctx        context.Context
	size, sent int64
	d          time.Duration
	start      time.Time
}

func newTrickle(ctx context.Context, size int64, d time.Duration) *trickle {
	return &trickle{ctx: ctx, size: size, d: d}
}

func (b *trickle) Read(p []byte) (int, error) {
	if b.sent == b.size {
		return 0, io.EOF
	}
	if b.start.IsZero() {
		b.start = time.Now()
	}
	// Not before its share of d has passed since the first byte.
	due := b.start.Add(time.Duration(float64(b.d) * float64(b.sent) / float64(b.size)))
	if wait := time.Until(due); wait > 0 {
		select {
		case <-b.ctx.Done():
			return 0, b.ctx.Err()
		case <-time.After(wait):
		}
	}
	n := int(min(int64(len(p)), b.size-b.sent, trickleChunk))
	for i := range n {
		p[i] = ' '
	}
	b.sent += int64(n)
	return n, nil
}

// signedWorker sends a signed delivery every interval on one keep-alive
// connection until ctx ends, tallies the answers and returns the latencies
// of those answered.
func signedWorker(ctx context.Context, url string, b *bodies, every time.Duration, t *tally) []time.Duration {
	tr := &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	tick := time.NewTicker(every)
	defer tick.Stop()
	var lat []time.Duration
	for {
		select {
		case <-ctx.Done():
			return lat
		case <-tick.C:
		}
		req, err := b.request(url + "/webhooks/github")
		if err != nil {
			t.add("error")
			continue
		}
		t0 := time.Now()
		resp, err := client.Do(req) // not bound to ctx: a delivery sent is waited for
		if err != nil {
			t.add("error")
			continue
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		lat = append(lat, time.Since(t0))
		t.add(fmt.Sprint(resp.StatusCode))
	}
}

// tally counts outcomes by name. Safe for concurrent use.
type tally struct {
	mu  sync.Mutex
	n   map[string]int
	all int
}

func newTally() *tally { return &tally{n: map[string]int{}} }

func (t *tally) add(k string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n[k]++
	t.all++
}

func (t *tally) count(k string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n[k]
}

func (t *tally) total() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.all
}

// String lists the outcomes in name order, e.g. "401×16 503×80".
func (t *tally) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	keys := slices.Sorted(maps.Keys(t.n))
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s×%d", k, t.n[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}
