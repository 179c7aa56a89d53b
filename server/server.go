// Package server is deployd's HTTP surface: the router, its middleware, the
// JSON API, the probes and the status page. All routes are declared in
// routes.go; errors become responses in httperr.Write only, the mounted
// webhook handler's too.
package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/deployd/deployd/deployer"
)

// Reader is the part of the store the read API and probes use.
type Reader interface {
	Deployment(ctx context.Context, id int64) (deployer.Deployment, error)
	Deployments(ctx context.Context, service string, p deployer.Page) ([]deployer.Deployment, error)
	Deliveries(ctx context.Context, p deployer.Page) ([]deployer.Delivery, error)
	ServiceStatus(ctx context.Context, name string) (deployer.ServiceStatus, error)
	Ping(ctx context.Context) error
}

// WriteHealth reports whether the store's writes succeed; the sqlite
// store satisfies it.
type WriteHealth interface {
	// WriteFailure returns why the store's last write failed, in words
	// that are safe to show (no file names, no data), and since when
	// writes fail; reason is "" when the last write succeeded.
	WriteFailure() (reason string, since time.Time)
}

// Drainer reports whether deployd is shutting down.
type Drainer interface {
	Draining() bool
}

// Queue takes manual deploys and rollbacks and says whether deployd is
// shutting down; *deployer.Queue satisfies it.
type Queue interface {
	Enqueuer
	Drainer
}

// Config holds the server's dependencies, grouped by the side that uses
// them.
type Config struct {
	// Services lists the configured services, in display order.
	Services []deployer.Service
	// Webhook handles POST /webhooks/github; required.
	Webhook http.Handler
	// Reads is what the read API, the status page, its event stream, the
	// probes and /metrics show.
	Reads Reads
	// Queue takes the write API's deploys and rollbacks, and /readyz
	// answers "draining" while it drains; required.
	Queue Queue
	// Auth guards the write API and, when the status is private, the
	// reads.
	Auth Auth
	// Logger receives the access log and the errors of requests.
	Logger zerolog.Logger
}

// Reads is the read side of the server.
type Reads struct {
	// Store answers the read API, the status page and /readyz; required.
	Store Reader
	// WriteHealth, if set, makes /readyz answer not ready while the
	// store's writes fail, with the reason.
	WriteHealth WriteHealth
	// Events feeds GET /api/v1/events; nil means a hub that nothing
	// publishes to (the stream then carries only the initial state).
	Events *Hub
	// Credentials reports credential health for the status page; its
	// zero value reports none.
	Credentials Credentials
	// Metrics serves GET /metrics; nil leaves the route out.
	Metrics http.Handler
	// Releases answers GET /api/v1/releases and the status page's
	// Releases section; nil: no release sets (an empty list).
	Releases ReleaseReader
}

// Auth says who may deploy and who may read.
type Auth struct {
	// Tokens verifies API bearer tokens; nil turns the write API off (it
	// answers 503 saying so). Required when StatusPrivate is set.
	Tokens TokenVerifier
	// StatusPrivate makes the read API, the status page, the event stream
	// and /metrics require a status:read token (status.public: false).
	StatusPrivate bool
	// PublicURL is the absolute URL deployd is reached at (public_url),
	// optional. With it, the status page login accepts form posts from that
	// origin as well as from the request's own host (for a proxy that
	// rewrites Host), and an https URL makes the login cookie Secure even
	// when TLS ends at a proxy.
	PublicURL string
}

// Server is deployd's HTTP handler. It is safe for concurrent use.
type Server struct {
	webhook  http.Handler
	store    Reader
	writes   WriteHealth
	services []deployer.Service
	byName   map[string]deployer.Service
	log      zerolog.Logger
	router   http.Handler

	tokens        TokenVerifier
	queue         Queue
	statusPrivate bool
	metrics       http.Handler
	// publicOrigin is public_url's scheme://host, lower case; "" without one.
	publicOrigin string
	// secureCookie makes the login cookie Secure on every request, not
	// only on those that arrive over TLS (public_url is https).
	secureCookie bool

	hub         *Hub
	credentials Credentials
	page        *page
	releases    ReleaseReader // nil: no release sets
}

// New checks the dependencies and builds the router.
func New(cfg Config) (*Server, error) {
	switch {
	case cfg.Webhook == nil:
		return nil, errors.New("new server: no webhook handler")
	case cfg.Reads.Store == nil:
		return nil, errors.New("new server: no store")
	case cfg.Queue == nil:
		return nil, errors.New("new server: no queue")
	case cfg.Auth.StatusPrivate && cfg.Auth.Tokens == nil:
		return nil, errors.New("new server: status.public is false but api.token_key_file is not set, so nobody could read the status")
	}
	s := &Server{
		webhook:       cfg.Webhook,
		store:         cfg.Reads.Store,
		writes:        cfg.Reads.WriteHealth,
		services:      cfg.Services,
		byName:        make(map[string]deployer.Service, len(cfg.Services)),
		log:           cfg.Logger,
		tokens:        cfg.Auth.Tokens,
		queue:         cfg.Queue,
		statusPrivate: cfg.Auth.StatusPrivate,
		metrics:       cfg.Reads.Metrics,
		hub:           cfg.Reads.Events,
		credentials:   cfg.Reads.Credentials,
		releases:      cfg.Reads.Releases,
	}
	for _, svc := range cfg.Services {
		s.byName[svc.Name] = svc
	}
	if s.hub == nil {
		s.hub = NewHub(HubConfig{Logger: cfg.Logger})
	}
	var err error
	if s.page, err = newPage(); err != nil {
		return nil, fmt.Errorf("new server: %w", err)
	}
	if cfg.Auth.PublicURL != "" {
		u, err := url.Parse(cfg.Auth.PublicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			// The URL itself is not quoted: it may hold a password.
			return nil, errors.New("new server: public_url is not an absolute http(s) URL")
		}
		s.publicOrigin = strings.ToLower(u.Scheme + "://" + u.Host)
		s.secureCookie = u.Scheme == "https"
	}
	s.router = s.routes()
	return s, nil
}

// ServeHTTP dispatches to the router.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.router.ServeHTTP(w, r) }

// HTTPServer returns an http.Server for h with deployd's timeouts. Writes
// have no overall deadline because ?wait and the event stream are long by
// design. The read and idle timeouts bound clients that are slow to send a
// request or idle between requests; they do not bound a client that stops
// reading a response. The event stream sets its own deadline on each write
// (HubConfig.WriteTimeout) for that.
func HTTPServer(addr string, h http.Handler, log zerolog.Logger) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       2 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          httpErrorLog(log),
	}
}
