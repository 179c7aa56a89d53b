package oidc

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Events whose runs can carry code from outside the repository's branches
// (a pull request's head, another workflow's artifacts): a token from one
// matches only a rule that names the event.
const (
	EventPullRequestTarget = "pull_request_target"
	EventWorkflowRun       = "workflow_run"
)

// Rule grants scopes to the tokens of the runs it describes. Every field
// that is set must equal the token's claim; at least one of RepositoryID
// and RepositoryOwnerID must be set, because names can be reused after a
// rename or deletion while ids cannot.
type Rule struct {
	// RepositoryID and RepositoryOwnerID are GitHub's numeric ids, in
	// decimal (the claims repository_id and repository_owner_id).
	RepositoryID      string
	RepositoryOwnerID string
	// Ref is the claim ref, e.g. refs/heads/main.
	Ref string
	// Environment is the claim environment: the job's deployment
	// environment.
	Environment string
	// EventName is the claim event_name, e.g. push or workflow_dispatch.
	// pull_request_target and workflow_run match only when named here.
	EventName string
	// WorkflowRef and JobWorkflowRef are the claims workflow_ref and
	// job_workflow_ref: OWNER/REPO/.github/workflows/FILE@REF.
	WorkflowRef    string
	JobWorkflowRef string
	// Scopes are what a matching token is granted (deploy:NAME,
	// deploy:*, status:read).
	Scopes []string
}

// ErrBadRule is returned (wrapped, with the reason) by New for a rule
// that could never be safe or could never match.
var ErrBadRule = errors.New("bad OIDC rule")

// CanonicalID returns the decimal form of a GitHub numeric id given as a
// string ("00123" and "123" are both "123") and whether s is one: digits
// only, surrounding spaces ignored, not zero.
func CanonicalID(s string) (string, bool) {
	s = strings.TrimSpace(s)
	if s == "" || strings.Trim(s, "0123456789") != "" {
		return "", false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n == 0 {
		return "", false
	}
	return strconv.FormatUint(n, 10), true
}

// normalize checks r and returns it with its ids in canonical form.
func (r Rule) normalize() (Rule, error) {
	if r.RepositoryID == "" && r.RepositoryOwnerID == "" {
		return Rule{}, fmt.Errorf("%w: it names neither repository_id nor repository_owner_id", ErrBadRule)
	}
	for _, id := range []*string{&r.RepositoryID, &r.RepositoryOwnerID} {
		if *id == "" {
			continue
		}
		c, ok := CanonicalID(*id)
		if !ok {
			return Rule{}, fmt.Errorf("%w: %q is not a numeric GitHub id", ErrBadRule, *id)
		}
		*id = c
	}
	if len(r.Scopes) == 0 {
		return Rule{}, fmt.Errorf("%w: it grants no scope", ErrBadRule)
	}
	r.Scopes = slices.Clone(r.Scopes)
	return r, nil
}

// matches reports whether the token's claims c satisfy every field r sets.
func (r Rule) matches(c Claims) bool {
	if (c.EventName == EventPullRequestTarget || c.EventName == EventWorkflowRun) && r.EventName != c.EventName {
		return false
	}
	for _, f := range [...]struct{ want, got string }{
		{r.RepositoryID, c.RepositoryID},
		{r.RepositoryOwnerID, c.RepositoryOwnerID},
		{r.Ref, c.Ref},
		{r.Environment, c.Environment},
		{r.EventName, c.EventName},
		{r.WorkflowRef, c.WorkflowRef},
		{r.JobWorkflowRef, c.JobWorkflowRef},
	} {
		if f.want != "" && f.want != f.got {
			return false
		}
	}
	return true
}

// Grant returns the scopes that rules grant to a token with claims c:
// those of every rule that matches, sorted, each once; nil when none
// does. Ids in c must be canonical (Verify makes them so); a claim that
// is empty matches only a rule that leaves the field unset.
func Grant(rules []Rule, c Claims) []string {
	var scopes []string
	for _, r := range rules {
		if r.matches(c) {
			scopes = append(scopes, r.Scopes...)
		}
	}
	slices.Sort(scopes)
	return slices.Compact(scopes)
}
