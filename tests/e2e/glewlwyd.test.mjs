// The login, validate, refresh and logout journey against a second, independent OpenID provider:
// glewlwyd (Debian's package, a C server), set up from scratch by tests/e2e/lib/glewlwyd.mjs, in
// front of real Envoys with the built module. The filter is configured as an operator would for
// a provider that is not Keycloak: only the `oidc.*` endpoint keys (public ones for the browser,
// the token and key-set endpoints by an in-mesh name through `cluster`), `client_id`,
// `client_secret`, `session_secret`, and in validate mode `authorized_parties`.
//
// What glewlwyd does differently from the Keycloak look-alike, and what each test pins down:
//   - its access tokens follow RFC 9068: `typ: at+jwt`, the client in `client_id`, no `azp`, and
//     `aud` = the granted scopes ("openid profile email"), which change with the user's consent;
//   - a refresh answers with a new access token only: no ID token, no new refresh token;
//   - its end-session page sends the browser back to `post_logout_redirect_uri` only when the
//     request carried a `state`; it accepts an expired ID token as the hint.
//
// glewlwyd missing is a failure, never a skip (make setup installs it: apt-get install -y glewlwyd).
//
// One glewlwyd serves two plugin instances: `oidc` (access tokens live 300 s) and `short` (3 s,
// for the refresh tests). Three Envoys: `login` and `short` in login mode, `validate`. The HTTP
// tests stand in for the browser with the calls glewlwyd's login page makes (lib/glewlwyd.mjs);
// the last two tests use Debian's Chromium on glewlwyd's real login page (screenshots in
// tests/out/glewlwyd/chromium/).

import assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';

import {
  harness, request, requestWithJar, CookieJar, crashLines, freePort, sleep, decodeJwt, tamper,
  wasmExists, WASM_PATH, PAGE_HEADERS, API_HEADERS, setCookie, setCookies, isCleared, startLogin,
} from './lib/index.mjs';
import { CHROMIUM, launchChromium } from './lib/browser.mjs';
import {
  startGlewlwyd, glewlwydLogin, glewlwydEndSession, glewlwydTokens, glewlwydInstalled, glewlwydVersion,
  newClientSecret, INSTALL_HINT,
} from './lib/glewlwyd.mjs';

const skip = wasmExists() || process.env.E2E_REQUIRE_WASM === '1'
  ? false : `the wasm module is not built (${WASM_PATH}); run make build`;
const h = harness('glewlwyd');

const ALICE = { username: 'alice', password: 'alice-Passw0rd' };
// the browser's user: a user of her own, so that glewlwyd asks for her consent the first time
const BOB = { username: 'bob', password: 'bob-Passw0rd' };
const CLIENT_ID = 'productpage';
const CLIENT_SECRET = newClientSecret();
const OTHER_CLIENT = { clientId: 'ratings-ui', clientSecret: newClientSecret() };
const SHORT_TTL = 3; // seconds: access (and ID) tokens of the `short` plugin instance
// The in-mesh name of glewlwyd: the filter calls the token and key-set endpoints by it, through
// the cluster; Envoy's cluster of that name points at 127.0.0.1.
const INTERNAL_HOST = 'glewlwyd.idp.svc.cluster.local:4593';
const CLUSTER = 'outbound|4593||glewlwyd.idp.svc.cluster.local';

test('glewlwyd is installed (the second provider\'s suite needs it)', () => {
  assert.ok(glewlwydInstalled(), INSTALL_HINT);
});

const newSecret = () => crypto.randomBytes(32).toString('base64');

/** Wait until `ms` past the token's exp. */
async function waitPastExpiry(token, ms = 1200) {
  const { exp } = decodeJwt(token).payload;
  const wait = exp * 1000 - Date.now() + ms;
  if (wait > 0) await sleep(wait);
}

/** The values of one header as the echo service received them. */
function headerValues(record, name) {
  const out = [];
  for (let i = 0; i < record.rawHeaders.length; i += 2) {
    if (record.rawHeaders[i].toLowerCase() === name) out.push(record.rawHeaders[i + 1]);
  }
  return out;
}

