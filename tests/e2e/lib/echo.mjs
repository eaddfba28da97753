// The upstream service behind Envoy, hosted in the test process: answers with what it received
// and records every request, so a test can prove that a rejected request never reached it.

import * as http from 'node:http';

const escHtml = (s) => String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));

/**
 * @returns {Promise<{port: number, url: string, seen: () => object[], clear: () => void,
 *   sawPath: (p: string) => boolean, stop: () => Promise<void>}>}
 *
 * Every request: 200 JSON {method, path, headers} (headers as node gives them: lower-case names,
 * repeated headers joined by ", " except set-cookie), or an HTML page when `Accept` allows
 * text/html (shows the x-user header in <h1 id="user">, and a /logout link). A path starting
 * with /upstream-401 answers 401 (like details/reviews refusing a token).
 */
export async function startEcho() {
  const seen = [];
  const server = http.createServer({ maxHeaderSize: 1024 * 1024 }, (req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const record = {
        method: req.method,
        path: req.url,
        headers: req.headers,
        rawHeaders: req.rawHeaders,
        body: Buffer.concat(chunks).toString('utf8'),
        t: Date.now(),
      };
      seen.push(record);
      const wantsHtml = /text\/html/i.test(req.headers.accept ?? '');
      const status = req.url.startsWith('/upstream-401') ? 401 : 200;
      if (wantsHtml) {
        const user = req.headers['x-user'];
        const html = `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>productpage</title></head>
<body>
<h1 id="user">${user ? `Hello, ${escHtml(user)}` : 'Hello, anonymous'}</h1>
<p id="path">${escHtml(req.url)}</p>
<a id="logout" href="/logout">Log out</a>
</body></html>
`;
        res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
        res.end(req.method === 'HEAD' ? undefined : html);
        return;
      }
      const body = JSON.stringify({ method: req.method, path: req.url, headers: req.headers });
      res.writeHead(status, {
        'content-type': 'application/json',
        ...(status === 401 ? { 'www-authenticate': 'Bearer realm="upstream", error="invalid_token"' } : {}),
      });
      res.end(req.method === 'HEAD' ? undefined : body);
    });
  });
  server.keepAliveTimeout = 60_000;
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address();
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    /** A copy of every request received so far (optionally only those whose path starts with `prefix`). */
    seen(prefix) {
      return prefix === undefined ? [...seen] : seen.filter((r) => r.path.startsWith(prefix));
    },
    /** The last request received (optionally with that exact path). */
    last(pathOrUndefined) {
      const list = pathOrUndefined === undefined ? seen : seen.filter((r) => r.path === pathOrUndefined);
      return list[list.length - 1];
    },
    sawPath(p) { return seen.some((r) => r.path === p); },
    clear() { seen.length = 0; },
    async stop() {
      server.closeAllConnections?.();
      await new Promise((resolve) => { server.close(() => resolve()); });
    },
  };
}
