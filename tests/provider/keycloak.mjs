#!/usr/bin/env node
// A Keycloak look-alike OpenID provider for the mesh-oidc end-to-end tests, built on the real
// oidc-provider (panva). It serves one realm under Keycloak's paths:
//
//   /realms/<realm>/.well-known/openid-configuration
//   /realms/<realm>/protocol/openid-connect/{auth,token,certs,logout,userinfo,token/introspect,revoke}
//   /realms/<realm>/login-actions/authenticate        (the login form)
//
// Usage:  node provider/keycloak.mjs [config.json]
// Every setting can come from the JSON file or from an environment variable (the file wins):
//
//   port                    PORT                      listen port on 127.0.0.1 (0 = pick one)
//   realm                   REALM                     default "dev"
//   publicUrl               PUBLIC_URL                default http://127.0.0.1:<port>
//   keysFile                KEYS_FILE                 JSON {"keys":[private JWKs]}: enc key(s), then signing key(s)
//   accessTokenTtl          ACCESS_TOKEN_TTL          seconds, default 300 (also the ID token TTL, as in Keycloak)
//   refreshTokenTtl         REFRESH_TOKEN_TTL         seconds, default 1800
//   sessionTtl              SESSION_TTL               seconds, default 36000
//   rotateRefreshTokens     ROTATE_REFRESH_TOKENS     "true": each refresh returns a new refresh token and the old one
//                                                     becomes single-use (reuse revokes the grant); default false
//   requirePkce             REQUIRE_PKCE              default true (S256 only)
//   redirectUris            REDIRECT_URIS             comma separated in the env var
//   postLogoutRedirectUris  POST_LOGOUT_REDIRECT_URIS comma separated in the env var
//   clientSecret            CLIENT_SECRET             secret of "productpage" (and "productpage-post")
//   backchannelLogoutUri    BACKCHANNEL_LOGOUT_URI    the default clients' backchannel_logout_uri (Keycloak's
//                                                     "Backchannel logout URL"); unset: no back-channel logout
//   backchannelLogoutSessionRequired                  default true (Keycloak's default): the logout token
//                           BACKCHANNEL_LOGOUT_SESSION_REQUIRED   carries `sid`; false: only `sub`
//   stateFile               STATE_FILE                sessions/tokens are saved there on SIGTERM and loaded at start,
//                                                     so a restart (key rotation) keeps logged-in users logged in
//   clients, users          (file only)               replace the default clients / users
//   exitWithParent          (file only)               true: exit when the process that started this one is gone
//                                                     (the tests' harness: a test process killed on a timeout
//                                                     leaves no provider behind)
//
// Stdout protocol (read by tests/e2e/lib/provider.mjs):
//   READY {"port":..,"issuer":..,"publicUrl":..}   once, when listening
//   REQ {"method":..,"path":..,"host":..,"status":..,"auth":..,"grant":..,"ms":..}   one line per request
//                                                  (grant: the grant_type of a token request oidc-provider handled)
//
//   BACKCHANNEL {"client":..,"sid":..,"ok":..,"error":..}   one line per logout token sent (back-channel logout)
//
// The login form also takes a "cancel" field (Keycloak's Cancel button): the login ends with
// error=access_denied at the client's redirect_uri.
//
// As Keycloak, the revocation endpoint also takes the JWT access tokens (RFC 7009; Keycloak keeps
// a list of revoked ones): introspection and userinfo then refuse them. Refresh tokens are
// oidc-provider's own (revoking one revokes its grant).
//
// Opaque access tokens (Keycloak issues none; other providers do): an authorization request with
// resource=urn:mesh-oidc:opaque (RFC 8707) gets an opaque access token for that resource, which
// only the introspection endpoint can judge.
//
// Back-channel logout (OpenID Connect Back-Channel Logout 1.0) is on: a client with a
// backchannel_logout_uri gets a logout token when a session it is part of ends at the provider
// (RP-initiated logout, or the admin logout below). Outgoing calls are allowed to any address
// (oidc-provider refuses loopback and private ones by default; the tests' Envoys are on 127.0.0.1,
// and in a cluster Keycloak calls the client's Service on its cluster IP).
//
// Test-only endpoints (same port):
//   POST /__control  {"delayMs":{"token":3000},"failStatus":{"certs":500}}
//        (keys: auth, token, certs, logout, userinfo, introspect, revoke, discovery). {} resets.
//   POST /__admin/logout    {"username":"alice"}  ends every session of the user as Keycloak's admin
//        console does (Users → Sessions → Sign out): a logout token to each client of the session that
//        has a backchannel_logout_uri, then its grants revoked and the session removed. Answers
//        {"sessions":n,"backchannel":[{"client","sid","ok","error"}]}.
//   GET  /__admin/sessions?username=alice   the user's live sessions: [{"sid","clients":{clientId:
//        {"grantId","refreshTokens":[..]}}}] (the refresh tokens are the opaque values themselves).

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import { URL, URLSearchParams } from 'node:url';

import Provider, { errors as oidcErrors } from 'oidc-provider';
import { jwtVerify, createLocalJWKSet } from 'jose';

// ---------------------------------------------------------------------------------------------
// configuration

function envList(name) {
  const v = process.env[name];
  if (v === undefined || v === '') return undefined;
  return v.split(',').map((s) => s.trim()).filter(Boolean);
}
function envNum(name) {
  const v = process.env[name];
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new Error(`${name} must be a number`);
  return n;
}
function envBool(name) {
  const v = process.env[name];
  if (v === undefined || v === '') return undefined;
  return v === 'true' || v === '1';
}

const fileConfig = process.argv[2] ? JSON.parse(fs.readFileSync(process.argv[2], 'utf8')) : {};
const pick = (...vals) => vals.find((v) => v !== undefined);

