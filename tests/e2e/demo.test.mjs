// Bookinfo in a box (`make demo`): the configs under envoy/ pass `envoy --mode validate`, and the
// demo started by scripts/demo.sh logs a user in through productpage's sidecar, shows "Hello,
// alice" with details and reviews answering 200, refreshes and logs out; details and reviews
// refuse expired and foreign tokens; productpage, like Istio's real one, answers 200 with "Error
// fetching product details" when they do, and its sidecar, which also sees productpage's outbound
// calls, sends the user to log in again. (bookinfo.test.mjs: key rotation, refresh, ON_REFUSAL=401.)
//
// The demo runs on free ports (scripts/demo.sh takes DEMO_*_PORT), so a `make demo` running at the
// same time does not matter; its logs and PIDs go to tests/out/demo-test/demo/.

import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';

import {
  CookieJar, request, requestWithJar, generateKeys, signToken, accessTokenClaims, decodeJwt,
  crashLines, waitFor, wasmExists, WASM_PATH, ENVOY_BIN,
} from './lib/index.mjs';
import {
  PAGE_HEADERS, API_HEADERS, loginThroughFilter, startLogin, atProvider, setCookie, isCleared,
} from './lib/login.mjs';
import { outDir, REPO_DIR } from './lib/paths.mjs';
import {
  startDemo, stopDemo, demoPids, demoLog, demoProviderRequests, envoyConfigs, renderEnvoyConfig,
  validateEnvoyConfig, freeDemoPorts, demoUrls,
} from './lib/demo.mjs';

const skip = (wasmExists() && fs.existsSync(ENVOY_BIN)) || process.env.E2E_REQUIRE_WASM === '1'
  ? false : `the wasm module (${WASM_PATH}) or Envoy (${ENVOY_BIN}) is missing; run make setup build`;
const OUT = outDir('demo-test');
const DEMO_OUT = path.join(OUT, 'demo');
const now = () => Math.floor(Date.now() / 1000);

/** The text of an element with this id in the productpage HTML. */
function byId(html, id) {
  const m = new RegExp(`id="${id}"[^>]*>([^<]*)<`).exec(html);
  return m ? m[1] : undefined;
}

function tail(text, n = 60) {
  const lines = text.trimEnd().split('\n');
  return lines.slice(-n).join('\n');
}

function demoLogs() {
  return ['envoy', 'provider', 'productpage', 'details', 'reviews']
    .map((name) => `----- ${path.relative(REPO_DIR, DEMO_OUT)}/${name}.log (last lines) -----\n${tail(demoLog(name, DEMO_OUT))}`).join('\n');
}

describe('envoy/*.yaml', { skip }, () => {
  const files = envoyConfigs();

  it('has the demo and the validate-only example', () => {
    const names = files.map((f) => path.basename(f));
    assert.ok(names.includes('demo.yaml'), names.join(', '));
    assert.ok(names.includes('validate-only.yaml'), names.join(', '));
  });

  it('demo.yaml runs the same productpage filter on productpage\'s inbound and outbound listeners (one vm_id, one configuration)', () => {
    const lines = fs.readFileSync(path.join(REPO_DIR, 'envoy', 'demo.yaml'), 'utf8').split('\n');
    const blocks = [];
    lines.forEach((line, i) => {
      if (!/^\s+vm_id: productpage$/.test(line)) return;
      let from = i;
      while (from > 0 && !/^\s+config:$/.test(lines[from])) from -= 1;
      let to = i;
      while (to < lines.length && !/^\s+}$/.test(lines[to])) to += 1;
      blocks.push(lines.slice(from, to + 1).filter((l) => !l.trim().startsWith('#')).join('\n'));
    });
    assert.equal(blocks.length, 2, 'productpage_inbound and productpage_outbound');
    assert.equal(blocks[1], blocks[0]);
    assert.match(blocks[0], /"upstream_401_services": \["details:9080", "reviews:9080"\]/);
    const listeners = lines.join('\n');
    assert.match(listeners, /name: productpage_outbound\n(.*\n){0,3}\s+traffic_direction: OUTBOUND/);
  });

  for (const file of files) {
    const name = path.basename(file);
    it(`${name} passes envoy --mode validate (run from the repository root)`, async () => {
      const r = await validateEnvoyConfig(path.relative(REPO_DIR, file), { cwd: REPO_DIR });
      assert.equal(r.code, 0, `${name}:\n${tail(r.stdout + r.stderr)}`);
      assert.match(r.stdout + r.stderr, /configuration '.*' OK/);
      // the module was loaded and accepted its configuration in every VM
      assert.doesNotMatch(r.stdout + r.stderr, /invalid configuration/);
      assert.match(r.stdout + r.stderr, /mesh-oidc: configured/);
    });

    it(`${name} passes envoy --mode validate when rendered with the module's absolute path (as scripts/demo.sh does)`, async () => {
      const rendered = renderEnvoyConfig(file, path.join(OUT, `rendered-${name}`));
      assert.ok(fs.readFileSync(rendered, 'utf8').includes(`filename: ${WASM_PATH}`), 'the module path was rendered');
      const r = await validateEnvoyConfig(rendered, { cwd: OUT });
      assert.equal(r.code, 0, `${name} (rendered):\n${tail(r.stdout + r.stderr)}`);
      assert.match(r.stdout + r.stderr, /configuration '.*' OK/);
    });
  }
});

