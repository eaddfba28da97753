#!/usr/bin/env python3
"""mesh-oidc benchmark: Envoy + filter under wrk, interleaved repetitions, one report.

Started by bench/run.sh (which checks the tools, builds the no-op filter and makes the tokens).
Python 3 standard library only. Everything listens on 127.0.0.1.

Layout of one run:

    wrk (CPU 0) ──> proxy Envoy under test (CPU 1, --concurrency 1) ──> upstream (CPU 0)
                    mesh-oidc ──> cluster "jwks" ──> the same upstream (the key set)

The upstream is bench/upstream (native, std-only Rust; BENCH_UPSTREAM=envoy: a second Envoy's
direct_response instead).

For each repetition, for each scenario (A B C … A B C …): start the proxy, time it to the first
correct answer, check the scenario answers right (a misconfigured scenario fails the run), warm up,
then one measured wrk run with the proxy's CPU time read from /proc before and after.
"""

import base64
import hashlib
import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def env_int(name, default, minimum=1):
    raw = os.environ.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        die(f"{name}={raw!r} is not an integer")
    if value < minimum:
        die(f"{name}={value} is below {minimum}")
    return value


def die(msg):
    print(f"bench: error: {msg}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def log(msg):
    print(f"bench: {msg}", flush=True)


SCENARIOS = [
    "baseline",
    "jwt_authn",
    "jwt_authn_cached",
    "noop_wasm",
    "cached_wasm",
    "cached_all_wasm",
    "validate_bearer",
    "validate_cookie",
    "validate_introspect",
    "login_floor_wasm",
    "login_session",
    "validate_cold",
]

# The wasm peers of `bench/noop`: the floors mesh-oidc's scenarios are compared with.
NOOP_SCENARIOS = ("noop_wasm", "cached_wasm", "cached_all_wasm", "login_floor_wasm")

DESCRIPTIONS = {
    "baseline": "no filter: Envoy proxying to the upstream",
    "jwt_authn": "Envoy's native `jwt_authn`, RS256 key inline (`local_jwks`), no JWT cache (Istio's default)",
    "jwt_authn_cached": "the same with `jwt_cache_config` (`jwt_cache_size: 100`)",
    "noop_wasm": "a proxy-wasm filter that returns Continue (`bench/noop`): the floor of any wasm filter",
    "cached_wasm": "a minimal cached JWT filter (`bench/noop` configured `cached`): reads `Authorization`, looks "
                   "its hash up in a map of verified tokens, reads the clock, continues; the floor of any cached "
                   "JWT check in wasm",
    "cached_all_wasm": "the same minimal cached filter (`bench/noop` configured `cached-all`), but it reads the "
                       "whole header map instead of one header, as removing a claim header in every spelling "
                       "(B3) and reading every `Authorization` header and cookie (B6) need: the floor of "
                       "`validate_bearer`",
    "login_floor_wasm": "the header work login mode must do for a logged-in browser and nothing else "
                        "(`bench/noop` configured `login-floor`), the `login_session` request: the whole header "
                        "map, the `access_token` cookie looked up as `cached_wasm` does, `Authorization: Bearer` "
                        "set (L4), `Cookie` rewritten without the sealed cookie (B6), `x-user` set, the "
                        "response's `:status` read (L7): the floor of `login_session`",
    "validate_bearer": "mesh-oidc validate mode, the same valid token in `Authorization: Bearer` (warm path)",
    "validate_cookie": "mesh-oidc validate mode, the same valid token in the `access_token` cookie",
    "validate_introspect": "mesh-oidc validate mode with introspection on (`cache_seconds: 3600`), the same valid token "
                           "in `Authorization: Bearer`: after the local checks, the provider's answer comes from the "
                           "shared-data cache (warm; no introspection call during the run)",
    "login_session": "mesh-oidc login mode with a valid session (`access_token` cookie, plus the sealed "
                     "`access_token_session` cookie a real login writes: ID and refresh token, JWE A256KW + A256GCM, "
                     "sealed with the run's `session_secret` by `bench/seal-session.mjs`): adds `Authorization`, "
                     "strips the sealed cookie",
    "validate_cold": "mesh-oidc validate mode, a different valid token on every request (full RS256 verification each time)",
}

# ---------------------------------------------------------------------------------------------
# Settings

REPS = env_int("BENCH_REPS", 5)
SECONDS = env_int("BENCH_SECONDS", 8)
WARMUP = env_int("BENCH_WARMUP_SECONDS", 2, minimum=0)
CONNECTIONS = env_int("BENCH_CONNECTIONS", 16)
PROXY_CPU = os.environ.get("BENCH_PROXY_CPU", "1")
LOAD_CPU = os.environ.get("BENCH_LOAD_CPU", "0")
OUT = os.environ.get("BENCH_OUT", os.path.join(ROOT, "docs", "benchmarks.md"))
WORK = os.environ.get("BENCH_WORK", os.path.join(HERE, "out"))
ENVOY = os.environ.get("BENCH_ENVOY_BIN", "")
MESH_WASM = os.environ.get("BENCH_MESH_WASM", os.path.join(ROOT, "target", "wasm32-wasip1", "release", "mesh_oidc.wasm"))
NOOP_WASM = os.environ.get("BENCH_NOOP_WASM", os.path.join(HERE, "noop", "target", "wasm32-wasip1", "release", "noop_filter.wasm"))
TOKENS_DIR = os.environ.get("BENCH_TOKENS_DIR", os.path.join(WORK, "tokens"))
READY_TIMEOUT = env_int("BENCH_READY_TIMEOUT_MS", 30000) / 1000.0
# The upstream: "native" (bench/upstream, a small Rust HTTP/1.1 responder) or "envoy" (a second
# Envoy's direct_response; about twice the CPU per request of native, see the diagnostics table).
UPSTREAM = os.environ.get("BENCH_UPSTREAM", "native")
# BENCH_RELEASE_MEMORY=1: every proxy (the baseline too) returns its allocator's free pages to the
# system every half second (the bootstrap's `memory_allocator_manager`), as an operator can ask.
RELEASE_MEMORY = os.environ.get("BENCH_RELEASE_MEMORY", "") not in ("", "0")
UPSTREAM_BIN = os.environ.get("BENCH_UPSTREAM_BIN", os.path.join(HERE, "upstream", "target", "release", "bench-upstream"))

selected = os.environ.get("BENCH_SCENARIOS", "")
if selected.strip():
    chosen = [s.strip() for s in selected.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown:
        die(f"BENCH_SCENARIOS: unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}")
    RUN = [s for s in SCENARIOS if s in chosen]
else:
    RUN = list(SCENARIOS)

ISSUER = "https://sso.bench.local/realms/bench"
REALM_PATH = "/realms/bench/protocol/openid-connect"
INTROSPECT_PATH = f"{REALM_PATH}/token/introspect"
# The same body as bench/upstream serves.
UPSTREAM_BODY = json.dumps({
    "id": 0, "author": "William Shakespeare", "year": 1595, "type": "paperback", "pages": 200,
    "publisher": "PublisherA", "language": "English", "ISBN-10": "1234567890",
}, separators=(",", ":"))
BENCH_PATH = "/details/0"
CHECK_PATH = "/echo/details/0"  # the upstream echoes what it saw in response headers

CLK_TCK = os.sysconf("SC_CLK_TCK")

# ---------------------------------------------------------------------------------------------
# Processes: every one we start is tracked and stopped by its PID on exit.

PROCS = []


def spawn(args, log_path, cpu):
    with open(log_path, "ab") as logf:
        proc = subprocess.Popen(["taskset", "-c", str(cpu)] + args, stdout=logf, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    PROCS.append(proc)
    return proc


def stop(proc, grace=5.0):
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    if proc in PROCS:
        PROCS.remove(proc)


def cleanup():
    for proc in list(PROCS):
        stop(proc, grace=3.0)


def on_signal(signum, _frame):
    raise SystemExit(128 + signum)


# ---------------------------------------------------------------------------------------------
# Helpers

def free_ports(n):
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    fields = data[data.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime is field 14, stime field 15.
    return int(fields[11]) + int(fields[12])


def cpu_busy(cpus):
    """Busy ticks (everything but idle and iowait) of each CPU, from /proc/stat."""
    busy = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *vals = line.split()
            if name.startswith("cpu") and name[3:] in cpus:
                v = [int(x) for x in vals]
                busy[name[3:]] = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
    return busy


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


MIB = 1024.0 * 1024.0


def allocator_mib(admin_port):
    """Envoy's allocator (tcmalloc) from the admin interface's `/memory`: bytes in use by live
    allocations, and bytes it holds without handing them out (free pages and caches), in MiB."""
    status, _, body = http_get(admin_port, "/memory")
    if status != 200:
        raise CheckFailed(f"admin /memory answered {status}")
    m = {k: int(v) for k, v in json.loads(body).items()}
    held = m["heap_size"] - m["pageheap_unmapped"]
    return m["allocated"] / MIB, (held - m["allocated"]) / MIB


def http_get(port, path, headers=None, timeout=5.0, method="GET", body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        res = conn.getresponse()
        body = res.read()
        return res.status, {k.lower(): v for k, v in res.getheaders()}, body
    finally:
        conn.close()


def http_post(port, path, form, timeout=5.0):
    return http_get(port, path, {"content-type": "application/x-www-form-urlencoded"}, timeout, "POST", form)


def admin_stats(port, names):
    """Counter values by exact name (missing ones are 0)."""
    _, _, body = http_get(port, "/stats?usedonly")
    values = {}
    for line in body.decode().splitlines():
        name, _, value = line.partition(": ")
        if name in names:
            try:
                values[name] = int(value)
            except ValueError:
                pass
    return {n: values.get(n, 0) for n in names}


def envoy_version():
    out = subprocess.run([ENVOY, "--version"], capture_output=True, text=True, check=True).stdout
    m = re.search(r"/(\d+\.\d+\.\d+)/(\w+)/(\w+)/(\w+)", out)
    return f"{m.group(1)} ({m.group(3)}, {m.group(4)})" if m else out.strip()


def machine():
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": os.uname().release,
    }


def freeze(path, name):
    dest = os.path.join(WORK, name)
    shutil.copyfile(path, dest)
    return dest


def sha256_of(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def git_revision():
    try:
        rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return f"{rev}{' with uncommitted changes' if dirty else ''}"
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# ---------------------------------------------------------------------------------------------
# Envoy configurations (JSON; Envoy reads it by the .json extension)

def static_cluster(name, port):
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": "127.0.0.1", "port_value": port}}}}]}],
        },
    }


def hcm(stat_prefix, routes, filters, max_body=None):
    route_config = {
        "name": "routes",
        "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}],
    }
    if max_body:
        route_config["max_direct_response_body_size_bytes"] = max_body
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": stat_prefix,
            "codec_type": "HTTP1",
            "route_config": route_config,
            "http_filters": filters + [{
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            }],
        },
    }


def bootstrap(admin_port, listener_port, hcm_filter, clusters, node):
    return {
        "node": {"id": node, "cluster": node},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": "main",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": listener_port}},
                "filter_chains": [{"filters": [hcm_filter]}],
            }],
            "clusters": clusters,
        },
        **({"memory_allocator_manager": {"bytes_to_release": 1 << 30, "memory_release_interval": "0.5s"}}
           if RELEASE_MEMORY else {}),
    }


