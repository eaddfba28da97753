// The harness itself: the Keycloak look-alike and a plain Envoy (no wasm filter needed).

import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { after, before, describe } from 'node:test';

import {
  harness, request, requestWithJar, startAuthorization, submitLogin, loginWithPassword, exchangeCode,
  refreshTokens, endpoints, decodeJwt, generateKeys, generateKeysAsync, withKeys, signToken, accessTokenClaims,
  KEYCLOAK_CLUSTER, CookieJar, ALICE,
} from './lib/index.mjs';

const h = harness('harness');
const REDIRECT = 'http://127.0.0.1:9/callback';
const POST_LOGOUT = 'http://127.0.0.1:9/';

describe('Keycloak look-alike provider', () => {
  let provider;
  let keys;

  before(async () => {
    keys = generateKeys();
    provider = await h.startProvider({ keys, redirectUris: [REDIRECT], postLogoutRedirectUris: [POST_LOGOUT] });
  });
  after(() => h.cleanup());

  h.test('discovery document uses Keycloak paths', async () => {
    const res = await request(endpoints(provider.issuer).discovery);
    assert.equal(res.status, 200);
    const d = JSON.parse(res.body);
    const base = `http://127.0.0.1:${provider.port}/realms/dev`;
    assert.equal(d.issuer, base);
    assert.equal(d.authorization_endpoint, `${base}/protocol/openid-connect/auth`);
    assert.equal(d.token_endpoint, `${base}/protocol/openid-connect/token`);
    assert.equal(d.jwks_uri, `${base}/protocol/openid-connect/certs`);
    assert.equal(d.end_session_endpoint, `${base}/protocol/openid-connect/logout`);
    assert.equal(d.userinfo_endpoint, `${base}/protocol/openid-connect/userinfo`);
    assert.equal(d.introspection_endpoint, `${base}/protocol/openid-connect/token/introspect`);
    assert.deepEqual(d.code_challenge_methods_supported, ['S256']);
    assert.ok(d.id_token_signing_alg_values_supported.includes('RS256'));
  });

  h.test('discovery is the same whatever Host the caller used (internal name)', async () => {
    const res = await request(endpoints(provider.issuer).discovery, { headers: { host: 'keycloak.keycloak.svc.cluster.local:8080' } });
    assert.equal(JSON.parse(res.body).issuer, provider.issuer);
    const seen = await provider.waitForRequests((r) => r.path.endsWith('/openid-configuration') && r.host === 'keycloak.keycloak.svc.cluster.local:8080');
    assert.equal(seen.length, 1, 'the request log records the Host the caller used');
  });

  h.test('JWKS: enc key first, then the RS256 signing key with a kid', async () => {
    const res = await request(endpoints(provider.issuer).jwks);
    assert.equal(res.status, 200);
    const { keys: published } = JSON.parse(res.body);
    assert.equal(published.length, 2);
    assert.deepEqual(
      published.map((k) => [k.kty, k.use, k.alg, k.kid]),
      [['RSA', 'enc', 'RSA-OAEP', keys.enc.kid], ['RSA', 'sig', 'RS256', keys.signing.kid]],
    );
    for (const k of published) {
      assert.equal(k.d, undefined, 'no private members');
      assert.ok(k.n && k.e);
    }
  });

  h.test('login form: wrong password shows the form again with an error, right password logs in', async () => {
    const flow = await startAuthorization({ issuer: provider.issuer, redirectUri: REDIRECT });
    assert.ok(flow.loginPage, 'a login page');
    assert.equal(flow.loginPage.status, 200);
    assert.equal(flow.loginPage.form.title, 'Sign in to dev');
    assert.ok(flow.loginPage.form.hasUsername && flow.loginPage.form.hasPassword && flow.loginPage.form.hasSubmit);
    const bad = await submitLogin(flow, { username: 'alice', password: 'wrong' }, REDIRECT);
    assert.ok(bad.loginPage, 'form shown again');
    assert.equal(bad.loginPage.form.error, 'Invalid username or password.');
    const good = await submitLogin(flow, ALICE, REDIRECT);
    assert.ok(good.redirect?.startsWith(`${REDIRECT}?`), good.redirect);
    const q = new URL(good.redirect).searchParams;
    assert.equal(q.get('state'), flow.state);
    assert.equal(q.get('iss'), provider.issuer);
    assert.ok(q.get('code'));
  });

  h.test('tokens look like Keycloak\'s; refresh works; userinfo and introspection', async () => {
    const r = await loginWithPassword({ issuer: provider.issuer, redirectUri: REDIRECT });
    assert.equal(r.tokens.token_type, 'Bearer');
    assert.equal(r.tokens.expires_in, 300);
    assert.ok(r.tokens.refresh_token);
    assert.equal(r.access.header.alg, 'RS256');
    assert.equal(r.access.header.typ, 'JWT');
    assert.equal(r.access.header.kid, keys.signing.kid);
    const at = r.access.payload;
    assert.equal(at.iss, provider.issuer);
    assert.equal(at.aud, 'account');
    assert.equal(at.azp, 'productpage');
    assert.equal(at.typ, 'Bearer');
    assert.equal(at.preferred_username, 'alice');
    assert.equal(at.given_name, 'Alice');
    assert.equal(at.family_name, 'Liddell');
    assert.equal(at.email, 'alice@example.com');
    assert.ok(at.realm_access.roles.includes('user'));
    assert.equal(at.scope, 'openid profile email');
    assert.ok(at.sid && at.jti && at.sub);
    assert.equal(at.exp - at.iat, 300);
    const id = r.id.payload;
    assert.equal(r.id.header.alg, 'RS256');
    assert.equal(id.aud, 'productpage');
    assert.equal(id.azp, 'productpage');
    assert.equal(id.nonce, r.flow.nonce);
    assert.equal(id.preferred_username, 'alice');
    assert.equal(id.given_name, 'Alice');
    assert.equal(id.sid, at.sid);

    const rf = await refreshTokens({ issuer: provider.issuer, refreshToken: r.tokens.refresh_token });
    assert.equal(rf.status, 200, JSON.stringify(rf.json));
    const at2 = decodeJwt(rf.json.access_token).payload;
    assert.notEqual(at2.jti, at.jti);
    assert.equal(at2.preferred_username, 'alice');
    assert.ok(rf.json.id_token);

    const ui = await request(endpoints(provider.issuer).userinfo, { headers: { authorization: `Bearer ${rf.json.access_token}` } });
    assert.equal(ui.status, 200);
    assert.equal(JSON.parse(ui.body).preferred_username, 'alice');

    const basic = `Basic ${Buffer.from('productpage:productpage-secret').toString('base64')}`;
    const intro = await request(endpoints(provider.issuer).introspection, {
      method: 'POST', headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded' }, body: `token=${rf.json.access_token}`,
    });
    assert.equal(JSON.parse(intro.body).active, true);
  });

  h.test('client authentication: basic, post, wrong secret; PKCE is required', async () => {
    const viaPost = await loginWithPassword({ issuer: provider.issuer, redirectUri: REDIRECT, clientId: 'productpage-post', authMethod: 'post' });
    assert.equal(viaPost.access.payload.azp, 'productpage-post');

    const flow = await startAuthorization({ issuer: provider.issuer, redirectUri: REDIRECT });
    const { redirect } = await submitLogin(flow, ALICE, REDIRECT);
    const code = new URL(redirect).searchParams.get('code');
    const wrong = await exchangeCode({ issuer: provider.issuer, code, redirectUri: REDIRECT, verifier: flow.verifier, clientSecret: 'nope' });
    assert.equal(wrong.status, 401);
    assert.equal(wrong.json.error, 'invalid_client');
    const noVerifier = await exchangeCode({ issuer: provider.issuer, code, redirectUri: REDIRECT });
    assert.equal(noVerifier.status, 400);

    const noPkce = await request(`${endpoints(provider.issuer).authorization}?${new URLSearchParams({
      response_type: 'code', client_id: 'productpage', redirect_uri: REDIRECT, scope: 'openid', state: 's',
    })}`);
    assert.equal(noPkce.status, 303);
    assert.match(noPkce.headers.location, /error=invalid_request/);
  });

  h.test('logout with id_token_hint: no click, redirect, session over, refresh token dead', async () => {
    const r = await loginWithPassword({ issuer: provider.issuer, redirectUri: REDIRECT });
    const sso = await startAuthorization({ issuer: provider.issuer, redirectUri: REDIRECT, jar: r.jar });
    assert.ok(sso.redirect, 'while the session lives, no password is asked');

    const lo = await requestWithJar(r.jar, `${endpoints(provider.issuer).endSession}?${new URLSearchParams({
      id_token_hint: r.tokens.id_token, post_logout_redirect_uri: POST_LOGOUT, client_id: 'productpage', state: 'xyz',
    })}`);
    assert.equal(lo.status, 302);
    assert.equal(lo.headers.location, `${POST_LOGOUT}?state=xyz`);

    const again = await startAuthorization({ issuer: provider.issuer, redirectUri: REDIRECT, jar: r.jar });
    assert.ok(again.loginPage, 'the password is asked again');
    const rf = await refreshTokens({ issuer: provider.issuer, refreshToken: r.tokens.refresh_token });
    assert.equal(rf.status, 400);
    assert.equal(rf.json.error, 'invalid_grant');
  });

  h.test('restart with a new key: new kid published and used, sessions kept', async () => {
    // Each step in the provider's log with its time: this test once stopped, in CI only,
    // between the login's last redirect and the restart; a recurrence says where.
    const step = (what) => fs.appendFileSync(provider.logFile, `----- test: ${what} (${new Date().toISOString()})\n`);
    step('generating the new keys');
    const fresh = await generateKeysAsync();
    step('logging in');
    const r = await loginWithPassword({ issuer: provider.issuer, redirectUri: REDIRECT });
    step('logged in; restarting');
    const rotated = withKeys(fresh.enc, [fresh.signing, keys.signing]);
    await provider.restart({ keys: rotated });
    step('restarted');
    const res = await request(endpoints(provider.issuer).jwks);
    const kids = JSON.parse(res.body).keys.map((k) => k.kid);
    assert.deepEqual(kids, [rotated.enc.kid, rotated.signing.kid, keys.signing.kid]);
    const rf = await refreshTokens({ issuer: provider.issuer, refreshToken: r.tokens.refresh_token });
    assert.equal(rf.status, 200, 'the refresh token survives the restart');
    assert.equal(decodeJwt(rf.json.access_token).header.kid, rotated.signing.kid);
    keys = rotated;
  });

  h.test('test-signed tokens verify against the published keys', async () => {
    const { createLocalJWKSet, jwtVerify } = await import('jose');
    const token = await signToken(accessTokenClaims({ issuer: provider.issuer }), { key: keys.signing });
    const jwks = JSON.parse((await request(endpoints(provider.issuer).jwks)).body);
    const { payload } = await jwtVerify(token, createLocalJWKSet(jwks), { issuer: provider.issuer });
    assert.equal(payload.preferred_username, 'alice');
  });
});

