package demo

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// registryProc is the running docker-registry.
type registryProc struct {
	host string // 127.0.0.1:PORT
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // its exit status, valid after done
}

// startRegistry runs `docker-registry serve` without auth on a free
// loopback port, storing under dir, and waits until it answers.
func startRegistry(ctx context.Context, bin, dir string) (*registryProc, error) {
	storage := filepath.Join(dir, "registry")
	configPath := filepath.Join(dir, "registry.yml")
	logPath := filepath.Join(dir, "registry.log")
	// The port was free a moment ago; another process may take it before
	// the registry binds it, so try a few.
	var lastErr error
	for range 5 {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		host := "127.0.0.1:" + strconv.Itoa(port)
		config := fmt.Sprintf(`# Written by deployd demo; removed when it stops.
version: 0.1
log: {level: warn, formatter: text}
storage:
  filesystem: {rootdirectory: %s}
  delete: {enabled: true}
http:
  addr: %s
`, strconv.Quote(storage), host)
		if err := os.WriteFile(configPath, []byte(config), 0o600); err != nil {
			return nil, fmt.Errorf("demo: write registry configuration: %w", err)
		}
		r, err := runRegistry(ctx, bin, configPath, logPath, host)
		if err == nil {
			return r, nil
		}
		lastErr = err
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return nil, lastErr
}

func runRegistry(ctx context.Context, bin, configPath, logPath, host string) (*registryProc, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	defer logf.Close() // the child has its own copy
	cmd := exec.Command(bin, "serve", configPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	// The registry reads REGISTRY_* variables as configuration.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "REGISTRY_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	setParentDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("demo: start %s: %w", bin, err)
	}
	r := &registryProc{host: host, cmd: cmd, done: make(chan struct{})}
	go func() {
		r.err = cmd.Wait()
		close(r.done)
	}()
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := client.Get("http://" + host + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return r, nil
			}
			r.stop()
			return nil, fmt.Errorf("demo: the registry answers GET /v2/ with %s, want 200", resp.Status)
		}
		select {
		case <-r.done:
			b, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("demo: the registry exited (%v): %s", r.err, bytes.TrimSpace(b))
		case <-ctx.Done():
			r.stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			r.stop()
			return nil, fmt.Errorf("demo: the registry is not ready on %s after 30s: %w", host, err)
		}
	}
}

// stop kills the registry and waits for it.
func (r *registryProc) stop() {
	select {
	case <-r.done:
	default:
		_ = r.cmd.Process.Kill()
		<-r.done
	}
}