def helper_config(admin_port, port, jwks_text, introspection_text):
    """The upstream, the key-set server and the introspection endpoint: direct responses of a second Envoy."""
    echo = [{"header": {"key": f"x-echo-{h}", "value": f"%REQ({h})%"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
            for h in ("authorization", "cookie", "x-user")]
    mark = [{"header": {"key": "content-type", "value": "application/json"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
            {"header": {"key": "x-bench-upstream", "value": "1"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]
    routes = [
        {"match": {"path": f"{REALM_PATH}/certs"},
         "direct_response": {"status": 200, "body": {"inline_string": jwks_text}},
         "response_headers_to_add": mark},
        {"match": {"path": INTROSPECT_PATH},
         "direct_response": {"status": 200, "body": {"inline_string": introspection_text}},
         "response_headers_to_add": mark},
        {"match": {"prefix": "/echo/"},
         "direct_response": {"status": 200, "body": {"inline_string": UPSTREAM_BODY}},
         "response_headers_to_add": echo + mark},
        {"match": {"prefix": "/"},
         "direct_response": {"status": 200, "body": {"inline_string": UPSTREAM_BODY}},
         "response_headers_to_add": mark},
    ]
    return bootstrap(admin_port, port, hcm("upstream", routes, [], max_body=256 * 1024), [], "bench-upstream")


def wasm_filter(name, path, configuration):
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": name,
                "root_id": name,
                "vm_config": {
                    "vm_id": name,
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": path}},
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": json.dumps(configuration),
                },
                "fail_open": False,
            },
        },
    }


def jwt_authn_filter(jwks_text, cached):
    provider = {
        "issuer": ISSUER,
        "audiences": ["account"],
        "local_jwks": {"inline_string": jwks_text},
        "forward": True,
        "claim_to_headers": [{"header_name": "x-user", "claim_name": "preferred_username"}],
    }
    if cached:
        provider["jwt_cache_config"] = {"jwt_cache_size": 100}
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"bench": provider},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}],
        },
    }


