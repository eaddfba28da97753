//! Refresh (L5): one token call per refresh token, shared by the requests that need it.

use super::callback::{session_cookies, token_response, DEFAULT_SESSION_TTL};
use super::*;

pub(super) fn refresh(env: &Env, session: Session) -> Action {
    let refresh_token = session.refresh_token.clone().unwrap_or_default();
    let call = env.token_call(vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token.as_str()),
    ]);
    Action::Refresh {
        call,
        slot: refresh_slot(env.login, &refresh_token),
        session,
    }
}

/// Refreshes of one token share one slot; a fixed number of slots bounds the memory they take.
pub const REFRESH_SLOTS: usize = 1024;

/// `index:digest` of a refresh token: the slot it uses and what tells it apart from others there.
pub fn refresh_slot(login: &LoginConfig, refresh_token: &str) -> String {
    let mut input = login.session_keys.sealing().bytes().to_vec();
    input.extend_from_slice(refresh_token.as_bytes());
    let digest = hmac_sha256::Hash::hash(&input);
    let index = usize::from(u16::from_be_bytes([
        digest.first().copied().unwrap_or(0),
        digest.get(1).copied().unwrap_or(0),
    ]));
    format!(
        "{}:{}",
        index % REFRESH_SLOTS,
        b64url(digest.get(..16).unwrap_or_default())
    )
}

/// What a refresh's answer leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refreshed {
    /// Carry this out: the request goes on with the new token, or (`failure` says why, for the
    /// log; never a token) the session is cleared and L1 applies.
    Done {
        action: Box<Action>,
        failure: Option<String>,
    },
    /// The new tokens name a key the set lacks (the provider rotated its keys): fetch the set
    /// again (B1's rate limit), then judge the same answer again (L5+).
    RefetchKeys,
    /// No key set yet: wait for it, then judge the same answer.
    WaitForKeys,
}

