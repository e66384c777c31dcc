# pgfront's builds.
#
#   make build      ./pgfront for this machine, version stamped
#   make release    static linux/amd64 and linux/arm64 binaries and SHA256SUMS in dist/
#   make test       the test suite (the README's test command)
#   make image      the container image from the binary `make release` built (pulls nothing)
#   make image-source  the container image built from source in a golang stage (pulls golang)
#
# VERSION defaults to `git describe --tags --always --dirty`; set it to build a release from
# a tarball or to override (make release VERSION=v1.2.0). PLATFORMS and DIST choose what is
# built where.

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
REVISION  ?= $(shell git rev-parse HEAD 2>/dev/null)
MODIFIED  ?= $(shell if [ -n "$$(git status --porcelain 2>/dev/null)" ]; then echo true; else echo false; fi)
PLATFORMS ?= linux/amd64 linux/arm64
DIST      ?= dist
CONTAINER ?= podman
IMAGE     ?= pgfront:$(VERSION)

STAMP    := github.com/pgfront/pgfront/internal/version
LDFLAGS  := -s -w -X $(STAMP).stamped=$(VERSION) -X $(STAMP).stampedRevision=$(REVISION) -X $(STAMP).stampedModified=$(MODIFIED)
BINARIES := $(foreach p,$(PLATFORMS),$(DIST)/pgfront-$(subst /,-,$(p)))

.PHONY: build release test image image-source FORCE

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o pgfront ./cmd/pgfront

release: $(BINARIES)
	cd $(DIST) && sha256sum $(notdir $(BINARIES)) > SHA256SUMS

# dist/pgfront-OS-ARCH: a static binary (no cgo: runs on any Linux of that architecture, and
# FROM scratch).
$(DIST)/pgfront-%: FORCE
	@mkdir -p $(DIST)
	CGO_ENABLED=0 GOOS=$(word 1,$(subst -, ,$*)) GOARCH=$(word 2,$(subst -, ,$*)) \
		$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/pgfront

test:
	$(GO) test ./...

image: release
	$(CONTAINER) build --format docker --target prebuilt -t $(IMAGE) .

image-source:
	$(CONTAINER) build --format docker --build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) -t $(IMAGE) .

FORCE:
