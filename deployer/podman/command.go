package podman

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// CommandRunner runs external commands (podman, systemctl, a service's
// deploy command) the one way deployd allows: an argv, never a shell; a
// context and a timeout; SIGTERM first, SIGKILL after a grace period;
// secrets only on stdin; stderr kept as a short tail for the step log.
// It is safe for concurrent use.
type CommandRunner struct {
	// Env is the child's whole environment besides the extra variables of
	// each Run. Build it with ChildEnv so that deployd's own secrets (such
	// as a webhook secret given through the environment) never reach a child.
	Env []string
	// Grace is how long a child has between SIGTERM and SIGKILL (default 10s).
	Grace time.Duration
}

// CommandError is a command that failed: it did not start, exited non-zero,
// or was stopped by its deadline. Stderr is the end of its error output.
type CommandError struct {
	Argv     []string // argv[0] and the arguments (never secrets: those go on stdin)
	ExitCode int      // -1 when it did not exit by itself
	Stderr   string
	Err      error
}

// Error returns the command and the end of its error output.
func (e *CommandError) Error() string {
	msg := strings.TrimSpace(e.Stderr)
	if msg == "" {
		msg = e.Err.Error()
	}
	return fmt.Sprintf("%s: %s", strings.Join(e.Argv, " "), msg)
}

// Unwrap returns the underlying error (an *exec.ExitError, a context error).
func (e *CommandError) Unwrap() error { return e.Err }

// stderrTail is how much of a failing command's stderr is kept.
const stderrTail = 4 << 10

// Run runs argv with stdin (may be nil) and extra environment variables,
// and returns its standard output. The timeout bounds the whole run; 0
// means only ctx does.
func (c *CommandRunner) Run(ctx context.Context, timeout time.Duration, stdin io.Reader, extraEnv []string, argv ...string) (string, error) {
	if len(argv) == 0 {
		return "", errors.New("run: empty command")
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = c.Grace
	if cmd.WaitDelay == 0 {
		cmd.WaitDelay = 10 * time.Second
	}
	// Never nil: a nil Env would hand the child all of deployd's environment.
	cmd.Env = append(append([]string{}, c.Env...), extraEnv...)
	cmd.Stdin = stdin
	var stdout bytes.Buffer
	stderr := &tailBuffer{max: stderrTail}
	cmd.Stdout = &stdout
	cmd.Stderr = stderr
	err := cmd.Run()
	if err == nil {
		return stdout.String(), nil
	}
	ce := &CommandError{Argv: argv, ExitCode: -1, Stderr: stderr.String(), Err: err}
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.Exited() {
		ce.ExitCode = ee.ExitCode()
	}
	if ctx.Err() != nil {
		ce.Err = fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	return stdout.String(), ce
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(t.buf) }

// ChildEnv keeps from environ (os.Environ's form) only what child commands
// need: PATH, HOME, USER, LANG, LC_*, TMPDIR, TZ, XDG_*, DBUS_SESSION_BUS_ADDRESS
// and CONTAINERS_* (podman's configuration). Everything else, deployd's own
// settings and secrets included, is dropped.
func ChildEnv(environ []string) []string {
	var out []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case name == "PATH", name == "HOME", name == "USER", name == "LANG", name == "TMPDIR",
			name == "TZ", name == "DBUS_SESSION_BUS_ADDRESS",
			strings.HasPrefix(name, "LC_"), strings.HasPrefix(name, "XDG_"),
			strings.HasPrefix(name, "CONTAINERS_"):
			out = append(out, kv)
		}
	}
	return out
}
