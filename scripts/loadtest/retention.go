package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// retentionUsage introduces the retention mode in -help.
const retentionUsage = `usage: loadtest retention [flags]

Sends -deliveries unique signed deliveries (default 1,000,000) from -conns
keep-alive connections through one deployd process with retention on, and
reports the p99 latency of the first 10% against the last 10%, the database
file's size and deployd's RSS at checkpoints, and how many rows retention
deleted.

deployd refuses a deliveries window shorter than GitHub's 3-day redelivery
window, which a run of minutes never crosses. So the mode builds deployd with
the loadtest build tag, whose binary alone reads a shorter window (-window)
and pass interval (-interval) from the environment; a release build ignores
them. Everything else is the release code path: real HTTP, the signature
check, the intake, the SQLite store, the pruner and its vacuum.

`

// retentionOptions are the retention mode's flags.
type retentionOptions struct {
	deliveries  int
	conns       int
	window      time.Duration
	interval    time.Duration
	keep        int
	checkpoints int
	maxDuration time.Duration
	deployd     string
	logLevel    string
	dataDir     string
}

func parseRetentionOptions(args []string, stderr io.Writer) (retentionOptions, error) {
	var o retentionOptions
	fs := flag.NewFlagSet("loadtest retention", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), retentionUsage)
		fs.PrintDefaults()
	}
	fs.IntVar(&o.deliveries, "deliveries", 1_000_000, "deliveries to send")
	fs.IntVar(&o.conns, "conns", 16, "concurrent keep-alive connections (at most 256)")
	fs.DurationVar(&o.window, "window", 60*time.Second, "deliveries window of the run (the load-test build's stand-in for retention.deliveries)")
	fs.DurationVar(&o.interval, "interval", time.Second, "time between two pruning passes")
	fs.IntVar(&o.keep, "deployments", 1000, "retention.deployments: deployments kept per service")
	fs.IntVar(&o.checkpoints, "checkpoints", 20, "how many times to report size and RSS during the run")
	fs.DurationVar(&o.maxDuration, "max-duration", 2*time.Hour, "stop sending after this long and report what was sent")
	fs.StringVar(&o.deployd, "deployd", "", "deployd binary built with -tags loadtest; default: build ./cmd/deployd so")
	fs.StringVar(&o.logLevel, "log-level", "info", "deployd's log.level (its JSON logs go to a file in the temporary directory)")
	fs.StringVar(&o.dataDir, "data-dir", "", "parent of deployd's temporary data directory; default the system temp dir")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case o.deliveries < 100:
		return o, errors.New("-deliveries must be at least 100")
	case o.conns <= 0 || o.conns > 256:
		return o, errors.New("-conns must be between 1 and 256")
	case o.window <= 0 || o.interval <= 0:
		return o, errors.New("-window and -interval must be positive")
	case o.keep < 0:
		return o, errors.New("-deployments must not be negative")
	case o.checkpoints < 2 || o.checkpoints > 1000:
		return o, errors.New("-checkpoints must be between 2 and 1000")
	case o.maxDuration <= 0:
		return o, errors.New("-max-duration must be positive")
	}
	return o, nil
}

// checkpoint is the state of the run after some deliveries.
type checkpoint struct {
	sent       int
	elapsed    time.Duration
	dbBytes    int64 // deployd.db
	walBytes   int64 // deployd.db-wal
	rss        string
	pruned     map[string]int64
	prunedErr  error
	windowsRun float64 // elapsed / window
}

