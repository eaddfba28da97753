// Bookinfo as `make demo` runs it (envoy/demo.yaml rendered by `scripts/demo.sh render`, the
// services of demo/), but with the test provider of lib/provider.mjs, so that a test can rotate
// its signing keys (provider.restart({keys})) while sessions live on, and with a few timing knobs
// a test needs. Every process is stopped by the harness; their logs are shown when a test fails.

import * as fs from 'node:fs';
import * as path from 'node:path';

import { ENVOY_BIN, REPO_DIR } from './paths.mjs';
import { spawnLogged, sleep, waitFor } from './proc.mjs';
import { request } from './http.mjs';
import { freeDemoPorts, demoUrls, renderDemoConfig } from './demo.mjs';
import { PAGE_HEADERS } from './login.mjs';

const PYTHON = process.env.PYTHON ?? 'python3';
const APPS = ['details', 'reviews', 'productpage'];

/** The text of the element with this id in a demo page (undefined when absent). */
export function byId(html, id) {
  const m = new RegExp(`id="${id}"[^>]*>([^<]*)<`).exec(html);
  return m ? m[1] : undefined;
}

/** A productpage answer that shows the user and both services' answers: "the page is whole". */
export function pageState(res) {
  return {
    status: res.status,
    hello: byId(res.body, 'hello'),
    details: byId(res.body, 'details-status'),
    reviews: byId(res.body, 'reviews-status'),
    detailsError: /Error fetching product details/.test(res.body),
    reviewsError: /Error fetching product reviews/.test(res.body),
  };
}

/**
 * Wait until details' and reviews' sidecars all answer `status` to this token: several times in
 * a row, since each of Envoy's worker threads takes a new key set up on its own next tick.
 */
export async function untilServicesAnswer(urls, token, status, { timeoutMs = 15000 } = {}) {
  let streak = 0;
  return waitFor(async () => {
    const got = await Promise.all([
      request(`${urls.details}/details/0`, { headers: { accept: 'application/json', authorization: `Bearer ${token}` } }),
      request(`${urls.reviews}/reviews/0`, { headers: { accept: 'application/json', authorization: `Bearer ${token}` } }),
    ]);
    streak = got.every((r) => r.status === status) ? streak + 1 : 0;
    return streak >= 4;
  }, { timeoutMs, intervalMs: 250 });
}

/** `name: value` lines of Envoy's /stats as numbers. */
function parseStats(text) {
  const out = {};
  for (const line of text.split('\n')) {
    const m = /^(\S+): (\d+)$/.exec(line.trim());
    if (m) out[m[1]] = Number(m[2]);
  }
  return out;
}

/**
 * Start the provider, details, reviews, productpage and one Envoy with envoy/demo.yaml.
 * @param {import('./harness.mjs').Harness} h
 * @param {object} o
 * @param {object} [o.keys]               the provider's keys (generateKeys())
 * @param {number} [o.accessTokenTtl]     the provider's access-token lifetime (default 300 s)
 * @param {number} [o.jwksRefreshSeconds] details' and reviews' key-set refresh (default: the demo's)
 * @param {string} [o.onRefusal]          productpage's ON_REFUSAL (200 as Bookinfo, or 401)
 */
