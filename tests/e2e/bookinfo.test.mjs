// Issue 10: Bookinfo as Istio runs it. productpage (demo/productpage.py) behaves like Istio's
// real one: when details or reviews refuse the token it forwards, it still answers 200, with
// "Error fetching product details". Only productpage's sidecar on the outbound side (envoy/demo.yaml's
// productpage_outbound: the same filter, the same VM) sees the 401, under the page's x-request-id,
// and applies on_upstream_401 ("refresh") to the page.
//
//   (a) the provider rotates its signing key (the old one dropped) while alice holds a session:
//       details' sidecar refuses her token, productpage answers 200 with the error text, and one
//       reload (following redirects) ends with the page whole, through a refresh grant
//   (b) refresh after rotation: a short-lived token expires after a rotation; the reload refreshes
//       with a token naming the new key, with no authorization round trip
//   (c) the sealed cookies never reach productpage, details or reviews, on any path
//   (d) productpage with ON_REFUSAL=401, straight to details (no outbound listener): the seed's way
//
// Envoy runs envoy/demo.yaml as `scripts/demo.sh render` writes it, with the test provider (whose
// keys can be rotated while sessions live on) and details' and reviews' key sets refreshed every
// 10 s (the minimum) instead of 300 s. bookinfo-browser.test.mjs does (a) in Chromium.

import assert from 'node:assert/strict';
import { after, before, describe } from 'node:test';

import {
  harness, CookieJar, request, requestWithJar, follow, generateKeys, generateKey, withKeys, signToken,
  accessTokenClaims, decodeJwt, sleep, waitFor, crashLines, wasmExists, WASM_PATH, ENVOY_BIN,
} from './lib/index.mjs';
import {
  PAGE_HEADERS, API_HEADERS, loginThroughFilter, setCookie, isCleared,
} from './lib/login.mjs';
import { startBookinfo, pageState, byId, untilServicesAnswer } from './lib/bookinfo.mjs';
import * as fs from 'node:fs';

const skip = (wasmExists() && fs.existsSync(ENVOY_BIN)) || process.env.E2E_REQUIRE_WASM === '1'
  ? false : `the wasm module (${WASM_PATH}) or Envoy (${ENVOY_BIN}) is missing; run make setup build`;
const h = harness('bookinfo');

const bearer = (token) => ({ ...API_HEADERS, authorization: `Bearer ${token}` });

const kidOf = (token) => decodeJwt(token).header.kid;
/** The filter's sealed cookies and chunks: never for the app (B6). */
const isFilterInternal = (name) => /^access_token_(session(_\d+)?|tx_.*|\d+)$/.test(name);

function assertWhole(res, what) {
  const s = pageState(res);
  assert.deepEqual(
    { status: s.status, hello: s.hello, details: s.details, reviews: s.reviews, detailsError: s.detailsError, reviewsError: s.reviewsError },
    { status: 200, hello: 'Hello, alice', details: '200', reviews: '200', detailsError: false, reviewsError: false },
    `${what}: the page is whole (${res.status} ${res.body.slice(0, 300)})`,
  );
}

/** Cookie names an app logged (demo/*.py: `cookies=[a, b]`), one list per request line. */
function loggedCookieLists(log) {
  return [...log.matchAll(/"(GET|HEAD|POST) (\S+) HTTP\/1\.1" \d+ x-request-id=(\S+) cookies=\[([^\]]*)\]/g)]
    .map((m) => ({ path: m[2], id: m[3], names: m[4] ? m[4].split(', ') : [] }));
}

