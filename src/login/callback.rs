//! The callback (L2, L3): the state checked against the transaction, the code exchanged, the
//! tokens checked and kept in cookies.

use super::pages::{redirect, wrong_host};
use super::*;

/// L2: the browser comes back from the provider.
pub(super) fn callback(env: &Env, req: &Request) -> Action {
    let query = web::query_of(&req.path).unwrap_or_default();
    let mut code = None;
    let mut state = None;
    let mut error = None;
    let mut duplicated = false;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let slot = match k.as_ref() {
            "code" => &mut code,
            "state" => &mut state,
            "error" => &mut error,
            _ => continue,
        };
        duplicated |= slot.is_some();
        *slot = Some(v.into_owned());
    }
    // L2+: a second `state` or `code` is a sign of injection; which one would count is a guess.
    if duplicated {
        return Action::Reply(
            error_page(
                400,
                "The sign-in response repeats a parameter.",
                &req.request_id,
            )
            .counting(Event::CallbackFailed("state")),
        );
    }
    if env.origin(req).is_none() {
        return Action::Reply(wrong_host(req, Vec::new()));
    }
    let a = env.attrs(req).for_transaction();
    let tx_name = state.as_deref().map(|s| env.names.transaction(s));
    let clear_tx: Vec<String> = tx_name
        .iter()
        .filter(|n| web::cookie(&req.cookies, n).is_some())
        .map(|n| session::clear_cookie(n, &a))
        .collect();

    if let Some(error) = error {
        let code: String = error
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        let status = if code == "access_denied" { 403 } else { 400 };
        let reply = error_page(
            status,
            &format!("The identity provider refused the sign-in ({code})."),
            &req.request_id,
        )
        .counting(Event::CallbackFailed("provider_error"));
        return Action::Reply(reply.with_cookies(clear_tx));
    }
    let (Some(code), Some(state), Some(tx_name)) = (code, state, tx_name) else {
        return Action::Reply(
            error_page(
                400,
                "The sign-in response is missing its code or state.",
                &req.request_id,
            )
            .counting(Event::CallbackFailed("state")),
        );
    };
    let tx = web::cookie(&req.cookies, &tx_name)
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| env.sealer.open::<Transaction>(v, env.now))
        .filter(|tx| constant_time_eq(tx.state.as_bytes(), state.as_bytes()));
    let Some(tx) = tx else {
        let reply = error_page(
            400,
            "This sign-in does not match one started in this browser, or it took too long. Please start again.",
            &req.request_id,
        )
        .counting(Event::CallbackFailed("state"));
        return Action::Reply(reply.with_cookies(clear_tx));
    };
    let call = env.token_call(vec![
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", tx.redirect_uri.as_str()),
        ("code_verifier", tx.verifier.as_str()),
    ]);
    // The transaction cookie opened, so it was sealed at most TRANSACTION_TTL ago.
    let replay = replay::Claim::new(&tx.state, env.now + session::TRANSACTION_TTL);
    Action::Exchange {
        call,
        tx,
        clears: clear_tx,
        replay,
    }
}

