// The hardening regression suite of issue 8 (SPEC "Rules added after the first release"): each
// test is named after the advisory or the issue item it guards against, and proves the security
// property on the wire of a real Envoy with the built module, the real (Keycloak-like) provider
// and the echo service: a request that must be stopped never reaches the echo service (every
// request carries a unique `x-attack-probe` header, so this holds whatever Envoy made of its
// path), and what must not be forwarded is checked in what the echo service received.
//
// One provider serves four Envoys:
//   base      validate mode and login mode, each on a listener with Envoy's default path handling
//             and on one with the shipped path options (normalize_path, merge_slashes,
//             path_with_escaped_slashes_action: REJECT_REQUEST); session_secret A
//   origins   login mode with public_origins
//   forwarded login mode with trust_forwarded_proto: true
//   rotation  login mode with session_secret [B, A] on one listener and [B] on another
// A few more Envoys are started only to see them refuse a bad session_secret.

import assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import { after, before, describe } from 'node:test';

import {
  harness, request, rawRequest, requestWithJar, CookieJar, loginWithPassword, generateKeys, signToken,
  tamper, accessTokenClaims, keycloakConfig, crashLines, freePort, sleep, decodeJwt, wasmExists,
  WASM_PATH, PAGE_HEADERS, API_HEADERS, setCookie, setCookies, isCleared, startLogin, atProvider,
  toCallback, loginThroughFilter,
} from './lib/index.mjs';
import {
  HARDENED_HCM, CACHE_PUBLIC_PREFIX, startMultiEnvoy, vmFailureLines, probeId, upstreamGot, headerValues,
  cookiePairs, sendAndReset, rawGetText, jweTamperings, responseShape,
} from './lib/attack.mjs';

// Without the module the suite is skipped, unless E2E_REQUIRE_WASM=1 (then it fails).
const skip = wasmExists() || process.env.E2E_REQUIRE_WASM === '1'
  ? false : `the wasm module is not built (${WASM_PATH}); run make build`;
const h = harness('security');

const TIMEOUT_MS = 3000;
const SKIP_PATHS = ['/static/*', '/healthz'];
const newSecret = () => crypto.randomBytes(32).toString('base64');
const SECRET_A = newSecret();
const SECRET_B = newSecret();
const now = () => Math.floor(Date.now() / 1000);
let seq = 0;
const uniquePath = (prefix = '/p') => `${prefix}/r${++seq}-${crypto.randomBytes(3).toString('hex')}`;

function validateConfig(providerPort, extra = {}) {
  return {
    mode: 'validate',
    keycloak: keycloakConfig(providerPort),
    authorized_parties: ['productpage'],
    claims_to_headers: { preferred_username: 'x-user', email: 'x-email' },
    skip_paths: SKIP_PATHS,
    timeout_ms: TIMEOUT_MS,
    clock_skew_seconds: 0,
    ...extra,
  };
}

function loginConfig(providerPort, sessionSecret, extra = {}) {
  return {
    mode: 'login',
    keycloak: keycloakConfig(providerPort),
    client_id: 'productpage',
    client_secret: 'productpage-secret',
    session_secret: sessionSecret,
    claims_to_headers: { preferred_username: 'x-user' },
    skip_paths: SKIP_PATHS,
    timeout_ms: TIMEOUT_MS,
    ...extra,
  };
}

/** Cookie names the filter seals: they must never reach the service (B6). */
const isSealedName = (n) => /^access_token_session(_\d+)?$/.test(n) || n.startsWith('access_token_tx_');

/** Set-Cookies of a response that would give the browser a session. */
const sessionSets = (res) => setCookies(res, /^access_token(_\d+)?$|^access_token_session(_\d+)?$/).filter((c) => !isCleared(c));

/** One line for a list of failures: the assertion's message and, when it has one, the value it got. */
function failed(err) {
  const got = err?.actual;
  const detail = got === undefined || typeof got === 'boolean' ? '' : ` -- got ${JSON.stringify(got).slice(0, 400)}`;
  return `${String(err?.message ?? err).split('\n')[0]}${detail}`;
}

function assertInvalidToken(res, what) {
  assert.equal(res.status, 401, `${what}: status ${res.status} ${String(res.body).slice(0, 200)}`);
  const www = String(res.headers['www-authenticate'] ?? '');
  assert.match(www, /^Bearer\b/, `${what}: WWW-Authenticate ${www}`);
  assert.match(www, /error="invalid_token"/, `${what}: WWW-Authenticate ${www}`);
}

