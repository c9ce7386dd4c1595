# snakepit — build, test and demo entry points.
#   make test   installs what the tests need (idempotent) and runs every suite
#   make demo   installs what the demo needs, runs `snakepit demo`, then `snakepit doctor`
#   make proto  regenerates the committed Go and Python protocol code

GO            ?= go
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.0
STATICCHECK_VERSION        := v0.8.2
TOOLS_BIN     := $(CURDIR)/.snakepit/bin
PY_ENV_FILE   := $(CURDIR)/.snakepit/python
PROTO_SRC     := proto/snakepit/v1/snakepit.proto
PY_PB_DIR     := python/snakepit_bridge/pb
AGENT_PROTO_SRC := proto/snakepit/v1/agent.proto
AGENT_PROTO_M   := Msnakepit/v1/snakepit.proto=github.com/snakepit-go/snakepit/bridge/pb,Msnakepit/v1/agent.proto=github.com/snakepit-go/snakepit/agent/agentpb

.PHONY: all build test test-go test-python test-bench-smoke test-lifecycle chaos reload-soak agent-flood agent-rollout elastic-step soak-replace demo proto deps-python deps-browser lint bench bench-python bench-sidebyside bench-ab bench-interleave bench-array bench-batch bench-rounds fuzz-jsonvalid clean

all: build

build:
	$(GO) build ./...

## deps-python: make a Python with grpcio + protobuf + pytest available (see scripts/install-python-deps.sh)
deps-python:
	@scripts/install-python-deps.sh

## deps-browser: a headless Chromium for the status page's browser test, if it can be had (see scripts/install-browser.sh)
deps-browser:
	@scripts/install-browser.sh

test: deps-python deps-browser
	@SNAKEPIT_PYTHON="$$(cat $(PY_ENV_FILE))" $(MAKE) --no-print-directory lint test-python test-go test-bench-smoke

# test/remote (four agents with Python workers) runs after the rest, not beside
# the lifecycle suite, whose stop and sampling timings are CPU-sensitive.
# The suites run with cgroup v2 containment where the machine offers it (the default, "auto");
# NOCGROUP_SHORT is the part of the lifecycle suite and conformance kit run again with
# SNAKEPIT_CGROUP=off, today's fallback (make test-lifecycle-nocgroup runs all of it).
NOCGROUP_SHORT ?= TestScrubbedDaemonOf|TestConformancePythonWorker|TestMemoryMaxIsSetOrRefused
test-go:
	SNAKEPIT_PYTHON="$${SNAKEPIT_PYTHON:-$$(cat $(PY_ENV_FILE))}" $(GO) test -race -count=1 -timeout 15m $$($(GO) list ./... | grep -v '/test/remote$$')
	SNAKEPIT_PYTHON="$${SNAKEPIT_PYTHON:-$$(cat $(PY_ENV_FILE))}" SNAKEPIT_CGROUP=off $(GO) test -race -count=1 -timeout 10m -run '$(NOCGROUP_SHORT)' ./test/lifecycle/
	SNAKEPIT_PYTHON="$${SNAKEPIT_PYTHON:-$$(cat $(PY_ENV_FILE))}" $(GO) test -race -count=1 -timeout 5m ./test/remote/
	# deploy/ is its own module (the Kubernetes API types stay out of ours): the manifests' check.
	cd deploy && $(GO) test -count=1 ./...

## test-lifecycle: the lifecycle suite (and conformance kit) 5 times in each containment mode of
## CGROUP_MODES (default "auto off": cgroup v2 where available, then SNAKEPIT_CGROUP=off)
CGROUP_MODES ?= auto off
test-lifecycle:
	for m in $(CGROUP_MODES); do echo "== SNAKEPIT_CGROUP=$$m"; \
	  SNAKEPIT_CGROUP=$$m SNAKEPIT_PYTHON="$${SNAKEPIT_PYTHON:-$$(cat $(PY_ENV_FILE))}" $(GO) test -race -count=5 -timeout 30m ./test/lifecycle/... || exit 1; done

## test-lifecycle-nocgroup: the whole lifecycle suite and conformance kit once with cgroups off
.PHONY: test-lifecycle-nocgroup
test-lifecycle-nocgroup:
	SNAKEPIT_CGROUP=off SNAKEPIT_PYTHON="$${SNAKEPIT_PYTHON:-$$(cat $(PY_ENV_FILE))}" $(GO) test -race -count=1 -timeout 15m ./test/lifecycle/...

## chaos: the 30 s chaos run (32 callers, a random worker SIGKILLed every 250 ms); make test runs a 6 s one
chaos: deps-python
	SNAKEPIT_PYTHON="$$(cat $(PY_ENV_FILE))" SNAKEPIT_CHAOS_SECONDS=$${SNAKEPIT_CHAOS_SECONDS:-30} \
	  $(GO) test -race -count=1 -timeout 10m -run 'TestChaos' -v ./test/integration/

