// A real browser through login mode: headless Chromium (Debian's /usr/bin/chromium, driven with
// playwright-core; no browser is ever downloaded) in front of a real Envoy with the filter and the
// Keycloak look-alike. Screenshots of every step go to tests/out/browser/.
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

const skip = wasmExists() || process.env.E2E_REQUIRE_WASM === '1'
  ? false : `the wasm module is not built (${WASM_PATH}); run make build`;
const h = harness('browser');

test('Chromium is installed (the browser test needs it)', () => {
  assert.ok(fs.existsSync(CHROMIUM), MISSING_CHROMIUM);
});

describe('a real browser logs in and out through login mode', { skip }, () => {
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
    assert.ok(await page.isVisible('#username'), `${what}: username field`);
    assert.ok(await page.isVisible('#password'), `${what}: password field`);
    assert.equal(await page.title(), 'Sign in to dev');
  }

  async function logInAsAlice() {
    await page.fill('#username', 'alice');
    await page.fill('#password', 'alice-password');
    await Promise.all([
      page.waitForURL(`${base()}/productpage`, { timeout: 10000 }),
      page.click('#kc-login'),
    ]);
    await page.waitForSelector('#user');
    assert.equal(await page.textContent('#user'), 'Hello, alice');
  }

  const filterCookies = async () => (await context.cookies(base())).filter((c) => c.name.startsWith('access_token'));

  before(async () => {
    // Fail (never skip) without Chromium, and before starting anything else.
    if (!fs.existsSync(CHROMIUM)) throw new Error(MISSING_CHROMIUM);

    const envoyPort = await freePort();
    provider = await h.startProvider({
      redirectUris: [`http://127.0.0.1:${envoyPort}/callback`],
      postLogoutRedirectUris: [`http://127.0.0.1:${envoyPort}/`],
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

  h.test('open the page → provider login → back on the page as alice → logout → asked for the password again', async () => {
    try {
      // 1. the page sends the browser to the provider's login form
      await page.goto(`${base()}/productpage`);
      await assertLoginForm('first visit');
      await screenshot('login-page');
      assert.deepEqual((await filterCookies()).map((c) => c.name).filter((n) => !n.includes('_tx_')), [], 'no session yet');

      // 2. type alice's credentials: back on the page, which shows her name
      await logInAsAlice();
      await screenshot('logged-in');
      const cookies = await filterCookies();
      const access = cookies.find((c) => c.name === 'access_token');
      assert.ok(access, 'the access_token cookie is set');
      assert.equal(access.httpOnly, true, 'HttpOnly: page scripts cannot read it');
      assert.equal(access.sameSite, 'Lax');
      assert.ok(cookies.some((c) => c.name === 'access_token_session'), 'the session cookie is set');
      assert.ok(!cookies.some((c) => c.name.includes('_tx_')), 'the transaction cookie is gone');
      assert.equal(await page.evaluate(() => document.cookie.includes('access_token')), false, 'not visible to scripts');
      const seen = echo.last('/productpage');
      assert.equal(seen.headers['x-user'], 'alice');
      assert.equal(seen.headers.authorization, `Bearer ${access.value}`);

      // a reload stays logged in, without the provider
      provider.clearRequests();
      await page.reload();
      assert.equal(await page.textContent('#user'), 'Hello, alice');
      assert.equal(provider.requests().length, 0, 'a reload does not involve the provider');

      // 3. the logout link: cookies gone, the provider's session ended; the browser comes back to
      //    the site, which sends it to the login form again
      await page.click('#logout');
      await assertLoginForm('after logout');
      await screenshot('after-logout');
      assert.deepEqual((await filterCookies()).map((c) => c.name).filter((n) => !n.includes('_tx_')), [], 'the session cookies are cleared');
      const logouts = provider.requests('/protocol/openid-connect/logout');
      assert.ok(logouts.length >= 1, 'the browser went to the provider\'s end-session endpoint');

      // 4. visiting the page again: the password is asked again
      await page.goto(`${base()}/productpage`);
      await assertLoginForm('visiting the page again');
      await screenshot('login-again');

      // 5. and logging in again works
      await logInAsAlice();
      await screenshot('logged-in-again');
      assert.deepEqual(crashLines(envoy.log()), [], 'no panic in the filter');
    } catch (err) {
      await page?.screenshot({ path: path.join(h.outDir, 'zz-failure.png'), fullPage: true }).catch(() => {});
      if (page) fs.writeFileSync(path.join(h.outDir, 'zz-failure.html'), await page.content().catch(() => ''));
      throw err;
    }
  });
});
