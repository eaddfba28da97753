#!/usr/bin/env bash
# make fuzz: every target in fuzz/ for FUZZ_SECONDS each, one after the other in one process
# (the machine's two cores are shared), then executions per target. Fails if any target found a
# crash; the input is left in fuzz/artifacts/<target>/ (reproduce: scripts/fuzz.sh repro FILE).
#
#   FUZZ_SECONDS=60        seconds per target
#   FUZZ_TARGETS="a b"     a subset (default: every [[bin]] in fuzz/Cargo.toml)
#   FUZZ_SANITIZER=none    none | address (address needs nightly; safe Rust gains little from it)
#   FUZZ_SUMMARY=file      also write the table there (default fuzz/target/summary.tsv)
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET=${FUZZ_SECONDS:-60}
SANITIZER=${FUZZ_SANITIZER:-none}
SUMMARY=${FUZZ_SUMMARY:-fuzz/target/summary.tsv}
ALL_TARGETS=$(sed -n '/^\[\[bin\]\]/,/^$/s/^name = "\(.*\)"/\1/p' fuzz/Cargo.toml)
TARGETS=${FUZZ_TARGETS:-$ALL_TARGETS}

# What the targets need: cargo-fuzz (crates.io) and, preferably, the nightly toolchain. A machine
# that cannot fetch a toolchain still fuzzes: coverage instrumentation works on stable, and only
# the sanitizers need nightly.
TOOLCHAIN=+nightly
if ! rustup toolchain list | grep -q '^nightly'; then
  if ! rustup toolchain install nightly --profile minimal; then
    echo "note: no nightly toolchain here; fuzzing with the default one (sanitizer none)"
    TOOLCHAIN=""
    SANITIZER=none
  fi
fi
if ! command -v cargo-fuzz >/dev/null; then
  cargo install cargo-fuzz --locked
fi

dict_for() {
  case "$1" in
    config) echo fuzz/dict/config.dict ;;
    jwks) echo fuzz/dict/jwks.dict ;;
    token_header | token_verify) echo fuzz/dict/token.dict ;;
    cookies | login_decide | token_endpoint) echo fuzz/dict/login.dict ;;
    paths | safe_local_path) echo fuzz/dict/paths.dict ;;
  esac
}

run_args() {
  local target=$1
  local args=(-timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
  local dict
  dict=$(dict_for "$target")
  if [ -n "$dict" ]; then args+=("-dict=$dict"); fi
  echo "${args[@]}"
}


# Debug assertions and overflow checks come from fuzz/Cargo.toml's release profile.
# The targets that sign and check RSA spend most of their time in big-number code, where tracing
# every comparison for the fuzzer costs five times the work and finds nothing: they are built
# without it, in a target directory of their own.
build_args() {
  case "$1" in
    token_verify | rsa_verify) echo "-O -s $SANITIZER --no-trace-compares --target-dir fuzz/target/no-trace-compares" ;;
    *) echo "-O -s $SANITIZER" ;;
  esac
}

if [ "${1:-}" = "repro" ]; then
  file=$2
  target=$(basename "$(dirname "$file")")
  # shellcheck disable=SC2046
  exec cargo $TOOLCHAIN fuzz run --fuzz-dir fuzz $(build_args "$target") "$target" "$file"
fi

for target in $TARGETS; do
  # shellcheck disable=SC2046
  cargo $TOOLCHAIN fuzz build --fuzz-dir fuzz $(build_args "$target") "$target"
done

mkdir -p fuzz/target/logs "$(dirname "$SUMMARY")"
printf 'target\texecutions\texec/s\tcorpus\tresult\n' >"$SUMMARY"
failed=()
total=0
for target in $TARGETS; do
  mkdir -p "fuzz/work/$target" "fuzz/artifacts/$target"
  log=fuzz/target/logs/$target.log
  echo "== $target (${SECONDS_PER_TARGET}s)"
  # New inputs go to fuzz/work/<target> (ignored by git); the committed seeds stay as they are.
  # shellcheck disable=SC2046
  if cargo $TOOLCHAIN fuzz run --fuzz-dir fuzz $(build_args "$target") "$target" \
    "fuzz/work/$target" "fuzz/corpus/$target" -- \
    $(run_args "$target") -max_total_time="$SECONDS_PER_TARGET" \
    >"$log" 2>&1; then
    result=ok
  else
    result=CRASH
    failed+=("$target")
    grep -m1 -A4 -E "panicked at|ERROR: libFuzzer" "$log" || true
    grep -E "Test unit written to" "$log" || true
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
  execs=${execs:-0}
  corpus=$(find "fuzz/work/$target" -type f | wc -l)
  rate=$((execs / (SECONDS_PER_TARGET > 0 ? SECONDS_PER_TARGET : 1)))
  total=$((total + execs))
  printf '%s\t%s\t%s\t%s\t%s\n' "$target" "$execs" "$rate" "$corpus" "$result" >>"$SUMMARY"
done
printf 'total\t%s\t\t\t%s\n' "$total" "$([ ${#failed[@]} -eq 0 ] && echo ok || echo CRASH)" >>"$SUMMARY"

echo
column -t -s $'\t' "$SUMMARY"
if [ ${#failed[@]} -gt 0 ]; then
  echo "crashes in: ${failed[*]} (inputs in fuzz/artifacts/, logs in fuzz/target/logs/)"
  exit 1
fi
