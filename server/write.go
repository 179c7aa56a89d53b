package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/rs/zerolog"

	"github.com/deployd/deployd/deployer"
	"github.com/deployd/deployd/server/httperr"
)

// Enqueuer queues manual deploys and rollbacks. *deployer.Queue satisfies
// it; it returns deployer.ErrDraining while deployd shuts down.
type Enqueuer interface {
	Enqueue(ctx context.Context, r deployer.Request) (deployer.Deployment, error)
}

// Limits of the write API.
const (
	// MaxWriteBody is the largest deploy or rollback body accepted.
	MaxWriteBody = 64 << 10
	// MaxWait is the longest ?wait= accepted.
	MaxWait = 10 * time.Minute
	// waitPoll is how often a waiting request looks at its deployment.
	waitPoll = 100 * time.Millisecond
)

// deployBody is the optional body of POST .../deploy.
type deployBody struct {
	Tag    string `json:"tag"`
	Digest string `json:"digest"`
	Force  bool   `json:"force"`
}

// writeOptions are the query parameters of both write endpoints.
type writeOptions struct {
	wait   time.Duration // 0: answer 202 at once
	dryRun bool
}

// deploymentResponse is the body of a successful write: the deployment as
// GET /api/v1/deployments/{id} shows it.
type deploymentResponse struct {
	deployer.Deployment
}

// deploy handles POST /api/v1/services/{name}/deploy.
//
// It needs a bearer token granting deploy:{name} (deploy:* does): 401 with
// a WWW-Authenticate challenge without a valid token, 403 without the
// scope, 503 when no token key is configured. The body is optional:
// {"tag": "v1.2.3"} or {"digest": "sha256:..."} (not both), and
// {"force": true} to deploy even when the digest already runs; without tag
// and digest the service's default tag deploys. ?dry_run=true resolves and
// records a plan but changes nothing. Answers:
//
//   - 202 with Location: /api/v1/deployments/{id} and the queued deployment;
//   - with ?wait=DURATION (at most MaxWait), once the deployment ends:
//     200 for succeeded or unchanged; 502 for failed or rolled_back;
//     503 for interrupted; 409 for superseded (a newer request for the
//     service replaced it). Errors carry {"error","hint","deployment"}.
//     If the wait runs out first: 504 with Location, the deployment and a
//     hint, so that curl --fail does not take an unfinished deploy for
//     success;
//   - 400 for a malformed tag, digest, body or query, 404 for an unknown
//     service, 413 for a body over MaxWriteBody, 503 while draining.
//
// Nothing is queued when the answer is 4xx.
func (s *Server) deploy(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "name")
	caller, svc, opts, err := s.writePrologue(r, name)
	if err != nil {
		httperr.Write(w, r, err)
		return
	}
	var body deployBody
	if err := decodeBody(w, r, &body); err != nil {
		httperr.Write(w, r, err)
		return
	}
	req := deployer.Request{
		Service: name,
		Tag:     body.Tag,
		Digest:  body.Digest,
		Force:   body.Force,
		DryRun:  opts.dryRun,
		Trigger: deployer.Trigger{Kind: deployer.TriggerManual, Subject: caller.Subject},
	}
	switch {
	case req.Tag != "" && req.Digest != "":
		err = badRequest("give either tag or digest, not both", "a digest names one exact image; a tag is resolved to a digest at the registry")
	case req.Tag != "" && !deployer.ValidTag(req.Tag):
		err = badRequest("malformed tag: "+deployer.ErrBadTag.Error(), "")
	case req.Digest != "" && !deployer.ValidDigest(req.Digest):
		err = badRequest("malformed digest: "+deployer.ErrBadDigest.Error(), "")
	case req.Tag == "" && req.Digest == "":
		req.Tag = svc.DefaultTag
		if req.Tag == "" {
			err = badRequest("service "+strconv.Quote(name)+" has no default tag",
				`its first tags entry is a pattern; send {"tag": "..."} or {"digest": "sha256:..."}`)
		}
	}
	if err != nil {
		httperr.Write(w, r, err)
		return
	}
	s.submit(w, r, req, opts, caller)
}