## reload-soak: 20 rolling reloads of 4 workers under load (make test runs 1); figures in docs/RELOAD.md
reload-soak: deps-python
	SNAKEPIT_PYTHON="$$(cat $(PY_ENV_FILE))" SNAKEPIT_RELOAD_ROUNDS=$${SNAKEPIT_RELOAD_ROUNDS:-20} \
	  $(GO) test -race -count=1 -timeout 10m -run 'TestReloadUnderLoad|TestWorkerAboveRecycleAboveRSS' -v ./test/integration/

## agent-flood: 64 senders of unauthenticated 15 MiB requests against a real `snakepit serve` on 127.0.0.1
## for 5 s per flood, beside one good client; prints the agent's RSS growth and the good client's latency
## (FLOOD: lines; docs/SCALING.md). SNAKEPIT_FLOOD_BINARY=path measures another build.
agent-flood: deps-python
	SNAKEPIT_PYTHON="$$(cat $(PY_ENV_FILE))" SNAKEPIT_AGENT_FLOOD=1 \
	  $(GO) test -count=1 -timeout 5m -run 'TestAgentFlood' -v ./test/remote/

## soak-replace: 10,000 make-before-break replacements of one worker (a stub process, no Python;
## about 6 min) and the heap growth after GC; figures in docs/BENCHMARKS.md. REPLACE_ROUNDS to change
REPLACE_ROUNDS ?= 10000
soak-replace:
	$(GO) test -count=1 -timeout 60m -run '^$$' -bench BenchmarkReplacementHeap -benchtime $(REPLACE_ROUNDS)x ./grpcworker/

## agent-rollout: 20 graceful agent stops (SIGTERM, then a new agent at the same static address) under
## 16 non-idempotent callers; no call may fail and each restarted agent must take calls within 2 s of its
## ready line (ROLLOUT: line; docs/SCALING.md). make test runs 2.
agent-rollout: deps-python
	SNAKEPIT_PYTHON="$$(cat $(PY_ENV_FILE))" SNAKEPIT_ROLLOUT_ROUNDS=$${SNAKEPIT_ROLLOUT_ROUNDS:-20} \
	  $(GO) test -race -count=1 -timeout 15m -run 'TestAgentRolloutUnderLoad' -v ./test/remote/

## elastic-step: the long load step (1 → 32 → 1 callers, 20 s at 32) against an elastic pool of 1..4 Python
## workers, IdleTimeout 5 s; writes the table of ready workers over time into docs/SCALING.md
## (ELASTIC-STEP: line). make test runs a short one.
elastic-step: deps-python
	SNAKEPIT_PYTHON="$$(cat $(PY_ENV_FILE))" SNAKEPIT_ELASTIC_STEP_DOC=$(CURDIR)/docs/SCALING.md \
	  $(GO) test -race -count=1 -timeout 10m -run 'TestElasticLoadStep' -v ./test/integration/

test-python:
	cd python && "$${SNAKEPIT_PYTHON:-$$(cat $(PY_ENV_FILE))}" -m pytest -q tests

