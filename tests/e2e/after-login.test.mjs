// After login (SPEC V3, L5+, L6+, L8, B7; issue 11) in a real Envoy, against the real
// (Keycloak-like) provider: introspection in validate mode, revocation of the refresh token at
// logout, back-channel logout, authorization rules in both modes, and a refresh race with
// rotating refresh tokens. Every login goes through the provider's real login form.
//
// Provider A (access tokens live 300 s; the productpage client registers L's /backchannel-logout
// as its back-channel logout URL, as realm-dev.json does for productpage's Service) serves:
//   V   validate mode, introspection on (cache_seconds 3), rules
//   L   login mode, backchannel_logout_path, rules
//   L2  a second replica of L (same session_secret), which no logout token reaches
// Provider B (access tokens live 5 s, refresh tokens rotate) serves R (login mode) for the race.

import assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import { after, before, describe } from 'node:test';

import {
  harness, request, requestWithJar, CookieJar, keycloakConfig, crashLines, freePort, sleep, decodeJwt,
  generateKeys, generateKey, signToken, wasmExists, WASM_PATH, KEYCLOAK_INTERNAL_URL, endpoints,
  loginWithPassword, startAuthorization, submitLogin, exchangeCode, refreshTokens, ALICE,
  PAGE_HEADERS, API_HEADERS, setCookies, isCleared, loginThroughFilter,
} from './lib/index.mjs';

// Without the module the suites are skipped, unless E2E_REQUIRE_WASM=1 (then they fail).
const skip = wasmExists() || process.env.E2E_REQUIRE_WASM === '1'
  ? false : `the wasm module is not built (${WASM_PATH}); run make build`;
const h = harness('after-login');

const CACHE_SECONDS = 3; // V's introspection cache: the bound on how late V sees a revocation
const TIMEOUT_MS = 1000; // every Envoy's timeout_ms for calls to the provider
const RACE_TTL = 5; // seconds: provider B's access tokens
const BC_PATH = '/backchannel-logout';
const BC_EVENT = 'http://schemas.openid.net/event/backchannel-logout';
const OPAQUE_RESOURCE = 'urn:mesh-oidc:opaque'; // RFC 8707 resource whose access tokens are opaque
const INTERNAL_HOST = new URL(KEYCLOAK_INTERNAL_URL).host;
const ALICE_ID = 'a1f0c9a4-5b7e-4f43-9d1e-2c6d8a7b3e01';
const BOB = { username: 'bob', password: 'bob-password' };
const CLIENT_BASIC = `Basic ${Buffer.from('productpage:productpage-secret').toString('base64')}`;
const now = () => Math.floor(Date.now() / 1000);

const RULES = [
  { path: '/admin', realm_roles: ['admin'] },
  { path: '/phone', scopes: ['phone'] },
  { path: '/email', scopes: ['email'] },
  { path: '/account', client_roles: { account: ['manage-account'] } },
  { path: '/reviews', methods: ['POST', 'DELETE'], client_roles: { reviews: ['reviewer'] } },
  { path: '/mfa', acr: ['2'] },
];

const newSecret = () => crypto.randomBytes(32).toString('base64');

let seq = 0;
const uniquePath = (prefix = '/api') => `${prefix}/r${++seq}-${crypto.randomBytes(3).toString('hex')}`;

/** The Set-Cookies of a response that give the browser a session (set, not cleared). */
const sessionSets = (res) => setCookies(res, /^access_token(_\d+)?$|^access_token_session(_\d+)?$/).filter((c) => !isCleared(c));
const sessionClears = (res) => setCookies(res, /^access_token(_\d+)?$|^access_token_session(_\d+)?$/).filter(isCleared).map((c) => c.name);

function assertJson(res, what) {
  assert.match(String(res.headers['content-type']), /application\/json/, `${what}: JSON content type`);
  assert.doesNotThrow(() => JSON.parse(res.body), `${what}: JSON body: ${res.body.slice(0, 200)}`);
}

