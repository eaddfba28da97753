#!/usr/bin/env node
// make soak: mesh-oidc under a steady, mixed load in one real Envoy for SOAK_MINUTES (default 10),
// while the provider misbehaves on a schedule. It fails on any answer the schedule does not
// explain, any panic or VM restart in Envoy, and memory that keeps growing.
//
//   make soak                          # 10 minutes; writes tests/out/soak/ and docs/reliability.md
//   make soak SOAK_MINUTES=1           # the smoke run (tests/out/soak/ only)
//
// What runs (all on 127.0.0.1, every process stopped by its PID at the end):
//   - Envoy (.venv, --concurrency 2) with the built module on two listeners in front of the echo
//     service: "login" (login mode) and "validate" (validate mode), one VM configuration each;
//   - the test provider (tests/provider/keycloak.mjs): access tokens live SOAK_TOKEN_TTL (20) s,
//     refresh tokens rotate (a reused one revokes its grant);
//   - the fault proxy (faultproxy.mjs) between Envoy and the provider: Envoy's cluster for the
//     provider points at it, the browsers reach the provider directly (its public URL).
// The load (a global rate cap, SOAK_RATE requests/s to Envoy; at most SOAK_MAX_REQUESTS):
//   - SOAK_BROWSERS simulated browsers, each with its own cookie jar: log in through the
//     provider's real form, browse (pages, API calls, several tabs at once with one session, the
//     session's token passed on to the validate listener as a service would), outlive their
//     access token so the filter refreshes it, log out, log in again;
//   - SOAK_API_CLIENTS API clients at the validate listener: valid, expired, forged and garbage
//     tokens, tokens of the previous signing key; and forged cookies at the login listener.
// The fault schedule: see SCHEDULE below; what each fault may legitimately cause: see EXPLAINS.
//
// Settings (environment): SOAK_MINUTES=10 SOAK_BROWSERS=6 SOAK_API_CLIENTS=3 SOAK_RATE=30
//   SOAK_SELF_CHECK=1 (no fault explains anything: the run must fail, listing what the faults did)
//   SOAK_MAX_REQUESTS=(1.2 × rate × seconds) SOAK_TOKEN_TTL=20 SOAK_RSS_BOUND_MIB=10
//   SOAK_DOCS=1 (default when SOAK_MINUTES >= 10: write docs/reliability.md and its plot)
//   SOAK_PYTHON=../.venv/bin/python (with matplotlib, for the plot)

import { spawn, spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

import {
  request, requestWithJar, CookieJar, generateKeys, generateKey, withKeys, publicPem,
  signToken, tamper, accessTokenClaims, startProvider, startEcho, bootstrap, crashLines,
  decodeJwt, toCallback, PAGE_HEADERS, API_HEADERS, sleep, freePort, WASM_PATH, ENVOY_BIN,
} from '../e2e/lib/index.mjs';
import { spawnLogged } from '../e2e/lib/proc.mjs';
import { toYaml } from '../e2e/lib/yaml.mjs';
import { REPO_DIR, OUT_DIR } from '../e2e/lib/paths.mjs';
import { startFaultProxy } from './faultproxy.mjs';

// ----------------------------------------------------------------------------------- settings

const num = (name, dflt) => {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} must be a positive number, got ${v}`);
  return n;
};
const MINUTES = num('SOAK_MINUTES', 10);
const DURATION_MS = Math.round(MINUTES * 60_000);
const BROWSERS = num('SOAK_BROWSERS', 6);
const API_CLIENTS = num('SOAK_API_CLIENTS', 3);
const RATE = num('SOAK_RATE', 30);
// a bound on the load, never reached at the rate cap: time ends the run
const MAX_REQUESTS = num('SOAK_MAX_REQUESTS', Math.ceil(1.2 * RATE * MINUTES * 60));
const TOKEN_TTL = num('SOAK_TOKEN_TTL', 20);
const RSS_BOUND_MIB = num('SOAK_RSS_BOUND_MIB', 10);
const WRITE_DOCS = process.env.SOAK_DOCS !== undefined ? process.env.SOAK_DOCS === '1' : MINUTES >= 10;
// The memory verdict needs a second half long enough to see a trend past start-up.
const JUDGE_MEMORY = MINUTES >= 4;
// A check of the judge itself: with SOAK_SELF_CHECK=1 no fault explains anything, so the run must
// fail with the answers the faults caused listed as unexpected, each with its Envoy log lines.
const SELF_CHECK = process.env.SOAK_SELF_CHECK === '1';
const OUT = process.env.SOAK_OUT ?? path.join(OUT_DIR, 'soak');
const PYTHON = process.env.SOAK_PYTHON ?? path.join(REPO_DIR, '.venv', 'bin', 'python');

// The filter's settings that the expectations depend on.
const TIMEOUT_MS = 5000; // timeout_ms (the default)
const JWKS_REFRESH_S = 30; // jwks_refresh_seconds
const CLOCK_SKEW_S = 5; // clock_skew_seconds: small, so that sessions refresh soon after the access token's exp
const REFETCH_MIN_INTERVAL_MS = 5000; // src/keystore.rs: one fetch for an unknown kid this often
const SLOW_MS = TIMEOUT_MS + 2000; // the provider's delay in the "slow" fault: past timeout_ms
// No answer may take longer: one dispatched call and one wait for the key set, each bounded by
// timeout_ms, the refetch rate limit (a token naming a new kid right after a fetch waits for the
// next one), plus the one grace period (src/pending.rs GRACE_MS) and 2 s for this busy machine.
// A wait that never ends, or a request held past its deadline, fails the run.
const MAX_ANSWER_MS = 2 * TIMEOUT_MS + REFETCH_MIN_INTERVAL_MS + 1000 + 2000;

// The fault schedule of one 10-minute cycle (seconds from the start). Shorter runs compress it;
// longer runs repeat it. Windows of kind "rotation" and "shrink" are added when the restart ends
// ("shrink": tokens of the dropped key may pass until the filter's next key-set fetch succeeds).
const CYCLE_S = 600;
const SCHEDULE = [
  { at: 60, until: 120, kind: 'slow', what: `provider answers every call of the filter after ${SLOW_MS / 1000} s (timeout_ms ${TIMEOUT_MS / 1000} s)` },
  { at: 150, until: 195, kind: 'token500', what: 'token endpoint answers 500' },
  { at: 240, kind: 'rotate', what: 'key rotation: restart with a new signing key, the old one still published' },
  { at: 270, until: 315, kind: 'garbage', what: 'token and certs endpoints answer 200 with garbage bodies' },
  { at: 360, until: 380, kind: 'down', what: 'provider down (process stopped), then restarted with its state' },
  { at: 395, until: 410, kind: 'token500', what: 'token endpoint answers 500' },
  { at: 420, kind: 'shrink', what: 'key set shrinks: restart with the old signing key dropped' },
  { at: 465, until: 490, kind: 'garbage', what: 'token and certs endpoints answer 200 with garbage bodies' },
  { at: 495, until: 520, kind: 'slow', what: `provider answers every call of the filter after ${SLOW_MS / 1000} s` },
];

// Provider states in which the filter cannot get an answer it can use from the provider.
const UNHEALTHY = new Set(['slow', 'token500', 'garbage', 'down', 'restart']);

// What each kind of request may answer: `always`, and more while the provider is unhealthy (a
// window of a kind in UNHEALTHY open at any time between the request and its answer).
// Observations: 200user (the service saw the user's verified identity), 200anon, 302auth (to the
// provider's login), 302local, 302endsession, 302other, a status, or ERR:<code> (no answer).
// A key rotation explains nothing: the provider is healthy and publishes the new key before it
// signs with it, and the filter fetches the set again on an unknown kid before deciding
// (README, validate mode). The "rotation" window only marks the seconds after it in the output.
const EXPLAINS = {
  page: { always: ['200user'], unhealthy: ['302auth', '504'] },
  tab: { always: ['200user'], unhealthy: ['302auth', '504'] },
  'api-login': { always: ['200user'], unhealthy: ['401', '504'] },
  'login-start': { always: ['302auth', '200user'] },
  callback: { always: ['302local'], unhealthy: ['502', '504'] },
  'login-final': { always: ['200user'] },
  logout: { always: ['302endsession'] },
  'api-bad': { always: ['401', '400'] },
  'login-garbage': { always: ['302auth', '401', '400'] },
  // forward, api-valid, api-prevkey: a good token; judged by its key and expiry (goodToken below)
};

// ----------------------------------------------------------------------------------- state

const records = []; // every request to Envoy
const logins = []; // every login attempt: {t0, t1, ok, stage, why, browser}
const providerSteps = []; // browser steps at the provider outside a login (logout)
const windows = []; // {kind, start, end, what}
const samples = []; // {t, rssKiB}
const statSamples = []; // {t, stats}
const logFindings = { panic: [], wasmError: [], wasmWarn: [], critical: [] };
const logCounts = []; // {t, panic, wasmError, wasmWarn, critical}
const kids = new Map(); // kid -> {publishedAt, droppedAt}
const procs = []; // things to stop, last first
let stopping = false;
let stopReason = '';
let startAt = 0;
let envoy;
let provider;
let proxy;
let echo;
let requestSeq = 0;

const now = () => Date.now();
const rel = (t) => (t - startAt) / 1000;
const rand = (a, b) => a + Math.floor(Math.random() * (b - a + 1));
const pick = (list) => list[Math.floor(Math.random() * list.length)];
const log = (msg) => process.stdout.write(`[soak ${startAt ? `${rel(now()).toFixed(0).padStart(4)}s` : ' setup'}] ${msg}\n`);

// ----------------------------------------------------------------------------------- rate cap

const limiter = {
  next: 0,
  async take(n = 1) {
    if (requestSeq + n > MAX_REQUESTS) {
      if (!stopping) { stopping = true; stopReason = `request cap (${MAX_REQUESTS}) reached`; }
      return false;
    }
    requestSeq += n;
    const t = now();
    const at = Math.max(t, this.next);
    this.next = at + (1000 * n) / RATE;
    if (at > t) await sleep(at - t);
    return true;
  },
};

// ----------------------------------------------------------------------------------- Envoy

function wasmFilterConfig(hcm) {
  return hcm.http_filters.find((f) => f.name === 'envoy.filters.http.wasm').typed_config.config;
}

async function startSoakEnvoy({ loginConfig, validateConfig, echoPort, providerPort, dir, loginPort }) {
  const adminPort = await freePort();
  const validatePort = await freePort();
  const accessFormat = '[%START_TIME%] %REQ(X-REQUEST-ID)% "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %DURATION%ms\n';
  const cfg = bootstrap({
    adminPort, listenerPort: loginPort, echoPort, providerPort, filterConfig: loginConfig,
    accessLogPath: path.join(dir, 'access-login.log'), routeTimeout: '20s',
  });
  cfg.node.id = 'mesh-oidc-soak';
  const login = cfg.static_resources.listeners[0];
  login.name = 'login';
  const validate = structuredClone(login);
  validate.name = 'validate';
  validate.address.socket_address.port_value = validatePort;
  for (const [l, name, conf, prefix] of [[login, 'login', loginConfig, 'login_http'], [validate, 'validate', validateConfig, 'validate_http']]) {
    const hcm = l.filter_chains[0].filters[0].typed_config;
    hcm.stat_prefix = prefix;
    const w = wasmFilterConfig(hcm);
    w.name = `mesh-oidc-${name}`;
    w.vm_config.vm_id = `mesh-oidc-${name}`;
    w.configuration.value = JSON.stringify(conf);
    hcm.access_log[0].typed_config.path = path.join(dir, `access-${name}.log`);
    hcm.access_log[0].typed_config.log_format.text_format_source.inline_string = accessFormat;
  }
  cfg.static_resources.listeners.push(validate);
  const yamlPath = path.join(dir, 'envoy.yaml');
  fs.writeFileSync(yamlPath, toYaml(cfg));
  const logFile = path.join(dir, 'envoy.log');
  const args = [
    '-c', yamlPath, '--concurrency', '2', '--log-level', 'info', '--disable-hot-restart',
    '--base-id', String(3_000_000 + (process.pid % 100_000)),
    '--log-format', '[%Y-%m-%d %T.%e][%t][%l][%n] [%g:%#] %v',
  ];
  const proc = spawnLogged(ENVOY_BIN, args, { logFile });
  const deadline = now() + 60_000;
  while (now() < deadline && !proc.exitInfo) {
    try {
      const res = await request(`http://127.0.0.1:${adminPort}/ready`, { timeoutMs: 1000 });
      if (res.status === 200 && res.body.trim() === 'LIVE') break;
    } catch { /* not up yet */ }
    await sleep(200);
  }
  if (proc.exitInfo) throw new Error(`Envoy exited at start (${JSON.stringify(proc.exitInfo)}):\n${fs.readFileSync(logFile, 'utf8').slice(-4000)}`);
  return {
    proc, pid: proc.pid, adminPort, logFile, yamlPath,
    loginUrl: `http://127.0.0.1:${loginPort}`,
    validateUrl: `http://127.0.0.1:${validatePort}`,
    admin: async (p) => (await request(`http://127.0.0.1:${adminPort}${p}`, { timeoutMs: 5000 })).body,
    stop: () => proc.stop(),
  };
}