def mesh_config(mode, helper_port, introspect=False):
    base = f"http://127.0.0.1:{helper_port}{REALM_PATH}"
    cfg = {
        "mode": mode,
        "oidc": {"issuer": ISSUER, "jwks_uri": f"{base}/certs"},
        "cluster": "jwks",
        "claims_to_headers": {"preferred_username": "x-user"},
    }
    if mode == "validate":
        cfg["authorized_parties"] = ["productpage"]
        if introspect:
            cfg["oidc"]["introspection_endpoint"] = f"http://127.0.0.1:{helper_port}{INTROSPECT_PATH}"
            cfg["introspection"] = {"enabled": True, "cache_seconds": 3600,
                                    "client_id": "productpage", "client_secret": "bench-client-secret"}
    else:
        cfg["oidc"]["authorization_endpoint"] = f"{ISSUER}/protocol/openid-connect/auth"
        cfg["oidc"]["token_endpoint"] = f"{base}/token"
        cfg["oidc"]["end_session_endpoint"] = f"{ISSUER}/protocol/openid-connect/logout"
        cfg["client_id"] = "productpage"
        cfg["client_secret"] = "bench-client-secret"
        cfg["session_secret"] = SESSION_SECRET
    return cfg


def proxy_config(scenario, admin_port, port, helper_port, jwks_text):
    filters = []
    if scenario in ("jwt_authn", "jwt_authn_cached"):
        filters.append(jwt_authn_filter(jwks_text, cached=scenario == "jwt_authn_cached"))
    elif scenario == "noop_wasm":
        filters.append(wasm_filter("noop", NOOP_WASM, {}))
    elif scenario == "cached_wasm":
        filters.append(wasm_filter("cached", NOOP_WASM, "cached"))
    elif scenario == "cached_all_wasm":
        filters.append(wasm_filter("cached", NOOP_WASM, "cached-all"))
    elif scenario == "login_floor_wasm":
        filters.append(wasm_filter("cached", NOOP_WASM, "login-floor"))
    elif scenario in ("validate_bearer", "validate_cookie", "validate_cold", "validate_introspect"):
        filters.append(wasm_filter("mesh-oidc", MESH_WASM,
                                   mesh_config("validate", helper_port, introspect=scenario == "validate_introspect")))
    elif scenario == "login_session":
        filters.append(wasm_filter("mesh-oidc", MESH_WASM, mesh_config("login", helper_port)))
    routes = [{"match": {"prefix": "/"}, "route": {"cluster": "upstream", "timeout": "15s"}}]
    return bootstrap(admin_port, port, hcm("bench", routes, filters),
                     [static_cluster("upstream", helper_port), static_cluster("jwks", helper_port)],
                     "bench-proxy")


def wasm_of(scenario):
    if scenario in NOOP_SCENARIOS:
        return NOOP_WASM
    if scenario.startswith("validate_") or scenario == "login_session":
        return MESH_WASM
    return None


# ---------------------------------------------------------------------------------------------
# Requests of each scenario and what counts as a correct answer

def tamper(token):
    """Same header and payload, one signature character changed: a forged token."""
    head, _, sig = token.rpartition(".")
    mid = len(sig) // 2
    swap = "A" if sig[mid] != "A" else "B"
    return f"{head}.{sig[:mid]}{swap}{sig[mid + 1:]}"


def _b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _filler(n, seed):
    out, block = b"", seed.encode()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return out[:n]


# login_session: the run's session_secret, and the sealed session cookie a real login writes with it
# (bench/seal-session.mjs, set in main): the filter opens it wherever it reads the session.
SESSION_SECRET = base64.b64encode(os.urandom(32)).decode()
SESSION_COOKIE = ""


