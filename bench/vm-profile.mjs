// The warm path inside the VM alone: a proxy-wasm host written in JavaScript drives a module's
// callbacks the way Envoy does for one request (context created, request headers, response
// headers, log, done, delete), in Node's V8 with Envoy's settings (TurboFan only, compiled at
// load), with no network, no Envoy and no other process. What it measures is the module's own
// work per request plus this host's (the same for every module), so it compares modules and
// builds with each other, never with `make bench`'s figures.
//
//   node --no-liftoff --no-wasm-lazy-compilation bench/vm-profile.mjs [N]
//   make vm-profile                      # the same, on the built module and bench/noop's
//
// Add --cpu-prof (and a module built with names, see bench/README.md) to see which functions
// the time goes to. Environment: MESH_WASM, NOOP_WASM (the modules), VM_SCENARIOS (a subset).

import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.join(HERE, '..');
const N = Number(process.argv[2] ?? 100000);
const MESH_WASM = process.env.MESH_WASM ?? path.join(ROOT, 'target/wasm32-wasip1/release/mesh_oidc.wasm');
const NOOP_WASM = process.env.NOOP_WASM ?? path.join(HERE, 'noop/target/wasm32-wasip1/release/noop_filter.wasm');
const TOKENS = path.join(HERE, 'out/tokens');
const ISSUER = 'https://sso.bench.local/realms/bench';
const BASE = 'http://127.0.0.1:9/realms/bench/protocol/openid-connect';

if (!fs.existsSync(path.join(TOKENS, 'tokens.txt'))) {
  execFileSync('node', [path.join(HERE, 'gen-tokens.mjs'), TOKENS, '1', ISSUER], { stdio: 'inherit' });
}
const jwks = fs.readFileSync(path.join(TOKENS, 'jwks.json'));
const token = fs.readFileSync(path.join(TOKENS, 'tokens.txt'), 'utf8').split('\n')[0];
const sessionSecret = crypto.getRandomValues(Buffer.alloc(32)).toString('base64');
const sealed = execFileSync('node', [path.join(HERE, 'seal-session.mjs'), sessionSecret, token], {
  encoding: 'utf8',
}).trim();

const enc = new TextEncoder();
const dec = new TextDecoder();

/// proxy-wasm's serialised header map: count, then each name and value length, then each name
/// and value with a NUL after it.
function serialise(pairs) {
  const parts = pairs.map(([n, v]) => [enc.encode(n), enc.encode(v)]);
  let size = 4 + parts.length * 8;
  for (const [n, v] of parts) size += n.length + v.length + 2;
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  view.setUint32(0, parts.length, true);
  let at = 4;
  for (const [n, v] of parts) {
    view.setUint32(at, n.length, true);
    view.setUint32(at + 4, v.length, true);
    at += 8;
  }
  for (const [n, v] of parts) {
    out.set(n, at);
    at += n.length + 1;
    out.set(v, at);
    at += v.length + 1;
  }
  return out;
}

// VM_TRACE=1: print each host call (with VM_SCENARIOS and N=1).
const TRACE = Boolean(process.env.VM_TRACE);
const OK = 0;
const NOT_FOUND = 1;

/// One VM: a module instance and the host state its calls see.
class Vm {
  constructor(file, configuration) {
    this.config = enc.encode(JSON.stringify(configuration));
    this.maps = new Map(); // map type -> [[name, value]]
    this.shared = new Map();
    this.calls = [];
    this.callBody = new Uint8Array();
    this.replies = 0;
    this.hostCalls = 0;
    this.logs = [];
    const env = {};
    const wasi = {};
    const imports = { env, wasi_snapshot_preview1: wasi };
    const module = new WebAssembly.Module(fs.readFileSync(file));
    for (const imp of WebAssembly.Module.imports(module)) {
      const table = imp.module === 'env' ? env : wasi;
      table[imp.name] = (...args) => {
        throw new Error(`host call ${imp.module}.${imp.name}(${args}) is not implemented here`);
      };
    }
    // i32 arguments arrive signed; pointers and sizes are unsigned.
    const unsigned = (fns) =>
      Object.fromEntries(
        Object.entries(fns).map(([name, f]) => [
          name,
          (...args) => f(...args.map((a) => (typeof a === 'number' ? a >>> 0 : a))),
        ]),
      );
    Object.assign(env, unsigned(this.hostFunctions()));
    Object.assign(wasi, unsigned(this.wasiFunctions()));
    this.instance = new WebAssembly.Instance(module, imports);
    this.x = this.instance.exports;
    this.x._initialize?.();
  }

  get u8() {
    return new Uint8Array(this.x.memory.buffer);
  }
  get view() {
    return new DataView(this.x.memory.buffer);
  }
  str(ptr, len) {
    return dec.decode(this.u8.subarray(ptr, ptr + len));
  }
  /// Hands bytes to the module as proxy-wasm does: in memory the module allocated.
  give(bytes, retPtr, retSize) {
    const ptr = bytes.length ? this.x.proxy_on_memory_allocate(bytes.length) : 0;
    this.u8.set(bytes, ptr);
    this.view.setUint32(retPtr, ptr, true);
    this.view.setUint32(retSize, bytes.length, true);
    return OK;
  }