describe('Bookinfo with a productpage that answers 200 when details refuses (issue 10)', { skip }, () => {
  const k1 = generateKeys();
  let bk;
  let PP;
  const jar = new CookieJar();
  let productpageFetchedAt = 0; // when productpage's sidecar last fetched the key set (at most every 5 s for a new kid)

  before(async () => {
    bk = await startBookinfo(h, { keys: k1, jwksRefreshSeconds: 10 });
    PP = bk.urls.productpage;
  });

  after(() => h.cleanup());

  h.test('(a) a signing-key rotation while alice is logged in: details refuses, productpage says "Error fetching", one reload makes the page whole again through a refresh', async (_c, t) => {
    const login = await loginThroughFilter(jar, PP, '/productpage');
    assertWhole(login.final, 'after the login');
    const oldToken = jar.get(PP, 'access_token');
    assert.equal(kidOf(oldToken), k1.signing.kid);

    // The provider rotates: a new signing key only, the old one dropped; sessions stay.
    const k2 = withKeys(k1.enc, [generateKey('RS256')]);
    await bk.provider.restart({ keys: k2 });
    const rotated = Date.now();
    // details' and reviews' sidecars fetch the key set every 10 s: soon they refuse the old token
    const refused = await untilServicesAnswer(bk.urls, oldToken, 401);
    assert.ok(refused, 'details and reviews refuse the old token within 15 s of the rotation');
    t.diagnostic(`details and reviews refused the old token ${Date.now() - rotated} ms after the rotation`);

    // What stock Bookinfo does with it: 200, and the error text where details and reviews were.
    const stock = await request(`${bk.urls.productpageApp}/productpage`, {
      headers: { ...PAGE_HEADERS, authorization: `Bearer ${oldToken}`, 'x-request-id': `direct-${Date.now()}` },
    });
    assert.equal(stock.status, 200, 'productpage itself answers 200');
    assert.match(stock.body, /Error fetching product details/);
    assert.match(stock.body, /Sorry, product details are currently unavailable for this book\./);
    assert.match(stock.body, /Error fetching product reviews/);

    // One reload, following redirects as a browser does.
    const before401 = (await bk.counters()).upstream_401 ?? 0;
    bk.provider.clearRequests();
    const hops = await follow(jar, `${PP}/productpage`, { headers: PAGE_HEADERS });
    productpageFetchedAt = Date.now();
    t.diagnostic(`reload: ${hops.map((x) => `${x.status} ${new URL(x.url).pathname}`).join(' -> ')}`);
    const first = hops[0];
    assert.equal(first.status, 302, `the page productpage answered with 200 is replaced by a redirect: ${first.status} ${first.body.slice(0, 300)}`);
    assert.equal(new URL(first.headers.location, PP).href, `${PP}/productpage`, 'back to the same page');
    assert.ok(isCleared(setCookie(first, 'access_token')), 'the refused access token is cleared');
    assert.equal(first.headers['cache-control'], 'no-store');
    const last = hops[hops.length - 1];
    assertWhole(last, 'after the reload');
    assert.ok(hops.length <= 2, `one redirect, no provider page: ${hops.map((x) => x.url).join(' -> ')}`);
    assert.ok(hops.every((x) => x.url.startsWith(PP)), 'no hop to the provider');

    // refreshed, with the session's refresh token, to a token of the new key
    const newToken = jar.get(PP, 'access_token');
    assert.notEqual(newToken, oldToken);
    assert.equal(kidOf(newToken), k2.signing.kid, 'the new token names the new key');
    const grants = await bk.provider.waitForRequests((r) => r.grant === 'refresh_token');
    assert.equal(grants.length, 1, `one refresh grant: ${JSON.stringify(bk.provider.requests())}`);
    assert.equal(grants[0].status, 200);
    assert.equal(bk.provider.requests('/protocol/openid-connect/auth').length, 0, 'no authorization round trip');

    const after401 = (await bk.counters()).upstream_401 ?? 0;
    assert.ok(after401 > before401, `mesh_oidc_upstream_401 moved: ${before401} -> ${after401}`);

    // productpage answered that page with 200 and said which request it was; the outbound
    // listener saw details refuse the call made for it, under the same x-request-id.
    const pageId = [...bk.appLog('productpage').matchAll(/details and reviews refused the token \(401\); x-request-id (\S+); answering 200/g)]
      .map((m) => m[1]).filter((id) => !id.startsWith('direct-')).pop();
    assert.ok(pageId, 'productpage logged the refused page request');
    const line = new RegExp(`\\[access\\] productpage -> details:9080 "GET /details/0" 401 \\S+ x-request-id=${pageId} `);
    assert.ok(await waitFor(() => line.test(bk.envoyLog()), { timeoutMs: 3000 }), `the outbound listener logged details' 401 for ${pageId}`);
    assert.match(bk.envoyLog(), new RegExp(`mesh-oidc\\[${pageId}\\]: (details|reviews):9080 answered the workload 401`));
    assert.deepEqual(crashLines(bk.envoyLog()), []);
  });

  h.test('(b) refresh after a rotation: a short-lived token expires, the refreshed one names the new key, and the page is whole with no authorization round trip', async (_c, t) => {
    const logFrom = bk.envoyLog().length;
    // short-lived access tokens from now on (same keys), for a new session (a second browser: the
    // filter may hand alice's session its last refresh answer again for a while)
    await bk.provider.restart({ accessTokenTtl: 4 });
    const jarB = new CookieJar();
    const login = await loginThroughFilter(jarB, PP, '/productpage');
    assertWhole(login.final, 'after the login');
    const shortCookie = setCookie(login.callback, 'access_token');
    assert.ok(shortCookie && Number(shortCookie.attrs['max-age']) <= 4, `Max-Age of the short-lived token's cookie: ${shortCookie?.raw}`);
    const shortToken = shortCookie.value;
    const exp = decodeJwt(shortToken).payload.exp;

    // rotate again, then wait for the token to expire
    const k3 = withKeys(k1.enc, [generateKey('RS256')]);
    await bk.provider.restart({ keys: k3 });
    // details and reviews learn the new key first (here: a token of the new key makes them fetch
    // the set), so that only productpage's sidecar meets the new kid in the refresh
    const probe = await signToken(accessTokenClaims({ issuer: bk.provider.issuer }), { key: k3.signing });
    const known = await untilServicesAnswer(bk.urls, probe, 200);
    assert.ok(known, 'details and reviews accept tokens of the new key');
    // the token has expired, and productpage's sidecar may fetch the key set again (5 s apart)
    const wait = Math.max(exp * 1000 + 300, productpageFetchedAt + 5500) - Date.now();
    if (wait > 0) await sleep(wait);
    jarB.delete(PP, 'access_token'); // what the browser does at the cookie's Max-Age
    bk.provider.clearRequests();
    const hops = await follow(jarB, `${PP}/productpage`, { headers: PAGE_HEADERS });
    t.diagnostic(`reload: ${hops.map((x) => `${x.status} ${new URL(x.url).pathname}`).join(' -> ')}`);
    assert.equal(hops.length, 1, `no redirect at all: ${hops.map((x) => `${x.status} ${x.url}`).join(' -> ')}`);
    assertWhole(hops[0], 'after the refresh');
    const token = jarB.get(PP, 'access_token');
    assert.equal(kidOf(token), k3.signing.kid, 'the refreshed token names the new key (unknown to productpage\'s sidecar until it fetched the set again)');
    const grants = await bk.provider.waitForRequests((r) => r.grant === 'refresh_token');
    assert.deepEqual(grants.map((g) => g.status), [200], 'one refresh grant');
    assert.equal(bk.provider.requests('/protocol/openid-connect/auth').length, 0, 'no authorization round trip');
    // No assertion on who fetched the set for the new kid: the three plugins of this one Envoy
    // share it (shared data, keyed by cluster and URI), so productpage's sidecar either fetched it
    // for the unknown kid or had already picked up the set details' and reviews' fetches
    // published (timing; CI saw both). The refreshed token of the new key verified either way.
    assert.doesNotMatch(bk.envoyLog().slice(logFrom), /refresh.*(refused|failed)/i, 'no refused refresh');
  });

  h.test('(c) the sealed cookies never reach productpage, details or reviews, on any path (skip paths included)', async () => {
    // (alice's first session holds a token of a key the provider dropped since: a fresh one)
    const jar = new CookieJar();
    assertWhole((await loginThroughFilter(jar, PP, '/productpage')).final, 'after the login');
    assert.ok(jar.get(PP, 'access_token_session'), 'the browser holds the sealed session cookie');
    jar.set(PP, 'theme', 'dark'); // an app cookie: it must get through (and shows the logging works)
    const paths = [
      ['/productpage', PAGE_HEADERS], ['/productpage?x=1', API_HEADERS], ['/', PAGE_HEADERS], ['/health', API_HEADERS],
      ['/static/style.css', { accept: 'text/css,*/*;q=0.1' }], ['/static/../productpage', PAGE_HEADERS], ['/nothing-here', PAGE_HEADERS],
    ];
    for (const [p, headers] of paths) {
      const res = await requestWithJar(jar, `${PP}${p}`, { headers });
      assert.ok([200, 404].includes(res.status), `${p}: ${res.status} ${res.body.slice(0, 200)}`);
    }
    // stale transaction cookies and chunks beside the session: on a skip path, and (a transaction
    // cookie, which the token never joins) on a page
    for (const [p, extra] of [['/health', 'access_token_tx_abcdefgh=stale; access_token_1=chunk; access_token_session_1=chunk'], ['/productpage', 'access_token_tx_abcdefgh=stale']]) {
      const res = await request(`${PP}${p}`, { headers: { ...PAGE_HEADERS, cookie: `${jar.header(PP)}; ${extra}` } });
      assert.equal(res.status, 200, `${p}: ${res.status}`);
    }
    const seenPaths = new Set();
    for (const app of ['productpage', 'details', 'reviews']) {
      const lists = loggedCookieLists(bk.appLog(app));
      assert.ok(lists.length > 0, `${app} logged its requests`);
      for (const { path: p, names } of lists) {
        if (app === 'productpage') seenPaths.add(p);
        const internal = names.filter(isFilterInternal);
        assert.deepEqual(internal, [], `${app} received ${internal.join(', ')} on ${p}`);
      }
    }
    for (const p of ['/', '/health', '/static/style.css', '/productpage', '/nothing-here']) {
      assert.ok(seenPaths.has(p), `productpage received ${p} (${[...seenPaths].join(', ')})`);
    }
    const withTheme = loggedCookieLists(bk.appLog('productpage')).filter((r) => r.names.includes('theme'));
    assert.ok(withTheme.some((r) => r.path === '/health'), 'an app cookie reaches the app on a skip path');
    assert.ok(withTheme.some((r) => r.path === '/productpage' && r.names.includes('access_token')), 'and on a page, with the one verified access token');
  });

  h.test('(d) productpage answering 401 itself (ON_REFUSAL=401), straight to details with no outbound listener: on_upstream_401 still applies', async (_c, t) => {
    await bk.restartProductpage({ onRefusal: '401', outbound: false });
    const j = new CookieJar();
    const login = await loginThroughFilter(j, PP, '/productpage');
    assertWhole(login.final, 'after the login');
    const signing = bk.provider.keys.signing;
    // A token productpage's sidecar accepts (aud productpage) but details and reviews refuse (azp).
    const foreign = await signToken(accessTokenClaims({ issuer: bk.provider.issuer, aud: 'productpage', azp: 'someone-else' }), { key: signing });
    j.set(PP, 'access_token', foreign);
    const before401 = (await bk.counters()).upstream_401 ?? 0;
    const outboundBefore = (bk.envoyLog().match(/\[access\] productpage -> /g) ?? []).length;
    bk.provider.clearRequests();
    const hops = await follow(j, `${PP}/productpage`, { headers: PAGE_HEADERS });
    t.diagnostic(`reload: ${hops.map((x) => `${x.status} ${new URL(x.url).origin === PP ? new URL(x.url).pathname : x.url.split('?')[0]}`).join(' -> ')}`);
    assert.equal(hops[0].status, 302, `productpage's 401 becomes a redirect: ${hops[0].status}`);
    assert.ok(isCleared(setCookie(hops[0], 'access_token')), 'the refused token is cleared');
    assertWhole(hops[hops.length - 1], 'in the end');
    assert.match(bk.appLog('productpage'), /details and reviews refused the token \(401\); x-request-id \S+; answering 401/);
    const after401 = (await bk.counters()).upstream_401 ?? 0;
    assert.ok(after401 > before401, `mesh_oidc_upstream_401 moved: ${before401} -> ${after401}`);
    assert.equal((bk.envoyLog().match(/\[access\] productpage -> /g) ?? []).length, outboundBefore, 'no call went through the outbound listener');
    const viaRefresh = bk.provider.requests((r) => r.grant === 'refresh_token').length > 0;
    t.diagnostic(viaRefresh ? 'the session was refreshed' : 'the user logged in again');

    // An API request gets productpage's 401 as it is.
    j.set(PP, 'access_token', foreign);
    const api = await requestWithJar(j, `${PP}/productpage`, { headers: API_HEADERS });
    assert.equal(api.status, 401);
    assert.equal(byId(api.body, 'refused'), 'details and reviews refused the access token (401).');
    assert.deepEqual(crashLines(bk.envoyLog()), []);
  });
});
