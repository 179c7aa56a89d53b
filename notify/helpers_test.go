package notify

import (
	"bufio"
	"context"
	"encoding/base64"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/deployd/deployd/deployer"
	"github.com/deployd/deployd/internal/testlog"
)

// statuses is a Status of fixed service statuses.
type statuses map[string]deployer.ServiceStatus

func (s statuses) ServiceStatus(_ context.Context, name string) (deployer.ServiceStatus, error) {
	return s[name], nil
}

// counts records Count calls; wait blocks until one reaches a number.
type counts struct {
	mu      sync.Mutex
	n       map[string]int
	changed *sync.Cond
}

func newCounts() *counts {
	c := &counts{n: map[string]int{}}
	c.changed = sync.NewCond(&c.mu)
	return c
}

func (c *counts) count(kind, result string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[kind+"/"+result]++
	c.changed.Broadcast()
}

func (c *counts) get(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[key]
}

// wait blocks until the count of key ("kind/result") is at least n.
func (c *counts) wait(key string, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.n[key] < n {
		c.changed.Wait()
	}
}

// newTestNotifier starts a Notifier for targets with quick retries and
// closes it when the test ends.
func newTestNotifier(t *testing.T, st Status, targets ...Target) (*Notifier, *counts, *testlog.Buffer) {
	t.Helper()
	c := newCounts()
	logs := &testlog.Buffer{}
	n, err := New(Config{Targets: targets, Status: st, PublicURL: "https://deploy.example.test/",
		Logger: zerolog.New(logs), Count: c.count, Backoff: time.Millisecond, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close(10 * time.Second) })
	return n, c, logs
}

// failedDeployment is a deployment that failed its health check.
func failedDeployment(id int64) deployer.Deployment {
	return deployer.Deployment{
		ID: id, Service: "backend", State: deployer.StateFailed, Tag: "latest",
		Digest:     "sha256:" + strings.Repeat("ab", 32),
		Trigger:    deployer.Trigger{Kind: deployer.TriggerWebhook, Event: "registry_package", DeliveryID: "d-1"},
		ErrorClass: deployer.ClassHealth, Error: "health check failed", Hint: "check its logs and health endpoint",
		Steps: []deployer.Step{
			{Name: "resolve", Outcome: "ok", Message: "resolved"},
			{Name: "verify", Outcome: "failed", Message: "container e2e is exited; last output: line 1\nline 2\nboom"},
		},
	}
}

// smtpServer is a minimal SMTP listener that accepts AUTH PLAIN and
// records each message's data and the credentials it was given.
type smtpServer struct {
	addr string
	mu   sync.Mutex
	data []string
	auth []string
}

func startSMTP(t *testing.T) *smtpServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	s := &smtpServer{addr: ln.Addr().String()}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	return s
}

func (s *smtpServer) serve(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	say := func(l string) { _, _ = c.Write([]byte(l + "\r\n")) }
	say("220 test ESMTP")
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.TrimSpace(line))
		switch {
		case strings.HasPrefix(cmd, "EHLO"), strings.HasPrefix(cmd, "HELO"):
			say("250-test")
			say("250 AUTH PLAIN")
		case strings.HasPrefix(cmd, "AUTH PLAIN"):
			raw, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(line)[len("AUTH PLAIN "):])
			s.mu.Lock()
			s.auth = append(s.auth, string(raw))
			s.mu.Unlock()
			say("235 ok")
		case strings.HasPrefix(cmd, "DATA"):
			say("354 go on")
			var b strings.Builder
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
				b.WriteString(l)
			}
			s.mu.Lock()
			s.data = append(s.data, b.String())
			s.mu.Unlock()
			say("250 queued")
		case strings.HasPrefix(cmd, "QUIT"):
			say("221 bye")
			return
		default: // MAIL, RCPT, RSET, NOOP
			say("250 ok")
		}
	}
}

func (s *smtpServer) messages() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.data...)
}