def seal_session(id_token):
    out = subprocess.run(["node", os.path.join(HERE, "seal-session.mjs"), SESSION_SECRET, id_token],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


def credentials(scenario, token):
    """Headers that carry `token` the way the scenario sends it."""
    if scenario == "validate_cookie":
        return {"Cookie": f"theme=dark; access_token={token}"}
    if scenario in ("login_session", "login_floor_wasm"):
        return {"Cookie": f"theme=dark; access_token={token}; access_token_session={SESSION_COOKIE}"}
    return {"Authorization": f"Bearer {token}"}


def ready_answer(scenario, status, headers):
    """Is this the answer of a started, working proxy for the scenario's measured request?"""
    if status != 200 or headers.get("x-bench-upstream") != "1":
        return False
    if scenario in ("baseline", "noop_wasm", "cached_wasm", "cached_all_wasm"):
        return True
    return headers.get("x-echo-x-user") == "alice"


class CheckFailed(Exception):
    pass


def check_scenario(scenario, port, warm, cold):
    """A misconfigured scenario must fail the run, not produce numbers."""
    failures = []

    def expect(what, path, headers, want_status, want=None):
        status, hdrs, _ = http_get(port, path, headers)
        problems = []
        if status != want_status:
            problems.append(f"status {status}, want {want_status}")
        for key, value in (want or {}).items():
            got = hdrs.get(key)
            if got != value:
                shown = got if got is None or len(got) < 60 else got[:57] + "..."
                problems.append(f"{key}={shown!r}")
        if problems:
            failures.append(f"{what}: " + ", ".join(problems))

    creds = credentials(scenario, warm)
    expect("measured request", BENCH_PATH, creds, 200)
    if scenario in ("cached_wasm", "cached_all_wasm"):
        expect("request reaches the upstream with x-user", CHECK_PATH, creds, 200,
               {"x-echo-authorization": f"Bearer {warm}", "x-echo-x-user": "alice"})
        expect("no token: 401", CHECK_PATH, {}, 401)
    elif scenario == "login_floor_wasm":
        expect("request reaches the upstream as login mode sends it", CHECK_PATH, creds, 200,
               {"x-echo-authorization": f"Bearer {warm}", "x-echo-x-user": "alice",
                "x-echo-cookie": f"theme=dark; access_token={warm}"})
        expect("no token: 401", CHECK_PATH, {}, 401)
    elif scenario in ("baseline", "noop_wasm"):
        expect("request reaches the upstream", CHECK_PATH, creds, 200,
               {"x-echo-authorization": f"Bearer {warm}", "x-echo-x-user": None})
        expect("no token passes (no filter checks it)", CHECK_PATH, {}, 200)
    else:
        user = {"x-echo-x-user": "alice"}
        if scenario == "login_session":
            # L4: the filter adds the token as a bearer for the services behind it, and the service
            # never sees the filter's sealed cookies.
            user["x-echo-authorization"] = f"Bearer {warm}"
            user["x-echo-cookie"] = f"theme=dark; access_token={warm}"
        expect("valid token reaches the upstream with x-user", CHECK_PATH, creds, 200, user)
        if scenario == "validate_cold":
            expect("a second distinct token is valid", CHECK_PATH, credentials(scenario, cold), 200, user)
        if scenario == "login_session":
            page = {"Accept": "text/html"}
            expect("no session: 302 to log in", CHECK_PATH, page, 302)
            expect("forged token: 302 to log in", CHECK_PATH, {**page, **credentials(scenario, tamper(warm))}, 302)
            expect("no session, API request: 401", CHECK_PATH, {"Accept": "application/json"}, 401)
        else:
            expect("no token: 401", CHECK_PATH, {}, 401)
            expect("forged token: 401", CHECK_PATH, credentials(scenario, tamper(warm)), 401)
        expect("client-set x-user is not trusted", CHECK_PATH, {**creds, "x-user": "mallory"}, 200, user)
    if failures:
        raise CheckFailed(f"{scenario}: " + "; ".join(failures))


# ---------------------------------------------------------------------------------------------
# wrk

LAT_RE = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)


def to_ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(scenario, port, seconds, warm, tokens_file, start_index, out_path):
    url = f"http://127.0.0.1:{port}{BENCH_PATH}"
    args = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency",
            "--timeout", "5s"]
    if scenario == "validate_cold":
        args += ["-s", os.path.join(HERE, "cold.lua"), url, "--", tokens_file, str(start_index)]
    else:
        for k, v in credentials(scenario, warm).items():
            args += ["-H", f"{k}: {v}"]
        args.append(url)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    PROCS.append(proc)
    try:
        out, err = proc.communicate(timeout=seconds + 60)
    finally:
        stop(proc)
    # wrk's own CPU time: the only child reaped meanwhile (Envoys are reaped when they stop).
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    with open(out_path, "a") as f:
        f.write(f"$ wrk ... {url} ({scenario})\n{out}{err}\n")
    if proc.returncode != 0:
        raise CheckFailed(f"{scenario}: wrk failed ({proc.returncode}): {err.strip() or out.strip()}")
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m or not rps:
        raise CheckFailed(f"{scenario}: cannot parse wrk output:\n{out}")
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if errors and any(int(x) for x in errors.groups()):
        raise CheckFailed(f"{scenario}: wrk socket errors: {errors.group(0)}")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise CheckFailed(f"{scenario}: {non2xx.group(1)} responses were not 2xx/3xx")
    lat = {p: to_ms(v, u) for p, v, u in LAT_RE.findall(out)}
    if "50" not in lat or "99" not in lat:
        raise CheckFailed(f"{scenario}: no latency distribution in wrk output:\n{out}")
    return {"requests": int(m.group(1)), "rps": float(rps.group(1)), "p50": lat["50"], "p99": lat["99"],
            "wrk_cpu_s": wrk_cpu}


# ---------------------------------------------------------------------------------------------
# One scenario, one repetition

COUNTERS = ["http.bench.downstream_rq_2xx", "http.bench.downstream_rq_3xx", "http.bench.downstream_rq_4xx",
            "http.bench.downstream_rq_5xx", "cluster.upstream.upstream_rq_completed",
            "http.bench.jwt_authn.jwt_cache_hit", "http.bench.jwt_authn.jwt_cache_miss",
            "cluster.jwks.upstream_rq_completed"]


def start_envoy(config, name, cpu, admin_port):
    cfg_path = os.path.join(WORK, f"{name}.json")
    log_path = os.path.join(WORK, f"{name}.log")
    with open(cfg_path, "w") as f:
        json.dump(config, f, indent=1)
    with open(log_path, "w"):
        pass
    args = [ENVOY, "-c", cfg_path, "--concurrency", "1", "--disable-hot-restart", "--log-level", "warn"]
    t0 = time.monotonic()
    proc = spawn(args, log_path, cpu)
    return proc, t0, log_path


def tail(path, n=40):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def wait_ready(proc, t0, log_path, probe):
    """Poll until probe() says the proxy answers correctly; milliseconds from start."""
    deadline = t0 + READY_TIMEOUT
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CheckFailed(f"Envoy exited with {proc.returncode} before answering:\n{tail(log_path)}")
        try:
            ok, last = probe()
            if ok:
                return (time.monotonic() - t0) * 1000.0
        except (OSError, http.client.HTTPException) as e:
            last = repr(e)
        time.sleep(0.002)
    raise CheckFailed(f"no correct answer within {READY_TIMEOUT:.0f} s ({last}); log:\n{tail(log_path)}")


