package main

import (
	"github.com/rs/zerolog"

	"github.com/deployd/deployd/configs"
	"github.com/deployd/deployd/deployer"
	"github.com/deployd/deployd/deployer/sqlite"
	"github.com/deployd/deployd/webhook"
)

// newReleaser builds the release sets' runner and returns it with the
// recorder the webhook hands deliveries to: the releaser, which sends
// requests of no set on to the queue, or the queue itself when no set is
// configured (the releaser is then nil).
func newReleaser(cfg *configs.Config, store *sqlite.Store, queue *deployer.Queue, out *outputs, log zerolog.Logger) (*deployer.Releaser, webhook.Recorder, error) {
	sets := cfg.ReleaseSetList()
	if len(sets) == 0 {
		return nil, queue, nil
	}
	r, err := deployer.NewReleaser(deployer.ReleaserConfig{Sets: sets, Store: store, Status: store, Queue: queue,
		Notify: out.hub.PublishRelease, Logger: log})
	if err != nil {
		return nil, nil, err
	}
	out.releases = r
	return r, r, nil
}

// outsideReleaseSets returns the services that are in no release set: the
// ones the reconciler catches up one by one. A set's members go live only
// together, with their run, so reconciling does not deploy them alone.
func outsideReleaseSets(cfg *configs.Config, services []deployer.Service) []deployer.Service {
	in := map[string]bool{}
	for _, rs := range cfg.ReleaseSetList() {
		for _, s := range rs.Services {
			in[s] = true
		}
	}
	out := make([]deployer.Service, 0, len(services))
	for _, s := range services {
		if !in[s.Name] {
			out = append(out, s)
		}
	}
	return out
}
