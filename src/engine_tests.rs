//! The engine driven through the fake host: waits, deadlines, dispatched calls, worker races,
//! streams that vanish — what only ran in a real Envoy before.

use std::rc::Rc;

use jwt_simple::prelude::*;
use serde_json::{json, Value};

use crate::fakehost::{Proxy, World, CLUSTER};
use crate::flow::Outcome;
use crate::testkit::*;

const SECRET: &str = "nsseZrfUE/AHsM4ERYcYpaCfgpxPm14SyfAAFapYwC8=";
const JWKS_PATH: &str = "/realms/dev/protocol/openid-connect/certs";
const TIMEOUT: u64 = 2_000;

fn validate_config() -> Value {
    json!({
        "mode": "validate",
        "oidc": {"issuer": ISSUER, "jwks_uri": format!("http://keycloak:8080{JWKS_PATH}")},
        "cluster": CLUSTER,
        "authorized_parties": ["productpage"],
        "claims_to_headers": {"preferred_username": "x-user"},
        "timeout_ms": TIMEOUT,
        "skip_paths": ["/healthz"]
    })
}

fn login_config() -> Value {
    json!({
        "mode": "login",
        "oidc": {
            "issuer": ISSUER,
            "jwks_uri": format!("http://keycloak:8080{JWKS_PATH}"),
            "authorization_endpoint": "https://sso.example.com/realms/dev/protocol/openid-connect/auth",
            "token_endpoint": "http://keycloak:8080/realms/dev/protocol/openid-connect/token",
            "end_session_endpoint": "https://sso.example.com/realms/dev/protocol/openid-connect/logout"
        },
        "cluster": CLUSTER,
        "client_id": "productpage",
        "client_secret": "pp-secret",
        "session_secret": SECRET,
        "claims_to_headers": {"preferred_username": "x-user"},
        "timeout_ms": TIMEOUT,
        "skip_paths": ["/static/*"]
    })
}

fn world() -> Rc<World> {
    World::new(NOW * 1000)
}

fn jwks_body() -> Vec<u8> {
    keycloak_jwks().to_string().into_bytes()
}