function assertInvalidToken(res, what) {
  assert.equal(res.status, 401, `${what}: status ${res.status} ${res.body.slice(0, 300)}`);
  assert.match(String(res.headers['www-authenticate'] ?? ''), /^Bearer\b.*error="invalid_token"/, `${what}: WWW-Authenticate`);
  assertJson(res, what);
}

/** B7 for APIs: 403, RFC 6750's insufficient_scope, a JSON body, and the service never asked. */
function assertApi403(res, echo, path, what) {
  assert.equal(res.status, 403, `${what}: status ${res.status} ${res.body.slice(0, 300)}`);
  const www = String(res.headers['www-authenticate'] ?? '');
  assert.match(www, /^Bearer\b/, `${what}: WWW-Authenticate ${www}`);
  assert.match(www, /error="insufficient_scope"/, `${what}: WWW-Authenticate ${www}`);
  assertJson(res, what);
  assert.equal(JSON.parse(res.body).error, 'insufficient_scope', `${what}: body ${res.body}`);
  assert.equal(res.headers.location, undefined, `${what}: never a redirect`);
  assert.equal(echo.sawPath(path), false, `${what}: the service never saw the request`);
}

/** B7 for pages: 403, a small HTML page, no redirect, the session kept. */
function assertPage403(res, echo, path, what) {
  assert.equal(res.status, 403, `${what}: status ${res.status} ${res.body.slice(0, 300)}`);
  assert.match(String(res.headers['content-type']), /text\/html/, `${what}: an HTML page`);
  assert.equal(res.headers.location, undefined, `${what}: no redirect`);
  assert.deepEqual(sessionClears(res), [], `${what}: the session is kept`);
  assert.equal(echo.sawPath(path), false, `${what}: the service never saw the request`);
}

/** Ask the provider directly (as a resource server would): RFC 7662. */
async function introspectAtProvider(provider, token) {
  const res = await request(endpoints(provider.issuer).introspection, {
    method: 'POST',
    headers: { authorization: CLIENT_BASIC, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token }).toString(),
  });
  assert.equal(res.status, 200, `introspection at the provider: ${res.status} ${res.body}`);
  return JSON.parse(res.body);
}

/** Revoke a token at the provider, as productpage (RFC 7009). */
async function revokeAtProvider(provider, token) {
  const res = await request(endpoints(provider.issuer).revocation, {
    method: 'POST',
    headers: { authorization: CLIENT_BASIC, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token }).toString(),
  });
  assert.equal(res.status, 200, `revocation at the provider: ${res.status} ${res.body}`);
}

/** Forget the provider's request log, once the lines of calls just answered have come in. */
async function quiet(prov) {
  await sleep(150);
  prov.clearRequests();
}

/**
 * Call `url` with a bearer token every 100 ms until it answers 401; returns the last response and
 * the time it came.
 */
async function pollUntil401(call, token, deadlineMs) {
  for (;;) {
    const res = await call(uniquePath('/api/poll'), token);
    if (res.status === 401 || Date.now() > deadlineMs) return { res, at: Date.now() };
    assert.equal(res.status, 200, `before the 401: ${res.status} ${res.body.slice(0, 200)}`);
    await sleep(100);
  }
}

