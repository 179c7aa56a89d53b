//go:build !linux

package podmantest

// processesUsing finds nothing outside Linux.
func processesUsing(string) []int { return nil }

// kill is not needed outside Linux.
func kill(int) error { return nil }

// unmountUnder does nothing outside Linux, where podman runs containers in
// a virtual machine and leaves no mounts on the host.
func unmountUnder(string) error { return nil }
