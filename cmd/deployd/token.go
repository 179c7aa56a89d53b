package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/deployd/deployd/auth/apitoken"
	"github.com/deployd/deployd/configs"
)

// defaultTokenTTL is the lifetime of a token when --ttl is not given.
const defaultTokenTTL = 720 * time.Hour

// scopeList is a repeatable --scope flag; each value may also hold several
// scopes separated by commas or spaces.
type scopeList []string

func (s *scopeList) String() string { return strings.Join(*s, " ") }

func (s *scopeList) Set(v string) error {
	for _, f := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' }) {
		*s = append(*s, f)
	}
	return nil
}

func tokenCommand(ctx context.Context, e env, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(e.stderr, "usage: deployd token issue --scope SCOPE [--scope SCOPE] --subject WHO [--ttl 720h] [--config PATH | --key-file PATH]")
		fmt.Fprintln(e.stderr, "       deployd token keygen [--out PATH]")
		fmt.Fprintln(e.stderr, "\nscopes: deploy:SERVICE, deploy:* (every service), status:read; every deploy scope also reads status")
		if len(args) == 0 {
			return usageError{"token: no subcommand given (issue or keygen)"}
		}
		return nil
	}
	switch args[0] {
	case "issue":
		return tokenIssue(ctx, e, args[1:])
	case "keygen":
		return tokenKeygen(e, args[1:])
	}
	return usageError{fmt.Sprintf("token: unknown subcommand %q (want issue or keygen)", args[0])}
}

// tokenIssue prints a new API token, and nothing else, on stdout.
func tokenIssue(_ context.Context, e env, args []string) error {
	flags := newFlags(e, "token issue")
	configPath := flags.String("config", defaultConfigPath, "configuration file, for api.token_key_file")
	keyFile := flags.String("key-file", "", "the API token key file (default: api.token_key_file of --config)")
	subject := flags.String("subject", "", "who the token is for, recorded on the deployments it asks for (required)")
	ttl := flags.Duration("ttl", defaultTokenTTL, "how long the token is valid")
	var scopes scopeList
	flags.Var(&scopes, "scope", "a scope to grant: deploy:SERVICE, deploy:* or status:read (repeatable)")
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	if *subject == "" {
		return usageError{"token issue: --subject is required (e.g. --subject ci)"}
	}
	if len(scopes) == 0 {
		return usageError{"token issue: --scope is required (e.g. --scope deploy:backend)"}
	}
	path := *keyFile
	if path == "" {
		cfg, err := configs.Load(*configPath, e.getenv)
		if err != nil {
			return err
		}
		if cfg.API.TokenKeyFile == "" {
			return fmt.Errorf("token issue: api.token_key_file is not set in %s; %s", *configPath, apitoken.KeygenHint)
		}
		path = cfg.API.TokenKeyFile
	}
	key, warning, err := apitoken.LoadKey(path)
	if err != nil {
		return fmt.Errorf("token issue: %w", err)
	}
	if warning != "" {
		fmt.Fprintln(e.stderr, "warning:", warning)
	}
	tok, err := key.Issue(*subject, scopes, *ttl)
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, tok)
	fmt.Fprintf(e.stderr, "token for %q with scope %s, valid until %s\n",
		*subject, strings.Join(scopes, " "), time.Now().Add(*ttl).UTC().Format(time.RFC3339))
	return nil
}

// tokenKeygen makes a new API token key, on stdout or in a new file.
func tokenKeygen(e env, args []string) error {
	flags := newFlags(e, "token keygen")
	out := flags.String("out", "", "write the key to this new file (mode 0600) instead of stdout")
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	key, err := apitoken.GenerateKey()
	if err != nil {
		return err
	}
	if *out == "" {
		_, err := e.stdout.Write(key)
		return err
	}
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("token keygen: %s exists; a new key revokes every token of the old one, so remove it first if that is what you want", *out)
	}
	if err != nil {
		return fmt.Errorf("token keygen: %w", err)
	}
	if _, err := f.Write(key); err != nil {
		f.Close()
		return fmt.Errorf("token keygen: write %s: %w", *out, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("token keygen: write %s: %w", *out, err)
	}
	fmt.Fprintf(e.stderr, "wrote a new API token key to %s; set api.token_key_file: %s\n", *out, *out)
	return nil
}
