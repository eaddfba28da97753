// A real browser and a session ended at the provider (SPEC L8): headless Chromium (Debian's
// /usr/bin/chromium, driven with playwright-core; no browser is ever downloaded) logs in through a
// real Envoy with the filter; an administrator then signs the user out in the provider (Keycloak's
// admin console: Users → Sessions → Sign out), which sends a back-channel logout token to the
// Envoy; the browser's next page asks for the password. Screenshots go to tests/out/after-login-browser/.
//
// Chromium missing is a failure, never a skip: apt-get install -y chromium chromium-driver

import assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';

import {
  harness, keycloakConfig, freePort, sleep, crashLines, wasmExists, WASM_PATH,
} from './lib/index.mjs';
import { CHROMIUM, MISSING_CHROMIUM, launchChromium } from './lib/browser.mjs';

const BC_PATH = '/backchannel-logout';

const skip = wasmExists() || process.env.E2E_REQUIRE_WASM === '1'
  ? false : `the wasm module is not built (${WASM_PATH}); run make build`;
const h = harness('after-login-browser');

test('Chromium is installed (the browser test needs it)', () => {
  assert.ok(fs.existsSync(CHROMIUM), MISSING_CHROMIUM);
});

describe('a real browser whose session is ended at the provider', { skip }, () => {
  let provider;
  let echo;
  let envoy;
  let browser;
  let context;
  let page;
  let shot = 0;
  const base = () => `http://127.0.0.1:${envoy.port}`;

  async function screenshot(name) {
    shot += 1;
    const file = path.join(h.outDir, `${String(shot).padStart(2, '0')}-${name}.png`);
    await page.screenshot({ path: file, fullPage: true });
    return file;
  }

  /** The provider's login form is on screen, asking for a password. */
  async function assertLoginForm(what) {
    await page.waitForSelector('#kc-form-login', { timeout: 10000 });
    assert.ok(page.url().startsWith(`${provider.issuer}/login-actions/authenticate?`), `${what}: on the provider's login page (${page.url()})`);
    assert.ok(await page.isVisible('#password'), `${what}: password field`);
    assert.equal(await page.title(), 'Sign in to dev');
  }

  async function logInAsAlice(target) {
    await page.fill('#username', 'alice');
    await page.fill('#password', 'alice-password');
    await Promise.all([
      page.waitForURL(`${base()}${target}`, { timeout: 10000 }),
      page.click('#kc-login'),
    ]);
    await page.waitForSelector('#user');
    assert.equal(await page.textContent('#user'), 'Hello, alice');
  }

  const sessionCookies = async () => (await context.cookies(base()))
    .filter((c) => c.name.startsWith('access_token') && !c.name.includes('_tx_')).map((c) => c.name);

  before(async () => {
    // Fail (never skip) without Chromium, and before starting anything else.
    if (!fs.existsSync(CHROMIUM)) throw new Error(MISSING_CHROMIUM);

    const envoyPort = await freePort();
    provider = await h.startProvider({
      redirectUris: [`http://127.0.0.1:${envoyPort}/callback`],
      postLogoutRedirectUris: [`http://127.0.0.1:${envoyPort}/`],
      // Keycloak's client setting "Backchannel logout URL", session required
      config: { backchannelLogoutUri: `http://127.0.0.1:${envoyPort}${BC_PATH}` },
    });
    echo = await h.startEcho();
    envoy = await h.startEnvoy({
      filterConfig: {
        mode: 'login',
        keycloak: keycloakConfig(provider.port),
        client_id: 'productpage',
        client_secret: 'productpage-secret',
        session_secret: crypto.randomBytes(32).toString('base64'),
        claims_to_headers: { preferred_username: 'x-user' },
        backchannel_logout_path: BC_PATH,
        timeout_ms: 2000,
      },
      providerPort: provider.port,
      echoPort: echo.port,
      port: envoyPort,
    });
    if (envoy.exited) throw new Error(`Envoy refused the configuration (exit ${envoy.code}):\n${envoy.log().slice(-4000)}`);
    await provider.waitForRequests('/certs', { timeoutMs: 5000 });
    await sleep(600); // the workers pick the key set up on their next tick

    browser = await launchChromium({ viewport: { width: 1000, height: 700 } });
    ({ context, page } = browser);
  });

  after(async () => {
    await browser?.close();
    await h.cleanup();
  });

  h.test('logged in → the administrator signs alice out at the provider → the next page asks for the password', async () => {
    try {
      // 1. log in
      await page.goto(`${base()}/productpage`);
      await assertLoginForm('first visit');
      await logInAsAlice('/productpage');
      await screenshot('logged-in');
      assert.deepEqual((await sessionCookies()).sort(), ['access_token', 'access_token_session']);
      await page.reload();
      assert.equal(await page.textContent('#user'), 'Hello, alice', 'a reload stays logged in');

      // 2. the administrator ends alice's sessions at the provider: a logout token reaches the Envoy
      const result = await provider.adminLogout('alice');
      assert.equal(result.sessions, 1, `one session ended: ${JSON.stringify(result)}`);
      assert.deepEqual(result.backchannel.map((b) => [b.client, b.ok]), [['productpage', true]],
        `the Envoy took the logout token: ${JSON.stringify(result)}`);

      // 3. the next page: the filter clears the session and sends the browser to log in; the
      //    provider's session is gone too, so it asks for the password
      await page.goto(`${base()}/details`);
      await assertLoginForm('after the admin logout');
      await screenshot('asked-for-the-password');
      assert.deepEqual(await sessionCookies(), [], 'the session cookies are cleared');
      assert.equal(echo.sawPath('/details'), false, 'the page was not served to the ended session');

      // 4. logging in again brings alice to the page she asked for
      await logInAsAlice('/details');
      await screenshot('logged-in-again');
      assert.deepEqual(crashLines(envoy.log()), [], 'no panic in the filter');
    } catch (err) {
      await page?.screenshot({ path: path.join(h.outDir, 'zz-failure.png'), fullPage: true }).catch(() => {});
      if (page) fs.writeFileSync(path.join(h.outDir, 'zz-failure.html'), await page.content().catch(() => ''));
      throw err;
    }
  });
});
