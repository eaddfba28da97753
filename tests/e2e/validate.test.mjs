// validate mode (SPEC V1, V2, B1-B5) in a real Envoy, against the real (Keycloak-like) provider.

import assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import { after, before, describe } from 'node:test';

import {
  harness, request, rawRequest, loginWithPassword, generateKeys, generateKey, withKeys, publicPem,
  publicJwk, signToken, tamper, accessTokenClaims, keycloakConfig, crashLines, freePort, sleep,
  wasmExists, WASM_PATH, KEYCLOAK_INTERNAL_URL,
} from './lib/index.mjs';

// Without the module the suites are skipped, unless E2E_REQUIRE_WASM=1 (then they fail).
const skip = wasmExists() || process.env.E2E_REQUIRE_WASM === '1'
  ? false : `the wasm module is not built (${WASM_PATH}); run make build`;
const h = harness('validate');
const TIMEOUT_MS = 1500;
const now = () => Math.floor(Date.now() / 1000);

function validateConfig(providerPort, extra = {}) {
  return {
    mode: 'validate',
    keycloak: keycloakConfig(providerPort),
    authorized_parties: ['productpage'],
    claims_to_headers: { preferred_username: 'x-user', email: 'x-email' },
    timeout_ms: TIMEOUT_MS,
    skip_paths: ['/healthz', '/public/*'],
    ...extra,
  };
}

let seq = 0;
const uniquePath = (prefix = '/api') => `${prefix}/r${++seq}-${crypto.randomBytes(3).toString('hex')}`;

/** The values of one header as the echo service received them (each occurrence separately). */
function headerValues(record, name) {
  const out = [];
  for (let i = 0; i < record.rawHeaders.length; i += 2) {
    if (record.rawHeaders[i].toLowerCase() === name) out.push(record.rawHeaders[i + 1]);
  }
  return out;
}

function assertJsonBody(res) {
  assert.match(String(res.headers['content-type']), /application\/json/, 'JSON content type');
  assert.doesNotThrow(() => JSON.parse(res.body), `JSON body: ${res.body.slice(0, 200)}`);
}

function assertInvalidToken(res, echo, path) {
  assert.equal(res.status, 401, `status for ${path}: ${res.status} ${res.body.slice(0, 300)}`);
  const www = String(res.headers['www-authenticate'] ?? '');
  assert.match(www, /^Bearer\b/, `WWW-Authenticate: ${www}`);
  assert.match(www, /error="invalid_token"/, `WWW-Authenticate: ${www}`);
  assert.match(www, /error_description="[^"]*"/, `WWW-Authenticate: ${www}`);
  assertJsonBody(res);
  assert.equal(echo.sawPath(path), false, 'the service never saw the request');
}

