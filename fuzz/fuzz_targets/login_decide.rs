//! `login::decide` (and `upstream_401`) on whole login-mode requests: the callback with any query
//! (`/callback?…`), logout, and pages and API calls with any cookies and `Authorization` headers;
//! the harness can slip in a valid transaction cookie, a valid sealed session and a valid access
//! token, so that every branch is reached.
//!
//! Checks: never a panic; no header carries CR, LF or NUL; every `Location` is this origin or the
//! provider; a code exchange happens only for the one transaction that was sealed, with the state
//! the query names once, and sends the code the query names; a request goes on only with a token
//! that verifies, and with none of the filter's cookies but that token.
#![no_main]

use fixtures::{
    access_token, assert_header_safe, assert_reply_safe, env, keyset, names, page, session_cookie,
    transaction, transaction_cookie, Counter, Input, Tls, STATE,
};
use libfuzzer_sys::fuzz_target;
use mesh_oidc::login::{decide, upstream_401, Action};
use mesh_oidc::token;
use mesh_oidc::web::{self, Scheme};
use url::form_urlencoded;

fn the_one(query: &str, name: &str) -> Option<String> {
    let values: Vec<String> = form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .collect();
    match values.as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    // Envoy refuses requests whose headers hold NUL, CR or LF: no request reaches the filter with
    // them, so neither does one here. What the filter sends back must not hold them either.
    let data: Vec<u8> = data
        .iter()
        .copied()
        .filter(|b| !matches!(b, b'\0' | b'\r' | b'\n'))
        .collect();
    let mut input = Input::new(&data);
    let shape = input.byte();
    let extras = input.byte();
    let what = input.text();
    let path = match shape % 4 {
        0 | 1 => format!("/callback?{what}"),
        2 => format!("/logout{what}"),
        _ => what,
    };
    let mut cookies = input.part().to_vec();
    let mut add_cookie = |c: &str| {
        if !cookies.is_empty() {
            cookies.extend_from_slice(b"; ");
        }
        cookies.extend_from_slice(c.as_bytes());
    };
    if extras & 1 != 0 {
        add_cookie(transaction_cookie());
    }
    if extras & 2 != 0 {
        add_cookie(session_cookie());
    }
    if extras & 4 != 0 {
        add_cookie(&format!("{}={}", names().access, access_token()));
    }
    let mut req = page(&path, &cookies);
    if extras & 8 != 0 {
        req.authorizations
            .push(format!("Bearer {}", access_token()).into_bytes().into());
    }
    if extras & 16 != 0 {
        req.authorizations.push(input.part().to_vec().into());
    }
    if extras & 32 != 0 {
        req.method = "POST".into();
        req.accept = Some("application/json".into());
    }
    let mut connection: &'static Tls = &Tls(false);
    if extras & 64 != 0 {
        let pick = input.byte();
        req.scheme = match pick % 4 {
            0 => Scheme::Https,
            1 => Scheme::Http,
            2 => Scheme::Other,
            _ => Scheme::OfConnection,
        };
        if pick & 4 != 0 {
            connection = &Tls(true);
        }
        req.host = input.text().into();
    }
    let keys = (shape & 0x80 == 0).then(keyset);
    let mut env = env(keys);
    env.connection = connection;
    let refetch = shape & 0x40 != 0;

    match decide(&env, &req, &mut Counter(shape), refetch) {
        Action::Reply(reply) => assert_reply_safe(&reply),
        Action::Continue(forward) => {
            let token = forward
                .authorization
                .strip_prefix("Bearer ")
                .expect("Bearer");
            token::verify_access(token, keyset(), None, &env.config.rules, env.now)
                .expect("only a verified token goes on");
            for (n, v) in forward.headers() {
                assert_header_safe(n, v);
            }
            if let Some(cookie) = &forward.cookie_header {
                for (n, v) in web::cookies(cookie) {
                    if names().in_namespace(n) {
                        assert_eq!(n, names().access.as_bytes());
                        assert_eq!(v, token.as_bytes());
                    }
                }
            }
        }
        // No back-channel logout path and no revocation endpoint in the fixture configuration.
        Action::EndSessions { .. } | Action::Revoke { .. } => {
            panic!("not configured, so never decided")
        }
        Action::Exchange {
            call,
            tx,
            clears,
            replay,
        } => {
            assert_eq!(web::path_only(&req.path), env.login.callback_path);
            assert_eq!(
                tx,
                transaction(),
                "only the sealed transaction is exchanged"
            );
            let query = web::query_of(&req.path).unwrap_or_default();
            assert_eq!(the_one(query, "state").as_deref(), Some(STATE));
            let code = the_one(query, "code").expect("one code");
            assert_eq!(the_one(&call.body, "code"), Some(code));
            assert_eq!(
                the_one(&call.body, "code_verifier"),
                Some(tx.verifier.clone())
            );
            assert!(replay.key.starts_with("mesh-oidc/state/"));
            for c in &clears {
                assert_header_safe("set-cookie", c);
            }
            for (n, v) in &call.headers {
                assert_header_safe(n, v);
            }
        }
        Action::Refresh {
            call,
            session,
            slot,
        } => {
            assert!(session.refresh_token.is_some());
            assert_eq!(
                the_one(&call.body, "grant_type").as_deref(),
                Some("refresh_token")
            );
            assert!(slot.contains(':'));
        }
        Action::WaitForKeys => assert!(keys.is_none()),
        Action::RefetchKeys => assert!(refetch),
    }
    if let Some(reply) = upstream_401(&env, &req, &mut Counter(shape)) {
        assert_reply_safe(&reply);
    }
});
