//go:build !linux

package demo

import (
	"fmt"
	"os"
	"os/exec"
)

func setParentDeathSignal(*exec.Cmd) {}

func removeDir(dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("demo: remove %s: %w", dir, err)
	}
	return nil
}

// ProcessesUsing returns nil: processes are only looked up on Linux.
func ProcessesUsing(string) []int { return nil }