const cfg = {
  host: '127.0.0.1',
  port: pick(fileConfig.port, envNum('PORT'), 0),
  realm: pick(fileConfig.realm, process.env.REALM, 'dev'),
  publicUrl: pick(fileConfig.publicUrl, process.env.PUBLIC_URL),
  keysFile: pick(fileConfig.keysFile, process.env.KEYS_FILE),
  keys: fileConfig.keys,
  accessTokenTtl: pick(fileConfig.accessTokenTtl, envNum('ACCESS_TOKEN_TTL'), 300),
  refreshTokenTtl: pick(fileConfig.refreshTokenTtl, envNum('REFRESH_TOKEN_TTL'), 1800),
  sessionTtl: pick(fileConfig.sessionTtl, envNum('SESSION_TTL'), 36000),
  rotateRefreshTokens: pick(fileConfig.rotateRefreshTokens, envBool('ROTATE_REFRESH_TOKENS'), false),
  requirePkce: pick(fileConfig.requirePkce, envBool('REQUIRE_PKCE'), true),
  redirectUris: pick(fileConfig.redirectUris, envList('REDIRECT_URIS'), ['http://127.0.0.1/callback']),
  postLogoutRedirectUris: pick(fileConfig.postLogoutRedirectUris, envList('POST_LOGOUT_REDIRECT_URIS'), ['http://127.0.0.1/']),
  clientSecret: pick(fileConfig.clientSecret, process.env.CLIENT_SECRET, 'productpage-secret'),
  backchannelLogoutUri: pick(fileConfig.backchannelLogoutUri, process.env.BACKCHANNEL_LOGOUT_URI || undefined),
  backchannelLogoutSessionRequired: pick(fileConfig.backchannelLogoutSessionRequired, envBool('BACKCHANNEL_LOGOUT_SESSION_REQUIRED'), true),
  stateFile: pick(fileConfig.stateFile, process.env.STATE_FILE),
  cookieKeys: pick(fileConfig.cookieKeys, ['mesh-oidc-test-provider-cookie-key-1']),
  exitWithParent: fileConfig.exitWithParent === true,
};

const REALM_PATH = `/realms/${cfg.realm}`;
const OIDC_PATH = '/protocol/openid-connect';
const LOGIN_ACTION_PATH = `${REALM_PATH}/login-actions/authenticate`;
const ACCOUNT_RESOURCE = `urn:keycloak:realm:${cfg.realm}:account`;
const OPAQUE_RESOURCE = 'urn:mesh-oidc:opaque';

// Keycloak's default client scopes; only profile and email carry claims here.
const SCOPES = ['openid', 'offline_access', 'profile', 'email', 'roles', 'web-origins', 'acr', 'basic', 'address', 'phone'];

const DEFAULT_USERS = [
  {
    id: 'a1f0c9a4-5b7e-4f43-9d1e-2c6d8a7b3e01',
    username: 'alice',
    password: 'alice-password',
    given_name: 'Alice',
    family_name: 'Liddell',
    email: 'alice@example.com',
    roles: ['user'],
  },
  {
    id: 'b2e1d8b5-6c8f-4a54-8e2f-3d7e9b8c4f12',
    username: 'bob',
    password: 'bob-password',
    given_name: 'Bob',
    family_name: 'Builder',
    email: 'bob@example.com',
    roles: ['user', 'admin'],
  },
];
const users = (fileConfig.users ?? DEFAULT_USERS).map((u) => ({
  ...u,
  username: String(u.username).toLowerCase(),
  name: [u.given_name, u.family_name].filter(Boolean).join(' '),
  roles: u.roles ?? [],
}));
const usersById = new Map(users.map((u) => [u.id, u]));

function clientDefaults(c) {
  return {
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: cfg.redirectUris,
    post_logout_redirect_uris: cfg.postLogoutRedirectUris,
    id_token_signed_response_alg: 'RS256',
    require_auth_time: true,
    ...(cfg.backchannelLogoutUri ? {
      backchannel_logout_uri: cfg.backchannelLogoutUri,
      backchannel_logout_session_required: cfg.backchannelLogoutSessionRequired,
    } : {}),
    ...c,
  };
}
const clients = (fileConfig.clients ?? [
  { client_id: 'productpage', client_secret: cfg.clientSecret, token_endpoint_auth_method: 'client_secret_basic' },
  { client_id: 'productpage-post', client_secret: cfg.clientSecret, token_endpoint_auth_method: 'client_secret_post' },
]).map(clientDefaults);

function loadKeys() {
  if (cfg.keys) return cfg.keys;
  if (cfg.keysFile) return JSON.parse(fs.readFileSync(cfg.keysFile, 'utf8'));
  // No keys given: make a Keycloak-like set (an RSA-OAEP "enc" key first, then an RS256 "sig" key).
  const make = (use, alg) => {
    const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
    const jwk = privateKey.export({ format: 'jwk' });
    return { ...jwk, use, alg, kid: crypto.randomBytes(16).toString('base64url') };
  };
  return { keys: [make('enc', 'RSA-OAEP'), make('sig', 'RS256')] };
}
const jwks = loadKeys();

// ---------------------------------------------------------------------------------------------
// storage adapter: plain Maps with expiry, optionally saved to / loaded from cfg.stateFile

const entries = new Map(); // "Model:id" -> { payload, exp (ms epoch or null) }
const GRANTABLE = new Set(['AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode', 'BackchannelAuthenticationRequest']);

function liveEntry(key) {
  const e = entries.get(key);
  if (!e) return undefined;
  if (e.exp !== null && e.exp <= Date.now()) {
    entries.delete(key);
    return undefined;
  }
  return e;
}

class StoreAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    const exp = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : null;
    entries.set(this.key(id), { payload, exp });
  }

  async find(id) {
    return liveEntry(this.key(id))?.payload;
  }

  async findByUid(uid) {
    for (const [key] of entries) {
      if (key.startsWith(`${this.model}:`)) {
        const e = liveEntry(key);
        if (e && e.payload.uid === uid) return e.payload;
      }
    }
    return undefined;
  }

  async findByUserCode(userCode) {
    for (const [key] of entries) {
      if (key.startsWith(`${this.model}:`)) {
        const e = liveEntry(key);
        if (e && e.payload.userCode === userCode) return e.payload;
      }
    }
    return undefined;
  }

  async consume(id) {
    const e = liveEntry(this.key(id));
    if (e) e.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    entries.delete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    for (const [key, e] of [...entries]) {
      const model = key.slice(0, key.indexOf(':'));
      if (GRANTABLE.has(model) && e.payload.grantId === grantId) entries.delete(key);
    }
  }
}

function loadState() {
  if (!cfg.stateFile || !fs.existsSync(cfg.stateFile)) return;
  try {
    const saved = JSON.parse(fs.readFileSync(cfg.stateFile, 'utf8'));
    for (const [key, e] of saved.entries ?? []) {
      if (e.exp === null || e.exp > Date.now()) entries.set(key, e);
    }
  } catch (err) {
    console.error(`could not load state file: ${err.message}`);
  }
}
function saveState() {
  if (!cfg.stateFile) return;
  fs.writeFileSync(cfg.stateFile, JSON.stringify({ entries: [...entries] }));
}

// ---------------------------------------------------------------------------------------------
// HTML pages shaped like Keycloak's

const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));

function page(title, inner) {
  return `<!DOCTYPE html>
<html class="login-pf">
<head>
  <meta charset="utf-8">
  <meta name="robots" content="noindex, nofollow">
  <title>${esc(title)}</title>
</head>
<body class="">
<div class="login-pf-page">
  <div id="kc-header" class="login-pf-page-header">
    <div id="kc-header-wrapper" class="">${esc(cfg.realm)}</div>
  </div>
  <div class="card-pf">
${inner}
  </div>
</div>
</body>
</html>
`;
}

function loginPage({ action, username = '', error }) {
  return page(`Sign in to ${cfg.realm}`, `    <header class="login-pf-header">
      <h1 id="kc-page-title">Sign in to your account</h1>
    </header>
    <div id="kc-content">
      <div id="kc-content-wrapper">
${error ? `        <div class="alert-error pf-c-alert pf-m-inline pf-m-danger">
          <span id="input-error" class="kc-feedback-text" aria-live="polite">${esc(error)}</span>
        </div>
` : ''}        <div id="kc-form">
          <div id="kc-form-wrapper">
            <form id="kc-form-login" onsubmit="login.disabled = true; return true;" action="${esc(action)}" method="post">
              <div class="form-group">
                <label for="username" class="pf-c-form__label pf-c-form__label-text">Username or email</label>
                <input tabindex="1" id="username" class="pf-c-form-control" name="username" value="${esc(username)}" type="text" autofocus autocomplete="off"${error ? ' aria-invalid="true"' : ''} />
              </div>
              <div class="form-group">
                <label for="password" class="pf-c-form__label pf-c-form__label-text">Password</label>
                <input tabindex="2" id="password" class="pf-c-form-control" name="password" type="password" autocomplete="off"${error ? ' aria-invalid="true"' : ''} />
              </div>
              <div id="kc-form-buttons" class="form-group">
                <input type="hidden" id="id-hidden-input" name="credentialId"/>
                <input tabindex="4" class="pf-c-button pf-m-primary pf-m-block btn-lg" name="login" id="kc-login" type="submit" value="Sign In"/>
              </div>
            </form>
          </div>
        </div>
      </div>
    </div>`);
}

function errorPage(message) {
  return page(`Sign in to ${cfg.realm}`, `    <header class="login-pf-header">
      <h1 id="kc-page-title">We are sorry...</h1>
    </header>
    <div id="kc-content">
      <div id="kc-content-wrapper">
        <div id="kc-error-message">
          <p class="instruction">${esc(message)}</p>
        </div>
      </div>
    </div>`);
}

// ---------------------------------------------------------------------------------------------
// the provider

const issuer = () => `${cfg.publicUrl}${REALM_PATH}`;

function accountFor(ctx, id) {
  const user = usersById.get(id);
  if (!user) return undefined;
  return {
    accountId: user.id,
    // `use` is "id_token" or "userinfo"
    async claims(use) {
      const c = {
        sub: user.id,
        name: user.name,
        preferred_username: user.username,
        given_name: user.given_name,
        family_name: user.family_name,
        email: user.email,
        email_verified: true,
      };
      if (use === 'id_token') {
        c.typ = 'ID';
        c.azp = ctx?.oidc?.client?.clientId;
      }
      return c;
    },
  };
}