/// L2+: the callback's state was used before in this Envoy process.
pub fn replayed(req: &Request, clears: &[String]) -> Reply {
    error_page(
        400,
        "This sign-in response was already used. Please start again.",
        &req.request_id,
    )
    .counting(Event::CallbackFailed("replayed"))
    .with_cookies(clears.iter().cloned())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A successful token-endpoint answer (RFC 6749 §5.1): a member of the wrong type makes it
/// malformed, a null one counts as absent.
pub(super) struct TokenResponse {
    pub access_token: String,
    pub id_token: Option<String>,
    pub refresh_token: Option<String>,
    pub refresh_expires_in: Option<u64>,
}

impl TokenResponse {
    fn read(body: &[u8]) -> Option<TokenResponse> {
        use crate::json::Value;
        let answer = crate::json::object_from_slice(body).ok()?;
        let text = |name: &str| crate::json::optional_string(&answer, name);
        let refresh_expires_in = match answer.get("refresh_expires_in") {
            None | Some(Value::Null) => None,
            Some(n) => Some(n.as_u64()?),
        };
        Some(TokenResponse {
            access_token: text("access_token")??,
            id_token: text("id_token")?,
            refresh_token: text("refresh_token")?,
            refresh_expires_in,
        })
    }
}

/// Session cookies live as long as the refresh token when the provider says (Keycloak does).
pub(super) const DEFAULT_SESSION_TTL: u64 = 12 * 3600;

/// Why a token-endpoint answer was not usable; the text goes to the log and the error page.
/// The `error` code of a provider's error answer (RFC 6749 §5.2), sanitised for a page or a log
/// line; empty when there is none.
pub fn provider_error_code(body: &[u8]) -> String {
    crate::json::object_from_slice(body)
        .ok()
        .and_then(|answer| {
            let error = answer.get("error")?.as_str()?;
            Some(
                error
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .take(64)
                    .collect::<String>(),
            )
        })
        .unwrap_or_default()
}

pub(super) fn token_response(status: u32, body: &[u8]) -> Result<TokenResponse, (u32, String)> {
    // Envoy answers a dispatched call that timed out with its own 504.
    if status == 0 || status == 504 {
        return Err((504, "the identity provider did not answer in time".into()));
    }
    if !(200..300).contains(&status) {
        let code = provider_error_code(body);
        return Err((
            502,
            format!("the token endpoint answered {status} {code}")
                .trim_end()
                .into(),
        ));
    }
    TokenResponse::read(body).ok_or_else(|| {
        (
            502,
            "the token endpoint answered with a malformed body".into(),
        )
    })
}

/// The cookies of a fresh session: the access token, and the sealed session.
pub(super) fn session_cookies(
    env: &Env,
    req: &Request,
    access_token: &str,
    access: &Verified,
    session: &Session,
    session_ttl: u64,
) -> Option<Vec<String>> {
    let a = env.attrs(req);
    let access_ttl = access.expires_at.saturating_sub(env.now).max(1);
    let mut cookies = session::set_chunked(
        &env.names.access,
        access_token,
        access_ttl,
        &a,
        &req.cookies,
    )?;
    let seal = |s: &Session| {
        let sealed = env.sealer.seal(s, env.now, session_ttl)?;
        session::set_chunked(&env.names.session, &sealed, session_ttl, &a, &req.cookies)
    };
    // A session too large for the cookie cap drops the ID token (logout then goes without
    // id_token_hint) rather than the refresh token.
    let sealed = seal(session).or_else(|| {
        seal(&Session {
            id_token: None,
            refresh_token: session.refresh_token.clone(),
        })
    })?;
    cookies.extend(sealed);
    Some(cookies)
}

/// What the code exchange's answer leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exchanged {
    Reply(Reply),
    /// The ID token cannot be checked before the first key set arrives: hold the answer.
    WaitForKeys,
    /// The ID token names a key the set lacks: fetch the set again, then check.
    RefetchKeys,
}

/// L2/L3: the token endpoint answered the code exchange.
pub fn finish_exchange<'r>(
    env: &Env,
    req: &Request,
    tx: &Transaction,
    clears: Vec<String>,
    status: u32,
    body: &[u8],
    refetch: impl Into<Refetch<'r>>,
) -> Exchanged {
    let rid = &req.request_id;
    let fail = |status: u32, why: &str, reason: &'static str| {
        error_page(status, &format!("Sign-in failed: {why}."), rid)
            .counting(Event::CallbackFailed(reason))
            .with_cookies(clears.iter().cloned())
    };
    let tokens = match token_response(status, body) {
        Ok(t) => t,
        Err((code, why)) => {
            let reason = if code == 504 {
                "timeout"
            } else {
                "token_endpoint"
            };
            return Exchanged::Reply(fail(code, &why, reason));
        }
    };
    let Some(id_token) = tokens.id_token.as_deref() else {
        return Exchanged::Reply(fail(502, "the provider sent no ID token", "id_token"));
    };
    let Some(keys) = env.keys else {
        return Exchanged::WaitForKeys;
    };
    match token::verify_id_token(
        id_token,
        keys,
        &env.id_token_rules(),
        env.now,
        Some(&tx.nonce),
    ) {
        Ok(_) => {}
        Err(TokenError::UnknownKey) if refetch.into().allows(id_token) => {
            return Exchanged::RefetchKeys
        }
        Err(e) => {
            return Exchanged::Reply(fail(
                502,
                &format!("the ID token is not valid ({})", e.description()),
                "id_token",
            ))
        }
    }
    let access =
        match token::verify_access(&tokens.access_token, keys, None, &env.config.rules, env.now) {
            Ok(v) => v,
            Err(e) => {
                return Exchanged::Reply(fail(
                    502,
                    &format!("the access token is not accepted ({})", e.description()),
                    "access_token",
                ))
            }
        };
    let session = Session {
        id_token: Some(id_token.to_string()),
        refresh_token: tokens.refresh_token.clone(),
    };
    let ttl = tokens
        .refresh_expires_in
        .filter(|t| *t > 0)
        .unwrap_or(DEFAULT_SESSION_TTL);
    let Some(mut cookies) = session_cookies(env, req, &tokens.access_token, &access, &session, ttl)
    else {
        return Exchanged::Reply(fail(
            502,
            "the tokens are too large to keep in cookies",
            "too_large",
        ));
    };
    cookies.extend(clears);
    let target = safe_local_path(&tx.path).unwrap_or_else(|| "/".into());
    Exchanged::Reply(redirect(&target, cookies).counting(Event::CallbackOk))
}

