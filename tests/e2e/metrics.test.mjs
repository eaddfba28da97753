// Metrics (proxy-wasm counters) move at Envoy's /stats/prometheus as the filter works: logins
// started, callbacks ok and failed by reason, rejected tokens by reason, key-set fetches.

import assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import { after, before, describe } from 'node:test';

import {
  harness, request, CookieJar, keycloakConfig, freePort, sleep, generateKeys, wasmExists, WASM_PATH,
  API_HEADERS, PAGE_HEADERS, loginThroughFilter,
} from './lib/index.mjs';

const skip = wasmExists() || process.env.E2E_REQUIRE_WASM === '1'
  ? false : `the wasm module is not built (${WASM_PATH}); run make build`;
const h = harness('metrics');

/** The mesh_oidc_* counters of an Envoy, by name. */
async function counters(envoy) {
  const res = await request(`http://127.0.0.1:${envoy.adminPort}/stats/prometheus`);
  assert.equal(res.status, 200);
  const out = {};
  for (const line of res.body.split('\n')) {
    const m = /^(mesh_oidc_[a-z0-9_]+)\{[^}]*\} (\d+)/.exec(line);
    if (m) out[m[1]] = (out[m[1]] ?? 0) + Number(m[2]);
  }
  return out;
}

describe('metrics', { skip }, () => {
  let provider;
  let echo;
  let envoy;
  let port;

  before(async () => {
    port = await freePort();
    provider = await h.startProvider({
      keys: generateKeys(),
      redirectUris: [`http://127.0.0.1:${port}/callback`],
      postLogoutRedirectUris: [`http://127.0.0.1:${port}/`],
    });
    echo = await h.startEcho();
    envoy = await h.startEnvoy({
      filterConfig: {
        mode: 'login',
        keycloak: keycloakConfig(provider.port),
        client_id: 'productpage',
        client_secret: 'productpage-secret',
        session_secret: crypto.randomBytes(32).toString('base64'),
        timeout_ms: 2000,
      },
      providerPort: provider.port,
      echoPort: echo.port,
      port,
    });
    if (envoy.exited) throw new Error(`Envoy refused the configuration:\n${envoy.log().slice(-3000)}`);
    await provider.waitForRequests('/certs', { count: 1, timeoutMs: 5000 });
    await sleep(500);
  });
  after(() => h.cleanup());

  h.test('counters move at /stats/prometheus', async () => {
    const base = `http://127.0.0.1:${port}`;
    const before = await counters(envoy);
    assert.ok((before.mesh_oidc_jwks_fetches_ok ?? 0) >= 1, `key-set fetches counted: ${JSON.stringify(before)}`);

    // A full login: one login started, one callback ok.
    const login = await loginThroughFilter(new CookieJar(), base, '/productpage');
    assert.equal(login.final.status, 200);
    // A callback with a state no transaction matches.
    const bad = await request(`${base}/callback?code=x&state=nothing-started-this`, { headers: PAGE_HEADERS });
    assert.equal(bad.status, 400);
    // An API call without a session, and one with a garbage bearer token.
    assert.equal((await request(`${base}/api`, { method: 'POST', headers: API_HEADERS })).status, 401);
    assert.equal((await request(`${base}/api`, { headers: { ...API_HEADERS, authorization: 'Bearer a.b.c' } })).status, 401);

    let after = {};
    for (let i = 0; i < 20; i += 1) { // counters are flushed to the admin view promptly; allow a moment
      after = await counters(envoy);
      if ((after.mesh_oidc_callbacks_ok ?? 0) > (before.mesh_oidc_callbacks_ok ?? 0)) break;
      await sleep(100);
    }
    const moved = (name) => (after[name] ?? 0) - (before[name] ?? 0);
    assert.ok(moved('mesh_oidc_logins_started') >= 1, `logins_started: ${JSON.stringify(after)}`);
    assert.equal(moved('mesh_oidc_callbacks_ok'), 1, 'callbacks_ok');
    assert.equal(moved('mesh_oidc_callbacks_failed_state'), 1, 'callbacks_failed_state');
    assert.ok(moved('mesh_oidc_tokens_rejected_missing') >= 1, 'tokens_rejected_missing');
  });
});
