// Package podmantest gives tests an isolated, working podman and a way to
// make small runnable images without a Dockerfile engine.
//
// # Isolation
//
// [New] points every podman call at its own storage under a short
// temporary directory (--root, --runroot, --tmpdir, and TMPDIR for the
// temporary files of pulls), so tests never see or touch the images and
// containers of the machine or of other tests, and gives it its own
// registry auth file (REGISTRY_AUTH_FILE, created empty: podman 4.3 fails
// on a missing one even with --creds), so a `podman login` in one test
// does not leak into others. The directory is short on purpose
// (/tmp/ptNNNN rather than t.TempDir()): conmon's sockets live under the
// run root, and Unix socket paths are limited to 108 bytes. Storage uses
// the vfs driver: it needs no overlay mounts, so nothing stays mounted
// when a test fails half way, and the test images are a single small
// layer, so copying is cheap.
//
// When the test ends, even after a failure, every container is removed
// (`podman rm --all --force --time 0`), the cleanup waits for the conmon
// and `podman container cleanup` processes that outlive the containers
// for a moment, unmounts anything still mounted under the directory and
// deletes it. Only a test binary killed without running its cleanups
// (a `go test -timeout` panic) can leave a /tmp/ptNNNN directory behind.
//
// # Machine quirks
//
// The project's test machines run containers inside a virtual machine
// whose limits differ from a normal host; two adjustments are needed, and
// they are test settings, not product defaults (real hosts run podman's
// defaults fine):
//
//   - crun, Debian's default OCI runtime, fails there ("setrlimit
//     RLIMIT_NOFILE: Operation not permitted", then "cgroups in hybrid mode
//     not supported"): runc is used instead (--runtime).
//   - podman's default ulimits cannot be applied ("error setting rlimit
//     type 7: operation not permitted"): a containers.conf with
//     `[containers] default_ulimits = []` is written to the temporary
//     directory and named by CONTAINERS_CONF. Note that CONTAINERS_CONF
//     replaces the system containers.conf files rather than adding to them.
//
// The cgroup manager is cgroupfs and the events backend a file, so podman
// needs neither systemd nor journald.
//
// [Podman.GlobalArgs] and [Podman.Env] expose these settings so that
// deployd's own podman runner can be configured the same way in end-to-end
// tests (podman.global_args in its configuration, and the environment of
// the podman processes it starts).
//
// # Test images
//
// [Podman.BuildApp] builds (once per test binary) a static Go HTTP server,
// internal/testapp, packs it alone into a tar, turns that into an image
// with `podman import --change ...` and pushes it, returning the pushed
// manifest digest. The server answers GET /version with the version baked
// into the image and GET /healthz with 200, or 500 for an image built with
// [AppOptions.Unhealthy]; it listens on $PORT.
//
// # Requirements
//
// podman and runc (scripts/install-test-deps installs them) and the go
// command. When podman or runc is missing, New skips the test, unless the
// environment asks for end-to-end tests (DEPLOYD_E2E set to anything but
// "0" or "false", or CI=true): then it fails it, so CI never passes by
// skipping.
package podmantest
