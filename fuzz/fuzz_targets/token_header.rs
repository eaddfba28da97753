//! `token::read_header`: the JOSE header of a token, read before anything is trusted. Never a
//! panic; what it accepts is a three-part compact token with an accepted algorithm and no JWE
//! parameter; and where jwt-simple (which checks RS384/512, PS* and ES256 signatures) reads the
//! same header, it reads the same algorithm and key id.
#![no_main]

use fixtures::{b64, Input};
use jwt_simple::prelude::Token;
use libfuzzer_sys::fuzz_target;
use mesh_oidc::jwks::Alg;
use mesh_oidc::token::{read_header, MAX_TOKEN_LEN};

fn name(alg: Alg) -> &'static str {
    match alg {
        Alg::RS256 => "RS256",
        Alg::RS384 => "RS384",
        Alg::RS512 => "RS512",
        Alg::PS256 => "PS256",
        Alg::PS384 => "PS384",
        Alg::PS512 => "PS512",
        Alg::ES256 => "ES256",
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    // Mostly a header JSON the harness encodes (the parser behind base64), sometimes a raw token.
    let token = match input.byte() % 4 {
        0 => String::from_utf8_lossy(input.rest()).into_owned(),
        _ => format!("{}.eyJzdWIiOiJ4In0.c2ln", b64(input.rest())),
    };
    let Ok(header) = read_header(&token) else {
        return;
    };
    assert!(token.len() <= MAX_TOKEN_LEN);
    assert_eq!(token.split('.').count(), 3);
    assert_eq!(Alg::from_name(name(header.alg)), Some(header.alg));
    let json = fixtures::unb64(token.split('.').next().unwrap_or_default()).expect("base64");
    let object: serde_json::Map<String, serde_json::Value> = match serde_json::from_slice(&json) {
        Ok(object) => object,
        // `mesh_oidc::json` keeps a number too large for an f64 as written (`1e400`); serde_json
        // refuses it. No member the filter reads is such a number (`fuzz_targets/json.rs`).
        Err(e) if e.to_string().starts_with("number out of range") => return,
        Err(e) => panic!("not a JSON object to serde_json: {e}"),
    };
    assert!(!object.contains_key("enc") && !object.contains_key("zip"));
    if let Ok(meta) = Token::decode_metadata(&token) {
        assert_eq!(meta.algorithm(), name(header.alg), "alg read two ways");
        assert_eq!(meta.key_id(), header.kid.as_deref(), "kid read two ways");
    }
});