describe('after login: introspection, revocation, back-channel logout, rules, refresh race', { skip }, () => {
  let provider; // A
  let raceProvider; // B
  let echo;
  const envoys = {};
  const ports = {};
  const url = (name, path = '') => `http://127.0.0.1:${ports[name]}${path}`;

  const base = (extra = {}) => ({
    keycloak: keycloakConfig(provider.port),
    timeout_ms: TIMEOUT_MS,
    ...extra,
  });
  const loginSecret = newSecret();
  const loginConfig = (extra = {}) => base({
    mode: 'login',
    client_id: 'productpage',
    client_secret: 'productpage-secret',
    session_secret: loginSecret,
    claims_to_headers: { preferred_username: 'x-user', sid: 'x-sid' },
    rules: [{ path: '/admin', realm_roles: ['admin'] }],
    ...extra,
  });

  async function envoyFor(name, prov, filterConfig) {
    const e = await h.startEnvoy({ filterConfig, providerPort: prov.port, echoPort: echo.port, port: ports[name] });
    if (e.exited) throw new Error(`Envoy "${name}" refused the configuration (exit ${e.code}):\n${e.log().slice(-4000)}`);
    envoys[name] = e;
    return e;
  }

  /** Log in through a login-mode Envoy with a fresh jar; the final page must be served. */
  async function loginAt(name, creds = ALICE, path = uniquePath('/page')) {
    const jar = new CookieJar();
    const r = await loginThroughFilter(jar, url(name), path, { creds });
    assert.equal(r.final?.status, 200, `login at ${name}: the page after the callback: ${r.final?.status} ${r.final?.body?.slice(0, 300)}`);
    const seen = echo.last(path);
    assert.ok(seen, 'the service saw the page');
    return { jar, path, sid: seen.headers['x-sid'], r };
  }

  const bearerAt = (name) => (path, token, headers = {}) => request(url(name, path), {
    headers: { ...API_HEADERS, authorization: `Bearer ${token}`, ...headers },
  });

  before(async () => {
    for (const name of ['V', 'L', 'L2', 'R']) ports[name] = await freePort();
    provider = await h.startProvider({
      keys: generateKeys(),
      redirectUris: [url('L', '/callback'), url('L2', '/callback')],
      postLogoutRedirectUris: [url('L', '/'), url('L2', '/')],
      config: { backchannelLogoutUri: url('L', BC_PATH) },
    });
    raceProvider = await h.startProvider({
      keys: generateKeys(),
      accessTokenTtl: RACE_TTL,
      redirectUris: [url('R', '/callback')],
      postLogoutRedirectUris: [url('R', '/')],
      config: { rotateRefreshTokens: true },
    });
    echo = await h.startEcho();
    await Promise.all([
      envoyFor('V', provider, base({
        mode: 'validate',
        authorized_parties: ['productpage'],
        claims_to_headers: { preferred_username: 'x-user' },
        introspection: {
          enabled: true, cache_seconds: CACHE_SECONDS, client_id: 'productpage', client_secret: 'productpage-secret',
        },
        rules: RULES,
      })),
      envoyFor('L', provider, loginConfig({ backchannel_logout_path: BC_PATH })),
      envoyFor('L2', provider, loginConfig()),
      envoyFor('R', raceProvider, {
        ...loginConfig({ clock_skew_seconds: 0 }),
        keycloak: keycloakConfig(raceProvider.port),
      }),
    ]);
    // Every Envoy fetches the key set at start; give the workers a few ticks to pick it up.
    await provider.waitForRequests('/certs', { count: 3, timeoutMs: 5000 });
    await raceProvider.waitForRequests('/certs', { count: 1, timeoutMs: 5000 });
    await sleep(600);
  });
  after(async () => {
    for (const [name, e] of Object.entries(envoys)) {
      assert.deepEqual(crashLines(e.log()), [], `no panic in Envoy ${name}`);
    }
    await h.cleanup();
  });

  // ------------------------------------------------------------------------------------------- V3

  h.test('V3: an opaque access token is accepted through introspection (asked once, then cached); an unknown one is refused', async () => {
    // The provider gives opaque access tokens for the resource urn:mesh-oidc:opaque (RFC 8707).
    const redirectUri = url('L', '/callback');
    const flow = await startAuthorization({ issuer: provider.issuer, redirectUri, extraParams: { resource: OPAQUE_RESOURCE } });
    const redirect = flow.redirect ?? (await submitLogin(flow, ALICE, redirectUri)).redirect;
    const code = new URL(redirect).searchParams.get('code');
    const ex = await exchangeCode({ issuer: provider.issuer, code, redirectUri, verifier: flow.verifier });
    assert.equal(ex.status, 200, JSON.stringify(ex.json));
    const opaque = ex.json.access_token;
    assert.equal(opaque.split('.').length, 1, `an opaque token, not a JWT: ${opaque}`);
    assert.equal((await introspectAtProvider(provider, opaque)).active, true);

    const call = bearerAt('V');
    await quiet(provider);
    const first = uniquePath();
    const res = await call(first, opaque);
    assert.equal(res.status, 200, res.body);
    assert.equal(echo.last(first).headers.authorization, `Bearer ${opaque}`, 'the token reaches the service');
    const asked = await provider.waitForRequests((r) => r.path.endsWith('/token/introspect') && !r.internal);
    assert.equal(asked.length, 1, 'introspected once');
    assert.equal(asked[0].host, INTERNAL_HOST, 'through the cluster, with the internal host');
    assert.equal(asked[0].auth, 'Basic', 'as the configured client');

    // within cache_seconds: not asked again
    for (let i = 0; i < 3; i++) assert.equal((await call(uniquePath(), opaque)).status, 200);
    await sleep(150);
    assert.equal(provider.requests((r) => r.path.endsWith('/token/introspect') && !r.internal).length, 1, 'the answer is cached');

    // a random string: the provider says active:false
    const unknown = crypto.randomBytes(32).toString('base64url');
    const path = uniquePath();
    assertInvalidToken(await call(path, unknown), 'an unknown opaque token');
    assert.equal(echo.sawPath(path), false, 'the service never saw it');
  });

  h.test('V3: a JWT revoked at the provider (RFC 7009) is refused within cache_seconds', async (_h, t) => {
    const alice = await loginWithPassword({ issuer: provider.issuer, redirectUri: url('L', '/callback') });
    const token = alice.tokens.access_token;
    const call = bearerAt('V');
    await quiet(provider);
    assert.equal((await call(uniquePath(), token)).status, 200, 'accepted: verified locally, then introspected');
    assert.equal((await call(uniquePath(), token)).status, 200, 'accepted from the cache');
    await sleep(150);
    assert.equal(provider.requests((r) => r.path.endsWith('/token/introspect') && !r.internal).length, 1, 'introspected once');

    await revokeAtProvider(provider, token);
    const revokedAt = Date.now();
    assert.equal((await introspectAtProvider(provider, token)).active, false, 'the provider says it is revoked');
    const stale = await call(uniquePath(), token);
    assert.equal(stale.status, 200, 'still accepted from the cache right after the revocation');

    const { res, at } = await pollUntil401(call, token, revokedAt + (CACHE_SECONDS + 3) * 1000);
    assertInvalidToken(res, 'the revoked token');
    const delay = at - revokedAt;
    t.diagnostic(`the revoked token was refused ${delay} ms after its revocation (cache_seconds ${CACHE_SECONDS})`);
    assert.ok(delay <= (CACHE_SECONDS + 1) * 1000, `refused within cache_seconds + 1 s: ${delay} ms`);
  });

  h.test('V3: introspection failing or timing out: 401 (fail closed), and the failure is not cached', async () => {
    const alice = await loginWithPassword({ issuer: provider.issuer, redirectUri: url('L', '/callback') });
    const token = alice.tokens.access_token;
    const call = bearerAt('V');
    try {
      await provider.control({ failStatus: { introspect: 503 } });
      assertInvalidToken(await call(uniquePath(), token), 'introspection answers 503');
      await provider.control({ delayMs: { introspect: TIMEOUT_MS + 1500 } });
      const slow = await call(uniquePath(), token);
      assertInvalidToken(slow, 'introspection times out');
      assert.ok(slow.ms < TIMEOUT_MS + 1200, `answered at the timeout, not when the provider did: ${slow.ms} ms`);
    } finally {
      await provider.control({});
    }
    assert.equal((await call(uniquePath(), token)).status, 200, 'the provider answers again: accepted (errors were not cached)');
  });

  // ------------------------------------------------------------------------------------------ L6+

  h.test('L6+: logout revokes the refresh token at the provider, then sends the browser to end-session with a state', async () => {
    const { jar, sid } = await loginAt('L');
    assert.ok(sid, 'the session\'s sid (x-sid from the access token)');
    const session = (await provider.sessions('alice')).find((s) => s.clients.productpage?.sid === sid);
    assert.ok(session, `the provider knows session ${sid}`);
    const [refreshToken] = session.clients.productpage.refreshTokens;
    assert.ok(refreshToken, 'the session has a refresh token');
    assert.equal((await introspectAtProvider(provider, refreshToken)).active, true, 'the refresh token is live before the logout');

    await quiet(provider);
    const res = await requestWithJar(jar, url('L', '/logout'), { headers: PAGE_HEADERS });
    assert.equal(res.status, 302, res.body);
    const loc = new URL(res.headers.location);
    assert.equal(`${loc.origin}${loc.pathname}`, endpoints(provider.issuer).endSession, 'to the end-session endpoint');
    for (const k of ['id_token_hint', 'post_logout_redirect_uri', 'client_id', 'state']) assert.ok(loc.searchParams.get(k), `end-session ${k}`);
    assert.ok(sessionClears(res).includes('access_token'), 'the access token cookie is cleared');
    assert.ok(sessionClears(res).includes('access_token_session'), 'the session cookie is cleared');

    const revokes = await provider.waitForRequests((r) => r.path.endsWith('/revoke') && !r.internal);
    assert.equal(revokes.length, 1, 'one revocation call');
    assert.equal(revokes[0].status, 200, 'the provider revoked it');
    assert.equal(revokes[0].host, INTERNAL_HOST, 'through the cluster, with the internal host');
    assert.equal(revokes[0].auth, 'Basic', 'with the client\'s credentials');
    assert.ok(revokes[0].t <= Date.now(), 'before the redirect');

    const refreshed = await refreshTokens({ issuer: provider.issuer, refreshToken });
    assert.equal(refreshed.status, 400, `the provider refuses the revoked refresh token: ${JSON.stringify(refreshed.json)}`);
    assert.equal(refreshed.json.error, 'invalid_grant');
  });

  h.test('L6+: a revocation that fails (503) or times out never blocks the logout', async () => {
    try {
      for (const [what, control] of [
        ['the provider answers 503', { failStatus: { revoke: 503 } }],
        ['the provider is slower than timeout_ms', { delayMs: { revoke: TIMEOUT_MS + 2000 } }],
      ]) {
        const { jar } = await loginAt('L');
        await provider.control(control);
        await quiet(provider);
        const res = await requestWithJar(jar, url('L', '/logout'), { headers: PAGE_HEADERS });
        assert.equal(res.status, 302, `${what}: ${res.status} ${res.body.slice(0, 300)}`);
        assert.ok(String(res.headers.location).startsWith(endpoints(provider.issuer).endSession), `${what}: to end-session: ${res.headers.location}`);
        assert.ok(sessionClears(res).includes('access_token'), `${what}: cookies cleared`);
        assert.ok(res.ms < TIMEOUT_MS + 1200, `${what}: answered within the timeout: ${res.ms} ms`);
        if (control.failStatus) {
          const revokes = await provider.waitForRequests((r) => r.path.endsWith('/revoke') && !r.internal);
          assert.equal(revokes[0]?.status, 503, `${what}: the revocation was tried`);
        }
        await provider.control({});
      }
    } finally {
      await provider.control({});
    }
  });

  // ------------------------------------------------------------------------------------------- L8

  h.test('L8: an admin logout at the provider ends the session at its next request; a replica without the logout token keeps it; introspection refuses its token within cache_seconds', async (_h, t) => {
    const page = uniquePath('/page');
    const { jar, sid } = await loginAt('L', ALICE, page);
    const cookie = jar.header(url('L'));
    const access = jar.get(url('L'), 'access_token');
    assert.ok(access && sid, 'logged in');
    // The same session works at the second replica (stateless sessions, same session_secret) and
    // its access token at the validate-mode sidecar.
    assert.equal((await request(url('L2', uniquePath('/page')), { headers: { ...PAGE_HEADERS, cookie } })).status, 200);
    assert.equal((await bearerAt('V')(uniquePath(), access)).status, 200);

    // Keycloak's admin console: Users → alice → Sessions → Sign out
    const result = await provider.adminLogout('alice');
    const ours = result.backchannel.find((b) => b.sid === sid);
    assert.ok(ours, `a logout token for session ${sid}: ${JSON.stringify(result)}`);
    assert.equal(ours.client, 'productpage');
    assert.equal(ours.ok, true, `L answered the logout token with 200: ${JSON.stringify(ours)}`);
    const endedAt = Date.now();
    assert.match(envoys.L.log(), /back-channel logout: sessions of that sid end/);

    // L: the next request is sent to log in, and the cookies are cleared
    const next = uniquePath('/page');
    const res = await requestWithJar(jar, url('L', next), { headers: PAGE_HEADERS });
    assert.equal(res.status, 302, `after the back-channel logout: ${res.status} ${res.body.slice(0, 300)}`);
    assert.ok(String(res.headers.location).startsWith(`${endpoints(provider.issuer).authorization}?`), `to log in: ${res.headers.location}`);
    assert.ok(sessionClears(res).includes('access_token'), `the access token cookie is cleared: ${JSON.stringify(res.headers['set-cookie'])}`);
    assert.ok(sessionClears(res).includes('access_token_session'), 'the session cookie is cleared');
    assert.equal(echo.sawPath(next), false, 'the service never saw the request');
    // an API call with the old cookies: 401, not a redirect
    const api = await request(url('L', uniquePath('/api')), { headers: { ...API_HEADERS, cookie } });
    assert.equal(api.status, 401, `an API call of the ended session: ${api.status}`);

    // L2 got no logout token (one URL per client registration): it keeps serving the session
    // until the access token expires (docs/revocation.md).
    const replica = await request(url('L2', uniquePath('/page')), { headers: { ...PAGE_HEADERS, cookie } });
    assert.equal(replica.status, 200, 'the other replica still serves the session');

    // V introspects: the session is gone at the provider, so the token is refused within the cache time
    const { res: refused, at } = await pollUntil401(bearerAt('V'), access, endedAt + (CACHE_SECONDS + 3) * 1000);
    assertInvalidToken(refused, 'the ended session\'s access token at V');
    t.diagnostic(`V refused the token ${at - endedAt} ms after the admin logout`);
    assert.ok(at - endedAt <= (CACHE_SECONDS + 1) * 1000, `within cache_seconds + 1 s: ${at - endedAt} ms`);
  });

  h.test('L8: forged, replayed, wrong-audience and malformed logout tokens: 400; a valid one: 200 {} no-store', async () => {
    const key = provider.keys.signing;
    const claims = (extra = {}) => ({
      iss: provider.issuer, aud: 'productpage', iat: now(), exp: now() + 120, jti: crypto.randomUUID(),
      sub: ALICE_ID, sid: crypto.randomUUID(), events: { [BC_EVENT]: {} }, ...extra,
    });
    const sign = (c, opts = {}) => signToken(c, { key, header: { typ: 'logout+jwt' }, ...opts });
    const post = (body) => request(url('L', BC_PATH), {
      method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body, timeoutMs: 5000,
    });
    const form = (token) => new URLSearchParams({ logout_token: token }).toString();

    const valid = await sign(claims());
    const ok = await post(form(valid));
    assert.equal(ok.status, 200, `a valid logout token: ${ok.status} ${ok.body}`);
    assert.deepEqual(JSON.parse(ok.body), {});
    assert.match(String(ok.headers['cache-control']), /no-store/, 'Cache-Control: no-store');

    const other = generateKey('RS256');
    const cases = [
      ['replayed (the same jti again)', form(valid)],
      ['forged (signed by another key under the provider\'s kid)', form(await sign(claims(), { key: { ...other, kid: key.kid } }))],
      ['another audience', form(await sign(claims({ aud: 'reviews' })))],
      ['another issuer', form(await sign(claims({ iss: 'http://127.0.0.1:1/realms/dev' })))],
      ['with a nonce', form(await sign(claims({ nonce: 'n-0S6_WzA2Mj' })))],
      ['without the events claim', form(await sign(claims({ events: undefined })))],
      ['another event', form(await sign(claims({ events: { 'http://schemas.openid.net/event/other': {} } })))],
      ['neither sid nor sub', form(await sign(claims({ sid: undefined, sub: undefined })))],
      ['without jti', form(await sign(claims({ jti: undefined })))],
      ['without iat', form(await sign(claims({ iat: undefined })))],
      ['expired', form(await sign(claims({ iat: now() - 600, exp: now() - 300 })))],
      ['alg none', form(await signToken(claims(), { alg: 'none', kid: key.kid }))],
      ['no logout_token', 'token=x'],
      ['garbage', form('a.b.c')],
    ];
    for (const [what, body] of cases) {
      const res = await post(body);
      assert.equal(res.status, 400, `${what}: ${res.status} ${res.body}`);
      assertJson(res, what);
      assert.match(String(res.headers['cache-control']), /no-store/, `${what}: Cache-Control: no-store`);
    }
    const get = await request(url('L', BC_PATH), { timeoutMs: 5000 });
    assert.equal(get.status, 400, `a GET: ${get.status}`);
    assert.equal(echo.sawPath(BC_PATH), false, 'the service never sees the back-channel path');
  });

  h.test('L8: a logout token naming a sid ends that session only: the same user\'s other session goes on, and logging in again at once works', async () => {
    const a = await loginAt('L');
    const b = await loginAt('L');
    assert.ok(a.sid && b.sid && a.sid !== b.sid, `two sessions of alice: ${a.sid} ${b.sid}`);
    // Start at the beginning of a second, so that the new login below falls in the second of the ending.
    await sleep(1000 - (Date.now() % 1000) + 20);
    const token = await signToken({
      iss: provider.issuer, aud: 'productpage', iat: now(), exp: now() + 120, jti: crypto.randomUUID(),
      sub: ALICE_ID, sid: a.sid, events: { [BC_EVENT]: {} },
    }, { key: provider.keys.signing, header: { typ: 'logout+jwt' } });
    const res = await request(url('L', BC_PATH), {
      method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ logout_token: token }).toString(), timeoutMs: 5000,
    });
    assert.equal(res.status, 200, `the logout token for session ${a.sid}: ${res.status} ${res.body}`);

    const ended = await requestWithJar(a.jar, url('L', uniquePath('/page')), { headers: PAGE_HEADERS });
    assert.equal(ended.status, 302, 'the session it names is ended');
    // OpenID Connect Back-Channel Logout 1.0, 2.4: only a token without sid ends every session of its sub
    const other = await requestWithJar(b.jar, url('L', uniquePath('/page')), { headers: PAGE_HEADERS });
    assert.equal(other.status, 200, `alice's other session goes on: ${other.status} ${other.headers.location ?? ''}`);
    const again = await loginAt('L');
    assert.notEqual(again.sid, a.sid, 'a new session');
  });

  // ------------------------------------------------------------------------------------------ L5+

  h.test('L5+: a refresh race with rotating refresh tokens keeps the user logged in', async () => {
    const { jar } = await loginAt('R');
    const cookie = jar.header(url('R'));
    const { exp } = decodeJwt(jar.get(url('R'), 'access_token')).payload;
    await sleep(exp * 1000 - Date.now() + 300); // the access token has expired (clock_skew_seconds 0)

    // requests of the same expired session at once, each on its own connection (so on both of
    // Envoy's workers, most likely): one refresh, every request served
    await quiet(raceProvider);
    const paths = Array.from({ length: 4 }, () => uniquePath('/page'));
    const answers = await Promise.all(paths.map((p) => request(url('R', p), { headers: { ...PAGE_HEADERS, cookie } })));
    answers.forEach((r, i) => {
      assert.equal(r.status, 200, `request ${i + 1} of ${paths.length}: ${r.status} ${r.body.slice(0, 200)}`);
      assert.ok(echo.sawPath(paths[i]), `request ${i + 1} served`);
      assert.ok(sessionSets(r).some((c) => c.name === 'access_token'), `request ${i + 1}: a new access token cookie`);
    });
    const refreshes = await raceProvider.waitForRequests((r) => r.grant === 'refresh_token');
    await sleep(150);
    assert.equal(raceProvider.requests((r) => r.grant === 'refresh_token').length, 1, 'one refresh for all');
    assert.equal(refreshes[0].status, 200);

    // a request that still carries the rotated refresh token, after the shared answer may no
    // longer be handed out (half the new token's lifetime): the provider says invalid_grant, and
    // the sibling's answer is the session's
    const late = refreshes[0].t + RACE_TTL * 500 + 300 - Date.now();
    if (late > 0) await sleep(late);
    const p3 = uniquePath('/page');
    const c = await request(url('R', p3), { headers: { ...PAGE_HEADERS, cookie } });
    assert.equal(c.status, 200, `late: ${c.status} ${c.body.slice(0, 200)}`);
    assert.ok(echo.sawPath(p3));
    const all = await raceProvider.waitForRequests((r) => r.grant === 'refresh_token', { count: 2 });
    assert.equal(all.length, 2, 'the late request asked the provider');
    assert.equal(all[1].status, 400, 'and the provider refused the rotated token');
    assert.match(envoys.R.log(), /the refresh token was spent by a sibling request: its answer is used/);
  });

  // ------------------------------------------------------------------------------------------- B7

  h.test('B7 validate mode: realm roles, client roles, scopes and acr give 403 insufficient_scope, or 200', async () => {
    const redirectUri = url('L', '/callback');
    const alice = (await loginWithPassword({ issuer: provider.issuer, redirectUri })).tokens.access_token;
    const bob = (await loginWithPassword({ issuer: provider.issuer, redirectUri, ...BOB })).tokens.access_token;
    const call = bearerAt('V');
    const cases = [
      // [what, prefix, method, token, status]
      ['realm role admin, alice has not', '/admin', 'GET', alice, 403],
      ['realm role admin, bob has', '/admin', 'GET', bob, 200],
      ['scope phone, not granted', '/phone', 'GET', alice, 403],
      ['scope email, granted', '/email', 'GET', alice, 200],
      ['client role account/manage-account', '/account', 'GET', alice, 200],
      ['client role reviews/reviewer for POST', '/reviews', 'POST', alice, 403],
      ['the same prefix, a method no rule names', '/reviews', 'GET', alice, 200],
      ['acr 2, the token says 1', '/mfa', 'GET', bob, 403],
      ['no rule', '/api', 'GET', alice, 200],
    ];
    for (const [what, prefix, method, token, status] of cases) {
      const path = uniquePath(prefix);
      const res = await request(url('V', path), { method, headers: { ...API_HEADERS, authorization: `Bearer ${token}` } });
      if (status === 403) assertApi403(res, echo, path, what);
      else {
        assert.equal(res.status, 200, `${what}: ${res.status} ${res.body.slice(0, 300)}`);
        assert.ok(echo.sawPath(path), `${what}: served`);
      }
    }
  });

  h.test('B7 login mode: a page gets the 403 page and an API call the 403 JSON, the session stays; bob has the role', async () => {
    const { jar } = await loginAt('L');
    const pagePath = uniquePath('/admin');
    assertPage403(await requestWithJar(jar, url('L', pagePath), { headers: PAGE_HEADERS }), echo, pagePath, 'alice, a page');
    const apiPath = uniquePath('/admin');
    assertApi403(await requestWithJar(jar, url('L', apiPath), { headers: API_HEADERS }), echo, apiPath, 'alice, an API call');
    const okPath = uniquePath('/page');
    assert.equal((await requestWithJar(jar, url('L', okPath), { headers: PAGE_HEADERS })).status, 200, 'alice is still logged in');

    const bob = await loginAt('L', BOB, uniquePath('/admin'));
    assert.equal(echo.last(bob.path).headers['x-user'], 'bob');
  });
});
