# Sluice: the two commands that work on a fresh machine are `make run` and `make test`.
SHELL := /bin/bash
SWIFT ?= swift
DEBUG_BIN := .build/debug/sluice
# The release binary is the one the Dockerfile ships: static Swift runtime, own scratch path.
RELEASE_BIN := .build-static/release/sluice
BENCH_ARGS ?=
# Release builds turn off the runtime exclusivity checks (in every module, NIO's included): 14% less
# CPU per proxied request in Benchmarks/load. Debug builds, which all tests run, keep them.
RELEASE_FLAGS := -c release --product sluice --static-swift-stdlib -Xswiftc -enforce-exclusivity=unchecked --scratch-path .build-static

.PHONY: deps build release run test test-swift test-e2e lint-deploy bench bench-quick bench-micro docker-build-check clean

deps:
	@scripts/install-deps.sh

build: deps
	$(SWIFT) build --product sluice

release: deps
	$(SWIFT) build $(RELEASE_FLAGS)

## make run: build and start `sluice demo` (a built-in app behind Sluice); Ctrl-C shows the drain.
run: build
	$(DEBUG_BIN) demo

## make test: every test: unit, handler and loopback tests (swift test), the end-to-end
## rolling-update drain test against the real binary, and the deployment lint.
test: deps
	$(SWIFT) build --build-tests
	$(MAKE) --no-print-directory test-swift test-e2e lint-deploy

# The pure suites (SluiceCoreTests, and SluiceHTTP2Tests' machines and embedded channels) keep time on a
# mock clock: they run in parallel (628 tests in about 4 s). The loopback suites (SluiceProxyTests and the
# HTTP/2 handler's loopback tests) measure real timeouts and windows over real sockets: run in parallel on
# 2 cores they starve each other (header, idle and body timeouts missed, health counts off by one), so
# they run one at a time. Each `swift test` below reports its own count; together they are every test.
LOOPBACK_TESTS = ^SluiceProxyTests\.|HTTP2ServerConnectionHandlerLoopbackTests

test-swift:
	$(SWIFT) test --skip-build --parallel --skip '$(LOOPBACK_TESTS)'
	$(SWIFT) test --skip-build --no-parallel --filter '$(LOOPBACK_TESTS)'

test-e2e:
	SLUICE_BIN=$(DEBUG_BIN) python3 -m pytest -q -p no:cacheprovider Tests/e2e

# The drain-budget check asks the binary (`sluice check-config`) to judge each manifest's settings.
lint-deploy:
	$(SWIFT) build --product sluice
	SLUICE_BIN=$(DEBUG_BIN) bash scripts/lint-deploy.sh

## make bench: the load comparison with nginx and HAProxy (BENCH_ARGS=--quick for ~2 minutes).
bench: release
	@scripts/install-deps.sh --bench
	python3 Benchmarks/load/bench.py --sluice-bin $(RELEASE_BIN) $(BENCH_ARGS)

## make docker-build-check: the Dockerfile's release build (static Swift runtime), run here.
docker-build-check: deps
	bash scripts/docker-build-check.sh

## make bench-micro: micro-benchmarks; fails when a hot path allocates more than its checked-in threshold.
bench-micro:
	bash scripts/bench-micro.sh

bench-quick:
	$(MAKE) --no-print-directory bench BENCH_ARGS=--quick

clean:
	rm -rf .build .build-static Benchmarks/load/results