const configuration = {
  adapter: StoreAdapter,
  jwks,
  clients,
  cookies: {
    keys: cfg.cookieKeys,
    names: { session: 'KEYCLOAK_IDENTITY', interaction: 'AUTH_SESSION_ID', resume: 'KC_RESUME' },
  },
  scopes: SCOPES,
  claims: {
    openid: ['sub', 'typ', 'azp'],
    profile: ['name', 'preferred_username', 'given_name', 'family_name'],
    email: ['email', 'email_verified'],
  },
  pkce: { required: () => cfg.requirePkce },
  routes: {
    authorization: `${OIDC_PATH}/auth`,
    token: `${OIDC_PATH}/token`,
    jwks: `${OIDC_PATH}/certs`,
    end_session: `${OIDC_PATH}/logout`,
    userinfo: `${OIDC_PATH}/userinfo`,
    introspection: `${OIDC_PATH}/token/introspect`,
    revocation: `${OIDC_PATH}/revoke`,
    pushed_authorization_request: `${OIDC_PATH}/ext/par/request`,
  },
  features: {
    devInteractions: { enabled: false },
    encryption: { enabled: true }, // so that the RSA-OAEP "enc" key is accepted and published
    introspection: { enabled: true },
    revocation: { enabled: true },
    backchannelLogout: { enabled: true },
    userinfo: { enabled: true },
    rpInitiatedLogout: {
      enabled: true,
      // The logout confirmation form: submitted automatically (see autoLogout below for clients
      // without JavaScript), so id_token_hint logouts need no click, as in Keycloak.
      async logoutSource(ctx, form) {
        ctx.type = 'html';
        ctx.body = page(`Sign in to ${cfg.realm}`, `    <div id="kc-content"><div id="kc-content-wrapper">
      <p class="instruction">Do you want to log out?</p>
      ${form.replace('</form>', '<input type="hidden" name="logout" value="yes"/></form>')}
      <button id="kc-logout" type="submit" form="op.logoutForm">Logout</button>
      <script>document.forms[0].submit()</script>
    </div></div>`);
      },
      async postLogoutSuccessSource(ctx) {
        ctx.type = 'html';
        ctx.body = page(`Sign in to ${cfg.realm}`, `    <div id="kc-content"><div id="kc-content-wrapper">
      <p class="instruction">You are logged out</p>
    </div></div>`);
      },
    },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (_ctx, _client, oneOf) => oneOf ?? ACCOUNT_RESOURCE,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, resourceIndicator) => {
        if (resourceIndicator === OPAQUE_RESOURCE) {
          return {
            scope: SCOPES.join(' '),
            audience: 'opaque-api',
            accessTokenTTL: cfg.accessTokenTtl,
            accessTokenFormat: 'opaque',
          };
        }
        if (resourceIndicator !== ACCOUNT_RESOURCE) throw new oidcErrors.InvalidTarget();
        return {
          scope: SCOPES.join(' '),
          audience: 'account',
          accessTokenTTL: cfg.accessTokenTtl,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  formats: {
    customizers: {
      // Make the JWT access token look like Keycloak's.
      async jwt(_ctx, token, jwt) {
        const user = usersById.get(token.accountId);
        const clientId = token.clientId;
        jwt.header = { typ: 'JWT' };
        const p = jwt.payload;
        delete p.client_id;
        Object.assign(p, {
          typ: 'Bearer',
          azp: clientId,
          sid: token.sid,
          acr: '1',
          'allowed-origins': [...new Set(cfg.redirectUris.map((u) => new URL(u).origin))],
          realm_access: { roles: [...(user?.roles ?? []), 'offline_access', 'uma_authorization', `default-roles-${cfg.realm}`] },
          resource_access: { account: { roles: ['manage-account', 'manage-account-links', 'view-profile'] } },
        });
        if (user) {
          Object.assign(p, {
            email_verified: true,
            name: user.name,
            preferred_username: user.username,
            given_name: user.given_name,
            family_name: user.family_name,
            email: user.email,
          });
        }
      },
    },
  },
  // Keycloak always issues refresh tokens for the code flow.
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: () => cfg.rotateRefreshTokens,
  // Keycloak does not ask first-party clients for consent: grant whatever was asked.
  async loadExistingGrant(ctx) {
    const { client, session } = ctx.oidc;
    const grantId = ctx.oidc.result?.consent?.grantId || session.grantIdFor(client.clientId);
    let grant = grantId ? await ctx.oidc.provider.Grant.find(grantId) : undefined;
    if (!grant || grant.accountId !== session.accountId) {
      grant = new ctx.oidc.provider.Grant({ clientId: client.clientId, accountId: session.accountId });
    }
    const requested = [...ctx.oidc.requestParamScopes].filter((s) => SCOPES.includes(s));
    if (!requested.includes('openid')) requested.unshift('openid');
    grant.addOIDCScope(requested.join(' '));
    for (const [indicator, rs] of Object.entries(ctx.oidc.resourceServers ?? {})) {
      grant.addResourceScope(indicator, requested.filter((s) => rs.scopes.has(s)).join(' '));
    }
    await grant.save();
    return grant;
  },
  findAccount: async (ctx, sub) => accountFor(ctx, sub),
  interactions: {
    url: async (_ctx, interaction) => {
      const q = new URLSearchParams({
        session_code: interaction.uid,
        execution: 'auth-username-password-form',
        client_id: String(interaction.params.client_id ?? ''),
        tab_id: interaction.uid.slice(0, 11),
      });
      return `${LOGIN_ACTION_PATH}?${q}`;
    },
  },
  ttl: {
    AccessToken: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? cfg.accessTokenTtl,
    AuthorizationCode: 60,
    IdToken: () => cfg.accessTokenTtl,
    RefreshToken: () => cfg.refreshTokenTtl,
    Session: () => cfg.sessionTtl,
    Grant: () => cfg.sessionTtl,
    Interaction: 1800,
  },
  async renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = errorPage(out.error_description || out.error || 'Unexpected error when handling authentication request to identity provider.');
  },
  clientBasedCORS: () => false,
  // Back-channel logout tokens go to the tests' Envoys on 127.0.0.1: no SSRF filter on outgoing calls.
  fetch: (url, options) => {
    const { dispatcher, ...rest } = options;
    return globalThis.fetch(url, rest);
  },
};

let provider;
function makeProvider() {
  provider = new Provider(issuer(), configuration);
  provider.proxy = false;
  // Keycloak puts the session id (sid) in every ID and access token; oidc-provider only does that
  // for clients with back-channel logout, so say yes for every client.
  provider.Client.prototype.includeSid = function includeSid() { return true; };
  provider.use(async (ctx, next) => {
    await next();
    // for the request log: which grant a token request was (authorization_code, refresh_token)
    const grantType = ctx.oidc?.params?.grant_type;
    if (typeof grantType === 'string') ctx.req.grantType = grantType;
    // Keycloak's token response has a few more members.
    if (ctx.path === `${OIDC_PATH}/token` && ctx.status === 200 && ctx.body && typeof ctx.body === 'object' && ctx.body.access_token) {
      const body = ctx.body;
      if (body.refresh_token) body.refresh_expires_in = cfg.refreshTokenTtl;
      body['not-before-policy'] = 0;
      try {
        const payload = JSON.parse(Buffer.from(body.access_token.split('.')[1], 'base64url').toString());
        if (payload.sid) body.session_state = payload.sid;
      } catch { /* opaque token */ }
    }
  });
  provider.on('backchannel.success', (_ctx, client, _accountId, sid) => {
    process.stdout.write(`BACKCHANNEL ${JSON.stringify({ client: client.clientId, sid, ok: true })}\n`);
  });
  provider.on('backchannel.error', (_ctx, err, client, _accountId, sid) => {
    process.stdout.write(`BACKCHANNEL ${JSON.stringify({ client: client.clientId, sid, ok: false, error: err?.message })}\n`);
  });
  for (const ev of ['server_error', 'grant.error', 'end_session.error', 'introspection.error', 'revocation.error', 'userinfo.error', 'authorization.error', 'jwks.error', 'discovery.error']) {
    provider.on(ev, (_ctx, err) => {
      console.error(`[provider] ${ev}: ${err?.name ?? ''} ${err?.message ?? err}${err?.error_description ? ` (${err.error_description})` : ''}`);
    });
  }
  return provider;
}

// ---------------------------------------------------------------------------------------------
// HTTP front: Keycloak's paths, the login form, the automatic logout confirmation

const control = { delayMs: {}, failStatus: {} };

function routeKey(pathname) {
  const rest = pathname.startsWith(REALM_PATH) ? pathname.slice(REALM_PATH.length) : pathname;
  switch (rest) {
    case `${OIDC_PATH}/auth`: return 'auth';
    case `${OIDC_PATH}/token`: return 'token';
    case `${OIDC_PATH}/certs`: return 'certs';
    case `${OIDC_PATH}/logout`: return 'logout';
    case `${OIDC_PATH}/userinfo`: return 'userinfo';
    case `${OIDC_PATH}/token/introspect`: return 'introspect';
    case `${OIDC_PATH}/revoke`: return 'revoke';
    case '/.well-known/openid-configuration': return 'discovery';
    default: return undefined;
  }
}

async function readBody(req, limit = 256 * 1024) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit) throw new Error('body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function send(res, status, type, body, headers = {}) {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store, must-revalidate, max-age=0', ...headers });
  res.end(body);
}

