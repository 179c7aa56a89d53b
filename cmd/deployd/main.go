// Command deployd deploys containers on this host when GitHub says a new
// image exists. See the README for its configuration and API.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Build information, set with -ldflags "-X main.version=...".
var (
	version = "dev"
	commit  = "unknown"
)

// defaultConfigPath is where deployd looks for its configuration.
const defaultConfigPath = "/etc/deployd/deployd.yaml"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		var ee exitError
		if !errors.As(err, &ee) || ee.msg != "" {
			fmt.Fprintln(os.Stderr, "deployd:", err)
		}
		os.Exit(exitCode(err))
	}
}

// exitError ends the process with a code; msg may be empty when the
// command already said what went wrong.
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return e.msg }

func exitCode(err error) int {
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

// usageError is a mistake on the command line.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// env is what a subcommand gets from the process.
type env struct {
	getenv func(string) string
	stdout io.Writer
	stderr io.Writer
	// childEnv holds KEY=VALUE variables added to the environment of the
	// commands deployd runs (podman); only deployd demo sets it, for the
	// podman settings of its own storage.
	childEnv []string
}

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, e env, args []string) error
}

func commands() []command {
	return []command{
		{"serve", "run the HTTP service: webhooks, API, status page, deploys", serveCommand},
		{"check-config", "load and validate the configuration, then exit", checkConfigCommand},
		{"doctor", "check config, GitHub App and registry credentials live, with fixes", doctorCommand},
		{"token", "issue an API token (token issue) or make a token key (token keygen)", tokenCommand},
		{"deploy", "deploy a service through the API: deploy SERVICE [--tag T|--digest D] [--wait]", deployCommand},
		{"rollback", "roll a service back to its previous version through the API", rollbackCommand},
		{"status", "show what runs for each service, from the API", statusCommand},
		{"fleet", "add a host to a fleet hub and print its agent's credentials: fleet add-host NAME", fleetCommand},
		{"backup", "copy the store to PATH while deployd runs: backup PATH [--force]", backupCommand},
		{"demo", "show a deploy, an upgrade and a rollback with a local registry and podman", demoCommand},
		{"version", "print the version", versionCommand},
	}
}

// run is deployd's main, testable: no globals, no os.Exit.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	e := env{getenv: getenv, stdout: stdout, stderr: stderr}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return usageError{"no command given"}
		}
		return nil
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, e, args[1:])
		}
	}
	usage(stderr)
	return usageError{fmt.Sprintf("unknown command %q", args[0])}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: deployd COMMAND [--config PATH] [flags]")
	fmt.Fprintln(w, "\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-13s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun deployd COMMAND -h for a command's flags.")
}

// newFlags returns a flag set that reports errors instead of exiting.
func newFlags(e env, name string) *flag.FlagSet {
	fs := flag.NewFlagSet("deployd "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	return fs
}

// parseFlags parses args and turns flag errors into usage errors.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitError{code: 0}
		}
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	return nil
}

func versionCommand(_ context.Context, e env, args []string) error {
	fs := newFlags(e, "version")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "deployd %s (commit %s)\n", version, commit)
	return nil
}
