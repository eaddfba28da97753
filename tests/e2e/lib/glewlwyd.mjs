// glewlwyd (a C OpenID Connect server, Debian package `glewlwyd`) as a second, independent
// provider for the e2e tests, set up from scratch for every run: its own config file and sqlite
// database under tests/out/, listening on 127.0.0.1 only, started and stopped by PID.
//
// Setup, in order (each step is needed; the workarounds for the Debian package are marked):
//   1. a sqlite database from the schema the package ships (the same file dbconfig-common runs;
//      it holds the tables, the `database` user and client back ends, the scope `openid` and the
//      user `admin` whose password is `password`);
//   2. WORKAROUND: the stock `database` client back end declares `post_logout_redirect_uri`
//      (singular, one value) while the OIDC plugin reads `post_logout_redirect_uris` (an array):
//      without declaring the plural as a multi-valued property, no client can ever be sent back
//      after logout. One SQL UPDATE on the back end's data-format adds it.
//   3. a config file of our own (the package's /etc/glewlwyd/glewlwyd.conf listens on every
//      address, logs to /var/log and points at dbconfig-common's database). Two quirks: the key
//      `use_secure_connection` must be absent, not false (false still demands certificate files);
//      and the login page (the webapp in /usr/share/glewlwyd/webapp) is served by glewlwyd itself
//      from a folder of our own, because
//   3b. WORKAROUND: the package's webapp/config.json is a symlink to /etc/glewlwyd/config-2.7.json,
//      which is a folder (holding config.json), so the login page cannot load its settings. The
//      folder has a copy of the webapp with the real config.json;
//   4. glewlwyd started with it; ready when /config answers;
//   5. through the admin REST API (logged in as admin with the schema's default password, which
//      is then changed to a random one): scopes `profile` and `email`, an `oidc` plugin instance
//      (RS256 key made here, PKCE S256 required, refresh tokens, session management for
//      end-session; WORKAROUND: front-channel logout allowed, see pluginParameters), the users,
//      and the confidential clients.
//
// The browser side of glewlwyd's login is a single-page app (login.html): it posts the password
// to /api/auth/, stores the user's consent with PUT /api/auth/grant/<client>, then sends the
// browser back to the authorization URL with `g_continue` added. `glewlwydLogin()` does exactly
// those calls with a cookie jar, as the tests' stand-in for the browser; `glewlwydEndSession()`
// does what the page does at end-session.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { spawnSync } from 'node:child_process';

import { freePort } from './ports.mjs';
import { outDir as makeOutDir } from './paths.mjs';
import { spawnLogged, sleep } from './proc.mjs';
import { request, requestWithJar, CookieJar } from './http.mjs';

export const GLEWLWYD_BIN = process.env.GLEWLWYD_BIN ?? '/usr/bin/glewlwyd';
const MODULE_DIR = process.env.GLEWLWYD_MODULES ?? '/usr/lib/glewlwyd';
/** The schema (with its initial rows) as Debian ships it: dbconfig-common's copy, else the docs'. */
const SCHEMAS = [
  '/usr/share/dbconfig-common/data/glewlwyd/install/sqlite3',
  '/usr/share/doc/glewlwyd/database/init.sqlite3.sql.gz',
];
const SQLITE3 = process.env.SQLITE3_BIN ?? 'sqlite3';
const DEFAULT_ADMIN = { username: 'admin', password: 'password' };
export const INSTALL_HINT = 'glewlwyd is not installed: as root, apt-get install -y glewlwyd (or make setup)';

export const glewlwydInstalled = () => fs.existsSync(GLEWLWYD_BIN) && SCHEMAS.some((f) => fs.existsSync(f));

/** The glewlwyd version as its binary reports it, e.g. "2.7.5". */
export function glewlwydVersion() {
  const r = spawnSync(GLEWLWYD_BIN, ['--version'], { encoding: 'utf8' });
  return `${r.stdout ?? ''}${r.stderr ?? ''}`.trim().split('\n').pop();
}

