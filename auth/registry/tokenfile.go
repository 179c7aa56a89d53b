package registry

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/deployd/deployd/auth"
	"github.com/deployd/deployd/deployer"
)

// tokenFile is a personal access token kept in a file. It is re-read when
// the file's modification time or size changes, so that an operator can
// rotate the token without restarting deployd. Safe for concurrent use.
type tokenFile struct {
	path string

	mu      sync.Mutex
	loaded  bool
	modTime time.Time
	size    int64
	token   deployer.Password
}

// read returns the token, re-reading the file if it changed. The content
// never appears in errors or logs.
func (f *tokenFile) read(log *zerolog.Logger) (deployer.Password, error) {
	fi, err := os.Stat(f.path)
	if err != nil {
		return deployer.Password{}, tokenFileError(f.path, err)
	}
	if fi.IsDir() {
		return deployer.Password{}, fmt.Errorf("token file %s is a directory", f.path)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.loaded && fi.ModTime().Equal(f.modTime) && fi.Size() == f.size {
		return f.token, nil
	}
	data, err := os.ReadFile(f.path)
	if err != nil {
		return deployer.Password{}, tokenFileError(f.path, err)
	}
	s := strings.TrimSpace(string(data))
	if s == "" {
		return deployer.Password{}, fmt.Errorf("token file %s is empty", f.path)
	}
	if strings.ContainsAny(s, "\r\n") {
		return deployer.Password{}, fmt.Errorf("token file %s holds more than one line; it must hold only the token", f.path)
	}
	reloaded := f.loaded
	f.loaded, f.modTime, f.size, f.token = true, fi.ModTime(), fi.Size(), deployer.NewPassword(s)
	if w := auth.PermissionWarning("token file", f.path, fi.Mode()); w != "" {
		log.Warn().Str("path", f.path).Msg(w)
	}
	if reloaded {
		log.Info().Str("path", f.path).Msg("token file changed; using the new token")
	}
	return f.token, nil
}

func tokenFileError(path string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("token file %s does not exist", path)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("token file %s is not readable by this user (permission denied)", path)
	default:
		return fmt.Errorf("read token file: %w", err)
	}
}
