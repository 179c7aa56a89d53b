package main

import (
	"context"

	"github.com/deployd/deployd/auth/github"
	"github.com/deployd/deployd/auth/registry"
	"github.com/deployd/deployd/deployer"
	"github.com/deployd/deployd/server"
	"github.com/deployd/deployd/webhook"
)

// credentialHealth is what the status page shows of the credential chain
// and of the GitHub App; either may be nil.
func credentialHealth(app *github.App, chain *registry.Chain) server.Credentials {
	var c server.Credentials
	if chain != nil {
		c.Sources = chain.Health
	}
	if app != nil {
		c.Tokens = app.Stats
	}
	return c
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
		case len(rec.Releases) > 0: // held for or joined releases, which the reason names
			d.Result, d.Reason = deployer.ResultQueued, rec.Reason
		}
		p.hub.PublishDelivery(d)
	}
	return rec, err
}
