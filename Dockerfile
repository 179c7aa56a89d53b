# deployd in a container. It drives the host's podman through the podman
# socket (podman.global_args: ["--remote", "--url", "unix:///run/podman/podman.sock"];
# see deployments/quadlet/deployd.container).
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" -o /out/deployd ./cmd/deployd

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends podman ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /var/lib/deployd --create-home --shell /usr/sbin/nologin deployd
COPY --from=build /out/deployd /usr/local/bin/deployd
USER deployd
VOLUME /var/lib/deployd
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["/usr/local/bin/deployd"]
CMD ["serve", "--config", "/etc/deployd/deployd.yaml"]