function envoyVersion() {
  const r = spawnSync(ENVOY_BIN, ['--version'], { encoding: 'utf8' });
  return (/version: \S+?\/([\d.]+)\//.exec(r.stdout ?? '') ?? [])[1];
}

function rssKiB(pid) {
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : undefined;
}

function parseStats(text) {
  const out = {};
  for (const line of text.split('\n')) {
    const m = /^([^:]+): (\d+)$/.exec(line.trim());
    if (!m) continue;
    const k = m[1];
    if (k.startsWith('server.memory_') || k.startsWith('wasm.') || k.startsWith('wasmcustom.')) out[k] = Number(m[2]);
  }
  return out;
}

// ----------------------------------------------------------------------------------- requests

/** What an answer was, in a word (see EXPLAINS). */
function observe(res, err, { user, issuer, base }) {
  if (err) return `ERR:${err.code ?? String(err.message).slice(0, 40)}`;
  if (res.status === 200) {
    if (!user) return '200';
    if (/text\/html/.test(String(res.headers['content-type']))) {
      return res.body.includes(`Hello, ${user}<`) ? '200user' : '200anon';
    }
    try { return JSON.parse(res.body).headers['x-user'] === user ? '200user' : '200anon'; } catch { return '200anon'; }
  }
  if (res.status >= 300 && res.status < 400) {
    const loc = String(res.headers.location ?? '');
    if (loc.startsWith(`${issuer}/protocol/openid-connect/auth?`)) return '302auth';
    if (loc.startsWith(`${issuer}/protocol/openid-connect/logout`)) return '302endsession';
    if (loc.startsWith('/') || (base && loc.startsWith(`${base}/`))) return '302local';
    return '302other';
  }
  return String(res.status);
}

/**
 * One request to Envoy: rate-capped, tagged with an x-request-id (the filter logs it), recorded.
 * `extra` is kept in the record (token facts for the judgement).
 */
async function envoyRequest(listener, kind, url, { jar, headers = {}, user, extra = {} } = {}) {
  if (!(await limiter.take(1))) return undefined;
  const rid = `soak-${crypto.randomBytes(6).toString('hex')}`;
  const h = { ...headers, 'x-request-id': rid };
  const t0 = now();
  let res;
  let err;
  try {
    res = jar ? await requestWithJar(jar, url, { headers: h, timeoutMs: 25_000 })
      : await request(url, { headers: h, timeoutMs: 25_000 });
  } catch (e) { err = e; }
  const t1 = now();
  const base = listener === 'login' ? envoy.loginUrl : envoy.validateUrl;
  const rec = {
    rid, t0, t1, listener, kind, status: res?.status ?? 0,
    obs: observe(res, err, { user, issuer: provider.issuer, base }),
    path: new URL(url).pathname.slice(0, 60),
    ...extra,
  };
  records.push(rec);
  return { res, rec };
}

/** Several requests at once (tabs of one browser): one rate-cap step for all. */
async function envoyRequests(list) {
  return Promise.all(list.map((r) => envoyRequest(...r)));
}

// ----------------------------------------------------------------------------------- keys and tokens

const keyring = {
  keys: undefined, // the provider's current key set (withKeys)
  previous: undefined, // the signing key before the last rotation
  attacker: undefined,
  attackerEc: undefined,
};

function publish(keys, t) {
  const published = new Set(keys.sig.map((k) => k.kid));
  for (const k of keys.sig) if (!kids.has(k.kid)) kids.set(k.kid, { publishedAt: t, droppedAt: undefined });
  for (const [kid, info] of kids) if (!published.has(kid) && info.droppedAt === undefined) info.droppedAt = t;
}

const validPool = [];
async function validToken() {
  const key = keyring.keys.signing;
  const t = now();
  for (let i = validPool.length - 1; i >= 0; i--) {
    if (validPool[i].kid !== key.kid || validPool[i].exp * 1000 < t + 30_000) validPool.splice(i, 1);
  }
  if (validPool.length >= 8 && Math.random() < 0.5) return pick(validPool);
  const claims = accessTokenClaims({ issuer: provider.issuer, ttl: 120 });
  const token = await signToken(claims, { key });
  const entry = { token, kid: key.kid, exp: claims.exp };
  validPool.push(entry);
  if (validPool.length > 16) validPool.shift();
  return entry;
}

async function prevKeyToken() {
  const key = keyring.previous;
  const claims = accessTokenClaims({ issuer: provider.issuer, ttl: 120 });
  return { token: await signToken(claims, { key }), kid: key.kid, exp: claims.exp };
}

const b64 = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

const FORGED = {
  tampered: async () => tamper((await validToken()).token, (p) => ({ ...p, preferred_username: 'mallory', sub: crypto.randomUUID() })),
  'real kid, attacker key': () => signToken(accessTokenClaims({ issuer: provider.issuer }), { key: keyring.attacker, kid: keyring.keys.signing.kid }),
  'unknown kid': () => signToken(accessTokenClaims({ issuer: provider.issuer }), { key: keyring.attacker, kid: crypto.randomBytes(9).toString('base64url') }),
  'ES256 unknown key': () => signToken(accessTokenClaims({ issuer: provider.issuer }), { key: keyring.attackerEc }),
  'alg none': () => signToken(accessTokenClaims({ issuer: provider.issuer }), { alg: 'none', kid: keyring.keys.signing.kid }),
  'HS256 with the public key': () => signToken(accessTokenClaims({ issuer: provider.issuer }), {
    alg: 'HS256', kid: keyring.keys.signing.kid, secret: publicPem(keyring.keys.signing),
  }),
  'wrong issuer': () => signToken(accessTokenClaims({ issuer: 'http://127.0.0.1:1/realms/dev' }), { key: keyring.keys.signing }),
  'wrong azp': () => signToken(accessTokenClaims({ issuer: provider.issuer, azp: 'other-client' }), { key: keyring.keys.signing }),
  'not yet valid': () => signToken(accessTokenClaims({ issuer: provider.issuer, nbf: Math.floor(now() / 1000) + 3600 }), { key: keyring.keys.signing }),
  'spliced signature': async () => {
    const a = await signToken(accessTokenClaims({ issuer: provider.issuer, preferred_username: 'mallory' }), { key: keyring.attacker, kid: keyring.keys.signing.kid });
    const b = (await validToken()).token;
    return `${a.split('.').slice(0, 2).join('.')}.${b.split('.')[2]}`;
  },
  'signed with the enc key': () => signToken(accessTokenClaims({ issuer: provider.issuer }), {
    key: { ...keyring.keys.enc, alg: 'RS256' }, alg: 'RS256', kid: keyring.keys.enc.kid,
  }),
};

const GARBAGE = {
  'random base64url': () => ({ authorization: `Bearer ${crypto.randomBytes(rand(20, 300)).toString('base64url')}` }),
  'three random parts': () => ({ authorization: `Bearer ${[1, 2, 3].map(() => crypto.randomBytes(rand(1, 60)).toString('base64url')).join('.')}` }),
  dots: () => ({ authorization: `Bearer ${'.'.repeat(rand(1, 50))}` }),
  'header only': () => ({ authorization: `Bearer ${b64({ alg: 'RS256', kid: keyring.keys.signing.kid })}` }),
  'payload not JSON': () => ({ authorization: `Bearer ${b64({ alg: 'RS256', kid: keyring.keys.signing.kid, typ: 'JWT' })}.${b64('not json {')}.${crypto.randomBytes(256).toString('base64url')}` }),
  'header not JSON': () => ({ authorization: `Bearer ${b64('{"alg":')}.${b64({ sub: 'x' })}.AAAA` }),
  'Basic scheme': () => ({ authorization: `Basic ${Buffer.from('alice:alice-password').toString('base64')}` }),
  'empty Bearer': () => ({ authorization: 'Bearer ' }),
  'huge token': () => ({ authorization: `Bearer ${crypto.randomBytes(9000).toString('base64url')}.${'A'.repeat(100)}.${'B'.repeat(100)}` }),
  'garbage cookie': () => ({ cookie: `access_token=${crypto.randomBytes(rand(10, 200)).toString('base64url')}` }),
  'two different tokens': () => ({ authorization: `Bearer ${crypto.randomBytes(30).toString('base64url')}`, cookie: `access_token=${crypto.randomBytes(30).toString('base64url')}` }),
};

// ----------------------------------------------------------------------------------- browsers

const USERS = [{ username: 'alice', password: 'alice-password' }, { username: 'bob', password: 'bob-password' }];

function newPath(prefix) { return `${prefix}/${crypto.randomBytes(4).toString('hex')}`; }

async function browserLogin(b, location) {
  const t0 = now();
  let stage = 'start';
  const fail = (why) => {
    logins.push({ t0, t1: now(), ok: false, stage, why: String(why).slice(0, 200), browser: b.id });
    return false;
  };
  try {
    let authUrl;
    if (location) {
      authUrl = new URL(location);
    } else {
      const r = await envoyRequest('login', 'login-start', `${envoy.loginUrl}${newPath('/start')}`, { jar: b.jar, headers: PAGE_HEADERS, user: b.user.username });
      if (!r) return false;
      if (r.rec.obs === '200user') return true;
      if (r.rec.obs !== '302auth') return fail(`login start answered ${r.rec.obs}`);
      authUrl = new URL(r.res.headers.location);
    }
    const redirectUri = authUrl.searchParams.get('redirect_uri');
    stage = 'provider';
    const { callbackUrl } = await toCallback(b.jar, authUrl, redirectUri, b.user);
    stage = 'callback';
    const cb = await envoyRequest('login', 'callback', callbackUrl, { jar: b.jar, headers: PAGE_HEADERS, user: b.user.username });
    if (!cb) return false;
    if (cb.rec.obs !== '302local') return fail(`callback answered ${cb.rec.obs}`);
    stage = 'final';
    const fin = await envoyRequest('login', 'login-final', new URL(cb.res.headers.location, envoy.loginUrl).href, { jar: b.jar, headers: PAGE_HEADERS, user: b.user.username });
    if (!fin) return false;
    if (fin.rec.obs !== '200user') return fail(`the page after the callback answered ${fin.rec.obs}`);
    logins.push({ t0, t1: now(), ok: true, stage: 'done', browser: b.id });
    b.logins += 1;
    return true;
  } catch (e) {
    return fail(e.message);
  }
}

async function browserLogout(b) {
  const r = await envoyRequest('login', 'logout', `${envoy.loginUrl}/logout`, { jar: b.jar, headers: PAGE_HEADERS, user: b.user.username });
  if (!r || r.rec.obs !== '302endsession') return;
  const t0 = now();
  try {
    const out = await requestWithJar(b.jar, r.res.headers.location, { headers: PAGE_HEADERS, timeoutMs: 25_000 });
    const back = String(out.headers.location ?? '');
    const ok = out.status === 302 && back.startsWith(`${envoy.loginUrl}/`);
    providerSteps.push({ t0, t1: now(), kind: 'logout-at-provider', ok, why: ok ? undefined : `${out.status} ${back || out.body.slice(0, 120)}` });
  } catch (e) {
    providerSteps.push({ t0, t1: now(), kind: 'logout-at-provider', ok: false, why: e.message });
  }
}

/** The session's access token, as the page would pass it on to a service. */
function sessionToken(b) {
  const token = b.jar.get(envoy.loginUrl, 'access_token');
  if (!token) return undefined;
  try {
    const { header, payload } = decodeJwt(token);
    return { token, kid: header.kid, exp: payload.exp };
  } catch { return undefined; }
}

async function browserLoop(b) {
  let loggedIn = false;
  let resume; // a 302 to the provider that ended the session: the login goes on from it
  while (!stopping) {
    if (!loggedIn) {
      loggedIn = await browserLogin(b, resume);
      resume = undefined;
      if (!loggedIn) { await sleep(rand(1000, 2500)); continue; }
    }
    const budget = rand(100, 250); // 40 to 120 s: a session outlives several access tokens
    for (let i = 0; i < budget && loggedIn && !stopping; i++) {
      const r = Math.random();
      const u = b.user.username;
      let outs = [];
      if (r < 0.15) {
        const n = rand(3, 4);
        outs = await envoyRequests(Array.from({ length: n }, () => ['login', 'tab', `${envoy.loginUrl}${newPath('/tab')}`, { jar: b.jar, headers: PAGE_HEADERS, user: u }]));
      } else if (r < 0.27) {
        outs = [await envoyRequest('login', 'api-login', `${envoy.loginUrl}${newPath('/api/cart')}`, { jar: b.jar, headers: API_HEADERS, user: u })];
      } else if (r < 0.37) {
        const t = sessionToken(b);
        if (t) {
          outs = [await envoyRequest('validate', 'forward', `${envoy.validateUrl}${newPath('/details')}`, {
            headers: { authorization: `Bearer ${t.token}`, accept: 'application/json' }, user: u, extra: { kid: t.kid, exp: t.exp },
          })];
        }
      } else {
        outs = [await envoyRequest('login', 'page', `${envoy.loginUrl}${newPath('/productpage')}`, { jar: b.jar, headers: PAGE_HEADERS, user: u })];
      }
      for (const o of outs) {
        if (!o) continue;
        if (o.rec.obs === '302auth') { loggedIn = false; resume = o.res.headers.location; }
        if (o.rec.kind === 'api-login' && o.rec.status === 401) { loggedIn = false; }
      }
      b.requests += outs.length;
      await sleep(rand(150, 600));
    }
    if (loggedIn && !stopping) {
      await browserLogout(b);
      loggedIn = false;
    }
  }
}

// ----------------------------------------------------------------------------------- API clients

async function apiLoop(c) {
  const v = envoy.validateUrl;
  const apiHeaders = { accept: 'application/json' };
  while (!stopping) {
    const r = Math.random();
    let out;
    try {
      if (r < 0.35) {
        const t = await validToken();
        const viaCookie = Math.random() < 0.2;
        out = await envoyRequest('validate', 'api-valid', `${v}${newPath('/api/details')}`, {
          headers: { ...apiHeaders, ...(viaCookie ? { cookie: `access_token=${t.token}` } : { authorization: `Bearer ${t.token}` }) },
          user: 'alice', extra: { kid: t.kid, exp: t.exp },
        });
      } else if (r < 0.45 && keyring.previous) {
        const t = await prevKeyToken();
        out = await envoyRequest('validate', 'api-prevkey', `${v}${newPath('/api/details')}`, {
          headers: { ...apiHeaders, authorization: `Bearer ${t.token}` }, user: 'alice', extra: { kid: t.kid, exp: t.exp },
        });
      } else if (r < 0.55) {
        const iat = Math.floor(now() / 1000) - 3900;
        const token = await signToken(accessTokenClaims({ issuer: provider.issuer, now: iat, ttl: 300 }), { key: keyring.keys.signing });
        out = await envoyRequest('validate', 'api-bad', `${v}${newPath('/api/details')}`, {
          headers: { ...apiHeaders, authorization: `Bearer ${token}` }, user: 'alice', extra: { variant: 'expired' },
        });
      } else if (r < 0.77) {
        const variant = pick(Object.keys(FORGED));
        const token = await FORGED[variant]();
        out = await envoyRequest('validate', 'api-bad', `${v}${newPath('/api/details')}`, {
          headers: { ...apiHeaders, authorization: `Bearer ${token}` }, user: 'alice', extra: { variant: `forged: ${variant}` },
        });
      } else if (r < 0.92) {
        const variant = pick(Object.keys(GARBAGE));
        out = await envoyRequest('validate', 'api-bad', `${v}${newPath('/api/details')}`, {
          headers: { ...apiHeaders, ...GARBAGE[variant]() }, user: 'alice', extra: { variant: `garbage: ${variant}` },
        });
      } else {
        // forged cookies at the login listener: a session cookie that is not sealed, a forged or
        // expired token
        const variant = pick(['forged token', 'expired token + junk session', 'junk session']);
        let cookie;
        if (variant === 'forged token') cookie = `access_token=${await FORGED['real kid, attacker key']()}`;
        else if (variant === 'junk session') cookie = `access_token_session=${crypto.randomBytes(120).toString('base64url')}`;
        else {
          const iat = Math.floor(now() / 1000) - 3900;
          const expired = await signToken(accessTokenClaims({ issuer: provider.issuer, now: iat, ttl: 300 }), { key: keyring.keys.signing });
          cookie = `access_token=${expired}; access_token_session=${crypto.randomBytes(200).toString('base64url')}`;
        }
        const asApi = Math.random() < 0.4;
        out = await envoyRequest('login', 'login-garbage', `${envoy.loginUrl}${newPath(asApi ? '/api/x' : '/page')}`, {
          headers: { ...(asApi ? API_HEADERS : PAGE_HEADERS), cookie }, user: 'alice', extra: { variant },
        });
      }
    } catch (e) {
      log(`api client ${c.id}: ${e.stack ?? e}`);
    }
    if (out) c.requests += 1;
    await sleep(rand(40, 200));
  }
}

// ----------------------------------------------------------------------------------- faults

function openWindow(kind, what) {
  const w = { kind, what, start: now(), end: undefined };
  windows.push(w);
  log(`fault: ${kind} begins (${what})`);
  return w;
}
function closeWindow(w) {
  w.end = now();
  log(`fault: ${w.kind} ends after ${((w.end - w.start) / 1000).toFixed(1)} s`);
}

async function restartProvider(keys, what) {
  const w = openWindow('restart', what);
  try {
    await provider.restart(keys ? { keys } : {});
  } finally {
    closeWindow(w);
  }
  if (keys) {
    keyring.keys = keys;
    publish(keys, now());
  }
}

const SLOW_CONTROL = { delayMs: Object.fromEntries(['token', 'certs', 'revoke', 'discovery', 'introspect', 'userinfo'].map((k) => [k, SLOW_MS])) };

async function runFault(f, untilMs) {
  const hold = async () => { const left = untilMs - now(); if (left > 0) await sleepUnlessStopping(left); };
  switch (f.kind) {
    case 'slow': {
      await provider.control(SLOW_CONTROL);
      const w = openWindow('slow', f.what);
      await hold();
      await provider.control({});
      closeWindow(w);
      break;
    }
    case 'token500': {
      await provider.control({ failStatus: { token: 500 } });
      const w = openWindow('token500', f.what);
      await hold();
      await provider.control({});
      closeWindow(w);
      break;
    }
    case 'garbage': {
      proxy.setGarbage(['token', 'certs']);
      const w = openWindow('garbage', f.what);
      await hold();
      proxy.setGarbage([]);
      closeWindow(w);
      break;
    }
    case 'down': {
      const w = openWindow('down', f.what);
      await provider.stop();
      await hold();
      await provider.restart({});
      closeWindow(w);
      break;
    }
    case 'rotate': {
      const fresh = generateKeys();
      const keys = withKeys(keyring.keys.enc, [fresh.signing, ...keyring.keys.sig]);
      keyring.previous = keyring.keys.signing;
      await restartProvider(keys, f.what);
      // marks the seconds in which the filter first meets the new key (explains nothing)
      const w = openWindow('rotation', `tokens of the new signing key ${keys.signing.kid.slice(0, 6)}… reach the filter (it fetches the set again at most once every ${REFETCH_MIN_INTERVAL_MS / 1000} s)`);
      w.end = w.start + REFETCH_MIN_INTERVAL_MS + TIMEOUT_MS;
      w.kid = keys.signing.kid;
      break;
    }
    case 'shrink': {
      const keys = withKeys(keyring.keys.enc, [keyring.keys.signing]);
      await restartProvider(keys, f.what);
      // the filter learns of it at its next key-set refresh (jwks_refresh_seconds), see goodToken
      const w = openWindow('shrink', `key set of ${keys.sig.length} signing key: the filter drops the old one at its next refresh (${JWKS_REFRESH_S} s)`);
      w.end = w.start + JWKS_REFRESH_S * 1000 + TIMEOUT_MS + 5000;
      break;
    }
    default:
      throw new Error(`unknown fault ${f.kind}`);
  }
}

async function sleepUnlessStopping(ms) {
  const end = now() + ms;
  while (!stopping && now() < end) await sleep(Math.min(250, end - now()));
}

async function faultLoop() {
  const scale = Math.min(1, MINUTES / 10);
  const cycleMs = CYCLE_S * 1000 * scale;
  for (let cycle = 0; !stopping; cycle++) {
    for (const f of SCHEDULE) {
      const at = startAt + cycle * cycleMs + f.at * 1000 * scale;
      const until = f.until !== undefined ? startAt + cycle * cycleMs + f.until * 1000 * scale : undefined;
      if (at >= startAt + DURATION_MS - 2000) return;
      await sleepUnlessStopping(at - now());
      if (stopping) return;
      try {
        await runFault(f, until);
      } catch (e) {
        log(`fault ${f.kind} failed: ${e.stack ?? e}`);
        failures.push(`the fault ${f.kind} could not be carried out: ${e.message}`);
      }
    }
  }
}

// ----------------------------------------------------------------------------------- sampling

let logOffset = 0;
function scanLog() {
  const fd = fs.openSync(envoy.logFile, 'r');
  const size = fs.fstatSync(fd).size;
  const counts = { t: now(), panic: 0, wasmError: 0, wasmWarn: 0, critical: 0 };
  if (size > logOffset) {
    const buf = Buffer.alloc(size - logOffset);
    fs.readSync(fd, buf, 0, buf.length, logOffset);
    const text = buf.toString('utf8');
    const lastNl = text.lastIndexOf('\n');
    if (lastNl >= 0) {
      logOffset += Buffer.byteLength(text.slice(0, lastNl + 1));
      for (const line of text.slice(0, lastNl).split('\n')) {
        const kinds = [];
        if (crashLines(line).length || /panicked|\bpanic\b/i.test(line)) kinds.push('panic');
        if (/\]\[(error|critical)\]\[wasm\]/.test(line)) kinds.push('wasmError');
        if (/\]\[warning\]\[wasm\]/.test(line)) kinds.push('wasmWarn');
        if (/\]\[critical\]\[/.test(line)) kinds.push('critical');
        for (const k of kinds) {
          counts[k] += 1;
          if (logFindings[k].length < 400) logFindings[k].push({ t: now(), line: line.slice(0, 400) });
        }
      }
    }
  }
  fs.closeSync(fd);
  logCounts.push(counts);
}

