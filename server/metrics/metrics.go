// Package metrics is deployd's Prometheus instrumentation. It observes the
// deployer through its Notify hooks, webhook deliveries through a wrapped
// recorder and handler, and reads queue depth, credential health and token
// expiry when scraped. The deployer does not import it: the command wires it.
//
// Metrics (see Config and the README for label values):
//
//	deployd_webhook_deliveries_total{event,result}         counter
//	deployd_deployments_total{service,state}               counter
//	deployd_step_duration_seconds{step,outcome}            histogram
//	deployd_queue_depth{service}                           gauge
//	deployd_last_success_timestamp_seconds{service}        gauge
//	deployd_credential_source{host,source,state}           gauge (always 1)
//	deployd_installation_token_expiry_seconds{installation_id} gauge
//	deployd_installation_token_mints_total{result}         counter
//	deployd_store_write_errors_total                       counter
//	deployd_store_pruned_total{table}                      counter
//
// plus the Go runtime (go_*) and process (process_*) collectors.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/deployd/deployd/auth/github"
	"github.com/deployd/deployd/auth/registry"
	"github.com/deployd/deployd/deployer"
)

const namespace = "deployd"

// History is the part of the store the metrics read: the newest deployments
// of a service. server.Reader and deployer.Store satisfy it.
type History interface {
	Deployments(ctx context.Context, service string, p deployer.Page) ([]deployer.Deployment, error)
}

// Config holds what Metrics reads and where it registers.
type Config struct {
	// Registry receives every collector, Go and process collectors
	// included; required. Use a registry of your own, not the global one.
	Registry *prometheus.Registry
	// History is read at scrape time for each service's queue depth;
	// required.
	History History
	// Services are the configured service names.
	Services []string
	// Credentials, if set, reports credential health at scrape time: the
	// credential chain's Health.
	Credentials func() []registry.SourceHealth
	// Tokens, if set, reports installation token stats at scrape time: the
	// GitHub App's Stats.
	Tokens func() github.AppStats
	// StoreWriteErrors, if set, reports at scrape time how many writes
	// to the store have failed (a full disk, an I/O error).
	StoreWriteErrors func() int64
	// StorePruned, if set, reports at scrape time how many rows retention
	// has deleted from the store since start-up, by table (deliveries,
	// deployments, redeliveries).
	StorePruned func() map[string]int64
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Metrics holds deployd's metrics. It is safe for concurrent use.
type Metrics struct {
	reg         *prometheus.Registry
	history     History
	services    []string
	deliveries  *prometheus.CounterVec
	deployments *prometheus.CounterVec
	steps       *prometheus.HistogramVec
	lastSuccess *prometheus.GaugeVec
	redelivery  *prometheus.CounterVec
}

// Final states counted by deployd_deployments_total, pre-created at zero
// for every service. Every final state the queue announces is counted:
// superseded covers requests that were shown queued (manual, rollback,
// reconcile) and then replaced; webhook requests collapsed in a burst are
// not announced, as the deliveries counter already counts them.
var countedStates = []deployer.State{
	deployer.StateSucceeded, deployer.StateUnchanged, deployer.StateFailed,
	deployer.StateRolledBack, deployer.StateSuperseded, deployer.StateInterrupted,
}

// stepBuckets span quick registry lookups to ten-minute pulls.
var stepBuckets = []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

// New creates the metrics and registers them, with the Go and process
// collectors, on cfg.Registry. It fails when a dependency is missing or a
// collector is already registered there.
func New(cfg Config) (*Metrics, error) {
	if cfg.Registry == nil {
		return nil, errors.New("new metrics: no registry")
	}
	if cfg.History == nil {
		return nil, errors.New("new metrics: no history")
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	m := &Metrics{
		reg:      cfg.Registry,
		history:  cfg.History,
		services: cfg.Services,
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "webhook_deliveries_total",
			Help: "Webhook deliveries by event and result (queued, ignored, duplicate, rejected, busy, error).",
		}, []string{"event", "result"}),
		deployments: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "deployments_total",
			Help: "Deployments that reached a final state, by service and state (succeeded, unchanged, failed, rolled_back, superseded, interrupted).",
		}, []string{"service", "state"}),
		steps: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "step_duration_seconds",
			Help:    "Duration of deploy pipeline steps, by step and outcome (ok, failed, skipped).",
			Buckets: stepBuckets,
		}, []string{"step", "outcome"}),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "last_success_timestamp_seconds",
			Help: "Unix time at which the service's last successful (not dry-run) deployment finished.",
		}, []string{"service"}),
		redelivery: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "redeliveries_total",
			Help: "Redeliveries of missed webhook deliveries asked of GitHub, by result (requested, failed).",
		}, []string{"result"}),
	}
	m.redelivery.WithLabelValues("requested")
	m.redelivery.WithLabelValues("failed")
	for _, svc := range cfg.Services {
		for _, st := range countedStates {
			m.deployments.WithLabelValues(svc, string(st))
		}
	}
	cs := []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.deliveries, m.deployments, m.steps, m.lastSuccess, m.redelivery,
		&scrapeCollector{m: m, credentials: cfg.Credentials, tokens: cfg.Tokens, writeErrors: cfg.StoreWriteErrors,
			pruned: cfg.StorePruned, now: now},
	}
	for _, c := range cs {
		if err := cfg.Registry.Register(c); err != nil {
			return nil, fmt.Errorf("new metrics: %w", err)
		}
	}
	return m, nil
}

