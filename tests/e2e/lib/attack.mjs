// Helpers for the hardening suite (security.test.mjs): one Envoy with several listeners, each with
// its own filter configuration and HTTP connection manager options (path normalisation on or
// off), a route whose responses say `Cache-Control: public`, requests that reset their stream,
// tamperings of sealed (JWE) cookies, and what the echo service received.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';

import { bootstrap } from './envoy.mjs';
import { ENVOY_BIN } from './paths.mjs';
import { freePort, isListening } from './ports.mjs';
import { request } from './http.mjs';
import { spawnLogged, sleep } from './proc.mjs';
import { toYaml } from './yaml.mjs';

/** The HTTP connection manager path options the shipped configs use. */
export const HARDENED_HCM = Object.freeze({
  normalize_path: true,
  merge_slashes: true,
  path_with_escaped_slashes_action: 'REJECT_REQUEST',
});

/** Responses under this prefix carry `Cache-Control: public, max-age=600`, as if the service said so. */
export const CACHE_PUBLIC_PREFIX = '/cache-public';

/**
 * A route in front of the catch-all: Envoy's router sets the header on the upstream response
 * before the encoder filters (the wasm filter among them) see it, so to the filter it is the
 * service's own header.
 */
const cachePublicRoute = {
  match: { prefix: CACHE_PUBLIC_PREFIX },
  route: { cluster: 'echo', timeout: '15s' },
  response_headers_to_add: [{
    header: { key: 'cache-control', value: 'public, max-age=600' },
    append_action: 'OVERWRITE_IF_EXISTS_OR_ADD',
  }],
};

/**
 * A bootstrap with one listener per entry of `listeners`:
 *   {name, port, filterConfig (null: no filter), vmId, hcm: {extra HCM options}}
 */
export function multiListenerBootstrap({ adminPort, echoPort, providerPort, accessLogPath, listeners }) {
  const built = listeners.map((l) => bootstrap({
    adminPort, listenerPort: l.port, echoPort, providerPort, accessLogPath,
    filterConfig: l.filterConfig === undefined ? null : l.filterConfig,
  }));
  const cfg = built[0];
  cfg.static_resources.listeners = built.map((b, i) => {
    const l = listeners[i];
    const listener = b.static_resources.listeners[0];
    listener.name = l.name;
    const hcm = listener.filter_chains[0].filters[0].typed_config;
    hcm.stat_prefix = l.name.replace(/[^a-z0-9_]/gi, '_');
    Object.assign(hcm, l.hcm ?? {});
    hcm.route_config.virtual_hosts[0].routes.unshift(structuredClone(cachePublicRoute));
    const wasm = hcm.http_filters.find((f) => f.name === 'envoy.filters.http.wasm');
    if (wasm && l.vmId) wasm.typed_config.config.vm_config.vm_id = l.vmId;
    return listener;
  });
  return cfg;
}

let counter = 0;

/**
 * Start one Envoy with several listeners (see multiListenerBootstrap), registered with the
 * harness `h` (stopped after it, logs printed when a test fails), like h.startEnvoy.
 * @returns {Promise<object>} the handle of startEnvoy() plus `urls` and `ports` by listener name;
 *   {exited: true, ...} when Envoy refused the configuration.
 */
