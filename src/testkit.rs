//! Test helpers: keys, key sets and tokens the tests make themselves. The module is compiled for
//! tests only (`lib.rs` declares it under `#[cfg(test)]`); the attribute below repeats that where
//! a reader of this file sees it, since helpers here may panic.

#[cfg(test)]
use std::sync::OnceLock;

use base64::Engine as _;
use jwt_simple::prelude::*;
use serde_json::{json, Map, Value};

use crate::config::TokenRules;

pub const ISSUER: &str = "https://sso.example.com/realms/dev";
pub const NOW: u64 = 1_800_000_000;

pub fn rsa() -> &'static RS256KeyPair {
    static KEY: OnceLock<RS256KeyPair> = OnceLock::new();
    KEY.get_or_init(|| {
        RS256KeyPair::generate(2048)
            .map(|k| k.with_key_id("rsa-1"))
            .unwrap_or_else(|e| panic!("rsa keygen: {e}"))
    })
}

pub fn other_rsa() -> &'static RS256KeyPair {
    static KEY: OnceLock<RS256KeyPair> = OnceLock::new();
    KEY.get_or_init(|| {
        RS256KeyPair::generate(2048)
            .map(|k| k.with_key_id("rsa-1"))
            .unwrap_or_else(|e| panic!("rsa keygen: {e}"))
    })
}

pub fn ec() -> &'static ES256KeyPair {
    static KEY: OnceLock<ES256KeyPair> = OnceLock::new();
    KEY.get_or_init(|| ES256KeyPair::generate().with_key_id("ec-1"))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn rsa_jwk(key: &RS256KeyPair, kid: &str) -> Value {
    let c = key.public_key().to_components();
    json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": b64(&c.n), "e": b64(&c.e)})
}

pub fn ec_jwk(key: &ES256KeyPair, kid: &str) -> Value {
    let point = key.public_key().public_key().to_bytes_uncompressed();
    let (x, y) = point.get(1..).unwrap_or_default().split_at(32);
    json!({"kty": "EC", "kid": kid, "use": "sig", "crv": "P-256", "x": b64(x), "y": b64(y)})
}

/// A key set shaped like Keycloak's: an encryption key first, then the signing keys.
pub fn keycloak_jwks() -> Value {
    let enc = {
        let mut k = rsa_jwk(other_rsa(), "enc-1");
        k["use"] = json!("enc");
        k["alg"] = json!("RSA-OAEP");
        k
    };
    json!({"keys": [enc, rsa_jwk(rsa(), "rsa-1"), ec_jwk(ec(), "ec-1")]})
}

pub fn keyset() -> crate::jwks::KeySet {
    crate::jwks::KeySet::parse(keycloak_jwks().to_string().as_bytes())
        .unwrap_or_else(|e| panic!("keyset: {e}"))
}

/// Claims as Keycloak puts them in an access token.
pub fn keycloak_claims() -> Map<String, Value> {
    let v = json!({
        "azp": "productpage",
        "typ": "Bearer",
        "preferred_username": "alice",
        "given_name": "Alice",
        "email": "alice@example.com",
        "realm_access": {"roles": ["user", "reader"]},
    });
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

pub fn claims(custom: Map<String, Value>) -> JWTClaims<Map<String, Value>> {
    let mut c = Claims::with_custom_claims(custom, Duration::from_secs(300))
        .with_issuer(ISSUER)
        .with_audience("account")
        .with_subject("alice-id");
    c.issued_at = Some(UnixTimeStamp::from_secs(NOW - 10));
    c.invalid_before = Some(UnixTimeStamp::from_secs(NOW - 10));
    c.expires_at = Some(UnixTimeStamp::from_secs(NOW + 290));
    c
}

pub fn sign_rsa(c: JWTClaims<Map<String, Value>>) -> String {
    rsa().sign(c).unwrap_or_else(|e| panic!("sign: {e}"))
}

pub fn valid_token() -> String {
    sign_rsa(claims(keycloak_claims()))
}

pub fn rules() -> TokenRules {
    TokenRules {
        issuer: ISSUER.into(),
        audiences: vec![],
        authorized_parties: vec!["productpage".into()],
        client_id_as_audience: None,
        clock_skew_seconds: 30,
    }
}

/// A token with the given header and payload and a junk signature.
pub fn raw_token(header: &Value, payload: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(payload.to_string().as_bytes()),
        b64(signature)
    )
}

/// A compact JWS of exactly this header and payload text, signed with [`ec`]: for headers and
/// payloads the token libraries would not write (duplicate names, JWE parameters).
pub fn sign_raw_es256(header: &str, payload: &str) -> String {
    let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let (signature, _) = ec()
        .key_pair()
        .as_ref()
        .sign_recoverable(input.as_bytes())
        .unwrap_or_else(|e| panic!("sign: {e}"));
    format!("{input}.{}", b64(&signature.to_bytes()))
}