// rollback handles POST /api/v1/services/{name}/rollback: it redeploys the
// digest that ran before the current one (forced, trigger rollback). Auth,
// ?wait, ?dry_run and the answers are those of deploy; the body, if any,
// must be an empty JSON object. 409 when the service has no previous digest.
func (s *Server) rollback(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "name")
	caller, _, opts, err := s.writePrologue(r, name)
	if err != nil {
		httperr.Write(w, r, err)
		return
	}
	if err := decodeBody(w, r, &struct{}{}); err != nil {
		httperr.Write(w, r, err)
		return
	}
	st, err := s.store.ServiceStatus(r.Context(), name)
	if err != nil {
		httperr.Write(w, r, fmt.Errorf("rollback %s: %w", name, err))
		return
	}
	if st.PreviousDigest == "" {
		httperr.Write(w, r, &httperr.Error{Status: http.StatusConflict,
			Message: "service " + strconv.Quote(name) + " has no previous version to roll back to",
			Hint:    `deployd rolls back to the digest that ran before the current one, and none did; deploy a version with POST /api/v1/services/` + name + `/deploy {"digest": "sha256:..."}`})
		return
	}
	s.submit(w, r, deployer.Request{
		Service: name,
		Digest:  st.PreviousDigest,
		Force:   true,
		DryRun:  opts.dryRun,
		Trigger: deployer.Trigger{Kind: deployer.TriggerRollback, Subject: caller.Subject},
	}, opts, caller)
}

// writePrologue runs the checks both write endpoints share, in order:
// token, scope, service, query.
func (s *Server) writePrologue(r *http.Request, name string) (Caller, deployer.Service, writeOptions, error) {
	caller, err := s.authorize(r, deployScope(name))
	if err != nil {
		return Caller{}, deployer.Service{}, writeOptions{}, err
	}
	svc, ok := s.byName[name]
	if !ok {
		return Caller{}, deployer.Service{}, writeOptions{}, unknownService(name)
	}
	opts, err := writeOptionsFrom(r)
	return caller, svc, opts, err
}

// writeOptionsFrom reads ?wait= and ?dry_run=.
func writeOptionsFrom(r *http.Request) (writeOptions, error) {
	var o writeOptions
	q := r.URL.Query()
	if q.Has("dry_run") {
		v := q.Get("dry_run")
		if v == "" {
			o.dryRun = true
		} else {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return o, badRequest("dry_run must be true or false", "")
			}
			o.dryRun = b
		}
	}
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 || d > MaxWait {
			return o, badRequest("wait must be a duration from 1s to "+MaxWait.String(),
				"e.g. ?wait=60s or ?wait=5m; leave it out to get 202 at once and follow Location")
		}
		o.wait = d
	}
	return o, nil
}

// decodeBody reads an optional JSON object of at most MaxWriteBody bytes
// into v, refusing unknown fields and trailing data. An empty body leaves v
// as it is.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxWriteBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return &httperr.Error{Status: http.StatusRequestEntityTooLarge,
				Message: fmt.Sprintf("body larger than %d bytes", MaxWriteBody),
				Hint:    `the body is a small JSON object such as {"tag": "v1.2.3"}`}
		}
		return badRequest("could not read the body", "")
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("body is not the expected JSON object: "+clipText(jsonProblem(err), 200),
			`send {"tag": "v1.2.3"}, {"digest": "sha256:..."} and optionally "force": true, or no body`)
	}
	if _, err := dec.Token(); err != io.EOF {
		return badRequest("body holds more than one JSON value", "send one JSON object")
	}
	return nil
}

// jsonProblem describes a decoding error without Go type names.
func jsonProblem(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("invalid JSON at byte %d", se.Offset)
	case errors.As(err, &te):
		if te.Field == "" {
			return "want a JSON object, got " + te.Value
		}
		return "field " + te.Field + " must not be " + te.Value
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected end of JSON"
	}
	return err.Error() // e.g. json: unknown field "x"
}