export async function startMultiEnvoy(h, {
  listeners, providerPort, echoPort, logLevel = 'info', concurrency = 2, readyTimeoutMs = 30000, name: label = 'envoy',
}) {
  counter += 1;
  const dir = h.outDir;
  const name = `${label}-m${counter}`;
  const adminPort = await freePort();
  for (const l of listeners) l.port ??= await freePort();
  const yamlPath = path.join(dir, `${name}.yaml`);
  const logFile = path.join(dir, `${name}.log`);
  const accessLogPath = path.join(dir, `${name}-access.log`);
  fs.writeFileSync(yamlPath, toYaml(multiListenerBootstrap({ adminPort, echoPort, providerPort, accessLogPath, listeners })));
  const baseId = ((process.pid % 2000) * 100 + 50 + counter) % 4000000;
  const proc = spawnLogged(ENVOY_BIN, [
    '-c', yamlPath, '--concurrency', String(concurrency), '--log-level', logLevel,
    '--base-id', String(baseId), '--disable-hot-restart',
    '--log-format', '[%Y-%m-%d %T.%e][%t][%l][%n] [%g:%#] %v',
  ], { logFile });
  const readLog = () => (fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8') : '');

  const deadline = Date.now() + readyTimeoutMs;
  let live = false;
  while (Date.now() < deadline && !proc.exitInfo) {
    try {
      const res = await request(`http://127.0.0.1:${adminPort}/ready`, { timeoutMs: 1000 });
      if (res.status === 200 && res.body.trim() === 'LIVE') { live = true; break; }
    } catch { /* not up yet */ }
    await Promise.race([sleep(100), proc.exited]);
  }
  if (proc.exitInfo) {
    const refused = { exited: true, code: proc.exitInfo.code, signal: proc.exitInfo.signal, log: readLog, logFile, outDir: dir, yamlPath };
    h.envoys.push(refused);
    return refused;
  }
  if (!live) {
    await proc.stop();
    throw new Error(`Envoy ${name} did not become ready within ${readyTimeoutMs} ms:\n${readLog().slice(-5000)}`);
  }
  // The listeners are up once the admin says LIVE; wait for each to accept connections anyway.
  for (const l of listeners) {
    const until = Date.now() + 5000;
    while (!(await isListening(l.port)) && Date.now() < until) await sleep(50);
  }
  const handle = {
    exited: false,
    name,
    pid: proc.pid,
    adminPort,
    outDir: dir,
    yamlPath,
    logFile,
    accessLogFile: accessLogPath,
    ports: Object.fromEntries(listeners.map((l) => [l.name, l.port])),
    urls: Object.fromEntries(listeners.map((l) => [l.name, `http://127.0.0.1:${l.port}`])),
    log: readLog,
    accessLog: () => (fs.existsSync(accessLogPath) ? fs.readFileSync(accessLogPath, 'utf8') : ''),
    get alive() { return !proc.exitInfo; },
    get exitInfo() { return proc.exitInfo; },
    admin: async (p) => (await request(`http://127.0.0.1:${adminPort}${p}`)).body,
    async stop() { await proc.stop(); },
  };
  h.envoys.push(handle);
  h.defer(() => proc.stop());
  return handle;
}

/** Lines of an Envoy log that say a wasm VM failed, beyond crashLines(): failed callbacks, a dead VM, a crash. */
export function vmFailureLines(logText) {
  return logText.split('\n').filter((l) => /panicked|wasm trap|RuntimeError|Function: proxy_on_\w+ failed|Wasm VM failed|Plugin \S+ failed|Caught (Segmentation|Abort|Bus)|Backtrace \(use|heap-use-after-free|AddressSanitizer/i.test(l));
}

// ---- requests ----------------------------------------------------------------------------------

/** A unique value for the `x-attack-probe` header: tells whether the echo service got a request. */
export const probeId = () => `probe-${crypto.randomBytes(8).toString('hex')}`;

/** Did the echo service receive a request carrying this probe id (whatever its path became)? */
export function upstreamGot(echo, id) {
  return echo.seen().filter((r) => r.headers['x-attack-probe'] === id);
}

/** Every value of one header as the echo service received it (each occurrence separately). */
export function headerValues(record, name) {
  const out = [];
  for (let i = 0; i < record.rawHeaders.length; i += 2) {
    if (record.rawHeaders[i].toLowerCase() === name) out.push(record.rawHeaders[i + 1]);
  }
  return out;
}

/** [name, value] pairs of a Cookie header. */
export function cookiePairs(header) {
  return String(header ?? '').split(';').map((p) => p.trim()).filter(Boolean).map((p) => {
    const i = p.indexOf('=');
    return i < 0 ? [p, ''] : [p.slice(0, i), p.slice(i + 1)];
  });
}

/**
 * Send `text` on a new connection, then reset the connection (TCP RST) after `resetAfterMs`,
 * before any answer is read: a browser that gave up while Envoy waits for a dispatched call.
 * Resolves with the bytes (if any) that arrived before the reset.
 */
export function sendAndReset(port, text, resetAfterMs) {
  return new Promise((resolve) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    const chunks = [];
    sock.on('data', (c) => chunks.push(c));
    sock.on('error', () => { /* the reset */ });
    sock.on('connect', () => {
      sock.write(text);
      setTimeout(() => {
        if (typeof sock.resetAndDestroy === 'function') sock.resetAndDestroy(); else sock.destroy();
        resolve(Buffer.concat(chunks).toString('latin1'));
      }, resetAfterMs);
    });
  });
}

/** An HTTP/1.1 GET as raw text, headers given as [name, value] pairs (duplicates allowed). */
export function rawGetText(target, headerPairs) {
  return `GET ${target} HTTP/1.1\r\n${headerPairs.map(([k, v]) => `${k}: ${v}`).join('\r\n')}\r\n\r\n`;
}

// ---- sealed cookies -------------------------------------------------------------------------------

const b64d = (s) => Buffer.from(s, 'base64url');
const b64e = (b) => Buffer.from(b).toString('base64url');

/** Flip one bit of the bytes a base64url part decodes to (index < 0 counts from the end). */
function flipBit(part, index, bit) {
  const bytes = b64d(part);
  if (bytes.length === 0) return 'AA';
  const i = ((index % bytes.length) + bytes.length) % bytes.length;
  bytes[i] ^= 1 << bit;
  return b64e(bytes);
}

/**
 * Tamperings of a compact JWE (header.encrypted_key.iv.ciphertext.tag): bit flips in each part
 * (always in the decoded bytes, so no flip is a mere change of base64 padding bits), truncations,
 * emptied parts, base64 garbage, swapped parts, rewritten headers.
 * @returns {Array<[string, string]>} [description, tampered value]
 */
export function jweTamperings(jwe) {
  const parts = jwe.split('.');
  if (parts.length !== 5) throw new Error(`not a compact JWE (${parts.length} parts)`);
  const names = ['header', 'encrypted key', 'iv', 'ciphertext', 'tag'];
  const withPart = (i, v) => parts.map((p, j) => (j === i ? v : p)).join('.');
  const swap = (i, j) => parts.map((p, k) => (k === i ? parts[j] : k === j ? parts[i] : p)).join('.');
  const out = [];
  for (const [i, n] of names.entries()) {
    const len = b64d(parts[i]).length;
    out.push([`${n}: first bit flipped`, withPart(i, flipBit(parts[i], 0, 7))]);
    out.push([`${n}: lowest bit of the last byte flipped`, withPart(i, flipBit(parts[i], -1, 0))]);
    out.push([`${n}: middle byte flipped`, withPart(i, flipBit(parts[i], Math.floor(len / 2), 3))]);
    out.push([`${n}: last byte removed`, withPart(i, b64e(b64d(parts[i]).subarray(0, Math.max(0, len - 1))))]);
    out.push([`${n}: one byte appended`, withPart(i, b64e(Buffer.concat([b64d(parts[i]), Buffer.from([0x01])])))]);
    out.push([`${n}: emptied`, withPart(i, '')]);
    out.push([`${n}: random bytes of the same length`, withPart(i, b64e(crypto.randomBytes(Math.max(1, len))))]);
    out.push([`${n}: a character that is not base64url`, withPart(i, `*${parts[i].slice(1)}`)]);
  }
  // where a CBC padding oracle would flip: the block before the last one
  const ct = b64d(parts[3]);
  if (ct.length > 17) out.push(['ciphertext: byte 17 from the end flipped (CBC padding-oracle position)', withPart(3, flipBit(parts[3], -17, 0))]);
  out.push(
    ['iv and tag swapped', swap(2, 4)],
    ['encrypted key and ciphertext swapped', swap(1, 3)],
    ['header and ciphertext swapped', swap(0, 3)],
    ['only four parts', parts.slice(0, 4).join('.')],
    ['a sixth part', `${jwe}.${parts[4]}`],
    ['cut to half its length', jwe.slice(0, Math.floor(jwe.length / 2))],
    ['the value twice', `${jwe}${jwe}`],
    ['one character', 'A'],
    ['five empty parts', '....'],
    ['random base64url', b64e(crypto.randomBytes(300))],
    ['random JWE-shaped parts', [0, 1, 2, 3, 4].map((i) => b64e(crypto.randomBytes(Math.max(1, b64d(parts[i]).length)))).join('.')],
    ['standard base64 with padding instead of base64url', parts.map((p) => b64d(p).toString('base64')).join('.')],
  );
  let header;
  try { header = JSON.parse(b64d(parts[0]).toString('utf8')); } catch { header = {}; }
  const rewritten = (h) => withPart(0, b64e(JSON.stringify(h)));
  out.push(
    ['header rewritten: alg dir', rewritten({ ...header, alg: 'dir' })],
    ['header rewritten: enc A128CBC-HS256', rewritten({ ...header, enc: 'A128CBC-HS256' })],
    ['header rewritten: zip DEF', rewritten({ ...header, zip: 'DEF' })],
    ['header rewritten: alg none', rewritten({ alg: 'none' })],
    ['header rewritten: same members, other order', rewritten(Object.fromEntries(Object.entries(header).reverse()))],
    ['as a JWS: header.ciphertext.tag', `${parts[0]}.${parts[3]}.${parts[4]}`],
  );
  return out;
}

/**
 * What an attacker can compare between two responses: status, header names, Set-Cookie names
 * (a transaction cookie's random id made generic) and whether each clears, the Location without
 * its random parameter values, the body without the request id.
 */
export function responseShape(res, requestId) {
  const names = [...new Set(Object.keys(res.headers).map((k) => k.toLowerCase()))].sort();
  const setCookies = [].concat(res.headers['set-cookie'] ?? []).map((line) => {
    const [first, ...attrs] = line.split(';');
    const name = first.slice(0, first.indexOf('=')).trim().replace(/_tx_.*/, '_tx_*');
    const a = attrs.map((x) => x.trim().toLowerCase()).filter((x) => !x.startsWith('expires=')).sort();
    return `${name} ${a.join('; ')}`;
  }).sort();
  let location;
  if (res.headers.location) {
    const u = new URL(res.headers.location, 'http://relative.invalid');
    location = `${u.origin}${u.pathname}?${[...u.searchParams.keys()].sort().join('&')}`;
  }
  const body = String(res.body ?? '').split(requestId).join('<request-id>')
    .replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/gi, '<uuid>');
  return { status: res.status, headers: names, setCookies, location, body };
}
