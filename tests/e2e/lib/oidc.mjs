// An OpenID Connect client for the tests: logs a user in through the provider's real login form
// (authorization code flow with PKCE, cookies handled by hand), exchanges codes, refreshes, logs out.

import * as crypto from 'node:crypto';

import { CookieJar, request, requestWithJar } from './http.mjs';

const b64url = (buf) => Buffer.from(buf).toString('base64url');
const unescapeHtml = (s) => s.replace(/&amp;/g, '&').replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>');

export const DEFAULT_CLIENT = { clientId: 'productpage', clientSecret: 'productpage-secret' };
export const ALICE = { username: 'alice', password: 'alice-password' };

/** Keycloak's endpoints for an issuer like http://127.0.0.1:PORT/realms/dev */
export function endpoints(issuer) {
  const p = `${issuer}/protocol/openid-connect`;
  return {
    discovery: `${issuer}/.well-known/openid-configuration`,
    authorization: `${p}/auth`,
    token: `${p}/token`,
    jwks: `${p}/certs`,
    endSession: `${p}/logout`,
    userinfo: `${p}/userinfo`,
    introspection: `${p}/token/introspect`,
    revocation: `${p}/revoke`,
  };
}

export function decodeJwt(token) {
  const [h, p] = token.split('.');
  return {
    header: JSON.parse(Buffer.from(h, 'base64url').toString('utf8')),
    payload: JSON.parse(Buffer.from(p, 'base64url').toString('utf8')),
  };
}

export function pkcePair() {
  const verifier = b64url(crypto.randomBytes(32));
  const challenge = b64url(crypto.createHash('sha256').update(verifier).digest());
  return { verifier, challenge };
}

/** Pull the login form (action + field names) out of a Keycloak-like login page. */
export function parseLoginForm(html) {
  const form = /<form[^>]*id="kc-form-login"[^>]*>/.exec(html);
  if (!form) return undefined;
  const action = /action="([^"]*)"/.exec(form[0]);
  return {
    action: action ? unescapeHtml(action[1]) : undefined,
    hasUsername: /id="username" [^>]*name="username"/.test(html),
    hasPassword: /id="password" [^>]*name="password"/.test(html),
    hasSubmit: /id="kc-login"/.test(html),
    error: (/class="kc-feedback-text"[^>]*>([^<]*)</.exec(html) ?? [])[1],
    title: (/<title>([^<]*)<\/title>/.exec(html) ?? [])[1],
  };
}

/**
 * Start an authorization request and walk to the login page (or straight to the redirect when
 * the provider session is still alive). Returns what a test needs to go on.
 */
export async function startAuthorization({
  issuer, clientId = DEFAULT_CLIENT.clientId, redirectUri, scope = 'openid profile email',
  jar = new CookieJar(), extraParams = {}, pkce = true,
}) {
  const ep = endpoints(issuer);
  const state = b64url(crypto.randomBytes(16));
  const nonce = b64url(crypto.randomBytes(16));
  const { verifier, challenge } = pkcePair();
  const params = new URLSearchParams({
    response_type: 'code', client_id: clientId, redirect_uri: redirectUri, scope, state, nonce,
    ...(pkce ? { code_challenge: challenge, code_challenge_method: 'S256' } : {}),
    ...extraParams,
  });
  let url = `${ep.authorization}?${params}`;
  for (let hop = 0; hop < 10; hop++) {
    const res = await requestWithJar(jar, url);
    if (res.status >= 300 && res.status < 400 && res.headers.location) {
      const next = new URL(res.headers.location, url).href;
      if (next.startsWith(redirectUri)) {
        return { jar, state, nonce, verifier, challenge, redirect: next, loginPage: undefined };
      }
      url = next;
      continue;
    }
    if (res.status === 200 && parseLoginForm(res.body)) {
      return { jar, state, nonce, verifier, challenge, loginPage: { url, ...res, form: parseLoginForm(res.body) } };
    }
    throw new Error(`authorization request ended with ${res.status}: ${res.body.slice(0, 500)}`);
  }
  throw new Error('too many redirects in the authorization request');
}

