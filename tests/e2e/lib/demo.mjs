// The Bookinfo demo (scripts/demo.sh, envoy/*.yaml, demo/*.py) as the e2e tests drive it.

import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { ENVOY_BIN, OUT_DIR, REPO_DIR, WASM_PATH } from './paths.mjs';
import { freePort } from './ports.mjs';

export const DEMO_SCRIPT = path.join(REPO_DIR, 'scripts', 'demo.sh');
export const DEMO_OUT_DIR = path.join(OUT_DIR, 'demo');
export const ENVOY_CONFIG_DIR = path.join(REPO_DIR, 'envoy');
/** The module path as the configs under envoy/ spell it (relative to the repository root). */
export const WASM_IN_CONFIGS = 'target/wasm32-wasip1/release/mesh_oidc.wasm';

/** The demo's ports as envoy/demo.yaml and scripts/demo.sh have them. */
export const DEFAULT_DEMO_PORTS = Object.freeze({
  productpage: 8000, details: 9081, reviews: 9082, outbound: 15001, admin: 9901, provider: 8180,
  productpageApp: 9000, detailsApp: 9001, reviewsApp: 9002,
});

/** Free ports for every process of the demo (so a test never meets a running `make demo`). */
export async function freeDemoPorts() {
  const out = {};
  for (const k of Object.keys(DEFAULT_DEMO_PORTS)) out[k] = await freePort();
  return out;
}

/** The demo's addresses for a set of ports. */
export function demoUrls(ports = DEFAULT_DEMO_PORTS) {
  const u = (p) => `http://127.0.0.1:${p}`;
  return {
    productpage: u(ports.productpage),
    details: u(ports.details),
    reviews: u(ports.reviews),
    outbound: u(ports.outbound),
    admin: u(ports.admin),
    provider: u(ports.provider),
    issuer: `${u(ports.provider)}/realms/dev`,
    productpageApp: u(ports.productpageApp),
    detailsApp: u(ports.detailsApp),
    reviewsApp: u(ports.reviewsApp),
    internalHost: 'keycloak.keycloak.svc.cluster.local:8080',
  };
}

/** The environment that moves the demo to other ports and another output folder. */
export function demoEnv({ ports, outDir } = {}) {
  const env = {};
  if (outDir) env.DEMO_OUT = outDir;
  if (ports) {
    Object.assign(env, {
      DEMO_PRODUCTPAGE_PORT: String(ports.productpage),
      DEMO_DETAILS_PORT: String(ports.details),
      DEMO_REVIEWS_PORT: String(ports.reviews),
      DEMO_OUTBOUND_PORT: String(ports.outbound),
      DEMO_ADMIN_PORT: String(ports.admin),
      DEMO_PROVIDER_PORT: String(ports.provider),
      DEMO_PRODUCTPAGE_APP_PORT: String(ports.productpageApp),
      DEMO_DETAILS_APP_PORT: String(ports.detailsApp),
      DEMO_REVIEWS_APP_PORT: String(ports.reviewsApp),
    });
  }
  return env;
}

/**
 * Run a program to its end, collecting its output.
 * @returns {Promise<{code: number|null, signal: string|null, stdout: string, stderr: string, ms: number}>}
 */
export function run(cmd, args, { cwd = REPO_DIR, env = {}, timeoutMs = 60000 } = {}) {
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const out = [];
    const errOut = [];
    child.stdout.on('data', (c) => out.push(c));
    child.stderr.on('data', (c) => errOut.push(c));
    const timer = setTimeout(() => {
      errOut.push(Buffer.from(`\n[test] timeout after ${timeoutMs} ms: sending SIGTERM to pid ${child.pid}\n`));
      try { process.kill(child.pid, 'SIGTERM'); } catch { /* gone */ }
    }, timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({
        code, signal, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(errOut).toString('utf8'), ms: Date.now() - started,
      });
    });
    child.on('error', (err) => {
      clearTimeout(timer);
      resolve({ code: -1, signal: null, stdout: '', stderr: String(err), ms: Date.now() - started });
    });
  });
}

/**
 * `scripts/demo.sh` with DEMO_DETACH=1, run from the repository root: starts the demo and
 * returns when it is up (or failed). `ports`/`outDir` move it (see demoEnv).
 */
export function startDemo({ env = {}, ports, outDir, timeoutMs = 120000 } = {}) {
  return run(DEMO_SCRIPT, [], { env: { ...demoEnv({ ports, outDir }), ...env, DEMO_DETACH: '1' }, timeoutMs });
}

/**
 * `scripts/demo.sh render`: only the Envoy config, as the demo would run it (`ports` moved, a
 * fresh session secret), written to `outDir`/envoy.yaml. Returns that path.
 */
export async function renderDemoConfig({ ports, outDir, env = {} } = {}) {
  const r = await run(DEMO_SCRIPT, ['render'], { env: { ...demoEnv({ ports, outDir }), ...env }, timeoutMs: 30000 });
  if (r.code !== 0) throw new Error(`scripts/demo.sh render exited ${r.code}:\n${r.stdout}\n${r.stderr}`);
  return r.stdout.trim().split('\n').pop();
}

/** `scripts/demo.sh stop`: stops what a detached demo started (in `outDir`). */
export function stopDemo({ outDir, timeoutMs = 30000 } = {}) {
  return run(DEMO_SCRIPT, ['stop'], { env: demoEnv({ outDir }), timeoutMs });
}

/** The PIDs a detached demo wrote: [{pid, name}]. */
export function demoPids(outDir = DEMO_OUT_DIR) {
  const file = path.join(outDir, 'pids');
  if (!fs.existsSync(file)) return [];
  return fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((line) => {
    const [pid, name] = line.split(' ');
    return { pid: Number(pid), name };
  });
}

/** One of the demo's logs (provider, productpage, details, reviews, envoy); '' when absent. */
export function demoLog(name, outDir = DEMO_OUT_DIR) {
  const file = path.join(outDir, `${name}.log`);
  return fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
}

/** The provider's request log lines (REQ {...}) from the demo's provider.log. */
export function demoProviderRequests(outDir = DEMO_OUT_DIR) {
  return demoLog('provider', outDir).split('\n').filter((l) => l.startsWith('REQ ')).map((l) => {
    try { return JSON.parse(l.slice(4)); } catch { return undefined; }
  }).filter(Boolean);
}

/** Every envoy/*.yaml, as absolute paths. */
export function envoyConfigs() {
  return fs.readdirSync(ENVOY_CONFIG_DIR).filter((f) => /\.ya?ml$/.test(f)).sort().map((f) => path.join(ENVOY_CONFIG_DIR, f));
}

/** A config of envoy/ with the module's absolute path, as scripts/demo.sh renders it. */
export function renderEnvoyConfig(file, outFile, wasmPath = WASM_PATH) {
  const text = fs.readFileSync(file, 'utf8').split(`filename: ${WASM_IN_CONFIGS}`).join(`filename: ${wasmPath}`);
  fs.mkdirSync(path.dirname(outFile), { recursive: true });
  fs.writeFileSync(outFile, text);
  return outFile;
}

/** `envoy --mode validate -c file` (which also loads the module and runs its on_configure). */
export function validateEnvoyConfig(file, { cwd = REPO_DIR } = {}) {
  return run(ENVOY_BIN, ['--mode', 'validate', '-c', file, '--log-level', 'info'], { cwd, timeoutMs: 60000 });
}
