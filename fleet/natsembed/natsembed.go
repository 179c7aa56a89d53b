// Package natsembed runs the NATS server with JetStream inside deployd, for
// a hub that has no NATS cluster to point at: its store under the data
// directory, its client port on the address configured (loopback by
// default), and, when users are given, NKey authentication with per-user
// subject permissions.
//
// It imports nothing of the project.
package natsembed

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// User is one NKey user of the server and what it may publish and
// subscribe to (NATS subject patterns). A nil list allows everything.
type User struct {
	// PublicKey is the user's NKey public key ("U...").
	PublicKey string
	Publish   []string
	Subscribe []string
}

// Config says how to run the server.
type Config struct {
	// Listen is the client address, "127.0.0.1:4222"; port 0 picks a
	// free one. Required.
	Listen string
	// StoreDir is where JetStream keeps its streams. Required.
	StoreDir string
	// Users, when not empty, turns on NKey authentication: only these
	// users may connect, each with its permissions.
	Users []User
	// ReadyTimeout bounds the wait for the server to accept connections
	// (default 10s).
	ReadyTimeout time.Duration
}

// Server is a running embedded NATS server. Its methods are safe for
// concurrent use.
type Server struct {
	ns *server.Server
}

// Start starts the server and waits until it accepts connections. It
// returns an error for a bad Config or a server that does not come up.
func Start(cfg Config) (*Server, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("start nats: no store directory")
	}
	host, portText, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("start nats: listen address %q: %w", cfg.Listen, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return nil, fmt.Errorf("start nats: listen port %q: %w", portText, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	opts := &server.Options{
		ServerName: "deployd-hub",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		NoSigs:     true,
		NoLog:      true,
		// No HTTP monitoring, cluster, gateway or leaf ports: only the
		// client port listens.
		HTTPPort: 0,
	}
	for _, u := range cfg.Users {
		opts.Nkeys = append(opts.Nkeys, &server.NkeyUser{
			Nkey: u.PublicKey,
			Permissions: &server.Permissions{
				Publish:   allow(u.Publish),
				Subscribe: allow(u.Subscribe),
			},
		})
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("start nats: %w", err)
	}
	go ns.Start()
	wait := cfg.ReadyTimeout
	if wait <= 0 {
		wait = 10 * time.Second
	}
	if !ns.ReadyForConnections(wait) {
		ns.Shutdown()
		return nil, fmt.Errorf("start nats on %s: not accepting connections after %s", cfg.Listen, wait)
	}
	if !ns.JetStreamEnabled() {
		ns.Shutdown()
		return nil, errors.New("start nats: JetStream did not start")
	}
	return &Server{ns: ns}, nil
}

// allow turns a subject list into a permission, nil meaning no limit.
func allow(subjects []string) *server.SubjectPermission {
	if subjects == nil {
		return nil
	}
	return &server.SubjectPermission{Allow: subjects}
}

// ClientURL returns the URL clients connect to, "nats://127.0.0.1:PORT".
func (s *Server) ClientURL() string { return s.ns.ClientURL() }

// Shutdown stops the server and waits until it has stopped.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}
