package server

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/deployd/deployd/deployer"
	"github.com/deployd/deployd/server/httperr"
)

// ReleaseReader lists releases of the release sets; the sqlite store
// satisfies it.
type ReleaseReader interface {
	Releases(ctx context.Context, set string, p deployer.Page) ([]deployer.Release, error)
}

// pageReleases is how many releases the status page shows.
const pageReleases = 10

// eventRelease is the event stream's event for a change of a release.
const eventRelease = "release"

// listReleases answers GET /api/v1/releases?set=&limit=&before=: releases
// newest first, with their members; an empty list without release sets.
func (s *Server) listReleases(w http.ResponseWriter, r *http.Request) {
	p, err := pageFrom(r)
	if err != nil {
		httperr.Write(w, r, err)
		return
	}
	rs := []deployer.Release{}
	if s.releases != nil {
		if rs, err = s.releases.Releases(r.Context(), r.URL.Query().Get("set"), p); err != nil {
			httperr.Write(w, r, err)
			return
		}
	}
	body := map[string]any{"releases": rs}
	if len(rs) > 0 && len(rs) == p.Limit {
		body["next_before"] = rs[len(rs)-1].ID
	}
	httperr.WriteJSON(w, http.StatusOK, body)
}

// recentReleases are the releases the status page shows, none without
// release sets.
func (s *Server) recentReleases(r *http.Request) ([]deployer.Release, error) {
	if s.releases == nil {
		return nil, nil
	}
	return s.releases.Releases(r.Context(), "", deployer.Page{Limit: pageReleases})
}

// shortCommit is a commit as the page shows it: its first 7 digits.
func shortCommit(c string) string {
	if len(c) > 7 {
		return c[:7]
	}
	return c
}

// PublishRelease sends a change of a release to every open stream, as a
// "release" event carrying the release.
func (h *Hub) PublishRelease(rel deployer.Release) {
	if !h.listened() {
		return
	}
	data, err := json.Marshal(rel)
	if err != nil {
		h.log.Error().Err(err).Int64(deployer.KeyReleaseID, rel.ID).Msg("encode release event")
		return
	}
	h.broadcast(event{name: eventRelease, data: data})
}
