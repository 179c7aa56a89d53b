package server

import (
	"net/http"

	"github.com/go-chi/chi/v5"
)

// routes declares deployd's whole HTTP surface.
func (s *Server) routes() http.Handler {
	r := chi.NewRouter()
	r.Use(requestID)
	r.Use(s.accessLog)
	r.Use(s.recoverPanics)
	r.NotFound(s.notFound)
	r.MethodNotAllowed(s.methodNotAllowed)

	r.Get("/healthz", s.healthz)
	r.Get("/readyz", s.readyz)

	r.Post("/webhooks/github", s.webhook.ServeHTTP)

	// The status page is a read surface like GET /api/v1/services and the
	// event stream: whatever guards those (status.public: false) guards it.
	// Its assets hold no data and stay public.
	r.With(pageHeaders, s.requireStatusPage).Get("/", s.statusPage)
	r.With(pageHeaders).Get("/assets/{name}", s.serveAsset)
	// A browser logs in to a private status page here (login.go).
	r.With(pageHeaders).Get(loginPath, s.loginForm)
	r.With(pageHeaders).Post(loginPath, s.login)
	r.With(pageHeaders).Post(logoutPath, s.logout)

	if s.metrics != nil {
		r.With(s.requireStatusRead).Get("/metrics", s.metrics.ServeHTTP)
	}

	r.Route("/api/v1", func(r chi.Router) {
		// Reads need status:read when status.public is false; writes
		// check their own deploy scope.
		r.Use(s.requireStatusRead)
		r.Post("/services/{name}/deploy", s.deploy)
		r.Post("/services/{name}/rollback", s.rollback)
		r.Get("/services", s.listServices)
		r.Get("/services/{name}", s.getService)
		r.Get("/deployments", s.listDeployments)
		r.Get("/deployments/{id}", s.getDeployment)
		r.Get("/deliveries", s.listDeliveries)
		r.Get("/releases", s.listReleases)
		r.Get("/events", s.events)
	})
	return r
}
