//! Back-channel logout (L8, OpenID Connect Back-Channel Logout 1.0): the provider POSTs a logout
//! token; a valid one ends every session of its `sid` (or its `sub`) in this Envoy, at their next
//! request. Sessions stay stateless: the ended `sid`s and `sub`s are kept in shared data.

use super::*;

/// The largest logout request body read.
pub const MAX_BODY: usize = 16 * 1024;

/// What a verified logout token ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    pub sid: Option<String>,
    pub sub: Option<String>,
    /// The token's `jti`: a token is taken once.
    pub jti: String,
    /// When the `jti` may be forgotten (the token's own end, with the skew).
    pub jti_until: u64,
}

/// Sessions that the provider ended, as the decisions ask about them.
pub trait Endings {
    /// Whether a session with this `sid`, or of this `sub` issued at `issued_at` or before, was
    /// ended by a back-channel logout.
    fn ended(&self, sid: Option<&str>, sub: Option<&str>, issued_at: u64) -> bool;
}

fn bad_request(description: &str) -> Reply {
    Reply::json(400, &crate::web::error_body("invalid_request", description))
        .counting(Event::BackchannelLogout("refused"))
}

/// The answer to a logout token that ended its sessions.
pub fn ended_reply() -> Reply {
    Reply::json(200, &crate::json::Value::Object(crate::json::Map::new()))
        .counting(Event::BackchannelLogout("ok"))
}

/// The answer to a logout token seen before.
pub fn replayed_reply() -> Reply {
    bad_request("the logout token was used before")
}

