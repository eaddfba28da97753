// Keys and tokens for the benchmark: one Keycloak-like key set (an RSA-OAEP "enc" key and one
// RS256 "sig" key, 2048-bit) and N distinct access tokens signed with it.
//
//   node bench/gen-tokens.mjs <out-dir> <count> <issuer>
//
// Writes <out-dir>/jwks.json (public key set), <out-dir>/tokens.txt (one token per line; the
// first one is the "warm" token) and <out-dir>/meta.json. Tokens are valid for 10 years, so an
// existing set for the same issuer with at least <count> tokens is kept (signing takes a while).

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { accessTokenClaims, generateKeys } from '../tests/e2e/lib/keys.mjs';

const [outDir, countArg, issuer] = process.argv.slice(2);
const count = Number(countArg);
if (!outDir || !Number.isInteger(count) || count < 1 || !issuer) {
  console.error('usage: node gen-tokens.mjs <out-dir> <count> <issuer>');
  process.exit(2);
}
fs.mkdirSync(outDir, { recursive: true });
const metaPath = path.join(outDir, 'meta.json');
const tokensPath = path.join(outDir, 'tokens.txt');
const jwksPath = path.join(outDir, 'jwks.json');

const TTL = 10 * 365 * 24 * 3600;
const now = Math.floor(Date.now() / 1000);

if (fs.existsSync(metaPath) && fs.existsSync(tokensPath) && fs.existsSync(jwksPath)) {
  const meta = JSON.parse(fs.readFileSync(metaPath, 'utf8'));
  if (meta.issuer === issuer && meta.count >= count && meta.exp > now + 30 * 24 * 3600) {
    console.log(`tokens: reusing ${meta.count} tokens in ${tokensPath}`);
    process.exit(0);
  }
}

const keys = generateKeys();
const signing = keys.signing;
const privateKey = crypto.createPrivateKey({ key: signing, format: 'jwk' });
const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
const header = b64({ alg: 'RS256', typ: 'JWT', kid: signing.kid });

const started = Date.now();
const lines = [];
let exp = 0;
for (let i = 0; i < count; i += 1) {
  // Keycloak-like claims (iss, azp "productpage", aud "account", realm roles, ...), distinct jti.
  const claims = accessTokenClaims({ issuer, ttl: TTL, now });
  exp = claims.exp;
  const input = `${header}.${b64(claims)}`;
  const sig = crypto.sign('sha256', Buffer.from(input), privateKey).toString('base64url');
  lines.push(`${input}.${sig}`);
}
if (new Set(lines).size !== lines.length) throw new Error('tokens are not distinct');

fs.writeFileSync(jwksPath, JSON.stringify(keys.publicJwks));
fs.writeFileSync(tokensPath, `${lines.join('\n')}\n`);
fs.writeFileSync(metaPath, JSON.stringify({ issuer, count, exp, kid: signing.kid, created: new Date().toISOString() }));
console.log(`tokens: signed ${count} RS256 tokens in ${Date.now() - started} ms -> ${tokensPath}`);
