// login mode (SPEC L1-L7, with B1-B4 where login touches them) in a real Envoy, against the real
// (Keycloak-like) provider. Every login goes through the provider's real login form, with an HTTP
// client and a cookie jar standing in for the browser.
//
// One provider (access tokens live 300 s) serves four Envoys: the main one (on_upstream_401 =
// login), one each for on_upstream_401 = logout and pass, and one for client_secret_post. A
// second provider whose access tokens live 3 s serves a fifth Envoy (clock_skew_seconds = 0)
// for the refresh tests. The B1 test starts a sixth Envoy of its own, while the first provider's
// key set is slow to answer.

import assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as net from 'node:net';
import { after, before, describe } from 'node:test';

import {
  harness, request, requestWithJar, CookieJar, keycloakConfig, crashLines,
  freePort, sleep, decodeJwt, tamper, generateKeys, wasmExists, WASM_PATH, KEYCLOAK_INTERNAL_URL,
  PAGE_HEADERS, API_HEADERS, setCookie, setCookies, isCleared, startLogin, atProvider, fillLoginForm,
  cancelLoginForm, toCallback, loginThroughFilter, ALICE,
} from './lib/index.mjs';

// Without the module the suites are skipped, unless E2E_REQUIRE_WASM=1 (then they fail).
const skip = wasmExists() || process.env.E2E_REQUIRE_WASM === '1'
  ? false : `the wasm module is not built (${WASM_PATH}); run make build`;
const h = harness('login');

const TIMEOUT_MS = 2000;
const SHORT_TTL = 3; // seconds: access tokens of the second provider
const INTERNAL_HOST = new URL(KEYCLOAK_INTERNAL_URL).host;

// The provider's users: alice as in the provider's defaults, and carol, whose many realm roles
// make an access token far larger than one cookie can hold.
const ALICE_USER = {
  id: 'a1f0c9a4-5b7e-4f43-9d1e-2c6d8a7b3e01', username: 'alice', password: 'alice-password',
  given_name: 'Alice', family_name: 'Liddell', email: 'alice@example.com', roles: ['user'],
};
const CAROL = { username: 'carol', password: 'carol-password' };
const CAROL_ROLES = Array.from({ length: 160 }, (_, i) => `bookinfo-reviewer-group-${String(i).padStart(3, '0')}-role`);
const CAROL_USER = {
  id: 'c3f2e9c6-7d9a-4b65-9f3a-4e8fac9d5a23', ...CAROL,
  given_name: 'Carol', family_name: 'Manyroles', email: 'carol@example.com', roles: CAROL_ROLES,
};

const newSecret = () => crypto.randomBytes(32).toString('base64');

function loginConfig(providerPort, extra = {}) {
  return {
    mode: 'login',
    keycloak: keycloakConfig(providerPort),
    client_id: 'productpage',
    client_secret: 'productpage-secret',
    session_secret: newSecret(),
    claims_to_headers: { preferred_username: 'x-user' },
    timeout_ms: TIMEOUT_MS,
    skip_paths: ['/healthz', '/public/*'],
    ...extra,
  };
}

let seq = 0;
const uniquePath = (prefix = '/page') => `${prefix}/r${++seq}-${crypto.randomBytes(3).toString('hex')}`;

/** The values of one header as the echo service received them (each occurrence separately). */
function headerValues(record, name) {
  const out = [];
  for (let i = 0; i < record.rawHeaders.length; i += 2) {
    if (record.rawHeaders[i].toLowerCase() === name) out.push(record.rawHeaders[i + 1]);
  }
  return out;
}

/** Cookie names of a Cookie header. */
const cookieNames = (header) => String(header ?? '').split(';').map((p) => p.split('=')[0].trim()).filter(Boolean);

/** The Set-Cookies of a response that would give the browser a session (set, not cleared). */
const sessionSets = (res) => setCookies(res, /^access_token(_\d+)?$|^access_token_session(_\d+)?$/).filter((c) => !isCleared(c));

function assertNoSession(res, what) {
  assert.deepEqual(sessionSets(res).map((c) => c.name), [], `${what}: no session cookie may be set`);
}

function assertErrorPage(res, status, what) {
  assert.equal(res.status, status, `${what}: status ${res.status}: ${res.body.slice(0, 300)}`);
  assert.match(String(res.headers['content-type']), /text\/html/, `${what}: an HTML page`);
  assert.equal(res.headers.location, undefined, `${what}: no redirect`);
  assertNoSession(res, what);
}

function assertApi401(res, what) {
  assert.equal(res.status, 401, `${what}: status ${res.status}: ${res.body.slice(0, 300)}`);
  assert.equal(res.headers.location, undefined, `${what}: never a redirect`);
  assert.match(String(res.headers['www-authenticate'] ?? ''), /^Bearer\b/, `${what}: WWW-Authenticate`);
  assert.match(String(res.headers['content-type']), /application\/json/, `${what}: JSON content type`);
  assert.doesNotThrow(() => JSON.parse(res.body), `${what}: JSON body: ${res.body.slice(0, 200)}`);
  assertNoSession(res, what);
}

/** A 302 to the provider's authorization endpoint (L1). */
function assertLoginRedirect(res, provider, what) {
  assert.equal(res.status, 302, `${what}: status ${res.status}: ${res.body.slice(0, 300)}`);
  const loc = String(res.headers.location ?? '');
  assert.ok(loc.startsWith(`${provider.issuer}/protocol/openid-connect/auth?`), `${what}: Location ${loc}`);
  const tx = setCookies(res, /^access_token_tx_/).filter((c) => !isCleared(c));
  assert.equal(tx.length, 1, `${what}: one new transaction cookie`);
  return new URL(loc);
}

/** Change one character in the middle of a string (a tampered cookie). */
function flipMiddle(s, at = Math.floor(s.length / 2)) {
  let i = at;
  while (s[i] === '.') i += 1;
  const c = s[i] === 'A' ? 'B' : 'A';
  return `${s.slice(0, i)}${c}${s.slice(i + 1)}`;
}

/**
 * Send a request line as given (e.g. an absolute URL or a backslash in the path) and read one
 * response; the socket is closed as soon as the response is complete (Envoy would otherwise wait
 * for the client to close first).
 */
function rawGet(port, target, headers = {}) {
  const lines = [`GET ${target} HTTP/1.1`, `Host: 127.0.0.1:${port}`, ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)];
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => { sock.destroy(); reject(new Error(`raw request timeout: ${target}`)); }, 10000);
    const done = () => { clearTimeout(timer); sock.destroy(); resolve(parseRaw(buf.toString('latin1'))); };
    sock.on('data', (c) => {
      buf = Buffer.concat([buf, c]);
      const text = buf.toString('latin1');
      const end = text.indexOf('\r\n\r\n');
      if (end < 0) return;
      const len = Number((/\r\ncontent-length:\s*(\d+)/i.exec(text.slice(0, end)) ?? [])[1] ?? 0);
      if (buf.length >= end + 4 + len) done();
    });
    sock.on('error', (err) => { clearTimeout(timer); reject(err); });
    sock.on('close', () => { clearTimeout(timer); resolve(parseRaw(buf.toString('latin1'))); });
    sock.write(`${lines.join('\r\n')}\r\n\r\n`);
  });
}