// Redelivery counts one redelivery request by its result ("requested",
// "failed"): recovery.Config.Count.
func (m *Metrics) Redelivery(result string) { m.redelivery.WithLabelValues(result).Inc() }

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		Registry:      m.reg,
		ErrorHandling: promhttp.ContinueOnError,
	})
}

// Deployment observes a change of a deployment's state; pass it as
// deployer.QueueConfig.Notify. It counts each deployment once, when it
// reaches a final state the queue announces (see countedStates) and
// records the time of successful ones.
func (m *Metrics) Deployment(d deployer.Deployment) {
	if !d.State.Final() {
		return
	}
	m.deployments.WithLabelValues(d.Service, string(d.State)).Inc()
	if d.State == deployer.StateSucceeded && !d.DryRun {
		at := time.Now()
		if d.FinishedAt != nil {
			at = *d.FinishedAt
		}
		m.lastSuccess.WithLabelValues(d.Service).Set(float64(at.UnixNano()) / 1e9)
	}
}

// Step observes the newest step of a deployment; pass it as
// podman.PipelineConfig.Notify, which is called once after every step.
func (m *Metrics) Step(d deployer.Deployment) {
	if len(d.Steps) == 0 {
		return
	}
	s := d.Steps[len(d.Steps)-1]
	m.steps.WithLabelValues(s.Name, s.Outcome).Observe(s.Duration.Seconds())
}

// SeedLastSuccess sets deployd_last_success_timestamp_seconds from the
// history, so that it survives a restart. Call it once at start-up.
func (m *Metrics) SeedLastSuccess(ctx context.Context) error {
	for _, svc := range m.services {
		ds, err := m.history.Deployments(ctx, svc, deployer.Page{Limit: 500})
		if err != nil {
			return fmt.Errorf("seed metrics of %s: %w", svc, err)
		}
		for _, d := range ds {
			if d.State == deployer.StateSucceeded && !d.DryRun && d.FinishedAt != nil {
				m.lastSuccess.WithLabelValues(svc).Set(float64(d.FinishedAt.UnixNano()) / 1e9)
				break
			}
		}
	}
	return nil
}

// scrapeTimeout bounds the store reads of one scrape.
const scrapeTimeout = 2 * time.Second

// scrapeCollector reads queue depth, credential health and token expiry
// when Prometheus scrapes.
type scrapeCollector struct {
	m           *Metrics
	credentials func() []registry.SourceHealth
	tokens      func() github.AppStats
	writeErrors func() int64
	pruned      func() map[string]int64
	now         func() time.Time
}

