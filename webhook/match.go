// Package webhook receives GitHub webhook deliveries and turns them into
// deploy requests.
//
// Two parts: a Matcher, a pure function of the configuration that maps one
// event body to the deployer.Requests it asks for (or to the reason it asks
// for none), and a Handler, the http.Handler that caps the body, verifies the
// X-Hub-Signature-256 signature, runs the Matcher and records the delivery
// durably before it answers.
package webhook

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"

	"github.com/google/go-github/v62/github"

	"github.com/deployd/deployd/configs"
	"github.com/deployd/deployd/deployer"
)

// Event names, as GitHub sends them in X-GitHub-Event.
const (
	EventPing            = "ping"
	EventPackage         = "package"          // repository and organization hooks
	EventRegistryPackage = "registry_package" // GitHub Apps
	EventWorkflowRun     = "workflow_run"
)

// ErrMalformedPayload is wrapped by the errors Match returns for a body that
// is not the JSON object its event promises.
var ErrMalformedPayload = errors.New("malformed payload")

// Decision is what one delivery asks for.
type Decision struct {
	// Action is the payload's "action", "" when it has none (ping).
	Action string
	// Requests are the deploy requests, one per matched service, sorted by
	// service name. Their Trigger names the event but not the delivery id,
	// which the caller knows and Match does not.
	Requests []deployer.Request
	// Reason says why nothing is deployed; set when Requests is empty.
	Reason string
	// Ping is set for a ping event, and Zen holds GitHub's zen line.
	Ping bool
	Zen  string
}

// Matcher maps GitHub events to deploy requests for the services of one
// configuration. Build it with NewMatcher; it is immutable and safe for
// concurrent use.
type Matcher struct {
	services []service // sorted by name
}

// service is a configured service, prepared for matching.
type service struct {
	name string
	// repository is the lower-cased "owner/repo" allowed to trigger it.
	repository string
	// imagePath is the lower-cased repository path of its image, e.g. "acme/v7/backend".
	imagePath string
	// githubPackages is set when the image's registry is one GitHub package events name.
	githubPackages bool
	packageEnabled bool
	tagGlobs       []string
	run            *runFilter // nil: workflow_run does not deploy it
}

// runFilter is a service's on.workflow_run, prepared.
type runFilter struct {
	workflows []string // empty: any workflow
	branches  []string // globs; empty: any branch
	events    []string // the run events that deploy; never empty
	tag       *configs.TagTemplate
}

// NewMatcher prepares cfg's services for matching: it parses each image,
// checks each tag glob and parses and test-runs each workflow_run tag
// template. It returns every problem it finds, joined, and no Matcher then.
//
// A service's empty workflow_run tag template stands for the service's first
// tag, which must then be a plain tag rather than a glob, and its empty list
// of run events for configs.DefaultRunEvents.
func NewMatcher(cfg *configs.Config) (*Matcher, error) {
	if cfg == nil {
		return nil, errors.New("new matcher: no configuration")
	}
	names := slices.Sorted(maps.Keys(cfg.Services))
	m := &Matcher{services: make([]service, 0, len(names))}
	var errs []error
	for _, name := range names {
		s, err := prepare(cfg, name, cfg.Services[name])
		if err != nil {
			errs = append(errs, fmt.Errorf("service %q: %w", name, err))
			continue
		}
		m.services = append(m.services, s)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("new matcher: %w", errors.Join(errs...))
	}
	return m, nil
}

func prepare(cfg *configs.Config, name string, svc *deployer.Service) (service, error) {
	if svc == nil {
		return service{}, errors.New("no settings")
	}
	img, err := configs.ParseImage(svc.Image)
	if err != nil {
		return service{}, err
	}
	s := service{
		name:           name,
		repository:     strings.ToLower(svc.Repository),
		imagePath:      strings.ToLower(img.Path),
		githubPackages: cfg.IsGitHubPackages(img.Host),
		packageEnabled: svc.PackageEnabled(),
		tagGlobs:       svc.Tags,
	}
	for _, g := range svc.Tags {
		if _, err := path.Match(g, ""); err != nil {
			return service{}, fmt.Errorf("tag pattern %q: %w", g, err)
		}
	}
	if wr := svc.On.WorkflowRun; wr != nil {
		if s.run, err = prepareRun(wr, svc.Tags); err != nil {
			return service{}, err
		}
	}
	return s, nil
}

