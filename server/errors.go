package server

import (
	"net/http"

	"github.com/deployd/deployd/server/httperr"
)

// Errors become responses in httperr.Write only, the webhook's included.

func (s *Server) notFound(w http.ResponseWriter, r *http.Request) {
	httperr.Write(w, r, &httperr.Error{Status: http.StatusNotFound, Message: "no such endpoint: " + r.URL.Path,
		Hint: "see the API section of deployd's README"})
}

func (s *Server) methodNotAllowed(w http.ResponseWriter, r *http.Request) {
	httperr.Write(w, r, &httperr.Error{Status: http.StatusMethodNotAllowed, Message: "method " + r.Method + " is not allowed on " + r.URL.Path})
}