function schemaSql() {
  const file = SCHEMAS.find((f) => fs.existsSync(f));
  if (!file) throw new Error(`${INSTALL_HINT} (no schema at ${SCHEMAS.join(' or ')})`);
  const raw = fs.readFileSync(file);
  return file.endsWith('.gz') ? zlib.gunzipSync(raw).toString('utf8') : raw.toString('utf8');
}

function sqlite(db, sql) {
  const r = spawnSync(SQLITE3, ['-bail', db], { input: sql, encoding: 'utf8' });
  if (r.error || r.status !== 0) throw new Error(`sqlite3 ${db} failed: ${r.error?.message ?? r.stderr}`);
  return r.stdout;
}

/** Step 1 and 2: a fresh database. */
function createDatabase(db) {
  fs.rmSync(db, { force: true });
  sqlite(db, schemaSql());
  const multi = JSON.stringify({ multiple: true, read: true, write: true });
  sqlite(db, `UPDATE g_client_module_instance
    SET gcmi_parameters = json_set(gcmi_parameters, '$."data-format".post_logout_redirect_uris', json('${multi}'))
    WHERE gcmi_module = 'database';`);
}

const WEBAPP = process.env.GLEWLWYD_WEBAPP ?? '/usr/share/glewlwyd/webapp';
const WEBAPP_CONFIG = ['/etc/glewlwyd/config-2.7.json/config.json', '/etc/glewlwyd/config-2.7.json', `${WEBAPP}/config.json`];
const MIME = {
  '.html': 'text/html', '.css': 'text/css', '.js': 'application/javascript', '.json': 'application/json',
  '.png': 'image/png', '.jpg': 'image/jpeg', '.svg': 'image/svg+xml', '.ico': 'image/x-icon',
  '.ttf': 'font/ttf', '.woff': 'font/woff', '.woff2': 'font/woff2', '.otf': 'font/otf', '.eot': 'application/vnd.ms-fontobject',
  '.map': 'application/octet-stream',
};

/** Step 3b: the login page's files, with a config.json that is a file. */
function webappFolder(dir) {
  const out = path.join(dir, 'webapp');
  fs.rmSync(out, { recursive: true, force: true });
  fs.mkdirSync(out);
  if (!fs.existsSync(WEBAPP)) return undefined;
  for (const name of fs.readdirSync(WEBAPP)) {
    // copies: glewlwyd's file server does not follow symbolic links
    if (name !== 'config.json') fs.cpSync(path.join(WEBAPP, name), path.join(out, name), { recursive: true, dereference: true });
  }
  const cfg = WEBAPP_CONFIG.find((f) => fs.existsSync(f) && fs.statSync(f).isFile());
  if (cfg) fs.copyFileSync(cfg, path.join(out, 'config.json'));
  return out;
}

/** Step 3: the config file (libconfig syntax). */
function configFile({ port, externalUrl, db, webapp }) {
  const q = (s) => JSON.stringify(String(s));
  return `# written by tests/e2e/lib/glewlwyd.mjs for one test run
port=${port}
bind_address=${q('127.0.0.1')}
external_url=${q(externalUrl)}
login_url=${q('login.html')}
api_prefix=${q('api')}
allow_origin=${q('*')}
log_mode=${q('console')}
log_level=${q(process.env.GLEWLWYD_LOG_LEVEL ?? 'INFO')}
cookie_secure=0
cookie_same_site=${q('lax')}
session_expiration=3600
session_key=${q('GLEWLWYD2_SESSION_ID')}
admin_session_authentication=${q('cookie')}
profile_session_authentication=${q('cookie')}
allow_multiple_user_per_session=false
login_api_enabled=true
add_x_frame_option_header_deny=true
admin_scope=${q('g_admin')}
profile_scope=${q('g_profile')}
user_module_path=${q(`${MODULE_DIR}/user`)}
client_module_path=${q(`${MODULE_DIR}/client`)}
user_auth_scheme_module_path=${q(`${MODULE_DIR}/scheme`)}
plugin_module_path=${q(`${MODULE_DIR}/plugin`)}
hash_algorithm=${q('SHA512')}
${webapp ? `static_files_path=${q(webapp)}
static_files_mime_types =
(
${Object.entries(MIME).map(([extension, type]) => `  { extension = ${q(extension)}\n    mime_type = ${q(type)} }`).join(',\n')}
)` : ''}
database =
{
  type = ${q('sqlite3')}
  path = ${q(db)}
};
`;
}

