#!/usr/bin/env bash
# Bookinfo in a box: productpage, details and reviews behind a Keycloak look-alike, with mesh-oidc
# in one Envoy playing the mesh (envoy/demo.yaml). `make demo` runs it after `make setup build`.
#
#   scripts/demo.sh          start everything, print the URL, stop everything on Ctrl-C
#   DEMO_DETACH=1 scripts/demo.sh
#                            start everything, print the URL, write the PIDs to tests/out/demo/pids
#                            and exit (the processes keep running)
#   scripts/demo.sh stop     stop what a detached demo started (the PIDs in tests/out/demo/pids)
#   scripts/demo.sh render   only write the Envoy config (tests/out/demo/envoy.yaml, ports and
#                            module path as below, a fresh session secret) and print its path
#
# What runs (all on 127.0.0.1):
#   8180  the OpenID provider (tests/provider/keycloak.mjs: realm dev, Keycloak's paths)
#   9000  productpage   9001 details   9002 reviews          (demo/*.py, Python standard library)
#   8000  productpage's sidecar (login)   9081 details' sidecar (validate)
#   9082  reviews' sidecar (validate)     9901 Envoy admin
#   15001 productpage's sidecar, outbound: productpage calls http://details:9080 and
#         http://reviews:9080 through it (as its HTTP proxy, the way Istio's iptables rules send a
#         pod's calls to its sidecar); the same login filter notes the 401s they answer
#
# Optional environment:
#   DEMO_ACCESS_TOKEN_TTL   access-token lifetime in seconds (default 60, so a refresh shows soon)
#   DEMO_ON_REFUSAL         what productpage answers when details or reviews refuse the token:
#                           200 (default: a page saying "Error fetching product details", as
#                           Istio's real Bookinfo productpage does) or 401 (the seed's way)
#   DEMO_KEYS_FILE          the provider's private key set ({"keys":[enc key, signing key(s)]});
#                           generated at start when unset
#   MESH_OIDC_WASM          the module (default target/wasm32-wasip1/release/mesh_oidc.wasm)
#   ENVOY_BIN               default .venv/bin/envoy
#   PYTHON, NODE            default python3, node
#   DEMO_OUT                where logs, the rendered Envoy config and the PIDs go (default tests/out/demo)
#   DEMO_PRODUCTPAGE_PORT, DEMO_DETAILS_PORT, DEMO_REVIEWS_PORT, DEMO_OUTBOUND_PORT, DEMO_ADMIN_PORT
#                           Envoy's listeners (default 8000, 9081, 9082, 15001) and admin (9901)
#   DEMO_PROVIDER_PORT      the provider (default 8180)
#   DEMO_PRODUCTPAGE_APP_PORT, DEMO_DETAILS_APP_PORT, DEMO_REVIEWS_APP_PORT
#                           the applications (default 9000, 9001, 9002)
#                           (the end-to-end test runs the demo on free ports with these)
#
# Logs: tests/out/demo/{provider,productpage,details,reviews,envoy}.log (DEMO_OUT)

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

OUT="${DEMO_OUT:-$ROOT/tests/out/demo}"
PIDS="$OUT/pids"
ENVOY_BIN="${ENVOY_BIN:-$ROOT/.venv/bin/envoy}"
WASM="${MESH_OIDC_WASM:-$ROOT/target/wasm32-wasip1/release/mesh_oidc.wasm}"
PYTHON="${PYTHON:-python3}"
NODE="${NODE:-node}"
TTL="${DEMO_ACCESS_TOKEN_TTL:-60}"
TEMPLATE="$ROOT/envoy/demo.yaml"
WASM_IN_TEMPLATE="target/wasm32-wasip1/release/mesh_oidc.wasm"