async function sampleLoop() {
  let lastStats = 0;
  while (!stopping) {
    try {
      const rss = rssKiB(envoy.pid);
      if (rss !== undefined) samples.push({ t: now(), rssKiB: rss });
      scanLog();
      if (now() - lastStats >= 10_000) {
        lastStats = now();
        statSamples.push({ t: now(), stats: parseStats(await envoy.admin('/stats')) });
      }
      if (!envoy.proc.exitInfo) { /* alive */ } else {
        failures.push(`Envoy exited during the run: ${JSON.stringify(envoy.proc.exitInfo)}`);
        stopping = true;
        stopReason = 'Envoy exited';
      }
    } catch (e) {
      if (envoy.proc.exitInfo) {
        failures.push(`Envoy exited during the run: ${JSON.stringify(envoy.proc.exitInfo)}`);
        stopping = true;
        stopReason = 'Envoy exited';
      } else {
        log(`sampling: ${e.message}`);
      }
    }
    await sleep(2000);
  }
}

async function progressLoop() {
  let last = 0;
  while (!stopping) {
    await sleepUnlessStopping(30_000);
    const recent = records.slice(last);
    last = records.length;
    const by = {};
    for (const r of recent) by[r.obs] = (by[r.obs] ?? 0) + 1;
    const rss = samples.at(-1)?.rssKiB;
    log(`${records.length} requests (${recent.length} in 30 s: ${Object.entries(by).sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k} ${n}`).join(', ')}); logins ${logins.filter((l) => l.ok).length} ok / ${logins.filter((l) => !l.ok).length} not; RSS ${rss ? (rss / 1024).toFixed(1) : '?'} MiB`);
  }
}

// ----------------------------------------------------------------------------------- judgement

const failures = [];
const SLACK_MS = 250;
const overlaps = (w, t0, t1) => t0 <= (w.end ?? Infinity) + SLACK_MS && t1 >= w.start - SLACK_MS;
const openDuring = (t0, t1) => windows.filter((w) => overlaps(w, t0, t1));

/** When a dropped key may still be accepted until: its shrink window, stretched past any unhealthy
 * window that begins inside it (the filter's key-set fetch cannot succeed then). */
function droppedUntil(droppedAt) {
  let end = droppedAt + JWKS_REFRESH_S * 1000 + TIMEOUT_MS + 5000;
  for (const w of [...windows].sort((a, b) => a.start - b.start)) {
    if (UNHEALTHY.has(w.kind) && w.start <= end && (w.end ?? Infinity) >= droppedAt) {
      end = Math.max(end, (w.end ?? Infinity) + JWKS_REFRESH_S * 1000 + TIMEOUT_MS + 5000);
    }
  }
  return end;
}

/** What a request carrying a good token (right issuer, azp, signature by a key of the provider's)
 * may get: 200 while the token and its key are live, 401 once either is not. */
function goodToken(rec) {
  const allowed = new Map(); // answer -> why it is allowed (undefined: simply expected)
  const info = kids.get(rec.kid);
  const expMs = rec.exp * 1000;
  if (rec.t0 > expMs + CLOCK_SKEW_S * 1000 + 1000) return new Map([['401', undefined]]);
  if (rec.t1 > expMs - 1000) allowed.set('401', 'token expiry'); // around exp and within the skew: either
  if (!info) return new Map([['401', undefined]]);
  let live = true;
  if (info.droppedAt !== undefined && rec.t1 >= info.droppedAt - SLACK_MS) {
    const until = droppedUntil(info.droppedAt);
    if (rec.t0 > until) { live = false; allowed.set('401', undefined); } else if (!allowed.has('401')) allowed.set('401', 'shrink');
  }
  if (live) allowed.set('200user', undefined);
  return allowed;
}

function judge(rec) {
  if (rec.t1 - rec.t0 > MAX_ANSWER_MS) return { ok: false, allowed: [`an answer within ${MAX_ANSWER_MS} ms`], why: `answered after ${rec.t1 - rec.t0} ms` };
  if (rec.kind === 'forward' || rec.kind === 'api-valid' || rec.kind === 'api-prevkey') {
    const allowed = goodToken(rec);
    if (allowed.has(rec.obs)) return { ok: true, explainedBy: allowed.get(rec.obs) };
    return { ok: false, allowed: [...allowed.keys()] };
  }
  const e = EXPLAINS[rec.kind];
  if (!e) return { ok: false, allowed: [], why: `no rule for ${rec.kind}` };
  if (e.always.includes(rec.obs)) return { ok: true };
  const open = openDuring(rec.t0, rec.t1);
  const allowed = new Set(e.always);
  let by;
  for (const w of SELF_CHECK ? [] : open) {
    const extra = UNHEALTHY.has(w.kind) ? e.unhealthy : e[w.kind];
    for (const o of extra ?? []) {
      allowed.add(o);
      if (o === rec.obs && !by) by = w.kind;
    }
  }
  if (by) return { ok: true, explainedBy: by };
  return { ok: false, allowed: [...allowed] };
}

function outcomeClass(rec, verdict) {
  if (!verdict.ok) return 'unexpected';
  if (rec.obs.startsWith('200')) return 'ok';
  if (rec.obs.startsWith('302')) return 'redirect';
  if (/^4\d\d$/.test(rec.obs)) return 'refused';
  if (/^5\d\d$/.test(rec.obs)) return 'fault5xx';
  return 'other';
}

function percentile(sorted, p) {
  if (!sorted.length) return undefined;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}
const median = (xs) => percentile([...xs].sort((a, b) => a - b), 50);

function envoyLinesFor(rid) {
  const out = [];
  for (const f of [envoy.logFile, path.join(OUT, 'access-login.log'), path.join(OUT, 'access-validate.log')]) {
    if (!fs.existsSync(f)) continue;
    for (const line of fs.readFileSync(f, 'utf8').split('\n')) if (line.includes(rid)) out.push(line.slice(0, 600));
  }
  return out;
}

function analyse() {
  const unexpected = [];
  for (const rec of records) {
    const v = judge(rec);
    rec.verdict = v.ok ? (v.explainedBy ? `explained by ${v.explainedBy}` : 'expected') : 'unexpected';
    rec.outcome = outcomeClass(rec, v);
    if (!v.ok) {
      unexpected.push({
        what: 'answer', t: rel(rec.t0), kind: rec.kind, listener: rec.listener, obs: rec.obs, allowed: v.allowed,
        rid: rec.rid, path: rec.path, variant: rec.variant, ms: rec.t1 - rec.t0, why: v.why,
        faults: openDuring(rec.t0, rec.t1).map((w) => w.kind),
      });
    }
  }
  for (const l of logins) {
    const unhealthy = SELF_CHECK ? [] : openDuring(l.t0, l.t1).filter((w) => UNHEALTHY.has(w.kind));
    l.explainedBy = l.ok ? undefined : unhealthy.map((w) => w.kind)[0];
    // a login whose callback answered something unexpected is already counted as that answer
    const counted = /^callback answered|^the page after the callback|^login start answered/.test(l.why ?? '');
    if (!l.ok && !l.explainedBy && !counted) {
      unexpected.push({ what: 'login not completed while the provider was healthy', t: rel(l.t0), stage: l.stage, why: l.why, browser: l.browser });
    }
  }
  for (const s of providerSteps) {
    if (!s.ok && !openDuring(s.t0, s.t1).some((w) => UNHEALTHY.has(w.kind))) {
      unexpected.push({ what: `${s.kind} failed while the provider was healthy`, t: rel(s.t0), why: s.why });
    }
  }
  for (const u of unexpected) if (u.rid) u.envoy = envoyLinesFor(u.rid);
  return unexpected;
}

function statAt(t) {
  let best;
  for (const s of statSamples) if (s.t <= t) best = s;
  return best?.stats ?? statSamples[0]?.stats ?? {};
}

function perMinute(unexpected) {
  const n = Math.ceil(DURATION_MS / 60_000);
  const rows = [];
  const firstStats = statSamples[0]?.stats ?? {};
  for (let m = 0; m < n; m++) {
    const from = startAt + m * 60_000;
    const to = Math.min(startAt + (m + 1) * 60_000, startAt + DURATION_MS + 60_000);
    const inMin = records.filter((r) => r.t0 >= from && r.t0 < to);
    const count = (o) => inMin.filter((r) => r.outcome === o).length;
    const byStatus = {};
    for (const r of inMin) byStatus[r.obs] = (byStatus[r.obs] ?? 0) + 1;
    const ms = inMin.map((r) => r.t1 - r.t0).sort((a, b) => a - b);
    const vms = inMin.filter((r) => r.kind === 'api-valid' && r.obs === '200user').map((r) => r.t1 - r.t0).sort((a, b) => a - b);
    const rss = samples.filter((s) => s.t >= from && s.t < to).map((s) => s.rssKiB);
    const statsEnd = m === n - 1 ? (statSamples.at(-1)?.stats ?? {}) : statAt(to);
    const statsStart = m === 0 ? firstStats : statAt(from);
    const delta = (k) => (statsEnd[k] ?? 0) - (statsStart[k] ?? 0);
    const logs = logCounts.filter((c) => c.t >= from && c.t < to);
    const sum = (k) => logs.reduce((a, c) => a + c[k], 0);
    const faults = windows.filter((w) => w.start < to && (w.end ?? Infinity) >= from).map((w) => w.kind);
    rows.push({
      minute: m + 1,
      faults: [...new Set(faults)],
      requests: inMin.length,
      ok: count('ok'),
      redirect: count('redirect'),
      refused: count('refused'),
      fault5xx: count('fault5xx'),
      unexpected: unexpected.filter((u) => u.t >= m * 60 && u.t < (m + 1) * 60).length,
      byStatus,
      loginsOk: logins.filter((l) => l.ok && l.t0 >= from && l.t0 < to).length,
      loginsFailed: logins.filter((l) => !l.ok && l.t0 >= from && l.t0 < to).length,
      refreshesOk: delta('wasmcustom.mesh_oidc.refreshes_ok'),
      refreshesFailed: delta('wasmcustom.mesh_oidc.refreshes_failed'),
      p50: percentile(ms, 50),
      p99: percentile(ms, 99),
      maxMs: ms.length ? ms[ms.length - 1] : undefined,
      validP50: percentile(vms, 50),
      validP99: percentile(vms, 99),
      rssMiB: rss.length ? rss[rss.length - 1] / 1024 : undefined,
      rssMaxMiB: rss.length ? Math.max(...rss) / 1024 : undefined,
      heapMiB: statsEnd['server.memory_allocated'] !== undefined ? statsEnd['server.memory_allocated'] / 1048576 : undefined,
      nonHeapMiB: rss.length && statsEnd['server.memory_physical_size'] !== undefined
        ? (rss[rss.length - 1] * 1024 - statsEnd['server.memory_physical_size']) / 1048576 : undefined,
      wasmWarn: sum('wasmWarn'),
      wasmError: sum('wasmError'),
      panics: sum('panic'),
      vmCreated: delta('wasm.envoy.wasm.runtime.v8.created'),
      vmReloads: ['login', 'validate'].reduce((a, l) => a + delta(`wasm.mesh-oidc-${l}.vm_reload`), 0),
    });
  }
  return rows;
}

function memoryVerdict() {
  const half = startAt + DURATION_MS / 2;
  const eighth = DURATION_MS / 8;
  const q1 = samples.filter((s) => s.t >= half && s.t < half + eighth).map((s) => s.rssKiB / 1024);
  const q4 = samples.filter((s) => s.t >= startAt + DURATION_MS - eighth && s.t <= startAt + DURATION_MS).map((s) => s.rssKiB / 1024);
  const first = median(q1);
  const last = median(q4);
  const growth = first !== undefined && last !== undefined ? last - first : undefined;
  const between = records.filter((r) => r.t0 >= half + eighth / 2 && r.t0 < startAt + DURATION_MS - eighth / 2).length;
  // least squares over the second half, MiB per minute
  const pts = samples.filter((s) => s.t >= half).map((s) => [(s.t - startAt) / 60_000, s.rssKiB / 1024]);
  let slope;
  if (pts.length > 2) {
    const mx = pts.reduce((a, p) => a + p[0], 0) / pts.length;
    const my = pts.reduce((a, p) => a + p[1], 0) / pts.length;
    const sxy = pts.reduce((a, p) => a + (p[0] - mx) * (p[1] - my), 0);
    const sxx = pts.reduce((a, p) => a + (p[0] - mx) ** 2, 0);
    slope = sxx ? sxy / sxx : undefined;
  }
  const all = samples.map((s) => s.rssKiB / 1024);
  return {
    judged: JUDGE_MEMORY,
    boundMiB: RSS_BOUND_MIB,
    firstQuarterMedianMiB: first,
    lastQuarterMedianMiB: last,
    growthMiB: growth,
    growthPercent: growth !== undefined && first ? (100 * growth) / first : undefined,
    slopeMiBPerMinute: slope,
    requestsBetween: between,
    detectableKiBPerRequest: between ? (RSS_BOUND_MIB * 1024) / between : undefined,
    startMiB: all[0],
    peakMiB: all.length ? Math.max(...all) : undefined,
    endMiB: all.at(-1),
    ok: !JUDGE_MEMORY || (growth !== undefined && growth <= RSS_BOUND_MIB),
  };
}

// ----------------------------------------------------------------------------------- output

const fmt = (v, d = 1) => (v === undefined || Number.isNaN(v) ? '–' : Number(v).toFixed(d));

function minutesTable(rows) {
  const head = '| min | faults | requests | ok | redirect | refused | 5xx explained | unexpected | logins ok / not | refreshes ok / failed | p50 ms | p99 ms | max ms | RSS MiB | Envoy heap MiB | RSS − heap MiB | wasm warn / error | panics | VM restarts |';
  const sep = '| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |';
  const lines = rows.map((r) => `| ${r.minute} | ${r.faults.join(', ') || '–'} | ${r.requests} | ${r.ok} | ${r.redirect} | ${r.refused} | ${r.fault5xx} | ${r.unexpected} | ${r.loginsOk} / ${r.loginsFailed} | ${r.refreshesOk} / ${r.refreshesFailed} | ${fmt(r.p50, 0)} | ${fmt(r.p99, 0)} | ${fmt(r.maxMs, 0)} | ${fmt(r.rssMiB)} | ${fmt(r.heapMiB)} | ${fmt(r.nonHeapMiB)} | ${r.wasmWarn} / ${r.wasmError} | ${r.panics} | ${r.vmCreated + r.vmReloads} |`);
  return [head, sep, ...lines].join('\n');
}

function explainedCounts() {
  const out = {};
  for (const r of records) {
    if (!r.verdict?.startsWith('explained by')) continue;
    const k = `${r.verdict.slice(13)}|${r.kind}|${r.obs}`;
    out[k] = (out[k] ?? 0) + 1;
  }
  return Object.entries(out).map(([k, n]) => { const [by, kind, obs] = k.split('|'); return { by, kind, obs, n }; })
    .sort((a, b) => a.by.localeCompare(b.by) || b.n - a.n);
}

function runPython(args) {
  return new Promise((resolve) => {
    const p = spawn(PYTHON, args, { stdio: ['ignore', 'inherit', 'inherit'] });
    p.on('exit', (code) => resolve(code));
    p.on('error', (e) => { log(`plot: ${e.message}`); resolve(-1); });
  });
}

// ----------------------------------------------------------------------------------- main

async function stopAll() {
  for (const p of procs.splice(0).reverse()) {
    try { await p.stop(); } catch (e) { log(`stop ${p.name}: ${e.message}`); }
  }
}

async function main() {
  if (!fs.existsSync(WASM_PATH)) throw new Error(`${WASM_PATH} is missing: run make build`);
  fs.rmSync(OUT, { recursive: true, force: true });
  fs.mkdirSync(OUT, { recursive: true });
  log(`${MINUTES} min, ${BROWSERS} browsers, ${API_CLIENTS} API clients, at most ${RATE} requests/s and ${MAX_REQUESTS} requests; access tokens live ${TOKEN_TTL} s; out: ${path.relative(process.cwd(), OUT)}`);

  keyring.keys = generateKeys();
  keyring.attacker = generateKey('RS256');
  keyring.attackerEc = generateKey('ES256');

  echo = await startEcho();
  procs.push({ name: 'echo', stop: () => echo.stop() });
  const loginPort = await freePort();
  const providerDir = path.join(OUT, 'provider');
  fs.mkdirSync(providerDir, { recursive: true });
  provider = await startProvider({
    outDir: providerDir,
    keys: keyring.keys,
    accessTokenTtl: TOKEN_TTL,
    redirectUris: [`http://127.0.0.1:${loginPort}/callback`],
    postLogoutRedirectUris: [`http://127.0.0.1:${loginPort}/`],
    config: { rotateRefreshTokens: true },
  });
  procs.push({ name: 'provider', stop: () => provider.stop() });
  publish(keyring.keys, now());
  proxy = await startFaultProxy({ targetPort: provider.port });
  procs.push({ name: 'fault proxy', stop: () => proxy.stop() });

  const keycloak = { public_url: `http://127.0.0.1:${provider.port}`, internal_url: 'http://keycloak.keycloak.svc.cluster.local:8080', realm: 'dev' };
  const common = { keycloak, timeout_ms: TIMEOUT_MS, jwks_refresh_seconds: JWKS_REFRESH_S, clock_skew_seconds: CLOCK_SKEW_S, claims_to_headers: { preferred_username: 'x-user' } };
  const loginConfig = {
    mode: 'login', ...common, client_id: 'productpage', client_secret: 'productpage-secret',
    session_secret: crypto.randomBytes(32).toString('base64'),
  };
  const validateConfig = { mode: 'validate', ...common, authorized_parties: ['productpage'] };
  // the login listener's port is the one in the provider's redirect URIs
  envoy = await startSoakEnvoy({ loginPort, loginConfig, validateConfig, echoPort: echo.port, providerPort: proxy.port, dir: OUT });
  procs.push({ name: 'envoy', stop: () => envoy.stop() });
  log(`Envoy pid ${envoy.pid} (${path.relative(REPO_DIR, ENVOY_BIN)}), login ${envoy.loginUrl}, validate ${envoy.validateUrl}, admin :${envoy.adminPort}; provider pid ${provider.pid} :${provider.port}; fault proxy :${proxy.port}`);

  // Warm-up (before the clock): both listeners answer, the key set is in.
  const warm = Date.now() + 30_000;
  for (;;) {
    const t = await validToken();
    const r = await request(`${envoy.validateUrl}/warmup`, { headers: { authorization: `Bearer ${t.token}` } }).catch(() => undefined);
    const l = await request(`${envoy.loginUrl}/warmup`, { headers: PAGE_HEADERS }).catch(() => undefined);
    if (r?.status === 200 && l?.status === 302) break;
    if (Date.now() > warm) throw new Error(`Envoy did not serve within 30 s: validate ${r?.status}, login ${l?.status}`);
    await sleep(300);
  }
  const versionLine = fs.readFileSync(envoy.logFile, 'utf8').split('\n').find((l) => /mesh-oidc \S+ \(git/.test(l));
  statSamples.push({ t: now(), stats: parseStats(await envoy.admin('/stats')) });

  startAt = now();
  const deadline = startAt + DURATION_MS;
  log(`start${versionLine ? `: ${versionLine.replace(/^.*?(mesh-oidc \S+ \(git[^)]*\)).*$/, '$1')}` : ''}`);
  const browsers = Array.from({ length: BROWSERS }, (_, i) => ({ id: i + 1, user: USERS[i % USERS.length], jar: new CookieJar(), logins: 0, requests: 0 }));
  const clients = Array.from({ length: API_CLIENTS }, (_, i) => ({ id: i + 1, requests: 0 }));
  const loops = [
    ...browsers.map(async (b, i) => { await sleep(i * 700); return browserLoop(b); }),
    ...clients.map((c) => apiLoop(c)),
  ];
  const background = [faultLoop(), sampleLoop(), progressLoop()];
  while (!stopping && now() < deadline) await sleep(250);
  if (!stopping) { stopping = true; stopReason = 'time is up'; }
  log(`stopping (${stopReason}); waiting for requests in flight`);
  const settled = Promise.allSettled([...loops, ...background]);
  const waited = await Promise.race([settled.then(() => true), sleep(40_000).then(() => false)]);
  if (!waited) log('some clients were still waiting after 40 s: going on without them');
  // a last sample
  try {
    samples.push({ t: now(), rssKiB: rssKiB(envoy.pid) });
    statSamples.push({ t: now(), stats: parseStats(await envoy.admin('/stats')) });
    scanLog();
  } catch (e) { log(`last sample: ${e.message}`); }
  for (const w of windows) if (w.end === undefined) w.end = now();
  const endedAt = now();
  await stopAll();

  // ---- judgement
  const unexpected = analyse();
  const rows = perMinute(unexpected);
  const memory = memoryVerdict();
  const lastStats = statSamples.at(-1)?.stats ?? {};
  const firstStats = statSamples[0]?.stats ?? {};
  const vmCreatedDuring = (lastStats['wasm.envoy.wasm.runtime.v8.created'] ?? 0) - (firstStats['wasm.envoy.wasm.runtime.v8.created'] ?? 0);
  const vmReloads = ['login', 'validate'].reduce((a, l) => a + (lastStats[`wasm.mesh-oidc-${l}.vm_reload`] ?? 0), 0);
  const panics = logFindings.panic.length;
  if (unexpected.length) failures.push(`${unexpected.length} unexpected answer(s)`);
  if (panics) failures.push(`${panics} panic line(s) in Envoy's log`);
  if (vmCreatedDuring || vmReloads) failures.push(`VMs created during the run: ${vmCreatedDuring}, reloads: ${vmReloads}`);
  if (!memory.ok) failures.push(`RSS grew ${fmt(memory.growthMiB)} MiB between the first and the last quarter of the second half (bound ${RSS_BOUND_MIB} MiB)`);
  const loginsOk = logins.filter((l) => l.ok).length;
  if (loginsOk < BROWSERS) failures.push(`only ${loginsOk} logins completed: the load did not run`);
  if (records.length < Math.min(MAX_REQUESTS, RATE * MINUTES * 60) * 0.2) failures.push(`only ${records.length} requests: the load did not run`);

  const totals = {
    requests: records.length,
    byOutcome: Object.fromEntries(['ok', 'redirect', 'refused', 'fault5xx', 'unexpected'].map((o) => [o, records.filter((r) => r.outcome === o).length])),
    byKind: {},
    loginsOk,
    loginsFailed: logins.filter((l) => !l.ok).length,
    loginsFailedExplained: logins.filter((l) => !l.ok && l.explainedBy).length,
    refreshesOk: (lastStats['wasmcustom.mesh_oidc.refreshes_ok'] ?? 0),
    refreshesFailed: (lastStats['wasmcustom.mesh_oidc.refreshes_failed'] ?? 0),
    providerCallsByFilter: proxy.counts(),
    // token requests the provider answered, by grant and status (a refresh token spent twice is a
    // 400 invalid_grant that also revokes the grant)
    providerGrants: provider.requests((r) => r.grant).reduce((acc, r) => {
      const g = acc[r.grant] ??= {};
      g[r.status] = (g[r.status] ?? 0) + 1;
      return acc;
    }, {}),
    p50: percentile(records.map((r) => r.t1 - r.t0).sort((a, b) => a - b), 50),
    p99: percentile(records.map((r) => r.t1 - r.t0).sort((a, b) => a - b), 99),
    filterCounters: Object.fromEntries(Object.entries(lastStats).filter(([k]) => k.startsWith('wasmcustom.')).map(([k, v]) => [k.replace('wasmcustom.mesh_oidc.', ''), v - (firstStats[k] ?? 0)])),
  };
  for (const r of records) {
    const k = totals.byKind[r.kind] ??= {};
    k[r.obs] = (k[r.obs] ?? 0) + 1;
  }
  const result = {
    verdict: failures.length ? 'FAIL' : 'PASS',
    failures,
    settings: {
      minutes: MINUTES, browsers: BROWSERS, apiClients: API_CLIENTS, rate: RATE, maxRequests: MAX_REQUESTS,
      tokenTtl: TOKEN_TTL, timeoutMs: TIMEOUT_MS, slowMs: SLOW_MS, jwksRefreshS: JWKS_REFRESH_S, clockSkewS: CLOCK_SKEW_S,
      rssBoundMiB: RSS_BOUND_MIB, concurrency: 2,
      envoyVersion: envoyVersion(),
      maxAnswerMs: MAX_ANSWER_MS,
      module: versionLine ? versionLine.replace(/^.*?(mesh-oidc \S+ \(git[^)]*\)).*$/, '$1') : undefined,
      wasm: path.relative(REPO_DIR, WASM_PATH),
      wasmBytes: fs.statSync(WASM_PATH).size,
    },
    startedAt: new Date(startAt).toISOString(),
    durationS: (endedAt - startAt) / 1000,
    stopReason,
    schedule: SCHEDULE,
    explains: EXPLAINS,
    windows: windows.map((w) => ({ kind: w.kind, what: w.what, start: rel(w.start), end: rel(w.end) })),
    minutes: rows,
    totals,
    explained: explainedCounts(),
    memory,
    log: { panics, wasmErrors: logFindings.wasmError.length, wasmWarnings: logFindings.wasmWarn.length, critical: logFindings.critical.length, vmCreatedDuring, vmReloads, samples: { panic: logFindings.panic.slice(0, 20), wasmError: logFindings.wasmError.slice(0, 20), wasmWarn: [...new Map(logFindings.wasmWarn.map((l) => [l.line.replace(/^.*?\] \S+ /, '').replace(/\d+/g, 'N'), l])).values()].slice(0, 30) } },
    unexpected,
    logins: logins.filter((l) => !l.ok).map((l) => ({ ...l, t0: rel(l.t0), t1: rel(l.t1) })),
    browsers: browsers.map((b) => ({ id: b.id, user: b.user.username, logins: b.logins, requests: b.requests })),
  };
  fs.writeFileSync(path.join(OUT, 'result.json'), JSON.stringify(result, null, 1));
  fs.writeFileSync(path.join(OUT, 'samples.json'), JSON.stringify({
    startAt,
    durationS: DURATION_MS / 1000,
    rss: samples.map((s) => [rel(s.t), s.rssKiB / 1024]),
    heap: statSamples.map((s) => [rel(s.t), (s.stats['server.memory_allocated'] ?? 0) / 1048576]),
    requests: records.map((r) => [rel(r.t0), r.outcome]),
    windows: result.windows,
    memory,
  }));
  fs.writeFileSync(path.join(OUT, 'requests.tsv'), `t0_s\tms\tlistener\tkind\tobs\toutcome\tverdict\trid\tvariant\n${records.map((r) => [rel(r.t0).toFixed(3), r.t1 - r.t0, r.listener, r.kind, r.obs, r.outcome, r.verdict, r.rid, r.variant ?? ''].join('\t')).join('\n')}\n`);
  fs.writeFileSync(path.join(OUT, 'minutes.md'), `${minutesTable(rows)}\n`);
  fs.writeFileSync(path.join(OUT, 'minutes.tsv'), `${Object.keys(rows[0] ?? {}).join('\t')}\n${rows.map((r) => Object.values(r).map((v) => (typeof v === 'object' ? JSON.stringify(v) : v)).join('\t')).join('\n')}\n`);

  const plotCode = await runPython([path.join(path.dirname(new URL(import.meta.url).pathname), 'plot.py'), path.join(OUT, 'samples.json'), path.join(OUT, 'soak.png')]);
  if (plotCode !== 0) log(`the plot was not made (exit ${plotCode}): ${PYTHON} needs matplotlib (make soak installs it)`);

  // ---- report
  process.stdout.write(`\n${minutesTable(rows)}\n\n`);
  log(`requests ${totals.requests}: ${Object.entries(totals.byOutcome).map(([k, v]) => `${k} ${v}`).join(', ')}; logins ${loginsOk} completed, ${totals.loginsFailed} not (${totals.loginsFailedExplained} during faults)`);
  log(`RSS ${fmt(memory.startMiB)} → ${fmt(memory.endMiB)} MiB (peak ${fmt(memory.peakMiB)}); second half: ${fmt(memory.firstQuarterMedianMiB)} → ${fmt(memory.lastQuarterMedianMiB)} MiB (${fmt(memory.growthMiB)} MiB, bound ${RSS_BOUND_MIB}${memory.judged ? '' : ', not judged in a run this short'}), slope ${fmt(memory.slopeMiBPerMinute, 2)} MiB/min`);
  log(`Envoy log: ${panics} panics, ${logFindings.wasmError.length} wasm errors, ${logFindings.wasmWarn.length} wasm warnings; VMs created during the run ${vmCreatedDuring}, reloads ${vmReloads}`);
  for (const u of unexpected.slice(0, 30)) {
    log(`UNEXPECTED ${JSON.stringify({ ...u, envoy: undefined })}`);
    for (const l of (u.envoy ?? []).slice(0, 6)) process.stdout.write(`      ${l}\n`);
  }
  if (unexpected.length > 30) log(`… ${unexpected.length - 30} more in ${path.join(OUT, 'result.json')}`);
  if (WRITE_DOCS) {
    const { writeReport } = await import('./report.mjs');
    const written = writeReport({ resultFile: path.join(OUT, 'result.json'), pngFile: path.join(OUT, 'soak.png') });
    log(`wrote ${written.map((f) => path.relative(REPO_DIR, f)).join(', ')}`);
  }
  log(`${result.verdict}${failures.length ? `: ${failures.join('; ')}` : ''}`);
  return failures.length ? 1 : 0;
}

let exiting = false;
async function bail(code, why) {
  if (exiting) return;
  exiting = true;
  stopping = true;
  if (why) process.stderr.write(`soak: ${why}\n`);
  await stopAll();
  process.exit(code);
}
process.on('SIGINT', () => bail(130, 'interrupted'));
process.on('SIGTERM', () => bail(143, 'terminated'));
// a bound on the whole run, whatever happens
setTimeout(() => bail(3, `still running ${MINUTES} min + 5 min after the start: stopped`), DURATION_MS + 300_000).unref();

main().then((code) => { exiting = true; process.exit(code); }, (err) => bail(2, err.stack ?? String(err)));