/** An RS256 signing key as glewlwyd's `jwks-private` wants it. */
function signingJwks() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const kid = crypto.randomBytes(9).toString('base64url');
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' };
  return { kid, jwks: { keys: [jwk] } };
}

/** The `oidc` plugin instance's parameters (names as in glewlwyd's OIDC.md and its own tests). */
function pluginParameters({ issuer, accessTokenTtl, refreshTokenTtl }) {
  const { kid, jwks } = signingJwks();
  return {
    iss: issuer,
    'jwks-private': JSON.stringify(jwks),
    'default-kid': kid,
    'jwks-show': true,
    'subject-type': 'public',
    'access-token-duration': accessTokenTtl,
    'refresh-token-duration': refreshTokenTtl,
    'code-duration': 600,
    'refresh-token-rolling': false,
    'refresh-token-one-use': 'never',
    'allow-non-oidc': false,
    'auth-type-code-enabled': true,
    'auth-type-code-revoke-replayed': true,
    'auth-type-token-enabled': false,
    'auth-type-id-token-enabled': true,
    'auth-type-none-enabled': false,
    'auth-type-password-enabled': false,
    'auth-type-client-enabled': false,
    'auth-type-device-enabled': false,
    'auth-type-refresh-enabled': true,
    'pkce-allowed': true,
    'pkce-method-plain-allowed': false,
    'pkce-required': true,
    'introspection-revocation-allowed': true,
    'introspection-revocation-allow-target-client': true,
    'session-management-allowed': true,
    'session-cookie-name': 'GLEWLWYD2_OIDC_SID',
    'session-cookie-expiration': 3600,
    // WORKAROUND: glewlwyd 2.7.5's login page asks GET /api/<plugin>/session/<sid>/<client> at
    // end-session, which answers 400 unless front-channel logout is allowed; the page then never
    // ends the session. No client here has a front-channel logout URI, so none is called.
    'front-channel-logout-allowed': true,
    'back-channel-logout-allowed': false,
    'name-claim': 'on-demand',
    'email-claim': 'on-demand',
    'scope-claim': 'no',
    'request-parameter-allow': false,
    'register-client-allowed': false,
  };
}

async function json(res, what) {
  if (res.status !== 200) throw new Error(`glewlwyd: ${what} answered ${res.status}: ${res.body.slice(0, 500)}`);
  return res.body ? JSON.parse(res.body) : undefined;
}

/**
 * Start glewlwyd, set up from scratch.
 * @param {object} o
 * @param {string} [o.outDir]
 * @param {Array<{name: string, accessTokenTtl?: number, refreshTokenTtl?: number}>} [o.plugins]
 *        one `oidc` plugin instance each (issuer: <base>/api/<name>); default one named "oidc"
 * @param {Array<{username, password, name?, email?, scope?: string[]}>} o.users
 * @param {Array<{clientId, clientSecret, redirectUris: string[], postLogoutRedirectUris?: string[], authMethods?: string[]}>} o.clients
 * @param {string[]} [o.scopes]  scopes to create besides `openid` (default profile, email)
 */