const sessionSets = (res) => setCookies(res, /^access_token(_\d+)?$|^access_token_session(_\d+)?$/).filter((c) => !isCleared(c));

let seq = 0;
const uniquePath = (prefix = '/page') => `${prefix}/g${++seq}-${crypto.randomBytes(3).toString('hex')}`;

describe('a second provider: glewlwyd', { skip }, () => {
  let glew;
  let echo;
  const envoys = {};
  const ports = {};
  const url = (name, p = '') => `http://127.0.0.1:${ports[name]}${p}`;

  /** The filter's provider keys for one plugin instance, as an operator writes them. */
  function oidcKeys(plugin) {
    const ep = glew.endpoints(plugin);
    const internal = (u) => u.replace(glew.base, `http://${INTERNAL_HOST}`);
    return {
      issuer: ep.issuer,
      authorization_endpoint: ep.authorization_endpoint,
      end_session_endpoint: ep.end_session_endpoint,
      token_endpoint: internal(ep.token_endpoint),
      jwks_uri: internal(ep.jwks_uri),
    };
  }

  async function envoyFor(name, filterConfig) {
    const e = await h.startEnvoy({
      filterConfig,
      providerPort: glew.port,
      echoPort: echo.port,
      port: ports[name],
      extraClusters: [{ name: CLUSTER, port: glew.port }],
    });
    if (e.exited) throw new Error(`Envoy "${name}" refused the configuration (exit ${e.code}):\n${e.log().slice(-4000)}`);
    envoys[name] = e;
    return e;
  }

  const loginConfig = (plugin, extra = {}) => ({
    mode: 'login',
    oidc: oidcKeys(plugin),
    cluster: CLUSTER,
    client_id: CLIENT_ID,
    client_secret: CLIENT_SECRET,
    session_secret: newSecret(),
    ...extra,
  });

  before(async () => {
    if (!glewlwydInstalled()) throw new Error(INSTALL_HINT);
    for (const name of ['login', 'short', 'validate', 'discovered']) ports[name] = await freePort();
    const redirectUris = ['login', 'short', 'discovered'].map((n) => url(n, '/callback'));
    const postLogoutRedirectUris = ['login', 'short', 'discovered'].map((n) => url(n, '/'));
    glew = await startGlewlwyd({
      outDir: `${h.outDir}/glewlwyd`,
      plugins: [{ name: 'oidc', accessTokenTtl: 300 }, { name: 'short', accessTokenTtl: SHORT_TTL }],
      users: [{ ...ALICE, name: 'Alice Liddell', email: 'alice@example.com' }, { ...BOB, name: 'Bob' }],
      clients: [
        { clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, redirectUris, postLogoutRedirectUris },
        { ...OTHER_CLIENT, redirectUris: ['http://127.0.0.1:9/ratings/callback'] },
      ],
    });
    h.defer(() => glew.stop());
    process.stderr.write(`# glewlwyd ${glewlwydVersion()} on ${glew.base} (pid ${glew.pid}), files in ${glew.outDir}\n`);
    echo = await h.startEcho();
    await Promise.all([
      envoyFor('login', loginConfig('oidc')),
      // clock_skew_seconds 0: a test knob, so that a 3 s token is expired 3 s later
      envoyFor('short', loginConfig('short', { clock_skew_seconds: 0 })),
      // issue 13: only the discovery document's URL (as the pod reaches it) and the issuer: every
      // endpoint comes from the document, the pod's moved to the in-mesh name
      envoyFor('discovered', {
        mode: 'login',
        oidc: {
          issuer: oidcKeys('oidc').issuer,
          discovery_url: `http://${INTERNAL_HOST}${new URL(`${glew.issuers.oidc}/.well-known/openid-configuration`).pathname}`,
          internal_origin: `http://${INTERNAL_HOST}`,
        },
        cluster: CLUSTER,
        client_id: CLIENT_ID,
        client_secret: CLIENT_SECRET,
        session_secret: newSecret(),
      }),
      envoyFor('validate', {
        mode: 'validate',
        oidc: { issuer: oidcKeys('oidc').issuer, jwks_uri: oidcKeys('oidc').jwks_uri },
        cluster: CLUSTER,
        authorized_parties: [CLIENT_ID],
      }),
    ]);
    await sleep(800); // every Envoy fetches glewlwyd's key set at start
  });
  after(() => h.cleanup());

  /** glewlwyd's log and the Envoys' on failure: the harness prints Envoys; add glewlwyd's. */
  function gtest(name, fn) {
    return h.test(name, async (th, t) => {
      try {
        await fn(th, t);
      } catch (err) {
        process.stderr.write(`\n----- glewlwyd log ${glew?.logFile} -----\n${glew?.log().split('\n').slice(-60).join('\n')}\n`);
        throw err;
      }
    });
  }

  /** The whole login through the filter of Envoy `name`, from `path`, through glewlwyd's page. */
  async function login(name, path, { jar = new CookieJar(), consent } = {}) {
    const start = await startLogin(jar, url(name, path));
    assert.equal(start.status, 302, `a 302 to glewlwyd for ${path}: ${start.res.body.slice(0, 300)}`);
    const redirectUri = start.params.redirect_uri;
    const at = await glewlwydLogin(jar, start.authUrl, redirectUri, { ...ALICE, consent });
    const callback = await requestWithJar(jar, at.redirect, { headers: PAGE_HEADERS });
    const out = { jar, start, at, callback, redirectUri };
    if (callback.status === 302 && callback.headers.location) {
      out.final = await requestWithJar(jar, new URL(callback.headers.location, url(name)).href, { headers: PAGE_HEADERS });
    }
    return out;
  }

  // ------------------------------------------------------------------------------ the provider

  gtest('glewlwyd publishes the endpoints the filter is configured with (discovery)', async () => {
    const ep = glew.endpoints('oidc');
    const res = await request(ep.discovery);
    assert.equal(res.status, 200, res.body);
    const d = JSON.parse(res.body);
    assert.equal(d.issuer, ep.issuer);
    for (const k of ['authorization_endpoint', 'token_endpoint', 'jwks_uri', 'end_session_endpoint']) {
      assert.equal(d[k], ep[k], k);
    }
    assert.ok(d.code_challenge_methods_supported.includes('S256'), 'PKCE S256');
    assert.equal(d.require_code_challenge, true, 'glewlwyd requires PKCE of every client here');
    assert.ok(d.id_token_signing_alg_values_supported.includes('RS256'));
    assert.ok(d.token_endpoint_auth_methods_supported.includes('client_secret_basic'));
    const jwks = JSON.parse((await request(ep.jwks_uri)).body);
    assert.deepEqual(jwks.keys.map((k) => [k.kty, k.alg]), [['RSA', 'RS256']]);
    assert.ok(jwks.keys.every((k) => k.d === undefined), 'only public keys');
  });

  // ------------------------------------------------------------------------------ L1 L2 L4

  gtest('login: page → glewlwyd\'s login page → password and consent → callback → the original page with the bearer token', async () => {
    const path = `${uniquePath('/productpage')}?u=normal`;
    const jar = new CookieJar();
    const start = await startLogin(jar, url('login', path));
    assert.equal(start.status, 302, start.res.body);
    assert.equal(`${start.authUrl.origin}${start.authUrl.pathname}`, glew.endpoints('oidc').authorization_endpoint);
    const p = start.params;
    assert.equal(p.response_type, 'code');
    assert.equal(p.client_id, CLIENT_ID);
    assert.equal(p.redirect_uri, url('login', '/callback'));
    assert.equal(p.scope, 'openid profile email');
    assert.equal(p.code_challenge_method, 'S256');
    for (const k of ['state', 'nonce', 'code_challenge']) assert.ok(p[k]?.length >= 22, k);

    const at = await glewlwydLogin(jar, start.authUrl, p.redirect_uri, ALICE);
    assert.ok(at.sawLogin, 'glewlwyd asked for the password');
    assert.equal(at.loginUrl.pathname, '/login.html');
    const page = await request(at.loginUrl.href);
    assert.equal(page.status, 200, 'glewlwyd serves its login page');
    assert.match(page.body, /<title>[^<]*Glewlwyd[^<]*<\/title>/i);
    const cb = new URL(at.redirect);
    assert.equal(`${cb.origin}${cb.pathname}`, url('login', '/callback'));
    assert.equal(cb.searchParams.get('state'), p.state);

    const callback = await requestWithJar(jar, at.redirect, { headers: PAGE_HEADERS });
    assert.equal(callback.status, 302, `the callback: ${callback.status} ${callback.body.slice(0, 300)}`);
    assert.equal(callback.headers.location, path, 'back to the original path with its query');
    const access = setCookie(callback, 'access_token');
    assert.ok(access && !isCleared(access), 'access_token cookie set');
    const { header, payload } = decodeJwt(access.value);
    // what makes glewlwyd's token different from Keycloak's
    assert.equal(header.typ, 'at+jwt');
    assert.equal(header.alg, 'RS256');
    assert.equal(payload.iss, glew.issuers.oidc);
    assert.equal(payload.client_id, CLIENT_ID, 'the client, RFC 9068');
    assert.equal(payload.azp, undefined, 'no azp');
    assert.equal(payload.aud, 'openid profile email', 'aud is the granted scope list');
    assert.ok(setCookie(callback, 'access_token_session'), 'the sealed session cookie');

    const final = await requestWithJar(jar, url('login', path), { headers: PAGE_HEADERS });
    assert.equal(final.status, 200, final.body.slice(0, 300));
    const seen = echo.last(path);
    assert.ok(seen, 'the service saw the original path');
    assert.deepEqual(headerValues(seen, 'authorization'), [`Bearer ${access.value}`]);

    // an API call with the same session: the token passes as is
    const apiPath = uniquePath('/api');
    const api = await requestWithJar(jar, url('login', apiPath), { headers: API_HEADERS });
    assert.equal(api.status, 200, api.body);
    // a second login in the same browser: glewlwyd's session is alive, no password asked
    const again = await login('login', uniquePath('/again'), { jar: new CookieJar() });
    assert.equal(again.callback.status, 302);
  });

  gtest('issue 13: endpoints from discovery only — login, the bearer at the service, logout to glewlwyd\'s end-session', async () => {
    const log = envoys.discovered.log();
    assert.match(log, /endpoints from http:\/\/glewlwyd[^ ]*: keys from http:\/\/glewlwyd\.idp\.svc\.cluster\.local:4593\//, 'the document was read through the cluster');
    const path = uniquePath('/discovered');
    const jar = new CookieJar();
    const start = await startLogin(jar, url('discovered', path));
    assert.equal(start.status, 302, start.res.body);
    assert.equal(`${start.authUrl.origin}${start.authUrl.pathname}`, glew.endpoints('oidc').authorization_endpoint, 'the browser goes to the published URL');
    const at = await glewlwydLogin(jar, start.authUrl, start.params.redirect_uri, ALICE);
    const callback = await requestWithJar(jar, at.redirect, { headers: PAGE_HEADERS });
    assert.equal(callback.status, 302, `the callback: ${callback.status} ${callback.body.slice(0, 300)}`);
    const final = await requestWithJar(jar, url('discovered', path), { headers: PAGE_HEADERS });
    assert.equal(final.status, 200, final.body.slice(0, 300));
    const out = await requestWithJar(jar, url('discovered', '/logout'), { headers: PAGE_HEADERS });
    assert.equal(out.status, 302);
    const loc = new URL(out.headers.location);
    assert.equal(`${loc.origin}${loc.pathname}`, glew.endpoints('oidc').end_session_endpoint);
  });

  gtest('login: a user who consents to fewer scopes (openid only) still logs in: aud changes, client_id does not', async () => {
    const path = uniquePath('/fewer-scopes');
    const r = await login('login', path, { consent: ['openid'] });
    assert.equal(r.callback.status, 302, `the callback: ${r.callback.status} ${r.callback.body.slice(0, 300)}`);
    const token = setCookie(r.callback, 'access_token').value;
    const { payload } = decodeJwt(token);
    assert.equal(payload.aud, 'openid');
    assert.equal(payload.client_id, CLIENT_ID);
    assert.equal(r.final.status, 200);
  });

  // ------------------------------------------------------------------------------ validate

  gtest('validate: glewlwyd\'s access token passes with authorized_parties; other tokens get 401', async () => {
    const ep = glew.endpoints('oidc');
    const mine = await glewlwydTokens(ep, {
      clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, redirectUri: url('login', '/callback'), ...ALICE,
    });
    assert.equal(mine.status, 200, mine.body);
    const token = mine.tokens.access_token;

    const okPath = uniquePath('/details');
    const ok = await request(url('validate', okPath), { headers: { ...API_HEADERS, authorization: `Bearer ${token}` } });
    assert.equal(ok.status, 200, `glewlwyd's access token: ${ok.status} ${ok.body}`);
    assert.deepEqual(headerValues(echo.last(okPath), 'authorization'), [`Bearer ${token}`]);
    // the cookie works as well as the header (V1)
    const viaCookie = await request(url('validate', uniquePath('/details')), { headers: { cookie: `access_token=${token}` } });
    assert.equal(viaCookie.status, 200, viaCookie.body);

    const refused = async (what, headers, invalidToken = true) => {
      const p = uniquePath('/details');
      const res = await request(url('validate', p), { headers: { ...API_HEADERS, ...headers } });
      assert.equal(res.status, 401, `${what}: ${res.status} ${res.body}`);
      const www = String(res.headers['www-authenticate'] ?? '');
      assert.match(www, /^Bearer\b/, what);
      if (invalidToken) assert.match(www, /error="invalid_token"/, what);
      assert.equal(echo.sawPath(p), false, `${what}: never reached the service`);
      return res;
    };
    await refused('no token', {}, false);
    await refused('a tampered token', { authorization: `Bearer ${tamper(token, (c) => { c.sub = 'mallory'; })}` });
    await refused('the ID token', { authorization: `Bearer ${mine.tokens.id_token}` });
    await refused('the refresh token', { authorization: `Bearer ${mine.tokens.refresh_token}` });

    // the same user's token for another client: wrong authorized party
    const other = await glewlwydTokens(ep, {
      ...OTHER_CLIENT, redirectUri: 'http://127.0.0.1:9/ratings/callback', ...ALICE,
    });
    assert.equal(other.status, 200, other.body);
    assert.equal(decodeJwt(other.tokens.access_token).payload.client_id, OTHER_CLIENT.clientId);
    await refused('a token for another client', { authorization: `Bearer ${other.tokens.access_token}` });

    // a token of the other plugin instance: another issuer, other keys
    const short = await glewlwydTokens(glew.endpoints('short'), {
      clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, redirectUri: url('short', '/callback'), ...ALICE,
    });
    assert.equal(short.status, 200, short.body);
    await refused('a token of another issuer', { authorization: `Bearer ${short.tokens.access_token}` });
  });

  // ------------------------------------------------------------------------------ L5

  const refreshCalls = () => (glew.log().match(/Plugin 'short' - Access token generated/g) ?? []).length
    - (glew.log().match(/Plugin 'short' - Refresh token generated/g) ?? []).length;

  /** Wait past the access token's expiry, then a page request: the filter refreshes (L5). */
  async function refreshRound(jar, what) {
    const old = jar.get(url('short'), 'access_token');
    await waitPastExpiry(old);
    const path = `${uniquePath(`/${what}`)}?q=1`;
    const calls = refreshCalls();
    const res = await requestWithJar(jar, url('short', path), { headers: PAGE_HEADERS });
    assert.equal(res.status, 200, `${what}: ${res.status} ${res.headers.location ?? res.body.slice(0, 300)} `
      + `(refresh calls glewlwyd answered for it: ${refreshCalls() - calls})`);
    const fresh = setCookie(res, 'access_token');
    assert.ok(fresh && !isCleared(fresh), `${what}: a new access_token cookie`);
    assert.notEqual(fresh.value, old);
    assert.ok(decodeJwt(fresh.value).payload.exp > decodeJwt(old).payload.exp);
    assert.equal(decodeJwt(fresh.value).payload.client_id, CLIENT_ID);
    assert.deepEqual(headerValues(echo.last(path), 'authorization'), [`Bearer ${fresh.value}`], `${what}: the service got the new token`);
    assert.ok(setCookie(res, 'access_token_session'), `${what}: the session cookie is written again`);
    return res;
  }

  gtest('refresh: glewlwyd answers with an access token only (no ID token, no new refresh token); the same request goes on', async () => {
    const r = await login('short', uniquePath('/refresh-start'));
    assert.equal(r.callback.status, 302, `the callback: ${r.callback.status} ${r.callback.body.slice(0, 300)}`);
    const before = refreshCalls();
    await refreshRound(r.jar, 'refreshed');
    assert.equal(refreshCalls() - before, 1, 'one refresh at glewlwyd');
  });

  gtest('refresh twice with the same refresh token (glewlwyd does not rotate it), the second within 30 s of the first', async () => {
    const r = await login('short', uniquePath('/refresh-twice'));
    assert.equal(r.callback.status, 302);
    const before = refreshCalls();
    await refreshRound(r.jar, 'first-refresh');
    await refreshRound(r.jar, 'second-refresh');
    assert.equal(refreshCalls() - before, 2, 'two refreshes at glewlwyd');
  });

  gtest('refresh refused: after logging out at glewlwyd its tokens are revoked; cookies cleared, login again', async () => {
    const r = await login('short', uniquePath('/revoked-start'));
    assert.equal(r.callback.status, 302);
    const { jar } = r;
    const idToken = (await glewlwydTokens(glew.endpoints('short'), {
      clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, redirectUri: url('short', '/callback'), ...ALICE, jar,
    })).tokens.id_token;
    // the user ends the glewlwyd session elsewhere (its own page), with state so it comes back
    const es = new URL(glew.endpoints('short').end_session_endpoint);
    es.searchParams.set('id_token_hint', idToken);
    const out = await glewlwydEndSession(jar, es);
    assert.equal(out.prompt, 'end_session');
    assert.ok(out.loggedOut);
    await waitPastExpiry(jar.get(url('short'), 'access_token'));
    const path = uniquePath('/revoked');
    const res = await requestWithJar(jar, url('short', path), { headers: PAGE_HEADERS });
    assert.equal(res.status, 302, `${res.status} ${res.body.slice(0, 300)}`);
    assert.ok(res.headers.location.startsWith(glew.endpoints('short').authorization_endpoint), `to glewlwyd again: ${res.headers.location}`);
    for (const name of ['access_token', 'access_token_session']) assert.ok(isCleared(setCookie(res, name)), `${name} cleared`);
    assert.equal(echo.sawPath(path), false);
  });

  // ------------------------------------------------------------------------------ L6

  /** Log in, then /logout: the filter's answer and the end-session URL. */
  async function loginThenLogout(name) {
    const r = await login(name, uniquePath('/before-logout'));
    assert.equal(r.callback.status, 302, `the callback: ${r.callback.status} ${r.callback.body.slice(0, 300)}`);
    const res = await requestWithJar(r.jar, url(name, '/logout'), { headers: PAGE_HEADERS });
    assert.equal(res.status, 302, res.body);
    return { ...r, res, loc: new URL(res.headers.location) };
  }

  gtest('logout: cookies cleared; end-session with id_token_hint, post_logout_redirect_uri and client_id; glewlwyd ends its session', async () => {
    const { res, loc, jar } = await loginThenLogout('login');
    assert.equal(`${loc.origin}${loc.pathname}`, glew.endpoints('oidc').end_session_endpoint);
    const hint = loc.searchParams.get('id_token_hint');
    assert.ok(hint, 'id_token_hint');
    assert.equal(decodeJwt(hint).payload.aud, CLIENT_ID);
    assert.equal(decodeJwt(hint).payload.iss, glew.issuers.oidc);
    assert.equal(loc.searchParams.get('post_logout_redirect_uri'), url('login', '/'));
    assert.equal(loc.searchParams.get('client_id'), CLIENT_ID);
    for (const name of ['access_token', 'access_token_session']) {
      assert.equal(setCookie(res, name)?.attrs['max-age'], '0', `${name} cleared`);
    }
    assert.deepEqual(sessionSets(res), []);

    const out = await glewlwydEndSession(jar, loc);
    assert.equal(out.prompt, 'end_session', 'glewlwyd recognised the ID token hint');
    assert.ok(out.loggedOut);
    // back on the site: no session, and glewlwyd asks for the password again
    const again = await startLogin(jar, url('login', '/'));
    assert.equal(again.status, 302);
    const at = await glewlwydLogin(jar, again.authUrl, again.params.redirect_uri, ALICE);
    assert.ok(at.sawLogin, 'glewlwyd asks for the password again');
  });

  gtest('logout carries state (L6+), so glewlwyd sends the browser back to post_logout_redirect_uri', async () => {
    const { loc, jar } = await loginThenLogout('login');
    const state = loc.searchParams.get('state');
    const out = await glewlwydEndSession(jar, loc);
    assert.ok(out.loggedOut, 'glewlwyd ended its session');
    assert.ok(state, `the end-session redirect has a state (glewlwyd returns only then): ${loc.href}`);
    assert.equal(out.stayed, false, 'the browser is sent back to the site');
    const back = new URL(out.redirect);
    assert.equal(`${back.origin}${back.pathname}`, url('login', '/'));
    assert.equal(back.searchParams.get('state'), state, 'with the same state');
  });

  gtest('logout after a refresh: the ID token hint has expired (no new one on refresh); glewlwyd still ends the session', async () => {
    const r = await login('short', uniquePath('/refresh-then-logout'));
    assert.equal(r.callback.status, 302);
    const { jar } = r;
    await waitPastExpiry(jar.get(url('short'), 'access_token'));
    const page = await requestWithJar(jar, url('short', uniquePath('/refreshed')), { headers: PAGE_HEADERS });
    assert.equal(page.status, 200, 'refreshed');
    const res = await requestWithJar(jar, url('short', '/logout'), { headers: PAGE_HEADERS });
    assert.equal(res.status, 302);
    const loc = new URL(res.headers.location);
    const hint = loc.searchParams.get('id_token_hint');
    assert.ok(hint, 'the hint is still sent');
    assert.ok(decodeJwt(hint).payload.exp * 1000 < Date.now(), 'and it has expired');
    const out = await glewlwydEndSession(jar, loc);
    assert.equal(out.prompt, 'end_session', 'glewlwyd accepted the expired hint');
    assert.ok(out.loggedOut);
  });

  // ------------------------------------------------------------------------------ Chromium

  describe('in a real browser (Chromium) on glewlwyd\'s own login page', () => {
    let browser;
    let context;
    let page;
    let shot = 0;
    const shots = () => path.join(h.outDir, 'chromium');

    async function screenshot(name) {
      shot += 1;
      await page.screenshot({ path: path.join(shots(), `${String(shot).padStart(2, '0')}-${name}.png`), fullPage: true });
    }

    /** A browser test: on failure, a screenshot and the page's HTML next to the others. */
    function btest(name, fn) {
      return gtest(name, async (th, t) => {
        try {
          await fn(th, t);
        } catch (err) {
          await page?.screenshot({ path: path.join(shots(), 'zz-failure.png'), fullPage: true }).catch(() => {});
          if (page) fs.writeFileSync(path.join(shots(), 'zz-failure.html'), await page.content().catch(() => ''));
          throw err;
        }
      });
    }

    before(async () => {
      if (!fs.existsSync(CHROMIUM)) throw new Error(`Chromium is not installed at ${CHROMIUM}: apt-get install -y chromium chromium-driver`);
      fs.mkdirSync(shots(), { recursive: true });
      browser = await launchChromium({ viewport: { width: 1000, height: 800 } });
      ({ context, page } = browser);
    });
    after(async () => {
      await browser?.close();
    });

    btest('Chromium: the page → glewlwyd\'s login page → password → consent → Continue → back on the page', async () => {
      await page.goto(url('login', '/productpage'));
      await page.waitForSelector('#username', { timeout: 10000 });
      assert.ok(page.url().startsWith(`${glew.loginPage}?`), `on glewlwyd's login page: ${page.url()}`);
      await screenshot('login-page');
      await page.fill('#username', BOB.username);
      await page.fill('#password', BOB.password);
      await page.click('#loginbut');
      // consent: glewlwyd lists the scopes the filter asked for
      await page.waitForSelector('#grant-profile', { timeout: 10000 });
      assert.ok(await page.isVisible('#grant-email'));
      await page.check('#grant-profile');
      await page.check('#grant-email');
      await screenshot('consent');
      await page.click('button:has-text("Grant access")');
      await page.waitForSelector('button:has-text("Continue")', { timeout: 10000 });
      await Promise.all([
        page.waitForURL(url('login', '/productpage'), { timeout: 10000 }),
        page.click('button:has-text("Continue")'),
      ]);
      await page.waitForSelector('#user');
      await screenshot('logged-in');
      const cookies = (await context.cookies(url('login'))).filter((c) => c.name.startsWith('access_token'));
      const access = cookies.find((c) => c.name === 'access_token');
      assert.ok(access, 'the access_token cookie is set');
      assert.equal(access.httpOnly, true);
      assert.equal(decodeJwt(access.value).payload.client_id, CLIENT_ID);
      assert.equal(echo.last('/productpage')?.headers.authorization, `Bearer ${access.value}`, 'the service got the bearer token');
    });

    btest('Chromium: the logout link → glewlwyd\'s end-session page → "Logout" → back on the site', async () => {
      await page.goto(url('login', '/productpage'));
      await page.waitForSelector('#logout');
      await page.click('#logout');
      await page.waitForSelector('button.btn-danger:has-text("Logout")', { timeout: 10000 });
      assert.ok(page.url().startsWith(`${glew.loginPage}?`), `on glewlwyd's end-session page: ${page.url()}`);
      assert.equal(new URL(page.url()).searchParams.get('prompt'), 'end_session', 'glewlwyd recognised the session');
      await screenshot('end-session');
      const cookies = (await context.cookies(url('login'))).filter((c) => c.name.startsWith('access_token') && !c.name.includes('_tx_'));
      assert.deepEqual(cookies.map((c) => c.name), [], 'the filter cleared its cookies');
      const backToSite = page.waitForRequest((r) => r.url().startsWith(url('login', '/')), { timeout: 8000 }).catch(() => undefined);
      await page.click('button.btn-danger:has-text("Logout")');
      const back = await backToSite;
      await sleep(300);
      await screenshot('after-logout');
      assert.ok(back, `glewlwyd sends the browser back to the site (it does so only when the end-session request has a state); the browser is at ${page.url()}: ${(await page.textContent('body')).replace(/\s+/g, ' ').slice(0, 120)}`);
      assert.ok(new URL(back.url()).searchParams.get('state'), `back with the state: ${back.url()}`);
    });
  });

  // ------------------------------------------------------------------------------ B5

  gtest('B5: no Envoy logged a panic or a wasm failure; glewlwyd is still running', async () => {
    for (const [name, e] of Object.entries(envoys)) {
      assert.deepEqual(crashLines(e.log()), [], `Envoy "${name}"`);
      assert.ok(e.alive, `Envoy "${name}" is still running`);
    }
    assert.ok(glew.alive, 'glewlwyd is still running');
  });
});
