//! Introspection in validate mode (V3, RFC 7662): the provider says whether a token is still
//! active, for opaque tokens (no JWT shape) and for JWTs after local verification, so that a
//! revoked token is refused within `cache_seconds`. Answers are cached in shared data, so every
//! worker of the proxy uses them, in a fixed number of slots (bounded memory).
//!
//! Fail closed: `active: false`, an error, a timeout or an answer that breaks the token rules is
//! a 401, never a pass. Errors are not cached (the next request asks again).

use crate::json::{Map, Value};

use crate::calls::{self, TokenCall};
use crate::config::{Introspection, TokenRules};
use crate::token::TokenError;

/// Shared-data slots; a token's digest picks one, and a newer answer replaces an older one.
pub const SLOTS: usize = 512;
/// Answers larger than this are used but not cached.
pub const MAX_CACHED: usize = 4096;
const DIGEST_LEN: usize = 16;

/// What the provider said about a token, once judged.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Active and within the rules: its claims (used for claim headers and rules when the token
    /// is opaque).
    Active(Map<String, Value>),
    /// Not active, or an answer that breaks the token rules.
    Refused(TokenError),
}

/// Where a token's answer is cached.
#[derive(Clone, PartialEq, Eq)]
pub struct Lookup {
    pub key: String,
    digest: [u8; DIGEST_LEN],
}

impl std::fmt::Debug for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lookup({})", self.key)
    }
}

impl Lookup {
    /// `namespace`: what tells configurations apart (the issuer): every WasmPlugin of an Istio
    /// proxy shares one shared-data space, and an answer judged by one's rules is not another's.
    pub fn new(namespace: &str, token: &[u8]) -> Lookup {
        let mut input = namespace.as_bytes().to_vec();
        input.push(0);
        input.extend_from_slice(token);
        let hash = hmac_sha256::Hash::hash(&input);
        let mut digest = [0u8; DIGEST_LEN];
        for (d, h) in digest.iter_mut().zip(hash.iter()) {
            *d = *h;
        }
        let index = usize::from(u16::from_be_bytes([digest[0], digest[1]])) % SLOTS;
        Lookup {
            key: format!("mesh-oidc/introspect/{index}"),
            digest,
        }
    }

    /// The cached answer for this token, if the slot holds one still fresh at `now`.
    pub fn cached(&self, slot: &[u8], now: u64) -> Option<Answer> {
        let (digest, rest) = slot.split_first_chunk::<DIGEST_LEN>()?;
        let (until, rest) = rest.split_first_chunk::<8>()?;
        if *digest != self.digest || u64::from_be_bytes(*until) <= now {
            return None;
        }
        let (&active, claims) = rest.split_first()?;
        if active == 0 {
            return Some(Answer::Refused(TokenError::Revoked));
        }
        match crate::json::from_slice(claims).ok()? {
            Value::Object(map) => Some(Answer::Active(map)),
            _ => None,
        }
    }

    /// The slot's content for `answer`, valid until `until` (unix seconds); `None` when it is
    /// too large to cache.
    pub fn encode(&self, answer: &Answer, until: u64) -> Option<Vec<u8>> {
        let mut out = self.digest.to_vec();
        out.extend_from_slice(&until.to_be_bytes());
        match answer {
            Answer::Active(claims) => {
                out.push(1);
                out.extend_from_slice(crate::json::object_to_json(claims).as_bytes());
            }
            Answer::Refused(_) => out.push(0),
        }
        (out.len() <= MAX_CACHED).then_some(out)
    }
}