export async function startBookinfo(h, { keys, accessTokenTtl, jwksRefreshSeconds, onRefusal = '200' } = {}) {
  const ports = await freeDemoPorts();
  const urls = demoUrls(ports);
  const dir = path.join(h.outDir, 'bookinfo');
  fs.mkdirSync(dir, { recursive: true });

  const provider = await h.startProvider({
    port: ports.provider,
    keys,
    accessTokenTtl,
    redirectUris: [`${urls.productpage}/callback`],
    postLogoutRedirectUris: [`${urls.productpage}/`],
  });

  // The demo's Envoy config, rendered by the demo's own script; then the test's knobs.
  const rendered = await renderDemoConfig({ ports, outDir: dir });
  let yaml = fs.readFileSync(rendered, 'utf8');
  if (jwksRefreshSeconds !== undefined) {
    const marker = /^( *)"authorized_parties": \["productpage"\],$/gm;
    const found = yaml.match(marker)?.length ?? 0;
    if (found !== 2) throw new Error(`envoy/demo.yaml: expected the details and reviews filters (authorized_parties), found ${found}`);
    yaml = yaml.replace(marker, (line, indent) => `${line}\n${indent}"jwks_refresh_seconds": ${jwksRefreshSeconds},`);
  }
  const yamlPath = path.join(dir, 'envoy-test.yaml');
  fs.writeFileSync(yamlPath, yaml);

  const procs = {};
  const logFile = (name) => path.join(dir, `${name}.log`);
  const appEnv = {
    details: () => ({ PORT: String(ports.detailsApp) }),
    reviews: () => ({ PORT: String(ports.reviewsApp) }),
    productpage: (o = {}) => (o.outbound === false ? {
      // straight to details' and reviews' sidecars: no outbound listener involved (the L7 way)
      PORT: String(ports.productpageApp),
      ON_REFUSAL: o.onRefusal ?? onRefusal,
      OUTBOUND_PROXY: '',
      DETAILS_URL: `${urls.details}/details/0`,
      REVIEWS_URL: `${urls.reviews}/reviews/0`,
    } : {
      // as scripts/demo.sh runs it: Bookinfo's names, through the outbound listener
      PORT: String(ports.productpageApp),
      ON_REFUSAL: o.onRefusal ?? onRefusal,
      OUTBOUND_PROXY: urls.outbound,
      DETAILS_URL: 'http://details:9080/details/0',
      REVIEWS_URL: 'http://reviews:9080/reviews/0',
    }),
  };
  const appPort = { details: ports.detailsApp, reviews: ports.reviewsApp, productpage: ports.productpageApp };

  async function startApp(name, o = {}) {
    fs.appendFileSync(logFile(name), `\n===== start ${new Date().toISOString()} ${JSON.stringify(o)} =====\n`);
    const p = spawnLogged(PYTHON, [path.join(REPO_DIR, 'demo', `${name}.py`)], {
      logFile: logFile(name),
      env: { PYTHONUNBUFFERED: '1', ...appEnv[name](o) },
    });
    procs[name] = p;
    const up = await waitFor(async () => {
      if (p.exitInfo) throw new Error(`${name} exited: ${JSON.stringify(p.exitInfo)}\n${fs.readFileSync(logFile(name), 'utf8')}`);
      return (await request(`http://127.0.0.1:${appPort[name]}/health`, { timeoutMs: 1000 })).status === 200;
    }, { timeoutMs: 10000 });
    if (!up) throw new Error(`${name} did not answer /health:\n${fs.readFileSync(logFile(name), 'utf8')}`);
  }
  for (const name of APPS) {
    h.addLog(name, logFile(name));
    h.defer(() => procs[name]?.stop());
  }
  await Promise.all(APPS.map((name) => startApp(name)));

  const envoyLog = logFile('envoy');
  const envoy = spawnLogged(ENVOY_BIN, [
    '-c', yamlPath, '--concurrency', '2', '--disable-hot-restart', '--log-level', 'info',
    // the access log (stdout) within 100 ms, not Envoy's default 10 s: the tests read it
    '--file-flush-interval-msec', '100',
  ], { logFile: envoyLog, cwd: dir });
  const readEnvoyLog = () => (fs.existsSync(envoyLog) ? fs.readFileSync(envoyLog, 'utf8') : '');
  h.envoys.push({
    logFile: envoyLog, log: readEnvoyLog, pid: envoy.pid,
    get exited() { return Boolean(envoy.exitInfo); },
    get code() { return envoy.exitInfo?.code; },
  });
  h.defer(() => envoy.stop());
  const ready = await waitFor(async () => {
    if (envoy.exitInfo) throw new Error(`Envoy exited ${JSON.stringify(envoy.exitInfo)}:\n${readEnvoyLog().slice(-4000)}`);
    const r = await request(`${urls.admin}/ready`, { timeoutMs: 1000 });
    return r.status === 200 && r.body.trim() === 'LIVE';
  }, { timeoutMs: 30000, intervalMs: 200 });
  if (!ready) throw new Error(`Envoy did not become ready:\n${readEnvoyLog().slice(-4000)}`);
  // the sidecars answer: details and reviews refuse a call without a token; productpage sends a
  // page request to log in; the outbound listener reaches details' sidecar by its Bookinfo name
  const expected = { details: 401, reviews: 401, productpage: 302, outbound: 401 };
  let got;
  const answering = await waitFor(async () => {
    got = {
      details: (await request(`${urls.details}/details/0`)).status,
      reviews: (await request(`${urls.reviews}/reviews/0`)).status,
      productpage: (await request(`${urls.productpage}/productpage`, { headers: PAGE_HEADERS })).status,
      // a page request without a session, through the outbound listener: the login filter there
      // must leave it alone, so it is details' sidecar that answers (401), not a login (302)
      outbound: (await request(`${urls.outbound}/details/0`, { headers: { ...PAGE_HEADERS, host: 'details:9080' } })).status,
    };
    return Object.entries(expected).every(([k, v]) => got[k] === v);
  }, { timeoutMs: 15000 });
  if (!answering) {
    throw new Error(`the sidecars do not answer as expected: ${JSON.stringify(got)}, expected ${JSON.stringify(expected)}`
      + ` (outbound 302: the login filter did not see productpage_outbound as an OUTBOUND listener)\n${readEnvoyLog().slice(-3000)}`);
  }
  // every VM has its first key set (productpage's, details', reviews')
  await provider.waitForRequests('/certs', { count: 3, timeoutMs: 5000 });
  await sleep(300);

  return {
    ports,
    urls,
    provider,
    yamlPath,
    envoyLog: readEnvoyLog,
    appLog: (name) => (fs.existsSync(logFile(name)) ? fs.readFileSync(logFile(name), 'utf8') : ''),
    /** Restart productpage with other settings ({onRefusal, outbound: false}). */
    async restartProductpage(o = {}) {
      await procs.productpage.stop();
      await startApp('productpage', o);
    },
    /** Envoy's mesh-oidc counters, by their short name ("upstream_401"). */
    async counters() {
      const text = (await request(`${urls.admin}/stats?filter=mesh_oidc`)).body;
      const out = {};
      for (const [k, v] of Object.entries(parseStats(text))) out[k.replace(/^wasmcustom\.mesh_oidc\./, '')] = v;
      return out;
    },
  };
}