def run_one(scenario, rep, ports, warm, cold, tokens_file, jwks_text):
    helper_port, proxy_admin, proxy_port = ports["helper"], ports["proxy_admin"], ports["proxy"]
    name = f"proxy-{scenario}-r{rep}"
    config = proxy_config(scenario, proxy_admin, proxy_port, helper_port, jwks_text)
    proc, t0, log_path = start_envoy(config, name, PROXY_CPU, proxy_admin)
    try:
        creds = credentials(scenario, warm)

        def probe():
            status, headers, body = http_get(proxy_port, CHECK_PATH, creds, timeout=READY_TIMEOUT)
            seen = {k: v for k, v in headers.items() if k in ("x-bench-upstream", "x-echo-x-user", "www-authenticate")}
            return ready_answer(scenario, status, headers), f"last answer: {status} {seen} {body[:200]!r}"

        ready_ms = wait_ready(proc, t0, log_path, probe)
        check_scenario(scenario, proxy_port, warm, cold)
        wrk_log = os.path.join(WORK, f"{name}.wrk.txt")
        open(wrk_log, "w").close()
        start_index = 1
        if WARMUP:
            w = run_wrk(scenario, proxy_port, WARMUP, warm, tokens_file, start_index, wrk_log)
            start_index += w["requests"] + CONNECTIONS + 1
        before = admin_stats(proxy_admin, COUNTERS)
        helper_before = cpu_ticks(ports["helper_pid"])
        ticks_before = cpu_ticks(proc.pid)
        busy_before = cpu_busy((PROXY_CPU, LOAD_CPU))
        wall0 = time.monotonic()
        result = run_wrk(scenario, proxy_port, SECONDS, warm, tokens_file, start_index, wrk_log)
        wall = time.monotonic() - wall0
        ticks = cpu_ticks(proc.pid) - ticks_before
        helper_ticks = cpu_ticks(ports["helper_pid"]) - helper_before
        busy_after = cpu_busy((PROXY_CPU, LOAD_CPU))
        wall_ticks = wall * CLK_TCK
        # Time the proxy's CPU spent on anything but the proxy: other processes, steal.
        foreign_proxy_cpu = max(0.0, busy_after[PROXY_CPU] - busy_before[PROXY_CPU] - ticks) / wall_ticks
        load_ticks = helper_ticks + result["wrk_cpu_s"] * CLK_TCK
        foreign_load_cpu = max(0.0, busy_after[LOAD_CPU] - busy_before[LOAD_CPU] - load_ticks) / wall_ticks
        rss = rss_kib(proc.pid)
        heap_in_use, heap_kept = allocator_mib(proxy_admin)
        after = admin_stats(proxy_admin, COUNTERS)
        delta = {k: after[k] - before[k] for k in COUNTERS}
        if proc.poll() is not None:
            raise CheckFailed(f"{scenario}: Envoy exited during the run:\n{tail(log_path)}")
        bad = {k: v for k, v in delta.items() if re.search(r"_[345]xx$", k) and v}
        if bad:
            raise CheckFailed(f"{scenario}: non-2xx answers during the run: {bad}")
        if delta["http.bench.downstream_rq_2xx"] < result["requests"]:
            raise CheckFailed(f"{scenario}: wrk counted {result['requests']} requests, Envoy {delta}")
        if delta["cluster.upstream.upstream_rq_completed"] < result["requests"]:
            raise CheckFailed(f"{scenario}: not every request reached the upstream: {delta}")
        hits, misses = delta["http.bench.jwt_authn.jwt_cache_hit"], delta["http.bench.jwt_authn.jwt_cache_miss"]
        if scenario == "jwt_authn_cached" and hits < result["requests"] // 2:
            raise CheckFailed(f"{scenario}: the JWT cache is not used (hits {hits}, misses {misses})")
        if scenario == "jwt_authn" and hits:
            raise CheckFailed(f"{scenario}: a JWT cache is in use (hits {hits})")
        if scenario == "validate_introspect" and delta["cluster.jwks.upstream_rq_completed"]:
            raise CheckFailed(f"{scenario}: the introspection cache is not warm: "
                              f"{delta['cluster.jwks.upstream_rq_completed']} calls to the provider during the run")
        cpu_s = ticks / CLK_TCK
        result.update({
            "cpu_us": cpu_s * 1e6 / result["requests"],
            "busy": 100.0 * cpu_s / wall,
            "upstream_cpu_us": (helper_ticks / CLK_TCK) * 1e6 / result["requests"],
            "load_cpu_us": (load_ticks / CLK_TCK) * 1e6 / result["requests"],
            "foreign_proxy_cpu": 100.0 * foreign_proxy_cpu,
            "foreign_load_cpu": 100.0 * foreign_load_cpu,
            "rss_mib": rss / 1024.0,
            "heap_in_use_mib": heap_in_use,
            "heap_kept_mib": heap_kept,
            "ready_ms": ready_ms,
            "cache_hits": delta["http.bench.jwt_authn.jwt_cache_hit"],
            "cache_misses": delta["http.bench.jwt_authn.jwt_cache_miss"],
        })
        wasm = wasm_of(scenario)
        result["wasm_kib"] = os.path.getsize(wasm) / 1024.0 if wasm else None
        return result
    finally:
        stop(proc)


# ---------------------------------------------------------------------------------------------
# Report

def stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return statistics.median(values), min(values), max(values)


def fmt_num(v, digits):
    if digits == 0:
        return f"{v:,.0f}".replace(",", " ")
    return f"{v:.{digits}f}"


def cell(values, digits, exact=False):
    s = stats(values)
    if s is None:
        return "—"
    med, lo, hi = s
    if exact or len(values) == 1 or fmt_num(lo, digits) == fmt_num(hi, digits):
        return fmt_num(med, digits)
    return f"{fmt_num(med, digits)} ({fmt_num(lo, digits)}–{fmt_num(hi, digits)})"


