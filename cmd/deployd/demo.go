package main

import (
	"context"
	"io"

	"github.com/deployd/deployd/demo"
)

// demoCommand runs deployd demo: a local registry, two pushes of a demo
// image, deployd serving them, a deploy, an upgrade and a rollback.
func demoCommand(ctx context.Context, e env, args []string) error {
	fs := newFlags(e, "demo")
	listen := fs.String("listen", "127.0.0.1:8080", "address of deployd's status page and API (port 0: a free one)")
	exitAfter := fs.Bool("exit-after-demo", false, "stop and clean up once the rollback is done instead of waiting for Ctrl-C")
	var podmanArgs []string
	fs.Func("podman-arg", "a global podman option for the demo's podman, such as --runtime=runc (repeatable; default: detected)", func(v string) error {
		podmanArgs = append(podmanArgs, v)
		return nil
	})
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	opts := demo.Options{
		Out:           e.stdout,
		Listen:        *listen,
		ExitAfterDemo: *exitAfter,
		PodmanArgs:    podmanArgs, // nil: detected
		Serve: func(ctx context.Context, configPath string, logs io.Writer, childEnv []string) error {
			se := env{getenv: e.getenv, stdout: io.Discard, stderr: logs, childEnv: childEnv}
			return serveCommand(ctx, se, []string{"--config", configPath})
		},
	}
	return demo.Run(ctx, opts)
}
