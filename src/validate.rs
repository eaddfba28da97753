//! Validate mode (V1, V2): a valid token passes with its claim headers, anything else gets a 401
//! and never reaches the service.

use crate::config::Config;
use crate::jwks::KeySet;
use crate::keystore::Refetch;
use crate::metrics::Event;
use crate::token::{self, TokenError};
use crate::web::{self, Reply};

/// What the filter does with a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Forward the request, with these (claim) headers set.
    Continue(token::ClaimHeaders),
    Reply(Reply),
    /// The key set has not arrived yet: hold the request until it does or time runs out.
    WaitForKeys,
    /// The token names a key the set lacks: fetch the set again, then decide.
    RefetchKeys,
    /// V3: ask the provider (or its cached answer) whether the token is active. `local`: the
    /// token's verified claims when it is a JWT.
    Introspect {
        local: Option<std::rc::Rc<token::Verified>>,
    },
}

/// The claim headers of a verified token (B3): only values that are valid header values. Worked
/// out once per token and mapping: the warm path sets a cached token's without reading its
/// claims again.
pub fn claim_headers(config: &Config, verified: &token::Verified) -> token::ClaimHeaders {
    match verified.claim_headers.get() {
        Some((mapping, headers)) if *mapping == config.claims_to_headers => headers.clone(),
        // Another mapping (a configuration pushed to the same VM): worked out, not kept.
        Some(_) => headers_for(config, &verified.claims),
        None => {
            let headers = headers_for(config, &verified.claims);
            // Cannot fail: the cell was empty just now, and nothing else runs in between.
            let _ = verified
                .claim_headers
                .set((config.claims_to_headers.clone(), headers.clone()));
            headers
        }
    }
}

fn headers_for(config: &Config, claims: &crate::json::Map) -> token::ClaimHeaders {
    config
        .claims_to_headers
        .iter()
        .filter_map(|(claim, header)| {
            token::claim_header_value(claims, claim).map(|v| (header.clone(), v))
        })
        .collect()
}

/// The access token a request presents (V1), as B6 reads it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Presented<'a> {
    Nothing,
    Token(&'a [u8]),
    /// Two different tokens: refused, whichever is valid.
    Conflict,
}

/// The token's length only.
impl std::fmt::Debug for Presented<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Presented::Nothing => f.write_str("Nothing"),
            Presented::Token(t) => write!(f, "Token([{} bytes])", t.len()),
            Presented::Conflict => f.write_str("Conflict"),
        }
    }
}

/// Whether a request header is a spelling of a claim header (B3+: any case, `_` for `-`), so
/// that it is removed before anything else: a service behind a proxy that maps `x_user` to
/// `x-user` (as CGI and WSGI servers do) must never see a client's own claim header.
pub fn is_claim_header(config: &Config, name: &str) -> bool {
    config.claims_to_headers.iter().any(|(_, header)| {
        header.len() == name.len()
            && header.bytes().zip(name.bytes()).all(|(h, n)| {
                let n = match n {
                    b'_' => b'-',
                    other => other.to_ascii_lowercase(),
                };
                h == n
            })
    })
}

/// Decides a validate-mode request whose claim headers were already stripped.
/// `route` is the request's method and path (with its query), for the rules (B7).
pub fn decide<'r>(
    config: &Config,
    route: (&str, &str),
    presented: Presented,
    keys: Option<&KeySet>,
    cache: token::CacheRef,
    now_secs: u64,
    refetch: impl Into<Refetch<'r>>,
) -> Decision {
    let raw = match presented {
        Presented::Token(raw) => raw,
        Presented::Nothing => {
            return Decision::Reply(
                web::unauthorized(None).counting(Event::TokenRejected("missing")),
            )
        }
        Presented::Conflict => return Decision::Reply(crate::inbound::conflict_reply()),
    };
    // The warm path: a token verified before, found by its bytes.
    if keys.is_some() {
        if let Some(verified) = token::cached_access(raw, cache, &config.rules, now_secs) {
            return if config.introspection.is_some() {
                Decision::Introspect {
                    local: Some(verified),
                }
            } else {
                admit(config, route, &verified)
            };
        }
    }
    let Ok(token) = std::str::from_utf8(raw) else {
        return reject(TokenError::Malformed);
    };
    // V3: an opaque token is the provider's to judge; it is never refused for its shape.
    if config.introspection.is_some() && !crate::introspect::is_jwt(raw) {
        return Decision::Introspect { local: None };
    }
    let Some(keys) = keys else {
        // Malformed tokens and forbidden algorithms are refused without waiting for keys.
        return match token::read_header(token) {
            Err(e) => reject(e),
            Ok(_) => Decision::WaitForKeys,
        };
    };
    match token::verify_access(token, keys, cache, &config.rules, now_secs) {
        // V3: verified here, and still active at the provider?
        Ok(verified) if config.introspection.is_some() => Decision::Introspect {
            local: Some(verified),
        },
        Ok(verified) => admit(config, route, &verified),
        Err(TokenError::UnknownKey) if refetch.into().allows(token) => Decision::RefetchKeys,
        Err(e) => reject(e),
    }
}