describe('make demo (scripts/demo.sh)', { skip }, () => {
  const keys = generateKeys();
  const keysFile = path.join(OUT, 'provider-keys.json');
  const jar = new CookieJar();
  let DEMO; // the demo's URLs
  let PP; // productpage's sidecar (the browser-facing address)
  let started;
  let failed = false;
  let login; // loginThroughFilter's steps
  let accessToken; // alice's access token from the login

  const bearer = (token) => ({ ...API_HEADERS, authorization: `Bearer ${token}` });
  const sign = (claims) => signToken(claims, { key: keys.signing });

  before(async () => {
    fs.writeFileSync(keysFile, JSON.stringify(keys.jwks));
    const ports = await freeDemoPorts();
    DEMO = demoUrls(ports);
    PP = DEMO.productpage;
    started = await startDemo({ ports, outDir: DEMO_OUT, env: { DEMO_KEYS_FILE: keysFile } });
    fs.writeFileSync(path.join(OUT, 'demo-start.out'), `${started.stdout}\n----- stderr -----\n${started.stderr}`);
    if (started.code !== 0) {
      throw new Error(`scripts/demo.sh exited ${started.code} after ${started.ms} ms:\n${started.stdout}\n${started.stderr}\n${demoLogs()}`);
    }
  });

  after(async () => {
    const pids = demoPids(DEMO_OUT);
    const stopped = await stopDemo({ outDir: DEMO_OUT });
    fs.writeFileSync(path.join(OUT, 'demo-stop.out'), `${stopped.stdout}\n${stopped.stderr}`);
    if (failed) console.log(demoLogs());
    assert.equal(stopped.code, 0, `scripts/demo.sh stop: ${stopped.stdout}${stopped.stderr}`);
    for (const { pid, name } of pids) {
      let alive = true;
      try { process.kill(pid, 0); } catch { alive = false; }
      assert.equal(alive, false, `${name} (pid ${pid}) still runs after scripts/demo.sh stop`);
    }
    assert.equal(fs.existsSync(path.join(DEMO_OUT, 'pids')), false, 'the pids file is removed');
  });

  // Print the demo's logs when a test fails.
  const check = (fn) => async (t) => {
    try { await fn(t); } catch (err) { failed = true; throw err; }
  };

  it('starts detached, prints the URL and the credentials, and writes its PIDs', check(() => {
    assert.ok(started.stdout.includes(`${PP}/productpage`), started.stdout);
    assert.match(started.stdout, /alice \/ alice-password/);
    const names = demoPids(DEMO_OUT).map((p) => p.name).sort();
    assert.deepEqual(names, ['details', 'envoy', 'productpage', 'provider', 'reviews']);
    assert.ok(started.ms < 60000, `started in ${started.ms} ms`);
  }));

  it('logs alice in through productpage\'s sidecar: "Hello, alice", details and reviews answer 200', check(async () => {
    login = await loginThroughFilter(jar, PP, '/productpage');
    // L1: to the public (browser-facing) authorization endpoint
    assert.equal(login.start.status, 302);
    assert.equal(`${login.start.authUrl.origin}${login.start.authUrl.pathname}`, `${DEMO.issuer}/protocol/openid-connect/auth`);
    assert.equal(login.start.params.client_id, 'productpage');
    assert.equal(login.start.params.redirect_uri, `${PP}/callback`);
    assert.equal(login.sawLoginForm, true, 'the provider showed its login form');
    // L2: the callback sets the session and goes back to the page
    assert.equal(login.callback.status, 302, `callback: ${login.callback.status} ${login.callback.body.slice(0, 300)}`);
    assert.equal(new URL(login.callback.headers.location, PP).pathname, '/productpage');
    const cookie = setCookie(login.callback, 'access_token');
    assert.ok(cookie && !isCleared(cookie), 'access_token cookie set');
    accessToken = cookie.value;

    const page = login.final;
    assert.equal(page.status, 200, `productpage: ${page.status} ${page.body.slice(0, 500)}`);
    assert.match(page.body, /Hello, alice/);
    assert.equal(byId(page.body, 'details-status'), '200', 'details answered 200');
    assert.equal(byId(page.body, 'reviews-status'), '200', 'reviews answered 200');
    assert.equal(byId(page.body, 'details-caller'), 'alice', 'details saw alice (x-user from its own sidecar)');
    assert.equal(byId(page.body, 'reviews-caller'), 'alice', 'reviews saw alice');
    assert.match(page.body, /href="\/logout"/);
    // the page shows the access token's expiry: 60 s from the login
    const exp = Number(/data-exp="(\d+)"/.exec(page.body)?.[1]);
    assert.equal(exp, decodeJwt(accessToken).payload.exp);
    assert.ok(exp > now() && exp <= now() + 61, `exp ${exp}, now ${now()}`);

    // The code and the refresh token went to the provider by its internal (Service) name, through
    // the cluster; the browser only ever used the public one.
    const reqs = demoProviderRequests(DEMO_OUT);
    const exchange = reqs.find((r) => r.path === '/realms/dev/protocol/openid-connect/token' && r.grant === 'authorization_code');
    assert.ok(exchange, 'the provider saw the code exchange');
    assert.equal(exchange.host, DEMO.internalHost);
    assert.equal(exchange.status, 200);
    const certs = reqs.filter((r) => r.path === '/realms/dev/protocol/openid-connect/certs');
    assert.ok(certs.length >= 1 && certs.every((r) => r.host === DEMO.internalHost), JSON.stringify(certs));
    const auth = reqs.find((r) => r.path === '/realms/dev/protocol/openid-connect/auth');
    assert.equal(auth.host, new URL(DEMO.provider).host);
  }));

  it('details and reviews take alice\'s token, set x-user from it, and refuse requests without one', check(async () => {
    for (const [base, p] of [[DEMO.details, '/details/0'], [DEMO.reviews, '/reviews/0']]) {
      const ok = await request(`${base}${p}`, { headers: { ...bearer(accessToken), 'x-user': 'mallory' } });
      assert.equal(ok.status, 200, `${base}${p}: ${ok.status} ${ok.body}`);
      assert.equal(JSON.parse(ok.body).caller, 'alice', 'x-user comes from the token, never from the caller');
      const none = await request(`${base}${p}`, { headers: { ...API_HEADERS, 'x-user': 'mallory' } });
      assert.equal(none.status, 401);
      assert.match(String(none.headers['www-authenticate']), /^Bearer/);
      const health = await request(`${base}/health`);
      assert.equal(health.status, 200, '/health is a skip path');
    }
  }));

  it('details and reviews answer 401 to an expired token and to a token of another client', check(async () => {
    const expired = await sign(accessTokenClaims({ issuer: DEMO.issuer, ttl: -120, now: now() - 60 }));
    const foreign = await sign(accessTokenClaims({ issuer: DEMO.issuer, azp: 'someone-else' }));
    const fine = await sign(accessTokenClaims({ issuer: DEMO.issuer }));
    for (const [base, p] of [[DEMO.details, '/details/0'], [DEMO.reviews, '/reviews/0']]) {
      for (const [what, token] of [['expired', expired], ['azp someone-else', foreign]]) {
        const res = await request(`${base}${p}`, { headers: bearer(token) });
        assert.equal(res.status, 401, `${what} at ${base}: ${res.status} ${res.body}`);
        assert.match(String(res.headers['www-authenticate']), /error="invalid_token"/, `${what} at ${base}`);
      }
      // the same key, in time, for productpage: accepted (so the 401s above are about exp / azp)
      const res = await request(`${base}${p}`, { headers: bearer(fine) });
      assert.equal(res.status, 200, `fresh token at ${base}: ${res.status} ${res.body}`);
    }
  }));

  it('productpage, like Bookinfo\'s, answers 200 with "Error fetching product details" when details and reviews refuse the token it forwards', check(async () => {
    const expired = await sign(accessTokenClaims({ issuer: DEMO.issuer, ttl: -120, now: now() - 60 }));
    const res = await request(`${DEMO.productpageApp}/productpage`, {
      headers: { ...PAGE_HEADERS, authorization: `Bearer ${expired}`, 'x-user': 'alice' },
    });
    assert.equal(res.status, 200, `productpage app: ${res.status} ${res.body.slice(0, 300)}`);
    assert.match(res.body, /Error fetching product details/);
    assert.match(res.body, /Sorry, product details are currently unavailable for this book\./);
    assert.match(res.body, /Error fetching product reviews/);
    assert.equal(byId(res.body, 'details-status'), '401');
    assert.equal(byId(res.body, 'reviews-status'), '401');
  }));

  it('productpage HTML-escapes the user name, and shows the error text for a token details and reviews refuse', check(async () => {
    const fine = await sign(accessTokenClaims({ issuer: DEMO.issuer }));
    const res = await request(`${DEMO.productpageApp}/productpage`, {
      headers: { ...PAGE_HEADERS, authorization: `Bearer ${fine}`, 'x-user': '<script>alert(1)</script>' },
    });
    assert.equal(res.status, 200);
    assert.ok(res.body.includes('Hello, &lt;script&gt;alert(1)&lt;/script&gt;'), res.body.slice(0, 800));
    assert.ok(!res.body.includes('<script>'));
    // a broken Authorization header (not a JWT): details and reviews refuse it, the page says so
    const junk = await request(`${DEMO.productpageApp}/productpage`, { headers: { ...PAGE_HEADERS, authorization: 'Bearer a.b' } });
    assert.equal(junk.status, 200);
    assert.equal(byId(junk.body, 'details-status'), '401');
  }));

  it('details refusing the token (productpage answers 200) sends the browser to log in again: the outbound listener saw the 401', check(async () => {
    // A token productpage's sidecar accepts (aud productpage) but details' and reviews' refuse (azp).
    // No session cookie, so no refresh token: on_upstream_401 "refresh" acts like "login".
    const token = await sign(accessTokenClaims({ issuer: DEMO.issuer, aud: 'productpage', azp: 'someone-else' }));
    const j = new CookieJar();
    j.set(PP, 'access_token', token);
    const res = await requestWithJar(j, `${PP}/productpage`, { headers: PAGE_HEADERS });
    assert.equal(res.status, 302, `${res.status} ${res.body.slice(0, 300)}`);
    const loc = new URL(res.headers.location);
    assert.equal(`${loc.origin}${loc.pathname}`, `${DEMO.issuer}/protocol/openid-connect/auth`);
    assert.ok(isCleared(setCookie(res, 'access_token')), 'the refused access_token cookie is cleared');
    // An API call (not a page) gets productpage's answer as it is.
    const j2 = new CookieJar();
    j2.set(PP, 'access_token', token);
    const api = await requestWithJar(j2, `${PP}/productpage`, { headers: API_HEADERS });
    assert.equal(api.status, 200);
    assert.equal(byId(api.body, 'details-status'), '401');
    // the outbound listener carried productpage's calls to details and reviews, with the page's
    // x-request-id (the access log is flushed every 500 ms)
    const outboundLine = /\[access\] productpage -> details:9080 "GET \/details\/0" 401 .* x-request-id=[0-9a-f-]{36} /;
    assert.ok(await waitFor(() => outboundLine.test(demoLog('envoy', DEMO_OUT)), { timeoutMs: 3000 }), 'the outbound listener logged details\' 401');
    assert.match(demoLog('envoy', DEMO_OUT), /answered the workload 401/);
    assert.match(demoLog('envoy', DEMO_OUT), /on_upstream_401/);
  }));

  it('refreshes the access token when the browser dropped it (60 s later) and when it has expired', check(async () => {
    const before = decodeJwt(accessToken).payload;
    await new Promise((r) => { setTimeout(r, 1100); }); // a new token gets a later iat / exp
    // the browser drops the cookie at its Max-Age; the sealed session cookie is still there
    jar.delete(PP, 'access_token');
    const res = await requestWithJar(jar, `${PP}/productpage`, { headers: PAGE_HEADERS });
    assert.equal(res.status, 200, `${res.status} ${res.body.slice(0, 300)}`);
    assert.match(res.body, /Hello, alice/);
    const fresh = setCookie(res, 'access_token');
    assert.ok(fresh && !isCleared(fresh), 'a new access_token cookie');
    const after1 = decodeJwt(fresh.value).payload;
    assert.notEqual(after1.jti, before.jti);
    assert.ok(after1.exp > before.exp, `exp ${before.exp} -> ${after1.exp}`);
    assert.equal(Number(/data-exp="(\d+)"/.exec(res.body)?.[1]), after1.exp, 'the page shows the new expiry');
    assert.equal(byId(res.body, 'details-status'), '200');

    // an expired access token in the cookie (signed by the realm's key): refreshed as well
    const expired = await sign(accessTokenClaims({ issuer: DEMO.issuer, aud: 'productpage', ttl: -120, now: now() - 60 }));
    jar.set(PP, 'access_token', expired);
    const res2 = await requestWithJar(jar, `${PP}/productpage`, { headers: PAGE_HEADERS });
    assert.equal(res2.status, 200, `${res2.status} ${res2.body.slice(0, 300)}`);
    assert.match(res2.body, /Hello, alice/);
    accessToken = jar.get(PP, 'access_token');
    assert.notEqual(accessToken, expired);
    const shown = Number(/data-exp="(\d+)"/.exec(res2.body)?.[1]);
    assert.equal(shown, decodeJwt(accessToken).payload.exp, 'the page shows the refreshed token\'s expiry');
    assert.ok(shown > now(), `exp ${shown}`);

    // (the second refresh may reuse the first one's answer: one refresh per session at a time)
    const refreshes = demoProviderRequests(DEMO_OUT).filter((r) => r.grant === 'refresh_token');
    assert.ok(refreshes.length >= 1, `refresh grants seen: ${refreshes.length}`);
    assert.ok(refreshes.every((r) => r.host === DEMO.internalHost && r.status === 200), JSON.stringify(refreshes));
  }));

  it('logs out at the provider and lands on the public index page; the next visit shows the login form', check(async (t) => {
    const out = await requestWithJar(jar, `${PP}/logout`, { headers: PAGE_HEADERS });
    assert.equal(out.status, 302);
    const loc = new URL(out.headers.location);
    assert.equal(`${loc.origin}${loc.pathname}`, `${DEMO.issuer}/protocol/openid-connect/logout`);
    assert.equal(loc.searchParams.get('post_logout_redirect_uri'), `${PP}/`);
    assert.equal(loc.searchParams.get('client_id'), 'productpage');
    assert.ok(loc.searchParams.get('id_token_hint'), 'id_token_hint');
    assert.ok(isCleared(setCookie(out, 'access_token')), 'access_token cleared');
    assert.equal(jar.get(PP, 'access_token'), undefined);

    const atKc = await requestWithJar(jar, loc.href, { headers: PAGE_HEADERS });
    assert.equal(atKc.status, 302, `provider logout: ${atKc.status} ${atKc.body.slice(0, 300)}`);
    // back to the public index, with the state the filter sent (L6+)
    const back = new URL(atKc.headers.location);
    assert.equal(`${back.origin}${back.pathname}`, `${PP}/`);
    assert.equal(back.searchParams.get('state'), loc.searchParams.get('state'));
    const index = await requestWithJar(jar, `${PP}/`, { headers: PAGE_HEADERS });
    assert.equal(index.status, 200, '/ is a skip path');
    assert.match(index.body, /href="\/productpage"/);

    const again = await startLogin(jar, `${PP}/productpage`);
    assert.equal(again.status, 302);
    const p = await atProvider(jar, again.authUrl, `${PP}/callback`);
    assert.ok(p.loginPage, 'the provider session ended: the login form again');

    // Without introspection, a logged-out user's access token is still accepted by details until
    // it expires (at most 60 s here): report it, do not assert it.
    const stale = await request(`${DEMO.details}/details/0`, { headers: bearer(accessToken) });
    t.diagnostic(`after logout, details answers ${stale.status} to the (unexpired) access token of the ended session`);
  }));

  it('keeps tokens out of the logs and never panics', check(() => {
    const envoyLog = demoLog('envoy', DEMO_OUT);
    assert.deepEqual(crashLines(envoyLog), []);
    assert.ok(!envoyLog.includes(accessToken), 'no access token in Envoy\'s log');
    assert.ok(!envoyLog.includes(login.callbackUrl.split('code=')[1]?.split('&')[0] ?? 'no-code'), 'no code in Envoy\'s log');
    for (const name of ['productpage', 'details', 'reviews']) {
      assert.ok(!demoLog(name, DEMO_OUT).includes(accessToken), `no access token in ${name}'s log`);
    }
  }));
});