/// A VM whose first key set has arrived.
fn ready(world: &Rc<World>, config: &Value, first_token: u32) -> Proxy {
    let p = Proxy::new(world, config, first_token);
    p.tick();
    if let Some(call) = p.open_calls().into_iter().find(|c| c.path() == JWKS_PATH) {
        p.answer(call.token, 200, &jwks_body());
    }
    assert!(p.vm.borrow().store.keys.is_some());
    p
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn api(path: &'static str, authorization: &str) -> Vec<(&'static str, String)> {
    vec![
        (":method", "GET".into()),
        (":path", path.into()),
        (":scheme", "http".into()),
        (":authority", "bookinfo.example.com".into()),
        ("accept", "application/json".into()),
        ("authorization", authorization.into()),
        ("x-request-id", "rid-api".into()),
    ]
}

fn page(path: &str, cookie: &str) -> Vec<(&'static str, String)> {
    vec![
        (":method", "GET".into()),
        (":path", path.into()),
        (":scheme", "http".into()),
        (":authority", "bookinfo.example.com".into()),
        ("accept", "text/html".into()),
        ("cookie", cookie.into()),
        ("x-request-id", "rid-page".into()),
    ]
}

fn send(p: &Proxy, ctx: u32, headers: &[(&'static str, String)]) -> Outcome {
    let h: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    p.request(ctx, &h)
}

fn unknown_kid_token() -> String {
    other_rsa()
        .clone()
        .with_key_id("rotated")
        .sign(claims(keycloak_claims()))
        .unwrap()
}

fn rotated_jwks() -> Vec<u8> {
    let mut set = keycloak_jwks();
    set["keys"]
        .as_array_mut()
        .unwrap()
        .push(rsa_jwk(other_rsa(), "rotated"));
    set.to_string().into_bytes()
}

#[test]
fn requests_wait_for_the_first_key_set_and_go_on_when_it_arrives() {
    let w = world();
    let p = Proxy::new(&w, &validate_config(), 100);
    assert_eq!(
        send(&p, 2, &api("/a", &bearer(&valid_token()))),
        Outcome::Pause
    );
    assert_eq!(
        send(&p, 3, &api("/b", &bearer(&valid_token()))),
        Outcome::Pause
    );
    assert_eq!(p.waiting(), 2);
    p.tick();
    // One fetch for both, through the cluster, with the internal host as authority.
    let call = p.call_to(JWKS_PATH);
    assert_eq!(call.cluster, CLUSTER);
    assert_eq!(call.timeout_ms, TIMEOUT);
    assert_eq!(call.header(":authority"), Some("keycloak:8080"));
    p.answer(call.token, 200, &jwks_body());
    for ctx in [2, 3] {
        let r = p.req(ctx);
        assert_eq!(r.resumed, 1, "context {ctx} resumed");
        assert!(r.replies.is_empty());
        assert_eq!(r.header("x-user").as_deref(), Some("alice"));
    }
    assert_eq!(p.waiting(), 0);
    assert_eq!(p.host.counter("mesh_oidc.jwks_fetches_ok"), 1);
    assert!(w
        .shared_keys()
        .iter()
        .any(|k| k.starts_with("mesh-oidc/jwks/")));
}

#[test]
fn calls_answered_inline_inside_dispatch_never_double_borrow() {
    // Envoy may answer a call that fails at once before dispatch returns: the engine is
    // re-entered. A RefCell borrow held across a host call panics here, as it would in the VM.
    let w = world();
    let p = Proxy::new(&w, &login_config(), 100);
    p.host.inline_failures.set(true);
    p.tick();
    assert_eq!(p.host.counter("mesh_oidc.jwks_fetches_failed"), 1);
    p.host.inline_failures.set(false);
    w.advance(5_000);
    p.tick();
    let keys = p.call_to(JWKS_PATH);
    p.answer(keys.token, 200, &jwks_body());
    p.host.inline_failures.set(true);
    let (callback, tx) = start_login(&p, 2, "/p");
    send(&p, 3, &page(&callback, &tx));
    assert_eq!(
        p.status(3),
        Some(504),
        "the inline failure is the provider not answering"
    );
    let session = expired_session_request(&log_in_inline_free(&w));
    send(&p, 4, &page("/p", &session));
    assert_eq!(p.status(4), Some(302), "a failed refresh logs in again");
}

/// A session made by another VM of the same process (same secret), without inline failures.
fn log_in_inline_free(w: &Rc<World>) -> String {
    let other = ready(w, &login_config(), 900);
    log_in(&other, 50, "refresh-x")
}

#[test]
fn without_keys_by_the_deadline_a_request_gets_503() {
    let w = world();
    let p = Proxy::new(&w, &validate_config(), 100);
    send(&p, 2, &api("/a", &bearer(&valid_token())));
    p.tick();
    let call = p.call_to(JWKS_PATH);
    w.advance(TIMEOUT - 1);
    p.tick();
    assert_eq!(p.status(2), None, "still waiting");
    w.advance(1);
    p.tick();
    assert_eq!(p.status(2), Some(503));
    assert_eq!(p.req(2).resumed, 0, "never reached the service");
    // The late answer still installs the set for later requests.
    p.answer(call.token, 200, &jwks_body());
    assert_eq!(
        send(&p, 3, &api("/b", &bearer(&valid_token()))),
        Outcome::Continue
    );
}

#[test]
fn an_unknown_kid_seen_by_two_workers_costs_one_fetch_and_both_go_on() {
    let w = world();
    let a = ready(&w, &validate_config(), 100);
    let b = ready(&w, &validate_config(), 200);
    assert_eq!(
        a.host.dispatched.borrow().len() + b.host.dispatched.borrow().len(),
        1,
        "the first key set: one fetch for the two VMs"
    );
    w.advance(10_000);
    let t = unknown_kid_token();
    assert_eq!(send(&a, 2, &api("/a", &bearer(&t))), Outcome::Pause);
    assert_eq!(send(&b, 2, &api("/b", &bearer(&t))), Outcome::Pause);
    a.tick();
    b.tick();
    let fetches: Vec<_> = [&a, &b]
        .iter()
        .flat_map(|p| p.open_calls())
        .filter(|c| c.path() == JWKS_PATH)
        .collect();
    assert_eq!(fetches.len(), 1, "one refetch for both workers");
    let (owner, other) = if a.open_calls().is_empty() {
        (&b, &a)
    } else {
        (&a, &b)
    };
    owner.answer(fetches[0].token, 200, &rotated_jwks());
    assert_eq!(owner.req(2).resumed, 1);
    // The other VM picks the published set up at its next tick.
    other.tick();
    assert_eq!(other.req(2).resumed, 1);
}

#[test]
fn an_unknown_kid_that_no_new_set_knows_is_401_and_expiry_is_401() {
    let w = world();
    let p = ready(&w, &validate_config(), 100);
    w.advance(10_000);
    send(&p, 2, &api("/a", &bearer(&unknown_kid_token())));
    p.tick();
    let call = p.call_to(JWKS_PATH);
    p.answer(call.token, 200, &jwks_body());
    let r = p.req(2);
    assert_eq!(r.reply().map(|r| r.status), Some(401));
    assert!(r
        .reply()
        .unwrap()
        .header("www-authenticate")
        .unwrap()
        .contains("signing key not found"));
    // A refetch that never answers: 401 at the deadline, not a pass.
    w.advance(10_000);
    send(&p, 3, &api("/a", &bearer(&unknown_kid_token())));
    w.advance(TIMEOUT);
    p.tick();
    assert_eq!(p.status(3), Some(401));
    assert_eq!(p.req(3).resumed, 0);
}

#[test]
fn validate_mode_forwards_only_the_verified_token() {
    let w = world();
    let p = ready(&w, &validate_config(), 100);
    let t = valid_token();
    let mut h = api("/a", &format!("{},{}", bearer(&t), bearer(&t)));
    h.push((
        "cookie",
        format!("a=1; access_token_session=s; access_token={t}"),
    ));
    h.push(("x_user", "mallory".into()));
    assert_eq!(send(&p, 2, &h), Outcome::Continue);
    let r = p.req(2);
    assert_eq!(r.header("authorization"), Some(bearer(&t)));
    assert_eq!(r.header("cookie"), Some(format!("a=1; access_token={t}")));
    assert_eq!(r.header("x_user"), None);
    assert_eq!(r.header("x-user").as_deref(), Some("alice"));
    // Two different tokens: refused before the service.
    let mut h = api("/a", &bearer(&t));
    h.push(("cookie", "access_token=other".into()));
    send(&p, 3, &h);
    assert_eq!(p.status(3), Some(401));
    // A skip path keeps no cookie of the filter's, and no claim header from the client.
    let mut h = api("/healthz", "");
    h.push(("cookie", format!("access_token={t}; b=2")));
    h.push(("x-user", "mallory".into()));
    assert_eq!(send(&p, 4, &h), Outcome::Continue);
    assert_eq!(p.req(4).header("cookie").as_deref(), Some("b=2"));
    assert_eq!(p.req(4).header("x-user"), None);
}

#[test]
fn a_stream_reset_during_a_key_wait_or_a_call_leaves_the_vm_serving() {
    let w = world();
    let p = Proxy::new(&w, &validate_config(), 100);
    send(&p, 2, &api("/a", &bearer(&valid_token())));
    p.end(2);
    assert_eq!(p.waiting(), 0, "the gone request no longer waits");
    p.tick();
    let call = p.call_to(JWKS_PATH);
    p.answer(call.token, 200, &jwks_body());
    assert_eq!(
        send(&p, 3, &api("/b", &bearer(&valid_token()))),
        Outcome::Continue
    );

    // Login mode: the client goes away while its code exchange is in flight.
    let l = ready(&w, &login_config(), 300);
    let (callback, cookie) = start_login(&l, 10, "/productpage");
    send(&l, 11, &page(&callback, &cookie));
    let exchange = l.call_to("/token");
    l.end(11);
    assert!(
        l.open_calls().is_empty(),
        "Envoy cancels the gone stream's call"
    );
    assert!(l.vm.borrow().calls.is_empty());
    // Even if an answer for it still arrived, it would be dropped.
    let _ = exchange;
    assert_eq!(send(&l, 12, &page("/static/x.css", "")), Outcome::Continue);
}

/// Starts a login for `path` in context `ctx`; returns the callback path (with the state, a
/// code) and the transaction cookie.
fn start_login(p: &Proxy, ctx: u32, path: &str) -> (String, String) {
    send(p, ctx, &page(path, ""));
    let reply = p.req(ctx).reply().cloned().expect("a redirect");
    assert_eq!(reply.status, 302);
    let location = url::Url::parse(reply.header("location").unwrap()).unwrap();
    let state = location
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let cookie = reply
        .headers
        .iter()
        .filter(|(n, _)| n == "set-cookie")
        .map(|(_, v)| v.split(';').next().unwrap().to_string())
        .find(|c| c.starts_with("access_token_tx_"))
        .unwrap();
    (format!("/callback?code=the-code&state={state}"), cookie)
}

fn nonce_of(p: &Proxy, ctx: u32) -> String {
    let reply = p.req(ctx).reply().cloned().unwrap();
    let location = url::Url::parse(reply.header("location").unwrap()).unwrap();
    location
        .query_pairs()
        .find(|(k, _)| k == "nonce")
        .map(|(_, v)| v.into_owned())
        .unwrap()
}

fn id_token(nonce: &str) -> String {
    let mut custom = keycloak_claims();
    custom.insert("typ".into(), json!("ID"));
    let mut c = claims(custom);
    c.audiences = Some(Audiences::AsString("productpage".into()));
    c.nonce = Some(nonce.into());
    sign_rsa(c)
}

fn token_body(access: &str, id: Option<&str>, refresh: &str) -> Vec<u8> {
    let mut v = json!({"access_token": access, "refresh_token": refresh, "expires_in": 290, "refresh_expires_in": 1800});
    if let Some(id) = id {
        v["id_token"] = json!(id);
    }
    v.to_string().into_bytes()
}

fn set_cookies(p: &Proxy, ctx: u32) -> Vec<String> {
    let r = p.req(ctx);
    let from_reply = r
        .reply()
        .map(|reply| {
            reply
                .headers
                .iter()
                .filter(|(n, _)| n == "set-cookie")
                .map(|(_, v)| v.clone())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let from_response = r
        .response_headers
        .iter()
        .filter(|(n, _)| n == "set-cookie")
        .map(|(_, v)| v.clone());
    from_reply.into_iter().chain(from_response).collect()
}

/// The `Cookie` header a browser would send after these `Set-Cookie`s.
fn jar(set: &[String]) -> String {
    set.iter()
        .map(|c| c.split(';').next().unwrap())
        .filter(|pair| !pair.ends_with('='))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Logs in through the fake proxy; returns the session cookies.
fn log_in(p: &Proxy, ctx: u32, refresh: &str) -> String {
    let (callback, tx) = start_login(p, ctx, "/productpage");
    let nonce = nonce_of(p, ctx);
    send(p, ctx + 1, &page(&callback, &tx));
    let call = p.call_to("/token");
    assert!(String::from_utf8_lossy(&call.body).contains("grant_type=authorization_code"));
    p.answer(
        call.token,
        200,
        &token_body(&valid_token(), Some(&id_token(&nonce)), refresh),
    );
    let reply = p.req(ctx + 1).reply().cloned().unwrap();
    assert_eq!(
        reply.status,
        302,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.header("location"), Some("/productpage"));
    jar(&set_cookies(p, ctx + 1))
}

#[test]
fn a_code_exchange_logs_in_and_the_session_forwards_the_bearer() {
    let w = world();
    let p = ready(&w, &login_config(), 100);
    let cookies = log_in(&p, 2, "refresh-1");
    assert_eq!(
        send(&p, 5, &page("/productpage", &cookies)),
        Outcome::Continue
    );
    let r = p.req(5);
    assert_eq!(r.header("authorization"), Some(bearer(&valid_token())));
    assert!(!r.header("cookie").unwrap().contains("access_token_session"));
    assert_eq!(p.host.counter("mesh_oidc.callbacks_ok"), 1);
    // The same callback again: the state is single-use, no second token call.
    let (callback, tx) = start_login(&p, 6, "/x");
    send(&p, 7, &page(&callback, &tx));
    let call = p.call_to("/token");
    p.answer(call.token, 400, br#"{"error":"invalid_grant"}"#);
    send(&p, 8, &page(&callback, &tx));
    assert_eq!(p.status(8), Some(400));
    assert!(p.open_calls().is_empty());
}

#[test]
fn a_code_exchange_answered_before_the_keys_waits_for_them() {
    let w = world();
    let p = Proxy::new(&w, &login_config(), 100);
    let (callback, tx) = start_login(&p, 2, "/p");
    let nonce = nonce_of(&p, 2);
    send(&p, 3, &page(&callback, &tx));
    assert_eq!(p.status(3), None);
    let exchange = p.call_to("/token");
    p.answer(
        exchange.token,
        200,
        &token_body(&valid_token(), Some(&id_token(&nonce)), "r"),
    );
    assert_eq!(p.status(3), None, "held until the keys arrive");
    assert_eq!(p.waiting(), 1);
    p.tick();
    let keys = p.call_to(JWKS_PATH);
    p.answer(keys.token, 200, &jwks_body());
    assert_eq!(p.status(3), Some(302));
    // Without keys by the deadline: the sign-in error page, 503, no session. (Another Envoy
    // process: this one already used the state its fake random source gives again.)
    let w = world();
    let q = Proxy::new(&w, &login_config(), 500);
    let (callback, tx) = start_login(&q, 2, "/p");
    let nonce = nonce_of(&q, 2);
    send(&q, 3, &page(&callback, &tx));
    let exchange = q.call_to("/token");
    q.answer(
        exchange.token,
        200,
        &token_body(&valid_token(), Some(&id_token(&nonce)), "r"),
    );
    w.advance(TIMEOUT);
    q.tick();
    assert_eq!(q.status(3), Some(503));
    assert!(set_cookies(&q, 3)
        .iter()
        .all(|c| !c.starts_with("access_token=e")));
}

fn expired_session_request(cookies: &str) -> String {
    // The access token is gone (expired cookie), the sealed session is there.
    cookies
        .split("; ")
        .filter(|c| !c.starts_with("access_token="))
        .collect::<Vec<_>>()
        .join("; ")
}

#[test]
fn a_refresh_shared_by_two_vms_calls_the_provider_once() {
    let w = world();
    let a = ready(&w, &login_config(), 100);
    let b = ready(&w, &login_config(), 200);
    let session = expired_session_request(&log_in(&a, 2, "refresh-1"));
    // Both workers see the same session at once.
    assert_eq!(send(&a, 10, &page("/p", &session)), Outcome::Pause);
    assert_eq!(send(&b, 10, &page("/p", &session)), Outcome::Pause);
    let calls: Vec<_> = [&a, &b].iter().flat_map(|p| p.open_calls()).collect();
    assert_eq!(calls.len(), 1, "one refresh: {calls:?}");
    assert!(String::from_utf8_lossy(&calls[0].body).contains("grant_type=refresh_token"));
    a.answer(
        calls[0].token,
        200,
        &token_body(&valid_token(), None, "refresh-2"),
    );
    assert_eq!(a.req(10).resumed, 1);
    assert!(
        set_cookies(&a, 10).is_empty(),
        "cookies come with the response"
    );
    a.respond(10, 200);
    assert!(set_cookies(&a, 10)
        .iter()
        .any(|c| c.starts_with("access_token=")));
    assert!(a
        .req(10)
        .response_headers
        .contains(&("cache-control".into(), "no-store".into())));
    // The other worker uses the published answer at its next tick.
    b.tick();
    assert_eq!(b.req(10).resumed, 1);
    assert_eq!(
        b.req(10).header("authorization"),
        Some(bearer(&valid_token()))
    );
}

#[test]
fn a_lost_cas_race_waits_for_the_winner() {
    let w = world();
    let a = ready(&w, &login_config(), 100);
    let session = expired_session_request(&log_in(&a, 2, "refresh-1"));
    // Another worker marks the slot between this worker's read and its write: simulated by a
    // write to every refresh slot key right before the request (same CAS race outcome).
    let b = ready(&w, &login_config(), 200);
    send(&b, 10, &page("/p", &session));
    let owner_call = b.call_to("/token");
    send(&a, 10, &page("/p", &session));
    assert!(a.open_calls().is_empty(), "the loser does not call");
    assert_eq!(a.waiting(), 1);
    b.answer(
        owner_call.token,
        200,
        &token_body(&valid_token(), None, "refresh-2"),
    );
    a.tick();
    assert_eq!(a.req(10).resumed, 1);
}

#[test]
fn an_owner_gone_before_the_answer_hands_the_refresh_over() {
    let w = world();
    let a = ready(&w, &login_config(), 100);
    let b = ready(&w, &login_config(), 200);
    let session = expired_session_request(&log_in(&a, 2, "refresh-1"));
    send(&a, 10, &page("/p", &session));
    send(&b, 10, &page("/p", &session));
    assert_eq!(b.waiting(), 1);
    a.end(10); // the owner's client went away; Envoy cancels its call
    b.tick();
    let call = b.call_to("/token");
    b.answer(
        call.token,
        200,
        &token_body(&valid_token(), None, "refresh-2"),
    );
    assert_eq!(b.req(10).resumed, 1);
}

#[test]
fn token_calls_that_time_out_are_504_or_a_new_login() {
    let w = world();
    let a = ready(&w, &login_config(), 100);
    let b = ready(&w, &login_config(), 200);
    let session = expired_session_request(&log_in(&a, 2, "refresh-1"));
    send(&a, 10, &page("/p", &session));
    send(&b, 10, &page("/p", &session));
    // Envoy gives up on the owner's call after timeout_ms (status 0): the refresh failed, so
    // both requests clear the session and log in again (L5), the waiter included.
    w.advance(TIMEOUT);
    let call = a.call_to("/token");
    a.answer(call.token, 0, b"");
    assert_eq!(a.status(10), Some(302));
    b.tick();
    assert_eq!(b.status(10), Some(302));
    // A code exchange the provider does not answer in time: 504 (L3), no session.
    let (callback, tx) = start_login(&a, 20, "/p");
    send(&a, 21, &page(&callback, &tx));
    let call = a.call_to("/token");
    a.answer(call.token, 0, b"");
    assert_eq!(a.status(21), Some(504));
    assert!(set_cookies(&a, 21)
        .iter()
        .all(|c| !c.starts_with("access_token=e")));
}

#[test]
fn a_401_from_the_service_on_a_page_logs_in_again() {
    let w = world();
    let p = ready(&w, &login_config(), 100);
    let cookies = log_in(&p, 2, "r");
    assert_eq!(
        send(&p, 5, &page("/productpage", &cookies)),
        Outcome::Continue
    );
    {
        // Gone on at once: only the header map is kept, no owned copy of the request.
        let v = p.vm.borrow();
        let st = v.requests.get(&5).unwrap().borrow();
        assert!(st.login.is_none() && st.headers.is_some());
    }
    assert_eq!(p.respond(5, 401), Outcome::Pause);
    let reply = p.req(5).reply().cloned().unwrap();
    assert_eq!(reply.status, 302);
    assert!(reply
        .header("location")
        .unwrap()
        .contains("/openid-connect/auth?"));
    // The request went on at once; its response reads it again, with the cookies it came with
    // (not those sent on): the session is cleared too.
    let cleared: Vec<&str> = reply
        .headers
        .iter()
        .filter(|(n, _)| n == "set-cookie")
        .filter_map(|(_, v)| v.split_once('=').map(|(name, _)| name))
        .collect();
    assert!(
        cleared.contains(&"access_token") && cleared.contains(&"access_token_session"),
        "{cleared:?}"
    );
    assert_eq!(p.host.counter("mesh_oidc.upstream_401"), 1);
    // An API call keeps its 401.
    let mut h = api("/api", &bearer(&valid_token()));
    h.push(("cookie", cookies.clone()));
    assert_eq!(send(&p, 6, &h), Outcome::Continue);
    assert_eq!(p.respond(6, 401), Outcome::Continue);
}

#[test]
fn an_unknown_cluster_is_a_502_page_and_a_logged_line() {
    let w = world();
    let p = ready(&w, &login_config(), 100);
    p.host.clusters.borrow_mut().clear();
    let (callback, tx) = start_login(&p, 2, "/p");
    send(&p, 3, &page(&callback, &tx));
    assert_eq!(p.status(3), Some(502));
    assert!(p.host.logged("is not known to Envoy"));
}

#[test]
fn an_answer_that_comes_before_its_dispatch_returns_is_not_lost() {
    let w = world();
    let p = Proxy::new(&w, &validate_config(), 100);
    // Envoy answers a call that fails at once inline, before dispatch returns its token: the
    // engine hears of a token it does not know yet, keeps it, and the dispatcher takes it.
    crate::flow::keep_early(&p.host, &p.vm, 100, 0);
    send(&p, 2, &api("/a", &bearer(&valid_token())));
    p.tick();
    assert!(
        p.vm.borrow().store.in_flight.is_none(),
        "the fetch was answered"
    );
    assert_eq!(p.host.counter("mesh_oidc.jwks_fetches_failed"), 1);
}

#[test]
fn logs_never_hold_a_token_a_code_or_a_secret() {
    let w = world();
    let p = ready(&w, &login_config(), 100);
    let cookies = log_in(&p, 2, "refresh-secret-value");
    send(&p, 5, &page("/productpage", &cookies));
    send(&p, 6, &page("/callback?code=c0de-secret&state=x", ""));
    let logs = p.host.logs.borrow();
    for (_, line) in logs.iter() {
        for secret in [
            "refresh-secret-value",
            "c0de-secret",
            "pp-secret",
            SECRET,
            &valid_token()[..20],
        ] {
            assert!(!line.contains(secret), "{line}");
        }
    }
}

fn outbound_call(path: &'static str, authority: &str, rid: &str) -> Vec<(&'static str, String)> {
    vec![
        (":method", "GET".into()),
        (":path", path.into()),
        (":authority", authority.into()),
        ("authorization", bearer(&valid_token())),
        ("x-request-id", rid.into()),
    ]
}

fn send_outbound(p: &Proxy, ctx: u32, headers: &[(&'static str, String)]) -> Outcome {
    let h: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    p.request_on(ctx, &h, true)
}

fn with_rid(mut h: Vec<(&'static str, String)>, rid: &str) -> Vec<(&'static str, String)> {
    h.retain(|(n, _)| *n != "x-request-id");
    h.push(("x-request-id", rid.into()));
    h
}

#[test]
fn an_outbound_401_makes_the_page_log_in_again_although_the_app_answered_200() {
    let w = world();
    let mut config = login_config();
    config["upstream_401_services"] = json!(["details:9080"]);
    let p = ready(&w, &config, 100);
    let cookies = log_in(&p, 2, "r");
    // The page comes in; the app calls details (refused) and reviews (fine), then answers 200.
    assert_eq!(
        send(&p, 10, &with_rid(page("/productpage", &cookies), "rid-7")),
        Outcome::Continue
    );
    let call = outbound_call("/details/0", "details:9080", "rid-7");
    assert_eq!(send_outbound(&p, 11, &call), Outcome::Continue);
    assert_eq!(
        p.req(11).header("authorization"),
        Some(bearer(&valid_token())),
        "untouched"
    );
    assert_eq!(
        p.respond(11, 401),
        Outcome::Continue,
        "the app sees its 401"
    );
    let other = outbound_call("/reviews/0", "reviews:9080", "rid-7");
    send_outbound(&p, 12, &other);
    p.respond(12, 200);
    assert_eq!(p.respond(10, 200), Outcome::Pause);
    let reply = p.req(10).reply().cloned().unwrap();
    assert_eq!(reply.status, 302);
    assert!(reply
        .header("location")
        .unwrap()
        .contains("/openid-connect/auth?"));
    assert_eq!(p.host.counter("mesh_oidc.upstream_401"), 1);
    // Another page, whose calls went well, is untouched; so is one refused by an unlisted service.
    send(&p, 20, &with_rid(page("/productpage", &cookies), "rid-8"));
    send_outbound(&p, 21, &outbound_call("/ratings", "ratings:9080", "rid-8"));
    p.respond(21, 401);
    assert_eq!(p.respond(20, 200), Outcome::Continue);
    // The mark expires with the request.
    send(&p, 30, &with_rid(page("/productpage", &cookies), "rid-9"));
    send_outbound(&p, 31, &outbound_call("/details/0", "details", "rid-9"));
    p.respond(31, 401);
    w.advance((crate::engine::OUTBOUND_401_TTL_SECONDS + 1) * 1000);
    assert_eq!(p.respond(30, 200), Outcome::Continue);
}

#[test]
fn refresh_first_then_login_when_the_service_still_refuses() {
    let w = world();
    let mut config = login_config();
    config["on_upstream_401"] = json!("refresh");
    let p = ready(&w, &config, 100);
    let cookies = log_in(&p, 2, "refresh-1");
    send(&p, 10, &page("/productpage?x=1", &cookies));
    assert_eq!(p.respond(10, 401), Outcome::Pause);
    let reply = p.req(10).reply().cloned().unwrap();
    assert_eq!(reply.status, 302);
    assert_eq!(
        reply.header("location"),
        Some("/productpage?x=1"),
        "back to the page"
    );
    let set = set_cookies(&p, 10);
    assert!(set.iter().any(|c| c.starts_with("access_token=;")));
    assert!(
        !set.iter().any(|c| c.starts_with("access_token_session=")),
        "the session stays"
    );
    // The browser comes back: no access token, the session: a refresh, then the page.
    let next = format!("{}; {}", expired_session_request(&cookies), jar(&set));
    send(&p, 11, &page("/productpage?x=1", &next));
    let call = p.call_to("/token");
    p.answer(
        call.token,
        200,
        &token_body(&valid_token(), None, "refresh-2"),
    );
    assert_eq!(p.req(11).resumed, 1);
    // Refused again within the window: a full login this time, not a loop.
    assert_eq!(p.respond(11, 401), Outcome::Pause);
    let reply = p.req(11).reply().cloned().unwrap();
    assert!(reply
        .header("location")
        .unwrap()
        .contains("/openid-connect/auth?"));
}

#[test]
fn a_refresh_after_a_key_rotation_fetches_the_keys_and_goes_on() {
    let w = world();
    let p = ready(&w, &login_config(), 100);
    let session = expired_session_request(&log_in(&p, 2, "refresh-1"));
    w.advance(10_000);
    send(&p, 10, &page("/p", &session));
    let call = p.call_to("/token");
    p.answer(
        call.token,
        200,
        &token_body(&unknown_kid_token(), None, "refresh-2"),
    );
    assert_eq!(p.status(10), None, "held for the keys");
    p.tick();
    let keys = p.call_to(JWKS_PATH);
    p.answer(keys.token, 200, &rotated_jwks());
    assert_eq!(p.req(10).resumed, 1);
    assert_eq!(
        p.req(10).header("authorization"),
        Some(bearer(&unknown_kid_token()))
    );
    p.respond(10, 200);
    assert!(set_cookies(&p, 10)
        .iter()
        .any(|c| c.starts_with("access_token=e")));
    // A refused refresh says why in the log (after the shared answer's reuse ran out).
    w.advance(flight_ttl());
    send(&p, 20, &page("/p", &session));
    let call = p.call_to("/token");
    p.answer(call.token, 401, br#"{"error":"invalid_client"}"#);
    assert!(p
        .host
        .logged("refresh refused: the token endpoint answered 401 invalid_client"));
}

fn flight_ttl() -> u64 {
    crate::flight::RESULT_TTL_MS + 1
}

#[test]
fn logout_revokes_the_refresh_token_and_never_waits_on_a_failure() {
    let w = world();
    let mut config = login_config();
    config["oidc"]["revocation_endpoint"] =
        json!("http://keycloak:8080/realms/dev/protocol/openid-connect/revoke");
    let p = ready(&w, &config, 100);
    let cookies = log_in(&p, 2, "refresh-to-revoke");
    send(&p, 10, &page("/logout", &cookies));
    assert_eq!(p.status(10), None, "the revocation first");
    let call = p.call_to("/revoke");
    let body = String::from_utf8_lossy(&call.body).to_string();
    assert!(
        body.contains("token=refresh-to-revoke") && body.contains("token_type_hint=refresh_token")
    );
    assert!(call.header("authorization").unwrap().starts_with("Basic "));
    p.answer(call.token, 503, b"");
    let reply = p.req(10).reply().cloned().unwrap();
    assert_eq!(
        reply.status, 302,
        "a failed revocation never blocks the logout"
    );
    assert!(reply
        .header("location")
        .unwrap()
        .contains("/openid-connect/logout?"));
    assert!(p.host.logged("revocation at logout (the logout goes on)"));
    // No session, nothing to revoke: the redirect at once.
    send(&p, 11, &page("/logout", ""));
    assert_eq!(p.status(11), Some(302));
    assert!(p.open_calls().is_empty());
}

fn introspecting_config() -> Value {
    let mut c = validate_config();
    c["oidc"]["introspection_endpoint"] =
        json!("http://keycloak:8080/realms/dev/protocol/openid-connect/token/introspect");
    c["introspection"] = json!({"enabled": true, "cache_seconds": 30, "client_id": "details", "client_secret": "details-secret"});
    c
}

fn introspection_answer(active: bool) -> Vec<u8> {
    json!({"active": active, "iss": ISSUER, "exp": NOW + 300, "azp": "productpage",
           "sub": "alice-id", "preferred_username": "alice", "typ": "Bearer"})
    .to_string()
    .into_bytes()
}

#[test]
fn an_opaque_token_is_introspected_once_within_the_cache_time() {
    let w = world();
    let p = ready(&w, &introspecting_config(), 100);
    assert_eq!(
        send(&p, 2, &api("/a", "Bearer 8xLOxBtZp8-opaque")),
        Outcome::Pause
    );
    let call = p.call_to("/introspect");
    let form = String::from_utf8_lossy(&call.body).to_string();
    assert!(form.contains("token=8xLOxBtZp8-opaque"));
    assert!(call.header("authorization").unwrap().starts_with("Basic "));
    p.answer(call.token, 200, &introspection_answer(true));
    assert_eq!(p.req(2).resumed, 1);
    assert_eq!(p.req(2).header("x-user").as_deref(), Some("alice"));
    // Another worker of the same proxy uses the cached answer.
    let b = ready(&w, &introspecting_config(), 200);
    assert_eq!(
        send(&b, 3, &api("/a", "Bearer 8xLOxBtZp8-opaque")),
        Outcome::Continue
    );
    assert!(b.open_calls().is_empty());
    // After the cache time: asked again; now revoked: 401, and that is cached too.
    w.advance(31_000);
    send(&b, 4, &api("/a", "Bearer 8xLOxBtZp8-opaque"));
    let call = b.call_to("/introspect");
    b.answer(call.token, 200, &introspection_answer(false));
    assert_eq!(b.status(4), Some(401));
    assert_eq!(
        send(&b, 5, &api("/a", "Bearer 8xLOxBtZp8-opaque")),
        Outcome::Pause
    );
    assert_eq!(b.status(5), Some(401));
}

#[test]
fn a_verified_jwt_is_still_refused_when_the_provider_says_it_is_not_active() {
    let w = world();
    let p = ready(&w, &introspecting_config(), 100);
    send(&p, 2, &api("/a", &bearer(&valid_token())));
    let call = p.call_to("/introspect");
    p.answer(call.token, 200, &introspection_answer(false));
    let r = p.req(2);
    assert_eq!(r.reply().map(|r| r.status), Some(401));
    assert!(r
        .reply()
        .unwrap()
        .header("www-authenticate")
        .unwrap()
        .contains("token is not active"));
    // A forged JWT never reaches the provider.
    send(
        &p,
        3,
        &api("/a", &bearer(&valid_token().replace('.', ".x"))),
    );
    assert_eq!(p.status(3), Some(401));
    assert!(p.open_calls().is_empty());
}

#[test]
fn introspection_errors_and_timeouts_refuse_and_are_not_cached() {
    let w = world();
    let p = ready(&w, &introspecting_config(), 100);
    for (ctx, status, body) in [(2, 0, &b""[..]), (3, 500, b"oops"), (4, 200, b"<html>")] {
        send(&p, ctx, &api("/a", "Bearer opaque-1"));
        let call = p.call_to("/introspect");
        p.answer(call.token, status, body);
        assert_eq!(p.status(ctx), Some(401), "{status}");
        assert_eq!(p.req(ctx).resumed, 0);
    }
    assert!(p.host.logged("the token is refused"));
}

fn logout_token(sid: Option<&str>, jti: &str) -> String {
    let mut custom = serde_json::Map::new();
    custom.insert(
        "events".into(),
        json!({ crate::token::BACKCHANNEL_LOGOUT_EVENT: {} }),
    );
    if let Some(sid) = sid {
        custom.insert("sid".into(), json!(sid));
    }
    let mut c = claims(custom).with_jwt_id(jti);
    c.audiences = Some(Audiences::AsString("productpage".into()));
    sign_rsa(c)
}

fn post_logout_token(p: &Proxy, ctx: u32, token: &str) -> Option<u32> {
    let headers = [
        (":method", "POST"),
        (":path", "/backchannel-logout"),
        (":authority", "bookinfo.example.com"),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    // Headers go on (a Pause there would keep Envoy from handing over the body); the body is
    // held and answered.
    assert_eq!(p.request(ctx, &headers), Outcome::Continue);
    p.body(ctx, format!("logout_token={token}").as_bytes());
    p.status(ctx)
}

#[test]
fn a_back_channel_logout_ends_the_session_at_its_next_request() {
    let w = world();
    let mut config = login_config();
    config["backchannel_logout_path"] = json!("/backchannel-logout");
    let a = ready(&w, &config, 100);
    // The session's ID token carries sid "session-1" (keycloak_claims has none: add it).
    let cookies = log_in(&a, 2, "r");
    assert_eq!(send(&a, 5, &page("/p", &cookies)), Outcome::Continue);
    // The provider says: every session of alice-id ends (no sid: by sub).
    w.advance(2_000);
    assert_eq!(
        post_logout_token(&a, 10, &logout_token(None, "jti-1")),
        Some(200)
    );
    let reply = a.req(10).reply().cloned().unwrap();
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    // Another worker of the same Envoy: the next page of that session logs in again.
    let b = ready(&w, &config, 200);
    send(&b, 11, &page("/p", &cookies));
    let r = b.req(11).reply().cloned().unwrap();
    assert_eq!(r.status, 302);
    assert!(r
        .header("location")
        .unwrap()
        .contains("/openid-connect/auth?"));
    assert!(r
        .headers
        .iter()
        .any(|(n, v)| n == "set-cookie" && v.starts_with("access_token_session=;")));
    assert_eq!(b.host.counter("mesh_oidc.sessions_ended"), 1);
    // The same logout token again: 400. Garbage: 400. A GET: 400.
    assert_eq!(
        post_logout_token(&a, 12, &logout_token(None, "jti-1")),
        Some(400)
    );
    assert_eq!(post_logout_token(&a, 13, "a.b.c"), Some(400));
    send(&a, 14, &page("/backchannel-logout", ""));
    assert_eq!(a.status(14), Some(400));
}

#[test]
fn a_refresh_token_spent_by_a_sibling_reuses_its_answer() {
    let w = world();
    let p = ready(&w, &login_config(), 100);
    let session = expired_session_request(&log_in(&p, 2, "refresh-1"));
    send(&p, 10, &page("/p", &session));
    let call = p.call_to("/token");
    p.answer(
        call.token,
        200,
        &token_body(&valid_token(), None, "refresh-2"),
    );
    assert_eq!(p.req(10).resumed, 1);
    // Long after, a request still carrying the spent token (its tab never got the new cookies):
    // the provider, which rotates refresh tokens, says invalid_grant; the sibling's answer is used.
    w.advance(flight_ttl());
    send(&p, 11, &page("/p", &session));
    let call = p.call_to("/token");
    p.answer(
        call.token,
        400,
        br#"{"error":"invalid_grant","error_description":"Token is not active"}"#,
    );
    assert_eq!(p.req(11).resumed, 1, "{:?}", p.req(11).reply());
    assert!(p.host.logged("spent by a sibling request"));
    // Without a sibling's answer, invalid_grant still logs in again.
    let other = expired_session_request(&log_in(&p, 20, "refresh-9"));
    send(&p, 30, &page("/p", &other));
    let call = p.call_to("/token");
    p.answer(call.token, 400, br#"{"error":"invalid_grant"}"#);
    assert_eq!(p.status(30), Some(302));
}

#[test]
fn the_log_explains_a_wrong_issuer_and_an_unknown_cluster_once() {
    let w = world();
    let p = ready(&w, &validate_config(), 100);
    let mut c = claims(keycloak_claims());
    c.issuer = Some("https://sso.example.com/realms/prod".into());
    send(&p, 2, &api("/a", &bearer(&sign_rsa(c))));
    assert_eq!(p.status(2), Some(401));
    assert!(p.host.logged(&format!(
        "expected iss \"{ISSUER}\", audiences [], authorized parties [\"productpage\"]; the token has iss \"https://sso.example.com/realms/prod\""
    )));
    // A cluster Envoy does not know: one line, a counter, back-off.
    let q = Proxy::new(
        &w,
        &json!({
            "mode": "validate",
            "oidc": {"issuer": ISSUER, "jwks_uri": "http://keycloak:8080/certs"},
            "cluster": "no-such-cluster",
            "authorized_parties": ["productpage"]
        }),
        500,
    );
    for _ in 0..40 {
        q.tick();
        w.advance(500);
    }
    let lines = q
        .host
        .logs
        .borrow()
        .iter()
        .filter(|(_, l)| l.contains("no-such-cluster is not known to Envoy"))
        .count();
    assert_eq!(lines, 1);
    let failed = q.host.counter("mesh_oidc.jwks_fetches_failed");
    assert!(
        (2..=10).contains(&failed),
        "{failed} attempts in 20 s: backed off"
    );
}

#[test]
fn without_upstream_401_services_an_outbound_listener_is_a_login_filter() {
    // An Istio gateway's listeners are all OUTBOUND: the watch-only side must never open there.
    let w = world();
    let p = ready(&w, &login_config(), 100);
    let h: Vec<(&str, String)> = page("/productpage", "");
    let h: Vec<(&str, &str)> = h.iter().map(|(n, v)| (*n, v.as_str())).collect();
    assert_eq!(p.request_on(2, &h, true), Outcome::Pause);
    assert_eq!(p.status(2), Some(302), "sent to log in, not waved through");
}

#[test]
fn endpoints_from_discovery_requests_wait_for_them() {
    let w = world();
    let config = json!({
        "mode": "login",
        "oidc": {
            "issuer": ISSUER,
            "discovery_url": "http://keycloak:8080/realms/dev/.well-known/openid-configuration",
            "internal_origin": "http://keycloak:8080"
        },
        "cluster": CLUSTER,
        "client_id": "productpage",
        "client_secret": "pp-secret",
        "session_secret": SECRET,
        "timeout_ms": TIMEOUT
    });
    let p = Proxy::new(&w, &config, 100);
    p.tick();
    let discovery = p.call_to("/.well-known/openid-configuration");
    assert!(
        p.open_calls().iter().all(|c| c.path() != JWKS_PATH),
        "no key set before it"
    );
    // A page waits: no endpoint is known yet; at its deadline, 503.
    assert_eq!(send(&p, 3, &page("/p", "")), Outcome::Pause);
    // A document that lacks a required endpoint: one line, another attempt later.
    p.answer(discovery.token, 200, br#"{"issuer": "x"}"#);
    assert!(
        p.host.logged("failed: oidc.authorization_endpoint")
            || p.host.logged("failed: oidc.token_endpoint")
            || p.host.logged("failed: oidc.jwks_uri"),
        "{:?}",
        p.host.logs.borrow()
    );
    w.advance(5_000);
    p.tick();
    assert_eq!(p.status(3), Some(503));
    let discovery = p.call_to("/.well-known/openid-configuration");
    assert_eq!(send(&p, 2, &page("/p", "")), Outcome::Pause);
    let doc = json!({
        "issuer": ISSUER,
        "authorization_endpoint": "https://sso.example.com/realms/dev/protocol/openid-connect/auth",
        "token_endpoint": "https://sso.example.com/realms/dev/protocol/openid-connect/token",
        "jwks_uri": format!("https://sso.example.com{JWKS_PATH}")
    });
    p.answer(discovery.token, 200, doc.to_string().as_bytes());
    assert!(p.host.logged("the provider's issuer is oidc.issuer: OK"));
    p.tick();
    // The key set from the document's jwks_uri, moved to the internal origin.
    let keys = p.call_to(JWKS_PATH);
    assert_eq!(keys.header(":authority"), Some("keycloak:8080"));
    assert_eq!(keys.header(":scheme"), Some("http"));
    p.answer(keys.token, 200, &jwks_body());
    let reply = p
        .req(2)
        .reply()
        .cloned()
        .expect("decided once the keys are there");
    assert_eq!(reply.status, 302);
    assert!(reply
        .header("location")
        .unwrap()
        .starts_with("https://sso.example.com/realms/dev/protocol/openid-connect/auth?"));
}

#[test]
fn a_new_key_seen_just_after_a_fetch_waits_for_the_next_one() {
    // The soak found it: a valid token of a key that came in a rotation, arriving within the
    // refetch rate limit of the last fetch (triggered by a forged kid), was refused at once.
    let w = world();
    let p = ready(&w, &validate_config(), 100);
    w.advance(1_000);
    assert_eq!(
        send(&p, 2, &api("/a", &bearer(&unknown_kid_token()))),
        Outcome::Pause,
        "waits although the rate limit forbids a fetch now"
    );
    assert_eq!(p.status(2), None, "not refused");
    p.tick();
    assert!(p.open_calls().is_empty(), "rate-limited: no fetch yet");
    w.advance(crate::keystore::REFETCH_MIN_INTERVAL_MS - 1_000);
    p.tick();
    let keys = p.call_to(JWKS_PATH);
    p.answer(keys.token, 200, &rotated_jwks());
    assert_eq!(p.req(2).resumed, 1, "{:?}", p.req(2).reply());
    // Once that fetch has answered without a kid, the wait is over: 401.
    w.advance(1_000);
    let stranger = other_rsa()
        .clone()
        .with_key_id("nobody")
        .sign(claims(keycloak_claims()))
        .unwrap();
    send(&p, 3, &api("/a", &bearer(&stranger)));
    w.advance(crate::keystore::REFETCH_MIN_INTERVAL_MS);
    p.tick();
    let keys = p.call_to(JWKS_PATH);
    p.answer(keys.token, 200, &rotated_jwks());
    assert_eq!(p.status(3), Some(401));
    assert_eq!(p.req(3).resumed, 0);
}

#[test]
fn a_key_that_left_the_set_is_refused_at_once_within_the_rate_limit() {
    let w = world();
    let p = ready(&w, &validate_config(), 100);
    let old = valid_token();
    w.advance(10_000);
    // The provider rotates: "rsa-1" leaves the set (found by the refetch an unknown kid asks).
    send(&p, 2, &api("/a", &bearer(&unknown_kid_token())));
    p.tick();
    let keys = p.call_to(JWKS_PATH);
    let set = json!({"keys": [rsa_jwk(other_rsa(), "rotated")]});
    p.answer(keys.token, 200, set.to_string().as_bytes());
    assert_eq!(p.req(2).resumed, 1);
    // Within the rate limit, a token of the dropped key: 401 now, not after a wait.
    w.advance(500);
    assert_eq!(send(&p, 3, &api("/a", &bearer(&old))), Outcome::Pause);
    assert_eq!(p.status(3), Some(401), "refused without waiting");
    assert_eq!(p.req(3).resumed, 0);
}

#[test]
fn a_flood_of_unknown_kids_holds_a_bounded_number_of_requests() {
    let w = world();
    let p = ready(&w, &validate_config(), 100);
    w.advance(1_000);
    let forged = unknown_kid_token();
    let held = crate::keystore::MAX_HELD_FOR_NEXT_FETCH as u32;
    for ctx in 2..2 + held {
        send(&p, ctx, &api("/a", &bearer(&forged)));
    }
    assert_eq!(p.waiting(), held as usize);
    send(&p, 2 + held, &api("/a", &bearer(&forged)));
    assert_eq!(p.status(2 + held), Some(401), "one more is refused at once");
    assert_eq!(p.waiting(), held as usize);
}

/// A validate and a login VM, ready, and the warm path's requests as the bench sends them: a
/// valid token as a bearer, as the `access_token` cookie, and as a logged-in browser sends it
/// (with the login VM's sealed session).
struct Warm {
    validate: Proxy,
    login: Proxy,
    bearer: Vec<(&'static str, String)>,
    cookie: Vec<(&'static str, String)>,
    session: Vec<(&'static str, String)>,
}

fn warm() -> Warm {
    let w = world();
    let validate = ready(&w, &validate_config(), 100);
    let login = ready(&w, &login_config(), 200);
    let t = valid_token();
    let sealed = {
        let v = login.vm.borrow();
        let sealer = v.sealer.clone().unwrap();
        let session = crate::session::Session {
            id_token: Some(t.clone()),
            refresh_token: Some("r".repeat(700)),
        };
        sealer.seal(&session, NOW, 3600).unwrap()
    };
    let mut cookie = api("/a", "");
    cookie.retain(|(n, _)| *n != "authorization");
    cookie.push(("cookie", format!("theme=dark; access_token={t}")));
    let mut session = cookie.clone();
    session.retain(|(n, _)| *n != "cookie");
    session.push((
        "cookie",
        format!("theme=dark; access_token={t}; access_token_session={sealed}"),
    ));
    Warm {
        validate,
        login,
        bearer: api("/a", &bearer(&t)),
        cookie,
        session,
    }
}

/// `cargo test --release --lib warm_path_cost -- --ignored --nocapture`: the engine's own work on
/// the warm path, natively through the fake host (no VM crossings), per request: headers,
/// response headers, done. The fake host's own bookkeeping is in every figure alike.
#[test]
#[ignore]
fn warm_path_cost() {
    let Warm {
        validate,
        login,
        bearer: bearer_req,
        cookie: cookie_req,
        session: session_req,
    } = warm();
    let n: u32 = std::env::var("WARM_N")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    // `WARM_ONLY="validate, bearer"` runs one scenario (for `perf record`).
    let only = std::env::var("WARM_ONLY").ok();
    let run = |name: &str, p: &Proxy, h: &[(&'static str, String)]| {
        if only.as_deref().is_some_and(|o| o != name) {
            return;
        }
        // Warm the cache.
        assert_eq!(send(p, 5, h), Outcome::Continue, "{name}");
        p.respond(5, 200);
        p.end(5);
        let start = std::time::Instant::now();
        for i in 0..n {
            let ctx = 10 + i;
            assert_eq!(send(p, ctx, h), Outcome::Continue);
            p.respond(ctx, 200);
            p.end(ctx);
        }
        println!("{name}: {:?} per request", start.elapsed() / n);
    };
    run("validate, bearer", &validate, &bearer_req);
    run("validate, cookie", &validate, &cookie_req);
    run("login, session", &login, &session_req);
    run("login, bearer", &login, &bearer_req);
}

#[test]
fn an_issuer_refusal_logs_the_token_of_a_renamed_cookie() {
    let w = world();
    let mut config = login_config();
    config["cookie"] = json!({"name": "tok"});
    let p = ready(&w, &config, 100);
    let mut c = claims(keycloak_claims());
    c.issuer = Some("https://elsewhere.example.com/realms/x".into());
    let t = rsa().sign(c).unwrap();
    let mut h = api("/a", "");
    h.retain(|(n, _)| *n != "authorization");
    h.push(("cookie", format!("tok={t}")));
    send(&p, 2, &h);
    assert_eq!(p.status(2), Some(401));
    assert!(
        p.host
            .logged("the token has iss \"https://elsewhere.example.com/realms/x\""),
        "the log line names the token's issuer"
    );
}

/// The warm path crosses into the host no more than the bench's floor filters do (bench/noop:
/// the header map read once, the clock, the headers set): a cached token costs three host
/// calls, a login session six, and the response and the stream's end none of their own.
#[test]
fn the_warm_path_makes_only_the_floors_host_calls() {
    let Warm {
        validate,
        login,
        bearer: bearer_req,
        cookie: cookie_req,
        session: mut session_req,
    } = warm();
    // Envoy's own: untrusted, it leaves the scheme to the connection, which nothing here needs.
    session_req.push(("x-forwarded-proto", "http".into()));
    let calls = |p: &Proxy, h: &[(&'static str, String)]| {
        // The first request fills the cache; the second is the warm path.
        send(p, 5, h);
        p.respond(5, 200);
        p.end(5);
        p.host.tracing.set(true);
        assert_eq!(send(p, 6, h), Outcome::Continue);
        p.respond(6, 200);
        p.end(6);
        p.host.tracing.set(false);
        p.host.trace.take()
    };
    let validate_calls = ["request_headers", "now_ms", "set_request_header x-user"];
    assert_eq!(calls(&validate, &bearer_req), validate_calls);
    assert_eq!(calls(&validate, &cookie_req), validate_calls);
    assert_eq!(
        calls(&login, &session_req),
        [
            "request_headers",
            "now_ms",
            "set_request_header authorization",
            "set_request_header x-user",
            "set_request_header cookie",
            "response_status",
        ]
    );
}

/// A validate-mode request that goes on at once (the warm path) leaves no state behind; one that
/// waits for the key set, or is refused, keeps its state until its stream ends.
#[test]
fn only_a_validate_request_that_waits_keeps_state() {
    let w = world();
    let token = valid_token();
    let waiting = Proxy::new(&w, &validate_config(), 100);
    assert_eq!(
        send(&waiting, 2, &api("/a", &bearer(&token))),
        Outcome::Pause
    );
    assert_eq!(waiting.vm.borrow().requests.len(), 1);
    assert_eq!(waiting.vm.borrow().waiters.len(), 1);
    waiting.tick();
    let call = waiting
        .open_calls()
        .into_iter()
        .find(|c| c.path() == JWKS_PATH)
        .unwrap();
    waiting.answer(call.token, 200, &jwks_body());
    assert_eq!(waiting.req(2).resumed, 1);
    assert_eq!(waiting.req(2).header("x-user"), Some("alice".into()));
    waiting.end(2);
    assert!(waiting.vm.borrow().requests.is_empty());

    let p = ready(&w, &validate_config(), 100);
    assert_eq!(send(&p, 3, &api("/a", &bearer(&token))), Outcome::Continue);
    assert_eq!(p.req(3).header("x-user"), Some("alice".into()));
    assert!(p.vm.borrow().requests.is_empty());
    assert_eq!(send(&p, 4, &api("/a", "Bearer x.y.z")), Outcome::Pause);
    assert_eq!(p.req(4).reply().map(|r| r.status), Some(401));
    assert_eq!(p.vm.borrow().requests.len(), 1);
    p.end(4);
    assert!(p.vm.borrow().requests.is_empty());
}

/// An untrusted `x-forwarded-proto` leaves the scheme to the connection (Envoy copies a client's
/// header into `:scheme`): a redirect is built with the connection's, asked then and only once.
#[test]
fn a_redirect_takes_the_connections_scheme_when_x_forwarded_proto_is_not_trusted() {
    let w = world();
    let p = ready(&w, &login_config(), 100);
    let mut h = page("/productpage", "");
    h.push(("x-forwarded-proto", "https".into()));
    for (ctx, tls, scheme) in [(2, false, "http"), (3, true, "https")] {
        p.host.tls.set(tls);
        p.host.tracing.set(true);
        assert_eq!(send(&p, ctx, &h), Outcome::Pause);
        p.host.tracing.set(false);
        let asked = p.host.trace.take();
        assert_eq!(
            asked.iter().filter(|c| *c == "connection_is_tls").count(),
            1,
            "{asked:?}"
        );
        let reply = p.req(ctx).reply().cloned().unwrap();
        assert_eq!(reply.status, 302);
        let location = reply.header("location").unwrap();
        assert!(
            location.contains(&format!(
                "redirect_uri={scheme}%3A%2F%2Fbookinfo.example.com%2Fcallback"
            )),
            "{location}"
        );
        let secure = reply
            .headers
            .iter()
            .any(|(n, v)| n == "set-cookie" && v.contains("Secure"));
        assert_eq!(
            secure, tls,
            "the transaction cookie is Secure over TLS only"
        );
    }
}
