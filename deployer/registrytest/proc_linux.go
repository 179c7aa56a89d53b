package registrytest

import (
	"os/exec"
	"syscall"
)

// setParentDeathSignal makes the kernel kill the registry if the test
// binary dies without running its cleanups (a panic or a timeout), so no
// registry outlives the tests.
func setParentDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