/// Whether a token has the JWT shape (three base64url segments); anything else is opaque.
pub fn is_jwt(token: &[u8]) -> bool {
    token.split(|b| *b == b'.').count() == 3
        && token
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The introspection call for `token`, authenticated as the configured client.
pub fn call(intro: &Introspection, token: &str) -> TokenCall {
    let client = calls::Client {
        id: &intro.client_id,
        secret: intro.client_secret.expose(),
        auth: intro.client_auth,
    };
    calls::client_call(
        &intro.endpoint,
        &client,
        vec![("token", token), ("token_type_hint", "access_token")],
    )
}

/// Judges the provider's answer. `Err` is an error (not cached): the status or body was not an
/// introspection answer.
pub fn judge(status: u32, body: &[u8], rules: &TokenRules, now: u64) -> Result<Answer, String> {
    if status == 0 {
        return Err("the introspection endpoint did not answer in time".into());
    }
    if status != 200 {
        return Err(format!("the introspection endpoint answered HTTP {status}"));
    }
    let Ok(Value::Object(claims)) = crate::json::from_slice(body) else {
        return Err("the introspection endpoint answered with a malformed body".into());
    };
    if claims.get("active") != Some(&Value::Bool(true)) {
        return Ok(Answer::Refused(TokenError::Revoked));
    }
    Ok(
        match crate::token::check_introspected(&claims, rules, now) {
            Ok(_) => Answer::Active(claims),
            Err(e) => Answer::Refused(e),
        },
    )
}

/// Until when an answer is cached: `cache_seconds`, and an active answer never past the token's
/// `exp`.
pub fn cache_until(answer: &Answer, now: u64, cache_seconds: u64) -> u64 {
    let until = now.saturating_add(cache_seconds);
    match answer {
        Answer::Active(claims) => claims
            .get("exp")
            .and_then(Value::as_u64)
            .map_or(until, |exp| until.min(exp)),
        Answer::Refused(_) => until,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;
    use serde_json::{json, Value};

    fn answer(v: Value) -> Vec<u8> {
        v.to_string().into_bytes()
    }

    fn active() -> Value {
        json!({"active": true, "iss": ISSUER, "exp": NOW + 60, "azp": "productpage",
               "sub": "alice-id", "preferred_username": "alice", "typ": "Bearer"})
    }

    #[test]
    fn answers_are_judged_by_the_token_rules() {
        let r = rules();
        assert!(matches!(
            judge(200, &answer(active()), &r, NOW),
            Ok(Answer::Active(_))
        ));
        assert_eq!(
            judge(200, &answer(json!({"active": false})), &r, NOW),
            Ok(Answer::Refused(TokenError::Revoked))
        );
        for (edit, want) in [
            (json!({"iss": "https://evil"}), TokenError::WrongIssuer),
            (json!({"exp": NOW - 31}), TokenError::Expired),
            (
                json!({"azp": "someone-else"}),
                TokenError::WrongAuthorizedParty,
            ),
            (json!({"typ": "ID"}), TokenError::NotAnAccessToken),
            (json!({"active": "true"}), TokenError::Revoked),
        ] {
            let mut v = active();
            for (k, val) in edit.as_object().unwrap() {
                v[k] = val.clone();
            }
            assert_eq!(
                judge(200, &answer(v), &r, NOW),
                Ok(Answer::Refused(want.clone())),
                "{want:?}"
            );
        }
        let mut no_exp = active();
        no_exp.as_object_mut().unwrap().remove("exp");
        assert_eq!(
            judge(200, &answer(no_exp), &r, NOW),
            Ok(Answer::Refused(TokenError::MissingExpiry))
        );
        assert!(judge(0, b"", &r, NOW).is_err());
        assert!(judge(500, b"{}", &r, NOW).is_err());
        assert!(judge(200, b"<html>", &r, NOW).is_err());
    }

    #[test]
    fn answers_are_cached_per_token_until_the_cache_time_or_exp() {
        let l = Lookup::new(ISSUER, b"opaque-token");
        let a = match judge(200, &answer(active()), &rules(), NOW).unwrap() {
            Answer::Active(c) => Answer::Active(c),
            other => panic!("{other:?}"),
        };
        let until = cache_until(&a, NOW, 30);
        assert_eq!(until, NOW + 30);
        assert_eq!(cache_until(&a, NOW, 3600), NOW + 60, "never past exp");
        let slot = l.encode(&a, until).unwrap();
        assert_eq!(l.cached(&slot, NOW + 29), Some(a.clone()));
        assert_eq!(l.cached(&slot, NOW + 30), None, "expired");
        assert_eq!(Lookup::new(ISSUER, b"other").cached(&slot, NOW), None);
        let refused = Answer::Refused(TokenError::Revoked);
        let slot = l.encode(&refused, NOW + 30).unwrap();
        assert_eq!(l.cached(&slot, NOW), Some(refused));
        assert_eq!(l.cached(b"garbage", NOW), None);
        let mut big = active();
        big["groups"] = json!("x".repeat(MAX_CACHED));
        let Answer::Active(c) = judge(200, &answer(big), &rules(), NOW).unwrap() else {
            panic!()
        };
        assert_eq!(l.encode(&Answer::Active(c), NOW + 30), None);
        assert!(!format!("{l:?}").contains("opaque"));
        assert_ne!(
            Lookup::new("https://other", b"opaque-token"),
            l,
            "per configuration"
        );
    }

    #[test]
    fn shapes() {
        assert!(is_jwt(valid_token().as_bytes()));
        assert!(!is_jwt(b"8xLOxBtZp8"));
        assert!(!is_jwt(b"a.b"));
        assert!(!is_jwt(b"a.b.c d"));
    }
}
