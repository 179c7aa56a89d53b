package registrytest

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deployd/deployd/internal/e2e"
)

// DefaultService is the token service name used when [Options.Service] is
// empty. The registry accepts only tokens whose audience is the service.
const DefaultService = "registrytest"

// issuer is the token issuer the registry trusts.
const issuer = "registrytest-token-server"

// Options configure [Start]. The zero value is a registry where only the
// push account can authenticate.
type Options struct {
	// Authorize decides token requests made with credentials other than
	// the push account's. It is called once per requested scope (once
	// with the zero Scope when the request names none, as `podman login`
	// does) and must be safe for concurrent use.
	//
	// ok false refuses the credentials: the token endpoint answers 403.
	// ok true grants a token whose access to scope is the intersection of
	// actions and scope.Actions ("*" in actions grants all of them); no
	// actions gives a valid token without access, so the registry answers
	// the pull with 401 UNAUTHORIZED (insufficient_scope).
	//
	// Nil refuses every credential but the push account's.
	Authorize func(username, password string, scope Scope) (actions []string, ok bool)

	// Service is the token service (the JWT audience); DefaultService if
	// empty.
	Service string

	// TokenTTL is the lifetime of issued tokens; 5 minutes if zero.
	TokenTTL time.Duration
}

// Scope is one access request of the token protocol, such as
// "repository:team/app:pull,push".
type Scope struct {
	Type    string   // "repository" (or "registry" for the catalog)
	Name    string   // repository path without the host, e.g. "team/app"
	Actions []string // "pull", "push", "delete" or "*"
}

// String returns the scope in the token protocol's TYPE:NAME:ACTIONS form,
// or "" for the zero Scope.
func (s Scope) String() string {
	if s.Type == "" && s.Name == "" && len(s.Actions) == 0 {
		return ""
	}
	return s.Type + ":" + s.Name + ":" + strings.Join(s.Actions, ",")
}

// ParseScope parses a scope parameter of the token protocol
// ("repository:team/app:pull,push").
func ParseScope(s string) (Scope, error) {
	first := strings.Index(s, ":")
	last := strings.LastIndex(s, ":")
	if first <= 0 || last == first {
		return Scope{}, fmt.Errorf("parse scope %q: want TYPE:NAME:ACTIONS", s)
	}
	sc := Scope{Type: s[:first], Name: s[first+1 : last]}
	if sc.Name == "" {
		return Scope{}, fmt.Errorf("parse scope %q: empty name", s)
	}
	for _, a := range strings.Split(s[last+1:], ",") {
		if a != "" {
			sc.Actions = append(sc.Actions, a)
		}
	}
	return sc, nil
}

// TokenRequest records one request to the token endpoint. It never holds
// the password.
type TokenRequest struct {
	Time     time.Time
	Username string  // "" when the request carried no Basic credentials
	Service  string  // the service parameter as sent
	Scopes   []Scope // the scopes asked for, in order
	// Granted holds, for each of Scopes, the actions the token grants
	// (possibly none). Nil unless Status is 200.
	Granted []Scope
	Status  int // HTTP status answered: 200, 400, 401 or 403
}

// Registry is a running docker-registry with its token server. Its methods
// are safe for concurrent use.
type Registry struct {
	// PushUser and PushPassword are the built-in account that is granted
	// every action it asks for, such as pushing test images.
	PushUser     string
	PushPassword string

	host    string
	service string
	ttl     time.Duration
	auth    func(username, password string, scope Scope) ([]string, bool)
	signer  *signer
	tokens  *httptest.Server
	logPath string

	cmd  *exec.Cmd
	done chan struct{} // closed when the registry process has exited
	werr error         // the process's exit status, valid after done

	closeOnce sync.Once

	mu       sync.Mutex
	requests []TokenRequest
}

// Start runs a registry for the rest of the test and returns it; it is
// stopped (the process killed and waited for) and its storage removed when
// the test ends, or earlier by [Registry.Close]. It fails the test when
// the registry cannot be started and skips it when docker-registry is not
// installed (fails in CI or with DEPLOYD_E2E set).
func Start(t testing.TB, opts Options) *Registry {
	t.Helper()
	bin := registryBinary(t)

	dir := t.TempDir()
	s, err := newSigner()
	if err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	certPath := filepath.Join(dir, "token-signer.crt")
	if err := os.WriteFile(certPath, s.certPEM, 0o644); err != nil {
		t.Fatalf("registrytest: %v", err)
	}

	r := &Registry{
		PushUser:     "pusher",
		PushPassword: rand.Text(),
		service:      opts.Service,
		ttl:          opts.TokenTTL,
		auth:         opts.Authorize,
		signer:       s,
		logPath:      filepath.Join(dir, "registry.log"),
	}
	if r.service == "" {
		r.service = DefaultService
	}
	if r.ttl <= 0 {
		r.ttl = 5 * time.Minute
	}
	r.tokens = httptest.NewServer(http.HandlerFunc(r.serveToken))
	t.Cleanup(r.tokens.Close)

	storage := filepath.Join(dir, "storage")
	configPath := filepath.Join(dir, "config.yml")
	// The port is chosen by listening on :0 and closing; another process
	// may take it before the registry binds it, so retry a few times.
	const attempts = 5
	for i := 1; ; i++ {
		addr := freeAddr(t)
		config := registryConfig(addr, storage, r.tokens.URL+"/token", r.service, certPath)
		if err := os.WriteFile(configPath, []byte(config), 0o644); err != nil {
			t.Fatalf("registrytest: %v", err)
		}
		err := r.start(bin, configPath, addr)
		if err == nil {
			r.host = addr
			break
		}
		if i == attempts || !strings.Contains(err.Error(), "address already in use") {
			t.Fatalf("registrytest: start %s: %v\n%s", bin, err, r.logTail())
		}
	}
	t.Cleanup(func() {
		r.Close()
		if t.Failed() {
			t.Logf("registrytest: last lines of the registry log:\n%s", r.logTail())
		}
	})
	return r
}

