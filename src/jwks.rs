//! The provider's signing keys (a JWK Set), parsed into the public keys tokens are checked with.
//!
//! Keys that cannot sign (`use: enc`), unknown key types and curves, and malformed entries are
//! skipped one by one: Keycloak publishes an encryption key first, and one odd entry must not cost
//! the whole set.

use base64::Engine as _;
use serde_json::Value;

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

    pub fn name(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMaterial {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
        /// Precomputed once per key set: RS256 checks take the fast path (`crate::rsa`).
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
    /// How many entries were skipped (encryption keys, unknown types, malformed).
    pub skipped: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksError {
    NotJson,
    NoKeysArray,
}

impl std::fmt::Display for JwksError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwksError::NotJson => f.write_str("key set is not JSON"),
            JwksError::NoKeysArray => f.write_str("key set has no \"keys\" array"),
        }
    }
}

/// Upper bound on the keys kept from one set: a provider publishes a handful.
const MAX_KEYS: usize = 64;

impl KeySet {
    pub fn parse(bytes: &[u8]) -> Result<KeySet, JwksError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|_| JwksError::NotJson)?;
        let entries = value
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(JwksError::NoKeysArray)?;
        let mut set = KeySet::default();
        for entry in entries {
            match parse_key(entry) {
                Some(key) if set.keys.len() < MAX_KEYS => set.keys.push(key),
                _ => set.skipped += 1,
            }
        }
        Ok(set)
    }

    pub fn by_kid(&self, kid: &str) -> Option<&Jwk> {
        self.keys.iter().find(|k| k.kid.as_deref() == Some(kid))
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.by_kid(kid).is_some()
    }
}

fn b64(value: &Value, name: &str) -> Option<Vec<u8>> {
    let s = value.get(name)?.as_str()?;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()
        .filter(|b| !b.is_empty())
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
            let n = b64(entry, "n")?;
            let e = b64(entry, "e")?;
            // Below 2048 bits RSA is not safe; jwt-simple refuses such keys too.
            if n.iter().skip_while(|b| **b == 0).count() < 256 {
                return None;
            }
            let fast = crate::rsa::PublicKey::new(&n, &e);
            KeyMaterial::Rsa { n, e, fast }
        }
        "EC" => {
            let x = b64(entry, "x")?;
            let y = b64(entry, "y")?;
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
    use serde_json::json;

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