/// A valid token goes on with its claim headers if it passes its rule (B7), else 403.
fn admit(config: &Config, route: (&str, &str), verified: &token::Verified) -> Decision {
    admit_claims(config, route, &verified.claims, || {
        claim_headers(config, verified)
    })
}

fn admit_claims(
    config: &Config,
    route: (&str, &str),
    claims: &crate::json::Map,
    headers: impl FnOnce() -> token::ClaimHeaders,
) -> Decision {
    match crate::rules::check(&config.access_rules, route.0, route.1, claims) {
        Ok(()) => Decision::Continue(headers()),
        Err(denied) => Decision::Reply(crate::rules::forbidden(&denied, false, "-")),
    }
}

/// V3: the provider's answer about a token. `local`: the token's own claims when it was a JWT
/// verified here (else the answer's claims, for an opaque token).
pub fn after_introspection(
    config: &Config,
    route: (&str, &str),
    local: Option<&token::Verified>,
    answer: &crate::introspect::Answer,
) -> Decision {
    match answer {
        crate::introspect::Answer::Refused(e) => reject(e.clone()),
        crate::introspect::Answer::Active(claims) => match local {
            Some(verified) => admit(config, route, verified),
            None => admit_claims(config, route, claims, || headers_for(config, claims)),
        },
    }
}

/// V3: the provider could not be asked (an error or a timeout): refused, never a pass.
pub fn introspection_failed() -> Decision {
    Decision::Reply(
        web::unauthorized(Some("the token could not be checked with the provider"))
            .counting(Event::TokenRejected("introspection")),
    )
}