func clipText(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

func badRequest(msg, hint string) *httperr.Error {
	return &httperr.Error{Status: http.StatusBadRequest, Message: msg, Hint: hint}
}

// submit queues req and answers: at once with 202, or after waiting.
func (s *Server) submit(w http.ResponseWriter, r *http.Request, req deployer.Request, opts writeOptions, caller Caller) {
	d, err := s.queue.Enqueue(r.Context(), req)
	if err != nil {
		httperr.Write(w, r, err)
		return
	}
	zerolog.Ctx(r.Context()).Info().Str(deployer.KeyService, d.Service).Int64(deployer.KeyDeploymentID, d.ID).
		Str("trigger", string(req.Trigger.Kind)).Str("subject", caller.Subject).Str("token_id", caller.TokenID).
		Str("tag", d.Tag).Str("digest", d.Digest).Bool("dry_run", d.DryRun).Bool("force", d.Force).
		Msg("deployment requested through the API")
	w.Header().Set("Location", deploymentPath(d.ID))
	if opts.wait == 0 {
		httperr.WriteJSON(w, http.StatusAccepted, deploymentResponse{Deployment: d})
		return
	}
	s.await(w, r, d, opts.wait)
}

func deploymentPath(id int64) string { return "/api/v1/deployments/" + strconv.FormatInt(id, 10) }

// await polls the store until d ends or wait runs out, then answers with
// its final state (see deploy).
func (s *Server) await(w http.ResponseWriter, r *http.Request, d deployer.Deployment, wait time.Duration) {
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	tick := time.NewTicker(waitPoll)
	defer tick.Stop()
poll:
	for !d.State.Final() {
		select {
		case <-ctx.Done():
			break poll
		case <-tick.C:
		}
		cur, err := s.store.Deployment(ctx, d.ID)
		switch {
		case err == nil:
			d = cur
		case ctx.Err() == nil:
			httperr.Write(w, r, fmt.Errorf("wait for deployment %d: %w", d.ID, err))
			return
		}
	}
	if !d.State.Final() {
		if r.Context().Err() != nil {
			return // the client went away
		}
		w.Header().Set("Location", "/api/v1/deployments/"+strconv.FormatInt(d.ID, 10))
		httperr.Write(w, r, &httperr.Error{Status: http.StatusGatewayTimeout, Deployment: &d,
			Message: fmt.Sprintf("deployment %d is still %s after waiting %s", d.ID, d.State, wait),
			Hint:    "it goes on; follow Location to see how it ends, or wait longer with ?wait="})
		return
	}
	if e := finalError(d); e != nil {
		httperr.Write(w, r, e)
		return
	}
	httperr.WriteJSON(w, http.StatusOK, deploymentResponse{Deployment: d})
}

// finalError is the error answer for a deployment that ended without
// success, nil for succeeded and unchanged.
func finalError(d deployer.Deployment) *httperr.Error {
	id := strconv.FormatInt(d.ID, 10)
	e := &httperr.Error{Deployment: &d, Hint: d.Hint}
	switch d.State {
	case deployer.StateSucceeded, deployer.StateUnchanged:
		return nil
	case deployer.StateFailed:
		e.Status, e.Message = http.StatusBadGateway, "deployment "+id+" failed"+cause(d)
	case deployer.StateRolledBack:
		e.Status, e.Message = http.StatusBadGateway, "deployment "+id+" failed and was rolled back"+cause(d)
	case deployer.StateInterrupted:
		e.Status, e.Message = http.StatusServiceUnavailable, "deployment "+id+" was interrupted: deployd stopped while it ran"
		if e.Hint == "" {
			e.Hint = "deployd queues it again when it starts; follow Location to see how it ends"
		}
	case deployer.StateSuperseded:
		e.Status, e.Message = http.StatusConflict, "deployment "+id+" was superseded by a newer request for "+d.Service
		e.Hint = "GET /api/v1/services/" + d.Service + " shows the deployment that replaced it"
	default:
		e.Status, e.Message = http.StatusInternalServerError, "deployment "+id+" ended in state "+string(d.State)
	}
	return e
}

// cause is ": " and the deployment's error, or "" when it has none.
func cause(d deployer.Deployment) string {
	if d.Error == "" {
		return ""
	}
	return ": " + d.Error
}
