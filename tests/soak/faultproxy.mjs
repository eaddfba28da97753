// The soak's fault proxy: Envoy's cluster for the provider points here, and every call the filter
// makes (token, certs, revocation, discovery) goes through it to the provider. It passes calls on
// untouched, counts them by endpoint, and, when told, answers the token and certs endpoints with
// garbage itself (the provider's own /__control can delay an endpoint or fail it with a status,
// but always with a well-formed JSON error body: it cannot send garbage).
//
// It opens a new connection to the provider for each call (no keep-alive), so that a provider
// restart never leaves a dead pooled connection behind to fail a call once the provider is back.
// When the provider is down, the call's connection to Envoy is reset before any answer, as a
// refused connection would look to Envoy.

import * as crypto from 'node:crypto';
import * as http from 'node:http';

/** token, certs, revoke, introspect, discovery, userinfo or other, from a request path. */
export function endpointOf(pathname) {
  const p = pathname.split('?')[0];
  if (p.endsWith('/protocol/openid-connect/token')) return 'token';
  if (p.endsWith('/protocol/openid-connect/certs')) return 'certs';
  if (p.endsWith('/protocol/openid-connect/revoke')) return 'revoke';
  if (p.endsWith('/protocol/openid-connect/token/introspect')) return 'introspect';
  if (p.endsWith('/.well-known/openid-configuration')) return 'discovery';
  if (p.endsWith('/protocol/openid-connect/userinfo')) return 'userinfo';
  return 'other';
}

// Garbage, in turn: answers with status 200 that are not what the endpoint must answer. Each is
// something a broken proxy, a half-deployed provider or a captive portal has been seen to send.
const GARBAGE = {
  token: [
    () => ['text/html', '<html><body><h1>502 Bad Gateway</h1></body></html>'],
    () => ['application/json', '{"access_token":"eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjE'],
    () => ['application/json', crypto.randomBytes(512)],
    () => ['application/json', '{"token_type":"Bearer","expires_in":300}'],
    () => ['application/json', '{"access_token":"not.a.jwt","id_token":"x.y.z","refresh_token":"r","token_type":"Bearer","expires_in":300}'],
    () => ['application/json', '[1,2,3]'],
    () => ['application/json', `{"access_token":"${'A'.repeat(2 * 1024 * 1024)}"}`],
  ],
  certs: [
    () => ['text/html', '<html><body>Service Unavailable</body></html>'],
    () => ['application/json', '{"keys":[{"kty":"RSA","kid":"'],
    () => ['application/json', crypto.randomBytes(512)],
    () => ['application/json', '{"keys":"none"}'],
    () => ['application/json', `{"keys":[${'{"kty":"RSA","n":"AQAB","e":"AQAB"},'.repeat(40000)}{}]}`],
  ],
};

/**
 * @param {{targetPort: number}} opts   the provider's port on 127.0.0.1
 * @returns {Promise<{port, setGarbage(endpoints: string[]), counts(): object, resetCounts(), stop()}>}
 */
export async function startFaultProxy({ targetPort }) {
  let garbage = new Set();
  let counts = {};
  const turn = { token: 0, certs: 0 };
  const bump = (k) => { counts[k] = (counts[k] ?? 0) + 1; };

  const server = http.createServer((req, res) => {
    const ep = endpointOf(req.url);
    bump(ep);
    if (garbage.has(ep) && GARBAGE[ep]) {
      const variants = GARBAGE[ep];
      const [type, body] = variants[turn[ep] % variants.length]();
      turn[ep] += 1;
      bump(`${ep}_garbage`);
      req.resume();
      req.on('end', () => {
        res.writeHead(200, { 'content-type': type, 'content-length': Buffer.byteLength(body) });
        res.end(body);
      });
      return;
    }
    const headers = { ...req.headers };
    delete headers.connection;
    delete headers['keep-alive'];
    const up = http.request({
      host: '127.0.0.1', port: targetPort, method: req.method, path: req.url, headers, agent: false,
    }, (ur) => {
      const h = { ...ur.headers };
      for (const k of ['connection', 'keep-alive', 'transfer-encoding']) delete h[k];
      res.writeHead(ur.statusCode, h);
      ur.pipe(res);
      ur.on('error', () => res.destroy());
    });
    up.on('error', (err) => {
      bump(`${ep}_unreachable`);
      if (err.code !== 'ECONNREFUSED') bump(`${ep}_reset`);
      // no answer at all: Envoy sees the connection reset before any header
      res.socket?.destroy();
    });
    // Envoy gave up (its timeout) or went away: stop waiting for the provider too.
    res.on('close', () => { if (!res.writableFinished) up.destroy(); });
    req.pipe(up);
  });
  // Never close an idle connection first: Envoy could reuse it at that very moment and see a
  // reset that no fault explains.
  server.keepAliveTimeout = 0;
  server.headersTimeout = 0;
  server.requestTimeout = 0;
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address();
  return {
    port,
    /** Answer these endpoints ("token", "certs") with garbage from now on; [] stops. */
    setGarbage(endpoints) { garbage = new Set(endpoints); },
    get garbage() { return [...garbage]; },
    counts() { return { ...counts }; },
    resetCounts() { counts = {}; },
    async stop() {
      server.closeAllConnections?.();
      await new Promise((resolve) => { server.close(() => resolve()); });
    },
  };
}