describe('validate mode', { skip }, () => {
  let keys;
  let provider;
  let echo;
  let envoy;
  let alice; // a real login: {tokens, access, id}
  let envoyPort;

  const call = (path, headers = {}) => request(`${envoy.url}${path}`, { headers });
  const bearer = (token) => ({ authorization: `Bearer ${token}` });

  before(async () => {
    keys = generateKeys();
    envoyPort = await freePort();
    provider = await h.startProvider({ keys, redirectUris: [`http://127.0.0.1:${envoyPort}/callback`] });
    alice = await loginWithPassword({ issuer: provider.issuer, redirectUri: `http://127.0.0.1:${envoyPort}/callback` });
    echo = await h.startEcho();
    envoy = await h.startEnvoy({
      filterConfig: validateConfig(provider.port), providerPort: provider.port, echoPort: echo.port, port: envoyPort,
    });
    if (envoy.exited) {
      throw new Error(`Envoy refused the valid configuration (exit ${envoy.code}):\n${envoy.log().slice(-4000)}`);
    }
  });
  after(() => h.cleanup());

  h.test('a valid access token as Authorization: Bearer passes; claims become headers', async () => {
    const path = uniquePath();
    const res = await call(path, bearer(alice.tokens.access_token));
    assert.equal(res.status, 200, res.body);
    const seen = echo.last(path);
    assert.ok(seen, 'the service saw the request');
    assert.deepEqual(headerValues(seen, 'x-user'), ['alice']);
    assert.deepEqual(headerValues(seen, 'x-email'), ['alice@example.com']);
    // the key set was fetched from the internal name, through the Istio cluster
    const certs = await provider.waitForRequests((r) => r.path.endsWith('/protocol/openid-connect/certs'));
    assert.ok(certs.length >= 1, 'the filter fetched the key set');
    assert.equal(certs[0].host, new URL(KEYCLOAK_INTERNAL_URL).host, 'certs fetched with the internal authority');
  });

  h.test('a valid access token in the access_token cookie passes', async () => {
    const path = uniquePath();
    const res = await call(path, { cookie: `theme=dark; access_token=${alice.tokens.access_token}; lang=en` });
    assert.equal(res.status, 200, res.body);
    assert.deepEqual(headerValues(echo.last(path), 'x-user'), ['alice']);
  });

  h.test('client-sent claim headers are removed before the token\'s are set', async () => {
    const path = uniquePath();
    const res = await call(path, { ...bearer(alice.tokens.access_token), 'x-user': 'mallory', 'x-email': 'mallory@evil.example' });
    assert.equal(res.status, 200, res.body);
    const seen = echo.last(path);
    assert.deepEqual(headerValues(seen, 'x-user'), ['alice']);
    assert.deepEqual(headerValues(seen, 'x-email'), ['alice@example.com']);
  });

  h.test('skip paths pass with no token, without client-sent claim headers, otherwise unchanged', async () => {
    const spoof = { 'x-user': 'mallory', 'x-email': 'mallory@evil.example' };
    for (const path of ['/public/x?y=1', '/healthz', '/healthz?probe=1', '/public/']) {
      const res = await call(path, { ...spoof, 'x-other': 'kept' });
      assert.equal(res.status, 200, `${path}: ${res.status} ${res.body}`);
      const seen = echo.last(path);
      assert.ok(seen, `the service saw ${path}`);
      assert.deepEqual(headerValues(seen, 'x-user'), [], `no x-user on ${path}`);
      assert.deepEqual(headerValues(seen, 'x-email'), [], `no x-email on ${path}`);
      assert.deepEqual(headerValues(seen, 'x-other'), ['kept']);
    }
    // no token check on a skip path: a broken Authorization header goes through untouched
    const broken = await call('/public/broken', { authorization: 'Bearer not-a-token' });
    assert.equal(broken.status, 200);
    assert.deepEqual(headerValues(echo.last('/public/broken'), 'authorization'), ['Bearer not-a-token']);
    // exact and prefix rules: these are not skip paths
    for (const path of ['/healthz/more', '/publicity', '/public']) {
      const res = await call(path, spoof);
      assert.equal(res.status, 401, `${path} is not a skip path`);
      assert.equal(echo.sawPath(path), false);
    }
  });

  h.test('no token: 401, a Bearer challenge without error, a JSON body, and the service never sees it', async () => {
    for (const headers of [{}, { cookie: 'theme=dark; other=1' }]) {
      const path = uniquePath();
      const res = await call(path, headers);
      assert.equal(res.status, 401);
      const www = String(res.headers['www-authenticate'] ?? '');
      assert.match(www, /^Bearer\b/, `WWW-Authenticate: ${www}`);
      assert.doesNotMatch(www, /error=/, `WWW-Authenticate: ${www}`);
      assertJsonBody(res);
      assert.equal(echo.sawPath(path), false);
    }
  });

  // ---- tokens that must be refused (B2) ---------------------------------------------------------

  const badTokens = {
    'expired an hour ago': () => signToken(accessTokenClaims({ issuer: provider.issuer, now: now() - 3900 }), { key: keys.signing }),
    'expired 60 s ago (beyond the 30 s skew)': () => signToken(accessTokenClaims({ issuer: provider.issuer, now: now() - 360 }), { key: keys.signing }),
    'no exp': async () => {
      const c = accessTokenClaims({ issuer: provider.issuer });
      delete c.exp;
      return signToken(c, { key: keys.signing });
    },
    'exp is negative (-1)': () => signToken({ ...accessTokenClaims({ issuer: provider.issuer }), exp: -1 }, { key: keys.signing }),
    'exp is a string': () => signToken({ ...accessTokenClaims({ issuer: provider.issuer }), exp: String(now() + 300) }, { key: keys.signing }),
    'not valid before an hour from now (nbf)': () => signToken(accessTokenClaims({ issuer: provider.issuer, nbf: now() + 3600 }), { key: keys.signing }),
    'issued an hour from now (iat)': () => signToken({ ...accessTokenClaims({ issuer: provider.issuer }), iat: now() + 3600 }, { key: keys.signing }),
    'tampered payload (real token, username changed)': () => tamper(alice.tokens.access_token, (p) => { p.preferred_username = 'mallory'; }),
    'tampered signature': () => {
      const [hh, p, s] = alice.tokens.access_token.split('.');
      const sig = Buffer.from(s, 'base64url');
      sig[10] ^= 0x01;
      return `${hh}.${p}.${sig.toString('base64url')}`;
    },
    'wrong issuer': () => signToken(accessTokenClaims({ issuer: 'http://127.0.0.1:1/realms/dev' }), { key: keys.signing }),
    'issuer with the internal URL (Keycloak stamps the public one)': () => signToken(accessTokenClaims({ issuer: `${KEYCLOAK_INTERNAL_URL}/realms/dev` }), { key: keys.signing }),
    'issuer of another realm': () => signToken(accessTokenClaims({ issuer: `http://127.0.0.1:${provider.port}/realms/master` }), { key: keys.signing }),
    'wrong azp': () => signToken(accessTokenClaims({ issuer: provider.issuer, azp: 'other-client' }), { key: keys.signing }),
    'no azp': async () => {
      const c = accessTokenClaims({ issuer: provider.issuer });
      delete c.azp;
      return signToken(c, { key: keys.signing });
    },
    'alg none': () => signToken(accessTokenClaims({ issuer: provider.issuer }), { alg: 'none', kid: keys.signing.kid }),
    'alg nOnE, with the real signature appended': async () => {
      const real = await signToken(accessTokenClaims({ issuer: provider.issuer }), { key: keys.signing });
      const none = await signToken(accessTokenClaims({ issuer: provider.issuer }), { alg: 'nOnE', kid: keys.signing.kid });
      return `${none.slice(0, -1)}.${real.split('.')[2]}`;
    },
    'HS256 signed with the RSA public key (PEM) as secret': () => signToken(accessTokenClaims({ issuer: provider.issuer }), {
      alg: 'HS256', kid: keys.signing.kid, secret: publicPem(keys.signing),
    }),
    'HS256 signed with the public JWK (JSON) as secret': () => signToken(accessTokenClaims({ issuer: provider.issuer }), {
      alg: 'HS256', kid: keys.signing.kid, secret: JSON.stringify(publicJwk(keys.signing)),
    }),
    'ES256 with an unknown key': () => signToken(accessTokenClaims({ issuer: provider.issuer }), { key: generateKey('ES256') }),
    'RS256 with an unknown key under the real kid': () => signToken(accessTokenClaims({ issuer: provider.issuer }), {
      key: generateKey('RS256'), kid: keys.signing.kid,
    }),
    'signed with the enc key (use=enc keys are ignored)': () => signToken(accessTokenClaims({ issuer: provider.issuer }), {
      key: { ...keys.enc, alg: 'RS256' }, alg: 'RS256', kid: keys.enc.kid,
    }),
    'attacker key embedded in the header (jwk)': async () => {
      const attacker = generateKey('RS256');
      return signToken(accessTokenClaims({ issuer: provider.issuer }), {
        key: attacker, kid: keys.signing.kid, header: { jwk: publicJwk(attacker) },
      });
    },
  };

  for (const [name, make] of Object.entries(badTokens)) {
    h.test(`refused: ${name}`, async () => {
      const token = await make();
      const path = uniquePath('/api/bad');
      const res = await call(path, bearer(token));
      assertInvalidToken(res, echo, path);
      const viaCookie = uniquePath('/api/bad');
      assertInvalidToken(await call(viaCookie, { cookie: `access_token=${token}` }), echo, viaCookie);
    });
  }

  h.test('a claim value that is not a valid header value is left out', async () => {
    const token = await signToken(accessTokenClaims({
      issuer: provider.issuer, username: 'alice\r\nx-injected: yes', email: 'a\u0000b@example.com',
    }), { key: keys.signing });
    const path = uniquePath();
    const res = await call(path, { ...bearer(token), 'x-user': 'mallory' });
    assert.equal(res.status, 200, res.body);
    const seen = echo.last(path);
    assert.deepEqual(headerValues(seen, 'x-user'), []);
    assert.deepEqual(headerValues(seen, 'x-email'), []);
    assert.deepEqual(headerValues(seen, 'x-injected'), []);
  });

  // ---- B5: garbage never kills the VM ---------------------------------------------------------

  h.test('200 garbage Authorization and Cookie headers: all refused, the VM stays alive', { timeout: 180000 }, async () => {
    const cases = await garbageCases({ issuer: provider.issuer, keys, realToken: alice.tokens.access_token });
    assert.ok(cases.length >= 200, `${cases.length} cases`);
    const failures = [];
    for (const [i, c] of cases.entries()) {
      const path = `/garbage/${i}`;
      let status;
      try {
        if (c.raw) {
          ({ status } = await rawRequest(envoy.port, `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n${c.raw}\r\nConnection: close\r\n\r\n`));
        } else {
          ({ status } = await call(path, c.headers));
        }
      } catch (err) {
        failures.push(`#${i} ${c.name}: ${err.message}`);
        continue;
      }
      if (![401, 400, 431].includes(status)) failures.push(`#${i} ${c.name}: status ${status}`);
      if (echo.sawPath(path)) failures.push(`#${i} ${c.name}: reached the service`);
    }
    assert.deepEqual(failures, []);
    const path = uniquePath();
    const res = await call(path, bearer(alice.tokens.access_token));
    assert.equal(res.status, 200, 'a valid token still passes: the VM is alive');
    assert.deepEqual(headerValues(echo.last(path), 'x-user'), ['alice']);
    assert.deepEqual(crashLines(envoy.log()), [], 'no panic or wasm trap in the Envoy log');
  });

  h.test('tokens never appear in the Envoy log', async () => {
    const log = envoy.log();
    assert.ok(!log.includes(alice.tokens.access_token.split('.')[2]), 'access token signature found in the log');
    assert.ok(!log.includes(alice.tokens.access_token.split('.')[1]), 'access token payload found in the log');
  });

  // ---- B1: key rotation -----------------------------------------------------------------------

  const certsFetches = () => provider.requests('/protocol/openid-connect/certs');
  /** The filter refetches on an unknown kid at most once per 5 s: let that window pass. */
  async function waitOutRefetchWindow() {
    for (;;) {
      const wait = Math.max(0, ...certsFetches().map((r) => r.t)) + 5500 - Date.now();
      if (wait <= 0) return;
      await sleep(wait);
    }
  }

  h.test('a burst of unknown kids makes at most one key-set fetch (rate limit shared by the workers)', { timeout: 30000 }, async () => {
    await waitOutRefetchWindow();
    const before = certsFetches().length;
    const tokens = await Promise.all(Array.from({ length: 40 }, () => signToken(
      accessTokenClaims({ issuer: provider.issuer }), { key: generateKey('ES256') },
    )));
    const results = await Promise.all(tokens.map((t) => call(uniquePath('/api/burst'), bearer(t))));
    assert.deepEqual([...new Set(results.map((r) => r.status))], [401]);
    await sleep(1000);
    const fetched = certsFetches().slice(before);
    assert.ok(fetched.length <= 1, `${fetched.length} key-set fetches for one burst (${fetched.map((r) => r.t - fetched[0].t).join(', ')} ms apart)`);
  });


  h.test('key rotation: a token signed with a new kid passes after the provider restarts', { timeout: 60000 }, async () => {
    const fresh = generateKeys();
    const rotated = withKeys(fresh.enc, [fresh.signing, keys.signing]); // new key active, old one still published
    await waitOutRefetchWindow();
    await provider.restart({ keys: rotated });
    const fetchesBefore = provider.requests('/protocol/openid-connect/certs').length;

    const path = uniquePath();
    const token = await signToken(accessTokenClaims({ issuer: provider.issuer }), { key: rotated.signing });
    const res = await call(path, bearer(token));
    assert.equal(res.status, 200, `new kid: ${res.status} ${res.body}`);
    assert.deepEqual(headerValues(echo.last(path), 'x-user'), ['alice']);
    assert.ok(provider.requests('/protocol/openid-connect/certs').length > fetchesBefore, 'the key set was fetched again');

    // a real login now gets a token under the new kid
    const bob = await loginWithPassword({
      issuer: provider.issuer, redirectUri: `http://127.0.0.1:${envoyPort}/callback`, username: 'bob', password: 'bob-password',
    });
    assert.equal(bob.access.header.kid, rotated.signing.kid);
    const p2 = uniquePath();
    assert.equal((await call(p2, bearer(bob.tokens.access_token))).status, 200);
    assert.deepEqual(headerValues(echo.last(p2), 'x-user'), ['bob']);

    // the old key is still published, so the old token still passes
    const p3 = uniquePath();
    assert.equal((await call(p3, bearer(alice.tokens.access_token))).status, 200);
    keys = rotated;
  });
});

