// Package auth holds what deployd's credential packages share: reading a
// key file (the GitHub App's private key, the API token key) without its
// content ever reaching an error, and the warning for a secret file that
// group or others may read (those two and a registry token file). The
// credentials themselves live in the subpackages, split by what they talk
// to:
//
//   - github: the GitHub App (JWT, installation tokens, GitHub's errors in
//     plain words, the Deployments API client); githubtest fakes GitHub;
//   - registry: the registry credential chain, its token file and the
//     explanations of registry refusals;
//   - apitoken: deployd's own API tokens.
//
// The package imports none of deployd's packages.
package auth

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// ReadSecretFile reads the key file at path and returns its content and
// mode. Its errors start with op, name the path but never the content, and
// add hint (if any) when the file does not exist.
func ReadSecretFile(op, path, hint string) ([]byte, fs.FileMode, error) {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, 0, fmt.Errorf("%s %s: the file does not exist%s", op, path, hint)
	case errors.Is(err, fs.ErrPermission):
		return nil, 0, fmt.Errorf("%s %s: the file is not readable by this user (permission denied)", op, path)
	case err != nil:
		return nil, 0, fmt.Errorf("%s: %w", op, err)
	case fi.IsDir():
		return nil, 0, fmt.Errorf("%s %s: it is a directory, not a key file", op, path)
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrPermission) {
		return nil, 0, fmt.Errorf("%s %s: the file is not readable by this user (permission denied)", op, path)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", op, err)
	}
	return data, fi.Mode(), nil
}

// PermissionWarning returns a warning when a secret file is readable by
// group or others, and "" otherwise.
func PermissionWarning(what, path string, mode fs.FileMode) string {
	if mode.Perm()&0o077 == 0 {
		return ""
	}
	return fmt.Sprintf("%s %s is readable by group or others (mode %04o); run chmod 600 %s", what, path, mode.Perm(), path)
}