describe('plain Envoy (no wasm filter)', () => {
  const he = harness('harness-envoy');
  let echo;
  let envoy;

  before(async () => {
    echo = await he.startEcho();
    envoy = await he.startEnvoy({ filterConfig: null, providerPort: 1, echoPort: echo.port });
    assert.equal(envoy.exited, false);
  });
  after(() => he.cleanup());

  he.test('routes to the echo service', async () => {
    const res = await request(`${envoy.url}/hello?x=1`, { headers: { 'x-test': 'yes' } });
    assert.equal(res.status, 200);
    const body = JSON.parse(res.body);
    assert.equal(body.path, '/hello?x=1');
    assert.equal(body.headers['x-test'], 'yes');
    assert.equal(echo.last('/hello?x=1').headers['x-test'], 'yes');
  });

  he.test('HTML page shows x-user; /upstream-401 answers 401', async () => {
    const page = await request(`${envoy.url}/`, { headers: { accept: 'text/html', 'x-user': 'alice' } });
    assert.match(page.body, /<h1 id="user">Hello, alice<\/h1>/);
    assert.match(page.body, /href="\/logout"/);
    const denied = await request(`${envoy.url}/upstream-401/x`);
    assert.equal(denied.status, 401);
  });

  he.test('the Keycloak cluster has Istio\'s name', async () => {
    const clusters = await envoy.admin('/clusters');
    assert.ok(clusters.includes(`${KEYCLOAK_CLUSTER}::127.0.0.1:1`), clusters.slice(0, 2000));
  });

  he.test('a bootstrap Envoy cannot load is reported as exited', async (th) => {
    const bad = await th.startEnvoy({
      filterConfig: { mode: 'validate' }, wasmPath: '/nonexistent/mesh_oidc.wasm', providerPort: 1, echoPort: echo.port,
    });
    assert.equal(bad.exited, true);
    assert.notEqual(bad.code, 0);
    assert.match(bad.log(), /nonexistent|wasm/i);
  });

  he.test('cookie jar keeps hosts apart', () => {
    const jar = new CookieJar();
    jar.store('http://127.0.0.1:1/', { 'set-cookie': ['a=1; Path=/'] });
    assert.equal(jar.header('http://127.0.0.1:1/x'), 'a=1');
    assert.equal(jar.header('http://127.0.0.1:2/x'), '');
  });
});