/// The page for a code exchange whose ID token could not be checked in time.
pub fn keys_missing_page(request_id: &str, clears: &[String]) -> Reply {
    error_page(
        503,
        "Sign-in failed: the signing keys are not available yet. Please try again.",
        request_id,
    )
    .counting(Event::CallbackFailed("keys"))
    .with_cookies(clears.iter().cloned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::login::testing::*;
    use crate::testkit::*;
    use jwt_simple::prelude::*;
    use serde_json::{json, Map, Value};

    #[test]
    fn a_callback_with_a_repeated_parameter_is_refused() {
        let f = fixture();
        let (tx, cookie) = begin(&f, "/");
        for q in [
            format!("code=c&state={0}&state={0}", tx.state),
            format!("code=c&code=d&state={}", tx.state),
            format!("state={}&code=c&error=x&error=y", tx.state),
        ] {
            let r = reply_of(decide(
                &f.env(),
                &page(&format!("/callback?{q}"), &cookie),
                &mut Counter(0),
                true,
            ));
            assert_eq!(r.status, 400, "{q}");
        }
        let ok = decide(
            &f.env(),
            &page(&format!("/callback?code=c&state={}", tx.state), &cookie),
            &mut Counter(0),
            true,
        );
        let Action::Exchange { replay, .. } = ok else {
            panic!("{ok:?}")
        };
        let slot = replay.record(b"", NOW).unwrap();
        assert_eq!(
            replay.record(&slot, NOW + 1),
            None,
            "the state is single-use"
        );
    }

    #[test]
    fn callback_checks_state_and_builds_the_exchange() {
        let f = fixture();
        let (tx, cookie) = begin(&f, "/productpage");
        let path = format!("/callback?code=the-code&state={}&session_state=x", tx.state);
        let Action::Exchange {
            call,
            tx: got,
            clears,
            ..
        } = decide(&f.env(), &page(&path, &cookie), &mut Counter(9), true)
        else {
            panic!("expected an exchange")
        };
        assert_eq!(got, tx);
        assert_eq!(clears.len(), 1);
        assert!(clears[0].starts_with(&format!("{}=;", f.names.transaction(&tx.state))));
        let form: Map<String, Value> = form_urlencoded::parse(call.body.as_bytes())
            .map(|(k, v)| (k.into_owned(), json!(v.into_owned())))
            .collect();
        assert_eq!(form["grant_type"], "authorization_code");
        assert_eq!(form["code"], "the-code");
        assert_eq!(form["code_verifier"], tx.verifier.as_str());
        assert_eq!(form["redirect_uri"], "http://bookinfo.example.com/callback");
        assert!(!form.contains_key("client_secret"));
        let h: std::collections::HashMap<_, _> = call.headers.iter().cloned().collect();
        assert_eq!(h[":authority"], "keycloak:8080");
        assert_eq!(h[":path"], "/realms/dev/protocol/openid-connect/token");
        assert_eq!(h[":method"], "POST");
        // "productpage:pp+secret", form-encoded then base64.
        assert_eq!(
            h["authorization"],
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("productpage:pp+secret")
            )
        );
        assert!(!format!("{call:?}").contains("pp"), "calls never print");

        let post = Fixture::new(config_with(|v| {
            v["client_auth_method"] = json!("client_secret_post")
        }));
        let (tx, cookie) = begin(&post, "/");
        let path = format!("/callback?code=c&state={}", tx.state);
        let Action::Exchange { call, .. } =
            decide(&post.env(), &page(&path, &cookie), &mut Counter(9), true)
        else {
            panic!()
        };
        assert!(
            call.body.contains("client_secret=pp+secret")
                && call.body.contains("client_id=productpage")
        );
        assert!(!call.headers.iter().any(|(n, _)| n == "authorization"));
    }

    #[test]
    fn callback_refuses_wrong_missing_or_foreign_state() {
        let f = fixture();
        let (tx, cookie) = begin(&f, "/");
        let other = Fixture::new(config_with(|v| {
            v["session_secret"] = json!("aXRoVPOr1hUndEnymF85DT6i4O/AneKZsXj0QBVGaWw=")
        }));
        let (_, foreign_cookie) = begin(&other, "/");
        let cases = [
            (
                format!("/callback?code=c&state={}x", tx.state),
                cookie.clone(),
            ),
            (
                format!("/callback?code=c&state={}", tx.state),
                String::new(),
            ),
            (
                format!("/callback?code=c&state={}", tx.state),
                foreign_cookie,
            ),
            ("/callback?code=c".to_string(), cookie.clone()),
            (format!("/callback?state={}", tx.state), cookie.clone()),
        ];
        for (path, cookies) in cases {
            let r = reply_of(decide(
                &f.env(),
                &page(&path, &cookies),
                &mut Counter(0),
                true,
            ));
            assert_eq!(r.status, 400, "{path}");
            assert!(
                cookie_pairs(&r).iter().all(|(_, v, _)| v.is_empty()),
                "never a session"
            );
            assert!(String::from_utf8_lossy(&r.body).contains("rid-1"));
        }
        // Too late: the transaction expired.
        let path = format!("/callback?code=c&state={}", tx.state);
        assert_eq!(
            reply_of(decide(
                &f.env_at(NOW + 601),
                &page(&path, &cookie),
                &mut Counter(0),
                true
            ))
            .status,
            400
        );
    }

    #[test]
    fn provider_errors_end_in_an_error_page() {
        let f = fixture();
        let (tx, cookie) = begin(&f, "/");
        let path = format!(
            "/callback?error=access_denied&error_description=nope&state={}",
            tx.state
        );
        let r = reply_of(decide(
            &f.env(),
            &page(&path, &cookie),
            &mut Counter(0),
            true,
        ));
        assert_eq!(r.status, 403);
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
        let r = reply_of(decide(
            &f.env(),
            &page("/callback?error=<script>", ""),
            &mut Counter(0),
            true,
        ));
        assert_eq!(r.status, 400);
        assert!(!String::from_utf8_lossy(&r.body).contains("<script>"));
    }

    #[test]
    fn a_good_exchange_sets_the_session_and_returns_to_the_page() {
        let f = fixture();
        let (tx, cookie) = begin(&f, "/productpage?u=normal");
        let req = page("/callback?code=c", &cookie);
        let access = valid_token();
        let body = token_body(
            &access,
            &id_token(&tx.nonce, "productpage"),
            Some("refresh-1"),
        );
        let clears = vec![session::clear_cookie(
            &f.names.transaction(&tx.state),
            &f.env().attrs(&req),
        )];
        let Exchanged::Reply(r) = finish_exchange(&f.env(), &req, &tx, clears, 200, &body, true)
        else {
            panic!()
        };
        assert_eq!(r.status, 302);
        assert_eq!(r.header("location"), Some("/productpage?u=normal"));
        let pairs = cookie_pairs(&r);
        let access_cookie = pairs.iter().find(|(n, _, _)| n == "access_token").unwrap();
        assert_eq!(access_cookie.1, access);
        assert!(
            access_cookie.2.contains("HttpOnly")
                && access_cookie.2.contains("SameSite=Lax")
                && access_cookie.2.contains("Path=/")
        );
        assert!(
            access_cookie.2.contains("Max-Age=290"),
            "{}",
            access_cookie.2
        );
        assert!(
            !access_cookie.2.contains("Secure"),
            "http request, secure auto"
        );
        let session_cookie = pairs
            .iter()
            .find(|(n, _, _)| n == "access_token_session")
            .unwrap();
        let s: Session = f.sealer.open(&session_cookie.1, NOW).unwrap();
        assert_eq!(s.refresh_token.as_deref(), Some("refresh-1"));
        assert!(session_cookie.2.contains("Max-Age=1800"));
        assert!(
            pairs
                .iter()
                .any(|(n, v, _)| n.contains("_tx_") && v.is_empty()),
            "transaction cleared"
        );

        // The session now works for the next request.
        let next = page("/productpage", &as_cookie_header(&pairs));
        assert!(matches!(
            decide(&f.env(), &next, &mut Counter(0), true),
            Action::Continue(_)
        ));
    }

    #[test]
    fn bad_exchanges_never_make_a_session() {
        let f = fixture();
        let (tx, cookie) = begin(&f, "/");
        let req = page("/callback", &cookie);
        let access = valid_token();
        let cases: Vec<(u32, Vec<u8>, u32)> = vec![
            (0, vec![], 504),
            (504, b"upstream request timeout".to_vec(), 504),
            (
                400,
                br#"{"error":"invalid_grant","error_description":"Code not valid"}"#.to_vec(),
                502,
            ),
            (500, b"<html>oops".to_vec(), 502),
            (200, b"not json".to_vec(), 502),
            (
                200,
                json!({"access_token": access}).to_string().into_bytes(),
                502,
            ),
            (
                200,
                token_body(&access, &id_token("wrong-nonce", "productpage"), None),
                502,
            ),
            (
                200,
                token_body(&access, &id_token(&tx.nonce, "someone-else"), None),
                502,
            ),
            (
                200,
                token_body("not-a-jwt", &id_token(&tx.nonce, "productpage"), None),
                502,
            ),
        ];
        for (status, body, want) in cases {
            let Exchanged::Reply(r) =
                finish_exchange(&f.env(), &req, &tx, vec![], status, &body, true)
            else {
                panic!()
            };
            assert_eq!(
                r.status,
                want,
                "{status} {}",
                String::from_utf8_lossy(&body)
            );
            assert!(cookie_pairs(&r).iter().all(|(_, v, _)| v.is_empty()));
            let page = String::from_utf8_lossy(&r.body).to_string();
            assert!(!page.contains("Code not valid") && page.contains("rid-1"));
        }
    }

    #[test]
    fn an_access_token_is_not_taken_as_the_id_token() {
        let f = fixture();
        let (tx, cookie) = begin(&f, "/");
        let mut c = claims(keycloak_claims());
        c.audiences = Some(Audiences::AsString("productpage".into()));
        c.nonce = Some(tx.nonce.clone());
        let access_as_id = sign_rsa(c);
        let body = token_body(&valid_token(), &access_as_id, None);
        let Exchanged::Reply(r) = finish_exchange(
            &f.env(),
            &page("/callback", &cookie),
            &tx,
            vec![],
            200,
            &body,
            true,
        ) else {
            panic!()
        };
        assert_eq!(r.status, 502);
        assert!(String::from_utf8_lossy(&r.body).contains("not an ID token"));
    }

    #[test]
    fn an_exchange_before_the_keys_waits_and_an_unknown_kid_refetches() {
        let f = fixture();
        let (tx, cookie) = begin(&f, "/");
        let req = page("/callback", &cookie);
        let body = token_body(&valid_token(), &id_token(&tx.nonce, "productpage"), None);
        let mut env = f.env();
        env.keys = None;
        assert_eq!(
            finish_exchange(&env, &req, &tx, vec![], 200, &body, true),
            Exchanged::WaitForKeys
        );
        let mut c = claims(keycloak_claims());
        c.audiences = Some(Audiences::AsString("productpage".into()));
        c.nonce = Some(tx.nonce.clone());
        let rotated = other_rsa().clone().with_key_id("rotated").sign(c).unwrap();
        let body = token_body(&valid_token(), &rotated, None);
        assert_eq!(
            finish_exchange(&f.env(), &req, &tx, vec![], 200, &body, true),
            Exchanged::RefetchKeys
        );
        let Exchanged::Reply(r) = finish_exchange(&f.env(), &req, &tx, vec![], 200, &body, false)
        else {
            panic!()
        };
        assert_eq!(r.status, 502);
        assert_eq!(keys_missing_page(&req.request_id, &[]).status, 503);
    }

    #[test]
    fn large_tokens_are_chunked_and_read_back() {
        let f = fixture();
        let mut custom = keycloak_claims();
        custom.insert(
            "groups".into(),
            json!((0..300)
                .map(|i| format!("group-number-{i}"))
                .collect::<Vec<_>>()),
        );
        let big = sign_rsa(claims(custom));
        assert!(big.len() > session::CHUNK_SIZE);
        let (tx, cookie) = begin(&f, "/");
        let body = token_body(&big, &id_token(&tx.nonce, "productpage"), Some("r"));
        let Exchanged::Reply(r) = finish_exchange(
            &f.env(),
            &page("/callback", &cookie),
            &tx,
            vec![],
            200,
            &body,
            true,
        ) else {
            panic!()
        };
        assert_eq!(r.status, 302);
        let pairs = cookie_pairs(&r);
        assert!(pairs.iter().any(|(n, _, _)| n == "access_token_1"));
        assert!(pairs.iter().all(|(n, v, _)| n.len() + v.len() < 4000));
        let next = page("/", &as_cookie_header(&pairs));
        let Action::Continue(fwd) = decide(&f.env(), &next, &mut Counter(0), true) else {
            panic!()
        };
        assert_eq!(fwd.authorization, format!("Bearer {big}"));
    }
}