describe('security hardening (issue 8)', { skip }, () => {
  let keys;
  let provider;
  let echo;
  let base; // validate + login, default and hardened path handling
  const envs = {}; // origins, forwarded, rotation
  const ports = {};
  let alice; // a real login at the provider: {tokens: {access_token, id_token, refresh_token}}
  let bob;

  const V = (p = '') => `${base.urls.validate}${p}`;
  const VH = (p = '') => `${base.urls['validate-hardened']}${p}`;
  const L = (p = '') => `${base.urls.login}${p}`;
  const LH = (p = '') => `${base.urls['login-hardened']}${p}`;

  /** The Envoy `name`, or a failure that quotes why it refused its configuration. */
  function need(name) {
    const e = envs[name];
    if (!e) throw new Error(`Envoy "${name}" was not started`);
    if (e.exited) {
      const lines = e.log().split('\n').filter((l) => /mesh-oidc|mesh_oidc|wasm/i.test(l)).slice(-4);
      throw new Error(`Envoy "${name}" refused its configuration (exit ${e.code}):\n${lines.join('\n')}`);
    }
    return e;
  }

  /** A request with a fresh probe id; `got()` lists what the echo service received of it. */
  async function attempt(url, headers = {}, opts = {}) {
    const id = probeId();
    const res = await request(url, { ...opts, headers: { ...headers, 'x-attack-probe': id } });
    return { res, id, got: () => upstreamGot(echo, id) };
  }

  function assertStopped(a, what, statuses = [400, 401, 302]) {
    assert.ok(statuses.includes(a.res.status), `${what}: status ${a.res.status} (expected one of ${statuses}) ${String(a.res.body).slice(0, 200)}`);
    assert.deepEqual(a.got().map((r) => r.path), [], `${what}: the service must never receive it`);
  }

  function reachedOnce(a, what) {
    assert.equal(a.res.status, 200, `${what}: status ${a.res.status} ${String(a.res.body).slice(0, 300)}`);
    const got = a.got();
    assert.equal(got.length, 1, `${what}: the service got it once`);
    return got[0];
  }

  /** Forget the provider's request log once the lines of calls just answered have come in. */
  async function quiet() {
    await sleep(150);
    provider.clearRequests();
  }

  before(async () => {
    keys = generateKeys();
    for (const n of ['validate', 'validate-hardened', 'login', 'login-hardened', 'origins', 'forwarded', 'rotation', 'rotation-b']) {
      ports[n] = await freePort();
    }
    const origins = (n) => [`http://127.0.0.1:${ports[n]}`];
    const allOrigins = [...Object.keys(ports).flatMap(origins), `http://localhost:${ports.origins}`, `https://127.0.0.1:${ports.forwarded}`];
    provider = await h.startProvider({
      keys,
      redirectUris: allOrigins.map((o) => `${o}/callback`),
      postLogoutRedirectUris: allOrigins.map((o) => `${o}/`),
    });
    echo = await h.startEcho();
    const lp = { providerPort: provider.port, echoPort: echo.port };
    const vConf = validateConfig(provider.port);
    const lConf = loginConfig(provider.port, SECRET_A);
    [base, envs.origins, envs.forwarded, envs.rotation] = await Promise.all([
      startMultiEnvoy(h, {
        ...lp,
        name: 'base',
        listeners: [
          { name: 'validate', port: ports.validate, filterConfig: vConf, vmId: 'mesh-oidc-validate' },
          { name: 'validate-hardened', port: ports['validate-hardened'], filterConfig: vConf, vmId: 'mesh-oidc-validate', hcm: HARDENED_HCM },
          { name: 'login', port: ports.login, filterConfig: lConf, vmId: 'mesh-oidc-login' },
          { name: 'login-hardened', port: ports['login-hardened'], filterConfig: lConf, vmId: 'mesh-oidc-login', hcm: HARDENED_HCM },
        ],
      }),
      startMultiEnvoy(h, {
        ...lp,
        name: 'origins',
        listeners: [{
          name: 'main', port: ports.origins,
          filterConfig: loginConfig(provider.port, newSecret(), {
            public_origins: [`http://127.0.0.1:${ports.origins}`, `http://localhost:${ports.origins}`],
          }),
        }],
      }),
      startMultiEnvoy(h, {
        ...lp,
        name: 'forwarded',
        listeners: [{ name: 'main', port: ports.forwarded, filterConfig: loginConfig(provider.port, newSecret(), { trust_forwarded_proto: true }) }],
      }),
      startMultiEnvoy(h, {
        ...lp,
        name: 'rotation',
        listeners: [
          { name: 'ba', port: ports.rotation, filterConfig: loginConfig(provider.port, [SECRET_B, SECRET_A]), vmId: 'mesh-oidc-rotation-ba' },
          { name: 'b', port: ports['rotation-b'], filterConfig: loginConfig(provider.port, [SECRET_B]), vmId: 'mesh-oidc-rotation-b' },
        ],
      }),
    ]);
    if (base.exited) {
      throw new Error(`Envoy "base" refused its configuration (exit ${base.code}):\n${base.log().slice(-4000)}`);
    }
    alice = await loginWithPassword({ issuer: provider.issuer, redirectUri: `http://127.0.0.1:${ports.validate}/callback` });
    bob = await loginWithPassword({
      issuer: provider.issuer, redirectUri: `http://127.0.0.1:${ports.validate}/callback`, username: 'bob', password: 'bob-password',
    });
    // every Envoy fetches the key set at start; let the workers pick it up
    await provider.waitForRequests('/certs', { count: 2, timeoutMs: 5000 });
    await sleep(500);
  });
  after(() => h.cleanup());

  /** A fresh login through the login listener: its access token and its session cookie (sealed under secret A). */
  async function loginOnL(path = uniquePath('/start')) {
    const jar = new CookieJar();
    const login = await loginThroughFilter(jar, L(), path);
    assert.equal(login.callback.status, 302, `login through the filter: ${login.callback.status} ${login.callback.body}`);
    const token = jar.get(L(), 'access_token');
    const session = jar.get(L(), 'access_token_session');
    assert.ok(token && session, 'the login set access_token and access_token_session');
    return { jar, token, session, login };
  }

  const sign = (claims, opts = {}) => signToken(claims, { key: keys.signing, ...opts });
  const claims = (extra = {}) => accessTokenClaims({ issuer: provider.issuer, ...extra });

  // ================================================================================== item 1: B2+

  /** Tokens the provider's key signs that are not access tokens. */
  const notAccessTokens = () => ({
    'the ID token of a real login (claim typ ID, nonce, aud = client)': () => alice.tokens.id_token,
    'the real refresh token of that login (opaque at this provider)': () => alice.tokens.refresh_token,
    'an ID token (claim typ ID) with every access-token claim right': () => sign(claims({ typ: 'ID', aud: 'productpage' })),
    'a refresh token (claim typ Refresh), signed with the provider key': () => sign(claims({ typ: 'Refresh', aud: provider.issuer })),
    'an offline token (claim typ Offline)': () => sign(claims({ typ: 'Offline', aud: provider.issuer })),
    'a logout token (claim typ Logout, back-channel events)': () => sign(claims({
      typ: 'Logout', aud: 'productpage', events: { 'http://schemas.openid.net/event/backchannel-logout': {} },
    })),
    'an access token that carries a nonce': () => sign(claims({ nonce: crypto.randomBytes(16).toString('base64url') })),
  });

  h.test('issue 8 item 1 (B2+) token confusion: ID, refresh, offline, logout and nonce-carrying tokens are refused as access tokens in validate mode', async () => {
    assert.equal(decodeJwt(alice.tokens.id_token).payload.typ, 'ID', 'the provider\'s ID token says typ ID');
    const failures = [];
    for (const [name, make] of Object.entries(notAccessTokens())) {
      const token = await make();
      for (const [how, headers] of [['bearer', { authorization: `Bearer ${token}` }], ['cookie', { cookie: `access_token=${token}` }]]) {
        const a = await attempt(V(uniquePath('/api/confusion')), headers);
        try {
          assertInvalidToken(a.res, `${name} (${how})`);
          assertStopped(a, `${name} (${how})`, [401]);
        } catch (err) { failures.push(failed(err)); }
      }
    }
    assert.deepEqual(failures, []);
  });

  h.test('issue 8 item 1 (B2+) token confusion: in login mode those tokens are never forwarded', async () => {
    const failures = [];
    for (const [name, make] of Object.entries(notAccessTokens())) {
      const token = await make();
      const cases = [
        ['API bearer', { ...API_HEADERS, authorization: `Bearer ${token}` }, [401]],
        ['page cookie', { ...PAGE_HEADERS, cookie: `access_token=${token}` }, [302]],
      ];
      for (const [how, headers, statuses] of cases) {
        const a = await attempt(L(uniquePath('/confusion')), headers);
        try {
          assertStopped(a, `${name} (${how})`, statuses);
        } catch (err) { failures.push(failed(err)); }
      }
    }
    assert.deepEqual(failures, []);
  });

  h.test('issue 8 item 1 (B2+): access tokens marked typ at+jwt (header) or Keycloak typ Bearer (claim), or unmarked, still pass', async () => {
    const noTyp = claims();
    delete noTyp.typ;
    const rfc9068 = {
      iss: provider.issuer, exp: now() + 300, iat: now(), jti: crypto.randomUUID(), sub: alice.access.payload.sub,
      aud: 'account', client_id: 'productpage', scope: 'openid profile email', preferred_username: 'alice',
    };
    const good = {
      'a real access token of the provider (header typ JWT, claim typ Bearer)': alice.tokens.access_token,
      'header typ at+jwt with Keycloak claims': await sign(claims(), { header: { typ: 'at+jwt' } }),
      'header typ at+jwt, no typ claim': await sign(noTyp, { header: { typ: 'at+jwt' } }),
      'RFC 9068 shape: header typ at+jwt, client_id names the client, no azp': await sign(rfc9068, { header: { typ: 'at+jwt' } }),
      'no marker at all (header typ JWT, no typ claim)': await sign(noTyp),
    };
    const failures = [];
    for (const [name, token] of Object.entries(good)) {
      for (const [mode, url, headers] of [
        ['validate', V(uniquePath('/api/good')), { authorization: `Bearer ${token}` }],
        ['login', L(uniquePath('/api/good')), { ...API_HEADERS, authorization: `Bearer ${token}` }],
      ]) {
        const a = await attempt(url, headers);
        try {
          const seen = reachedOnce(a, `${name} (${mode})`);
          assert.deepEqual(headerValues(seen, 'x-user'), ['alice'], `${name} (${mode}): x-user from the token`);
        } catch (err) { failures.push(failed(err)); }
      }
    }
    assert.deepEqual(failures, []);
  });

  // ================================================================================== item 2: B6

  /** Every access token the service could read from a request: Authorization values and access_token cookies. */
  function tokensSeen(seen) {
    const out = [];
    for (const v of headerValues(seen, 'authorization')) {
      for (const piece of v.split(',')) {
        const m = /^\s*Bearer\s+(\S+)\s*$/i.exec(piece);
        out.push(m ? m[1] : piece.trim());
      }
    }
    for (const c of headerValues(seen, 'cookie')) {
      for (const [n, v] of cookiePairs(c)) if (n === 'access_token') out.push(v);
    }
    return out;
  }

  /**
   * What an accepted request may carry to the service: one copy of the verified token (`token`,
   * or the one a refresh put in the response's Set-Cookie), never a second token, no sealed cookie.
   */
  function assertOneCopy(a, token, what) {
    const seen = reachedOnce(a, what);
    const refreshed = setCookie(a.res, 'access_token');
    const verified = [token, ...(refreshed && !isCleared(refreshed) ? [refreshed.value] : [])];
    const auth = headerValues(seen, 'authorization');
    assert.ok(auth.length <= 1, `${what}: ${auth.length} Authorization headers reached the service`);
    if (auth.length) assert.ok(verified.some((t) => auth[0] === `Bearer ${t}`), `${what}: the Authorization the service got is not one verified token: ${auth[0].slice(0, 60)}...${auth[0].slice(-30)}`);
    const names = headerValues(seen, 'cookie').flatMap(cookiePairs).map(([n]) => n);
    assert.ok(names.filter((n) => n === 'access_token').length <= 1, `${what}: access_token cookies at the service: ${names.join(', ')}`);
    assert.deepEqual(names.filter(isSealedName), [], `${what}: sealed cookies at the service`);
    const tokens = [...new Set(tokensSeen(seen))];
    assert.ok(tokens.length <= 1, `${what}: ${tokens.length} different tokens reached the service`);
    for (const t of tokens) assert.ok(verified.includes(t), `${what}: a token that was not verified reached the service`);
    return seen;
  }

  h.test('issue 8 item 2 (B6), CVE-2026-26308 Envoy multi-value header bypass: two Authorization headers, two access_token cookies, a forged cookie beside a valid bearer (validate mode)', async () => {
    const valid = alice.tokens.access_token;
    const forged = tamper(valid, (p) => { p.preferred_username = 'mallory'; });
    const other = bob.tokens.access_token;
    const refused = {
      'two Authorization headers: valid, forged': { authorization: [`Bearer ${valid}`, `Bearer ${forged}`] },
      'two Authorization headers: forged, valid': { authorization: [`Bearer ${forged}`, `Bearer ${valid}`] },
      'two Authorization headers: alice, bob (both valid)': { authorization: [`Bearer ${valid}`, `Bearer ${other}`] },
      'two access_token cookies: valid, forged': { cookie: `access_token=${valid}; access_token=${forged}` },
      'two access_token cookies: forged, valid': { cookie: `access_token=${forged}; access_token=${valid}` },
      'two access_token cookies: alice, bob (both valid)': { cookie: `access_token=${valid}; access_token=${other}` },
      'a valid bearer and a forged access_token cookie': { authorization: `Bearer ${valid}`, cookie: `access_token=${forged}` },
      'a valid bearer and another user\'s valid cookie': { authorization: `Bearer ${valid}`, cookie: `access_token=${other}` },
    };
    const failures = [];
    for (const [what, headers] of Object.entries(refused)) {
      try { assertStopped(await attempt(V(uniquePath('/api/b6')), headers), what, [401]); } catch (err) { failures.push(failed(err)); }
    }
    const identical = {
      'two identical Authorization headers': { authorization: [`Bearer ${valid}`, `Bearer ${valid}`] },
      'two identical access_token cookies': { cookie: `a=1; access_token=${valid}; access_token=${valid}; b=2` },
      'the same token as bearer and cookie': { authorization: `Bearer ${valid}`, cookie: `access_token=${valid}` },
    };
    for (const [what, headers] of Object.entries(identical)) {
      const a = await attempt(V(uniquePath('/api/b6same')), headers);
      try {
        if (a.res.status === 200) assertOneCopy(a, valid, what);
        else assertStopped(a, what, [401]);
      } catch (err) { failures.push(failed(err)); }
    }
    assert.deepEqual(failures, []);
  });

  h.test('issue 8 item 2 (B6), CVE-2026-26308: login mode protected paths: one verified token reaches the service, never a second one or a sealed cookie', async () => {
    const { token, session } = await loginOnL();
    const forged = tamper(token, (p) => { p.preferred_username = 'mallory'; });
    const other = bob.tokens.access_token;
    const refused = {
      'two Authorization headers: valid, forged': { authorization: [`Bearer ${token}`, `Bearer ${forged}`] },
      'two Authorization headers: alice, bob': { authorization: [`Bearer ${token}`, `Bearer ${other}`] },
      'two access_token cookies: valid, forged': { cookie: `access_token=${token}; access_token=${forged}` },
      'two access_token cookies: forged, valid': { cookie: `access_token=${forged}; access_token=${token}` },
      'a valid bearer and a forged access_token cookie': { authorization: `Bearer ${token}`, cookie: `access_token=${forged}` },
      'a valid bearer and another user\'s access_token cookie': { authorization: `Bearer ${token}`, cookie: `access_token=${other}` },
    };
    const failures = [];
    for (const [what, headers] of Object.entries(refused)) {
      try { assertStopped(await attempt(L(uniquePath('/api/b6')), { ...API_HEADERS, ...headers }), what, [401]); } catch (err) { failures.push(failed(err)); }
    }
    const sealed = `access_token_session=${session}; access_token_tx_abcdefgh=stale`;
    const identical = {
      'two identical Authorization headers': { authorization: [`Bearer ${token}`, `Bearer ${token}`], cookie: sealed },
      'two identical access_token cookies and the session': { cookie: `theme=dark; access_token=${token}; access_token=${token}; ${sealed}; lang=en` },
      'the same token as bearer and cookie, and the session': { authorization: `Bearer ${token}`, cookie: `access_token=${token}; ${sealed}` },
    };
    for (const [what, headers] of Object.entries(identical)) {
      const a = await attempt(L(uniquePath('/api/b6same')), { ...API_HEADERS, ...headers });
      try {
        if (a.res.status === 200) assertOneCopy(a, token, what);
        else assertStopped(a, what, [401]);
      } catch (err) { failures.push(failed(err)); }
    }
    assert.deepEqual(failures, []);
  });

  h.test('issue 8 item 2 (B6), CVE-2026-26308: login mode skip paths never pass a sealed cookie or a second token', async () => {
    const { token, session } = await loginOnL();
    const forged = tamper(token, (p) => { p.preferred_username = 'mallory'; });
    const sealed = `access_token_session=${session}; access_token_session_1=${session.slice(0, 40)}; access_token_tx_abcdefgh=stale`;
    const failures = [];
    for (const skipPath of ['/healthz', '/static/app.css']) {
      // one token and the sealed cookies: the request passes (B4), the sealed cookies stay behind (B6)
      const a = await attempt(L(skipPath), { ...PAGE_HEADERS, cookie: `theme=dark; access_token=${token}; ${sealed}; lang=en` });
      try {
        const seen = assertOneCopy(a, token, `${skipPath}: one token and the sealed cookies`);
        const names = headerValues(seen, 'cookie').flatMap(cookiePairs).map(([n]) => n);
        assert.ok(names.includes('theme') && names.includes('lang'), `${skipPath}: the application's own cookies are kept: ${names.join(', ')}`);
      } catch (err) { failures.push(failed(err)); }
      const identical = {
        'two identical access_token cookies': { cookie: `access_token=${token}; access_token=${token}; ${sealed}` },
        'two identical Authorization headers': { authorization: [`Bearer ${token}`, `Bearer ${token}`], cookie: sealed },
      };
      for (const [what, headers] of Object.entries(identical)) {
        const b = await attempt(L(skipPath), { ...PAGE_HEADERS, ...headers });
        try {
          if (b.res.status === 200) assertOneCopy(b, token, `${skipPath}: ${what}`);
          else assertStopped(b, `${skipPath}: ${what}`, [400, 401]);
        } catch (err) { failures.push(failed(err)); }
      }
      const different = {
        'two different access_token cookies': { cookie: `access_token=${token}; access_token=${forged}; ${sealed}` },
        'two different Authorization headers': { authorization: [`Bearer ${token}`, `Bearer ${forged}`] },
      };
      for (const [what, headers] of Object.entries(different)) {
        try { assertStopped(await attempt(L(skipPath), { ...PAGE_HEADERS, ...headers }), `${skipPath}: ${what}`, [400, 401]); } catch (err) { failures.push(failed(err)); }
      }
    }
    assert.deepEqual(failures, []);
  });

  // ================================================================================== item 3: B4+

  const ESCAPES = [
    '/static/..%2Fproductpage',
    '/static/..%2fproductpage',
    '/static/..%5Cproductpage',
    '/static/..\\productpage',
    '/static/../productpage',
    '/static/%2e%2e/productpage',
    '/static/.%2e/productpage',
    '/static/..;/productpage',
    '/static;x=1/../productpage',
    '//static/..//productpage',
    '/static/..//productpage',
    '/static%2F..%2Fproductpage',
    '/healthz/../productpage',
    '/healthz;jsessionid=1',
    '/healthz;/../productpage',
    '/healthz%2F..%2Fproductpage',
    '/productpage?x=/static/',
    '/productpage?/healthz',
    '/productpage;/static/x',
  ];
  const SKIPPED = ['/static/app.css', '/static/css/site.css?v=1', '/healthz', '/healthz?next=/productpage', '/static/%61pp.css'];

  function skipEscapes(listeners) {
    return async () => {
      const failures = [];
      for (const [name, url, headers] of listeners()) {
        for (const p of ESCAPES) {
          let a;
          try {
            a = await attempt(url(p), headers);
          } catch (err) { failures.push(`${name} ${p}: ${err.message}`); continue; }
          const got = a.got();
          if (got.length) failures.push(`${name} ${p}: reached the service unauthenticated as ${JSON.stringify(got[0].path)} (status ${a.res.status})`);
          else if (![400, 401, 302].includes(a.res.status)) failures.push(`${name} ${p}: status ${a.res.status}`);
        }
        for (const p of SKIPPED) {
          const a = await attempt(url(p), headers);
          if (a.res.status !== 200 || a.got().length !== 1) failures.push(`${name} ${p}: a skip path must pass without a token, got ${a.res.status}, reached ${a.got().length}`);
        }
      }
      assert.deepEqual(failures, []);
    };
  }

  h.test('issue 8 item 3 (B4+), CVE-2026-73511/-73551/-73553 path parameters, CVE-2025-54576 query-string skip match: no skip_paths escape with the shipped path options (normalize_path, merge_slashes, escaped slashes rejected)', skipEscapes(() => [
    ['validate-hardened', VH, {}],
    ['login-hardened', LH, API_HEADERS],
  ]));

  h.test('issue 8 item 3 (B4+), CVE-2026-73511/-73551/-73553, CVE-2025-54576: no skip_paths escape with Envoy\'s default path handling (the filter alone)', skipEscapes(() => [
    ['validate', V, {}],
    ['login', L, API_HEADERS],
  ]));

  // ================================================================================== item 4: L1+

  h.test('issue 8 item 4 (L1+ public_origins): a foreign Host gets 400 and no redirect; redirect_uri and post_logout_redirect_uri use the configured origin', async () => {
    const e = need('origins');
    const port = ports.origins;
    const mine = `http://127.0.0.1:${port}`;
    const failures = [];
    const check = (fn) => { try { fn(); } catch (err) { failures.push(failed(err)); } };

    for (const [what, path, headers] of [
      ['page with Host: evil.example', '/page', { ...PAGE_HEADERS, host: 'evil.example' }],
      ['page with Host: evil.example:port', '/page', { ...PAGE_HEADERS, host: `evil.example:${port}` }],
      ['page with Host: 127.0.0.1 on another port', '/page', { ...PAGE_HEADERS, host: '127.0.0.1:1' }],
      ['logout with Host: evil.example', '/logout', { ...PAGE_HEADERS, host: 'evil.example' }],
    ]) {
      const a = await attempt(`${e.urls.main}${path}`, headers);
      check(() => {
        assert.equal(a.res.status, 400, `${what}: status ${a.res.status} location ${a.res.headers.location}`);
        assert.equal(a.res.headers.location, undefined, `${what}: no redirect`);
        assert.deepEqual(setCookies(a.res, /_tx_/).filter((c) => !isCleared(c)), [], `${what}: no login transaction`);
        assert.deepEqual(a.got(), [], `${what}: never reaches the service`);
      });
    }
    // absolute-form request target: Envoy takes :authority from it
    const abs = await rawRequest(port, `GET http://evil.example/page HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAccept: text/html\r\nConnection: close\r\n\r\n`);
    check(() => {
      assert.ok(abs.status === 400, `absolute-form http://evil.example/page: status ${abs.status}`);
      assert.doesNotMatch(abs.text.split('\r\n\r\n')[0], /\r\nlocation:/i, 'absolute-form: no redirect');
    });

    const redirectUriOf = (res) => new URL(res.headers.location).searchParams.get('redirect_uri');
    for (const [what, headers, expected] of [
      ['Host 127.0.0.1', { ...PAGE_HEADERS, host: `127.0.0.1:${port}` }, `${mine}/callback`],
      ['Host localhost (the second configured origin)', { ...PAGE_HEADERS, host: `localhost:${port}` }, `http://localhost:${port}/callback`],
      ['x-forwarded-host: evil.example', { ...PAGE_HEADERS, 'x-forwarded-host': 'evil.example' }, `${mine}/callback`],
      ['x-forwarded-proto: https (no configured https origin)', { ...PAGE_HEADERS, 'x-forwarded-proto': 'https' }, `${mine}/callback`],
    ]) {
      const res = await request(`${e.urls.main}/page`, { headers });
      check(() => {
        assert.equal(res.status, 302, `${what}: status ${res.status} ${res.body.slice(0, 200)}`);
        assert.equal(redirectUriOf(res), expected, `${what}: redirect_uri`);
      });
    }

    // a real login, then logout: post_logout_redirect_uri is the configured origin's
    const jar = new CookieJar();
    const login = await loginThroughFilter(jar, e.urls.main, '/origins-start');
    check(() => assert.equal(login.callback.status, 302, `login: ${login.callback.status} ${login.callback.body}`));
    const out = await requestWithJar(jar, `${e.urls.main}/logout`, { headers: PAGE_HEADERS });
    check(() => {
      assert.equal(out.status, 302, `logout: ${out.status}`);
      assert.equal(new URL(out.headers.location).searchParams.get('post_logout_redirect_uri'), `${mine}/`);
    });
    assert.deepEqual(failures, []);
  });

  // ================================================================================== item 5

  h.test('issue 8 item 5 (L1+): a refresh\'s Set-Cookie on a response the service marks Cache-Control: public is never cacheable', async () => {
    const { token, session } = await loginOnL();
    // control: the route really makes the service's answer public
    const control = await attempt(L(`${CACHE_PUBLIC_PREFIX}/control`), { ...API_HEADERS, cookie: `access_token=${token}; access_token_session=${session}` });
    reachedOnce(control, 'a request with a valid session');
    assert.match(String(control.res.headers['cache-control']), /public/, 'the service\'s Cache-Control: public reaches the client when no cookie is set');

    for (const [what, headers] of [
      ['API request', API_HEADERS],
      ['page request', PAGE_HEADERS],
    ]) {
      await quiet();
      const a = await attempt(L(`${CACHE_PUBLIC_PREFIX}${uniquePath('/refresh')}`), { ...headers, cookie: `access_token_session=${session}` });
      reachedOnce(a, `${what}: the session alone (refresh)`);
      // The second request carries the same (already spent) refresh token: the filter reuses the
      // first refresh's answer (L5 single flight) instead of calling the provider again.
      const grants = (await provider.waitForRequests('/token')).map((r) => r.grant);
      assert.ok(grants.every((g) => g === 'refresh_token') && grants.length <= 1, `${what}: the filter refreshed: ${grants}`);
      assert.ok(sessionSets(a.res).length >= 1, `${what}: the refresh set new cookies`);
      const cc = String(a.res.headers['cache-control'] ?? '');
      assert.match(cc, /no-store|private/i, `${what}: Cache-Control "${cc}" on a response that sets the session cookies`);
      assert.doesNotMatch(cc, /\bpublic\b/i, `${what}: Cache-Control "${cc}"`);
    }
  });

  h.test('issue 8 item 5 (B3+), CVE-2025-64484 oauth2-proxy header smuggling: claim headers spelled with "_" or in any case never reach the service', async () => {
    const { token } = await loginOnL();
    // node sends one header per name case-insensitively, and Envoy lower-cases names: what is left
    // to smuggle is the "_" spelling beside the "-" one
    const spoof = { X_User: 'admin', 'X-User': 'admin-2', x_email: 'admin@evil.example', 'X-EMAIL': 'admin-2@evil.example' };
    const spellings = (seen, claim) => {
      const out = [];
      for (let i = 0; i < seen.rawHeaders.length; i += 2) {
        if (seen.rawHeaders[i].toLowerCase().replace(/_/g, '-') === claim) out.push(`${seen.rawHeaders[i]}: ${seen.rawHeaders[i + 1]}`);
      }
      return out;
    };
    const cases = [
      ['validate, protected', V(uniquePath('/api/smuggle')), { authorization: `Bearer ${alice.tokens.access_token}` }, ['x-user: alice'], ['x-email: alice@example.com']],
      ['validate, skip path', V('/healthz'), {}, [], []],
      ['login, protected', L(uniquePath('/smuggle')), { ...PAGE_HEADERS, cookie: `access_token=${token}` }, ['x-user: alice'], null],
      ['login, skip path', L('/static/smuggle.css'), PAGE_HEADERS, [], null],
    ];
    const failures = [];
    for (const [what, url, headers, user, email] of cases) {
      const a = await attempt(url, { ...headers, ...spoof });
      try {
        const seen = reachedOnce(a, what);
        assert.deepEqual(spellings(seen, 'x-user'), user, `${what}: every spelling of x-user the service got`);
        if (email) assert.deepEqual(spellings(seen, 'x-email'), email, `${what}: every spelling of x-email`);
      } catch (err) { failures.push(failed(err)); }
    }
    assert.deepEqual(failures, []);
  });

  for (const [name, secret] of [
    ['the README placeholder', 'PLACEHOLDER+replace+with+openssl+rand+base64+32+CHANGEME'],
    ['32 zero bytes', Buffer.alloc(32).toString('base64')],
    ['one byte repeated (32 x "a")', Buffer.alloc(32, 'a').toString('base64')],
    ['a short pattern repeated ("secret12" x 4)', Buffer.from('secret12'.repeat(4)).toString('base64')],
    ['a list with a good secret and the placeholder', [newSecret(), 'PLACEHOLDER+replace+with+openssl+rand+base64+32+CHANGEME']],
  ]) {
    h.test(`issue 8 item 5: session_secret that is ${name} makes Envoy refuse the plugin`, async (th) => {
      const e = await th.startEnvoy({ filterConfig: loginConfig(provider.port, secret), providerPort: provider.port, echoPort: echo.port, readyTimeoutMs: 15000 });
      if (!e.exited && await e.listening()) {
        const res = await request(`${e.url}/x`, { headers: PAGE_HEADERS }).catch((err) => ({ status: 0, body: err.message }));
        assert.fail(`Envoy took session_secret ${JSON.stringify(secret)}: listener up, GET /x -> ${res.status}`);
      }
      const lines = e.log().split('\n').filter((l) => /wasm|mesh-oidc|mesh_oidc/i.test(l));
      assert.ok(lines.some((l) => /session_secret/.test(l)), `a log line names session_secret:\n${lines.slice(-10).join('\n')}`);
      assert.ok(!lines.some((l) => typeof secret === 'string' && l.includes(secret)), 'the secret itself is not logged');
    });
  }

  h.test('issue 8 item 5 (L2+): a transaction cookie replayed for a second callback is refused (400), with no second token call', async () => {
    const jar = new CookieJar();
    const start = await startLogin(jar, L('/replay-tx?a=1'));
    assert.equal(start.status, 302);
    const { callbackUrl } = await toCallback(jar, start.authUrl, start.params.redirect_uri);
    const txPair = `${start.txCookie.name}=${start.txCookie.value}`;
    const first = await request(callbackUrl, { headers: { ...PAGE_HEADERS, cookie: txPair } });
    assert.equal(first.status, 302, `first callback: ${first.status} ${first.body}`);
    assert.ok(sessionSets(first).length >= 2, 'the first callback makes a session');

    // the provider session is alive: the same authorization request yields a new code for the same state
    const again = await atProvider(jar, start.authUrl, start.params.redirect_uri);
    assert.ok(again.redirect, 'a second code for the same state');
    assert.equal(new URL(again.redirect).searchParams.get('state'), start.state);
    await quiet();
    for (const [what, cbUrl] of [['a fresh code, the used state and its cookie', again.redirect], ['the same callback again', callbackUrl]]) {
      const res = await request(cbUrl, { headers: { ...PAGE_HEADERS, cookie: txPair } });
      assert.equal(res.status, 400, `${what}: status ${res.status} ${res.body.slice(0, 200)}`);
      assert.equal(res.headers.location, undefined, `${what}: no redirect`);
      assert.deepEqual(sessionSets(res).map((c) => c.name), [], `${what}: no session`);
    }
    await sleep(150);
    assert.deepEqual(provider.requests('/token').map((r) => r.grant), [], 'a used state never reaches the token endpoint again');
  });

  h.test('issue 8 item 5: a client\'s x-forwarded-proto: https does not make cookies Secure without trust_forwarded_proto', async () => {
    const xfp = { ...PAGE_HEADERS, 'x-forwarded-proto': 'https' };
    const start = await startLogin(new CookieJar(), L(uniquePath('/xfp')), { headers: xfp });
    assert.equal(start.status, 302);
    assert.equal(start.params.redirect_uri, L('/callback'), 'redirect_uri keeps the scheme the connection really has');
    assert.equal(start.txCookie.attrs.secure, undefined, 'the transaction cookie is not Secure');
    const jar = new CookieJar();
    const login = await loginThroughFilter(jar, L(), uniquePath('/xfp-login'), { headers: xfp });
    assert.equal(login.callback.status, 302, login.callback.body);
    for (const c of sessionSets(login.callback)) assert.equal(c.attrs.secure, undefined, `${c.name} is not Secure`);
  });

  h.test('issue 8 item 5: with trust_forwarded_proto: true, x-forwarded-proto: https makes Secure cookies and an https redirect_uri', async () => {
    const e = need('forwarded');
    const withXfp = await startLogin(new CookieJar(), `${e.urls.main}/xfp`, { headers: { ...PAGE_HEADERS, 'x-forwarded-proto': 'https' } });
    assert.equal(withXfp.status, 302);
    assert.equal(withXfp.params.redirect_uri, `https://127.0.0.1:${ports.forwarded}/callback`);
    assert.equal(withXfp.txCookie.attrs.secure, true);
    const without = await startLogin(new CookieJar(), `${e.urls.main}/plain`);
    assert.equal(without.params.redirect_uri, `http://127.0.0.1:${ports.forwarded}/callback`);
    assert.equal(without.txCookie.attrs.secure, undefined);
  });

  h.test('issue 8 item 5, mod_auth_openidc CVE-2024-24814 chunk-count DoS: 1,000 junk transaction cookies and absurd chunk indices get a bounded number of Set-Cookie headers; Envoy keeps serving', { timeout: 60000 }, async () => {
    const MAX_SET_COOKIES = 16;
    const { token, session } = await loginOnL();
    const forged = tamper(token, (p) => { p.exp += 3600; });
    const txJunk = Array.from({ length: 1000 }, (_, i) => `access_token_tx_${String(i).padStart(8, '0')}=junk${i}`).join('; ');
    const chunkJunk = [
      ...Array.from({ length: 99 }, (_, i) => `access_token_session_${i + 1}=s${i}`),
      ...Array.from({ length: 99 }, (_, i) => `access_token_${i + 1}=a${i}`),
      'access_token_session_4294967296=x', 'access_token_18446744073709551616=x', 'access_token_session_99999999999999999999=x',
      'access_token_session_-1=x', 'access_token_session_01=x', 'access_token_1e3=x', 'access_token_session_0=x',
    ].join('; ');
    const cases = [
      ['page, 1,000 transaction cookies', '/dos-page', { ...PAGE_HEADERS, cookie: txJunk }],
      ['API, 1,000 transaction cookies', '/dos-api', { ...API_HEADERS, cookie: txJunk }],
      ['logout, 1,000 transaction cookies', '/logout', { ...PAGE_HEADERS, cookie: `access_token=${token}; access_token_session=${session}; ${txJunk}` }],
      ['callback, 1,000 transaction cookies', '/callback?code=x&state=abcdefgh-state', { ...PAGE_HEADERS, cookie: txJunk }],
      ['page, a forged token and 200 chunk cookies', '/dos-chunks', { ...PAGE_HEADERS, cookie: `access_token=${forged}; ${chunkJunk}` }],
      ['logout, 200 chunk cookies', '/logout', { ...PAGE_HEADERS, cookie: `access_token=${forged}; access_token_session=${session}; ${chunkJunk}` }],
    ];
    const failures = [];
    for (const [what, path, headers] of cases) {
      const a = await attempt(L(path), headers).catch((err) => ({ error: err }));
      if (a.error) { failures.push(`${what}: ${a.error.message}`); continue; }
      const n = [].concat(a.res.headers['set-cookie'] ?? []).length;
      if (n > MAX_SET_COOKIES) failures.push(`${what}: ${n} Set-Cookie headers (at most ${MAX_SET_COOKIES})`);
      if (path !== '/logout' && a.got().length) failures.push(`${what}: reached the service`);
      if (a.res.ms > 3000) failures.push(`${what}: took ${a.res.ms} ms`);
    }
    // Envoy and the VM keep serving
    const ok = await attempt(L(uniquePath('/after-dos')), { ...API_HEADERS, cookie: `access_token=${token}` });
    if (ok.res.status !== 200) failures.push(`a valid token after the flood: ${ok.res.status}`);
    if (!base.alive) failures.push('Envoy is no longer running');
    failures.push(...vmFailureLines(base.log()).map((l) => `VM failure logged: ${l}`));
    assert.deepEqual(failures, []);
  });

  h.test('issue 8 item 5 (B2+): a correctly signed token with JWE header parameters (enc, zip) is refused', async () => {
    const failures = [];
    // control: the same claims without the parameters pass
    const control = await attempt(V(uniquePath('/api/jwe-control')), { authorization: `Bearer ${await sign(claims())}` });
    reachedOnce(control, 'the same claims, a plain JWS header');
    for (const [what, header] of [
      ['enc A256GCM', { enc: 'A256GCM' }],
      ['zip DEF', { zip: 'DEF' }],
      ['enc and zip', { enc: 'A128CBC-HS256', zip: 'DEF' }],
    ]) {
      const token = await sign(claims(), { header });
      for (const [mode, url, headers] of [
        ['validate', V(uniquePath('/api/jwe')), { authorization: `Bearer ${token}` }],
        ['login', L(uniquePath('/api/jwe')), { ...API_HEADERS, authorization: `Bearer ${token}` }],
      ]) {
        try { assertStopped(await attempt(url, headers), `${what} (${mode})`, [401]); } catch (err) { failures.push(failed(err)); }
      }
    }
    assert.deepEqual(failures, []);
  });

  h.test('verified-token cache: a token made to share a cached token\'s hash (same length and signature tail, another user) is verified, never served', async () => {
    const failures = [];
    const token = await sign(claims());
    const [head, payload, signature] = token.split('.');
    // "alice" becomes "admin": the same length, so the same hash slot as the cached token.
    const forgedClaims = JSON.parse(Buffer.from(payload, 'base64url').toString());
    assert.equal(forgedClaims.preferred_username, 'alice');
    forgedClaims.preferred_username = 'admin';
    const forged = `${head}.${Buffer.from(JSON.stringify(forgedClaims)).toString('base64url')}.${signature}`;
    assert.equal(forged.length, token.length);
    assert.equal(forged.slice(-64), token.slice(-64));
    for (const [mode, url, extra] of [
      ['validate', V, {}],
      ['login', L, API_HEADERS],
    ]) {
      // The valid token first: verified and cached.
      reachedOnce(await attempt(url(uniquePath('/api/cache-control')), { ...extra, authorization: `Bearer ${token}` }), `the valid token (${mode})`);
      try {
        assertStopped(await attempt(url(uniquePath('/api/cache-forged')), { ...extra, authorization: `Bearer ${forged}` }), `the forged twin (${mode})`, [401]);
      } catch (err) { failures.push(failed(err)); }
      // And the cached token still passes after it.
      reachedOnce(await attempt(url(uniquePath('/api/cache-again')), { ...extra, authorization: `Bearer ${token}` }), `the valid token again (${mode})`);
    }
    assert.deepEqual(failures, []);
  });

  h.test('issue 8 item 5 (L2+): a callback with a duplicated state or code parameter gets 400 and no session', async () => {
    const jar = new CookieJar();
    const start = await startLogin(jar, L('/dup-params'));
    const { callbackUrl } = await toCallback(jar, start.authUrl, start.params.redirect_uri);
    const q = new URL(callbackUrl).searchParams;
    const code = encodeURIComponent(q.get('code'));
    const state = encodeURIComponent(q.get('state'));
    const txPair = `${start.txCookie.name}=${start.txCookie.value}`;
    await quiet();
    const failures = [];
    for (const [what, query] of [
      ['state twice, identical', `code=${code}&state=${state}&state=${state}`],
      ['state twice, the second forged', `code=${code}&state=${state}&state=forged-state`],
      ['state twice, the first forged', `code=${code}&state=forged-state&state=${state}`],
      ['code twice, identical', `code=${code}&code=${code}&state=${state}`],
      ['code twice, the second forged', `code=${code}&code=forged-code&state=${state}`],
      ['code twice, the first forged', `state=${state}&code=forged-code&code=${code}`],
    ]) {
      const res = await request(L(`/callback?${query}`), { headers: { ...PAGE_HEADERS, cookie: txPair } });
      try {
        assert.equal(res.status, 400, `${what}: status ${res.status} ${res.body.slice(0, 200)}`);
        assert.deepEqual(sessionSets(res).map((c) => c.name), [], `${what}: no session`);
      } catch (err) { failures.push(failed(err)); }
    }
    await sleep(150);
    const calls = provider.requests('/token');
    if (calls.length) failures.push(`${calls.length} token calls for callbacks with duplicated parameters`);
    assert.deepEqual(failures, []);
  });

  // ================================================================================== item 6

  h.test('issue 8 item 6 (B2+): exp is exclusive: a token whose exp + clock_skew_seconds (0) is now is refused, cache included', { timeout: 30000 }, async () => {
    /** Wait for the start of a second, so that a request made now answers within it. */
    const secondStart = async () => {
      const ms = Date.now() % 1000;
      if (ms > 50) await sleep(1000 - ms + 20);
      return now();
    };
    const sub = alice.access.payload.sub;
    // exp = now
    let done = false;
    for (let i = 0; i < 5 && !done; i++) {
      const t = await secondStart();
      const token = await sign(claims({ now: t - 60, ttl: 60, sub }));
      const a = await attempt(V(uniquePath('/api/exp-now')), { authorization: `Bearer ${token}` });
      if (now() !== t) continue; // crossed into the next second: try again
      assertInvalidToken(a.res, 'exp = now');
      assertStopped(a, 'exp = now', [401]);
      done = true;
    }
    assert.ok(done, 'could not send a request within one second');
    // a token verified (and cached) while valid is refused from the second its exp is reached
    done = false;
    for (let i = 0; i < 5 && !done; i++) {
      const t = await secondStart();
      const token = await sign(claims({ now: t - 60, ttl: 61, sub })); // exp = t + 1
      const first = await attempt(V(uniquePath('/api/exp-cache')), { authorization: `Bearer ${token}` });
      if (now() !== t) continue;
      reachedOnce(first, 'exp = now + 1');
      await sleep((t + 1) * 1000 - Date.now() + 30);
      const second = await attempt(V(uniquePath('/api/exp-cache')), { authorization: `Bearer ${token}` });
      if (now() !== t + 1) continue;
      assertInvalidToken(second.res, 'the cached token once now = exp');
      assertStopped(second, 'the cached token once now = exp', [401]);
      done = true;
    }
    assert.ok(done, 'could not time the requests within their seconds');
  });

  h.test('issue 8 item 6 (L1+): login mode, a non-page request with a present but invalid token gets 401 with error="invalid_token"', async () => {
    const forged = tamper(alice.tokens.access_token, (p) => { p.preferred_username = 'mallory'; });
    const expired = await sign(claims({ now: now() - 3600 }));
    const failures = [];
    for (const [what, headers] of [
      ['a forged bearer', { authorization: `Bearer ${forged}` }],
      ['an expired bearer', { authorization: `Bearer ${expired}` }],
      ['a forged access_token cookie', { cookie: `access_token=${forged}` }],
      ['a garbage access_token cookie', { cookie: 'access_token=not-a-token' }],
    ]) {
      const a = await attempt(L(uniquePath('/api/invalid')), { ...API_HEADERS, ...headers });
      try {
        assertInvalidToken(a.res, what);
        assert.equal(a.res.headers.location, undefined, `${what}: no redirect`);
        assertStopped(a, what, [401]);
      } catch (err) { failures.push(failed(err)); }
    }
    // no token at all: the challenge names no error (V2)
    const none = await attempt(L(uniquePath('/api/none')), API_HEADERS);
    try {
      assertStopped(none, 'no token', [401]);
      assert.doesNotMatch(String(none.res.headers['www-authenticate']), /error=/, 'no token: no error in the challenge');
    } catch (err) { failures.push(failed(err)); }
    assert.deepEqual(failures, []);
  });

  // ================================================================================== item 7: L2+

  h.test('issue 8 item 7 (L2+ rotation): cookies sealed under secret A keep working on an Envoy with session_secret [B, A]', async () => {
    const e = need('rotation');
    const ba = e.urls.ba;
    const { session } = await loginOnL();
    // the session sealed under A refreshes on [B, A]
    await quiet();
    const a = await attempt(`${ba}${uniquePath('/rot')}`, { ...API_HEADERS, cookie: `access_token_session=${session}` });
    const seen = reachedOnce(a, 'the A-sealed session on [B, A]');
    assert.deepEqual(headerValues(seen, 'x-user'), ['alice']);
    assert.deepEqual((await provider.waitForRequests('/token')).map((r) => r.grant), ['refresh_token']);
    const resealed = setCookie(a.res, 'access_token_session');
    assert.ok(resealed && !isCleared(resealed), 'a new session cookie');
    assert.deepEqual(headerValues(seen, 'cookie').flatMap(cookiePairs).map(([n]) => n).filter(isSealedName), [], 'no sealed cookie at the service');

    // the new cookie is sealed under B: the [B] Envoy opens it
    const b = await attempt(`${e.urls.b}${uniquePath('/rot-b')}`, { ...API_HEADERS, cookie: `access_token_session=${resealed.value}` });
    reachedOnce(b, 'the session resealed under B, on [B]');

    // a transaction sealed under A (a login started on the A Envoy for the [B, A] origin) completes on [B, A]
    const jar = new CookieJar();
    const start = await startLogin(jar, L('/rot-tx?x=1'), { headers: { ...PAGE_HEADERS, host: `127.0.0.1:${ports.rotation}` } });
    assert.equal(start.params.redirect_uri, `${ba}/callback`);
    const { callbackUrl } = await toCallback(jar, start.authUrl, start.params.redirect_uri);
    const cb = await request(callbackUrl, { headers: { ...PAGE_HEADERS, cookie: `${start.txCookie.name}=${start.txCookie.value}` } });
    assert.equal(cb.status, 302, `callback with the A-sealed transaction: ${cb.status} ${cb.body.slice(0, 200)}`);
    assert.equal(cb.headers.location, '/rot-tx?x=1');
    assert.ok(sessionSets(cb).length >= 2, 'a session');
  });

  h.test('issue 8 item 7 (L2+ rotation): an Envoy with only [B] does not accept cookies sealed under A, and they never reach the service', async () => {
    const e = need('rotation');
    const b = e.urls.b;
    const { session } = await loginOnL();
    await quiet();
    const page = await attempt(`${b}${uniquePath('/only-b')}`, { ...PAGE_HEADERS, cookie: `access_token_session=${session}` });
    assertStopped(page, 'the A-sealed session on [B] (page)', [302]);
    assert.ok(String(page.res.headers.location).startsWith(`${provider.issuer}/protocol/openid-connect/auth?`), 'L1 again');
    const api = await attempt(`${b}${uniquePath('/only-b-api')}`, { ...API_HEADERS, cookie: `access_token_session=${session}` });
    assertStopped(api, 'the A-sealed session on [B] (API)', [401]);
    await sleep(150);
    assert.deepEqual(provider.requests('/token'), [], 'no refresh with a session [B] cannot open');

    // a skip path: the request passes, the old sealed cookies stay behind
    const skipped = await attempt(`${b}/healthz`, { ...PAGE_HEADERS, cookie: `theme=dark; access_token_session=${session}` });
    const seen = reachedOnce(skipped, 'skip path with the A-sealed session');
    assert.deepEqual(headerValues(seen, 'cookie').flatMap(cookiePairs).map(([n]) => n).filter(isSealedName), [], 'the sealed cookie never reaches the service');

    // a transaction sealed under A does not complete on [B]
    const jar = new CookieJar();
    const start = await startLogin(jar, L('/only-b-tx'), { headers: { ...PAGE_HEADERS, host: `127.0.0.1:${ports['rotation-b']}` } });
    const { callbackUrl } = await toCallback(jar, start.authUrl, start.params.redirect_uri);
    await quiet();
    const cb = await request(callbackUrl, { headers: { ...PAGE_HEADERS, cookie: `${start.txCookie.name}=${start.txCookie.value}` } });
    assert.equal(cb.status, 400, `callback with the A-sealed transaction on [B]: ${cb.status}`);
    assert.deepEqual(sessionSets(cb).map((c) => c.name), [], 'no session');
    await sleep(150);
    assert.deepEqual(provider.requests('/token'), [], 'no code exchange');
  });

  // ================================================================================== CVE-2026-48090

  /** After a stream reset: Envoy alive, no VM failure logged, and the filter still logs in and refreshes. */
  async function assertStillServing(session) {
    assert.ok(base.alive, 'Envoy is still running');
    assert.deepEqual(crashLines(base.log()), [], 'no panic or wasm trap in the Envoy log');
    assert.deepEqual(vmFailureLines(base.log()), [], 'no VM failure in the Envoy log');
    for (let i = 0; i < 6; i++) { // several connections: both workers
      const a = await attempt(L(uniquePath('/after-reset')), { ...API_HEADERS, authorization: `Bearer ${alice.tokens.access_token}` });
      reachedOnce(a, `request ${i} after the resets`);
    }
    const refreshed = await attempt(L(uniquePath('/after-reset-refresh')), { ...API_HEADERS, cookie: `access_token_session=${session}` });
    reachedOnce(refreshed, 'a refresh of the same session after the resets');
    const again = await loginThroughFilter(new CookieJar(), L(), '/after-reset-login');
    assert.equal(again.callback.status, 302, `a whole login after the resets: ${again.callback.status} ${again.callback.body}`);
    assert.equal(again.final.status, 200);
  }

  h.test('CVE-2026-48090 envoy oauth2 use-after-free: clients that reset while the callback\'s token call is in flight leave the VM serving', { timeout: 60000 }, async () => {
    const { session } = await loginOnL();
    const flows = [];
    for (let i = 0; i < 4; i++) {
      const jar = new CookieJar();
      const start = await startLogin(jar, L(`/uaf-callback-${i}`));
      const { callbackUrl } = await toCallback(jar, start.authUrl, start.params.redirect_uri);
      const u = new URL(callbackUrl);
      flows.push({ target: `${u.pathname}${u.search}`, cookie: `${start.txCookie.name}=${start.txCookie.value}` });
    }
    await quiet();
    await provider.control({ delayMs: { token: 1500 } });
    try {
      const early = await Promise.all(flows.map((f) => sendAndReset(ports.login, rawGetText(f.target, [
        ['Host', `127.0.0.1:${ports.login}`], ['Accept', 'text/html'], ['Cookie', f.cookie],
      ]), 300)));
      assert.ok(early.every((t) => t === ''), 'no answer before the reset: the token calls were in flight');
      await sleep(2500); // the provider answers calls whose requests are gone
    } finally {
      await provider.control({});
    }
    const calls = await provider.waitForRequests((r) => r.path.endsWith('/token'), { count: flows.length, timeoutMs: 2000 });
    assert.ok(calls.length >= 1, 'the filter had dispatched the code exchanges when the clients reset');
    await assertStillServing(session);
  });

  h.test('CVE-2026-48090 envoy oauth2 use-after-free: clients that reset while a refresh\'s token call is in flight leave the VM serving', { timeout: 60000 }, async () => {
    const { session } = await loginOnL();
    const other = await loginOnL();
    await quiet();
    await provider.control({ delayMs: { token: 1500 } });
    try {
      const early = await Promise.all([session, session, session, other.session].map((s, i) => sendAndReset(ports.login, rawGetText(`/uaf-refresh-${i}`, [
        ['Host', `127.0.0.1:${ports.login}`], ['Accept', i % 2 ? 'application/json' : 'text/html'], ['Cookie', `access_token_session=${s}`],
      ]), 300)));
      assert.ok(early.every((t) => t === ''), 'no answer before the reset: the refreshes were in flight');
      await sleep(2500);
    } finally {
      await provider.control({});
    }
    const calls = await provider.waitForRequests((r) => r.path.endsWith('/token'), { count: 2, timeoutMs: 2000 });
    assert.ok(calls.length >= 1, 'the filter had dispatched the refreshes when the clients reset');
    await assertStillServing(session);
    await assertStillServing(other.session);
  });

  // ================================================================================== GHSA-wcvh-g65p-v576

  h.test('GHSA-wcvh-g65p-v576 mod_auth_openidc missing aud/iss on API tokens: validate mode refuses tokens for another audience or authorized party, or from another issuer', async () => {
    const otherClient = await loginWithPassword({
      issuer: provider.issuer, redirectUri: `http://127.0.0.1:${ports.validate}/callback`,
      clientId: 'productpage-post', authMethod: 'post',
    });
    assert.equal(otherClient.access.payload.azp, 'productpage-post');
    const noAzp = claims({ aud: 'account' });
    delete noAzp.azp;
    const refused = {
      'a real provider token for another client (azp productpage-post)': otherClient.tokens.access_token,
      'signed by the provider for azp other-client, aud other-api': await sign(claims({ azp: 'other-client', aud: 'other-api' })),
      'signed by the provider for another client in RFC 9068 form (client_id, no azp)': await sign({ ...noAzp, client_id: 'other-client' }, { header: { typ: 'at+jwt' } }),
      'signed by the provider with neither azp nor client_id': await sign(noAzp),
      'azp as a list that contains productpage': await sign(claims({ azp: ['other-client', 'productpage'] })),
      'another issuer': await sign(claims({ issuer: 'https://evil.example/realms/dev' })),
      'the issuer with a trailing slash': await sign(claims({ issuer: `${provider.issuer}/` })),
      'the issuer in another case': await sign(claims({ issuer: provider.issuer.replace('/realms/dev', '/realms/DEV') })),
      'no issuer': await (async () => { const c = claims(); delete c.iss; return sign(c); })(),
    };
    const failures = [];
    const control = await attempt(V(uniquePath('/api/aud-control')), { authorization: `Bearer ${alice.tokens.access_token}` });
    reachedOnce(control, 'alice\'s token for productpage');
    for (const [what, token] of Object.entries(refused)) {
      const a = await attempt(V(uniquePath('/api/aud')), { authorization: `Bearer ${token}` });
      try {
        assertInvalidToken(a.res, what);
        assertStopped(a, what, [401]);
      } catch (err) { failures.push(failed(err)); }
    }
    assert.deepEqual(failures, []);
  });

  // ================================================================================== CVE-2026-47775

  function assertSameEverywhere(results, what) {
    const [first, ...rest] = results;
    const differ = rest.filter((r) => JSON.stringify(r.shape) !== JSON.stringify(first.shape));
    assert.deepEqual(
      differ.map((r) => ({ tampering: r.name, shape: r.shape })), [],
      `${what}: every tampering must end like "${first.name}": ${JSON.stringify(first.shape)}`,
    );
  }

  h.test('CVE-2026-47775 envoy oauth2 padding oracle: every tampered sealed session cookie ends the same way', { timeout: 60000 }, async () => {
    const { session } = await loginOnL();
    assert.equal(session.split('.').length, 5, 'the session cookie is a compact JWE');
    const tamperings = jweTamperings(session);
    assert.ok(tamperings.length >= 40, `${tamperings.length} tamperings`);
    await quiet();
    for (const [kind, headers] of [['page', PAGE_HEADERS], ['API', API_HEADERS]]) {
      const results = [];
      for (const [name, value] of tamperings) {
        const rid = `oracle-${crypto.randomBytes(8).toString('hex')}`;
        const a = await attempt(L('/oracle/session'), { ...headers, cookie: `access_token_session=${value}`, 'x-request-id': rid });
        assert.deepEqual(a.got(), [], `${kind}, ${name}: never reaches the service`);
        results.push({ name, shape: responseShape(a.res, rid) });
      }
      assert.equal(results[0].shape.status, kind === 'page' ? 302 : 401, `${kind}: a tampered session is no session`);
      assertSameEverywhere(results, `${kind} requests`);
    }
    await sleep(150);
    assert.deepEqual(provider.requests('/token'), [], 'no tampered session was ever used to refresh');
    // control: the genuine session still refreshes
    const genuine = await attempt(L('/oracle/session-genuine'), { ...API_HEADERS, cookie: `access_token_session=${session}` });
    reachedOnce(genuine, 'the untampered session');
  });

  h.test('CVE-2026-47775 envoy oauth2 padding oracle: every tampered transaction cookie ends the same way', { timeout: 60000 }, async () => {
    const jar = new CookieJar();
    const start = await startLogin(jar, L('/oracle-tx?x=1'));
    const { callbackUrl } = await toCallback(jar, start.authUrl, start.params.redirect_uri);
    const tamperings = jweTamperings(start.txCookie.value);
    await quiet();
    const results = [];
    for (const [name, value] of tamperings) {
      const rid = `oracle-${crypto.randomBytes(8).toString('hex')}`;
      const res = await request(callbackUrl, { headers: { ...PAGE_HEADERS, cookie: `${start.txCookie.name}=${value}`, 'x-request-id': rid } });
      results.push({ name, shape: responseShape(res, rid) });
    }
    assert.equal(results[0].shape.status, 400, 'a tampered transaction is refused');
    assertSameEverywhere(results, 'callbacks');
    await sleep(150);
    assert.deepEqual(provider.requests('/token'), [], 'no tampered transaction reached the token endpoint');
    // control: the genuine transaction cookie still completes the login
    const ok = await request(callbackUrl, { headers: { ...PAGE_HEADERS, cookie: `${start.txCookie.name}=${start.txCookie.value}` } });
    assert.equal(ok.status, 302, `the genuine callback: ${ok.status} ${ok.body.slice(0, 200)}`);
    assert.equal(ok.headers.location, '/oracle-tx?x=1');
  });

  // ================================================================================== B5

  h.test('B5: no Envoy of this suite logged a panic or a wasm failure', async () => {
    for (const e of [base, ...Object.values(envs)]) {
      if (!e || e.exited) continue;
      assert.deepEqual(crashLines(e.log()), [], `Envoy ${e.name}`);
      assert.deepEqual(vmFailureLines(e.log()), [], `Envoy ${e.name}`);
      assert.ok(e.alive, `Envoy ${e.name} is still running`);
    }
  });
});
