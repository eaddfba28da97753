// A browser's login through the filter, done with an HTTP client and a cookie jar: the page
// request, the 302 to the provider, the provider's login form, the 302 back to the callback, the
// callback's 302 to the original page. Every step can be run (and checked) on its own.

import { parseLoginForm, submitLogin, ALICE } from './oidc.mjs';
import { parseSetCookies, requestWithJar } from './http.mjs';

/** What a browser sends for a navigation. */
export const PAGE_HEADERS = Object.freeze({
  accept: 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8',
  'user-agent': 'mesh-oidc-e2e',
});

/** What fetch() from a page sends for an API call. */
export const API_HEADERS = Object.freeze({ accept: 'application/json' });

/** The Set-Cookie header of one cookie in a response (the last one of that name), or undefined. */
export function setCookie(res, name) {
  const all = parseSetCookies(res.headers).filter((c) => c.name === name);
  return all[all.length - 1];
}

/** Every Set-Cookie whose name matches `re`. */
export function setCookies(res, re = /./) {
  return parseSetCookies(res.headers).filter((c) => re.test(c.name));
}

/** True when the cookie is being removed (Max-Age=0 or an Expires in the past). */
export function isCleared(c) {
  if (!c) return false;
  if (c.attrs['max-age'] !== undefined) return Number(c.attrs['max-age']) <= 0;
  if (c.attrs.expires) return Date.parse(c.attrs.expires) <= Date.now();
  return c.value === '';
}

/**
 * Step 1: a page request without a session. Returns the response, the authorization URL it
 * redirects to (parsed), its state, and the transaction cookie.
 */
export async function startLogin(jar, url, { headers = PAGE_HEADERS } = {}) {
  const res = await requestWithJar(jar, url, { headers });
  const out = { res, status: res.status };
  if (res.status !== 302 || !res.headers.location) return out;
  out.location = res.headers.location;
  out.authUrl = new URL(res.headers.location);
  out.params = Object.fromEntries(out.authUrl.searchParams);
  out.state = out.params.state;
  out.txCookies = setCookies(res, /_tx_/).filter((c) => !isCleared(c));
  out.txCookie = out.txCookies[out.txCookies.length - 1];
  return out;
}

/**
 * Step 2: follow the authorization URL at the provider with the jar, up to the login form or
 * (provider session still alive) straight to the redirect back to `redirectUri`.
 * @returns {Promise<{redirect?: string, loginPage?: object, jar}>}
 */
export async function atProvider(jar, authUrl, redirectUri) {
  let url = String(authUrl);
  for (let hop = 0; hop < 10; hop++) {
    const res = await requestWithJar(jar, url, { headers: PAGE_HEADERS });
    if (res.status >= 300 && res.status < 400 && res.headers.location) {
      const next = new URL(res.headers.location, url).href;
      if (next.startsWith(redirectUri)) return { jar, redirect: next };
      url = next;
      continue;
    }
    const form = res.status === 200 ? parseLoginForm(res.body) : undefined;
    if (form) return { jar, loginPage: { url, ...res, form } };
    return { jar, error: { url, status: res.status, body: res.body } };
  }
  throw new Error('too many redirects at the provider');
}

/** Step 2b: fill the login form; returns the URL the provider sends the browser back to. */
export async function fillLoginForm(jar, loginPage, redirectUri, creds = ALICE) {
  const r = await submitLogin({ jar, loginPage }, creds, redirectUri);
  if (!r.redirect) throw new Error(`login as ${creds.username} failed: ${r.loginPage?.form?.error}`);
  return r.redirect;
}

/** Step 2c: press "Cancel" on the login form; returns the redirect back (with error=access_denied). */
export async function cancelLoginForm(jar, loginPage, redirectUri) {
  const actionUrl = new URL(loginPage.form.action, loginPage.url).href;
  let res = await requestWithJar(jar, actionUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: 'cancel=on',
  });
  let url = actionUrl;
  for (let hop = 0; hop < 10; hop++) {
    if (!(res.status >= 300 && res.status < 400 && res.headers.location)) break;
    const next = new URL(res.headers.location, url).href;
    if (next.startsWith(redirectUri)) return next;
    url = next;
    res = await requestWithJar(jar, url);
  }
  throw new Error(`cancel did not come back to ${redirectUri}: ${res.status} ${res.body.slice(0, 300)}`);
}

/**
 * Steps 2 and 2b together: from the authorization URL to the callback URL.
 * @returns {Promise<{callbackUrl: string, sawLoginForm: boolean}>}
 */
export async function toCallback(jar, authUrl, redirectUri, creds = ALICE) {
  const p = await atProvider(jar, authUrl, redirectUri);
  if (p.redirect) return { callbackUrl: p.redirect, sawLoginForm: false };
  if (p.loginPage) return { callbackUrl: await fillLoginForm(jar, p.loginPage, redirectUri, creds), sawLoginForm: true };
  throw new Error(`the provider answered ${p.error.status} at ${p.error.url}: ${p.error.body.slice(0, 500)}`);
}

/**
 * The whole login through the filter at `baseUrl` (e.g. http://127.0.0.1:PORT), starting at
 * `path`. Returns every step; `final` is the page request after the callback's redirect.
 */
export async function loginThroughFilter(jar, baseUrl, path = '/productpage', { creds = ALICE, headers = PAGE_HEADERS, fetchFinal = true } = {}) {
  const start = await startLogin(jar, `${baseUrl}${path}`, { headers });
  if (start.status !== 302) {
    throw new Error(`expected a 302 to the provider for ${path}, got ${start.status}: ${start.res.body.slice(0, 300)}`);
  }
  const redirectUri = start.params.redirect_uri;
  const { callbackUrl, sawLoginForm } = await toCallback(jar, start.authUrl, redirectUri, creds);
  const callback = await requestWithJar(jar, callbackUrl, { headers });
  const out = { start, callbackUrl, sawLoginForm, callback, redirectUri };
  if (fetchFinal && callback.status === 302 && callback.headers.location) {
    out.finalUrl = new URL(callback.headers.location, baseUrl).href;
    out.final = await requestWithJar(jar, out.finalUrl, { headers });
  }
  return out;
}