func prepareRun(wr *deployer.WorkflowRun, tags []string) (*runFilter, error) {
	for _, b := range wr.Branches {
		if _, err := path.Match(b, ""); err != nil {
			return nil, fmt.Errorf("workflow_run branch pattern %q: %w", b, err)
		}
	}
	events := wr.Events
	if len(events) == 0 {
		events = configs.DefaultRunEvents()
	}
	for _, e := range events {
		if err := configs.CheckRunEvent(e); err != nil {
			return nil, fmt.Errorf("workflow_run events: %w", err)
		}
	}
	text := wr.Tag
	if text == "" {
		if len(tags) == 0 || !deployer.ValidTag(tags[0]) {
			return nil, errors.New("workflow_run has no tag template and the first tag is not a plain tag to fall back on")
		}
		text = tags[0]
	}
	tmpl, err := configs.ParseTag(text)
	if err != nil {
		return nil, fmt.Errorf("parse workflow_run tag template: %w", err)
	}
	sample := configs.TagData{SHA: "0123456789abcdef0123456789abcdef01234567", ShortSHA: "0123456", Branch: "main", RunID: 1, RunNumber: 1}
	out, err := tmpl.Execute(sample)
	if err != nil {
		return nil, fmt.Errorf("run workflow_run tag template: %w", err)
	}
	if !deployer.ValidTag(out) {
		return nil, fmt.Errorf("workflow_run tag template yields %q for a sample run, not a valid tag", out)
	}
	return &runFilter{workflows: wr.Workflows, branches: wr.Branches, events: slices.Clip(events), tag: tmpl}, nil
}

