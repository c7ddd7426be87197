# Targets: test, race (the same with the race detector), integration (race,
# against the local Redis and PostgreSQL), cluster (local 3-master Redis
# Cluster), faults (the fault suite, build tag faults: redis-server
# processes it starts, freezes and kills; needs redis-server and
# redis-cli), browser (the end-to-end test in headless chromium, build tag
# browser; needs chromium: apt-get install -y chromium), bench, lint, demo,
# cli (builds bin/cacheme). test and race are hermetic (miniredis,
# SQLite) unless CACHEME_TEST_REDIS / CACHEME_TEST_POSTGRES are set, so they pass on
# a machine with nothing running.

GO           ?= go
TIMEOUT      ?= 10m
REDIS_URL    ?= redis://127.0.0.1:6379/0
POSTGRES_URL ?= postgres://postgres@127.0.0.1:5432/test?sslmode=disable
CLUSTER      ?= 127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002

.PHONY: test race integration cluster faults browser fuzz bench bench-unit lint demo cli

test:
	$(GO) test -count=1 -timeout $(TIMEOUT) ./...

race:
	$(GO) test -race -count=1 -timeout $(TIMEOUT) ./...

integration:
	CACHEME_TEST_REDIS='$(REDIS_URL)' CACHEME_TEST_POSTGRES='$(POSTGRES_URL)' \
		$(GO) test -race -count=1 -timeout $(TIMEOUT) ./...

cluster:
	.ci/redis-cluster.sh start
	CACHEME_TEST_REDIS_CLUSTER='$(CLUSTER)' $(GO) test -race -count=1 -timeout $(TIMEOUT) -run Cluster ./...; \
		status=$$?; .ci/redis-cluster.sh stop; exit $$status

# The fault suite (build tag faults, tests TestFault*), on PostgreSQL.
faults:
	CACHEME_TEST_POSTGRES='$(POSTGRES_URL)' \
		$(GO) test -tags faults -race -count=1 -timeout 8m -v -run '^TestFault' .

# The end-to-end browser test; SCREENSHOTS=dir saves a PNG of each page.
CHROMIUM ?= /usr/bin/chromium
browser:
	CACHEME_CHROMIUM='$(CHROMIUM)' CACHEME_SCREENSHOTS='$(SCREENSHOTS)' \
		$(GO) test -tags browser -count=1 -timeout 5m -v -run '^TestBrowser$$' ./cmd/cacheme

# Each fuzz target for FUZZTIME (the seeds in testdata/fuzz run in every
# go test too).
FUZZTIME ?= 10s
fuzz:
	for t in FuzzKeys FuzzDecode FuzzEntryMetadata FuzzModelKeys FuzzRows; do \
		$(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) . || exit 1; done

# The side-by-side benchmarks (bench/, a module of its own: the peers never
# enter the library's go.mod) against the real Redis and PostgreSQL; writes
# docs/benchmarks.md and docs/benchmarks.svg. BENCHFLAGS=-quick for a smoke
# run.
BENCHFLAGS ?=
bench:
	cd bench && $(GO) run . -redis '$(patsubst redis://%/0,%,$(REDIS_URL))' -postgres '$(POSTGRES_URL)' \
		-out ../docs/benchmarks.md -svg ../docs/benchmarks.svg $(BENCHFLAGS)

# The package's own Go benchmarks.
bench-unit:
	$(GO) test -run '^$$' -bench . -benchmem ./...

STATICCHECK ?= $(shell command -v staticcheck || echo $$($(GO) env GOPATH)/bin/staticcheck)

lint:
	$(GO) vet ./...
	cd bench && $(GO) vet ./...
	$(GO) vet -tags faults .
	$(GO) vet -tags browser ./cmd/cacheme
	$(STATICCHECK) ./...
	$(STATICCHECK) -tags faults .
	$(STATICCHECK) -tags browser ./cmd/cacheme
	@unformatted="$$(gofmt -l .)"; if [ -n "$$unformatted" ]; then \
		echo "gofmt: these files need formatting:"; echo "$$unformatted"; exit 1; fi

demo:
	$(GO) run ./cmd/demo

cli:
	$(GO) build -o bin/cacheme ./cmd/cacheme