async function handleLogin(req, res, url) {
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch {
    send(res, 400, 'text/html; charset=utf-8', errorPage('Your login attempt timed out. Login will start from the beginning.'));
    return;
  }
  const action = `${LOGIN_ACTION_PATH}?${url.searchParams}`;

  if (details.prompt.name !== 'login') {
    // consent (not expected: loadExistingGrant covers it) or anything else: grant and continue
    const grant = details.grantId ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
    const d = details.prompt.details;
    if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
    if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
    for (const [ind, scopes] of Object.entries(d.missingResourceScopes ?? {})) grant.addResourceScope(ind, scopes.join(' '));
    const grantId = await grant.save();
    await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    return;
  }

  if (req.method === 'GET') {
    send(res, 200, 'text/html; charset=utf-8', loginPage({ action }));
    return;
  }
  if (req.method !== 'POST') {
    send(res, 405, 'text/plain', 'method not allowed');
    return;
  }
  const form = new URLSearchParams(await readBody(req));
  if (form.has('cancel')) {
    // Keycloak's "Cancel" on the login form: back to the client with error=access_denied.
    await provider.interactionFinished(req, res, {
      error: 'access_denied', error_description: 'The user cancelled the login.',
    }, { mergeWithLastSubmission: false });
    return;
  }
  const username = (form.get('username') ?? '').trim().toLowerCase();
  const password = form.get('password') ?? '';
  const user = users.find((u) => u.username === username || u.email === username);
  const ok = user && crypto.timingSafeEqual(
    crypto.createHash('sha256').update(password).digest(),
    crypto.createHash('sha256').update(user.password).digest(),
  );
  if (!ok) {
    send(res, 200, 'text/html; charset=utf-8', loginPage({ action, username: form.get('username') ?? '', error: 'Invalid username or password.' }));
    return;
  }
  await provider.interactionFinished(req, res, {
    login: { accountId: user.id, amr: ['pwd'], acr: '1' },
  }, { mergeWithLastSubmission: false });
}

// One request to ourselves (the provider's own routes), used by the logout shortcut.
function selfRequest(method, path, headers, body) {
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1', port: server.address().port, method, path, headers: { ...headers, 'x-kc-internal': '1' },
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    if (body) req.write(body);
    req.end();
  });
}

function relay(res, r, extraHeaders = {}) {
  const headers = { ...r.headers };
  for (const h of ['content-length', 'transfer-encoding', 'connection', 'keep-alive']) delete headers[h];
  res.writeHead(r.status, { ...headers, ...extraHeaders });
  res.end(r.body);
}

