package podman

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/deployd/deployd/deployer"
)

// prune removes the service's images beyond the newest keep_images, never
// the running or the previous one. Failures are logged, not fatal: the
// deployment itself succeeded.
func (j *job) prune(ctx context.Context) {
	if j.spec.KeepImages <= 0 || j.spec.Strategy == deployer.StrategyCommand {
		return
	}
	start := time.Now()
	out, err := j.podmanRun(ctx, j.p.stepTimeout, "images", "--format", "json", "--filter", "reference="+j.spec.Image)
	if err != nil {
		j.log.Warn().Err(err).Msg("prune: list images")
		return
	}
	var images []struct {
		ID      string `json:"Id"`
		Digest  string `json:"Digest"`
		Created int64  `json:"Created"`
	}
	if err := json.Unmarshal([]byte(out), &images); err != nil {
		j.log.Warn().Err(err).Msg("prune: decode podman images")
		return
	}
	sort.Slice(images, func(a, b int) bool { return images[a].Created > images[b].Created })
	var removed []string
	for i, img := range images {
		if i < j.spec.KeepImages || img.Digest == j.status.Digest || img.Digest == j.status.PreviousDigest {
			continue
		}
		if _, err := j.podmanRun(ctx, j.p.stepTimeout, "rmi", img.ID); err != nil {
			j.log.Warn().Err(err).Str("image", img.ID).Msg("prune: remove image")
			continue
		}
		removed = append(removed, deployer.ShortDigest(img.Digest))
	}
	if len(removed) > 0 {
		j.step(ctx, "prune", start, nil, fmt.Sprintf("removed %d old image(s): %s; kept the newest %d",
			len(removed), strings.Join(removed, ", "), j.spec.KeepImages))
	}
}