PROVIDER_PORT="${DEMO_PROVIDER_PORT:-8180}"
PRODUCTPAGE_PORT="${DEMO_PRODUCTPAGE_APP_PORT:-9000}"
DETAILS_PORT="${DEMO_DETAILS_APP_PORT:-9001}"
REVIEWS_PORT="${DEMO_REVIEWS_APP_PORT:-9002}"
PP_SIDECAR="${DEMO_PRODUCTPAGE_PORT:-8000}"
DETAILS_SIDECAR="${DEMO_DETAILS_PORT:-9081}"
REVIEWS_SIDECAR="${DEMO_REVIEWS_PORT:-9082}"
OUTBOUND_PORT="${DEMO_OUTBOUND_PORT:-15001}"
ADMIN_PORT="${DEMO_ADMIN_PORT:-9901}"
ENVOY_PORTS=("$PP_SIDECAR" "$DETAILS_SIDECAR" "$REVIEWS_SIDECAR" "$OUTBOUND_PORT" "$ADMIN_PORT")
ON_REFUSAL="${DEMO_ON_REFUSAL:-200}"
# The session secret of the template (public): it must not survive the rendering.
TEMPLATE_SECRET="e/QnR+D/i52tvcoustxlJD3dAsAPPqTdLeD1twa1huw="
PP="http://127.0.0.1:$PP_SIDECAR"
URL="$PP/productpage"

say() { printf '%s\n' "$*"; }
err() { printf 'demo: %s\n' "$*" >&2; }

# ---------------------------------------------------------------------------------------------
# processes

# What each name's command line must contain, so that `stop` never kills a reused PID.
pattern_for() {
  case "$1" in
    provider) echo "keycloak.mjs" ;;
    productpage) echo "productpage.py" ;;
    details) echo "details.py" ;;
    reviews) echo "reviews.py" ;;
    envoy) echo "envoy" ;;
    *) echo "$1" ;;
  esac
}

# Is PID alive and still the process we started as NAME?
ours() {
  local pid="$1" name="$2" cmd
  kill -0 "$pid" 2>/dev/null || return 1
  cmd="$(ps -p "$pid" -o args= 2>/dev/null || true)"
  [[ -z "$cmd" || "$cmd" == *"$(pattern_for "$name")"* ]]
}

