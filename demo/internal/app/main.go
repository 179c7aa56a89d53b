// Command app is the tiny web server that deployd demo packs into its demo
// image: GET / and GET /version answer the version baked into the image
// ($VERSION), GET /healthz answers 200. It listens on 127.0.0.1:$PORT.
// Started with the single argument "probe" it exits at once, which the
// demo uses to check that podman can run containers on this machine.
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
	"time"
)

func main() {
	if len(os.Args) == 2 && os.Args[1] == "probe" {
		return
	}
	version := os.Getenv("VERSION")
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, version)
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "deployd demo app, version %s\n", version)
	})
	srv := &http.Server{Addr: "127.0.0.1:" + port, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	log.Fatal(srv.ListenAndServe())
}