def report(results, meta):
    lines = []
    add = lines.append
    add("# Benchmarks")
    add("")
    add("Generated by `make bench` (`bench/run.sh`); do not edit by hand.")
    add("")
    add(f"- date: {meta['date']}")
    add(f"- Envoy: {meta['envoy']}, V8 wasm runtime, `--concurrency 1`, pinned to CPU {PROXY_CPU}")
    add(f"- machine: {meta['machine']['nproc']} CPUs, {meta['machine']['cpu']}, Linux {meta['machine']['kernel']}; "
        f"load average {meta['load_start']} at start, {meta['load_end']} at end")
    if UPSTREAM == "envoy":
        upstream = (f"a second Envoy (`--concurrency 1`, `direct_response` of a {len(UPSTREAM_BODY)}-byte JSON body)")
    else:
        upstream = (f"`bench/upstream` (a small native HTTP/1.1 keep-alive responder, a {len(UPSTREAM_BODY)}-byte "
                    "JSON body)")
    add(f"- load: `wrk -t1 -c{CONNECTIONS}` pinned to CPU {LOAD_CPU}; upstream: {upstream}, also on CPU {LOAD_CPU}; "
        "it also serves the key set")
    add(f"- {REPS} interleaved repetitions × {SECONDS} s per scenario (after {WARMUP} s of warm-up on a fresh Envoy); "
        f"every request carries a {meta['token_bytes']}-byte RS256 token (2048-bit key)")
    if RELEASE_MEMORY:
        add("- `BENCH_RELEASE_MEMORY=1`: every proxy returns its allocator's free pages to the system every 0.5 s "
            "(`memory_allocator_manager` in the bootstrap)")
    size = f"{os.path.getsize(MESH_WASM):,}".replace(",", " ")
    add(f"- mesh-oidc: `{meta['mesh_wasm']}`, {size} bytes, sha256 `{meta['mesh_sha256'][:16]}…`, "
        f"tree at commit {meta['git']}")
    add("")
    add("Each cell: the median over the repetitions, then the noise (min–max) in parentheses.")
    add("")
    add("| scenario | req/s | × baseline | p50 ms | p99 ms | proxy CPU µs/req | Δ CPU µs/req vs baseline | RSS MiB | start → first correct answer ms | .wasm KiB |")
    add("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for s in RUN:
        rs = results[s]
        ratio = [r["rps"] / results["baseline"][i]["rps"] for i, r in enumerate(rs)] if "baseline" in results else []
        dcpu = [r["cpu_us"] - results["baseline"][i]["cpu_us"] for i, r in enumerate(rs)] if "baseline" in results else []
        add("| " + " | ".join([
            f"`{s}`",
            cell([r["rps"] for r in rs], 0),
            cell(ratio, 2) if ratio else "—",
            cell([r["p50"] for r in rs], 2),
            cell([r["p99"] for r in rs], 2),
            cell([r["cpu_us"] for r in rs], 1),
            cell(dcpu, 1) if dcpu and s != "baseline" else "—",
            cell([r["rss_mib"] for r in rs], 1),
            cell([r["ready_ms"] for r in rs], 0),
            cell([r["wasm_kib"] for r in rs], 0, exact=True),
        ]) + " |")
    add("")
    if "validate_cold" in results and "validate_bearer" in results:
        cold = [c["cpu_us"] - b["cpu_us"] for c, b in zip(results["validate_cold"], results["validate_bearer"])]
        lat = [1e6 / c["rps"] - 1e6 / b["rps"] for c, b in zip(results["validate_cold"], results["validate_bearer"])]
        add("## Cold RS256 verification inside the wasm VM")
        add("")
        add("`validate_cold` minus `validate_bearer`, per repetition: what a token the filter has not seen "
            "before costs (signature check with a 2048-bit RSA key, claims parsing and checks, the cache insert).")
        add("")
        add(f"- proxy CPU per cold token: **{cell(cold, 1)} µs**")
        add(f"- from throughput (1/req/s difference): {cell(lat, 1)} µs")
        if "jwt_authn" in results and "jwt_authn_cached" in results:
            native = [u["cpu_us"] - c["cpu_us"] for u, c in zip(results["jwt_authn"], results["jwt_authn_cached"])]
            add(f"- for comparison, native code (`jwt_authn` minus `jwt_authn_cached`, BoringSSL): {cell(native, 1)} µs")
        add("")
    if "validate_introspect" in results and "validate_bearer" in results:
        warm = [i["cpu_us"] - b["cpu_us"] for i, b in zip(results["validate_introspect"], results["validate_bearer"])]
        lat = [1e6 / i["rps"] - 1e6 / b["rps"] for i, b in zip(results["validate_introspect"], results["validate_bearer"])]
        add("## Introspection on a warm cache")
        add("")
        add("`validate_introspect` minus `validate_bearer`, per repetition: what introspection (V3) adds to a "
            "request whose token's answer is cached (hashing the token, reading its slot from shared data, parsing "
            "the cached answer; no call to the provider during the run). A cold answer adds one introspection call per token and `cache_seconds`.")
        add("")
        add(f"- proxy CPU per request: **{cell(warm, 1)} µs**")
        add(f"- from throughput (1/req/s difference): {cell(lat, 1)} µs")
        add("")
    base = results.get("baseline")
    if base and all("heap_in_use_mib" in r for s in RUN for r in results[s]):
        add("## Memory")
        add("")
        add("Each proxy's memory at the end of its measured run: the resident set (RSS), and what Envoy's allocator "
            "(tcmalloc, the admin interface's `/memory`) says of its share: bytes in live allocations, and bytes "
            "it keeps without handing them out (free pages and per-thread caches, never returned to the system "
            "unless the bootstrap's `memory_allocator_manager` asks for it). V8 allocates through it; the wasm "
            "linear memories and the compiled code are mapped apart. Over no filter, per repetition:")
        add("")
        add("| scenario | RSS MiB | allocator in use MiB | allocator kept, free MiB |")
        add("| --- | ---: | ---: | ---: |")
        for s in RUN:
            if s == "baseline":
                continue
            rs = results[s]
            add("| " + " | ".join([
                f"`{s}`",
                cell([r["rss_mib"] - base[i]["rss_mib"] for i, r in enumerate(rs)], 1),
                cell([r["heap_in_use_mib"] - base[i]["heap_in_use_mib"] for i, r in enumerate(rs)], 1),
                cell([r["heap_kept_mib"] - base[i]["heap_kept_mib"] for i, r in enumerate(rs)], 1),
            ]) + " |")
        add("")
    add("## Targets (issue 15: the warm path at the wasm floor, half the start-up and memory)")
    add("")
    add("Each figure is paired within a repetition (the scenarios of one repetition run back to back), "
        "then the median and range over the repetitions.")
    add("")
    add("| target | measured (median, min–max) | met |")
    add("| --- | --- | --- |")

    def med(values):
        return stats(values)[0] if values else None

    def target(name, values, limit, higher_is_better, unit, digits):
        if not values:
            return
        m = med(values)
        ok = m >= limit if higher_is_better else m <= limit
        add(f"| {name} | {cell(values, digits)} {unit} | {'yes' if ok else '**no**'} |")

    def over(s, peer):
        return [r["cpu_us"] - results[peer][i]["cpu_us"] for i, r in enumerate(results[s])]

    base = results.get("baseline")
    noop = results.get("noop_wasm")
    if noop:
        for s, limit in (("validate_bearer", 5), ("validate_cookie", 8), ("login_session", 15)):
            if s in results:
                target(f"`{s}`: own proxy CPU ≤ +{limit} µs/req over the no-op filter", over(s, "noop_wasm"),
                       limit, False, "µs", 1)
        if "validate_bearer" in results:
            target("`validate_bearer` ≥ 0.97× the no-op filter's req/s",
                   [r["rps"] / noop[i]["rps"] for i, r in enumerate(results["validate_bearer"])], 0.97, True, "×", 2)
        # The throughput target's floor: what the minimal filters themselves keep of the no-op's req/s.
        for s, what in (("cached_wasm", "the minimal cached JWT filter"),
                        ("cached_all_wasm", "the cached filter reading the whole header map")):
            if s in results:
                add(f"| (for scale: {what}'s req/s over the no-op filter's) | "
                    + cell([r["rps"] / noop[i]["rps"] for i, r in enumerate(results[s])], 2) + " × | — |")
        if "cached_wasm" in results:
            add("| (for scale: the minimal cached JWT filter over the no-op filter) | "
                + cell(over("cached_wasm", "noop_wasm"), 1) + " µs | — |")
            if "validate_bearer" in results:
                add("| (`validate_bearer` over the minimal cached JWT filter) | "
                    + cell(over("validate_bearer", "cached_wasm"), 1) + " µs | — |")
        for s, peer, what in (
                ("cached_all_wasm", "noop_wasm", "the cached filter reading the whole header map (B3, B6), over the no-op filter"),
                ("validate_bearer", "cached_all_wasm", "`validate_bearer` over that floor"),
                ("validate_cookie", "cached_all_wasm", "`validate_cookie` over that floor"),
                ("login_floor_wasm", "noop_wasm", "login mode's required header work alone, over the no-op filter"),
                ("login_session", "login_floor_wasm", "`login_session` over that floor")):
            if s in results and peer in results:
                add(f"| (for scale: {what}) | " + cell(over(s, peer), 1) + " µs | — |")
        if base:
            add("| (for scale: the no-op filter over no filter) | " + cell(over("noop_wasm", "baseline"), 1)
                + " µs | — |")
    if "validate_cold" in results and "validate_bearer" in results:
        target("a never-seen RS256-2048 token ≤ 250 µs of proxy CPU (`validate_cold` − `validate_bearer`)",
               over("validate_cold", "validate_bearer"), 250, False, "µs", 1)
    target("`.wasm` ≤ 450 KB", [os.path.getsize(MESH_WASM) / 1000], 450, False, "KB", 0)
    if base:
        mesh = [s for s in RUN if s.startswith(("validate", "login")) and s not in NOOP_SCENARIOS]
        if mesh:
            ready = [r["ready_ms"] for s in mesh for r in results[s]]
            target("start → ready (key set loaded, first request answered) ≤ 1.0 s", ready, 1000, False, "ms", 0)
            rss = [r["rss_mib"] - base[i]["rss_mib"] for s in mesh for i, r in enumerate(results[s])]
            target("RSS ≤ +35 MiB over baseline", rss, 35, False, "MiB", 1)
            if noop:
                add("| (for scale: the no-op filter's RSS over baseline) | "
                    + cell([r["rss_mib"] - base[i]["rss_mib"] for i, r in enumerate(noop)], 1) + " MiB | — |")
                add("| (for scale: the no-op filter's start → ready) | "
                    + cell([r["ready_ms"] for r in noop], 0) + " ms | — |")
    add("")
    notes = os.path.join(ROOT, "docs", "benchmark-notes.md")
    if os.path.exists(notes):
        with open(notes, encoding="utf-8") as f:
            add(f.read().rstrip())
        add("")
    add("## Scenarios")
    add("")
    for s in RUN:
        add(f"- `{s}`: {DESCRIPTIONS[s]}")
    add("")
    add("Before its measured run, every scenario is checked on a fresh Envoy, and the run fails if a check "
        "does: a valid token reaches the upstream with `x-user: alice` (the upstream echoes what it saw), "
        "no token and a forged signature get 401 (login mode: 302 to log in), a client-set `x-user` is replaced, "
        "and during the measured run Envoy must count only 2xx answers, each of which reached the upstream. "
        "Start → first correct answer: from spawning Envoy to the first 200 with `x-user` (for mesh-oidc: "
        "the key set has been fetched through the cluster), polled every 2 ms.")
    add("")
    add("Both `jwt_authn` and mesh-oidc are configured alike: issuer, audience (`aud: account`; mesh-oidc "
        "also checks `azp: productpage`), `preferred_username` to `x-user`.")
    add("")
    add("## Diagnostics")
    add("")
    add("Is the proxy what sets the pace? *Proxy CPU busy*: the proxy's CPU time over the wall time of the "
        "run (near 100 % when it is the bottleneck). *Load CPU*: wrk plus the upstream, per request, on "
        "the other CPU; the baseline is proxy-bound as long as it stays below the proxy's CPU per request. "
        "*Other load*: CPU time on each of the two CPUs taken by anything else (other processes, steal) "
        "during the measured run, a measure of the noise.")
    add("")
    add("| scenario | requests measured | proxy CPU busy % | load CPU (wrk + upstream) µs/req | upstream µs/req | other load on proxy CPU % | other load on load CPU % | jwt_authn cache hits / misses |")
    add("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for s in RUN:
        rs = results[s]
        hits = sum(r["cache_hits"] for r in rs)
        misses = sum(r["cache_misses"] for r in rs)
        add("| " + " | ".join([
            f"`{s}`",
            cell([r["requests"] for r in rs], 0),
            cell([r["busy"] for r in rs], 0),
            cell([r["load_cpu_us"] for r in rs], 1),
            cell([r["upstream_cpu_us"] for r in rs], 1),
            cell([r["foreign_proxy_cpu"] for r in rs], 0),
            cell([r["foreign_load_cpu"] for r in rs], 0),
            f"{hits} / {misses}" if s.startswith("jwt_authn") else "—",
        ]) + " |")
    add("")
    foreign = [r["foreign_proxy_cpu"] for s in RUN for r in results[s]] + \
              [r["foreign_load_cpu"] for s in RUN for r in results[s]]
    if foreign and max(foreign) > 10:
        add(f"**Warning:** other processes took up to {max(foreign):.0f} % of a benchmark CPU during a measured run; "
            "throughput and latency figures are disturbed (CPU µs per request much less so). "
            "Run again on an idle machine for figures to compare.")
        add("")
    add("Run it: `make bench`, or `bench/run.sh` (`BENCH_REPS`, `BENCH_SECONDS`, `BENCH_WARMUP_SECONDS`, "
        "`BENCH_CONNECTIONS`, `BENCH_SCENARIOS`, `BENCH_COLD_TOKENS`, `BENCH_RELEASE_MEMORY`; see `bench/run.sh`).")
    add("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------

def main():
    global MESH_WASM, NOOP_WASM
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    for tool, hint in (("wrk", "apt-get install -y wrk"), ("taskset", "apt-get install -y util-linux")):
        if shutil.which(tool) is None:
            die(f"{tool} is not installed; install it: {hint}")
    if not ENVOY:
        die("BENCH_ENVOY_BIN is not set (start the benchmark with bench/run.sh)")
    if UPSTREAM not in ("native", "envoy"):
        die(f"BENCH_UPSTREAM={UPSTREAM!r}: use native or envoy")
    if UPSTREAM == "native" and not os.access(UPSTREAM_BIN, os.X_OK):
        die(f"missing {UPSTREAM_BIN} (build it first: bench/run.sh does)")
    for path in [MESH_WASM] + ([NOOP_WASM] if set(NOOP_SCENARIOS) & set(RUN) else []):
        if not os.path.isfile(path):
            die(f"missing {path} (build it first: bench/run.sh does)")
    os.makedirs(WORK, exist_ok=True)
    # Freeze the modules for the whole run: the build tree may change while it runs.
    source_wasm = MESH_WASM
    MESH_WASM = freeze(MESH_WASM, "mesh_oidc.wasm")
    if os.path.isfile(NOOP_WASM):
        NOOP_WASM = freeze(NOOP_WASM, "noop_filter.wasm")
    tokens_file = os.path.join(TOKENS_DIR, "tokens.txt")
    with open(tokens_file) as f:
        tokens = [line.strip() for line in f if line.strip()]
    with open(os.path.join(TOKENS_DIR, "jwks.json")) as f:
        jwks_text = f.read()
    if len(tokens) < 2:
        die(f"{tokens_file}: need at least 2 tokens")
    warm, cold = tokens[0], tokens[-1]
    global SESSION_COOKIE
    SESSION_COOKIE = seal_session(warm)
    # What the provider's introspection endpoint says about any token (RFC 7662, Keycloak's shape):
    # the warm token's claims, active. Only validate_introspect asks, once, before its checks.
    claims = json.loads(base64.urlsafe_b64decode(warm.split(".")[1] + "=" * (-len(warm.split(".")[1]) % 4)))
    introspection_text = json.dumps({**claims, "active": True, "client_id": claims.get("azp"),
                                     "username": claims.get("preferred_username"), "token_type": "Bearer"})
    introspection_file = os.path.join(WORK, "introspection.json")
    with open(introspection_file, "w") as f:
        f.write(introspection_text)

    meta = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "envoy": envoy_version(),
        "machine": machine(),
        "load_start": loadavg(),
        "token_bytes": len(warm),
        "mesh_wasm": os.path.relpath(source_wasm, ROOT),
        "mesh_sha256": sha256_of(MESH_WASM),
        "git": git_revision(),
    }
    helper_admin, helper_port, proxy_admin, proxy_port = free_ports(4)
    log(f"ports: upstream {helper_port} (admin {helper_admin}), proxy {proxy_port} (admin {proxy_admin})")
    log(f"{REPS} repetition(s) × {len(RUN)} scenario(s) × {SECONDS} s (+{WARMUP} s warm-up), "
        f"wrk -c{CONNECTIONS} on CPU {LOAD_CPU}, proxy on CPU {PROXY_CPU}")

    if UPSTREAM == "envoy":
        helper, t0, helper_log = start_envoy(helper_config(helper_admin, helper_port, jwks_text, introspection_text), "upstream",
                                             LOAD_CPU, helper_admin)
    else:
        helper_log = os.path.join(WORK, "upstream.log")
        with open(helper_log, "w"):
            pass
        t0 = time.monotonic()
        helper = spawn([UPSTREAM_BIN, str(helper_port), os.path.join(TOKENS_DIR, "jwks.json"), f"{REALM_PATH}/certs",
                        introspection_file, INTROSPECT_PATH], helper_log, LOAD_CPU)

    def helper_probe():
        status, headers, body = http_get(helper_port, f"{REALM_PATH}/certs")
        return status == 200 and json.loads(body) == json.loads(jwks_text), f"last answer: {status}"

    wait_ready(helper, t0, helper_log, helper_probe)
    status, _, body = http_post(helper_port, INTROSPECT_PATH, "token=x")
    if status != 200 or json.loads(body).get("active") is not True:
        die(f"the upstream does not answer introspection: {status} {body[:200]!r}")
    status, headers, _ = http_get(helper_port, CHECK_PATH, {"Authorization": "Bearer x", "x-user": "u"})
    if status != 200 or headers.get("x-echo-authorization") != "Bearer x" or headers.get("x-echo-x-user") != "u":
        die(f"the upstream does not echo request headers: {status} {headers}")
    ports = {"helper": helper_port, "proxy_admin": proxy_admin, "proxy": proxy_port, "helper_pid": helper.pid}

    results = {s: [] for s in RUN}
    for rep in range(1, REPS + 1):
        for s in RUN:
            try:
                r = run_one(s, rep, ports, warm, cold, tokens_file, jwks_text)
            except CheckFailed as e:
                raise CheckFailed(f"scenario {s}, repetition {rep}: {e}") from None
            results[s].append(r)
            log(f"rep {rep}/{REPS} {s:<17} {r['rps']:>9.0f} req/s  p50 {r['p50']:.2f} ms  p99 {r['p99']:.2f} ms  "
                f"{r['cpu_us']:.1f} µs/req CPU ({r['busy']:.0f}% busy; load {r['load_cpu_us']:.1f} µs/req)  "
                f"RSS {r['rss_mib']:.1f} MiB  ready {r['ready_ms']:.0f} ms  "
                f"other load {r['foreign_proxy_cpu']:.0f}%/{r['foreign_load_cpu']:.0f}%")
        if helper.poll() is not None:
            die(f"the upstream exited:\n{tail(helper_log)}")
    meta["load_end"] = loadavg()
    text = report(results, meta)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        f.write(text)
    with open(os.path.join(WORK, "results.json"), "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    print()
    print(text)
    log(f"wrote {OUT}")


if __name__ == "__main__":
    try:
        main()
    except CheckFailed as e:
        print(f"bench: FAILED: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    finally:
        cleanup()
