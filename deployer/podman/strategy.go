package podman

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/deployd/deployd/deployer"
)

// switchTo puts digest in place by the service's strategy and returns what
// ran before, for a rollback.
func (j *job) switchTo(ctx context.Context, digest string) (previous string, err error) {
	start := time.Now()
	previous = j.status.Digest
	switch j.spec.Strategy {
	case deployer.StrategyContainer:
		err = j.switchContainer(ctx, digest)
	case deployer.StrategySystemd:
		err = j.switchSystemd(ctx, digest, j.d.Tag)
	case deployer.StrategyCommand:
		err = j.switchCommand(ctx, digest, j.d.Tag)
	default:
		err = fail(deployer.ClassConfig, "use strategy container, systemd or command", fmt.Errorf("unknown strategy %q", j.spec.Strategy))
	}
	j.step(ctx, "switch", start, err, j.spec.Strategy+": now "+deployer.ShortDigest(digest))
	return previous, err
}

func (j *job) previousName() string { return j.spec.Container.Name + "-previous" }

func (j *job) switchContainer(ctx context.Context, digest string) error {
	name := j.spec.Container.Name
	exists, err := j.containerExists(ctx, name)
	if err != nil {
		return fail(deployer.ClassPodman, "check that podman works for deployd's user", err)
	}
	if exists {
		if _, err := j.podmanRun(ctx, j.p.stepTimeout, "rm", "--force", "--ignore", j.previousName()); err != nil {
			return fail(deployer.ClassPodman, "remove "+j.previousName()+" by hand", err)
		}
		if _, err := j.podmanRun(ctx, j.p.stepTimeout, "stop", "--time", "10", name); err != nil {
			return fail(deployer.ClassPodman, "stop "+name+" by hand and redeploy", err)
		}
		if _, err := j.podmanRun(ctx, j.p.stepTimeout, "rename", name, j.previousName()); err != nil {
			return fail(deployer.ClassPodman, "rename "+name+" by hand and redeploy", err)
		}
	}
	if err := j.runContainer(ctx, digest); err != nil {
		if !exists {
			return fail(deployer.ClassPodman, "check the service's container args", err)
		}
		if rerr := j.restorePrevious(ctx); rerr != nil {
			j.markDegraded(ctx)
			return fail(deployer.ClassPodman, "check the service's container args; restoring the previous container failed too ("+
				rerr.Error()+"): the service may be down", err)
		}
		return fail(deployer.ClassPodman, "check the service's container args; the previous container was restored", err)
	}
	return nil
}

func (j *job) runContainer(ctx context.Context, digest string) error {
	args := []string{"run", "--detach", "--name", j.spec.Container.Name,
		"--label", "io.deployd.service=" + j.spec.Name, "--label", "io.deployd.digest=" + digest}
	args = append(args, j.p.podman.RunArgs...)
	args = append(args, j.spec.Container.Args...)
	args = append(args, j.spec.Image+"@"+digest)
	args = append(args, j.spec.Container.Command...)
	_, err := j.podmanRun(ctx, j.p.stepTimeout, args...)
	return err
}

// restorePrevious puts NAME-previous back in place of a failed NAME.
func (j *job) restorePrevious(ctx context.Context) error {
	name := j.spec.Container.Name
	if _, err := j.podmanRun(ctx, j.p.stepTimeout, "rm", "--force", "--ignore", name); err != nil {
		return err
	}
	if _, err := j.podmanRun(ctx, j.p.stepTimeout, "rename", j.previousName(), name); err != nil {
		return err
	}
	_, err := j.podmanRun(ctx, j.p.stepTimeout, "start", name)
	return err
}

func (j *job) containerExists(ctx context.Context, name string) (bool, error) {
	_, err := j.podmanRun(ctx, j.p.stepTimeout, "container", "exists", name)
	var ce *CommandError
	if errors.As(err, &ce) && ce.ExitCode == 1 {
		return false, nil
	}
	return err == nil, err
}

func (j *job) switchSystemd(ctx context.Context, digest, tag string) error {
	// Quadlet units name the image by tag: point the unit's tag (the
	// service's default tag) and the deployed one at the digest.
	tags := []string{j.spec.DefaultTag}
	if tag != "" && tag != j.spec.DefaultTag {
		tags = append(tags, tag)
	}
	for _, t := range tags {
		if t == "" {
			continue
		}
		if _, err := j.podmanRun(ctx, j.p.stepTimeout, "tag", j.spec.Image+"@"+digest, j.spec.Image+":"+t); err != nil {
			return fail(deployer.ClassPodman, "see podman's message", err)
		}
	}
	if j.spec.DefaultTag == "" && tag == "" {
		return fail(deployer.ClassConfig, "give the service a plain first tag (the one its unit runs) so deploys by digest can move it",
			fmt.Errorf("deploy of %s by digest: no tag to point at it", j.spec.Name))
	}
	argv := []string{"systemctl"}
	if j.spec.Systemd.User {
		argv = append(argv, "--user")
	}
	argv = append(argv, "restart", j.spec.Systemd.Unit)
	if _, err := j.p.runner.Run(ctx, j.p.stepTimeout, nil, nil, argv...); err != nil {
		return fail(deployer.ClassConfig, "check the unit with systemctl status "+j.spec.Systemd.Unit, err)
	}
	return nil
}

func (j *job) switchCommand(ctx context.Context, digest, tag string) error {
	env := []string{
		"DEPLOY_SERVICE=" + j.spec.Name,
		"DEPLOY_IMAGE=" + j.spec.Image,
		"DEPLOY_TAG=" + tag,
		"DEPLOY_DIGEST=" + digest,
		fmt.Sprintf("DEPLOY_ID=%d", j.d.ID),
	}
	if _, err := j.p.runner.Run(ctx, j.p.stepTimeout, nil, env, j.spec.Command...); err != nil {
		return fail(deployer.ClassConfig, "the service's deploy command failed; run it by hand with the DEPLOY_* variables to see why", err)
	}
	return nil
}

// cleanupPrevious removes the replaced container once the new one is healthy.
func (j *job) cleanupPrevious(ctx context.Context) {
	if j.spec.Strategy != deployer.StrategyContainer {
		return
	}
	if _, err := j.podmanRun(ctx, j.p.stepTimeout, "rm", "--force", "--ignore", j.previousName()); err != nil {
		j.log.Warn().Err(err).Msg("remove previous container")
	}
}
