//! The token endpoint's answers: `login::finish_exchange` (the code exchange) and
//! `login::finish_refresh`, with any status and body. In the body, `@A` stands for a valid access
//! token and `@I` for a valid ID token of the transaction, so that the fuzzer reaches the
//! branches behind the token checks; the transaction's return path is fuzzed too.
//!
//! Checks: never a panic; no header carries CR, LF or NUL; every `Location` is this origin or the
//! provider; no cookie is larger than a browser keeps; a sign-in succeeds, or a refresh goes on,
//! only with tokens that verify.
#![no_main]

use fixtures::{
    access_token, assert_header_safe, assert_reply_safe, env, id_claims, keyset, page, sign_claims,
    transaction, Counter, Input,
};
use libfuzzer_sys::fuzz_target;
use mesh_oidc::config::TokenRules;
use mesh_oidc::login::{finish_exchange, finish_refresh, Action, Exchanged, Refreshed};
use mesh_oidc::session::Session;
use mesh_oidc::token;
use std::sync::OnceLock;

fn id_token() -> &'static str {
    static T: OnceLock<String> = OnceLock::new();
    T.get_or_init(|| sign_claims(&id_claims(&transaction().nonce)))
}

fn status(choice: u8, extra: u8) -> u32 {
    match choice % 8 {
        0..=2 => 200,
        3 => 0,
        4 => 504,
        5 => 400,
        6 => 500,
        _ => u32::from(extra) * 4,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let choice = input.byte();
    let extra = input.byte();
    let flags = input.byte();
    let mut tx = transaction();
    let path = input.text();
    if !path.is_empty() {
        tx.path = path;
    }
    let body_text = String::from_utf8_lossy(input.rest())
        .replace("@A", access_token())
        .replace("@I", id_token());
    let body = body_text.as_bytes();
    let status = status(choice, extra);
    let keys = (flags & 1 == 0).then(keyset);
    let env = env(keys);
    let req = page("/callback?code=c", b"");
    let refetch = flags & 2 != 0;

    match finish_exchange(&env, &req, &tx, vec![], status, body, refetch) {
        Exchanged::Reply(reply) => {
            assert_reply_safe(&reply);
            for (n, v) in &reply.headers {
                if n == "set-cookie" {
                    assert!(v.len() <= 4096, "a cookie too large for a browser");
                }
            }
            if reply.status == 302 {
                let location = reply.header("location").unwrap();
                assert!(location.starts_with('/'), "{location:?}");
                let v = mesh_oidc::json::from_slice(body).expect("a JSON answer");
                let id = v
                    .get("id_token")
                    .and_then(|t| t.as_str())
                    .expect("an ID token");
                // The exchange checks the ID token with the client as its audience.
                let rules = TokenRules {
                    issuer: env.config.rules.issuer.clone(),
                    audiences: vec![env.config.client_id.clone().unwrap()],
                    authorized_parties: vec![],
                    client_id_as_audience: None,
                    clock_skew_seconds: env.config.rules.clock_skew_seconds,
                };
                token::verify_id_token(id, keyset(), &rules, env.now, Some(&tx.nonce))
                    .expect("signed in with an ID token that verifies");
            }
        }
        Exchanged::WaitForKeys => assert!(keys.is_none()),
        Exchanged::RefetchKeys => assert!(refetch),
    }

    let old = Session {
        id_token: Some(id_token().to_string()),
        refresh_token: Some("refresh-1".into()),
    };
    let action = match finish_refresh(&env, &req, &old, status, body, &mut Counter(extra), true) {
        Refreshed::Done { action, failure } => {
            if let Some(why) = &failure {
                assert!(
                    !why.contains("refresh-1"),
                    "a refusal's reason never holds the token"
                );
            }
            *action
        }
        // A key the set lacks (or no set): the answer is held, never judged on a guess.
        Refreshed::RefetchKeys | Refreshed::WaitForKeys => return,
    };
    match action {
        Action::Continue(forward) => {
            let token = forward.authorization.strip_prefix("Bearer ").unwrap();
            token::verify_access(token, keyset(), None, &env.config.rules, env.now)
                .expect("a refresh goes on only with a token that verifies");
            for (n, v) in forward.headers() {
                assert_header_safe(n, v);
            }
            for c in &forward.response_cookies {
                assert_header_safe("set-cookie", c);
                assert!(c.len() <= 4096);
            }
        }
        Action::Reply(reply) => assert_reply_safe(&reply),
        other => panic!("a refresh answer leads to {other:?}"),
    }
});
