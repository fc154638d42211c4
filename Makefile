# splitcheck: see README.md. `make test` is what CI runs.
GO          ?= go
GOBIN       := $(shell $(GO) env GOPATH)/bin
STATICCHECK ?= $(GOBIN)/staticcheck
BIN         := bin/splitcheck

.PHONY: all build deps lint unit e2e test bench demo clean

all: build

build:
	$(GO) build ./...
	$(GO) build -o $(BIN) ./cmd/splitcheck

# deps installs (as root) or checks the Debian packages, Go modules and staticcheck.
deps:
	./scripts/deps.sh

lint: deps
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

# Packages whose tests start the reference target, which binds fixed loopback ports:
# they run one at a time in e2e; everything else runs in parallel in unit.
TARGET_PKGS = $(shell $(GO) list -f '{{.ImportPath}} {{join .TestImports " "}} {{join .XTestImports " "}}' ./... | grep internal/reftarget | cut -d' ' -f1)
OTHER_PKGS  = $(filter-out $(TARGET_PKGS),$(shell $(GO) list ./...))

# unit: every package that needs no reference target, with the race detector.
unit: deps
	$(GO) test -race -count=1 $(OTHER_PKGS)

# e2e: the reference target (Postfix + Dovecot) and `splitcheck verify` against it,
# including the mutation tests. Needs root; fails (never skips) when the target cannot
# be set up, unless SPLITCHECK_SKIP_E2E=1 is set by hand. The slowest package takes
# about 90 s; 10 minutes each keeps a hang in all five well inside CI's 90 minutes.
e2e: deps
	$(GO) test -race -count=1 -p 1 -timeout 10m $(TARGET_PKGS)

test: lint unit e2e

bench: deps build
	./scripts/bench.sh

# demo: the main job on a machine without Docker: start the reference target and verify it.
demo: deps
	$(GO) run ./internal/reftarget/cmd/reftarget exec -- $(GO) run ./cmd/splitcheck verify --config examples/reftarget.yaml

clean:
	rm -rf bin