export async function startGlewlwyd({
  outDir, plugins = [{ name: 'oidc' }], users = [], clients = [], scopes = ['profile', 'email'],
} = {}) {
  if (!glewlwydInstalled()) throw new Error(INSTALL_HINT);
  const dir = outDir ?? makeOutDir(['glewlwyd', `g-${process.pid}-${Date.now()}`]);
  fs.mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const db = path.join(dir, 'glewlwyd.db');
  const conf = path.join(dir, 'glewlwyd.conf');
  const logFile = path.join(dir, 'glewlwyd.log');
  createDatabase(db);
  fs.writeFileSync(conf, configFile({ port, externalUrl: base, db, webapp: webappFolder(dir) }));

  const proc = spawnLogged(GLEWLWYD_BIN, ['--config-file', conf], { logFile });
  const log = () => (fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8') : '');
  const stop = async () => { await proc.stop(); };
  try {
    // step 4: ready when /config answers
    const deadline = Date.now() + 15000;
    for (;;) {
      if (proc.exitInfo) throw new Error(`glewlwyd exited (${JSON.stringify(proc.exitInfo)})`);
      try {
        const r = await request(`${base}/config`, { timeoutMs: 1000 });
        if (r.status === 200) break;
      } catch { /* not up yet */ }
      if (Date.now() > deadline) throw new Error('glewlwyd did not answer /config within 15 s');
      await sleep(50);
    }

    // step 5: the admin API
    const admin = new CookieJar();
    const api = async (method, p, body, what) => json(await requestWithJar(admin, `${base}/api${p}`, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    }), what ?? `${method} /api${p}`);
    await api('POST', '/auth/', DEFAULT_ADMIN, 'admin login (default password)');
    const adminPassword = crypto.randomBytes(18).toString('base64url');
    await api('PUT', `/user/${DEFAULT_ADMIN.username}`, { password: adminPassword, scope: ['g_admin', 'g_profile'], enabled: true }, 'a new admin password');

    for (const name of scopes) {
      await api('POST', '/scope/', {
        name, display_name: name, description: `${name} claims`, password_required: true, password_max_age: 0, scheme: {},
      });
    }
    const issuers = {};
    for (const p of plugins) {
      issuers[p.name] = `${base}/api/${p.name}`;
      await api('POST', '/mod/plugin/', {
        module: 'oidc',
        name: p.name,
        display_name: `OpenID Connect (${p.name})`,
        enabled: true,
        parameters: pluginParameters({
          issuer: issuers[p.name], accessTokenTtl: p.accessTokenTtl ?? 300, refreshTokenTtl: p.refreshTokenTtl ?? 3600,
        }),
      });
    }
    for (const u of users) {
      await api('POST', '/user/', {
        username: u.username,
        password: u.password,
        name: u.name ?? u.username,
        email: u.email ?? `${u.username}@example.com`,
        scope: u.scope ?? ['openid', ...scopes],
        enabled: true,
      });
    }
    for (const c of clients) {
      await api('POST', '/client/', {
        client_id: c.clientId,
        name: c.name ?? c.clientId,
        confidential: true,
        enabled: true,
        client_secret: c.clientSecret,
        redirect_uri: c.redirectUris,
        post_logout_redirect_uris: c.postLogoutRedirectUris ?? [],
        authorization_type: ['code', 'refresh_token'],
        token_endpoint_auth_method: c.authMethods ?? ['client_secret_basic'],
      });
    }
    await api('DELETE', '/auth/', undefined, 'admin logout');

    const endpoints = (name = plugins[0].name) => {
      const iss = issuers[name];
      return {
        issuer: iss,
        discovery: `${iss}/.well-known/openid-configuration`,
        authorization_endpoint: `${iss}/auth`,
        token_endpoint: `${iss}/token`,
        jwks_uri: `${iss}/jwks`,
        end_session_endpoint: `${iss}/end_session`,
        userinfo_endpoint: `${iss}/userinfo`,
        revocation_endpoint: `${iss}/revoke`,
        introspection_endpoint: `${iss}/introspect`,
      };
    };
    return {
      port, base, pid: proc.pid, outDir: dir, configFile: conf, database: db, logFile, log,
      adminPassword, issuers, endpoints,
      /** The login page the authorization endpoint sends a browser without a session to. */
      loginPage: `${base}/login.html`,
      get alive() { return !proc.exitInfo; },
      stop,
    };
  } catch (err) {
    await stop();
    throw new Error(`glewlwyd did not start: ${err.message}\n----- ${logFile} -----\n${log().slice(-4000)}`);
  }
}

