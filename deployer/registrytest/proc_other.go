//go:build !linux

package registrytest

import "os/exec"

// setParentDeathSignal does nothing where the platform has no parent-death
// signal; the test cleanup still stops the registry.
func setParentDeathSignal(*exec.Cmd) {}