# Stop "pid name" lines (in the order given): SIGTERM, then SIGKILL after 5 s.
stop_list() {
  local line pid name left deadline
  local -a live=()
  for line in "$@"; do
    pid="${line%% *}"
    name="${line#* }"
    if ours "$pid" "$name"; then
      kill -TERM "$pid" 2>/dev/null || true
      live+=("$line")
    fi
  done
  deadline=$((SECONDS + 5))
  while ((${#live[@]} > 0)); do
    left=()
    for line in "${live[@]}"; do
      pid="${line%% *}"
      if kill -0 "$pid" 2>/dev/null; then left+=("$line"); fi
    done
    live=("${left[@]+"${left[@]}"}")
    ((${#live[@]} == 0)) && break
    if ((SECONDS >= deadline)); then
      for line in "${live[@]}"; do
        pid="${line%% *}"
        name="${line#* }"
        err "$name (pid $pid) did not stop; killing it"
        kill -KILL "$pid" 2>/dev/null || true
      done
      break
    fi
    sleep 0.1
  done
}

# The PIDs file, last started first.
pids_reversed() {
  [[ -f "$PIDS" ]] || return 0
  local -a lines=()
  mapfile -t lines <"$PIDS"
  local i
  for ((i = ${#lines[@]} - 1; i >= 0; i--)); do
    [[ -n "${lines[i]}" ]] && printf '%s\n' "${lines[i]}"
  done
}

stop_from_file() {
  if [[ ! -f "$PIDS" ]]; then
    say "demo: nothing to stop (no $PIDS)"
    return 0
  fi
  local -a lines=()
  mapfile -t lines < <(pids_reversed)
  if ((${#lines[@]} > 0)); then stop_list "${lines[@]}"; fi
  rm -f "$PIDS"
  say "demo: stopped"
}

# ---------------------------------------------------------------------------------------------
# HTTP without curl: the status code of GET http://127.0.0.1:PORT/PATH (empty when no answer).
# PATH may be an absolute URL (http://details:9080/details/0): PORT is then used as the proxy.

http_status() {
  local port="$1" path="$2" host="127.0.0.1:$1"
  if [[ "$path" == http://* ]]; then
    host="${path#http://}"
    host="${host%%/*}"
  fi
  (
    exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
    printf 'GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$path" "$host" >&3
    IFS= read -r -t 3 line <&3 || exit 1
    # read the rest too, so that the server never writes to a closed connection
    while IFS= read -r -t 3 _ <&3; do :; done
    line="${line%$'\r'}"
    set -- $line
    printf '%s' "${2:-}"
  ) 2>/dev/null || true
}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Wait until GET PORT/PATH answers STATUS, while PID stays alive.
wait_for() {
  local name="$1" pid="$2" port="$3" path="$4" want="$5" timeout="${6:-30}" got
  local deadline=$((SECONDS + timeout))
  while :; do
    if ! kill -0 "$pid" 2>/dev/null; then
      err "$name exited during start-up; the end of $OUT/$name.log:"
      tail -n 30 "$OUT/$name.log" >&2 || true
      return 1
    fi
    got="$(http_status "$port" "$path")"
    [[ "$got" == "$want" ]] && return 0
    if ((SECONDS >= deadline)); then
      local where="127.0.0.1:$port$path"
      [[ "$path" == http://* ]] && where="$path through 127.0.0.1:$port"
      err "$name did not answer $want on $where within ${timeout}s (last: ${got:-no answer}); the end of $OUT/$name.log:"
      tail -n 30 "$OUT/$name.log" >&2 || true
      return 1
    fi
    sleep 0.2
  done
}

# The Envoy config: the template with the module's absolute path (and the ports, when changed),
# and a fresh session secret (the template's is public).
render_config() {
  SESSION_SECRET=$(python3 -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())')
  {
    printf '# Rendered by scripts/demo.sh from envoy/demo.yaml: do not edit.\n'
    sed -E \
      -e "s#filename: $WASM_IN_TEMPLATE#filename: $WASM#" \
      -e "s#(port_value: )8000([^0-9])#\\1$PP_SIDECAR\\2#" \
      -e "s#(port_value: )9081([^0-9])#\\1$DETAILS_SIDECAR\\2#" \
      -e "s#(port_value: )9082([^0-9])#\\1$REVIEWS_SIDECAR\\2#" \
      -e "s#(port_value: )15001([^0-9])#\\1$OUTBOUND_PORT\\2#" \
      -e "s#(port_value: )9901([^0-9])#\\1$ADMIN_PORT\\2#" \
      -e "s#(port_value: )9000([^0-9])#\\1$PRODUCTPAGE_PORT\\2#" \
      -e "s#(port_value: )9001([^0-9])#\\1$DETAILS_PORT\\2#" \
      -e "s#(port_value: )9002([^0-9])#\\1$REVIEWS_PORT\\2#" \
      -e "s#(port_value: )8180([^0-9])#\\1$PROVIDER_PORT\\2#" \
      -e "s#http://127\\.0\\.0\\.1:8180([^0-9])#http://127.0.0.1:$PROVIDER_PORT\\1#g" \
      -e "s#\"session_secret\": \"[A-Za-z0-9+/=]*\"#\"session_secret\": \"$SESSION_SECRET\"#" \
      "$TEMPLATE"
  } >"$OUT/envoy.yaml"
  for want in "filename: $WASM" "port_value: $PP_SIDECAR " "port_value: $DETAILS_SIDECAR " "port_value: $REVIEWS_SIDECAR " \
    "port_value: $OUTBOUND_PORT " "port_value: $ADMIN_PORT " "port_value: $PRODUCTPAGE_PORT " "port_value: $DETAILS_PORT " \
    "port_value: $REVIEWS_PORT " "port_value: $PROVIDER_PORT " "\"public_url\": \"http://127.0.0.1:$PROVIDER_PORT\"" \
    "\"session_secret\": \"$SESSION_SECRET\""; do
    grep -qF "$want" "$OUT/envoy.yaml" || { err "could not render $OUT/envoy.yaml ($want)"; exit 1; }
  done
  # productpage's inbound and outbound listeners run the same filter: both got the new secret
  if [[ "$(grep -cF "\"session_secret\": \"$SESSION_SECRET\"" "$OUT/envoy.yaml")" != 2 ]]; then
    err "could not render $OUT/envoy.yaml (productpage's two filters, inbound and outbound, should hold the session secret)"
    exit 1
  fi
  if grep -qF "$TEMPLATE_SECRET" "$OUT/envoy.yaml"; then
    err "could not render $OUT/envoy.yaml (the template's public session secret is still in it)"
    exit 1
  fi
}

STARTED=()
KEEP_RUNNING=0

# start NAME COMMAND...: run in the background, output to tests/out/demo/NAME.log
start() {
  local name="$1"
  shift
  "$@" >"$OUT/$name.log" 2>&1 </dev/null &
  local pid=$!
  STARTED+=("$pid $name")
  printf '%s %s\n' "$pid" "$name" >>"$PIDS"
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if ((KEEP_RUNNING == 0 && ${#STARTED[@]} > 0)); then
    say ""
    say "demo: stopping..."
    local -a rev=()
    local i
    for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do rev+=("${STARTED[i]}"); done
    stop_list "${rev[@]}"
    rm -f "$PIDS"
    say "demo: stopped (logs in $OUT)"
  fi
  exit "$rc"
}

# ---------------------------------------------------------------------------------------------

case "${1:-}" in
  stop)
    stop_from_file
    exit 0
    ;;
  "" | start) ;;
  render)
    mkdir -p "$OUT"
    render_config
    say "$OUT/envoy.yaml"
    exit 0
    ;;
  -h | --help | help)
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit 0
    ;;
  *)
    err "unknown command: $1 (use: scripts/demo.sh [start|stop|render])"
    exit 2
    ;;
esac

# prerequisites
missing=0
[[ -x "$ENVOY_BIN" ]] || { err "no Envoy at $ENVOY_BIN (run: make setup)"; missing=1; }
[[ -f "$WASM" ]] || { err "no module at $WASM (run: make build)"; missing=1; }
[[ -d "$ROOT/tests/node_modules/oidc-provider" ]] || { err "the test provider's packages are missing (run: make setup)"; missing=1; }
command -v "$NODE" >/dev/null || { err "node not found"; missing=1; }
command -v "$PYTHON" >/dev/null || { err "$PYTHON not found"; missing=1; }
((missing == 0)) || exit 1

mkdir -p "$OUT"
if [[ -f "$PIDS" ]]; then
  while read -r pid name; do
    [[ -n "${pid:-}" ]] || continue
    if ours "$pid" "$name"; then
      err "a demo is already running ($name, pid $pid); stop it with: scripts/demo.sh stop"
      exit 1
    fi
  done <"$PIDS"
  rm -f "$PIDS"
fi
busy=()
for port in "$PROVIDER_PORT" "$PRODUCTPAGE_PORT" "$DETAILS_PORT" "$REVIEWS_PORT" "${ENVOY_PORTS[@]}"; do
  if listening "$port"; then busy+=("$port"); fi
done
if ((${#busy[@]} > 0)); then
  err "port(s) already in use on 127.0.0.1: ${busy[*]}"
  exit 1
fi

rm -f "$OUT"/*.log "$OUT/envoy.yaml"
: >"$PIDS"
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The Envoy config, now that the preparations are done.
render_config

say "demo: starting the OpenID provider (Keycloak look-alike, realm dev) on 127.0.0.1:$PROVIDER_PORT"
provider_env=(
  PORT="$PROVIDER_PORT"
  REALM=dev
  ACCESS_TOKEN_TTL="$TTL"
  REDIRECT_URIS="$PP/callback"
  POST_LOGOUT_REDIRECT_URIS="$PP/"
  CLIENT_SECRET=productpage-secret
)
if [[ -n "${DEMO_KEYS_FILE:-}" ]]; then provider_env+=(KEYS_FILE="$DEMO_KEYS_FILE"); fi
start provider env "${provider_env[@]}" "$NODE" "$ROOT/tests/provider/keycloak.mjs"

say "demo: starting productpage, details and reviews"
start details env PORT="$DETAILS_PORT" PYTHONUNBUFFERED=1 "$PYTHON" "$ROOT/demo/details.py"
start reviews env PORT="$REVIEWS_PORT" PYTHONUNBUFFERED=1 "$PYTHON" "$ROOT/demo/reviews.py"
# productpage calls details and reviews by their Bookinfo names, through its sidecar's outbound
# listener (its HTTP proxy here; iptables in a pod).
start productpage env PORT="$PRODUCTPAGE_PORT" PYTHONUNBUFFERED=1 ON_REFUSAL="$ON_REFUSAL" \
  OUTBOUND_PROXY="http://127.0.0.1:$OUTBOUND_PORT" \
  DETAILS_URL="http://details:9080/details/0" REVIEWS_URL="http://reviews:9080/reviews/0" \
  "$PYTHON" "$ROOT/demo/productpage.py"

for entry in "${STARTED[@]}"; do
  pid="${entry%% *}"
  name="${entry#* }"
  case "$name" in
    provider) wait_for provider "$pid" "$PROVIDER_PORT" /realms/dev/.well-known/openid-configuration 200 ;;
    productpage) wait_for productpage "$pid" "$PRODUCTPAGE_PORT" /healthz 200 ;;
    details) wait_for details "$pid" "$DETAILS_PORT" /healthz 200 ;;
    reviews) wait_for reviews "$pid" "$REVIEWS_PORT" /healthz 200 ;;
  esac
done

say "demo: starting Envoy (productpage's, details' and reviews' sidecars)"
# (the access log reaches envoy.log within half a second, not Envoy's default 10 s)
start envoy "$ENVOY_BIN" -c "$OUT/envoy.yaml" --concurrency 2 --disable-hot-restart --log-level info \
  --file-flush-interval-msec 500
envoy_pid="${STARTED[${#STARTED[@]} - 1]%% *}"
wait_for envoy "$envoy_pid" "$ADMIN_PORT" /ready 200 60
# the sidecars are up when a request without a token is refused (details, reviews) or sent to
# log in (productpage)
wait_for envoy "$envoy_pid" "$DETAILS_SIDECAR" /details/0 401
wait_for envoy "$envoy_pid" "$REVIEWS_SIDECAR" /reviews/0 401
wait_for envoy "$envoy_pid" "$PP_SIDECAR" /productpage 302
# and productpage's outbound listener reaches details' sidecar by its Bookinfo name
wait_for envoy "$envoy_pid" "$OUTBOUND_PORT" http://details:9080/details/0 401

cat <<EOF

  Bookinfo with mesh-oidc is up.

    open      $URL
    log in    alice / alice-password      (or bob / bob-password)
    log out   $PP/logout

  The access token lives ${TTL} s: reload the page after that and the sidecar refreshes it
  (the expiry time on the page moves on).

    details, reviews (tokens only)   http://127.0.0.1:$DETAILS_SIDECAR/details/0   http://127.0.0.1:$REVIEWS_SIDECAR/reviews/0
    productpage's outbound listener  http://127.0.0.1:$OUTBOUND_PORT (productpage's HTTP proxy to http://details:9080, http://reviews:9080)
    the provider                     http://127.0.0.1:$PROVIDER_PORT/realms/dev/.well-known/openid-configuration
    Envoy admin                      http://127.0.0.1:$ADMIN_PORT/
    logs                             $OUT/*.log

EOF

if [[ "${DEMO_DETACH:-}" == "1" ]]; then
  KEEP_RUNNING=1
  say "  Running in the background (PIDs in $PIDS). Stop with: scripts/demo.sh stop"
  exit 0
fi

say "  Press Ctrl-C to stop."
# Stay in the foreground until Ctrl-C, or until one of the processes exits.
while :; do
  for entry in "${STARTED[@]}"; do
    pid="${entry%% *}"
    name="${entry#* }"
    if ! kill -0 "$pid" 2>/dev/null; then
      err "$name (pid $pid) exited; the end of $OUT/$name.log:"
      tail -n 20 "$OUT/$name.log" >&2 || true
      exit 1
    fi
  done
  sleep 1
done
