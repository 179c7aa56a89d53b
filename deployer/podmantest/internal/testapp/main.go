// Command testapp is the tiny HTTP service that podmantest packs into test
// images. It is built as a static binary and is the only file in the image.
//
// Environment:
//
//	PORT     port to listen on (default 8080)
//	VERSION  text served at GET /version
//	HEALTHY  "false" makes GET /healthz answer 500
//	CRASH    "true" makes the process exit with status 1 at start
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if err := run(); err != nil {
		log.Printf("testapp: %v", err)
		os.Exit(1)
	}
}

func run() error {
	if os.Getenv("CRASH") == "true" {
		return errors.New("CRASH=true: exiting on purpose")
	}
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	version := os.Getenv("VERSION")
	healthy := os.Getenv("HEALTHY") != "false"

	mux := http.NewServeMux()
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprint(w, version)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if !healthy {
			http.Error(w, "unhealthy (HEALTHY=false)", http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "ok")
	})

	srv := &http.Server{Addr: ":" + port, Handler: mux, ReadHeaderTimeout: 5 * time.Second}

	// As PID 1 in a container, signals without a handler are ignored:
	// handle SIGTERM so that `podman stop` does not have to wait and kill.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	log.Printf("testapp %s listening on :%s (healthy=%t)", version, port, healthy)

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(shutdownCtx)
}
