package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/deployd/deployd/configs"
	"github.com/deployd/deployd/deployer/sqlite"
)

// backupCommand copies the store in data_dir to PATH while deployd may be
// serving from it: the database is read on a read-only connection of the
// command's own, in WAL mode, which neither waits for nor holds up the
// running writer.
func backupCommand(ctx context.Context, e env, args []string) error {
	flags := newFlags(e, "backup")
	configPath := flags.String("config", defaultConfigPath, "configuration file")
	force := flags.Bool("force", false, "replace PATH if it exists")
	var path string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		path, args = args[0], args[1:]
	}
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitError{code: 0}
		}
		return usageError{err.Error()}
	}
	rest := flags.Args()
	if path == "" && len(rest) > 0 {
		path, rest = rest[0], rest[1:]
	}
	if len(rest) > 0 {
		return usageError{fmt.Sprintf("unexpected argument %q", rest[0])}
	}
	if path == "" {
		return usageError{"name the backup file, e.g. deployd backup /var/backups/deployd.db"}
	}
	cfg, err := configs.Load(*configPath, e.getenv)
	if err != nil {
		return err
	}
	db := storePath(cfg)
	if err := sqlite.BackupFile(ctx, db, path, *force); err != nil {
		if errors.Is(err, sqlite.ErrBackupExists) {
			return fmt.Errorf("%w (give --force to replace it)", err)
		}
		return err
	}
	fmt.Fprintf(e.stdout, "backed up %s to %s\n", db, path)
	return nil
}
