package configs

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/deployd/deployd/deployer"
)

// DefaultReleaseWait is release_sets.NAME.wait's default: how long package
// events of a set's services wait for the workflow run of their commit.
const DefaultReleaseWait = 30 * time.Minute

// releaseSetDefaults fills in each release set's name, gate and wait.
func (c *Config) releaseSetDefaults(isSet func(path string) bool) {
	for name, rs := range c.ReleaseSets {
		if rs == nil {
			rs = &deployer.ReleaseSet{}
			c.ReleaseSets[name] = rs
		}
		rs.Name = name
		setString(&rs.Gate, deployer.GateWorkflowRun)
		if rs.Wait == 0 && !isSet("release_sets."+name+".wait") {
			rs.Wait = DefaultReleaseWait
		}
	}
}

// ReleaseSetList returns the release sets in name order.
func (c *Config) ReleaseSetList() []deployer.ReleaseSet {
	out := make([]deployer.ReleaseSet, 0, len(c.ReleaseSets))
	for _, name := range slices.Sorted(maps.Keys(c.ReleaseSets)) {
		if rs := c.ReleaseSets[name]; rs != nil {
			out = append(out, *rs)
		}
	}
	return out
}

// releaseSets checks every release set: a known gate, a positive wait,
// at least two services, each one configured, deploying on workflow_run
// (its tag rule gives the member's tag) and in no other set.
func (v *validator) releaseSets() {
	inSet := map[string]string{}
	for _, name := range slices.Sorted(maps.Keys(v.c.ReleaseSets)) {
		rs := v.c.ReleaseSets[name]
		p := "release_sets." + name
		if rs == nil {
			v.add(p, "empty release set: list its services")
			continue
		}
		if !serviceNameRE.MatchString(name) {
			v.addKey(p, "release set name %q must be 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit", name)
		}
		if rs.Gate != deployer.GateWorkflowRun {
			v.add(p+".gate", "unknown gate %q (the only gate is %s: the commit's successful workflow run)", rs.Gate, deployer.GateWorkflowRun)
		}
		if rs.Wait <= 0 {
			v.add(p+".wait", "must be positive: how long package events wait for their commit's workflow run")
		}
		if len(rs.Services) < 2 && !v.unread(p+".services") {
			v.add(p+".services", "list at least two services: a set's services go live together")
		}
		seen := map[string]bool{}
		for i, svc := range rs.Services {
			sp := fmt.Sprintf("%s.services[%d]", p, i)
			s, ok := v.c.Services[svc]
			switch {
			case seen[svc]:
				v.add(sp, "service %q is listed twice", svc)
				continue
			case !ok:
				v.add(sp, "no service %q under services", svc)
				continue
			case inSet[svc] != "":
				v.add(sp, "service %q is already in release set %q: a service is in at most one set", svc, inSet[svc])
				continue
			case s != nil && s.On.WorkflowRun == nil:
				v.add(sp, "service %q has no on.workflow_run: a release set's gate is the workflow run, and the service's tag comes from its on.workflow_run tag", svc)
			}
			seen[svc] = true
			inSet[svc] = name
		}
	}
}