/** A raw HTTP response as {status, headers, body} with node's header shapes. */
function parseRaw(text) {
  const head = text.split('\r\n\r\n')[0].split('\r\n');
  const status = Number((/^HTTP\/1\.[01] (\d{3})/.exec(head[0]) ?? [])[1] ?? 0);
  const headers = {};
  for (const line of head.slice(1)) {
    const i = line.indexOf(':');
    if (i < 0) continue;
    const k = line.slice(0, i).trim().toLowerCase();
    const v = line.slice(i + 1).trim();
    if (k === 'set-cookie') (headers[k] ??= []).push(v);
    else headers[k] = v;
  }
  return { status, headers, body: text.split('\r\n\r\n').slice(1).join('\r\n\r\n') };
}

/** The Location of a callback's redirect must stay on this origin (L2). */
function assertLocalLocation(location, baseUrl, what) {
  assert.ok(location, `${what}: a Location`);
  assert.ok(location.startsWith('/'), `${what}: a path, got ${location}`);
  assert.ok(!location.startsWith('//') && !location.startsWith('/\\'), `${what}: not protocol-relative: ${location}`);
  assert.ok(!/[\\\s]/.test(location), `${what}: no backslash or whitespace: ${location}`);
  assert.equal(new URL(location, baseUrl).origin, new URL(baseUrl).origin, `${what}: same origin: ${location}`);
  const decoded = decodeURIComponent(decodeURIComponent(location));
  assert.ok(!decoded.startsWith('//') && !decoded.startsWith('/\\'), `${what}: not protocol-relative once decoded: ${location}`);
}

/** Forget the provider's request log, once the lines of calls just answered have come in. */
async function quiet(prov) {
  await sleep(150);
  prov.clearRequests();
}

/** Wait until `ms` past the access token's exp. */
async function waitPastExpiry(token, ms = 1200) {
  const { exp } = decodeJwt(token).payload;
  const wait = exp * 1000 - Date.now() + ms;
  if (wait > 0) await sleep(wait);
}

