// A sealed session cookie exactly as mesh-oidc writes one (src/session.rs: JWE compact, A256KW +
// A256GCM, the key being the 32 bytes of `session_secret`), holding an ID token and a refresh
// token of realistic size, for the login_session scenario.
//
//   node bench/seal-session.mjs <session_secret (base64)> <id token>
//
// Prints the cookie value. Built with node:crypto only (RFC 7516 / RFC 3394 by hand).

import * as crypto from 'node:crypto';

const [secretB64, idToken] = process.argv.slice(2);
const kek = Buffer.from(secretB64 ?? '', 'base64');
if (kek.length !== 32 || !idToken) {
  console.error('usage: node seal-session.mjs <session_secret: base64 of 32 bytes> <id token>');
  process.exit(2);
}
const b64 = (b) => Buffer.from(b).toString('base64url');
const now = Math.floor(Date.now() / 1000);
const ttl = 30 * 24 * 3600;
// The refresh token: Keycloak's are signed JWTs of about 700 characters.
const refresh = `${b64(crypto.randomBytes(40))}.${b64(crypto.randomBytes(420))}.${b64(crypto.randomBytes(64))}`;
const payload = JSON.stringify({ iat: now, exp: now + ttl, i: idToken, r: refresh });

const cek = crypto.randomBytes(32);
const wrap = crypto.createCipheriv('id-aes256-wrap', kek, Buffer.from('A6A6A6A6A6A6A6A6', 'hex'));
const wrapped = Buffer.concat([wrap.update(cek), wrap.final()]);
const protectedHeader = b64(JSON.stringify({ alg: 'A256KW', enc: 'A256GCM' }));
const iv = crypto.randomBytes(12);
const gcm = crypto.createCipheriv('aes-256-gcm', cek, iv);
gcm.setAAD(Buffer.from(protectedHeader, 'ascii'));
const ciphertext = Buffer.concat([gcm.update(payload, 'utf8'), gcm.final()]);
process.stdout.write(`${protectedHeader}.${b64(wrapped)}.${b64(iv)}.${b64(ciphertext)}.${b64(gcm.getAuthTag())}\n`);