/**
 * What glewlwyd's login page does for a browser, from the authorization URL to the redirect back
 * to the client (`redirectUri`), with the jar as the browser's cookies:
 *   GET <authorization URL>             302 to login.html?client_id&scope&callback_url (no session)
 *   POST /api/auth/ {username,password} the password form
 *   PUT /api/auth/grant/<client> {scope} the consent screen (skipped when already granted)
 *   GET <callback_url>&g_continue       302 to redirect_uri?code&state
 * With a provider session alive the first GET already answers with the redirect back.
 * @param {object} o
 * @param {string[]} [o.consent]  scopes the user consents to (default: all those asked for)
 * @returns {Promise<{redirect: string, sawLogin: boolean, loginUrl?: URL, granted?: string}>}
 */
export async function glewlwydLogin(jar, authUrl, redirectUri, { username, password, consent } = {}) {
  const first = await requestWithJar(jar, String(authUrl));
  if (first.status !== 302 || !first.headers.location) {
    throw new Error(`glewlwyd's authorization endpoint answered ${first.status}: ${first.body.slice(0, 500)}`);
  }
  const loc = new URL(first.headers.location, String(authUrl));
  if (loc.href.startsWith(redirectUri)) return { redirect: loc.href, sawLogin: false };
  if (!loc.pathname.endsWith('/login.html')) throw new Error(`glewlwyd sent the browser to ${loc.href}`);
  const base = loc.origin;
  const clientId = loc.searchParams.get('client_id');
  const asked = loc.searchParams.get('scope') ?? '';
  const callbackUrl = loc.searchParams.get('callback_url');
  const auth = await requestWithJar(jar, `${base}/api/auth/`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username, password }),
  });
  if (auth.status !== 200) throw new Error(`glewlwyd refused the password of ${username}: ${auth.status}`);
  const granted = (consent ?? asked.split(' ')).join(' ');
  const grant = await requestWithJar(jar, `${base}/api/auth/grant/${encodeURIComponent(clientId)}`, {
    method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ scope: granted }),
  });
  if (grant.status !== 200) throw new Error(`glewlwyd refused the consent: ${grant.status} ${grant.body.slice(0, 300)}`);
  const cont = `${callbackUrl}${callbackUrl.includes('?') ? '&' : '?'}g_continue`;
  const back = await requestWithJar(jar, cont);
  if (back.status !== 302 || !back.headers.location) {
    throw new Error(`glewlwyd did not send the browser back after login: ${back.status} ${back.body.slice(0, 300)}`);
  }
  return { redirect: new URL(back.headers.location, cont).href, sawLogin: true, loginUrl: loc, granted };
}

/**
 * What glewlwyd's login page does at end-session, from the end-session URL the client sent the
 * browser to:
 *   GET <end_session_endpoint>?id_token_hint&post_logout_redirect_uri[&state]
 *       302 to login.html?prompt=end_session&sid&plugin&client_id[&post_redirect_to]&callback_url
 *   GET /api/<plugin>/session/<sid>/<client_id>[?post_redirect_to=]   who is logged out, and
 *       whether the client may have the browser back (`post_redirect_to` in the answer)
 *   the user presses "Log out":
 *   DELETE /api/<plugin>/session/<sid>   ends the OIDC session and revokes its tokens
 *   DELETE /api/auth/                    ends the glewlwyd session
 *   then the browser goes to callback_url only when the answer had `post_redirect_to`; otherwise
 *   the page says "session closed" and the browser stays at glewlwyd.
 * @returns {Promise<{prompt: string, loggedOut: boolean, redirect?: string, stayed: boolean, loginUrl: URL}>}
 */