fn reject(e: TokenError) -> Decision {
    Decision::Reply(
        web::unauthorized(Some(e.description())).counting(Event::TokenRejected(e.reason())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;
    use jwt_simple::prelude::*;
    use serde_json::json;

    fn config() -> Config {
        let v = json!({
            "mode": "validate",
            "oidc": {"issuer": ISSUER, "jwks_uri": "http://kc:8080/certs"},
            "authorized_parties": ["productpage"],
            "claims_to_headers": {
                "preferred_username": "x-user",
                "realm_access.roles": "x-roles",
                "evil": "x-evil",
                "absent": "x-absent"
            }
        });
        Config::parse(v.to_string().as_bytes()).unwrap()
    }

    const GET: (&str, &str) = ("GET", "/api");

    fn status_and_challenge(d: &Decision) -> (u32, String) {
        match d {
            Decision::Reply(r) => (r.status, r.header("www-authenticate").unwrap_or("").into()),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_token_continues_with_its_claim_headers() {
        let mut custom = keycloak_claims();
        custom.insert("evil".into(), json!("x\r\nx-admin: 1"));
        let t = sign_rsa(claims(custom));
        let d = decide(
            &config(),
            GET,
            Presented::Token(t.as_bytes()),
            Some(&keyset()),
            None,
            NOW,
            true,
        );
        let Decision::Continue(headers) = d else {
            panic!("{d:?}")
        };
        let mut headers = headers.to_vec();
        headers.sort();
        assert_eq!(
            headers,
            vec![
                ("x-roles".to_string(), "user,reader".to_string()),
                ("x-user".to_string(), "alice".to_string()),
            ]
        );
    }

    #[test]
    fn claim_headers_are_worked_out_once_for_the_mapping_asked() {
        let t = sign_rsa(claims(keycloak_claims()));
        let c = config();
        let v = token::verify_access(&t, &keyset(), None, &c.rules, NOW).unwrap();
        let first = claim_headers(&c, &v);
        assert!(first.contains(&("x-user".to_string(), "alice".to_string())));
        assert!(std::rc::Rc::ptr_eq(&first, &claim_headers(&c, &v)));
        let mut other = config();
        other.claims_to_headers = vec![("preferred_username".into(), "x-name".into())];
        assert_eq!(
            &*claim_headers(&other, &v),
            &[("x-name".to_string(), "alice".to_string())]
        );
        assert!(std::rc::Rc::ptr_eq(&first, &claim_headers(&c, &v)));
    }

    #[test]
    fn every_spelling_of_a_claim_header_is_one() {
        let c = config();
        for spoof in ["x-user", "X-User", "x_user", "X_USER", "x-roles", "x_Roles"] {
            assert!(is_claim_header(&c, spoof), "{spoof}");
        }
        for other in ["x-users", "xuser", "x-use", "authorization", "x--user"] {
            assert!(!is_claim_header(&c, other), "{other}");
        }
    }

    #[test]
    fn two_different_tokens_are_refused_even_if_one_is_valid() {
        let (status, challenge) = status_and_challenge(&decide(
            &config(),
            GET,
            Presented::Conflict,
            Some(&keyset()),
            None,
            NOW,
            true,
        ));
        assert_eq!(status, 401);
        assert!(challenge.contains("invalid_token"), "{challenge}");
    }

    #[test]
    fn a_valid_token_that_fails_its_rule_is_403_insufficient_scope() {
        let mut v = serde_json::to_value(json!({
            "mode": "validate",
            "oidc": {"issuer": ISSUER, "jwks_uri": "http://kc:8080/certs"},
            "authorized_parties": ["productpage"],
            "rules": [
                {"path": "/reviews", "methods": ["post"], "realm_roles": ["reviewer"]},
                {"path": "/details", "scopes": ["details:read"]}
            ]
        }))
        .unwrap();
        let c = Config::parse(v.to_string().as_bytes()).unwrap();
        let t = valid_token();
        let run = |route| {
            decide(
                &c,
                route,
                Presented::Token(t.as_bytes()),
                Some(&keyset()),
                None,
                NOW,
                true,
            )
        };
        assert!(matches!(run(("GET", "/reviews/0")), Decision::Continue(_)));
        let (status, challenge) = status_and_challenge(&run(("POST", "/reviews/0")));
        assert_eq!(status, 403);
        assert!(challenge.contains("insufficient_scope"), "{challenge}");
        assert_eq!(status_and_challenge(&run(("GET", "/details/1?x"))).0, 403);
        // An invalid token is still 401, before any rule.
        let r = decide(
            &c,
            ("POST", "/reviews/0"),
            Presented::Token(b"x.y.z"),
            Some(&keyset()),
            None,
            NOW,
            true,
        );
        assert_eq!(status_and_challenge(&r).0, 401);
        v["rules"] = json!([{"path": "reviews"}]);
        assert!(Config::parse(v.to_string().as_bytes())
            .unwrap_err()
            .to_string()
            .starts_with("rules[0].path: "));
        v["rules"] = json!([{"path": "/r", "roles": ["x"]}]);
        assert_eq!(
            Config::parse(v.to_string().as_bytes())
                .unwrap_err()
                .to_string(),
            "rules[0].roles: unknown key"
        );
    }

    #[test]
    fn no_token_is_401_without_error() {
        let d = decide(
            &config(),
            GET,
            Presented::Nothing,
            Some(&keyset()),
            None,
            NOW,
            true,
        );
        assert_eq!(status_and_challenge(&d), (401, "Bearer".into()));
    }

    #[test]
    fn a_bad_token_is_401_invalid_token() {
        let expired = {
            let mut c = claims(keycloak_claims());
            c.expires_at = Some(UnixTimeStamp::from_secs(NOW - 100));
            sign_rsa(c)
        };
        for t in [expired.as_bytes(), b"garbage", b"a.b.c", b"\xff\xfe"] {
            let (status, challenge) = status_and_challenge(&decide(
                &config(),
                GET,
                Presented::Token(t),
                Some(&keyset()),
                None,
                NOW,
                true,
            ));
            assert_eq!(status, 401);
            assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
        }
    }

    #[test]
    fn waits_for_keys_only_when_a_token_needs_them() {
        let t = valid_token();
        assert_eq!(
            decide(
                &config(),
                GET,
                Presented::Token(t.as_bytes()),
                None,
                None,
                NOW,
                true
            ),
            Decision::WaitForKeys
        );
        assert_eq!(
            status_and_challenge(&decide(
                &config(),
                GET,
                Presented::Nothing,
                None,
                None,
                NOW,
                true
            ))
            .0,
            401
        );
        assert_eq!(
            status_and_challenge(&decide(
                &config(),
                GET,
                Presented::Token(b"junk"),
                None,
                None,
                NOW,
                true
            ))
            .0,
            401
        );
    }

    #[test]
    fn an_unknown_kid_refetches_when_allowed() {
        let t = other_rsa()
            .clone()
            .with_key_id("new-kid")
            .sign(claims(keycloak_claims()))
            .unwrap();
        assert_eq!(
            decide(
                &config(),
                GET,
                Presented::Token(t.as_bytes()),
                Some(&keyset()),
                None,
                NOW,
                true
            ),
            Decision::RefetchKeys
        );
        let (status, challenge) = status_and_challenge(&decide(
            &config(),
            GET,
            Presented::Token(t.as_bytes()),
            Some(&keyset()),
            None,
            NOW,
            false,
        ));
        assert_eq!(status, 401);
        assert!(challenge.contains("signing key not found"));
    }
}