describe('login mode', { skip }, () => {
  let provider; // access tokens: 300 s
  let shortProvider; // access tokens: SHORT_TTL
  let echo;
  const envoys = {}; // name -> Envoy handle
  const ports = {};

  const url = (name, path = '') => `http://127.0.0.1:${ports[name]}${path}`;

  async function envoyFor(name, prov, extra) {
    const e = await h.startEnvoy({
      filterConfig: loginConfig(prov.port, extra), providerPort: prov.port, echoPort: echo.port, port: ports[name],
    });
    if (e.exited) throw new Error(`Envoy "${name}" refused the configuration (exit ${e.code}):\n${e.log().slice(-4000)}`);
    envoys[name] = e;
    return e;
  }

  before(async () => {
    for (const name of ['main', 'logout', 'pass', 'post', 'race', 'short']) ports[name] = await freePort();
    const onA = ['main', 'logout', 'pass', 'post', 'race'];
    // one after the other: the harness names each provider's folder by its number
    provider = await h.startProvider({
      keys: generateKeys(),
      redirectUris: onA.map((n) => url(n, '/callback')),
      postLogoutRedirectUris: onA.map((n) => url(n, '/')),
      config: { users: [ALICE_USER, CAROL_USER] },
    });
    shortProvider = await h.startProvider({
      keys: generateKeys(),
      accessTokenTtl: SHORT_TTL,
      redirectUris: [url('short', '/callback')],
      postLogoutRedirectUris: [url('short', '/')],
    });
    echo = await h.startEcho();
    await Promise.all([
      envoyFor('main', provider, { trust_forwarded_proto: true }),
      envoyFor('logout', provider, { on_upstream_401: 'logout' }),
      envoyFor('pass', provider, { on_upstream_401: 'pass' }),
      envoyFor('post', provider, { client_id: 'productpage-post', client_auth_method: 'client_secret_post' }),
      envoyFor('short', shortProvider, { clock_skew_seconds: 0 }),
    ]);
    // Every Envoy fetches the key set at start; give the workers a few ticks to pick it up.
    await provider.waitForRequests('/certs', { count: 4, timeoutMs: 5000 });
    await shortProvider.waitForRequests('/certs', { count: 1, timeoutMs: 5000 });
    await sleep(600);
  });
  after(() => h.cleanup());

  // ---------------------------------------------------------------------------------------- L1 L2 L4

  h.test('full round trip: page → login form → callback → the original page, with x-user and the bearer token', async () => {
    const jar = new CookieJar();
    const path = `${uniquePath('/productpage')}?u=normal&x=a%20b`;

    // L1: the page request without a session
    const start = await startLogin(jar, url('main', path));
    assert.equal(start.status, 302, start.res.body);
    assert.equal(start.authUrl.origin + start.authUrl.pathname, `${provider.issuer}/protocol/openid-connect/auth`,
      'the public authorization endpoint');
    const p = start.params;
    assert.equal(p.response_type, 'code');
    assert.equal(p.client_id, 'productpage');
    assert.equal(p.redirect_uri, url('main', '/callback'));
    assert.equal(p.scope, 'openid profile email');
    assert.equal(p.code_challenge_method, 'S256');
    for (const k of ['state', 'nonce', 'code_challenge']) assert.ok(p[k] && p[k].length >= 22, `${k} present and random`);
    assert.notEqual(p.state, p.nonce);
    assert.equal(start.txCookies.length, 1, 'one transaction cookie');
    const tx = start.txCookie;
    assert.equal(tx.name, `access_token_tx_${p.state.slice(0, 8)}`);
    assert.equal(tx.value.split('.').length, 5, 'the transaction cookie is a JWE (sealed)');
    assert.ok(!tx.value.includes(p.state) && !tx.raw.includes(p.nonce), 'state and nonce are not readable in the cookie');
    assert.equal(tx.attrs.httponly, true, 'HttpOnly');
    assert.equal(tx.attrs.path, '/');
    assert.ok(Number(tx.attrs['max-age']) > 0 && Number(tx.attrs['max-age']) <= 600, `Max-Age ${tx.attrs['max-age']}`);
    assert.equal(tx.attrs.secure, undefined, 'no Secure over plain http');
    assert.equal(echo.sawPath(path), false, 'the page was not served without a session');

    // the provider's real login form
    const at = await atProvider(jar, start.authUrl, p.redirect_uri);
    assert.ok(at.loginPage, `the provider shows its login form: ${JSON.stringify(at.error ?? at.redirect)}`);
    assert.ok(at.loginPage.form.hasUsername && at.loginPage.form.hasPassword && at.loginPage.form.hasSubmit);
    const callbackUrl = await fillLoginForm(jar, at.loginPage, p.redirect_uri, ALICE);
    const cb = new URL(callbackUrl);
    assert.equal(`${cb.origin}${cb.pathname}`, url('main', '/callback'));
    assert.equal(cb.searchParams.get('state'), p.state);
    assert.ok(cb.searchParams.get('code'));

    // L2: the callback
    await quiet(provider);
    const callback = await requestWithJar(jar, callbackUrl, { headers: PAGE_HEADERS });
    assert.equal(callback.status, 302, callback.body);
    assert.equal(callback.headers.location, path, 'back to the original path with its query');
    const tokenCalls = await provider.waitForRequests('/token');
    assert.equal(tokenCalls.length, 1, 'one token call');
    assert.equal(tokenCalls[0].method, 'POST');
    assert.equal(tokenCalls[0].host, INTERNAL_HOST, 'the token endpoint is called by its internal name, through the cluster');
    assert.equal(tokenCalls[0].auth, 'Basic', 'client_secret_basic');
    assert.equal(tokenCalls[0].grant, 'authorization_code');
    assert.equal(tokenCalls[0].status, 200, 'the provider accepted code, verifier, redirect_uri and client');

    const access = setCookie(callback, 'access_token');
    assert.ok(access && !isCleared(access), 'access_token cookie set');
    const claims = decodeJwt(access.value).payload;
    assert.equal(claims.iss, provider.issuer);
    assert.equal(claims.azp, 'productpage');
    assert.equal(claims.preferred_username, 'alice');
    assert.equal(access.attrs.path, '/');
    assert.equal(access.attrs.httponly, true);
    assert.equal(String(access.attrs.samesite).toLowerCase(), 'lax');
    assert.equal(access.attrs.secure, undefined);
    const maxAge = Number(access.attrs['max-age']);
    const lifetime = claims.exp - Math.floor(Date.now() / 1000);
    assert.ok(Math.abs(maxAge - lifetime) <= 3, `Max-Age ${maxAge} is the token's lifetime (${lifetime})`);
    const session = setCookie(callback, 'access_token_session');
    assert.ok(session && !isCleared(session), 'access_token_session cookie set');
    assert.equal(session.value.split('.').length, 5, 'the session cookie is sealed (JWE)');
    assert.equal(session.attrs.httponly, true);
    assert.equal(session.attrs.path, '/');
    const txCleared = setCookie(callback, tx.name);
    assert.ok(isCleared(txCleared), 'the transaction cookie is cleared');
    assert.equal(txCleared.attrs['max-age'], '0');

    // L4: the original page, with the session
    const page = await requestWithJar(jar, url('main', path), { headers: PAGE_HEADERS });
    assert.equal(page.status, 200, page.body);
    assert.match(page.body, /Hello, alice/);
    const seen = echo.last(path);
    assert.ok(seen, 'the service saw the original path with its query');
    assert.deepEqual(headerValues(seen, 'x-user'), ['alice']);
    assert.deepEqual(headerValues(seen, 'authorization'), [`Bearer ${access.value}`]);
  });

  h.test('L1: navigations are redirected; API calls get a 401 JSON, never a redirect', async () => {
    const cases = [
      { what: 'GET with a browser Accept', headers: PAGE_HEADERS, page: true },
      { what: 'GET without Accept', headers: {}, page: true },
      { what: 'GET with Accept */* (curl)', headers: { accept: '*/*' }, page: true },
      { what: 'HEAD without Accept', method: 'HEAD', headers: {}, page: true },
      { what: 'Sec-Fetch-Mode: navigate', headers: { accept: '*/*', 'sec-fetch-mode': 'navigate', 'sec-fetch-dest': 'document' }, page: true },
      { what: 'GET Accept: application/json', headers: API_HEADERS, page: false },
      { what: 'GET Accept: text/html;q=0, application/json', headers: { accept: 'text/html;q=0, application/json' }, page: false },
      { what: 'fetch(): Sec-Fetch-Mode cors with Accept */*', headers: { accept: '*/*', 'sec-fetch-mode': 'cors', 'sec-fetch-dest': 'empty' }, page: false },
      { what: 'XMLHttpRequest', headers: { ...PAGE_HEADERS, 'x-requested-with': 'XMLHttpRequest' }, page: false },
      { what: 'POST with a browser Accept', method: 'POST', headers: { ...PAGE_HEADERS, 'content-type': 'application/x-www-form-urlencoded' }, body: 'a=1', page: false },
      { what: 'DELETE', method: 'DELETE', headers: API_HEADERS, page: false },
    ];
    for (const c of cases) {
      const path = uniquePath('/l1');
      const res = await request(url('main', path), { method: c.method, headers: c.headers, body: c.body });
      if (c.page) {
        const loc = assertLoginRedirect(res, provider, c.what);
        assert.equal(loc.searchParams.get('redirect_uri'), url('main', '/callback'), c.what);
      } else {
        assertApi401(res, c.what);
        assert.deepEqual(setCookies(res, /_tx_/), [], `${c.what}: no login transaction for an API call`);
      }
      assert.equal(echo.sawPath(path), false, `${c.what}: the service never saw it`);
    }
  });

  h.test('L1: with trust_forwarded_proto, x-forwarded-proto https makes an https redirect_uri and Secure cookies', async () => {
    const res = await request(url('main', uniquePath('/xfp')), { headers: { ...PAGE_HEADERS, 'x-forwarded-proto': 'https' } });
    const loc = assertLoginRedirect(res, provider, 'x-forwarded-proto https');
    assert.equal(loc.searchParams.get('redirect_uri'), `https://127.0.0.1:${ports.main}/callback`);
    const tx = setCookies(res, /_tx_/)[0];
    assert.equal(tx.attrs.secure, true, 'the transaction cookie is Secure');
  });

  h.test('L4: the service sees the bearer token and its Cookie header without the sealed cookies', async () => {
    const jar = new CookieJar();
    const login = await loginThroughFilter(jar, url('main'), '/start');
    assert.equal(login.final.status, 200);
    const token = jar.get(url('main'), 'access_token');
    const session = jar.get(url('main'), 'access_token_session');
    assert.ok(token && session);

    // unrelated cookies around the filter's, and a stale transaction cookie
    const path = uniquePath('/l4');
    const cookie = `theme=dark; access_token=${token}; access_token_session=${session}; access_token_tx_deadbeef=junk; lang=en`;
    const res = await request(url('main', path), { headers: { ...PAGE_HEADERS, cookie, 'x-user': 'mallory' } });
    assert.equal(res.status, 200, res.body);
    const seen = echo.last(path);
    assert.deepEqual(headerValues(seen, 'authorization'), [`Bearer ${token}`]);
    assert.deepEqual(headerValues(seen, 'x-user'), ['alice'], 'a client-sent x-user is replaced by the claim');
    const names = cookieNames(seen.headers.cookie);
    assert.deepEqual(names, ['theme', 'access_token', 'lang'], `Cookie at the service: ${names.join(', ')}`);
    assert.ok(String(seen.headers.cookie).includes(`access_token=${token}`), 'the access_token cookie is kept as is');

    // the token as a bearer header (an API client) is a session too
    const apiPath = uniquePath('/api');
    const api = await request(url('main', apiPath), { headers: { ...API_HEADERS, authorization: `Bearer ${token}` } });
    assert.equal(api.status, 200, api.body);
    assert.deepEqual(headerValues(echo.last(apiPath), 'x-user'), ['alice']);

    // skip paths: no login, no token check, client claim headers removed
    for (const p of ['/healthz', '/public/style.css?v=1']) {
      const r = await request(url('main', p), { headers: { ...PAGE_HEADERS, 'x-user': 'mallory', cookie: 'theme=dark' } });
      assert.equal(r.status, 200, `${p}: ${r.status}`);
      const s = echo.last(p);
      assert.deepEqual(headerValues(s, 'x-user'), [], `${p}: no x-user`);
      assert.deepEqual(headerValues(s, 'authorization'), [], `${p}: no Authorization added`);
      assert.equal(s.headers.cookie, 'theme=dark', `${p}: Cookie untouched`);
    }
  });

  // ---------------------------------------------------------------------------------------- L2 errors

  h.test('L2: a callback whose state does not match is refused (400, no session, no token call)', async () => {
    const jar = new CookieJar();
    const start = await startLogin(jar, url('main', '/wrong-state?a=1'));
    const { callbackUrl } = await toCallback(jar, start.authUrl, start.params.redirect_uri);
    const code = new URL(callbackUrl).searchParams.get('code');
    await quiet(provider);

    const attempts = [
      ['another state', crypto.randomBytes(32).toString('base64url')],
      ['empty state', ''],
    ];
    for (const [what, state] of attempts) {
      const res = await requestWithJar(jar, url('main', `/callback?code=${encodeURIComponent(code)}&state=${encodeURIComponent(state)}`), { headers: PAGE_HEADERS });
      assertErrorPage(res, 400, what);
    }
    const noState = await requestWithJar(jar, url('main', `/callback?code=${encodeURIComponent(code)}`), { headers: PAGE_HEADERS });
    assertErrorPage(noState, 400, 'no state at all');
    assert.equal(provider.requests('/token').length, 0, 'the code was never sent to the token endpoint');

    // a forged state does not spoil the login in progress: the genuine callback still works
    const ok = await requestWithJar(jar, callbackUrl, { headers: PAGE_HEADERS });
    assert.equal(ok.status, 302, ok.body);
    assert.equal(ok.headers.location, '/wrong-state?a=1');
    assert.ok(sessionSets(ok).length >= 2, 'the real callback makes a session');

    // a state that names the transaction cookie (its first 8 characters) but differs after them
    const jar2 = new CookieJar();
    const s2 = await startLogin(jar2, url('main', '/wrong-state-2'));
    const cb2 = await toCallback(jar2, s2.authUrl, s2.params.redirect_uri);
    const code2 = new URL(cb2.callbackUrl).searchParams.get('code');
    const forged = `${s2.state.slice(0, 8)}${crypto.randomBytes(24).toString('base64url')}`;
    await quiet(provider);
    const res2 = await requestWithJar(jar2, url('main', `/callback?code=${encodeURIComponent(code2)}&state=${forged}`), { headers: PAGE_HEADERS });
    assertErrorPage(res2, 400, 'same 8 first characters, rest changed');
    assert.equal(provider.requests('/token').length, 0, 'no token call');
  });

  h.test('L2: a callback without the transaction cookie is refused with a page naming the request id', async () => {
    const jar = new CookieJar();
    const start = await startLogin(jar, url('main', '/no-tx'));
    const { callbackUrl } = await toCallback(jar, start.authUrl, start.params.redirect_uri);
    await quiet(provider);
    const rid = `e2e-${crypto.randomUUID()}`;
    // another browser (no cookies) opens the callback
    const res = await request(callbackUrl, { headers: { ...PAGE_HEADERS, 'x-request-id': rid } });
    assertErrorPage(res, 400, 'no transaction cookie');
    assert.ok(res.body.includes(rid), `the page names the request id ${rid}: ${res.body}`);
    assert.equal(provider.requests('/token').length, 0, 'no token call');
  });

  h.test('L2: a tampered or swapped transaction cookie is refused; extra callback parameters change nothing', async () => {
    const jar = new CookieJar();
    const a = await startLogin(jar, url('main', '/tab-one'));
    const b = await startLogin(jar, url('main', '/tab-two'));
    const { callbackUrl } = await toCallback(jar, b.authUrl, b.params.redirect_uri);
    await quiet(provider);

    // B's callback with B's cookie tampered
    const tampered = await request(callbackUrl, {
      headers: { ...PAGE_HEADERS, cookie: `${b.txCookie.name}=${flipMiddle(b.txCookie.value)}` },
    });
    assertErrorPage(tampered, 400, 'tampered transaction cookie');
    // B's callback with A's (valid) transaction sealed under B's cookie name
    const swapped = await request(callbackUrl, { headers: { ...PAGE_HEADERS, cookie: `${b.txCookie.name}=${a.txCookie.value}` } });
    assertErrorPage(swapped, 400, 'transaction cookie of another login');
    assert.equal(provider.requests('/token').length, 0, 'no token call');

    // the real one, with parameters an attacker might add
    const evil = `${callbackUrl}&redirect_uri=${encodeURIComponent('https://evil.com/')}&return_to=%2F%2Fevil.com&next=https://evil.com`;
    const ok = await requestWithJar(jar, evil, { headers: PAGE_HEADERS });
    assert.equal(ok.status, 302, ok.body);
    assert.equal(ok.headers.location, '/tab-two');
  });

  h.test('L2+: a replayed callback (same code, same transaction cookie) is refused before the token endpoint: 400, no session', async () => {
    const jar = new CookieJar();
    const start = await startLogin(jar, url('main', '/replay'));
    const { callbackUrl } = await toCallback(jar, start.authUrl, start.params.redirect_uri);
    const txPair = `${start.txCookie.name}=${start.txCookie.value}`;
    const first = await request(callbackUrl, { headers: { ...PAGE_HEADERS, cookie: txPair } });
    assert.equal(first.status, 302, first.body);
    assert.ok(sessionSets(first).length >= 2);
    // the same code again, with the transaction cookie the attacker kept
    await quiet(provider);
    const second = await request(callbackUrl, { headers: { ...PAGE_HEADERS, cookie: txPair } });
    assertErrorPage(second, 400, 'replayed state');
    assert.equal(sessionSets(second).length, 0, 'no session');
    const calls = await provider.waitForRequests('/token', { timeoutMs: 500 });
    assert.equal(calls.length, 0, 'the state is single-use: no second token call');
  });

  h.test('L3: the user cancels at the provider (error=access_denied): 403 page, no session', async () => {
    const jar = new CookieJar();
    const start = await startLogin(jar, url('main', '/cancel'));
    const at = await atProvider(jar, start.authUrl, start.params.redirect_uri);
    assert.ok(at.loginPage, 'login form');
    const back = await cancelLoginForm(jar, at.loginPage, start.params.redirect_uri);
    const q = new URL(back).searchParams;
    assert.equal(q.get('error'), 'access_denied');
    assert.equal(q.get('state'), start.state);
    await quiet(provider);
    const res = await requestWithJar(jar, back, { headers: PAGE_HEADERS });
    assertErrorPage(res, 403, 'access_denied');
    assert.ok(isCleared(setCookie(res, start.txCookie.name)), 'the transaction cookie is cleared');
    assert.equal(provider.requests('/token').length, 0, 'no token call');

    // any other provider error: 400
    const s2 = await startLogin(jar, url('main', '/cancel-2'));
    const res2 = await requestWithJar(jar, url('main', `/callback?error=invalid_scope&error_description=nope&state=${s2.state}`), { headers: PAGE_HEADERS });
    assertErrorPage(res2, 400, 'error=invalid_scope');
  });

  h.test('L3: the token endpoint answers 500: 502 page, no session', async () => {
    const jar = new CookieJar();
    const start = await startLogin(jar, url('main', '/down'));
    const { callbackUrl } = await toCallback(jar, start.authUrl, start.params.redirect_uri);
    await provider.control({ failStatus: { token: 500 } });
    try {
      const res = await requestWithJar(jar, callbackUrl, { headers: PAGE_HEADERS });
      assertErrorPage(res, 502, 'token endpoint 500');
    } finally {
      await provider.control({});
    }
  });

  h.test('L3: the token endpoint does not answer within timeout_ms: 504; Envoy keeps serving', async () => {
    const jar = new CookieJar();
    const start = await startLogin(jar, url('main', '/slow'));
    const { callbackUrl } = await toCallback(jar, start.authUrl, start.params.redirect_uri);
    await provider.control({ delayMs: { token: TIMEOUT_MS + 1500 } });
    let res;
    try {
      res = await requestWithJar(jar, callbackUrl, { headers: PAGE_HEADERS });
    } finally {
      await provider.control({});
    }
    assertErrorPage(res, 504, 'token endpoint too slow');
    assert.ok(res.ms >= TIMEOUT_MS - 200 && res.ms < TIMEOUT_MS + 1400, `answered after timeout_ms (${res.ms} ms)`);
    // Envoy (and the VM) still serve: a whole new login works
    const again = await loginThroughFilter(new CookieJar(), url('main'), '/after-slow');
    assert.equal(again.callback.status, 302, again.callback.body);
    assert.equal(again.final.status, 200);
    assert.match(again.final.body, /Hello, alice/);
  });

  h.test('B1: a code exchange that comes before the first key set waits for it', async (th) => {
    // A fresh Envoy whose first key fetch takes 1.5 s (less than timeout_ms); the login is faster.
    await provider.control({ delayMs: { certs: 1500 } });
    let e;
    try {
      e = await th.startEnvoy({
        filterConfig: loginConfig(provider.port), providerPort: provider.port, echoPort: echo.port, port: ports.race,
      });
      assert.equal(e.exited, false);
      const login = await loginThroughFilter(new CookieJar(), e.url, '/early');
      assert.equal(login.callback.status, 302, `callback before the key set arrived: ${login.callback.status} ${login.callback.body}`);
      assert.equal(login.final.status, 200);
    } finally {
      await provider.control({});
    }
  });

  // ---------------------------------------------------------------------------------------- sessions

  h.test('tampered access and session cookies are no session: page → login, API → 401, nothing reaches the service', async () => {
    const jar = new CookieJar();
    await loginThroughFilter(jar, url('main'), '/tamper-start');
    const token = jar.get(url('main'), 'access_token');
    const session = jar.get(url('main'), 'access_token_session');
    const forged = tamper(token, (p) => ({ ...p, preferred_username: 'mallory', exp: p.exp + 3600 }));
    const badSig = `${token.slice(0, token.lastIndexOf('.') + 1)}${flipMiddle(token.slice(token.lastIndexOf('.') + 1))}`;
    const badSession = flipMiddle(session);
    // a genuine session cookie of another Envoy (another session_secret)
    const otherJar = new CookieJar();
    await loginThroughFilter(otherJar, url('pass'), '/tamper-other');
    const foreignSession = otherJar.get(url('pass'), 'access_token_session');
    assert.ok(foreignSession);
    await quiet(provider);

    const cases = [
      ['forged access token claims', `access_token=${forged}`],
      ['access token with a broken signature', `access_token=${badSig}`],
      ['garbage access token', 'access_token=not-a-token'],
      ['tampered session cookie alone', `access_token_session=${badSession}`],
      ['forged access token and tampered session', `access_token=${forged}; access_token_session=${badSession}`],
      ['session cookie of another Envoy (other session_secret)', `access_token_session=${foreignSession}`],
      ['expired-looking access token with the other Envoy\'s session', `access_token=${badSig}; access_token_session=${foreignSession}`],
    ];
    for (const [what, cookie] of cases) {
      const pagePath = uniquePath('/tampered');
      const page = await request(url('main', pagePath), { headers: { ...PAGE_HEADERS, cookie } });
      assertLoginRedirect(page, provider, `${what} (page)`);
      assertNoSession(page, `${what} (page)`);
      const apiPath = uniquePath('/tampered-api');
      const api = await request(url('main', apiPath), { headers: { ...API_HEADERS, cookie } });
      assertApi401(api, `${what} (API)`);
      assert.equal(echo.sawPath(pagePath) || echo.sawPath(apiPath), false, `${what}: nothing reached the service`);
    }
    assert.equal(provider.requests('/token').length, 0, 'no refresh was attempted with a tampered session');

    // a forged access token next to a genuine session: the session is refreshed (L5), the forged
    // claims never reach the service
    const path = uniquePath('/forged-with-session');
    const res = await request(url('main', path), { headers: { ...PAGE_HEADERS, cookie: `access_token=${forged}; access_token_session=${session}` } });
    assert.equal(res.status, 200, res.body);
    const seen = echo.last(path);
    assert.deepEqual(headerValues(seen, 'x-user'), ['alice']);
    const bearer = headerValues(seen, 'authorization')[0];
    assert.notEqual(bearer, `Bearer ${forged}`);
    assert.equal(decodeJwt(bearer.slice(7)).payload.preferred_username, 'alice');
    const newToken = setCookie(res, 'access_token');
    assert.ok(newToken && !isCleared(newToken), 'the refreshed token is set');
    assert.equal(`Bearer ${newToken.value}`, bearer);
  });

  h.test('L6: logout clears every cookie, goes to the end-session endpoint, and really ends the provider session', async () => {
    const jar = new CookieJar();
    const login = await loginThroughFilter(jar, url('main'), '/before-logout');
    // the provider session is alive: the authorization request goes through without the form
    const alive = await atProvider(jar, login.start.authUrl, login.redirectUri);
    assert.ok(alive.redirect, 'this browser is logged in at the provider');

    const sent = jar.header(url('main'));
    const res = await requestWithJar(jar, url('main', '/logout'), { headers: { ...PAGE_HEADERS, cookie: `${sent}; access_token_tx_abcdefgh=stale` } });
    assert.equal(res.status, 302, res.body);
    const loc = new URL(res.headers.location);
    assert.equal(`${loc.origin}${loc.pathname}`, `${provider.issuer}/protocol/openid-connect/logout`, 'the public end-session endpoint');
    const hint = loc.searchParams.get('id_token_hint');
    assert.ok(hint, 'id_token_hint');
    const idClaims = decodeJwt(hint).payload;
    assert.equal(idClaims.aud, 'productpage');
    assert.equal(idClaims.iss, provider.issuer);
    assert.equal(loc.searchParams.get('post_logout_redirect_uri'), url('main', '/'));
    assert.equal(loc.searchParams.get('client_id'), 'productpage');
    for (const name of ['access_token', 'access_token_session', 'access_token_tx_abcdefgh']) {
      const c = setCookie(res, name);
      assert.ok(c, `${name} is cleared`);
      assert.equal(c.attrs['max-age'], '0', `${name}: Max-Age=0`);
      assert.equal(c.value, '');
    }
    assertNoSession(res, 'logout');

    // the provider ends its session and sends the browser back
    const out = await requestWithJar(jar, res.headers.location);
    assert.equal(out.status, 302, `provider logout: ${out.status} ${out.body.slice(0, 300)}`);
    // L6+: the end-session redirect carries a state, which the provider sends back
    const back = new URL(out.headers.location);
    assert.equal(`${back.origin}${back.pathname}`, url('main', '/'));
    assert.equal(back.searchParams.get('state'), loc.searchParams.get('state'), 'the logout state comes back');
    // back on the site: no session, and the provider asks for the password again
    const again = await startLogin(jar, url('main', '/'));
    assert.equal(again.status, 302);
    const at = await atProvider(jar, again.authUrl, again.params.redirect_uri);
    assert.ok(at.loginPage, `the provider shows the login form again, got ${at.redirect ?? at.error?.status}`);
  });

  h.test('L1: at most 4 login transactions live at once; undecryptable ones are cleared', async () => {
    const jar = new CookieJar();
    jar.set(url('main'), 'access_token_tx_garbage0', 'not-sealed');
    const starts = [];
    for (let i = 0; i < 6; i++) {
      const s = await startLogin(jar, url('main', `/many-${i}`));
      assert.equal(s.status, 302);
      if (i === 0) assert.ok(isCleared(setCookie(s.res, 'access_token_tx_garbage0')), 'the undecryptable transaction cookie is cleared');
      starts.push(s);
      const live = cookieNames(jar.header(url('main'))).filter((n) => n.startsWith('access_token_tx_'));
      assert.ok(live.length <= 4, `after ${i + 1} logins: ${live.length} transaction cookies`);
    }
    const live = cookieNames(jar.header(url('main'))).filter((n) => n.startsWith('access_token_tx_'));
    assert.deepEqual(live, starts.slice(2).map((s) => s.txCookie.name), 'the newest four are kept');
    // the newest login completes
    const last = starts[5];
    const { callbackUrl } = await toCallback(jar, last.authUrl, last.params.redirect_uri);
    const cb = await requestWithJar(jar, callbackUrl, { headers: PAGE_HEADERS });
    assert.equal(cb.status, 302, cb.body);
    assert.equal(cb.headers.location, '/many-5');
  });

  for (const order of ['first tab first', 'second tab first']) {
    h.test(`L1: two tabs start a login at the same time; both succeed (${order})`, async () => {
      const jar = new CookieJar();
      const a = await startLogin(jar, url('main', '/tab-a?x=1'));
      const b = await startLogin(jar, url('main', '/tab-b?y=2'));
      assert.notEqual(a.txCookie.name, b.txCookie.name, 'one transaction cookie per tab');
      const cbA = await toCallback(jar, a.authUrl, a.params.redirect_uri);
      const cbB = await toCallback(jar, b.authUrl, b.params.redirect_uri);
      assert.equal(cbA.sawLoginForm, true);
      assert.equal(cbB.sawLoginForm, false, 'the second tab rides on the provider session');
      const finish = order === 'first tab first'
        ? [[cbA.callbackUrl, '/tab-a?x=1'], [cbB.callbackUrl, '/tab-b?y=2']]
        : [[cbB.callbackUrl, '/tab-b?y=2'], [cbA.callbackUrl, '/tab-a?x=1']];
      for (const [cbUrl, target] of finish) {
        const res = await requestWithJar(jar, cbUrl, { headers: PAGE_HEADERS });
        assert.equal(res.status, 302, `${target}: ${res.status} ${res.body}`);
        assert.equal(res.headers.location, target);
        assert.ok(sessionSets(res).length >= 2, `${target}: a session`);
        const page = await requestWithJar(jar, url('main', target), { headers: PAGE_HEADERS });
        assert.equal(page.status, 200);
        assert.match(page.body, /Hello, alice/);
      }
    });
  }

  h.test('L2: open-redirect attempts: the login always ends on a local path', async () => {
    const jar = new CookieJar();
    await loginThroughFilter(jar, url('main'), '/open-redirect-setup');
    const attempts = [
      '//evil.com', '//evil.com/path?x=1', '/\\evil.com', '/\\/evil.com', '/%2F%2Fevil.com', '/%2f%2fevil.com',
      '/%5Cevil.com', '/%252F%252Fevil.com', '/.//evil.com', '///evil.com', 'https://evil.com/', 'https://evil.com//evil.com',
      `http://127.0.0.1:${ports.main}//evil.com`,
    ];
    const outcomes = [];
    for (const target of attempts) {
      jar.clear(url('main'));
      const res = await rawGet(ports.main, target, { accept: 'text/html' });
      if (res.status !== 302) {
        assert.ok(res.status >= 400 && res.status < 500, `${target}: refused by Envoy with ${res.status}`);
        outcomes.push(`${target}: ${res.status}`);
        continue;
      }
      const loc = new URL(res.headers.location);
      assert.equal(loc.origin, new URL(provider.issuer).origin, `${target}: the redirect goes to the provider only`);
      jar.store(url('main'), res.headers);
      const redirectUri = loc.searchParams.get('redirect_uri');
      const at = await atProvider(jar, loc, redirectUri);
      if (!at.redirect) {
        // Envoy took the host from an absolute URL: the provider refuses that redirect_uri
        assert.notEqual(new URL(redirectUri).host, `127.0.0.1:${ports.main}`, `${target}: ${JSON.stringify(at.error ?? at.loginPage?.form)}`);
        assert.equal(at.error?.status, 400, `${target}: the provider refuses the foreign redirect_uri`);
        outcomes.push(`${target}: provider refused redirect_uri ${redirectUri}`);
        continue;
      }
      const cb = await requestWithJar(jar, at.redirect, { headers: PAGE_HEADERS });
      assert.equal(cb.status, 302, `${target}: callback ${cb.status} ${cb.body}`);
      assertLocalLocation(cb.headers.location, url('main'), target);
      outcomes.push(`${target}: ${cb.headers.location}`);
    }
    process.stdout.write(`# open-redirect outcomes:\n${outcomes.map((o) => `#   ${o}`).join('\n')}\n`);
  });

  h.test('large access token: chunked cookies under 4096 bytes each, and the login still works', async () => {
    const jar = new CookieJar();
    const login = await loginThroughFilter(jar, url('main'), '/big?x=1', { creds: CAROL });
    assert.equal(login.callback.status, 302, login.callback.body);
    const chunks = setCookies(login.callback, /^access_token(_\d+)?$/).filter((c) => !isCleared(c));
    assert.ok(chunks.length >= 2, `the access token is split over several cookies: ${chunks.map((c) => c.name)}`);
    assert.deepEqual(chunks.map((c) => c.name), ['access_token', ...chunks.slice(1).map((_, i) => `access_token_${i + 1}`)]);
    for (const c of setCookies(login.callback)) {
      assert.ok(Buffer.byteLength(c.raw) < 4096, `${c.name}: Set-Cookie of ${Buffer.byteLength(c.raw)} bytes`);
    }
    const token = chunks.map((c) => c.value).join('');
    assert.ok(token.length > 3800 * (chunks.length - 1), `token of ${token.length} bytes`);
    const claims = decodeJwt(token).payload;
    assert.equal(claims.preferred_username, 'carol');
    assert.ok(claims.realm_access.roles.length >= CAROL_ROLES.length);

    assert.equal(login.final.status, 200, login.final.body.slice(0, 300));
    assert.match(login.final.body, /Hello, carol/);
    const seen = echo.last('/big?x=1');
    assert.deepEqual(headerValues(seen, 'authorization'), [`Bearer ${token}`], 'the whole token, joined');
    assert.deepEqual(headerValues(seen, 'x-user'), ['carol']);
    // logout clears every chunk
    const out = await requestWithJar(jar, url('main', '/logout'), { headers: PAGE_HEADERS });
    for (const c of chunks) assert.ok(isCleared(setCookie(out, c.name)), `logout clears ${c.name}`);
  });

  // ---------------------------------------------------------------------------------------- L7

  h.test('L7 on_upstream_401=login: cookies cleared, a new login that comes back to the same page', async () => {
    const jar = new CookieJar();
    await loginThroughFilter(jar, url('main'), '/l7-login');
    const target = '/upstream-401/orders?page=2';
    const res = await requestWithJar(jar, url('main', target), { headers: PAGE_HEADERS });
    const loc = assertLoginRedirect(res, provider, 'upstream 401 on a page');
    assert.ok(echo.sawPath(target), 'the service was asked first');
    for (const name of ['access_token', 'access_token_session']) assert.ok(isCleared(setCookie(res, name)), `${name} cleared`);
    const { callbackUrl, sawLoginForm } = await toCallback(jar, loc, loc.searchParams.get('redirect_uri'));
    assert.equal(sawLoginForm, false, 'the provider session is still alive');
    const cb = await requestWithJar(jar, callbackUrl, { headers: PAGE_HEADERS });
    assert.equal(cb.status, 302, cb.body);
    assert.equal(cb.headers.location, target, 'back to the page that got the 401');

    // API requests get the service's own 401
    const api = await requestWithJar(jar, url('main', '/upstream-401/api'), { headers: API_HEADERS });
    assert.equal(api.status, 401);
    assert.match(String(api.headers['www-authenticate']), /realm="upstream"/, 'the service\'s 401');
    assert.equal(JSON.parse(api.body).path, '/upstream-401/api');
    assert.equal(api.headers.location, undefined);
    assert.deepEqual(setCookies(api).filter(isCleared).map((c) => c.name), [], 'an API 401 clears nothing');
  });

  h.test('L7 on_upstream_401=logout: the L6 redirect', async () => {
    const jar = new CookieJar();
    await loginThroughFilter(jar, url('logout'), '/l7-logout');
    const cookie = jar.header(url('logout'));
    const res = await requestWithJar(jar, url('logout', '/upstream-401/page'), { headers: PAGE_HEADERS });
    assert.equal(res.status, 302, res.body);
    const loc = new URL(res.headers.location);
    assert.equal(`${loc.origin}${loc.pathname}`, `${provider.issuer}/protocol/openid-connect/logout`);
    assert.ok(loc.searchParams.get('id_token_hint'));
    assert.equal(loc.searchParams.get('post_logout_redirect_uri'), url('logout', '/'));
    assert.equal(loc.searchParams.get('client_id'), 'productpage');
    for (const name of ['access_token', 'access_token_session']) assert.ok(isCleared(setCookie(res, name)), `${name} cleared`);
    // an API request with the session gets the service's own 401
    const api = await request(url('logout', '/upstream-401/api'), { headers: { ...API_HEADERS, cookie } });
    assert.equal(api.status, 401);
    assert.match(String(api.headers['www-authenticate']), /realm="upstream"/, 'the service\'s 401');
    assert.deepEqual(setCookies(api).filter(isCleared).map((c) => c.name), [], 'an API 401 clears nothing');
  });

  h.test('L7 on_upstream_401=pass: the service\'s 401 reaches the browser', async () => {
    const jar = new CookieJar();
    await loginThroughFilter(jar, url('pass'), '/l7-pass');
    const res = await requestWithJar(jar, url('pass', '/upstream-401/page'), { headers: PAGE_HEADERS });
    assert.equal(res.status, 401);
    assert.equal(res.headers.location, undefined);
    assert.match(res.body, /Hello, alice/, 'the service\'s own page');
    assert.deepEqual(setCookies(res).filter(isCleared).map((c) => c.name), [], 'nothing cleared');
  });

  h.test('client_secret_post: the code exchange sends the credentials in the form', async () => {
    await quiet(provider);
    const login = await loginThroughFilter(new CookieJar(), url('post'), '/post-client?z=9');
    assert.equal(login.start.params.client_id, 'productpage-post');
    assert.equal(login.callback.status, 302, login.callback.body);
    assert.equal(login.callback.headers.location, '/post-client?z=9');
    const calls = await provider.waitForRequests('/token');
    assert.equal(calls.length, 1);
    assert.equal(calls[0].auth, undefined, 'no Authorization header');
    assert.equal(calls[0].status, 200);
    assert.equal(calls[0].host, INTERNAL_HOST);
    assert.equal(login.final.status, 200);
    assert.match(login.final.body, /Hello, alice/);
    assert.equal(decodeJwt(headerValues(echo.last('/post-client?z=9'), 'authorization')[0].slice(7)).payload.azp, 'productpage-post');
  });

  // ---------------------------------------------------------------------------------------- L5

  h.test('L5: an expired access token is refreshed; the same request goes on with the new token', async () => {
    const jar = new CookieJar();
    const login = await loginThroughFilter(jar, url('short'), '/refresh-start');
    assert.equal(login.final.status, 200);
    const old = jar.get(url('short'), 'access_token');
    await waitPastExpiry(old);
    await quiet(shortProvider);

    const path = `${uniquePath('/refreshed')}?q=1`;
    const res = await requestWithJar(jar, url('short', path), { headers: PAGE_HEADERS });
    assert.equal(res.status, 200, res.body);
    const seen = echo.last(path);
    assert.ok(seen, 'the same request reached the service');
    const bearer = headerValues(seen, 'authorization')[0];
    const fresh = setCookie(res, 'access_token');
    assert.ok(fresh && !isCleared(fresh), 'a new access_token cookie');
    assert.notEqual(fresh.value, old);
    assert.equal(bearer, `Bearer ${fresh.value}`, 'the service got the new token');
    assert.ok(decodeJwt(fresh.value).payload.exp > decodeJwt(old).payload.exp);
    const sess = setCookie(res, 'access_token_session');
    assert.ok(sess && !isCleared(sess), 'a new session cookie');
    assert.deepEqual(headerValues(seen, 'x-user'), ['alice']);
    const calls = await shortProvider.waitForRequests('/token');
    assert.equal(calls.length, 1);
    assert.equal(calls[0].grant, 'refresh_token');
    assert.equal(calls[0].host, INTERNAL_HOST);
    assert.equal(calls[0].auth, 'Basic');

    // with the new cookies: no refresh
    const next = await requestWithJar(jar, url('short', '/after-refresh'), { headers: PAGE_HEADERS });
    assert.equal(next.status, 200);
    assert.equal(shortProvider.requests('/token').length, 1, 'no second refresh');
  });

  h.test('L5: concurrent requests of one session share one refresh', async () => {
    const jar = new CookieJar();
    await loginThroughFilter(jar, url('short'), '/single-flight-start');
    await waitPastExpiry(jar.get(url('short'), 'access_token'));
    const cookie = jar.header(url('short'));
    await quiet(shortProvider);

    const N = 8;
    const paths = Array.from({ length: N }, (_, i) => uniquePath(`/sf${i}`));
    const results = await Promise.all(paths.map((p) => request(url('short', p), { headers: { ...PAGE_HEADERS, cookie } })));
    results.forEach((r, i) => assert.equal(r.status, 200, `request ${i}: ${r.status} ${r.body.slice(0, 200)}`));
    await sleep(300);
    const refreshes = shortProvider.requests((r) => r.path.endsWith('/token') && r.grant === 'refresh_token');
    assert.equal(refreshes.length, 1, `one refresh for ${N} requests, got ${refreshes.length}: ${JSON.stringify(refreshes)}`);
    assert.equal(refreshes[0].grant, 'refresh_token');
    const tokens = new Set(paths.map((p) => headerValues(echo.last(p), 'authorization')[0]));
    assert.equal(tokens.size, 1, 'all requests went on with the same new token');
    results.forEach((r, i) => {
      const c = setCookie(r, 'access_token');
      assert.ok(c && !isCleared(c), `request ${i} carries the new cookies`);
    });
  });

  h.test('L5: refresh fails (token endpoint 500): cookies cleared, page → login, API → 401', async () => {
    const jar = new CookieJar();
    await loginThroughFilter(jar, url('short'), '/refresh-fail-start');
    await waitPastExpiry(jar.get(url('short'), 'access_token'));
    const cookie = jar.header(url('short'));
    await shortProvider.control({ failStatus: { token: 500 } });
    try {
      const pagePath = uniquePath('/rf-page');
      const page = await request(url('short', pagePath), { headers: { ...PAGE_HEADERS, cookie } });
      assertLoginRedirect(page, shortProvider, 'page after a failed refresh');
      for (const name of ['access_token', 'access_token_session']) assert.ok(isCleared(setCookie(page, name)), `${name} cleared`);
      const apiPath = uniquePath('/rf-api');
      const api = await request(url('short', apiPath), { headers: { ...API_HEADERS, cookie } });
      assertApi401(api, 'API after a failed refresh');
      for (const name of ['access_token', 'access_token_session']) assert.ok(isCleared(setCookie(api, name)), `${name} cleared (API)`);
      assert.equal(echo.sawPath(pagePath) || echo.sawPath(apiPath), false, 'nothing reached the service');
    } finally {
      await shortProvider.control({});
    }
  });

  h.test('L5: refresh fails (the provider session ended, refresh token revoked): cookies cleared, login again', async () => {
    const jar = new CookieJar();
    await loginThroughFilter(jar, url('short'), '/revoked-start');
    // the user logs out at the provider directly (another app, the account console...)
    const out = await requestWithJar(jar, `${shortProvider.issuer}/protocol/openid-connect/logout`);
    assert.ok(out.status === 200 || out.status === 302, `provider logout: ${out.status}`);
    await waitPastExpiry(jar.get(url('short'), 'access_token'));
    await quiet(shortProvider);
    const path = uniquePath('/revoked');
    const res = await requestWithJar(jar, url('short', path), { headers: PAGE_HEADERS });
    const loc = assertLoginRedirect(res, shortProvider, 'page after a refused refresh');
    for (const name of ['access_token', 'access_token_session']) assert.ok(isCleared(setCookie(res, name)), `${name} cleared`);
    const calls = await shortProvider.waitForRequests('/token');
    assert.equal(calls.length, 1);
    assert.equal(calls[0].grant, 'refresh_token');
    assert.equal(calls[0].status, 400, 'the provider refused the revoked refresh token');
    assert.equal(echo.sawPath(path), false);
    const at = await atProvider(jar, loc, loc.searchParams.get('redirect_uri'));
    assert.ok(at.loginPage, 'the provider asks for the password again');
  });

  // ---------------------------------------------------------------------------------------- B5

  h.test('B5: no Envoy logged a panic or a wasm failure', async () => {
    for (const [name, e] of Object.entries(envoys)) {
      assert.deepEqual(crashLines(e.log()), [], `Envoy "${name}"`);
      assert.ok(e.alive, `Envoy "${name}" is still running`);
    }
  });
});
