package main

import (
	"context"

	"github.com/deployd/deployd/auth/github"
	"github.com/deployd/deployd/auth/registry"
	"github.com/deployd/deployd/deployer"
	"github.com/deployd/deployd/server"
	"github.com/deployd/deployd/webhook"
)

// credentialReport adapts the credential chain and the GitHub App to the
// status page's server.CredentialReporter. Either may be nil.
type credentialReport struct {
	chain *registry.Chain
	app   *github.App
}

// newCredentialReport reports on chain and on app (nil when no GitHub App
// is configured).
func newCredentialReport(app *github.App, chain *registry.Chain) credentialReport {
	return credentialReport{chain: chain, app: app}
}

// CredentialReport implements server.CredentialReporter. It holds no secret.
func (c credentialReport) CredentialReport() server.CredentialReport {
	var out server.CredentialReport
	if c.chain != nil {
		for _, h := range c.chain.Health() {
			out.Sources = append(out.Sources, server.CredentialSource{
				Host: h.Host, Source: h.Source, State: string(h.State), Reason: h.Reason, Image: h.Image,
				Updated: h.Updated, Expires: h.Expires, PutAsideUntil: h.PutAsideUntil,
			})
		}
	}
	if c.app != nil {
		st := c.app.Stats()
		out.MintFailures = st.MintFailures
		for _, t := range st.Tokens {
			out.Tokens = append(out.Tokens, server.InstallationToken{
				InstallationID: t.InstallationID, Permissions: t.Permissions,
				Repositories: t.Repositories, ExpiresAt: t.ExpiresAt,
			})
		}
	}
	return out
}

// publishDeliveries announces every delivery that next records, duplicates
// included, on the status page's event stream.
func publishDeliveries(next webhook.Recorder, hub *server.Hub) webhook.Recorder {
	return deliveryPublisher{next: next, hub: hub}
}

type deliveryPublisher struct {
	next webhook.Recorder
	hub  *server.Hub
}

func (p deliveryPublisher) RecordDelivery(ctx context.Context, d deployer.Delivery, reqs []deployer.Request) (deployer.Receipt, error) {
	rec, err := p.next.RecordDelivery(ctx, d, reqs)
	if err == nil {
		d.DeploymentIDs = rec.Deployments
		switch {
		case rec.Duplicate: // the store's reason, naming the original, is in the listing
			d.Result, d.Reason = deployer.ResultDuplicate, ""
		case rec.Ignored != "": // the queue held every request back
			d.Result, d.Reason = deployer.ResultIgnored, rec.Ignored
		}
		p.hub.PublishDelivery(d)
	}
	return rec, err
}

// notifyAll returns a deployer Notify hook that calls each of fns in turn.
func notifyAll(fns ...func(deployer.Deployment)) func(deployer.Deployment) {
	return func(d deployer.Deployment) {
		for _, fn := range fns {
			fn(d)
		}
	}
}