// ---- B1: key set unreachable when Envoy starts ----------------------------------------------------

describe('validate mode: key set unreachable at start', { skip }, () => {
  const hu = harness('validate-unreachable');
  after(() => hu.cleanup());

  hu.test('503 while the key set cannot be fetched, 200 once the provider is up', { timeout: 60000 }, async (th) => {
    const providerPort = await freePort(); // reserved: nothing listens there yet
    const echo = await th.startEcho();
    const envoy = await th.startEnvoy({ filterConfig: validateConfig(providerPort), providerPort, echoPort: echo.port });
    assert.equal(envoy.exited, false, 'Envoy starts without the provider');
    const keys = generateKeys();
    const issuer = `http://127.0.0.1:${providerPort}/realms/dev`;
    const token = await signToken(accessTokenClaims({ issuer }), { key: keys.signing });

    const path = uniquePath();
    const res = await request(`${envoy.url}${path}`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(res.status, 503, `${res.status} ${res.body}`);
    assert.ok(res.ms <= TIMEOUT_MS + 1000, `answered in ${res.ms} ms (timeout_ms ${TIMEOUT_MS})`);
    assert.equal(echo.sawPath(path), false);

    const noToken = uniquePath();
    const res401 = await request(`${envoy.url}${noToken}`);
    assert.equal(res401.status, 401, 'a request without a token does not need the key set');

    const provider = await th.startProvider({ keys, port: providerPort });
    const started = Date.now();
    let last;
    while (Date.now() - started < 10000) {
      const p = uniquePath();
      last = await request(`${envoy.url}${p}`, { headers: { authorization: `Bearer ${token}` } });
      if (last.status === 200) break;
      await sleep(500);
    }
    assert.equal(last.status, 200, `within 10 s of the provider starting: ${last.status} ${last.body}`);
    // the log line of a request can trail its response a little
    assert.ok((await provider.waitForRequests('/protocol/openid-connect/certs')).length >= 1);
  });
});

// ---- bad configuration -----------------------------------------------------------------------------

describe('validate mode: a bad configuration is refused', { skip }, () => {
  const hb = harness('validate-bad-config');
  let echo;
  before(async () => { echo = await hb.startEcho(); });
  after(() => hb.cleanup());

  const base = () => validateConfig(1);
  const cases = [
    ['keycloak.public_url is not a URL', () => ({ ...base(), keycloak: { ...keycloakConfig(1), public_url: 'not a url' } }), /keycloak\.public_url/],
    ['an unknown key', () => ({ ...base(), bogus_key: 1 }), /bogus_key/],
    ['an unknown key inside keycloak', () => ({ ...base(), keycloak: { ...keycloakConfig(1), colour: 'blue' } }), /colour/],
    ['mode is neither login nor validate', () => ({ ...base(), mode: 'sideways' }), /mode/],
    ['validate mode with neither audiences nor authorized_parties', () => {
      const c = base();
      delete c.authorized_parties;
      return c;
    }, /authorized_parties|audiences/],
    ['timeout_ms is not a number', () => ({ ...base(), timeout_ms: 'fast' }), /timeout_ms/],
  ];

  for (const [name, make, keyPattern] of cases) {
    hb.test(`refused: ${name}`, async (th) => {
      const envoy = await th.startEnvoy({ filterConfig: make(), providerPort: 1, echoPort: echo.port, readyTimeoutMs: 15000 });
      await assertRefused(envoy, keyPattern);
    });
  }

  hb.test('refused: configuration that is not JSON', async (th) => {
    const envoy = await th.startEnvoy({ filterConfigRaw: '{"mode": "validate",', providerPort: 1, echoPort: echo.port, readyTimeoutMs: 15000 });
    await assertRefused(envoy, /./);
  });
});

/** Envoy exited, or runs without the listener; its log names the key. */
async function assertRefused(envoy, keyPattern) {
  if (!envoy.exited) {
    // Envoy may stay up with the listener refused: then nothing may answer on its port
    const listening = await envoy.listening();
    if (listening) {
      const res = await request(`${envoy.url}/x`).catch((err) => ({ status: 0, body: err.message }));
      assert.fail(`Envoy took the bad configuration: listener up, GET /x -> ${res.status}`);
    }
  }
  const log = envoy.log();
  const lines = log.split('\n').filter((l) => /wasm|mesh-oidc|mesh_oidc/i.test(l));
  assert.ok(lines.some((l) => keyPattern.test(l)), `a log line names ${keyPattern}:\n${lines.slice(-20).join('\n')}`);
}

// ---- garbage ---------------------------------------------------------------------------------------

/** A small seeded PRNG, so a failing case can be reproduced (E2E_SEED). */
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6D2B79F5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

async function garbageCases({ issuer, keys, realToken }) {
  const seed = Number(process.env.E2E_SEED ?? 20240601);
  const rnd = prng(seed);
  const int = (lo, hi) => lo + Math.floor(rnd() * (hi - lo + 1));
  const pickOne = (arr) => arr[int(0, arr.length - 1)];
  const printable = (n) => Array.from({ length: n }, () => String.fromCharCode(int(0x21, 0x7e))).join('');
  const latin1 = (n) => Array.from({ length: n }, () => String.fromCharCode(pickOne([int(0x21, 0x7e), int(0xa0, 0xff), 0x09, 0x20]))).join('');
  const b64junk = (n) => crypto.randomBytes(n).toString('base64url');
  const b64json = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');
  const realParts = realToken.split('.');
  const cases = [];
  const add = (name, headers) => cases.push({ name, headers });

  // long random printable
  for (let i = 0; i < 16; i++) add(`printable bearer ${i}`, { authorization: `Bearer ${printable(int(1, 8000))}` });
  for (let i = 0; i < 8; i++) add(`printable cookie ${i}`, { cookie: `access_token=${printable(int(1, 4000)).replace(/;/g, '')}` });
  // binary-ish (latin-1 bytes, tabs, spaces)
  for (let i = 0; i < 10; i++) add(`latin1 bearer ${i}`, { authorization: `Bearer ${latin1(int(1, 3000))}` });
  for (let i = 0; i < 6; i++) add(`latin1 cookie ${i}`, { cookie: `access_token=${latin1(int(1, 2000)).replace(/;/g, '')}` });
  // many '='
  for (const v of ['=', '==', '='.repeat(500), 'a=b=c==', `${'='.repeat(100)}.${'='.repeat(100)}.${'='.repeat(100)}`]) {
    add(`equals bearer ${v.length}`, { authorization: `Bearer ${v}` });
    add(`equals cookie ${v.length}`, { cookie: `access_token=${v}` });
  }
  add('cookie of equals signs', { cookie: '=;=;==;===;access_token==;=access_token' });
  add('cookie without values', { cookie: 'access_token; access_token=; ;;;; =' });
  add('cookie names only', { cookie: Array.from({ length: 300 }, (_, i) => `c${i}`).join('; ') });
  add('1000 cookies', { cookie: Array.from({ length: 1000 }, (_, i) => `k${i}=${i}`).join('; ') });
  add('duplicate access_token cookies', { cookie: 'access_token=a.b.c; access_token=x.y.z; access_token=' });
  add('quoted cookie', { cookie: `access_token="${realParts[0]}.${realParts[1]}.AAAA"` });
  add('spaces around cookie', { cookie: ' access_token = a.b.c ; x=1' });
  // many dots
  for (const v of ['.', '..', '...', '.'.repeat(1000), 'a.b.c.d.e.f.g', '.a.b', 'a.b.', `${realParts[0]}..${realParts[2]}`, `${realParts[0]}.${realParts[1]}.`, `..${realParts[2]}`, `${realParts[0]}.${realParts[1]}.${realParts[2]}.${realParts[2]}`]) {
    add(`dots ${v.length}`, { authorization: `Bearer ${v}` });
  }
  // base64 junk in a JWT shape
  for (let i = 0; i < 14; i++) add(`b64 junk ${i}`, { authorization: `Bearer ${b64junk(int(1, 200))}.${b64junk(int(1, 2000))}.${b64junk(int(1, 600))}` });
  for (let i = 0; i < 4; i++) add(`b64 junk cookie ${i}`, { cookie: `access_token=${b64junk(int(1, 200))}.${b64junk(int(1, 800))}.${b64junk(int(1, 300))}` });
  // JSON-ish headers: odd, huge, deep
  const weirdHeaders = [
    { alg: 'RS256', kid: 'x'.repeat(20000) },
    { alg: ['RS256'] }, { alg: null }, { alg: 42 }, { alg: {} }, { alg: '' }, { alg: 'RS256\u0000' }, { alg: 'RS256 ' },
    { alg: 'RS256', kid: { a: 1 } }, { alg: 'RS256', kid: 12 }, { alg: 'RS256', kid: null }, { alg: 'RS256', kid: '../../../../dev/null' },
    { alg: 'RS256', kid: "' OR 1=1 --" }, { alg: 'RS256', crit: ['exp'] }, { alg: 'RS256', b64: false, crit: ['b64'] },
    { alg: 'RS256', jku: 'http://127.0.0.1:1/jwks' }, { alg: 'RS256', x5u: 'http://127.0.0.1:1/cert' }, { alg: 'RSA-OAEP', enc: 'A256GCM' },
    { alg: 'ES512' }, { alg: 'EdDSA' }, { alg: 'PS512' }, { alg: 'HS512' }, { alg: 'RS1' }, { typ: 'JWT' },
    { alg: 'RS256', kid: 'a', extra: 'y'.repeat(30000) },
  ];
  for (const [i, hdr] of weirdHeaders.entries()) add(`weird header ${i}`, { authorization: `Bearer ${b64json(hdr)}.${realParts[1]}.${realParts[2]}` });
  for (const raw of ['"string"', '123', 'null', '[]', '{', '{"alg":"RS256"', '{"alg":"RS256",}', '\u0000', `${'['.repeat(5000)}${']'.repeat(5000)}`, `{"a":${'{"a":'.repeat(3000)}1${'}'.repeat(3000)}}`, '{"alg":"RS256","alg":"none"}', '\uFEFF{"alg":"RS256"}']) {
    add(`raw header ${raw.slice(0, 12)}`, { authorization: `Bearer ${b64json(raw)}.${realParts[1]}.${realParts[2]}` });
  }
  add('invalid utf-8 header', { authorization: `Bearer ${Buffer.from([0xff, 0xfe, 0xc3, 0x28]).toString('base64url')}.${realParts[1]}.${realParts[2]}` });
  // properly signed, absurd claims
  const signed = async (name, claims) => add(`signed ${name}`, { authorization: `Bearer ${await signToken(claims, { key: keys.signing })}` });
  const base = accessTokenClaims({ issuer });
  await signed('iss array', { ...base, iss: [issuer] });
  await signed('iss object', { ...base, iss: { issuer } });
  await signed('azp number', { ...base, azp: 42 });
  await signed('azp array', { ...base, azp: ['productpage'] });
  await signed('exp null', { ...base, exp: null });
  await signed('exp negative', { ...base, exp: -1 });
  await signed('exp float past', { ...base, exp: 1.5 });
  await signed('exp bool', { ...base, exp: true });
  await signed('exp object', { ...base, exp: { value: base.exp } });
  await signed('payload array', [base]);
  await signed('payload string', 'just a string');
  await signed('payload deep', { ...base, iss: 'x', deep: JSON.parse(`${'['.repeat(100)}1${']'.repeat(100)}`) });
  cases.push({ name: 'signed payload not JSON', headers: { authorization: `Bearer ${await signToken('{{{{', { key: keys.signing })}` } });
  cases.push({ name: 'signed payload exp 1e400', headers: { authorization: `Bearer ${await signToken(`{"iss":"${issuer}","azp":"productpage","exp":1e400}`, { key: keys.signing })}` } });
  // schemes
  for (const v of ['Bearer', 'Bearer ', 'Bearer  ', 'Bearer\t', 'BEARER x.y.z', 'Bearer x y z', 'Bearer\tx.y.z', 'Basic YWxpY2U6YWxpY2UtcGFzc3dvcmQ=', 'Token abc', 'Bearer ,', `Bearer ${realParts[0]}.${realParts[1]}`, 'Negotiate', ',', ' ', 'Bearer=x']) {
    add(`scheme '${v.slice(0, 20)}'`, { authorization: v });
  }
  add('two Authorization headers', { authorization: ['Bearer a.b.c', 'Bearer x.y.z'] });
  add('authorization and cookie both garbage', { authorization: `Bearer ${printable(50)}`, cookie: `access_token=${printable(50).replace(/;/g, '')}` });
  // 60 KB values (Envoy's own limit is 60 KiB of headers: 431), and just under it
  add('60 KB bearer', { authorization: `Bearer ${'A'.repeat(60 * 1024)}` });
  add('60 KB cookie', { cookie: `access_token=${'B'.repeat(60 * 1024)}` });
  add('60 KB dots', { authorization: `Bearer ${'a.'.repeat(30 * 1024)}` });
  add('30 KB JWT shape', { authorization: `Bearer ${b64json({ alg: 'RS256', kid: keys.signing.kid })}.${b64junk(22000)}.${b64junk(256)}` });
  add('50 KB bearer', { authorization: `Bearer ${printable(50 * 1024)}` });
  // bytes node refuses to send: raw requests (Envoy itself answers 400, or the filter 401)
  const raws = [
    'Authorization: Bearer a\u0000b', 'Authorization: Bearer \u0001\u0002\u0003', 'Cookie: access_token=\u0000\u0000',
    'Authorization: Bearer a\rb', 'Authorization: Bearer \u007f\u007f', 'Cookie: access_token=a\u0000.b.c',
    `Authorization: Bearer ${realParts[0]}\u0000.${realParts[1]}.${realParts[2]}`,
  ];
  for (const r of raws) cases.push({ name: `raw ${JSON.stringify(r).slice(0, 30)}`, raw: r });
  // fill up to 200 with mixed junk
  while (cases.length < 200) {
    const kind = int(0, 3);
    if (kind === 0) add(`filler bearer ${cases.length}`, { authorization: `Bearer ${b64junk(int(1, 60))}.${b64junk(int(1, 300))}.${b64junk(int(1, 300))}` });
    else if (kind === 1) add(`filler cookie ${cases.length}`, { cookie: `x=${printable(10).replace(/;/g, '')}; access_token=${printable(int(1, 500)).replace(/;/g, '')}` });
    else if (kind === 2) add(`filler header ${cases.length}`, { authorization: `Bearer ${b64json({ alg: pickOne(['RS256', 'ES256', 'none', 'HS256', 'PS256']), kid: pickOne([keys.signing.kid, keys.enc.kid, 'nope', '']) })}.${b64json({ iss: issuer, azp: 'productpage', exp: now() + 300 })}.${b64junk(int(0, 300))}` });
    else add(`filler latin1 ${cases.length}`, { cookie: `access_token=${latin1(int(1, 800)).replace(/;/g, '')}` });
  }
  return cases;
}