  hostFunctions() {
    const count = () => {
      this.hostCalls += 1;
      if (TRACE) console.log(new Error().stack.split('\n')[2].trim());
    };
    const header = (type, name) => (this.maps.get(type) ?? []).find(([n]) => n === name);
    return {
      proxy_log: (level, ptr, len) => {
        count();
        if (level >= 3) this.logs.push(this.str(ptr, len));
        return OK;
      },
      proxy_get_current_time_nanoseconds: (ret) => {
        count();
        this.view.setBigUint64(ret, BigInt(Date.now()) * 1000000n, true);
        return OK;
      },
      proxy_set_tick_period_milliseconds: () => OK,
      proxy_define_metric: (type, ptr, len, ret) => {
        this.view.setUint32(ret, 1, true);
        return OK;
      },
      proxy_increment_metric: () => {
        count();
        return OK;
      },
      proxy_get_property: () => {
        count();
        return NOT_FOUND;
      },
      proxy_get_buffer_bytes: (type, start, max, retPtr, retSize) => {
        count();
        const bytes = type === 7 ? this.config : type === 4 ? this.callBody : new Uint8Array();
        return this.give(bytes.subarray(start, start + max), retPtr, retSize);
      },
      proxy_get_header_map_pairs: (type, retPtr, retSize) => {
        count();
        return this.give(this.serialised?.get(type) ?? serialise(this.maps.get(type) ?? []), retPtr, retSize);
      },
      proxy_get_header_map_value: (type, kp, kl, retPtr, retSize) => {
        count();
        const h = header(type, this.str(kp, kl));
        return h ? this.give(enc.encode(h[1]), retPtr, retSize) : NOT_FOUND;
      },
      proxy_replace_header_map_value: (type, kp, kl, vp, vl) => {
        count();
        const name = this.str(kp, kl);
        const list = (this.maps.get(type) ?? []).filter(([n]) => n !== name);
        list.push([name, this.str(vp, vl)]);
        this.maps.set(type, list);
        return OK;
      },
      proxy_add_header_map_value: (type, kp, kl, vp, vl) => {
        count();
        const list = this.maps.get(type) ?? [];
        list.push([this.str(kp, kl), this.str(vp, vl)]);
        this.maps.set(type, list);
        return OK;
      },
      proxy_remove_header_map_value: (type, kp, kl) => {
        count();
        const name = this.str(kp, kl);
        this.maps.set(type, (this.maps.get(type) ?? []).filter(([n]) => n !== name));
        return OK;
      },
      proxy_get_shared_data: (kp, kl, retPtr, retSize, retCas) => {
        count();
        const entry = this.shared.get(this.str(kp, kl));
        if (!entry) return NOT_FOUND;
        this.give(entry.value, retPtr, retSize);
        this.view.setUint32(retCas, entry.cas, true);
        return OK;
      },
      proxy_set_shared_data: (kp, kl, vp, vl, cas) => {
        count();
        const key = this.str(kp, kl);
        const entry = this.shared.get(key);
        if (cas && entry && entry.cas !== cas) return 9; // CasMismatch
        this.shared.set(key, { value: this.u8.slice(vp, vp + vl), cas: (entry?.cas ?? 0) + 1 });
        return OK;
      },
      proxy_http_call: (up, ul, hp, hl, bp, bl, tp, tl, timeout, retToken) => {
        count();
        const tokenId = 100 + this.calls.length;
        this.calls.push({ token: tokenId, cluster: this.str(up, ul) });
        this.view.setUint32(retToken, tokenId, true);
        return OK;
      },
      proxy_send_local_response: () => {
        count();
        this.replies += 1;
        return OK;
      },
      proxy_set_effective_context: () => {
        count();
        return OK;
      },
      proxy_continue_stream: () => {
        count();
        return OK;
      },
      proxy_done: () => OK,
    };
  }

  wasiFunctions() {
    return {
      random_get: (ptr, len) => {
        crypto.getRandomValues(this.u8.subarray(ptr, ptr + len));
        return 0;
      },
      environ_sizes_get: (countPtr, sizePtr) => {
        this.view.setUint32(countPtr, 0, true);
        this.view.setUint32(sizePtr, 0, true);
        return 0;
      },
      environ_get: () => 0,
      fd_write: () => 0,
      proc_exit: (code) => {
        throw new Error(`proc_exit(${code})`);
      },
    };
  }

  /// The root context starts and is configured; dispatched calls (the key set) are answered.
  start() {
    this.x.proxy_on_context_create(1, 0);
    this.x.proxy_on_vm_start(1, 0);
    if (!this.x.proxy_on_configure(1, this.config.length)) {
      throw new Error(`configuration refused: ${this.logs.join('; ')}`);
    }
    this.x.proxy_on_tick?.(1);
    for (const call of this.calls.splice(0)) {
      this.maps.set(6, [[':status', '200']]);
      this.callBody = jwks;
      this.x.proxy_on_http_call_response(1, call.token, 1, jwks.length, 0);
    }
  }