var (
	queueDepthDesc = prometheus.NewDesc(namespace+"_queue_depth",
		"Deployments of the service queued or running.", []string{"service"}, nil)
	credentialDesc = prometheus.NewDesc(namespace+"_credential_source",
		"Always 1: the state (unknown, ok, denied, failed) of each credential source of each registry; state ok marks the source in use.",
		[]string{"host", "source", "state"}, nil)
	tokenExpiryDesc = prometheus.NewDesc(namespace+"_installation_token_expiry_seconds",
		"Seconds until the installation's cached GitHub App token that expires soonest expires (negative once expired).",
		[]string{"installation_id"}, nil)
	mintsDesc = prometheus.NewDesc(namespace+"_installation_token_mints_total",
		"GitHub App installation tokens requested, by result (ok, failed).", []string{"result"}, nil)
	storeWriteErrorsDesc = prometheus.NewDesc(namespace+"_store_write_errors_total",
		"Writes to the store that failed because of the storage: a full disk, an I/O error, a read-only, locked or damaged database.",
		nil, nil)
	storePrunedDesc = prometheus.NewDesc(namespace+"_store_pruned_total",
		"Rows deleted from the store by retention since start-up, by table (deliveries, deployments, redeliveries).",
		[]string{"table"}, nil)
)

// Describe sends the descriptors of the metrics read at scrape time.
func (c *scrapeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- queueDepthDesc
	ch <- credentialDesc
	ch <- tokenExpiryDesc
	ch <- mintsDesc
	ch <- storeWriteErrorsDesc
	ch <- storePrunedDesc
}

// Collect reads queue depth, credential health, token expiry and store
// write errors now.
func (c *scrapeCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	for _, svc := range c.m.services {
		// A new request supersedes the queued one, and one runs at a time:
		// the unfinished deployments are among the newest few.
		ds, err := c.m.history.Deployments(ctx, svc, deployer.Page{Limit: 4})
		if err != nil {
			ch <- prometheus.NewInvalidMetric(queueDepthDesc, fmt.Errorf("read deployments of %s: %w", svc, err))
			continue
		}
		n := 0
		for _, d := range ds {
			if !d.State.Final() {
				n++
			}
		}
		ch <- prometheus.MustNewConstMetric(queueDepthDesc, prometheus.GaugeValue, float64(n), svc)
	}
	if c.credentials != nil {
		for _, s := range c.credentials() {
			ch <- prometheus.MustNewConstMetric(credentialDesc, prometheus.GaugeValue, 1, s.Host, s.Source, string(s.State))
		}
	}
	if c.writeErrors != nil {
		ch <- prometheus.MustNewConstMetric(storeWriteErrorsDesc, prometheus.CounterValue, float64(c.writeErrors()))
	}
	if c.pruned != nil {
		for table, n := range c.pruned() {
			ch <- prometheus.MustNewConstMetric(storePrunedDesc, prometheus.CounterValue, float64(n), table)
		}
	}
	if c.tokens != nil {
		st := c.tokens()
		ch <- prometheus.MustNewConstMetric(mintsDesc, prometheus.CounterValue, float64(st.Mints), "ok")
		ch <- prometheus.MustNewConstMetric(mintsDesc, prometheus.CounterValue, float64(st.MintFailures), "failed")
		soonest := map[int64]time.Time{}
		for _, t := range st.Tokens {
			if cur, ok := soonest[t.InstallationID]; !ok || t.ExpiresAt.Before(cur) {
				soonest[t.InstallationID] = t.ExpiresAt
			}
		}
		now := c.now()
		for id, exp := range soonest {
			ch <- prometheus.MustNewConstMetric(tokenExpiryDesc, prometheus.GaugeValue, exp.Sub(now).Seconds(), strconv.FormatInt(id, 10))
		}
	}
}