/// L5: the token endpoint answered a refresh. Success: the same request goes on with the new
/// token and the response sets the new cookies. Failure: cookies cleared, then L1. A new ID token
/// must be valid like the first and name the same `sub` (L5+).
pub fn finish_refresh<'r>(
    env: &Env,
    req: &Request,
    old: &Session,
    status: u32,
    body: &[u8],
    rng: &mut dyn Random,
    refetch: impl Into<Refetch<'r>>,
) -> Refreshed {
    let refetch = refetch.into();
    let mut fail = |why: String| Refreshed::Done {
        action: Box::new(Action::Reply(
            unauthenticated(env, req, rng, env.clear_all(req), None).counting(Event::RefreshFailed),
        )),
        failure: Some(why),
    };
    let tokens = match token_response(status, body) {
        Ok(t) => t,
        Err((_, why)) => return fail(why),
    };
    let Some(keys) = env.keys else {
        return Refreshed::WaitForKeys;
    };
    let access = match token::verify_access(
        &tokens.access_token,
        keys,
        env.cache,
        &env.config.rules,
        env.now,
    ) {
        Ok(v) => v,
        Err(TokenError::UnknownKey) if refetch.allows(&tokens.access_token) => {
            return Refreshed::RefetchKeys
        }
        Err(e) => {
            return fail(format!(
                "the new access token is not accepted ({})",
                e.description()
            ))
        }
    };
    if let Some(id_token) = &tokens.id_token {
        match token::verify_id_token(id_token, keys, &env.id_token_rules(), env.now, None) {
            Ok(id) => {
                let before = old.id_token.as_deref().and_then(token::unverified_subject);
                let now = id.claims.get("sub").and_then(crate::json::Value::as_str);
                if before.is_some() && before.as_deref() != now {
                    return fail("the new ID token names another subject".into());
                }
            }
            Err(TokenError::UnknownKey) if refetch.allows(id_token) => {
                return Refreshed::RefetchKeys
            }
            Err(e) => {
                return fail(format!(
                    "the new ID token is not valid ({})",
                    e.description()
                ))
            }
        }
    }
    let session = Session {
        id_token: tokens.id_token.clone().or_else(|| old.id_token.clone()),
        refresh_token: tokens
            .refresh_token
            .clone()
            .or_else(|| old.refresh_token.clone()),
    };
    let ttl = tokens
        .refresh_expires_in
        .filter(|t| *t > 0)
        .unwrap_or(DEFAULT_SESSION_TTL);
    let Some(cookies) = session_cookies(env, req, &tokens.access_token, &access, &session, ttl)
    else {
        return fail("the new tokens are too large to keep in cookies".into());
    };
    let jar = crate::session::CookieRead::new(&req.cookies, env.names);
    let action = match env.admit(req, &jar, &tokens.access_token, &access, true) {
        Action::Continue(mut forward) => {
            forward.response_cookies = cookies;
            forward.events.push(Event::RefreshOk);
            Action::Continue(forward)
        }
        // A refused rule still keeps the new session: the 403 sets its cookies.
        Action::Reply(reply) => Action::Reply(reply.with_cookies(cookies)),
        other => other,
    };
    Refreshed::Done {
        action: Box::new(action),
        failure: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::login::testing::*;
    use crate::testkit::*;
    use jwt_simple::prelude::RSAKeyPairLike as _;
    use serde_json::json;

    #[test]
    fn an_expired_token_with_a_session_refreshes_and_goes_on() {
        let f = fixture();
        let old = Session {
            id_token: Some("id-1".into()),
            refresh_token: Some("refresh-1".into()),
        };
        let cookies = format!(
            "access_token={}; {}",
            expired_token(),
            session_cookie(&f, &old)
        );
        let req = page("/productpage", &cookies);
        let Action::Refresh {
            call,
            session,
            slot,
        } = decide(&f.env(), &req, &mut Counter(0), true)
        else {
            panic!("expected a refresh")
        };
        assert_eq!(session, old);
        assert!(
            call.body.contains("grant_type=refresh_token")
                && call.body.contains("refresh_token=refresh-1")
        );
        assert_eq!(slot, refresh_slot(f.config.login().unwrap(), "refresh-1"));
        assert_ne!(slot, refresh_slot(f.config.login().unwrap(), "refresh-2"));

        // Absent access token, same session: refresh too.
        let req2 = page("/", &session_cookie(&f, &old));
        assert!(matches!(
            decide(&f.env(), &req2, &mut Counter(0), true),
            Action::Refresh { .. }
        ));

        let access = valid_token();
        let body = json!({"access_token": access, "refresh_token": "refresh-2", "expires_in": 290})
            .to_string();
        let Refreshed::Done {
            action,
            failure: None,
        } = finish_refresh(
            &f.env(),
            &req,
            &old,
            200,
            body.as_bytes(),
            &mut Counter(0),
            true,
        )
        else {
            panic!("expected continue")
        };
        let Action::Continue(fwd) = *action else {
            panic!("expected continue")
        };
        assert_eq!(fwd.authorization, format!("Bearer {access}"));
        let set: Vec<_> = fwd
            .response_cookies
            .iter()
            .map(|c| c.split(';').next().unwrap().to_string())
            .collect();
        assert!(set.contains(&format!("access_token={access}")));
        let sealed = set
            .iter()
            .find(|c| c.starts_with("access_token_session="))
            .unwrap();
        let s: Session = f
            .sealer
            .open(sealed.trim_start_matches("access_token_session="), NOW)
            .unwrap();
        assert_eq!(
            s,
            Session {
                id_token: Some("id-1".into()),
                refresh_token: Some("refresh-2".into())
            }
        );
    }

    #[test]
    fn a_failed_refresh_clears_and_logs_in_again() {
        let f = fixture();
        let old = Session {
            id_token: None,
            refresh_token: Some("r".into()),
        };
        let cookies = format!(
            "access_token={}; {}",
            expired_token(),
            session_cookie(&f, &old)
        );
        for (status, body) in [
            (400, &br#"{"error":"invalid_grant"}"#[..]),
            (0, b""),
            (200, b"{}"),
        ] {
            let r = refused(finish_refresh(
                &f.env(),
                &page("/p", &cookies),
                &old,
                status,
                body,
                &mut Counter(0),
                true,
            ));
            assert_eq!(r.status, 302);
            let pairs = cookie_pairs(&r);
            assert!(pairs
                .iter()
                .any(|(n, v, a)| n == "access_token" && v.is_empty() && a.contains("Max-Age=0")));
            assert!(pairs
                .iter()
                .any(|(n, v, _)| n == "access_token_session" && v.is_empty()));
            assert!(
                pairs
                    .iter()
                    .any(|(n, v, _)| n.contains("_tx_") && !v.is_empty()),
                "L1 again"
            );
        }
        let mut api = page("/api", &cookies);
        api.accept = Some("application/json".into());
        let r = refused(finish_refresh(
            &f.env(),
            &api,
            &old,
            400,
            b"{}",
            &mut Counter(0),
            true,
        ));
        assert_eq!(r.status, 401);
    }

    fn refused(r: Refreshed) -> Reply {
        match r {
            Refreshed::Done {
                action,
                failure: Some(why),
            } => {
                assert!(!why.contains("refresh-"), "{why}");
                match *action {
                    Action::Reply(reply) => reply,
                    other => panic!("expected a reply, got {other:?}"),
                }
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn id_token_for(sub: &str) -> String {
        let mut custom = keycloak_claims();
        custom.insert("typ".into(), json!("ID"));
        let mut c = claims(custom).with_subject(sub);
        c.audiences = Some(jwt_simple::prelude::Audiences::AsString(
            "productpage".into(),
        ));
        sign_rsa(c)
    }

    #[test]
    fn a_rotated_key_is_fetched_before_the_refresh_is_judged() {
        let f = fixture();
        let old = Session {
            id_token: Some(id_token_for("alice-id")),
            refresh_token: Some("r".into()),
        };
        let req = page("/p", &session_cookie(&f, &old));
        let rotated = other_rsa()
            .clone()
            .with_key_id("rotated")
            .sign(claims(keycloak_claims()))
            .unwrap();
        let body = json!({"access_token": rotated, "expires_in": 290}).to_string();
        let judge = |env: &Env, refetch| {
            finish_refresh(
                env,
                &req,
                &old,
                200,
                body.as_bytes(),
                &mut Counter(0),
                refetch,
            )
        };
        assert_eq!(judge(&f.env(), true), Refreshed::RefetchKeys);
        let mut env = f.env();
        env.keys = None;
        assert_eq!(judge(&env, true), Refreshed::WaitForKeys);
        // Once refetched and still unknown: a refused refresh, with its reason.
        let r = judge(&f.env(), false);
        let Refreshed::Done {
            failure: Some(why), ..
        } = r
        else {
            panic!("{r:?}")
        };
        assert!(why.contains("signing key not found"), "{why}");
    }

    #[test]
    fn a_new_id_token_must_be_valid_and_name_the_same_subject() {
        let f = fixture();
        let old = Session {
            id_token: Some(id_token_for("alice-id")),
            refresh_token: Some("r".into()),
        };
        let req = page("/p", &session_cookie(&f, &old));
        let judge = |id: &str| {
            let body = json!({"access_token": valid_token(), "id_token": id, "expires_in": 290})
                .to_string();
            finish_refresh(
                &f.env(),
                &req,
                &old,
                200,
                body.as_bytes(),
                &mut Counter(0),
                true,
            )
        };
        assert!(matches!(
            judge(&id_token_for("alice-id")),
            Refreshed::Done { action, .. } if matches!(*action, Action::Continue(_))
        ));
        let r = refused(judge(&id_token_for("mallory-id")));
        assert_eq!(r.status, 302);
        refused(judge(&valid_token())); // an access token is not an ID token
        refused(judge("garbage"));
    }
}
