//! The provider's signing keys (a JWK Set), parsed into the public keys tokens are checked with.
//!
//! Keys that cannot sign (`use: enc`), unknown key types and curves, and malformed entries are
//! skipped one by one: Keycloak publishes an encryption key first, and one odd entry must not cost
//! the whole set.
//!
//! Parsing is bounded before anything costly happens (issue 8: 170 RSA-8192 keys stalled every
//! worker for 2.3 s): the body's size, the number of entries read, and each RSA key's size and
//! exponent are checked before its Montgomery constants are computed.

use crate::json::Value;
use base64::Engine as _;

/// A signing algorithm this filter accepts. Only asymmetric ones exist here, so `none` and HMAC
/// cannot even be named. ES384 (P-384) is left out on purpose: its curve arithmetic alone would
/// add about 130 KB to the module, and Keycloak signs with RS256 unless told otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
}

impl Alg {
    pub fn from_name(name: &str) -> Option<Alg> {
        Some(match name {
            "RS256" => Alg::RS256,
            "RS384" => Alg::RS384,
            "RS512" => Alg::RS512,
            "PS256" => Alg::PS256,
            "PS384" => Alg::PS384,
            "PS512" => Alg::PS512,
            "ES256" => Alg::ES256,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMaterial {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
        /// Precomputed once per key set: every RSA check goes through `crate::rsa`.
        fast: Option<crate::rsa::PublicKey>,
    },
    /// SEC1 uncompressed point (0x04 || x || y).
    P256(Vec<u8>),
}

impl KeyMaterial {
    /// Whether this key can verify a signature made with `alg`.
    pub fn fits(&self, alg: Alg) -> bool {
        match self {
            KeyMaterial::Rsa { .. } => matches!(
                alg,
                Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512
            ),
            KeyMaterial::P256(_) => alg == Alg::ES256,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwk {
    pub kid: Option<String>,
    /// The key's own `alg`, when the set names one: then only that algorithm is accepted.
    pub alg: Option<Alg>,
    pub material: KeyMaterial,
}

impl Jwk {
    pub fn accepts(&self, alg: Alg) -> bool {
        self.material.fits(alg) && self.alg.is_none_or(|a| a == alg)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySet {
    pub keys: Vec<Jwk>,
    /// How many entries were skipped (encryption keys, unknown types, malformed, out of bounds).
    pub skipped: usize,
    /// How many entries were not read at all: those after the first [`MAX_ENTRIES`].
    pub not_read: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksError {
    TooLarge,
    NotJson,
    NoKeysArray,
}

impl std::fmt::Display for JwksError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwksError::TooLarge => write!(f, "key set is larger than {MAX_JWKS_BYTES} bytes"),
            JwksError::NotJson => f.write_str("key set is not JSON"),
            JwksError::NoKeysArray => f.write_str("key set has no \"keys\" array"),
        }
    }
}

/// Largest key-set body parsed: a provider's set is a few KB.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Entries of `keys` read, in order; the rest are counted, not parsed. A provider publishes a
/// handful (Keycloak: one per algorithm and use, plus those being rotated).
pub const MAX_ENTRIES: usize = 32;
/// RSA moduli accepted, in bits: below 2048 RSA is not safe; above 4096, a key costs more to
/// prepare and to use than any provider needs.
const RSA_MIN_BITS: usize = 2048;
const RSA_MAX_BITS: usize = 4096;
/// Public exponents accepted: odd, greater than 1, at most 2^32 (65537 in practice).
const RSA_MAX_EXPONENT_BYTES: usize = 4;

impl KeySet {
    pub fn parse(bytes: &[u8]) -> Result<KeySet, JwksError> {
        if bytes.len() > MAX_JWKS_BYTES {
            return Err(JwksError::TooLarge);
        }
        let value: Value = crate::json::from_slice(bytes).map_err(|_| JwksError::NotJson)?;
        let entries = value
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(JwksError::NoKeysArray)?;
        let mut set = KeySet {
            not_read: entries.len().saturating_sub(MAX_ENTRIES),
            ..KeySet::default()
        };
        for entry in entries.iter().take(MAX_ENTRIES) {
            match parse_key(entry) {
                Some(key) => set.keys.push(key),
                None => set.skipped += 1,
            }
        }
        Ok(set)
    }

    pub fn by_kid(&self, kid: &str) -> Option<&Jwk> {
        self.keys.iter().find(|k| k.kid.as_deref() == Some(kid))
    }
}

/// A base64url member of at most `max_bytes` bytes once decoded (longer text is not decoded).
fn b64(value: &Value, name: &str, max_bytes: usize) -> Option<Vec<u8>> {
    let s = value.get(name)?.as_str()?.trim_end_matches('=');
    if s.len() > max_bytes.div_ceil(3).saturating_mul(4) {
        return None;
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()
        .filter(|b| !b.is_empty() && b.len() <= max_bytes)
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes.get(first..).unwrap_or_default()
}

fn bit_length(be: &[u8]) -> usize {
    let be = strip_zeros(be);
    match be.first() {
        Some(top) => (be.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
        None => 0,
    }
}

/// Whether `n` and `e` make a public key worth preparing: 2048 to 4096 bits, `n` odd, `e` odd,
/// greater than 1 and at most 2^32. Checked before any big-number work.
fn rsa_in_bounds(n: &[u8], e: &[u8]) -> bool {
    let e = strip_zeros(e);
    let exponent = e.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    (RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bit_length(n))
        && n.last().is_some_and(|b| b % 2 == 1)
        && e.len() <= RSA_MAX_EXPONENT_BYTES
        && exponent > 1
        && exponent % 2 == 1
}

fn parse_key(entry: &Value) -> Option<Jwk> {
    let text = |name: &str| entry.get(name).and_then(Value::as_str);
    if let Some(usage) = text("use") {
        if usage != "sig" {
            return None;
        }
    }
    if let Some(ops) = entry.get("key_ops").and_then(Value::as_array) {
        if !ops.iter().any(|op| op.as_str() == Some("verify")) {
            return None;
        }
    }
    let alg = match text("alg") {
        None => None,
        // A key bound to an algorithm we do not accept (RSA-OAEP, HS256, ...) is not for us.
        Some(name) => Some(Alg::from_name(name)?),
    };
    let material = match text("kty")? {
        "RSA" => {
            // One leading zero byte is tolerated in either member.
            let n = b64(entry, "n", RSA_MAX_BITS / 8 + 1)?;
            let e = b64(entry, "e", RSA_MAX_EXPONENT_BYTES + 1)?;
            if !rsa_in_bounds(&n, &e) {
                return None;
            }
            // The verifier's constants (`crate::rsa`), once per key set; a key it refuses
            // verifies nothing, so it is skipped like any other unusable entry.
            let fast = Some(crate::rsa::PublicKey::new(&n, &e)?);
            KeyMaterial::Rsa { n, e, fast }
        }
        "EC" => {
            let x = b64(entry, "x", 32)?;
            let y = b64(entry, "y", 32)?;
            let (size, wrap): (usize, fn(Vec<u8>) -> KeyMaterial) = match text("crv")? {
                "P-256" => (32, KeyMaterial::P256),
                _ => return None,
            };
            if x.len() != size || y.len() != size {
                return None;
            }
            let mut point = Vec::with_capacity(1 + 2 * size);
            point.push(4u8);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            wrap(point)
        }
        _ => return None,
    };
    let jwk = Jwk {
        kid: text("kid").map(str::to_string),
        alg,
        material,
    };
    // An alg that does not fit the key type is a broken entry.
    if jwk.alg.is_some_and(|a| !jwk.material.fits(a)) {
        return None;
    }
    Some(jwk)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;
    use serde_json::{json, Value};

    #[test]
    fn keycloak_set_skips_the_encryption_key() {
        let set = keyset();
        let kids: Vec<_> = set.keys.iter().filter_map(|k| k.kid.as_deref()).collect();
        assert_eq!(kids, vec!["rsa-1", "ec-1"]);
        assert_eq!(set.skipped, 1);
        assert!(set.by_kid("rsa-1").unwrap().accepts(Alg::RS256));
        assert!(
            !set.by_kid("rsa-1").unwrap().accepts(Alg::PS256),
            "bound to its alg"
        );
        assert!(set.by_kid("ec-1").unwrap().accepts(Alg::ES256));
        assert!(!set.by_kid("ec-1").unwrap().accepts(Alg::RS256));
    }

    #[test]
    fn odd_entries_are_skipped_not_fatal() {
        let good = rsa_jwk(rsa(), "good");
        let mut short = rsa_jwk(rsa(), "short");
        short["n"] = json!("AQAB");
        let set = KeySet::parse(
            json!({"keys": [
                {"kty": "oct", "k": "c2VjcmV0"},
                {"kty": "OKP", "crv": "Ed25519", "x": "abc"},
                {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"},
                {"kty": "RSA", "n": 5, "e": "AQAB"},
                {"kty": "RSA", "kid": "hs", "alg": "HS256", "n": good["n"], "e": "AQAB"},
                {"kty": "RSA", "kid": "mismatch", "alg": "ES256", "n": good["n"], "e": "AQAB"},
                {"kty": "RSA", "kid": "ops", "key_ops": ["encrypt"], "n": good["n"], "e": "AQAB"},
                short,
                "not an object",
                good
            ]})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(set.keys.len(), 1);
        assert_eq!(set.keys[0].kid.as_deref(), Some("good"));
        assert_eq!(set.skipped, 9);
    }

    /// An RSA JWK with a made-up modulus of `bits` bits (odd) and exponent `e`.
    fn rsa_entry(bits: usize, e: &[u8]) -> Value {
        let mut n = vec![0xa5u8; bits.div_ceil(8)];
        if let Some(top) = n.first_mut() {
            *top = 0xff >> ((8 - bits % 8) % 8);
        }
        if let Some(last) = n.last_mut() {
            *last |= 1;
        }
        assert_eq!(bit_length(&n), bits);
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        json!({"kty": "RSA", "use": "sig", "n": b64(&n), "e": b64(e)})
    }

    fn parse_entries(entries: Vec<Value>) -> KeySet {
        KeySet::parse(json!({ "keys": entries }).to_string().as_bytes()).unwrap()
    }

    #[test]
    fn rsa_moduli_must_be_2048_to_4096_bits() {
        let f4 = [1u8, 0, 1];
        for (bits, kept) in [
            (2040, false),
            (2047, false),
            (2048, true),
            (3072, true),
            (4096, true),
            (4097, false),
            (8192, false),
        ] {
            let set = parse_entries(vec![rsa_entry(bits, &f4)]);
            assert_eq!(set.keys.len(), usize::from(kept), "{bits} bits");
            if let Some(Jwk {
                material: KeyMaterial::Rsa { fast, .. },
                ..
            }) = set.keys.first()
            {
                assert!(fast.is_some(), "{bits} bits: RS256 fast path ready");
            }
        }
        // An even modulus is no RSA modulus.
        let mut even = rsa_entry(2048, &f4);
        let mut n = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(even["n"].as_str().unwrap())
            .unwrap();
        *n.last_mut().unwrap() &= 0xfe;
        even["n"] = json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&n));
        assert_eq!(parse_entries(vec![even]).keys.len(), 0);
    }

    #[test]
    fn rsa_exponents_must_be_small_odd_numbers() {
        for (e, kept) in [
            (&[3u8][..], true),
            (&[1, 0, 1][..], true),
            (&[0, 1, 0, 1][..], true),
            (&[0xff, 0xff, 0xff, 0xff][..], true),
            (&[1][..], false),
            (&[2][..], false),
            (&[1, 0, 0][..], false),
            (&[1, 0, 0, 0, 1][..], false),
            (&[0][..], false),
            (&[1, 0, 0, 0, 0, 0, 0, 0, 1][..], false),
        ] {
            let set = parse_entries(vec![rsa_entry(2048, e)]);
            assert_eq!(set.keys.len(), usize::from(kept), "e = {e:?}");
        }
    }

    #[test]
    fn many_huge_keys_are_refused_before_any_work() {
        // Issue 8: 170 RSA-8192 keys. None is prepared; only the first 32 entries are read.
        let huge: Vec<Value> = (0..170).map(|_| rsa_entry(8192, &[1, 0, 1])).collect();
        let start = std::time::Instant::now();
        let set = parse_entries(huge);
        let elapsed = start.elapsed();
        assert_eq!(set.keys.len(), 0);
        assert_eq!(set.skipped, MAX_ENTRIES);
        assert_eq!(set.not_read, 170 - MAX_ENTRIES);
        println!("170 RSA-8192 entries: {elapsed:?}");
        // Good keys past the first 32 entries are not read either.
        let mut many: Vec<Value> = (0..40).map(|_| rsa_entry(4096, &[1, 0, 1])).collect();
        many.push(rsa_jwk(rsa(), "late"));
        let set = parse_entries(many);
        assert_eq!(set.keys.len(), MAX_ENTRIES);
        assert_eq!(set.not_read, 41 - MAX_ENTRIES);
        assert!(set.by_kid("late").is_none());
    }

    #[test]
    fn a_body_over_the_cap_is_refused() {
        let mut body = br#"{"keys": [], "pad": ""#.to_vec();
        body.resize(MAX_JWKS_BYTES, b'a');
        body.extend_from_slice(br#""}"#);
        assert_eq!(KeySet::parse(&body), Err(JwksError::TooLarge));
    }

    #[test]
    fn not_a_key_set() {
        assert_eq!(KeySet::parse(b"<html>"), Err(JwksError::NotJson));
        assert_eq!(
            KeySet::parse(b"{\"keys\": {}}"),
            Err(JwksError::NoKeysArray)
        );
        assert_eq!(KeySet::parse(b"[]"), Err(JwksError::NoKeysArray));
        assert_eq!(KeySet::parse(b"{\"keys\": []}").unwrap().keys.len(), 0);
    }
}