// start runs the registry process and waits until it answers on addr.
func (r *Registry) start(bin, configPath, addr string) error {
	logf, err := os.Create(r.logPath)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own copy

	cmd := exec.Command(bin, "serve", configPath)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.Env = registryEnv()
	setParentDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	r.cmd, r.done = cmd, done
	go func() {
		r.werr = cmd.Wait()
		close(done)
	}()

	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := client.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			challenge := resp.Header.Get("WWW-Authenticate")
			if resp.StatusCode == http.StatusUnauthorized && strings.HasPrefix(challenge, "Bearer ") {
				return nil
			}
			r.stop()
			return fmt.Errorf("GET /v2/: got %s with challenge %q, want 401 with a Bearer challenge", resp.Status, challenge)
		}
		select {
		case <-done:
			return fmt.Errorf("registry exited (%v): %s", r.werr, r.logTail())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			r.stop()
			return fmt.Errorf("registry not ready on %s after 30s: %v", addr, err)
		}
	}
}

// stop kills the registry process and waits for it to exit.
func (r *Registry) stop() {
	if r.cmd == nil {
		return
	}
	select {
	case <-r.done:
	default:
		_ = r.cmd.Process.Kill()
		<-r.done
	}
}

// Close stops the registry: the process is killed and waited for, and the
// token server is shut down. Later requests fail to connect, which tests
// can use to simulate an unreachable registry. Close is idempotent and is
// called automatically when the test ends.
func (r *Registry) Close() {
	r.closeOnce.Do(func() {
		r.stop()
		r.tokens.Close()
	})
}

// Host returns the registry's address, "127.0.0.1:PORT", which is also the
// host part of image references such as Host()+"/team/app:latest".
func (r *Registry) Host() string { return r.host }

// URL returns the registry's base URL, "http://127.0.0.1:PORT".
func (r *Registry) URL() string { return "http://" + r.host }

// Image returns the reference of repository name (e.g. "team/app") in this
// registry, without tag or digest.
func (r *Registry) Image(name string) string { return r.host + "/" + name }

// TokenURL returns the token endpoint (the Bearer realm).
func (r *Registry) TokenURL() string { return r.tokens.URL + "/token" }

// Service returns the token service name (the tokens' audience).
func (r *Registry) Service() string { return r.service }

// TokenRequests returns a copy of the token requests received so far, in
// order of arrival.
func (r *Registry) TokenRequests() []TokenRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]TokenRequest, len(r.requests))
	copy(out, r.requests)
	return out
}

// logTail returns the end of the registry's log file.
func (r *Registry) logTail() string {
	b, err := os.ReadFile(r.logPath)
	if err != nil {
		return fmt.Sprintf("(no registry log: %v)", err)
	}
	const max = 4000
	if len(b) > max {
		b = b[len(b)-max:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
}

// registryConfig renders the docker-registry configuration.
func registryConfig(addr, storage, realm, service, certPath string) string {
	return fmt.Sprintf(`version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
  secret: %s
auth:
  token:
    realm: %s
    service: %s
    issuer: %s
    rootcertbundle: %s
`, strconv.Quote(storage), addr, rand.Text(), strconv.Quote(realm),
		strconv.Quote(service), strconv.Quote(issuer), strconv.Quote(certPath))
}

// registryEnv is the registry's environment: the test's, without the
// REGISTRY_* variables that would override its configuration.
func registryEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "REGISTRY_") {
			env = append(env, kv)
		}
	}
	return env
}

// registryBinary finds docker-registry, or skips or fails the test.
func registryBinary(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("docker-registry"); err == nil {
		return p
	}
	const debianPath = "/usr/bin/docker-registry"
	if _, err := os.Stat(debianPath); err == nil {
		return debianPath
	}
	const msg = "registrytest: docker-registry not found on PATH or at " + debianPath +
		" (run scripts/install-test-deps or apt-get install docker-registry)"
	e2e.Missing(t, msg)
	return ""
}

// freeAddr returns a 127.0.0.1 address with a port that was free a moment
// ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("registrytest: find a free port: %v", err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	return addr
}