/// L8: a request on `backchannel_logout_path` (its body read).
pub(super) fn backchannel(env: &Env, req: &Request, refetch: Refetch) -> Action {
    if req.method != "POST" {
        return Action::Reply(bad_request("a back-channel logout is a POST"));
    }
    let body = req.body.as_deref().unwrap_or_default();
    if body.len() > MAX_BODY {
        return Action::Reply(bad_request("the request is too large"));
    }
    let mut token = None;
    for (k, v) in form_urlencoded::parse(body) {
        if k == "logout_token" {
            if token.is_some() {
                return Action::Reply(bad_request("logout_token is repeated"));
            }
            token = Some(v.into_owned());
        }
    }
    let Some(token) = token else {
        return Action::Reply(bad_request("logout_token is missing"));
    };
    let Some(keys) = env.keys else {
        return Action::WaitForKeys;
    };
    let verified = match token::verify_logout_token(&token, keys, &env.id_token_rules(), env.now) {
        Ok(v) => v,
        Err(TokenError::UnknownKey) if refetch.allows(&token) => return Action::RefetchKeys,
        Err(e) => return Action::Reply(bad_request(e.description())),
    };
    let text = |name: &str| {
        verified
            .claims
            .get(name)
            .and_then(crate::json::Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let Some(jti) = text("jti") else {
        return Action::Reply(bad_request("jti is missing"));
    };
    Action::EndSessions {
        ending: Ending {
            sid: text("sid"),
            sub: text("sub"),
            jti,
            jti_until: verified
                .expires_at
                .saturating_add(env.config.rules.clock_skew_seconds),
        },
    }
}

/// Whether the session this request carries was ended by a back-channel logout: its ID token's
/// `sid`, or its `sub` ended after the ID token was issued.
pub(super) fn session_ended(env: &Env, session: &Session) -> bool {
    let Some(endings) = env.endings else {
        return false;
    };
    let Some(id_token) = session.id_token.as_deref() else {
        return false;
    };
    let claims = token::unverified_claims(id_token).unwrap_or_default();
    let text = |name: &str| claims.get(name).and_then(crate::json::Value::as_str);
    let issued_at = claims
        .get("iat")
        .and_then(crate::json::Value::as_u64)
        .unwrap_or(0);
    endings.ended(text("sid"), text("sub"), issued_at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::login::testing::*;
    use crate::testkit::*;
    use jwt_simple::prelude::*;
    use serde_json::json;

    fn logout_token(
        edit: impl FnOnce(&mut JWTClaims<serde_json::Map<String, serde_json::Value>>),
    ) -> String {
        let mut custom = serde_json::Map::new();
        custom.insert(
            "events".into(),
            json!({ token::BACKCHANNEL_LOGOUT_EVENT: {} }),
        );
        custom.insert("sid".into(), json!("session-1"));
        let mut c = claims(custom).with_jwt_id("jti-1");
        c.audiences = Some(Audiences::AsString("productpage".into()));
        edit(&mut c);
        sign_rsa(c)
    }

    fn post(body: String) -> Request<'static> {
        let mut r = page("/backchannel", "");
        r.method = "POST".into();
        r.body = Some(body.into_bytes());
        r
    }

    fn fixture_bc() -> Fixture {
        Fixture::new(config_with(|v| {
            v["backchannel_logout_path"] = json!("/backchannel");
        }))
    }

    fn status(a: Action) -> u32 {
        match a {
            Action::Reply(r) => r.status,
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_logout_token_ends_its_sessions() {
        let f = fixture_bc();
        let t = logout_token(|_| {});
        let a = decide(
            &f.env(),
            &post(format!("logout_token={t}")),
            &mut Counter(0),
            true,
        );
        let Action::EndSessions { ending } = a else {
            panic!("{a:?}")
        };
        assert_eq!(ending.sid.as_deref(), Some("session-1"));
        assert_eq!(ending.sub.as_deref(), Some("alice-id"));
        assert_eq!(ending.jti, "jti-1");
    }

    #[test]
    fn anything_else_is_400() {
        let f = fixture_bc();
        let cases: Vec<(&str, String)> = vec![
            ("no token", "x=1".into()),
            ("garbage", "logout_token=a.b.c".into()),
            (
                "two tokens",
                format!("logout_token={0}&logout_token={0}", logout_token(|_| {})),
            ),
            (
                "another audience",
                format!(
                    "logout_token={}",
                    logout_token(|c| c.audiences = Some(Audiences::AsString("other".into())))
                ),
            ),
            (
                "another issuer",
                format!(
                    "logout_token={}",
                    logout_token(|c| c.issuer = Some("https://evil".into()))
                ),
            ),
            (
                "a nonce",
                format!(
                    "logout_token={}",
                    logout_token(|c| c.nonce = Some("n".into()))
                ),
            ),
            (
                "no events",
                format!(
                    "logout_token={}",
                    logout_token(|c| {
                        c.custom.remove("events");
                    })
                ),
            ),
            (
                "no jti",
                format!("logout_token={}", logout_token(|c| c.jwt_id = None)),
            ),
            (
                "no sid or sub",
                format!(
                    "logout_token={}",
                    logout_token(|c| {
                        c.custom.remove("sid");
                        c.subject = None;
                    })
                ),
            ),
            ("an access token", format!("logout_token={}", valid_token())),
            (
                "expired",
                format!(
                    "logout_token={}",
                    logout_token(|c| c.expires_at = Some(UnixTimeStamp::from_secs(NOW - 100)))
                ),
            ),
        ];
        for (what, body) in cases {
            assert_eq!(
                status(decide(&f.env(), &post(body), &mut Counter(0), true)),
                400,
                "{what}"
            );
        }
        let mut get = post(String::new());
        get.method = "GET".into();
        assert_eq!(status(decide(&f.env(), &get, &mut Counter(0), true)), 400);
        // Without `exp`, a token is taken a few minutes after its `iat`.
        let fresh = logout_token(|c| c.expires_at = None);
        assert!(matches!(
            decide(
                &f.env(),
                &post(format!("logout_token={fresh}")),
                &mut Counter(0),
                true
            ),
            Action::EndSessions { .. }
        ));
        let mut env = f.env();
        env.now = NOW + token::LOGOUT_TOKEN_MAX_AGE + 60;
        assert_eq!(
            status(decide(
                &env,
                &post(format!("logout_token={fresh}")),
                &mut Counter(0),
                true
            )),
            400
        );
    }
}
