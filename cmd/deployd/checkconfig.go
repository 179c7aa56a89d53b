package main

import (
	"context"
	"fmt"
	"sort"

	"github.com/deployd/deployd/configs"
	"github.com/deployd/deployd/deployer/podman"
	"github.com/deployd/deployd/doctor"
)

func checkConfigCommand(_ context.Context, e env, args []string) error {
	fs := newFlags(e, "check-config")
	configPath := fs.String("config", defaultConfigPath, "configuration file")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := configs.Load(*configPath, e.getenv)
	if err != nil {
		return err
	}
	names := make([]string, 0, len(cfg.Services))
	for name := range cfg.Services {
		names = append(names, name)
	}
	sort.Strings(names)
	fmt.Fprintf(e.stdout, "%s: OK\n", *configPath)
	fmt.Fprintf(e.stdout, "listen %s, data_dir %s, %d service(s)\n", cfg.Listen, cfg.DataDir, len(names))
	for _, n := range names {
		s := cfg.Services[n]
		fmt.Fprintf(e.stdout, "  %-16s %s tags %v, strategy %s\n", n, s.Image, s.Tags, s.Strategy)
	}
	if o := cfg.API.OIDC; o != nil {
		fmt.Fprintf(e.stdout, "api: GitHub Actions OIDC tokens of %s for audience %s, %d rule(s)\n", o.Issuer, o.Audience, len(o.Rules))
	}
	return printNotifications(e.stdout, cfg)
}

func doctorCommand(ctx context.Context, e env, args []string) error {
	flags := newFlags(e, "doctor")
	configPath := flags.String("config", defaultConfigPath, "configuration file")
	strict := flags.Bool("strict", false, "exit non-zero on warnings too, such as a registry that only accepts a fallback credential")
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	counts, err := doctor.Run(ctx, doctor.Config{
		Out:      e.stdout,
		Getenv:   e.getenv,
		Resolver: podman.RegistryResolver{UserAgent: "deployd/" + version + " doctor"},
		Classify: podman.ClassifyRegistryError,
	}, *configPath)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("doctor: %w", err)
	}
	if counts.Fail > 0 || (*strict && counts.Warn > 0) {
		return exitError{code: 1}
	}
	return nil
}
