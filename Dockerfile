# pgfront's container image: the static pgfront binary alone on an empty base (FROM scratch):
# no shell, no package manager, no libc; it runs as uid 65532.
#
# Two ways to build it (README, "Container image"):
#
#   make image            # = make release, then: podman build --format docker --target prebuilt .
#                         #   copies dist/pgfront-linux-$TARGETARCH in; pulls no image at all
#   make image-source     # = podman build --format docker .
#                         #   builds from source in a golang stage; pulls $GO_IMAGE
#
# Run it with the config mounted at /etc/pgfront/pgfront.yaml:
#
#   podman run -v ./pgfront.yaml:/etc/pgfront/pgfront.yaml:ro -p 6432:6432 -p 9187:9187 pgfront
#
# Health: HEALTHCHECK runs `pgfront probe` (GET /healthz on the admin listener, found through
# the config; no shell or curl needed; Docker image format only, hence --format docker).
# Orchestrators probe http://CONTAINER:9187/healthz directly instead: 200 while pgfront takes
# clients, 503 from the moment it drains. For that, admin.listen must be 0.0.0.0:9187, which
# pgfront accepts only with a token (read_token_*/admin_token_*: /healthz itself needs none).

ARG GO_IMAGE=docker.io/library/golang:1.26-bookworm

# --- from source (the last stage, built by default) needs this one ---
FROM ${GO_IMAGE} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=devel
ARG REVISION=
ARG TARGETOS=linux
ARG TARGETARCH
RUN CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} go build -trimpath \
      -ldflags "-s -w -X github.com/pgfront/pgfront/internal/version.stamped=${VERSION} -X github.com/pgfront/pgfront/internal/version.stampedRevision=${REVISION}" \
      -o /out/pgfront ./cmd/pgfront

# --- what every variant shares ---
FROM scratch AS base
# A new version is a new container: no SIGUSR2 hand-over (and no /tmp for its socket).
ENV PGFRONT_HANDOVER_SOCKET=off
USER 65532:65532
# The routes of pgfront.example.yaml and the admin listener (stats page, /metrics, /healthz, API).
EXPOSE 6432 6433 9187
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 CMD ["/pgfront", "probe"]
ENTRYPOINT ["/pgfront"]
CMD ["run", "-c", "/etc/pgfront/pgfront.yaml"]

# --- the binary `make release` built (linux/amd64 or linux/arm64, as the build's platform) ---
FROM base AS prebuilt
ARG TARGETARCH
COPY dist/pgfront-linux-${TARGETARCH} /pgfront

# --- from source ---
FROM base AS source
COPY --from=build /out/pgfront /pgfront