function parseCookieHeader(h) {
  const m = new Map();
  for (const part of (h ?? '').split(';')) {
    const i = part.indexOf('=');
    if (i > 0) m.set(part.slice(0, i).trim(), part.slice(i + 1).trim());
  }
  return m;
}
function applySetCookies(jar, setCookies) {
  for (const sc of setCookies ?? []) {
    const first = sc.split(';')[0];
    const i = first.indexOf('=');
    if (i <= 0) continue;
    const name = first.slice(0, i).trim();
    const value = first.slice(i + 1).trim();
    const expired = /max-age=0\b/i.test(sc) || /expires=Thu, 01 Jan 1970/i.test(sc);
    if (expired || value === '') jar.delete(name); else jar.set(name, value);
  }
}

// Keycloak logs out at once (302 to post_logout_redirect_uri) when the request carries a valid
// id_token_hint. oidc-provider shows a form first; here the server submits that form itself.
async function autoLogout(req, res, url) {
  const base = { host: req.headers.host ?? new URL(cfg.publicUrl).host, cookie: req.headers.cookie ?? '' };
  let query = url.search;
  if (req.method === 'POST') {
    const body = await readBody(req);
    query = `?${body}`;
  }
  const first = await selfRequest('GET', `${url.pathname}${query}`, base);
  const m = /name="xsrf" value="([^"]+)"/.exec(first.body);
  if (first.status !== 200 || !m) {
    relay(res, first);
    return;
  }
  const jar = parseCookieHeader(base.cookie);
  applySetCookies(jar, first.headers['set-cookie']);
  const cookie = [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
  const body = new URLSearchParams({ xsrf: m[1], logout: 'yes' }).toString();
  const second = await selfRequest('POST', `${url.pathname}/confirm`, {
    ...base, cookie, 'content-type': 'application/x-www-form-urlencoded', 'content-length': Buffer.byteLength(body),
  }, body);
  const byName = new Map();
  for (const sc of [...(first.headers['set-cookie'] ?? []), ...(second.headers['set-cookie'] ?? [])]) {
    byName.set(sc.split('=')[0].trim(), sc);
  }
  const setCookie = [...byName.values()];
  const headers = { ...second.headers };
  delete headers['set-cookie'];
  delete headers['content-length'];
  delete headers['transfer-encoding'];
  delete headers.connection;
  delete headers['keep-alive'];
  const status = second.status === 303 ? 302 : second.status;
  res.writeHead(status, { ...headers, ...(setCookie.length ? { 'set-cookie': setCookie } : {}) });
  res.end(second.body);
}

// A JWT access token of ours that is still live: signature, issuer, expiry, and its session (sid)
// still exists (oidc-provider does not store JWT access tokens; Keycloak ties them to the session).
function sessionAlive(sid) {
  if (typeof sid !== 'string') return false;
  for (const [key] of entries) {
    if (!key.startsWith('Session:')) continue;
    const e = liveEntry(key);
    const auths = e?.payload?.authorizations ?? {};
    if (Object.values(auths).some((a) => a?.sid === sid)) return true;
  }
  return false;
}

async function verifyOurAccessToken(token) {
  try {
    const pub = { keys: jwks.keys.filter((k) => k.use !== 'enc').map(({ d, p, q, dp, dq, qi, ...rest }) => rest) };
    const { payload } = await jwtVerify(token, createLocalJWKSet(pub), { issuer: issuer(), algorithms: ['RS256', 'PS256', 'ES256'] });
    if (!sessionAlive(payload.sid)) return undefined;
    if (typeof payload.jti === 'string' && liveEntry(`RevokedAccessToken:${payload.jti}`)) return undefined;
    return payload;
  } catch {
    return undefined;
  }
}

// Userinfo for the JWT access tokens (oidc-provider refuses tokens that have an audience at its
// own userinfo endpoint; Keycloak accepts its access tokens there).
async function userinfo(req, res) {
  const m = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '');
  const fail = (desc) => send(res, 401, 'application/json', JSON.stringify({ error: 'invalid_token', error_description: desc }), {
    'www-authenticate': `Bearer realm="${cfg.realm}", error="invalid_token", error_description="${desc}"`,
  });
  if (!m) return fail('Token not provided');
  const payload = await verifyOurAccessToken(m[1]);
  if (!payload) return fail('Token verification failed');
  const user = usersById.get(payload.sub);
  if (!user) return fail('User not found');
  return send(res, 200, 'application/json', JSON.stringify({
    sub: user.id,
    email_verified: true,
    name: user.name,
    preferred_username: user.username,
    given_name: user.given_name,
    family_name: user.family_name,
    email: user.email,
  }));
}

// Introspection of JWT access tokens (oidc-provider refuses to introspect structured tokens);
// anything else (refresh tokens) goes on to oidc-provider.
function authenticateClient(req, form) {
  let id;
  let secret;
  const m = /^Basic\s+(\S+)$/i.exec(req.headers.authorization ?? '');
  if (m) {
    const dec = Buffer.from(m[1], 'base64').toString('utf8');
    const i = dec.indexOf(':');
    if (i < 0) return undefined;
    const un = (s) => { try { return decodeURIComponent(s.replace(/\+/g, '%20')); } catch { return undefined; } };
    id = un(dec.slice(0, i));
    secret = un(dec.slice(i + 1));
  } else {
    id = form.get('client_id');
    secret = form.get('client_secret');
  }
  const client = clients.find((c) => c.client_id === id);
  if (!client || typeof secret !== 'string' || !client.client_secret) return undefined;
  const a = crypto.createHash('sha256').update(secret).digest();
  const b = crypto.createHash('sha256').update(client.client_secret).digest();
  return crypto.timingSafeEqual(a, b) ? client : undefined;
}