// Match decides what a delivery of event with the JSON body asks for. It
// returns an error wrapping ErrMalformedPayload only when the body is not a
// JSON object of the shape the event promises; an event that is valid but
// deploys nothing (unknown event, other image, untagged manifest, run not
// successful...) yields a Decision with a Reason and no error.
func (m *Matcher) Match(event string, body []byte) (Decision, error) {
	if !isObject(body) {
		return Decision{}, malformed(event, errors.New("body is not a JSON object"))
	}
	switch event {
	case EventPing:
		return matchPing(body)
	case EventPackage, EventRegistryPackage:
		return m.matchPackage(event, body)
	case EventWorkflowRun:
		return m.matchWorkflowRun(body)
	}
	var p struct {
		Action json.RawMessage `json:"action"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		return Decision{}, malformed(event, err)
	}
	var action string
	_ = json.Unmarshal(p.Action, &action) // a non-string action is simply not recorded
	return Decision{Action: action, Reason: fmt.Sprintf("event %s is not handled", quote(event))}, nil
}

func malformed(event string, err error) error {
	return fmt.Errorf("%w: %s event: %w", ErrMalformedPayload, quote(event), err)
}

// isObject reports whether body starts, after white space, with '{'.
func isObject(body []byte) bool {
	for _, c := range body {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		case '{':
			return true
		}
		return false
	}
	return false
}

func matchPing(body []byte) (Decision, error) {
	var p github.PingEvent
	if err := json.Unmarshal(body, &p); err != nil {
		return Decision{}, malformed(EventPing, err)
	}
	return Decision{Ping: true, Zen: p.GetZen(), Reason: "ping"}, nil
}

// packagePayload is the part of a package or registry_package delivery that
// matching needs. go-github v62 cannot decode these events (see SPEC §3).
type packagePayload struct {
	Action          string       `json:"action"`
	Package         *packageInfo `json:"package"`
	RegistryPackage *packageInfo `json:"registry_package"`
	Repository      *struct {
		FullName string `json:"full_name"`
	} `json:"repository"`
	Installation *struct {
		ID int64 `json:"id"`
	} `json:"installation"`
}

type packageInfo struct {
	Name        string `json:"name"`
	Namespace   string `json:"namespace"`
	Ecosystem   string `json:"ecosystem"`
	PackageType string `json:"package_type"`
	Owner       *struct {
		Login string `json:"login"`
	} `json:"owner"`
	PackageVersion *struct {
		// Version is the version's name; for a container, its manifest digest.
		Version string `json:"version"`
		// TargetOID is the commit the version was published for, when
		// GitHub knows it.
		TargetOID         string `json:"target_oid"`
		ContainerMetadata *struct {
			Tag *struct {
				Name   string `json:"name"`
				Digest string `json:"digest"`
			} `json:"tag"`
			// Labels.Revision is the image's org.opencontainers.image.revision.
			Labels *struct {
				Revision string `json:"revision"`
			} `json:"labels"`
		} `json:"container_metadata"`
	} `json:"package_version"`
}

// commit returns the commit the version was built from: the image's
// revision label when it is a commit id, else the version's target_oid
// when it is a SHA-1 commit id (GitHub's commits are SHA-1), else "".
// GitHub's own examples fill target_oid with the hex of a digest of the
// version, which is no commit and is not taken for one.
func (p *packageInfo) commit() string {
	v := p.PackageVersion
	if v == nil {
		return ""
	}
	m := v.ContainerMetadata
	if m != nil && m.Labels != nil && isCommitSHA(m.Labels.Revision) {
		return m.Labels.Revision
	}
	if len(v.TargetOID) != 40 || !isCommitSHA(v.TargetOID) || strings.HasSuffix(v.Version, v.TargetOID) {
		return ""
	}
	if m != nil && m.Tag != nil && strings.HasSuffix(m.Tag.Digest, v.TargetOID) {
		return ""
	}
	return v.TargetOID
}

// isContainer reports whether the package is a container image. The package
// type and ecosystem disagree in some payloads, so either one saying so is enough.
func (p *packageInfo) isContainer() bool {
	for _, v := range []string{p.PackageType, p.Ecosystem} {
		if strings.EqualFold(v, "container") || strings.EqualFold(v, "docker") {
			return true
		}
	}
	return false
}

// tag returns the version's container tag and digest, empty when untagged.
func (p *packageInfo) tag() (name, digest string) {
	if v := p.PackageVersion; v != nil && v.ContainerMetadata != nil && v.ContainerMetadata.Tag != nil {
		return v.ContainerMetadata.Tag.Name, v.ContainerMetadata.Tag.Digest
	}
	return "", ""
}

// digest returns the digest to deploy the tagged version by: the tag's
// digest, else package_version.version when that is a digest, else ""
// (the tag is then resolved at the registry). note says why a tag digest
// the payload gave was not used; GitHub's own published example carries a
// digest of 40 hex digits, for one.
func (p *packageInfo) digest(tag, tagDigest string) (digest, note string) {
	if deployer.ValidDigest(tagDigest) {
		return tagDigest, ""
	}
	var version string
	if p.PackageVersion != nil {
		version = p.PackageVersion.Version
	}
	switch {
	case deployer.ValidDigest(version) && tagDigest != "":
		return version, fmt.Sprintf("the payload's tag digest %s is unusable (not sha256: and 64 hex digits); deploying its package_version.version %s instead", quote(tagDigest), version)
	case deployer.ValidDigest(version):
		return version, ""
	case tagDigest != "":
		return "", fmt.Sprintf("the payload's digest %s is unusable (not sha256: and 64 hex digits); the tag %s is resolved at the registry instead", quote(tagDigest), tag)
	}
	return "", ""
}

func (m *Matcher) matchPackage(event string, body []byte) (Decision, error) {
	var p packagePayload
	if err := json.Unmarshal(body, &p); err != nil {
		return Decision{}, malformed(event, err)
	}
	pkg := p.Package
	if event == EventRegistryPackage {
		pkg = p.RegistryPackage
	}
	if pkg == nil {
		return Decision{}, malformed(event, fmt.Errorf("no %s object", event))
	}
	d := Decision{Action: p.Action}
	if p.Action != "published" && p.Action != "updated" {
		d.Reason = fmt.Sprintf("action %s is neither published nor updated", quote(p.Action))
		return d, nil
	}
	if !pkg.isContainer() {
		d.Reason = fmt.Sprintf("package type %s is not a container", quote(pkg.PackageType))
		return d, nil
	}
	tag, tagDigest := pkg.tag()
	switch {
	case tag == "":
		d.Reason = "untagged package version (a platform manifest of a multi-arch push); only tagged versions deploy"
		return d, nil
	case !deployer.ValidTag(tag):
		d.Reason = fmt.Sprintf("tag %s is not a valid image tag", quote(tag))
		return d, nil
	}
	digest, note := pkg.digest(tag, tagDigest)
	namespace := pkg.Namespace
	if namespace == "" && pkg.Owner != nil {
		namespace = pkg.Owner.Login
	}
	if namespace == "" || pkg.Name == "" {
		d.Reason = "package names no owner or no name"
		return d, nil
	}
	imagePath := strings.ToLower(namespace) + "/" + pkg.Name
	var repo string
	if p.Repository != nil {
		repo = p.Repository.FullName
	}
	trigger := deployer.Trigger{Kind: deployer.TriggerWebhook, Event: event, Commit: pkg.commit()}
	if p.Installation != nil {
		trigger.InstallationID = p.Installation.ID
	}

	var reasons []string
	for i := range m.services {
		s := &m.services[i]
		if !s.githubPackages || s.imagePath != imagePath {
			continue
		}
		switch {
		case !s.packageEnabled:
			reasons = append(reasons, fmt.Sprintf("service %s does not deploy on package events", s.name))
		case repo == "":
			reasons = append(reasons, fmt.Sprintf("the event names no repository to check against service %s's repository", s.name))
		case s.repository == "" || !strings.EqualFold(repo, s.repository):
			reasons = append(reasons, fmt.Sprintf("repository %s is not service %s's repository", quote(repo), s.name))
		case !configs.MatchTag(s.tagGlobs, tag):
			reasons = append(reasons, fmt.Sprintf("tag %s matches none of service %s's tags", quote(tag), s.name))
		default:
			d.Requests = append(d.Requests, deployer.Request{Service: s.name, Tag: tag, Digest: digest, Trigger: trigger, Note: note})
		}
	}
	if len(d.Requests) == 0 {
		if len(reasons) == 0 {
			d.Reason = fmt.Sprintf("no service deploys image path %s from a GitHub Packages registry", quote(imagePath))
		} else {
			d.Reason = strings.Join(reasons, "; ")
		}
	}
	return d, nil
}

// runPath is the one workflow_run field go-github v62 does not decode.
type runPath struct {
	WorkflowRun *struct {
		Path string `json:"path"`
	} `json:"workflow_run"`
}

func (m *Matcher) matchWorkflowRun(body []byte) (Decision, error) {
	var ev github.WorkflowRunEvent
	if err := json.Unmarshal(body, &ev); err != nil {
		return Decision{}, malformed(EventWorkflowRun, err)
	}
	var rp runPath
	if err := json.Unmarshal(body, &rp); err != nil {
		return Decision{}, malformed(EventWorkflowRun, err)
	}
	run := ev.WorkflowRun
	if run == nil || rp.WorkflowRun == nil {
		return Decision{}, malformed(EventWorkflowRun, errors.New("no workflow_run object"))
	}
	d := Decision{Action: ev.GetAction()}
	if d.Action != "completed" {
		d.Reason = fmt.Sprintf("workflow_run action %s is not completed", quote(d.Action))
		return d, nil
	}
	if c := run.GetConclusion(); c != "success" {
		d.Reason = fmt.Sprintf("workflow run concluded %s, not success", quote(c))
		return d, nil
	}
	repo := ev.GetRepo().GetFullName()
	if repo == "" {
		repo = run.GetRepository().GetFullName()
	}
	// The repository whose code the run built: a fork's for a pull request
	// from one, even when the run itself belongs to repo.
	headRepo := run.GetHeadRepository().GetFullName()
	runEvent := run.GetEvent()
	sha := run.GetHeadSHA()
	if !isCommitSHA(sha) {
		d.Reason = fmt.Sprintf("workflow run head_sha %s is not a commit id", quote(sha))
		return d, nil
	}
	data := configs.TagData{
		SHA:       sha,
		ShortSHA:  sha[:7],
		Branch:    run.GetHeadBranch(),
		RunID:     run.GetID(),
		RunNumber: run.GetRunNumber(),
	}
	names := []string{run.GetName(), ev.GetWorkflow().GetName()}
	paths := []string{rp.WorkflowRun.Path, ev.GetWorkflow().GetPath()}
	trigger := deployer.Trigger{
		Kind:           deployer.TriggerWebhook,
		Event:          EventWorkflowRun,
		InstallationID: ev.GetInstallation().GetID(),
		RunID:          data.RunID,
		RunNumber:      data.RunNumber,
		Commit:         sha,
	}

	var reasons []string
	for i := range m.services {
		s := &m.services[i]
		if s.run == nil {
			continue
		}
		switch {
		case repo == "":
			reasons = append(reasons, fmt.Sprintf("the event names no repository to check against service %s's repository", s.name))
			continue
		case s.repository == "" || !strings.EqualFold(repo, s.repository):
			reasons = append(reasons, fmt.Sprintf("repository %s is not service %s's repository", quote(repo), s.name))
			continue
		case headRepo == "":
			reasons = append(reasons, fmt.Sprintf("the run names no head repository to prove it built service %s's repository", s.name))
			continue
		case !strings.EqualFold(headRepo, s.repository):
			reasons = append(reasons, fmt.Sprintf("the run built head repository %s, not service %s's repository (runs of forks never deploy)", quote(headRepo), s.name))
			continue
		case configs.RefusedRunEvent(runEvent) != "":
			reasons = append(reasons, fmt.Sprintf("the run was started by %s, which never deploys service %s: %s", quote(runEvent), s.name, configs.RefusedRunEvent(runEvent)))
			continue
		case !slices.Contains(s.run.events, runEvent):
			reasons = append(reasons, fmt.Sprintf("the run was started by %s, not one of service %s's workflow_run events (%s)", quote(runEvent), s.name, strings.Join(s.run.events, ", ")))
			continue
		case !s.run.matchWorkflow(names, paths):
			reasons = append(reasons, fmt.Sprintf("workflow %s is not one of service %s's workflows", quote(firstNonEmpty(names[0], names[1], paths[0], paths[1])), s.name))
			continue
		case !s.run.matchBranch(data.Branch):
			reasons = append(reasons, fmt.Sprintf("branch %s matches none of service %s's branches", quote(data.Branch), s.name))
			continue
		}
		tag, err := s.run.tag.Execute(data)
		switch {
		case err != nil:
			reasons = append(reasons, fmt.Sprintf("service %s's tag template failed for this run", s.name))
		case !deployer.ValidTag(tag):
			reasons = append(reasons, fmt.Sprintf("service %s's tag template yields %s, not a valid tag", s.name, quote(tag)))
		default:
			d.Requests = append(d.Requests, deployer.Request{Service: s.name, Tag: tag, Trigger: trigger})
		}
	}
	if len(d.Requests) == 0 {
		if len(reasons) == 0 {
			d.Reason = "no service deploys on workflow_run"
		} else {
			d.Reason = strings.Join(reasons, "; ")
		}
	}
	return d, nil
}

// matchWorkflow reports whether a configured workflow equals one of the
// run's workflow names, one of its workflow file paths, or such a path's
// file name. An empty list matches any workflow.
func (f *runFilter) matchWorkflow(names, paths []string) bool {
	if len(f.workflows) == 0 {
		return true
	}
	for _, w := range f.workflows {
		if w == "" {
			continue
		}
		for _, n := range names {
			if n == w {
				return true
			}
		}
		for _, p := range paths {
			if i := strings.IndexByte(p, '@'); i >= 0 {
				p = p[:i] // "path@ref", as some runs name reusable workflows
			}
			if p != "" && (p == w || path.Base(p) == w) {
				return true
			}
		}
	}
	return false
}

// matchBranch reports whether branch matches one of the branch globs. An
// empty list matches any branch.
func (f *runFilter) matchBranch(branch string) bool {
	if len(f.branches) == 0 {
		return true
	}
	for _, g := range f.branches {
		if ok, _ := path.Match(g, branch); ok {
			return true
		}
	}
	return false
}

// isCommitSHA reports whether s is a full SHA-1 or SHA-256 commit id in lower-case hex.
func isCommitSHA(s string) bool {
	if len(s) != 40 && len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

// maxQuoted bounds the length of payload values quoted in reasons.
const maxQuoted = 128

// quote returns s quoted for a reason, cut to maxQuoted bytes.
func quote(s string) string {
	if len(s) > maxQuoted {
		return fmt.Sprintf("%q…", s[:maxQuoted])
	}
	return fmt.Sprintf("%q", s)
}
