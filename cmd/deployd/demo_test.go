package main

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/deployd/deployd/demo"
	"github.com/deployd/deployd/internal/e2e"
	"github.com/deployd/deployd/internal/testlog"
)

// TestDemoEndToEnd runs deployd demo as a newcomer does, with real podman
// and docker-registry, checks through the API that it deployed, upgraded
// and rolled back, stops it as Ctrl-C does and checks that it left no
// container, image, process or file behind.
func TestDemoEndToEnd(t *testing.T) {
	needDemoTools(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, errOut := &testlog.Buffer{}, &testlog.Buffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"demo", "--listen", "127.0.0.1:0"}, func(string) string { return "" }, out, errOut)
	}()

	deadline := time.Now().Add(3 * time.Minute)
	for !strings.Contains(out.String(), "Demo complete") {
		select {
		case err := <-done:
			t.Fatalf("deployd demo ended before it was complete: %v\nstdout:\n%s\nstderr:\n%s", err, out, errOut)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cancel()
			<-done
			t.Fatalf("deployd demo not complete after 3 minutes:\n%s", out)
		}
	}
	printed := out.String()
	find := func(re string) string {
		t.Helper()
		m := regexp.MustCompile(re).FindStringSubmatch(printed)
		if m == nil {
			t.Fatalf("deployd demo printed no %s:\n%s", re, printed)
		}
		return m[1]
	}
	dir := find(`Working directory (\S+)`)
	page := find(`Status page: (http://\S+/)`)
	registry := find(`Pushed (127\.0\.0\.1:\d+)/`)
	app := find(`the app on http://(127\.0\.0\.1:\d+)/`)

	// The status page and the API show the three deployments.
	d := &instance{t: t, addr: strings.TrimSuffix(strings.TrimPrefix(page, "http://"), "/")}
	var list struct {
		Deployments []deploymentJSON `json:"deployments"`
	}
	d.getJSON("/api/v1/deployments?service="+demo.Service, http.StatusOK, &list)
	var got []string
	for i := len(list.Deployments) - 1; i >= 0; i-- {
		dep := list.Deployments[i]
		got = append(got, dep.Trigger.Kind+" "+dep.State)
	}
	if want := "webhook succeeded,webhook succeeded,rollback succeeded"; strings.Join(got, ",") != want {
		t.Fatalf("deployments oldest first: %v, want %s", got, want)
	}
	deploy, upgrade, rollback := list.Deployments[2], list.Deployments[1], list.Deployments[0]
	if deploy.Digest == upgrade.Digest || rollback.Digest != deploy.Digest {
		t.Errorf("digests: deploy %s, upgrade %s, rollback %s; want the upgrade new and the rollback back to the first", deploy.Digest, upgrade.Digest, rollback.Digest)
	}
	resp, err := http.Get(page)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("status page: %s, want 200", resp.Status)
	}
	if pids := demo.ProcessesUsing(dir); len(pids) == 0 {
		t.Errorf("no process uses %s while the demo runs; the cleanup check below would prove nothing", dir)
	}

	// Ctrl-C: everything the demo made is gone.
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("deployd demo stopped with %v\n%s", err, out)
		}
	case <-time.After(3 * time.Minute):
		t.Fatal("deployd demo did not stop within 3 minutes of Ctrl-C")
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the working directory %s (podman's storage of the containers and images, the registry's, deployd's data) is still there: %v", dir, err)
	}
	if pids := demo.ProcessesUsing(dir); len(pids) > 0 {
		t.Errorf("processes %v still use %s after the demo stopped", pids, dir)
	}
	for what, addr := range map[string]string{"registry": registry, "demo app": app, "deployd": d.addr} {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("the %s still listens on %s after the demo stopped", what, addr)
		}
	}
	if !strings.Contains(out.String(), "Removed the demo's") {
		t.Errorf("the demo did not say it cleaned up:\n%s", out)
	}
}

// TestDemoExitAfterDemo runs deployd demo --exit-after-demo, as a script
// would: it ends by itself, successfully, once the rollback is done, and
// removes what it made.
func TestDemoExitAfterDemo(t *testing.T) {
	needDemoTools(t)
	var out, errOut testlog.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := run(ctx, []string{"demo", "--exit-after-demo", "--listen", "127.0.0.1:0"}, func(string) string { return "" }, &out, &errOut); err != nil {
		t.Fatalf("deployd demo --exit-after-demo: %v\n%s", err, out.String())
	}
	if ctx.Err() != nil {
		t.Fatalf("deployd demo --exit-after-demo ran out of time:\n%s", out.String())
	}
	printed := out.String()
	for _, want := range []string{"deploy: deployment", "upgrade: deployment", "rollback: deployment", "Demo complete", "Removed the demo's"} {
		if !strings.Contains(printed, want) {
			t.Errorf("the demo did not print %q:\n%s", want, printed)
		}
	}
	m := regexp.MustCompile(`Working directory (\S+)`).FindStringSubmatch(printed)
	if m == nil {
		t.Fatalf("the demo printed no working directory:\n%s", printed)
	}
	if _, err := os.Stat(m[1]); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the working directory %s is still there: %v", m[1], err)
	}
}

// needDemoTools skips (or fails, see internal/e2e) a test of deployd demo
// on a machine without the tools it needs.
func needDemoTools(t *testing.T) {
	t.Helper()
	for _, tool := range []struct{ name, debian string }{
		{"podman", "/usr/bin/podman"}, {"docker-registry", "/usr/bin/docker-registry"}, {"go", ""},
	} {
		if _, err := exec.LookPath(tool.name); err != nil {
			if _, serr := os.Stat(tool.debian); tool.debian == "" || serr != nil {
				e2e.Missing(t, tool.name+" not found (run scripts/install-test-deps)")
			}
		}
	}
}
