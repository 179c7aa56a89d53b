package server

import (
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
)

// routes declares deployd's whole HTTP surface.
func (s *Server) routes() http.Handler {
	r := chi.NewRouter()
	r.Use(middleware.RequestID)
	r.Use(s.accessLog)
	r.Use(s.recoverPanics)
	r.NotFound(s.notFound)
	r.MethodNotAllowed(s.methodNotAllowed)

	r.Get("/healthz", s.healthz)
	r.Get("/readyz", s.readyz)

	r.Post("/webhooks/github", s.webhook.ServeHTTP)

	r.Route("/api/v1", func(r chi.Router) {
		r.Get("/services", s.listServices)
		r.Get("/services/{name}", s.getService)
		r.Get("/deployments", s.listDeployments)
		r.Get("/deployments/{id}", s.getDeployment)
		r.Get("/deliveries", s.listDeliveries)
	})
	return r
}