export async function glewlwydEndSession(jar, endSessionUrl) {
  const first = await requestWithJar(jar, String(endSessionUrl));
  if (first.status !== 302 || !first.headers.location) {
    throw new Error(`glewlwyd's end-session endpoint answered ${first.status}: ${first.body.slice(0, 300)}`);
  }
  const loc = new URL(first.headers.location, String(endSessionUrl));
  const q = loc.searchParams;
  const base = loc.origin;
  const prompt = q.get('prompt');
  const out = { prompt, loginUrl: loc, loggedOut: false, stayed: true, callbackUrl: q.get('callback_url') ?? undefined };
  if (prompt === 'end_session') {
    const plugin = q.get('plugin');
    const sid = q.get('sid');
    const post = q.get('post_redirect_to');
    const listUrl = `${base}/api/${plugin}/session/${sid}/${encodeURIComponent(q.get('client_id'))}${post ? `?post_redirect_to=${encodeURIComponent(post)}` : ''}`;
    const list = await requestWithJar(jar, listUrl);
    if (list.status !== 200) throw new Error(`glewlwyd's session list answered ${list.status} for ${listUrl} (from ${loc.href})`);
    out.session = JSON.parse(list.body);
    const del = await requestWithJar(jar, `${base}/api/${plugin}/session/${sid}`, { method: 'DELETE' });
    if (del.status !== 200) throw new Error(`glewlwyd refused to end the session: ${del.status}`);
    await requestWithJar(jar, `${base}/api/auth/`, { method: 'DELETE' });
    out.loggedOut = true;
    if (out.session.post_redirect_to && out.callbackUrl) {
      out.redirect = out.callbackUrl;
      out.stayed = false;
    }
  } else {
    // "single_logout": the ID token was not recognised; the page offers to end the glewlwyd
    // session and goes back only to a callback_url on glewlwyd's own origin.
    await requestWithJar(jar, `${base}/api/auth/`, { method: 'DELETE' });
    out.loggedOut = true;
  }
  return out;
}

/**
 * A confidential client's login at glewlwyd without the filter (the tests' own client): the
 * authorization request with PKCE, glewlwydLogin(), the code exchange with HTTP Basic.
 * @returns {Promise<{tokens: object, status: number, body: string, jar: CookieJar}>}
 */
export async function glewlwydTokens(endpoints, {
  clientId, clientSecret, redirectUri, username, password, consent, scope = 'openid profile email', jar = new CookieJar(),
}) {
  const verifier = crypto.randomBytes(32).toString('base64url');
  const challenge = crypto.createHash('sha256').update(verifier).digest('base64url');
  const state = crypto.randomBytes(16).toString('base64url');
  const auth = new URL(endpoints.authorization_endpoint);
  for (const [k, v] of Object.entries({
    response_type: 'code', client_id: clientId, redirect_uri: redirectUri, scope, state,
    nonce: crypto.randomBytes(16).toString('base64url'), code_challenge: challenge, code_challenge_method: 'S256',
  })) auth.searchParams.set(k, v);
  const { redirect } = await glewlwydLogin(jar, auth, redirectUri, { username, password, consent });
  const q = new URL(redirect).searchParams;
  if (q.get('state') !== state) throw new Error(`glewlwyd sent back another state: ${redirect}`);
  if (!q.get('code')) throw new Error(`glewlwyd sent back no code: ${redirect}`);
  const res = await request(endpoints.token_endpoint, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      authorization: `Basic ${Buffer.from(`${clientId}:${clientSecret}`).toString('base64')}`,
    },
    body: new URLSearchParams({ grant_type: 'authorization_code', code: q.get('code'), redirect_uri: redirectUri, code_verifier: verifier }).toString(),
  });
  let tokens;
  try { tokens = JSON.parse(res.body); } catch { tokens = undefined; }
  return { tokens, status: res.status, body: res.body, jar };
}

/**
 * A client secret, URL-safe on purpose: with client_secret_basic the filter form-encodes the
 * secret before base64 (RFC 6749 §2.3.1) and glewlwyd 2.7.5 does not decode it, so a secret
 * with `+`, `/`, `=` or `%` (e.g. from `openssl rand -base64`) is refused at the token endpoint.
 * With such a secret, use client_auth_method client_secret_post.
 */
export const newClientSecret = () => crypto.randomBytes(24).toString('base64url');
