package server

import (
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/rs/zerolog"

	"github.com/deployd/deployd/deployer"
	"github.com/deployd/deployd/server/httperr"
)

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	httperr.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz answers 200 when deployd can take deliveries: not draining, the
// store answers and its last write succeeded. A failed write (a full disk)
// makes it 503 with the reason until a write succeeds again.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if s.queue.Draining() {
		httperr.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "draining"})
		return
	}
	if s.writes != nil {
		if reason, since := s.writes.WriteFailure(); reason != "" {
			httperr.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{
				"status": "store writes fail",
				"reason": reason,
				"since":  since.UTC().Format(time.RFC3339),
			})
			return
		}
	}
	if err := s.store.Ping(r.Context()); err != nil {
		zerolog.Ctx(r.Context()).Warn().Err(err).Msg("readiness: store unreachable")
		httperr.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "store unreachable"})
		return
	}
	httperr.WriteJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// serviceInfo is what the API shows of a configured service besides its
// status. It leaves out the container arguments, the command and the health
// URL: they may hold secrets (an -e PASSWORD=... among the arguments).
type serviceInfo struct {
	Name     string   `json:"name"`
	Image    string   `json:"image"`
	Strategy string   `json:"strategy"`
	Tags     []string `json:"tags"`
	// DefaultTag is what a manual deploy without tag or digest deploys;
	// empty when the first tag is a pattern.
	DefaultTag string `json:"default_tag,omitempty"`
}

// serviceView is a configured service with what runs for it now.
type serviceView struct {
	serviceInfo
	Status         deployer.ServiceStatus `json:"status"`
	LastDeployment *deployer.Deployment   `json:"last_deployment,omitempty"`
}

func (s *Server) serviceView(r *http.Request, svc deployer.Service) (serviceView, error) {
	st, err := s.store.ServiceStatus(r.Context(), svc.Name)
	if err != nil {
		return serviceView{}, err
	}
	info := serviceInfo{Name: svc.Name, Image: svc.Image, Strategy: svc.Strategy, Tags: svc.Tags, DefaultTag: svc.DefaultTag}
	v := serviceView{serviceInfo: info, Status: st}
	if ds, err := s.store.Deployments(r.Context(), svc.Name, deployer.Page{Limit: 1}); err != nil {
		return serviceView{}, err
	} else if len(ds) > 0 {
		v.LastDeployment = &ds[0]
	}
	return v, nil
}

func (s *Server) listServices(w http.ResponseWriter, r *http.Request) {
	out := make([]serviceView, 0, len(s.services))
	for _, svc := range s.services {
		v, err := s.serviceView(r, svc)
		if err != nil {
			httperr.Write(w, r, err)
			return
		}
		out = append(out, v)
	}
	httperr.WriteJSON(w, http.StatusOK, map[string]any{"services": out})
}

func (s *Server) getService(w http.ResponseWriter, r *http.Request) {
	svc, ok := s.byName[chi.URLParam(r, "name")]
	if !ok {
		httperr.Write(w, r, unknownService(chi.URLParam(r, "name")))
		return
	}
	v, err := s.serviceView(r, svc)
	if err != nil {
		httperr.Write(w, r, err)
		return
	}
	httperr.WriteJSON(w, http.StatusOK, v)
}

func (s *Server) listDeployments(w http.ResponseWriter, r *http.Request) {
	service := r.URL.Query().Get("service")
	if service != "" {
		if _, ok := s.byName[service]; !ok {
			httperr.Write(w, r, unknownService(service))
			return
		}
	}
	p, err := pageFrom(r)
	if err != nil {
		httperr.Write(w, r, err)
		return
	}
	ds, err := s.store.Deployments(r.Context(), service, p)
	if err != nil {
		httperr.Write(w, r, err)
		return
	}
	body := map[string]any{"deployments": ds}
	if len(ds) > 0 && len(ds) == p.Limit {
		body["next_before"] = ds[len(ds)-1].ID
	}
	httperr.WriteJSON(w, http.StatusOK, body)
}

func (s *Server) getDeployment(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(chi.URLParam(r, "id"), 10, 64)
	if err != nil || id <= 0 {
		httperr.Write(w, r, &httperr.Error{Status: http.StatusBadRequest, Message: "deployment id must be a positive integer"})
		return
	}
	d, err := s.store.Deployment(r.Context(), id)
	if err != nil {
		httperr.Write(w, r, err)
		return
	}
	httperr.WriteJSON(w, http.StatusOK, d)
}

func (s *Server) listDeliveries(w http.ResponseWriter, r *http.Request) {
	p, err := pageFrom(r)
	if err != nil {
		httperr.Write(w, r, err)
		return
	}
	ds, err := s.store.Deliveries(r.Context(), p)
	if err != nil {
		httperr.Write(w, r, err)
		return
	}
	body := map[string]any{"deliveries": ds}
	if len(ds) > 0 && len(ds) == p.Limit {
		body["next_before"] = ds[len(ds)-1].Seq
	}
	httperr.WriteJSON(w, http.StatusOK, body)
}

// Paging bounds of the list endpoints.
const (
	defaultLimit = 50
	maxLimit     = 500
)

// pageFrom reads ?limit= and ?before= with clear errors for bad values.
func pageFrom(r *http.Request) (deployer.Page, error) {
	p := deployer.Page{Limit: defaultLimit}
	q := r.URL.Query()
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxLimit {
			return p, &httperr.Error{Status: http.StatusBadRequest, Message: "limit must be an integer from 1 to 500"}
		}
		p.Limit = n
	}
	if v := q.Get("before"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			return p, &httperr.Error{Status: http.StatusBadRequest, Message: "before must be a positive integer cursor (next_before of the previous page)"}
		}
		p.Before = n
	}
	return p, nil
}

func unknownService(name string) error {
	return &httperr.Error{Status: http.StatusNotFound, Message: "unknown service " + strconv.Quote(name),
		Hint: "GET /api/v1/services lists the configured services"}
}
