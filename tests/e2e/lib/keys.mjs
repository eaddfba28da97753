// Keys and tokens for the tests. The test process holds the provider's private keys, so it can
// sign tokens of its own: expired, wrong issuer, alg none, HMAC with the public key, and so on.

import * as crypto from 'node:crypto';
import { promisify } from 'node:util';

import { CompactSign, importJWK } from 'jose';

const kidOf = () => crypto.randomBytes(12).toString('base64url');

function rsaJwk(use, alg) {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), use, alg, kid: kidOf() };
}

/** Strip the private members of a JWK. */
export function publicJwk(jwk) {
  const { d, p, q, dp, dq, qi, ...pub } = jwk;
  return pub;
}

/**
 * A Keycloak-like key set: one RSA-OAEP "enc" key first, then `signing` RS256 "sig" keys.
 * @returns {{enc: object, sig: object[], signing: object, jwks: {keys: object[]}, publicJwks: {keys: object[]}}}
 *   `signing` is the active signing key (the first one): the provider signs with it.
 */
export function generateKeys({ signing = 1, extraSig = [] } = {}) {
  const enc = rsaJwk('enc', 'RSA-OAEP');
  const sig = Array.from({ length: signing }, () => rsaJwk('sig', 'RS256'));
  return withKeys(enc, [...sig, ...extraSig]);
}

const generateKeyPairAsync = promisify(crypto.generateKeyPair);

/**
 * generateKeys() off the event loop (libuv's thread pool), bounded: a key generation that does
 * not end fails the test with a message that says so, instead of stopping the test process.
 */
export async function generateKeysAsync({ signing = 1, timeoutMs = 30000 } = {}) {
  const rsa = async (use, alg) => {
    const { privateKey } = await generateKeyPairAsync('rsa', { modulusLength: 2048 });
    return { ...privateKey.export({ format: 'jwk' }), use, alg, kid: kidOf() };
  };
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`RSA key generation took over ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    const [enc, ...sig] = await Promise.race([
      Promise.all([rsa('enc', 'RSA-OAEP'), ...Array.from({ length: signing }, () => rsa('sig', 'RS256'))]),
      timeout,
    ]);
    return withKeys(enc, sig);
  } finally {
    clearTimeout(timer);
  }
}

/** Build the key-set object from an enc key and signing keys (the first one signs). */
export function withKeys(enc, sig) {
  const keys = [enc, ...sig];
  return {
    enc,
    sig,
    signing: sig[0],
    jwks: { keys },
    publicJwks: { keys: keys.map(publicJwk) },
  };
}

/** A stand-alone key of any JWS algorithm (for "unknown key" tokens). */
export function generateKey(alg = 'ES256') {
  let privateKey;
  if (alg.startsWith('RS') || alg.startsWith('PS')) {
    ({ privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }));
  } else if (alg === 'ES256') {
    ({ privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }));
  } else if (alg === 'ES384') {
    ({ privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-384' }));
  } else if (alg === 'EdDSA' || alg === 'Ed25519') {
    ({ privateKey } = crypto.generateKeyPairSync('ed25519'));
  } else {
    throw new Error(`no key generator for ${alg}`);
  }
  return { ...privateKey.export({ format: 'jwk' }), use: 'sig', alg, kid: kidOf() };
}

/** PEM (SPKI) of a JWK's public part: the "secret" of the classic HS256 key-confusion attack. */
export function publicPem(jwk) {
  return crypto.createPublicKey({ key: publicJwk(jwk), format: 'jwk' }).export({ type: 'spki', format: 'pem' });
}

const b64 = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

/**
 * Sign claims into a compact JWS.
 * @param {object|string} claims payload object (or a raw string, used as is)
 * @param {{key?: object, kid?: string|null, alg?: string, header?: object, secret?: string|Buffer}} opts
 *   key: a private JWK (RS*, PS*, ES*, EdDSA); kid defaults to key.kid (null = no kid);
 *   alg "none" gives an unsigned token; alg HS* signs with `secret`; header members are merged
 *   into the protected header last (so they can override alg/kid/typ).
 */
export async function signToken(claims, { key, kid, alg, header = {}, secret } = {}) {
  const algorithm = alg ?? key?.alg ?? 'RS256';
  const hdr = { alg: algorithm, typ: 'JWT' };
  const k = kid === undefined ? key?.kid : kid;
  if (k !== null && k !== undefined) hdr.kid = k;
  Object.assign(hdr, header);
  const payload = typeof claims === 'string' ? Buffer.from(claims) : Buffer.from(JSON.stringify(claims));

  if (algorithm.toLowerCase() === 'none') {
    return `${b64(hdr)}.${payload.toString('base64url')}.`;
  }
  if (algorithm.startsWith('HS')) {
    if (secret === undefined) throw new Error('HS* needs a secret');
    const bytes = typeof secret === 'string' ? Buffer.from(secret) : secret;
    return new CompactSign(payload).setProtectedHeader(hdr).sign(new Uint8Array(bytes));
  }
  if (!key) throw new Error(`${algorithm} needs a key`);
  const { use, key_ops: _ops, ...jwk } = key;
  const cryptoKey = await importJWK({ ...jwk, alg: algorithm }, algorithm);
  return new CompactSign(payload).setProtectedHeader(hdr).sign(cryptoKey);
}

/** Re-encode a token's payload (keeping header and signature): a tampered token. */
export function tamper(token, mutate) {
  const [h, p, s] = token.split('.');
  const payload = JSON.parse(Buffer.from(p, 'base64url').toString('utf8'));
  const changed = mutate(payload) ?? payload;
  return `${h}.${Buffer.from(JSON.stringify(changed)).toString('base64url')}.${s}`;
}

/**
 * Keycloak-shaped access-token claims for a user (alice by default), valid for `ttl` seconds.
 */
export function accessTokenClaims({
  issuer, azp = 'productpage', aud = 'account', ttl = 300, now = Math.floor(Date.now() / 1000),
  sub = 'a1f0c9a4-5b7e-4f43-9d1e-2c6d8a7b3e01', username = 'alice', given = 'Alice', family = 'Liddell',
  email = 'alice@example.com', roles = ['user'], ...extra
} = {}) {
  return {
    exp: now + ttl,
    iat: now,
    jti: crypto.randomUUID(),
    iss: issuer,
    aud,
    sub,
    typ: 'Bearer',
    azp,
    sid: crypto.randomUUID(),
    acr: '1',
    realm_access: { roles: [...roles, 'offline_access', 'uma_authorization', 'default-roles-dev'] },
    scope: 'openid profile email',
    email_verified: true,
    name: `${given} ${family}`,
    preferred_username: username,
    given_name: given,
    family_name: family,
    email,
    ...extra,
  };
}