// runRetention is the retention mode: see retentionUsage.
func runRetention(ctx context.Context, args []string, stdout io.Writer) error {
	o, err := parseRetentionOptions(args, os.Stderr)
	if err != nil {
		return err
	}
	root, bodies, tmp, err := prepare(ctx, o.dataDir)
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin, err := deploydBinary(ctx, o.deployd, root, tmp, "loadtest")
	if err != nil {
		return err
	}
	// retention.deliveries must be at least 3d; the load-test build
	// replaces it with -window.
	config := fmt.Sprintf("retention: {deliveries: 3d, deployments: %d}\n", o.keep)
	env := []string{"DEPLOYD_LOADTEST_RETENTION_WINDOW=" + o.window.String(), "DEPLOYD_LOADTEST_RETENTION_INTERVAL=" + o.interval.String()}
	deployd, err := startDeploydWith(ctx, bin, tmp, o.logLevel, config, env)
	if err != nil {
		return err
	}
	defer deployd.stop()
	db := filepath.Join(tmp, "data", "deployd.db")

	fmt.Fprintf(stdout, "deployd retention load test: %d unique signed %d-byte registry_package deliveries from %d keep-alive connections; deliveries window %s, a pass every %s, %d deployments kept (each delivery queues one).\n\n",
		o.deliveries, bodies.Size(), o.conns, o.window, o.interval, o.keep)

	lat := make([]time.Duration, o.deliveries) // by the order they were issued; 0: not answered 202
	var (
		issued, answered atomic.Int64
		errs             atomic.Int64
		firstErr         error
		mu               sync.Mutex
		wg               sync.WaitGroup
	)
	sctx, cancel := context.WithTimeout(ctx, o.maxDuration)
	defer cancel()
	start := time.Now()
	for range o.conns {
		wg.Go(func() {
			client, closeClient := keepAliveClient()
			defer closeClient()
			for sctx.Err() == nil {
				i := issued.Add(1) - 1
				if i >= int64(o.deliveries) {
					return
				}
				req, err := bodies.request(deployd.url + "/webhooks/github")
				if err == nil {
					t0 := time.Now()
					if err = post(client, req.WithContext(sctx)); err == nil {
						lat[i] = time.Since(t0)
					}
				}
				if err != nil && sctx.Err() == nil {
					errs.Add(1)
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
				answered.Add(1)
			}
		})
	}

	// Checkpoints every deliveries/checkpoints answers, and once sending
	// has stopped.
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	var cps []checkpoint
	sample := func() checkpoint {
		el := time.Since(start)
		pruned, perr := prunedRows(deployd.url)
		return checkpoint{sent: int(answered.Load()), elapsed: el, dbBytes: fileSize(db), walBytes: fileSize(db + "-wal"),
			rss: rss(deployd.pid()), pruned: pruned, prunedErr: perr, windowsRun: float64(el) / float64(o.window)}
	}
	step := o.deliveries / o.checkpoints
	next := step
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
wait:
	for {
		select {
		case <-done:
			break wait
		case <-tick.C:
			if int(answered.Load()) >= next {
				cp := sample()
				cps = append(cps, cp)
				printCheckpoint(stdout, cp)
				next = (cp.sent/step + 1) * step
			}
		}
	}
	elapsed := time.Since(start)
	// Let the pruner catch up with the last window, as between bursts.
	time.Sleep(2 * o.interval)
	final := sample()
	final.elapsed = elapsed
	printCheckpoint(stdout, final)
	cps = append(cps, final)

	sent := int(answered.Load())
	fmt.Fprintf(stdout, "\nsent %d of %d deliveries in %s (%.0f/s), %d errors", sent, o.deliveries, elapsed.Round(time.Second),
		float64(sent)/elapsed.Seconds(), errs.Load())
	if firstErr != nil {
		fmt.Fprintf(stdout, "; first: %v", firstErr)
	}
	fmt.Fprintf(stdout, "\nthe run lasted %.1f deliveries windows\n", float64(elapsed)/float64(o.window))
	if sent < 100 {
		return fmt.Errorf("only %d deliveries answered", sent)
	}
	tenth := sent / 10
	first, last := answeredOnly(lat[:tenth]), answeredOnly(lat[sent-tenth:sent])
	p99f, p99l := percentile(first, 99), percentile(last, 99)
	ratio := float64(p99l) / float64(p99f)
	fmt.Fprintf(stdout, "p50 first 10%%: %s, last 10%%: %s\n", round3(percentile(first, 50)), round3(percentile(last, 50)))
	fmt.Fprintf(stdout, "p99 first 10%%: %s, last 10%%: %s; last/first %.2f (target at most 1.2) %s\n",
		round3(p99f), round3(p99l), ratio, verdict(ratio <= 1.2))

	// Flat after the window: the checkpoints a window into the run and
	// later, in two halves; the second half's mean size against the
	// first's. Means, since how many deliveries the window holds follows
	// the throughput of the moment.
	var after []int64
	for _, c := range cps {
		if c.elapsed >= o.window+2*o.interval {
			after = append(after, c.dbBytes)
		}
	}
	if len(after) >= 2 {
		early, late := mean(after[:len(after)/2]), mean(after[len(after)/2:])
		growth := late / early
		fmt.Fprintf(stdout, "database file after the first window: mean %s over checkpoints %d-%d, %s over the %d after; later/earlier %.2f (target at most 1.1) %s\n",
			mib(int64(early)), len(cps)-len(after)+1, len(cps)-len(after)+len(after)/2, mib(int64(late)), len(after)-len(after)/2, growth, verdict(growth <= 1.1))
	} else {
		fmt.Fprintln(stdout, "fewer than two checkpoints after the first window: no figure for the size after it")
	}
	fmt.Fprintf(stdout, "deployd RSS at the end: %s, peak %s (target under 40 MB)\n", rss(deployd.pid()), peakRSS(deployd.pid()))
	return nil
}

func printCheckpoint(w io.Writer, c checkpoint) {
	pruned := "n/a"
	if c.prunedErr == nil {
		pruned = fmt.Sprintf("%d deliveries (%d kept), %d deployments", c.pruned["deliveries"], int64(c.sent)-c.pruned["deliveries"], c.pruned["deployments"])
	}
	fmt.Fprintf(w, "%9d sent  %7s  %5.1f windows  db %9s  wal %9s  RSS %8s  pruned %s\n",
		c.sent, c.elapsed.Round(time.Second), c.windowsRun, mib(c.dbBytes), mib(c.walBytes), c.rss, pruned)
}

func mean(xs []int64) float64 {
	var sum float64
	for _, x := range xs {
		sum += float64(x)
	}
	return sum / float64(len(xs))
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// answeredOnly returns the latencies of the answered deliveries, sorted.
func answeredOnly(lat []time.Duration) []time.Duration {
	out := slices.DeleteFunc(slices.Clone(lat), func(d time.Duration) bool { return d == 0 })
	slices.Sort(out)
	return out
}

// percentile of sorted latencies.
func percentile(sorted []time.Duration, p float64) time.Duration {
	return result{latencies: sorted}.percentile(p)
}

// prunedRows reads deployd_store_pruned_total by table from /metrics.
func prunedRows(url string) (map[string]int64, error) {
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]int64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	const prefix = `deployd_store_pruned_total{table="`
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), prefix)
		if !ok {
			continue
		}
		table, value, ok := strings.Cut(rest, `"} `)
		if !ok {
			continue
		}
		n, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return nil, fmt.Errorf("metric %s: %w", sc.Text(), err)
		}
		out[table] = int64(n)
	}
	return out, sc.Err()
}
