// Raw HTTP for the tests: node's http module (no redirect following, full control of Host and
// Cookie headers), and a small cookie jar.

import * as http from 'node:http';
import * as net from 'node:net';

/**
 * One HTTP/1.1 request. Never follows redirects.
 * @param {string} url absolute http:// URL (127.0.0.1 only in these tests)
 * @param {{method?: string, headers?: Record<string, string|string[]>, body?: string|Buffer,
 *          timeoutMs?: number, agent?: http.Agent|false}} [opts]
 * @returns {Promise<{status: number, headers: Record<string, string|string[]>, body: string,
 *          rawHeaders: string[], ms: number}>}
 */
export function request(url, opts = {}) {
  const u = new URL(url);
  if (u.protocol !== 'http:') throw new Error(`only http:// is supported: ${url}`);
  const headers = { ...(opts.headers ?? {}) };
  let { body } = opts;
  if (body !== undefined && typeof body !== 'string' && !Buffer.isBuffer(body)) {
    body = JSON.stringify(body);
    headers['content-type'] ??= 'application/json';
  }
  if (body !== undefined) headers['content-length'] = String(Buffer.byteLength(body));
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: u.hostname,
      port: u.port || 80,
      method: opts.method ?? 'GET',
      path: `${u.pathname}${u.search}`,
      headers,
      agent: opts.agent ?? false,
      // allow huge / odd headers in both directions: the tests send garbage on purpose
      maxHeaderSize: 1024 * 1024,
      insecureHTTPParser: true,
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({
        status: res.statusCode,
        headers: res.headers,
        rawHeaders: res.rawHeaders,
        body: Buffer.concat(chunks).toString('utf8'),
        ms: Date.now() - started,
      }));
      res.on('error', reject);
    });
    req.setTimeout(opts.timeoutMs ?? 15000, () => req.destroy(new Error(`timeout after ${opts.timeoutMs ?? 15000} ms: ${opts.method ?? 'GET'} ${url}`)));
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

/**
 * Send bytes exactly as given (for header values node's http refuses to send) and return the
 * status line's code (or 0 when the connection closed without a response).
 */
export function rawRequest(port, text, timeoutMs = 10000) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    const chunks = [];
    const timer = setTimeout(() => { sock.destroy(); reject(new Error('raw request timeout')); }, timeoutMs);
    sock.on('data', (c) => chunks.push(c));
    sock.on('error', (err) => { clearTimeout(timer); if (err.code === 'ECONNRESET') resolve({ status: 0, text: Buffer.concat(chunks).toString('latin1') }); else reject(err); });
    sock.on('close', () => {
      clearTimeout(timer);
      const textOut = Buffer.concat(chunks).toString('latin1');
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(textOut);
      resolve({ status: m ? Number(m[1]) : 0, text: textOut });
    });
    sock.write(Buffer.isBuffer(text) ? text : Buffer.from(text, 'latin1'));
  });
}

/** Names and values of Set-Cookie headers, with their attributes. */
export function parseSetCookies(headers) {
  const list = headers['set-cookie'] ?? [];
  return list.map((line) => {
    const [first, ...attrs] = line.split(';');
    const i = first.indexOf('=');
    const cookie = { name: first.slice(0, i).trim(), value: first.slice(i + 1).trim(), raw: line, attrs: {} };
    for (const a of attrs) {
      const j = a.indexOf('=');
      const k = (j < 0 ? a : a.slice(0, j)).trim().toLowerCase();
      cookie.attrs[k] = j < 0 ? true : a.slice(j + 1).trim();
    }
    return cookie;
  });
}

/** A cookie jar keyed by host:port (browsers ignore the port; the tests keep them apart). */
export class CookieJar {
  #byOrigin = new Map();

  #bucket(url) {
    const { host } = new URL(url);
    if (!this.#byOrigin.has(host)) this.#byOrigin.set(host, new Map());
    return this.#byOrigin.get(host);
  }

  /** Store the Set-Cookie headers of a response to `url`. */
  store(url, headers) {
    const bucket = this.#bucket(url);
    for (const c of parseSetCookies(headers)) {
      const maxAge = c.attrs['max-age'];
      const expires = c.attrs.expires ? Date.parse(c.attrs.expires) : undefined;
      if (c.value === '' || (maxAge !== undefined && Number(maxAge) <= 0) || (expires !== undefined && expires <= Date.now())) {
        bucket.delete(c.name);
      } else {
        bucket.set(c.name, c.value);
      }
    }
  }

  /** The Cookie header value to send to `url` (path is ignored). */
  header(url) {
    const bucket = this.#bucket(url);
    return [...bucket].map(([k, v]) => `${k}=${v}`).join('; ');
  }

  get(url, name) { return this.#bucket(url).get(name); }

  set(url, name, value) { this.#bucket(url).set(name, value); }

  delete(url, name) { this.#bucket(url).delete(name); }

  clear(url) { if (url) this.#bucket(url).clear(); else this.#byOrigin.clear(); }
}

/** Request with a jar: sends its cookies, stores the answer's. */
export async function requestWithJar(jar, url, opts = {}) {
  const cookie = jar.header(url);
  const headers = { ...(opts.headers ?? {}) };
  if (cookie && headers.cookie === undefined) headers.cookie = cookie;
  const res = await request(url, { ...opts, headers });
  jar.store(url, res.headers);
  return res;
}

/** Follow redirects with a jar, like a browser (GET after 301/302/303). Returns every hop. */
export async function follow(jar, url, opts = {}, { maxHops = 10, stopAt } = {}) {
  const hops = [];
  let current = url;
  let o = opts;
  for (let i = 0; i < maxHops; i++) {
    const res = await requestWithJar(jar, current, o);
    hops.push({ url: current, ...res });
    if (![301, 302, 303, 307, 308].includes(res.status) || !res.headers.location) break;
    const next = new URL(res.headers.location, current).href;
    if (stopAt && stopAt(next)) { hops.push({ url: next, stopped: true }); break; }
    current = next;
    if (res.status !== 307 && res.status !== 308) o = { headers: opts.headers ? stripBodyHeaders(opts.headers) : {} };
  }
  return hops;
}

function stripBodyHeaders(h) {
  const out = { ...h };
  delete out['content-type'];
  delete out['content-length'];
  delete out.cookie;
  return out;
}