async function introspect(req, res, bodyText) {
  const form = new URLSearchParams(bodyText);
  const client = authenticateClient(req, form);
  if (!client) {
    send(res, 401, 'application/json', JSON.stringify({ error: 'invalid_client', error_description: 'Authentication failed.' }));
    return;
  }
  const token = form.get('token') ?? '';
  const payload = await verifyOurAccessToken(token);
  if (!payload) {
    send(res, 200, 'application/json', JSON.stringify({ active: false }));
    return;
  }
  send(res, 200, 'application/json', JSON.stringify({
    ...payload, client_id: payload.azp, username: payload.preferred_username, token_type: 'Bearer', active: true,
  }));
}

// Revocation of JWT access tokens, as Keycloak does it (oidc-provider refuses structured tokens):
// the token's jti is kept until the token expires, and introspection and userinfo refuse it.
// Anything else (refresh tokens, opaque access tokens) goes on to oidc-provider.
async function revokeJwt(req, res, bodyText) {
  const form = new URLSearchParams(bodyText);
  const client = authenticateClient(req, form);
  if (!client) {
    send(res, 401, 'application/json', JSON.stringify({ error: 'invalid_client', error_description: 'Authentication failed.' }));
    return;
  }
  const payload = await verifyOurAccessToken(form.get('token') ?? '');
  if (payload) {
    if (payload.azp !== client.client_id) {
      send(res, 400, 'application/json', JSON.stringify({ error: 'unauthorized_client', error_description: 'Unmatching clients' }));
      return;
    }
    entries.set(`RevokedAccessToken:${payload.jti}`, { payload: { jti: payload.jti }, exp: payload.exp * 1000 });
  }
  // RFC 7009: an invalid or unknown token is not an error
  send(res, 200, 'application/json', '');
}

// ---------------------------------------------------------------------------------------------
// test-only administration: a user's sessions, and Keycloak's admin "Sign out"

function sessionsOf(user) {
  const out = [];
  for (const [key] of [...entries]) {
    if (!key.startsWith('Session:')) continue;
    const e = liveEntry(key);
    if (e && e.payload.accountId === user.id) out.push({ key, session: e.payload });
  }
  return out;
}

function refreshTokensOf(grantId) {
  const out = [];
  for (const [key] of [...entries]) {
    if (!key.startsWith('RefreshToken:')) continue;
    const e = liveEntry(key);
    if (e && e.payload.grantId === grantId && !e.payload.consumed) out.push(key.slice('RefreshToken:'.length));
  }
  return out;
}

function adminSessions(user) {
  return sessionsOf(user).map(({ session }) => {
    const clients = {};
    let sid;
    for (const [clientId, a] of Object.entries(session.authorizations ?? {})) {
      sid ??= a.sid;
      clients[clientId] = { sid: a.sid, grantId: a.grantId, refreshTokens: a.grantId ? refreshTokensOf(a.grantId) : [] };
    }
    return { sid, clients };
  });
}

async function adminLogout(user) {
  const sessions = sessionsOf(user);
  const sends = [];
  for (const { session } of sessions) {
    for (const [clientId, a] of Object.entries(session.authorizations ?? {})) {
      sends.push((async () => {
        const client = await provider.Client.find(clientId);
        if (!client?.backchannelLogoutUri) return undefined;
        let out;
        try {
          await client.backchannelLogout(user.id, a.sid);
          out = { client: clientId, sid: a.sid, ok: true };
        } catch (err) {
          out = { client: clientId, sid: a.sid, ok: false, error: err?.message ?? String(err) };
        }
        process.stdout.write(`BACKCHANNEL ${JSON.stringify(out)}\n`);
        return out;
      })());
    }
  }
  // every logout token at once (each call gives up after 2.5 s), then the sessions end
  const backchannel = (await Promise.all(sends)).filter(Boolean);
  for (const { key, session } of sessions) {
    for (const a of Object.values(session.authorizations ?? {})) {
      if (a.grantId) {
        await new StoreAdapter('Grant').revokeByGrantId(a.grantId);
        entries.delete(`Grant:${a.grantId}`);
      }
    }
    entries.delete(key);
  }
  return { sessions: sessions.length, backchannel };
}

async function handleAdmin(req, res, url) {
  const username = req.method === 'POST'
    ? String(JSON.parse((await readBody(req)) || '{}').username ?? '')
    : String(url.searchParams.get('username') ?? '');
  const user = users.find((u) => u.username === username.toLowerCase());
  if (!user) {
    send(res, 404, 'application/json', JSON.stringify({ error: 'User not found' }));
    return;
  }
  if (url.pathname === '/__admin/logout' && req.method === 'POST') {
    send(res, 200, 'application/json', JSON.stringify(await adminLogout(user)));
    return;
  }
  if (url.pathname === '/__admin/sessions' && req.method === 'GET') {
    send(res, 200, 'application/json', JSON.stringify(adminSessions(user)));
    return;
  }
  send(res, 404, 'application/json', JSON.stringify({ error: 'not found' }));
}

function realmInfo(res) {
  const sig = jwks.keys.find((k) => k.use !== 'enc' && k.kty === 'RSA');
  const spki = sig ? crypto.createPublicKey({ key: { kty: sig.kty, n: sig.n, e: sig.e }, format: 'jwk' }).export({ type: 'spki', format: 'der' }).toString('base64') : undefined;
  send(res, 200, 'application/json', JSON.stringify({
    realm: cfg.realm,
    public_key: spki,
    'token-service': `${issuer()}${OIDC_PATH}`,
    'account-service': `${issuer()}/account`,
    'tokens-not-before': 0,
  }));
}

