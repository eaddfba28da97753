//! `token::verify`, `verify_access`, `verify_id_token` and the verified-token cache, on tokens the
//! harness signs with the provider's keys over whatever header and payload the fuzzer writes (so
//! that the claim checks behind the signature are reached), or on raw text.
//!
//! Checks: never a panic; `crate::rsa` (RS256, RS512, PS256, with the filter's own claim checks)
//! and jwt-simple's path give the same answer; the cache gives the answer an uncached check gives,
//! on a miss and on a hit; an access or ID token that verifies also verifies as "any" token with
//! the same claims; what verifies has the configured issuer, is not expired, and carries the
//! nonce asked for; an ES256 token and its high-S twin are one token.
#![no_main]

use std::cell::RefCell;

use fixtures::{keyset, keyset_without_fast_path, sign_raw, unb64, Input, Signer, ISSUER, NOW};
use libfuzzer_sys::fuzz_target;
use mesh_oidc::config::TokenRules;
use mesh_oidc::token::{self, Cache, TokenError, Verified};

const NONCE: &str = "n-1";

/// P-256's group order, big-endian.
const P256_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// The same token with S replaced by n − S (both verify, or neither).
fn high_s_twin(token: &str) -> Option<String> {
    let (input, signature) = token.rsplit_once('.')?;
    let mut sig = unb64(signature)?;
    if sig.len() != 64 || sig[32..].iter().all(|b| *b == 0) {
        return None;
    }
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = i16::from(P256_ORDER[i]) - i16::from(sig[32 + i]) - borrow;
        borrow = i16::from(d < 0);
        sig[32 + i] = d.rem_euclid(256) as u8;
    }
    (borrow == 0).then(|| format!("{input}.{}", fixtures::b64(&sig)))
}

fn rules(choice: u8) -> TokenRules {
    match choice % 3 {
        0 => TokenRules {
            issuer: ISSUER.into(),
            audiences: vec![],
            authorized_parties: vec!["productpage".into()],
            client_id_as_audience: None,
            clock_skew_seconds: 30,
        },
        1 => fixtures::login_config().rules.clone(),
        _ => TokenRules {
            issuer: ISSUER.into(),
            audiences: vec!["account".into(), "productpage".into()],
            authorized_parties: vec![],
            client_id_as_audience: None,
            clock_skew_seconds: 0,
        },
    }
}

fn check_verified(v: &Verified, rules: &TokenRules, nonce: Option<&str>) {
    assert_eq!(
        v.claims.get("iss").and_then(mesh_oidc::json::Value::as_str),
        Some(rules.issuer.as_str())
    );
    assert!(
        NOW < v.expires_at.saturating_add(rules.clock_skew_seconds),
        "expired"
    );
    assert_eq!(
        v.claims.get("exp").and_then(|e| e.as_u64()),
        Some(v.expires_at)
    );
    if let Some(n) = nonce {
        assert_eq!(
            v.claims
                .get("nonce")
                .and_then(mesh_oidc::json::Value::as_str),
            Some(n)
        );
    }
}

/// The same answer. jwt-simple reports a payload it cannot decode behind a good signature as an
/// opaque error, which the filter counts as a bad signature, where the fast path says malformed:
/// both refuse, only the 401's description differs.
fn same<T: PartialEq + std::fmt::Debug>(
    a: &Result<T, TokenError>,
    b: &Result<T, TokenError>,
    what: &str,
) {
    use TokenError::{BadSignature, Malformed};
    match (a, b) {
        (Err(Malformed), Err(BadSignature)) | (Err(BadSignature), Err(Malformed)) => {}
        _ => assert_eq!(a, b, "{what}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let signer = input.byte();
    let options = input.byte();
    let token = if signer == 0xfe {
        String::from_utf8_lossy(input.rest()).into_owned()
    } else {
        let header = input.part();
        let payload = input.part();
        sign_raw(Signer::from_byte(signer), header, payload)
    };
    let rules = rules(options);
    let nonce = (options & 0x10 != 0).then_some(NONCE);

    let any = token::verify(&token, keyset(), &rules, NOW, nonce);
    let any_slow = token::verify(&token, keyset_without_fast_path(), &rules, NOW, nonce);
    same(&any, &any_slow, "RS256 fast path and jwt-simple disagree");
    if let Ok(v) = &any {
        check_verified(v, &rules, nonce);
    }

    let id = token::verify_id_token(&token, keyset(), &rules, NOW, nonce);
    let id_slow = token::verify_id_token(&token, keyset_without_fast_path(), &rules, NOW, nonce);
    same(&id, &id_slow, "ID token: fast path and jwt-simple disagree");
    if let Ok(v) = &id {
        assert_eq!(Ok(v), any.as_ref(), "an ID token verifies as a token");
    }

    let access = token::verify_access(&token, keyset(), None, &rules, NOW);
    let access_slow = token::verify_access(&token, keyset_without_fast_path(), None, &rules, NOW);
    same(
        &access,
        &access_slow,
        "access token: fast path and jwt-simple disagree",
    );
    if let Ok(v) = &access {
        check_verified(v, &rules, None);
        let plain = token::verify(&token, keyset(), &rules, NOW, None);
        assert_eq!(
            Ok(v.as_ref()),
            plain.as_ref(),
            "an access token verifies as a token"
        );
    }

    let cache = RefCell::new(Cache::default());
    for round in 0..2 {
        let cached = token::verify_access(&token, keyset(), Some((&cache, 1)), &rules, NOW);
        assert_eq!(cached, access, "cache round {round}");
    }
    assert_eq!(cache.borrow().len(), usize::from(access.is_ok()));

    if let Some(twin) = high_s_twin(&token) {
        let twin_any = token::verify(&twin, keyset(), &rules, NOW, nonce);
        if any.is_ok() || twin_any.is_ok() {
            same(&twin_any, &any, "ES256 twins verify alike");
        }
        if access.is_ok() {
            let hit = token::verify_access(&twin, keyset(), Some((&cache, 1)), &rules, NOW);
            assert_eq!(hit, access, "the twin is the cached token");
            assert_eq!(cache.borrow().len(), 1, "twins share one cache entry");
        }
    }
});
