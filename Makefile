# Targets: test (hermetic), race (hermetic, race detector), integration (real
# Redis and PostgreSQL), cluster (local 3-master Redis Cluster), bench, lint,
# demo. The hermetic targets unset the CACHEME_TEST_* variables, so they pass
# on a machine with nothing running (Redis is miniredis, in-process).

GO           ?= go
TIMEOUT      ?= 10m
REDIS_URL    ?= redis://127.0.0.1:6379/0
POSTGRES_URL ?= postgres://postgres@127.0.0.1:5432/test?sslmode=disable
CLUSTER      ?= 127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002

HERMETIC = env -u CACHEME_TEST_REDIS -u CACHEME_TEST_POSTGRES -u CACHEME_TEST_REDIS_CLUSTER

.PHONY: test race integration cluster bench lint demo

test:
	$(HERMETIC) $(GO) test -count=1 -timeout $(TIMEOUT) ./...

race:
	$(HERMETIC) $(GO) test -race -count=1 -timeout $(TIMEOUT) ./...

integration:
	CACHEME_TEST_REDIS='$(REDIS_URL)' CACHEME_TEST_POSTGRES='$(POSTGRES_URL)' \
		$(GO) test -race -count=1 -timeout $(TIMEOUT) ./...

cluster:
	.ci/redis-cluster.sh start
	CACHEME_TEST_REDIS_CLUSTER='$(CLUSTER)' $(GO) test -race -count=1 -timeout $(TIMEOUT) -run Cluster ./...; \
		status=$$?; .ci/redis-cluster.sh stop; exit $$status

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

lint:
	$(GO) vet ./...
	@unformatted="$$(gofmt -l .)"; if [ -n "$$unformatted" ]; then \
		echo "gofmt: these files need formatting:"; echo "$$unformatted"; exit 1; fi

demo:
	$(GO) run ./cmd/demo