  /// One request through every callback Envoy makes for it; the request headers after the
  /// filter's own callback.
  request(ctx, headers, serialised) {
    this.maps.set(0, headers.slice());
    this.serialised = new Map([[0, serialised]]);
    this.x.proxy_on_context_create(ctx, 1);
    const action = this.x.proxy_on_request_headers(ctx, headers.length, 1);
    this.serialised = null;
    this.maps.set(2, [[':status', '200'], ['content-type', 'application/json']]);
    this.x.proxy_on_response_headers(ctx, 2, 0);
    this.x.proxy_on_log?.(ctx);
    this.x.proxy_on_done(ctx);
    this.x.proxy_on_delete(ctx);
    return { action, headers: this.maps.get(0) };
  }
}

function requestHeaders(extra) {
  return [
    [':authority', '127.0.0.1:10000'],
    [':path', '/details/0'],
    [':method', 'GET'],
    [':scheme', 'http'],
    ['user-agent', 'wrk'],
    ['x-forwarded-proto', 'http'],
    ['x-request-id', '8f2e4a3c-0b1d-4c7e-9a6f-2d5b8e1f3a70'],
    ...extra,
  ];
}
const bearer = requestHeaders([['authorization', `Bearer ${token}`]]);
const session = requestHeaders([
  ['cookie', `theme=dark; access_token=${token}; access_token_session=${sealed}`],
]);

const meshConfig = (mode) => ({
  mode,
  oidc: {
    issuer: ISSUER,
    jwks_uri: `${BASE}/certs`,
    ...(mode === 'login'
      ? {
          authorization_endpoint: `${ISSUER}/protocol/openid-connect/auth`,
          token_endpoint: `${BASE}/token`,
        }
      : {}),
  },
  cluster: 'jwks',
  claims_to_headers: { preferred_username: 'x-user' },
  ...(mode === 'login'
    ? { client_id: 'productpage', client_secret: 'bench-client-secret', session_secret: sessionSecret }
    : { authorized_parties: ['productpage'] }),
});

// What login mode sends on (L4, B6): the token as a bearer, the Cookie without the session.
const loggedIn = {
  'x-user': 'alice',
  authorization: `Bearer ${token}`,
  cookie: `theme=dark; access_token=${token}`,
};

// The scenarios of `make bench` that run in one VM: name, module, configuration, request, and
// the headers a correct answer goes on with (the request goes on: no local reply).
const SCENARIOS = [
  ['noop_wasm', NOOP_WASM, {}, bearer, { 'x-user': undefined }],
  ['cached_all_wasm', NOOP_WASM, 'cached-all', bearer, { 'x-user': 'alice' }],
  ['validate_bearer', MESH_WASM, meshConfig('validate'), bearer, { 'x-user': 'alice' }],
  ['login_floor_wasm', NOOP_WASM, 'login-floor', session, loggedIn],
  ['login_session', MESH_WASM, meshConfig('login'), session, loggedIn],
].filter(([name]) => !process.env.VM_SCENARIOS || process.env.VM_SCENARIOS.split(',').includes(name));

const results = [];
for (const [name, file, config, headers, want] of SCENARIOS) {
  const vm = new Vm(file, config);
  vm.start();
  const serialised = serialise(headers);
  const first = vm.request(2, headers, serialised);
  const wrong = Object.entries(want).filter(
    ([header, value]) => first.headers.find(([n]) => n === header)?.[1] !== value,
  );
  if (first.action !== 0 || wrong.length || vm.replies) {
    const names = wrong.map(([header]) => header).join(', ');
    throw new Error(`${name}: action ${first.action}, wrong: ${names}, ${vm.replies} replies; ${vm.logs.join('; ')}`);
  }
  for (let i = 0; i < Math.min(N, 20000); i += 1) vm.request(3 + (i % 1000), headers, serialised);
  vm.hostCalls = 0;
  const started = process.hrtime.bigint();
  for (let i = 0; i < N; i += 1) vm.request(3 + (i % 1000), headers, serialised);
  const ns = Number(process.hrtime.bigint() - started) / N;
  if (vm.replies) throw new Error(`${name}: ${vm.replies} local replies during the run`);
  results.push({ name, us: ns / 1000, hostCalls: vm.hostCalls / N });
}
const floor = Object.fromEntries(results.map((r) => [r.name, r.us]));
console.log(`| scenario | µs/request in the VM and this host | over noop_wasm | host calls/request |`);
console.log(`| --- | ---: | ---: | ---: |`);
for (const r of results) {
  const over = floor.noop_wasm === undefined ? '—' : (r.us - floor.noop_wasm).toFixed(2);
  console.log(`| \`${r.name}\` | ${r.us.toFixed(2)} | ${over} | ${r.hostCalls.toFixed(1)} |`);
}