lint: lint-python
	$(GO) vet ./...
	cd deploy && $(GO) vet ./...
	@test -x $(TOOLS_BIN)/staticcheck || GOBIN=$(TOOLS_BIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	$(TOOLS_BIN)/staticcheck ./...
	cd test/bench && $(GO) vet ./... && $(TOOLS_BIN)/staticcheck ./...

## lint-python: mypy over python/snakepit_bridge (settings: python/pyproject.toml [tool.mypy]);
## uses the test Python's mypy (scripts/install-python-deps.sh installs it), else mypy on PATH
.PHONY: lint-python
lint-python:
	@py="$${SNAKEPIT_PYTHON:-$$(cat $(PY_ENV_FILE) 2>/dev/null)}"; py="$${py:-python3}"; \
	if "$$py" -m mypy --version >/dev/null 2>&1; then mypy="$$py -m mypy"; \
	elif command -v mypy >/dev/null 2>&1; then mypy=mypy; \
	else echo "lint-python: mypy is not installed (not importable by $$py, not on PATH)." >&2; \
	  echo "  run scripts/install-python-deps.sh, or: apt-get install -y mypy / pip install mypy" >&2; exit 1; fi; \
	echo "cd python && $$mypy"; cd python && $$mypy

# The doctor afterwards: what the demo relied on, checked the way an operator would.
demo: deps-python
	SNAKEPIT_PYTHON="$$(cat $(PY_ENV_FILE))" $(GO) run ./cmd/snakepit demo
	SNAKEPIT_PYTHON="$$(cat $(PY_ENV_FILE))" $(GO) run ./cmd/snakepit doctor

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./pool/...

## fuzz-jsonvalid: the argument validator against encoding/json.Valid, differential fuzzing (FUZZ_TIME=60s);
## make test runs only its seeds. A failing input is written under internal/jsonvalid/testdata/fuzz: keep it.
FUZZ_TIME ?= 60s
fuzz-jsonvalid:
	$(GO) test -run '^$$' -fuzz FuzzValid -fuzztime $(FUZZ_TIME) ./internal/jsonvalid/

## bench-python: real round trips Go → pool → gRPC → Python (test/integration)
bench-python: deps-python
	SNAKEPIT_PYTHON="$$(cat $(PY_ENV_FILE))" $(GO) test -run '^$$' -bench . -benchtime 3s ./test/integration/

## bench-sidebyside: snakepit's Python side against a minimal grpcio sync servicer
## (raw grpc-go client) and a go-plugin host, N = 1, 2 processes × C = 1, 8 callers;
## prints the medians as the markdown table of docs/BENCHMARKS.md (test/bench, its own module)
BENCH_COUNT ?= 5
BENCH_TIME  ?= 2s
BENCH_RUN   ?= .
bench-sidebyside: deps-python
	@: > $(CURDIR)/.snakepit/sidebyside.txt
	@# Round-robin: one count of every row, BENCH_COUNT times, so load changes hit all rows alike.
	cd test/bench && for i in $$(seq $(BENCH_COUNT)); do \
	  SNAKEPIT_PYTHON="$$(cat $(PY_ENV_FILE))" $(GO) test -run '^$$' -bench 'SideBySide/$(BENCH_RUN)' \
	    -benchtime $(BENCH_TIME) -count 1 -timeout 60m . > $(CURDIR)/.snakepit/sidebyside.run 2>&1; rc=$$?; \
	  cat $(CURDIR)/.snakepit/sidebyside.run; cat $(CURDIR)/.snakepit/sidebyside.run >> $(CURDIR)/.snakepit/sidebyside.txt; \
	  [ $$rc -eq 0 ] || exit $$rc; done
	cd test/bench && $(GO) run ./cmd/benchtable < $(CURDIR)/.snakepit/sidebyside.txt

## bench-interleave: targets of the side-by-side benchmark driven in turn, IL_SLICE each, for
## IL_TOTAL, IL_C callers (test/bench/interleave_test.go): per-round ratios against the first
## target that hold within a few per cent on a shared machine, where separate rounds do not
IL_TARGETS ?= grpc-sync-wide/N=1,snakepit-default/N=1,snakepit-fixed/N=1
IL_C       ?= 32
IL_SLICE   ?= 2s
IL_TOTAL   ?= 60s
bench-interleave: deps-python
	cd test/bench && SNAKEPIT_PYTHON="$$(cat $(PY_ENV_FILE))" INTERLEAVE='$(IL_TARGETS)' IL_C=$(IL_C) \
	  IL_SLICE=$(IL_SLICE) IL_TOTAL=$(IL_TOTAL) $(GO) test -count 1 -timeout 60m -run '^TestInterleave$$' -v . \
	  > $(CURDIR)/.snakepit/interleave.out 2>&1; rc=$$?; \
	  grep -E '^(IL|--- FAIL|FAIL|ok)|_test.go:[0-9]+:' $(CURDIR)/.snakepit/interleave.out; exit $$rc

## bench-batch: dynamic batching — the example numpy matrix-vector batch tool's cost per call by
## batch size (1..64) against the same product one call per request, BENCH_COUNT interleaved rounds
## (test/bench BenchmarkBatchMatvec); the throughput rows are `make bench-sidebyside BENCH_RUN=batch-`
BATCH_BENCHTIME ?= 300x
bench-batch: deps-python
	@# Rounds of every batch size in turn (not -count, which repeats each size back to back).
	cd test/bench && for i in $$(seq $(BENCH_COUNT)); do \
	  SNAKEPIT_PYTHON="$${SNAKEPIT_PYTHON:-$$(cat $(PY_ENV_FILE))}" $(GO) test -run '^$$' -bench BatchMatvec \
	    -benchtime $(BATCH_BENCHTIME) -count 1 -timeout 30m . | grep '^Benchmark' || exit 1; done

## bench-ab: the Python worker against the minimal servicer in paired rounds (raw grpc-go
## calls, C = 8 then C = 1; AB_ROUNDS, AB_VARIANTS): per-round ratios, for judging a
## change to the Python side (test/bench/cmd/abtest)
AB_ROUNDS   ?= 6
AB_VARIANTS ?= servicer worker
bench-ab: deps-python
	cd test/bench && for c in 8 1; do SNAKEPIT_PYTHON="$$(cat $(PY_ENV_FILE))" \
	  $(GO) run ./cmd/abtest -rounds $(AB_ROUNDS) -t 3s -c $$c $(AB_VARIANTS) || exit 1; done

## bench-array: issue 19's array target: a 4 MiB float32 numpy array decoded in Go against raw gRPC
## bytes (bare grpc-go -> minimal_servicer.py) and snakepit's bytes result, ARRAY_ROUNDS paired rounds of
## ARRAY_CALLS calls per path; prints the table of docs/BENCHMARKS.md (test/bench/array_test.go)
ARRAY_ROUNDS ?= 10
ARRAY_CALLS  ?= 15
bench-array: deps-python
	cd test/bench && SNAKEPIT_PYTHON="$$(cat $(PY_ENV_FILE))" ARRAY_ROUNDS=$(ARRAY_ROUNDS) ARRAY_CALLS=$(ARRAY_CALLS) \
	  $(GO) test -run '^$$' -bench Array4MiBPaired -benchtime 1x -timeout 30m .

## bench-rounds: one of test/bench's issue-21 benchmarks in BENCH_COUNT interleaved rounds of BENCH_TIME,
## BENCH=Args (JSON arguments vs raw), Start/ (N ready vs import grpc; BENCH_TIME=1x),
## Transport (TCP vs Unix socket), CPUBound (default Capacity vs 1; BENCH_TIME=300x); docs/BENCHMARKS.md
BENCH ?= Args
bench-rounds: deps-python
	cd test/bench && $(GO) test -c -o $(CURDIR)/.snakepit/bench.test . && for i in $$(seq $(BENCH_COUNT)); do \
	  SNAKEPIT_PYTHON="$$(cat $(PY_ENV_FILE))" $(CURDIR)/.snakepit/bench.test -test.run '^$$' \
	    -test.bench '$(BENCH)' -test.benchtime $(BENCH_TIME) -test.timeout 60m || exit 1; done

## test-bench-smoke: the side-by-side benchmark with one call per configuration and the array
## benchmark with one round of one call (part of make test)
test-bench-smoke:
	cd test/bench && SNAKEPIT_PYTHON="$${SNAKEPIT_PYTHON:-$$(cat $(PY_ENV_FILE))}" ARRAY_ROUNDS=1 ARRAY_CALLS=1 \
	  $(GO) test -count=1 -run '^$$' -bench 'SideBySide|Array4MiBPaired' -benchtime 1x -timeout 5m .

## proto: needs protoc >= 3.20 for --pyi_out (Debian: protobuf-compiler) and grpc_python_plugin
## (Debian: protobuf-compiler-grpc). The Python message stubs (.pyi) are generated; the grpc
## plugin writes none, so mypy infers snakepit_pb2_grpc from its source.
proto:
	GOBIN=$(TOOLS_BIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(TOOLS_BIN) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	PATH=$(TOOLS_BIN):$$PATH protoc -I proto \
	  --go_out=bridge/pb --go_opt=paths=source_relative,Msnakepit/v1/snakepit.proto=github.com/snakepit-go/snakepit/bridge/pb \
	  --go-grpc_out=bridge/pb --go-grpc_opt=paths=source_relative,Msnakepit/v1/snakepit.proto=github.com/snakepit-go/snakepit/bridge/pb \
	  $(PROTO_SRC)
	mv bridge/pb/snakepit/v1/*.go bridge/pb/ && rm -rf bridge/pb/snakepit
	protoc -I proto/snakepit/v1 --python_out=$(PY_PB_DIR) --pyi_out=$(PY_PB_DIR) \
	  --grpc_out=$(PY_PB_DIR) --plugin=protoc-gen-grpc=$$(command -v grpc_python_plugin) \
	  proto/snakepit/v1/snakepit.proto
	sed -i 's/^import snakepit_pb2 as/from . import snakepit_pb2 as/' $(PY_PB_DIR)/snakepit_pb2_grpc.py
	# The agent protocol is Go only (host ↔ `snakepit serve`); it imports snakepit.proto's messages.
	PATH=$(TOOLS_BIN):$$PATH protoc -I proto \
	  --go_out=agent/agentpb --go_opt=paths=source_relative,$(AGENT_PROTO_M) \
	  --go-grpc_out=agent/agentpb --go-grpc_opt=paths=source_relative,$(AGENT_PROTO_M) \
	  $(AGENT_PROTO_SRC)
	mv agent/agentpb/snakepit/v1/*.go agent/agentpb/ && rm -rf agent/agentpb/snakepit

clean:
	rm -rf .snakepit/bin
