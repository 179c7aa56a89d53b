package podman

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/deployd/deployd/deployer"
)

// verify polls the health URL until it answers 2xx or the timeout passes,
// and fails early when the container stops.
func (j *job) verify(ctx context.Context) error {
	start := time.Now()
	h := j.spec.Health
	timeout, interval := h.Timeout, h.Interval
	if timeout <= 0 {
		timeout = time.Minute
	}
	if interval <= 0 {
		interval = 2 * time.Second
	}
	deadline := time.Now().Add(timeout)
	var last string
	for {
		if j.spec.Strategy == deployer.StrategyContainer {
			if state, err := j.containerState(ctx); err == nil && state != "running" {
				err := fail(deployer.ClassHealth, "the new container stopped; see podman logs "+j.spec.Container.Name,
					fmt.Errorf("container %s is %s%s", j.spec.Container.Name, state, j.logsTail(ctx)))
				j.step(ctx, "verify", start, err, "")
				return err
			}
		}
		if h.URL == "" {
			j.step(ctx, "verify", start, nil, "no health URL configured; the service is running")
			return nil
		}
		ok, msg := j.probe(ctx, h.URL, interval)
		if ok {
			j.step(ctx, "verify", start, nil, h.URL+" answered "+msg)
			return nil
		}
		last = msg
		if time.Now().Add(interval).After(deadline) {
			err := fail(deployer.ClassHealth, "the new version did not become healthy within "+timeout.String()+"; check its logs and health endpoint",
				fmt.Errorf("health check %s failed: %s", h.URL, last))
			j.step(ctx, "verify", start, err, "")
			return err
		}
		select {
		case <-ctx.Done():
			j.step(ctx, "verify", start, ctx.Err(), "")
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

func (j *job) probe(ctx context.Context, url string, timeout time.Duration) (bool, string) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, err.Error()
	}
	resp, err := j.p.http.Do(req)
	if err != nil {
		return false, err.Error()
	}
	resp.Body.Close()
	return resp.StatusCode >= 200 && resp.StatusCode < 300, resp.Status
}

func (j *job) containerState(ctx context.Context) (string, error) {
	out, err := j.podmanRun(ctx, j.p.stepTimeout, "container", "inspect", "--format", "{{.State.Status}}", j.spec.Container.Name)
	return strings.TrimSpace(out), err
}

func (j *job) logsTail(ctx context.Context) string {
	out, err := j.podmanRun(ctx, j.p.stepTimeout, "logs", "--tail", "5", j.spec.Container.Name)
	if err != nil || strings.TrimSpace(out) == "" {
		return ""
	}
	return "; last output: " + strings.TrimSpace(out)
}

// recover handles a failed verify: roll back when the service allows it.
func (j *job) recover(ctx context.Context, previous string, cause error) deployer.Deployment {
	if !j.spec.Rollback || previous == "" {
		// The unhealthy version stays in place: say so on the service.
		j.markDegraded(ctx)
		return j.end(ctx, deployer.StateFailed, cause)
	}
	start := time.Now()
	var err error
	switch j.spec.Strategy {
	case deployer.StrategyContainer:
		err = j.restorePrevious(ctx)
	case deployer.StrategySystemd:
		err = j.switchSystemd(ctx, previous, j.status.Tag) // the tag that ran before
	case deployer.StrategyCommand:
		err = j.switchCommand(ctx, previous, j.status.Tag)
	}
	if err == nil {
		err = j.verify(ctx)
	}
	if err != nil {
		j.step(ctx, "rollback", start, err, "")
		j.markDegraded(ctx)
		f := asFailure(cause)
		f.Hint = "rollback failed too (" + err.Error() + "): the service may be down; " + f.Hint
		return j.end(ctx, deployer.StateFailed, f)
	}
	j.step(ctx, "rollback", start, nil, "restored "+deployer.ShortDigest(previous))
	return j.end(ctx, deployer.StateRolledBack, cause)
}

// markDegraded records that the service is not known to be healthy.
func (j *job) markDegraded(ctx context.Context) {
	j.status.Name = j.spec.Name
	j.status.Degraded = true
	j.status.LastDeploymentID = j.d.ID
	j.status.UpdatedAt = time.Now().UTC()
	if err := j.p.store.SetServiceStatus(context.WithoutCancel(ctx), j.status); err != nil {
		j.log.Error().Err(err).Msg("record degraded service")
	}
}