/** Submit the login form; returns {redirect} (to redirect_uri) or {loginPage} (form shown again). */
export async function submitLogin(flow, { username, password }, redirectUri) {
  const actionUrl = new URL(flow.loginPage.form.action, flow.loginPage.url).href;
  const body = new URLSearchParams({ username, password, credentialId: '' }).toString();
  let res = await requestWithJar(flow.jar, actionUrl, {
    method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body,
  });
  let url = actionUrl;
  for (let hop = 0; hop < 10; hop++) {
    if (res.status >= 300 && res.status < 400 && res.headers.location) {
      const next = new URL(res.headers.location, url).href;
      if (next.startsWith(redirectUri)) return { redirect: next };
      url = next;
      res = await requestWithJar(flow.jar, url);
      continue;
    }
    if (res.status === 200 && parseLoginForm(res.body)) {
      return { loginPage: { url, ...res, form: parseLoginForm(res.body) } };
    }
    throw new Error(`login ended with ${res.status}: ${res.body.slice(0, 500)}`);
  }
  throw new Error('too many redirects after login');
}

function clientAuth({ clientId, clientSecret, authMethod = 'basic' }) {
  if (authMethod === 'post') return { headers: {}, form: { client_id: clientId, client_secret: clientSecret } };
  const enc = (s) => encodeURIComponent(s).replace(/%20/g, '+');
  const basic = Buffer.from(`${enc(clientId)}:${enc(clientSecret)}`).toString('base64');
  return { headers: { authorization: `Basic ${basic}` }, form: {} };
}

async function tokenRequest(issuer, client, form) {
  const auth = clientAuth(client);
  const body = new URLSearchParams({ ...form, ...auth.form }).toString();
  const res = await request(endpoints(issuer).token, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json', ...auth.headers },
    body,
  });
  let json;
  try { json = JSON.parse(res.body); } catch { json = undefined; }
  return { status: res.status, json, headers: res.headers };
}

export async function exchangeCode({ issuer, code, redirectUri, verifier, ...client }) {
  const c = { ...DEFAULT_CLIENT, ...client };
  return tokenRequest(issuer, c, {
    grant_type: 'authorization_code', code, redirect_uri: redirectUri, ...(verifier ? { code_verifier: verifier } : {}),
  });
}

export async function refreshTokens({ issuer, refreshToken, ...client }) {
  const c = { ...DEFAULT_CLIENT, ...client };
  return tokenRequest(issuer, c, { grant_type: 'refresh_token', refresh_token: refreshToken });
}

/**
 * The whole login as a confidential client would do it: authorize, fill the form, read the code
 * from the Location header (never followed), exchange it.
 * @returns {Promise<{tokens: object, access: object, id: object, jar: CookieJar, flow: object}>}
 */
export async function loginWithPassword({
  issuer, redirectUri, username = ALICE.username, password = ALICE.password,
  clientId = DEFAULT_CLIENT.clientId, clientSecret = DEFAULT_CLIENT.clientSecret, authMethod = 'basic',
  scope, jar,
}) {
  const flow = await startAuthorization({ issuer, clientId, redirectUri, scope, jar });
  let { redirect } = flow;
  if (!redirect) {
    const r = await submitLogin(flow, { username, password }, redirectUri);
    if (!r.redirect) throw new Error(`login as ${username} failed: ${r.loginPage.form.error}`);
    redirect = r.redirect;
  }
  const q = new URL(redirect).searchParams;
  if (q.get('state') !== flow.state) throw new Error('state mismatch in the authorization response');
  if (q.get('error')) throw new Error(`authorization error: ${q.get('error')} ${q.get('error_description')}`);
  const code = q.get('code');
  const res = await exchangeCode({ issuer, code, redirectUri, verifier: flow.verifier, clientId, clientSecret, authMethod });
  if (res.status !== 200) throw new Error(`token request failed: ${res.status} ${JSON.stringify(res.json)}`);
  return {
    tokens: res.json,
    access: decodeJwt(res.json.access_token),
    id: decodeJwt(res.json.id_token),
    jar: flow.jar,
    flow,
    redirect,
  };
}