async function handle(req, res) {
  const url = new URL(req.url, 'http://placeholder');
  const path = url.pathname;

  if (path === '/__control' && req.method === 'POST') {
    const body = JSON.parse((await readBody(req)) || '{}');
    control.delayMs = body.delayMs ?? {};
    control.failStatus = body.failStatus ?? {};
    send(res, 200, 'application/json', JSON.stringify(control));
    return;
  }
  if (path.startsWith('/__admin/')) {
    if (!providerCallback) {
      send(res, 503, 'application/json', JSON.stringify({ error: 'starting' }));
      return;
    }
    await handleAdmin(req, res, url);
    return;
  }
  if (path === '/health' || path === '/health/ready' || path === '/health/live') {
    send(res, 200, 'application/json', JSON.stringify({ status: 'UP' }));
    return;
  }

  if (!providerCallback) {
    send(res, 503, 'application/json', JSON.stringify({ error: 'starting' }));
    return;
  }
  const key = routeKey(path);
  if (key && !req.headers['x-kc-internal']) {
    const delay = control.delayMs[key];
    if (delay) await new Promise((r) => { setTimeout(r, delay); });
    const fail = control.failStatus[key];
    if (fail) {
      send(res, fail, 'application/json', JSON.stringify({ error: 'unknown_error', error_description: 'injected failure' }));
      return;
    }
  }

  if (path === LOGIN_ACTION_PATH) {
    await handleLogin(req, res, url);
    return;
  }
  if (path === REALM_PATH && req.method === 'GET') {
    realmInfo(res);
    return;
  }
  if (path === `${REALM_PATH}${OIDC_PATH}/userinfo`) {
    await userinfo(req, res);
    return;
  }
  if (path === `${REALM_PATH}${OIDC_PATH}/token/introspect` && req.method === 'POST' && !req.headers['x-kc-internal']) {
    const bodyText = await readBody(req);
    const token = new URLSearchParams(bodyText).get('token') ?? '';
    if (token.split('.').length === 3) {
      await introspect(req, res, bodyText);
      return;
    }
    // not a JWT (a refresh token): let oidc-provider answer
    const headers = { ...req.headers, 'content-length': String(Buffer.byteLength(bodyText)) };
    delete headers['transfer-encoding'];
    const r = await selfRequest('POST', req.url, headers, bodyText);
    relay(res, r);
    return;
  }
  if (path === `${REALM_PATH}${OIDC_PATH}/revoke` && req.method === 'POST' && !req.headers['x-kc-internal']) {
    const bodyText = await readBody(req);
    const token = new URLSearchParams(bodyText).get('token') ?? '';
    if (token.split('.').length === 3) {
      await revokeJwt(req, res, bodyText);
      return;
    }
    const headers = { ...req.headers, 'content-length': String(Buffer.byteLength(bodyText)) };
    delete headers['transfer-encoding'];
    const r = await selfRequest('POST', req.url, headers, bodyText);
    relay(res, r);
    return;
  }
  if (path === `${REALM_PATH}${OIDC_PATH}/logout` && !req.headers['x-kc-internal'] && (req.method === 'GET' || req.method === 'POST')) {
    await autoLogout(req, res, url);
    return;
  }
  if (path.startsWith(`${REALM_PATH}/`)) {
    // Mount the provider at /realms/<realm>; it builds URLs from originalUrl minus url.
    // Absolute URLs it builds (discovery) use the public URL, as Keycloak with a fixed hostname does.
    req.originalUrl = req.url;
    req.url = req.url.slice(REALM_PATH.length);
    req.headers['x-forwarded-host-original'] = req.headers.host ?? '';
    req.headers.host = new URL(cfg.publicUrl).host;
    await providerCallback(req, res);
    return;
  }
  send(res, 404, 'application/json', JSON.stringify({ error: 'Unable to find matching target resource method.' }));
}

let providerCallback;
let server;

function logRequest(req, res, started) {
  const auth = (req.headers.authorization ?? '').split(' ')[0] || undefined;
  const line = {
    method: req.method,
    path: (req.originalUrl ?? req.url).split('?')[0],
    host: req.headers['x-forwarded-host-original'] ?? req.headers.host,
    status: res.statusCode,
    auth,
    grant: req.grantType,
    internal: req.headers['x-kc-internal'] ? true : undefined,
    ms: Date.now() - started,
  };
  process.stdout.write(`REQ ${JSON.stringify(line)}\n`);
}

async function main() {
  loadState();
  server = http.createServer((req, res) => {
    const started = Date.now();
    res.on('finish', () => logRequest(req, res, started));
    handle(req, res).catch((err) => {
      console.error(`[provider] unhandled: ${err.stack ?? err}`);
      if (!res.headersSent) send(res, 500, 'application/json', JSON.stringify({ error: 'server_error' }));
      else res.destroy();
    });
  });
  server.keepAliveTimeout = 60_000;
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(cfg.port, cfg.host, resolve);
  });
  const { port } = server.address();
  cfg.port = port;
  cfg.publicUrl ??= `http://127.0.0.1:${port}`;
  makeProvider();
  providerCallback = provider.callback();
  process.stdout.write(`READY ${JSON.stringify({ port, issuer: issuer(), publicUrl: cfg.publicUrl, pid: process.pid })}\n`);
}

let stopping = false;
function shutdown() {
  if (stopping) return;
  stopping = true;
  try {
    saveState();
  } catch (err) {
    console.error(`could not save state: ${err.message}`);
  }
  server?.close(() => process.exit(0));
  server?.closeAllConnections?.();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
if (cfg.exitWithParent) {
  // Orphaned (re-parented): the process that started this one was killed without stopping it.
  const parent = process.ppid;
  setInterval(() => { if (process.ppid !== parent) shutdown(); }, 1000).unref();
}

main().catch((err) => {
  console.error(`[provider] failed to start: ${err.stack ?? err}`);
  process.exit(1);
});
