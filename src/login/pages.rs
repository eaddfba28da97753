//! Login-mode replies to the browser: the redirect to log in (L1), logout (L6), a 401 from the
//! service (L7), and the error page.

use super::*;

/// L1: 302 to the authorization endpoint, with a sealed transaction cookie.
pub fn start_login(env: &Env, req: &Request, rng: &mut dyn Random, clears: Vec<String>) -> Reply {
    let Some((origin, _)) = env.origin(req) else {
        return wrong_host(req, clears);
    };
    let (Some(state), Some(nonce), Some(verifier)) =
        (random_string(rng), random_string(rng), random_string(rng))
    else {
        return error_page(500, "The login could not be started.", &req.request_id);
    };
    let redirect_uri = format!("{origin}{}", env.login.callback_path);
    let path = safe_local_path(&req.path).unwrap_or_else(|| "/".into());
    let tx = Transaction {
        state: state.clone(),
        nonce: nonce.clone(),
        verifier: verifier.clone(),
        path,
        redirect_uri: redirect_uri.clone(),
    };
    let Some(sealed) = env.sealer.seal(&tx, env.now, session::TRANSACTION_TTL) else {
        return error_page(500, "The login could not be started.", &req.request_id);
    };
    let scope = env.login.scopes.join(" ");
    let challenge = pkce_challenge(&verifier);
    let mut location = env.login.authorization_endpoint.clone();
    location.append_pairs(&[
        ("response_type", "code"),
        ("client_id", env.client_id()),
        ("redirect_uri", &redirect_uri),
        ("scope", &scope),
        ("state", &state),
        ("nonce", &nonce),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
    ]);

    let a = env.attrs(req).for_transaction();
    let mut cookies = clears;
    cookies.extend(stale_transactions(env, req, &a));
    let mut cookies = web::without_repeats(cookies);
    cookies.push(session::set_cookie(
        &env.names.transaction(&state),
        &sealed,
        session::TRANSACTION_TTL,
        &a,
    ));
    redirect(location.as_str(), cookies).counting(Event::LoginStarted)
}

/// Clears transaction cookies that no longer open, and the oldest ones beyond the bound.
fn stale_transactions(env: &Env, req: &Request, a: &Attributes) -> Vec<String> {
    let mut live = Vec::new();
    let mut out = Vec::new();
    // Bounded work and a bounded answer, however many transaction cookies a request carries.
    let transactions = web::cookies(&req.cookies)
        .filter(|(name, _)| env.names.is_transaction(name))
        .take(MAX_CLEARED_TRANSACTIONS * 2);
    for (name, value) in transactions {
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        let opens = std::str::from_utf8(value)
            .ok()
            .and_then(|v| env.sealer.open::<Transaction>(v, env.now))
            .is_some();
        if opens {
            live.push(name);
        } else {
            out.push(session::clear_cookie(name, a));
        }
    }
    // Browsers list older cookies first; keep room for the new one.
    let excess = live.len().saturating_sub(session::MAX_TRANSACTIONS - 1);
    out.extend(
        live.iter()
            .take(excess)
            .map(|n| session::clear_cookie(n, a)),
    );
    out.truncate(MAX_CLEARED_TRANSACTIONS);
    out
}

/// 400 for a request whose `Host` is not one of `public_origins` (or is unusable): no redirect
/// is ever built from it.
pub(super) fn wrong_host(req: &Request, clears: Vec<String>) -> Reply {
    error_page(
        400,
        "This site is not served under the host name in the request.",
        &req.request_id,
    )
    .counting(Event::CallbackFailed("host"))
    .with_cookies(clears)
}

pub(super) fn redirect(location: &str, cookies: Vec<String>) -> Reply {
    Reply {
        status: 302,
        headers: vec![
            ("location".to_string(), location.to_string()),
            ("cache-control".to_string(), "no-store".to_string()),
        ],
        body: Vec::new(),
        events: Vec::new(),
    }
    .with_cookies(cookies)
}

/// A same-origin path to send the browser back to, or `None` (L2: never another host).
pub fn safe_local_path(path: &str) -> Option<String> {
    if path.len() > 2048 || !path.starts_with('/') {
        return None;
    }
    if path
        .chars()
        .any(|c| c.is_control() || c == '\\' || c.is_whitespace())
    {
        return None;
    }
    // What a browser or the service might make of it, as it is and decoded once and twice (a
    // double-encoded `%252F` must not slip through either): no `//host`, `/\host` or scheme, no
    // control character, and no dot segment that turns it into `//host` once resolved.
    let once = percent_decode(path);
    let twice = percent_decode(&once);
    for candidate in [path, once.as_str(), twice.as_str()] {
        if candidate.starts_with("//")
            || candidate.contains('\\')
            || candidate.chars().any(char::is_control)
            || !resolves_locally(candidate)
        {
            return None;
        }
    }
    Some(path.to_string())
}

/// Resolved as a browser resolves a `Location` (WHATWG URL's path state), `path` stays on this
/// origin and its path does not start with `//`: `/.//evil.com` and `/a/..//evil.com` resolve to
/// `//evil.com`, a step from another host for any page that echoes its path into a redirect.
/// A path that starts with one `/` and holds no `\` moves only by its dot segments, also
/// escaped (`%2e`), which end at the first `?` or `#`.
fn resolves_locally(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    // `//host`, and `\` which a browser reads as `/`.
    if rest.starts_with('/') || path.contains('\\') {
        return false;
    }
    let path_part = rest.split(['?', '#']).next().unwrap_or_default();
    // WHATWG pops any segment for `..`; some parsers (rust-url among them) keep a Windows drive
    // letter (`c:`, `c|`) even in an http URL. Local only if local both ways.
    [false, true]
        .iter()
        .all(|keep_drive_letters| stays_rooted(path_part, *keep_drive_letters))
}

/// The path `/` + `rest` with its dot segments resolved does not start with `//`.
fn stays_rooted(rest: &str, keep_drive_letters: bool) -> bool {
    let dots = |segment: &str| match segment.to_ascii_lowercase().replace("%2e", ".").as_str() {
        "." => 1,
        ".." => 2,
        _ => 0,
    };
    let drive_letter = |segment: &str| {
        let b = segment.as_bytes();
        b.len() == 2
            && b.first().is_some_and(u8::is_ascii_alphabetic)
            && matches!(b.get(1), Some(b':' | b'|'))
    };
    let mut out: Vec<&str> = Vec::new();
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match dots(segment) {
            2 => {
                if !(keep_drive_letters && out.last().is_some_and(|s| drive_letter(s))) {
                    out.pop();
                }
                if last {
                    out.push("");
                }
            }
            1 if last => out.push(""),
            1 => {}
            _ => out.push(segment),
        }
    }
    !(out.len() > 1 && out.first() == Some(&""))
}

/// Every `%XX` decoded and nothing else changed (`+` and `&` stay as they are); bytes that do not
/// form UTF-8 become U+FFFD.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |i: usize| bytes.get(i).and_then(|b| char::from(*b).to_digit(16));
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match (b, hex(i + 1), hex(i + 2)) {
            (b'%', Some(high), Some(low)) => {
                out.push(u8::try_from(high * 16 + low).unwrap_or(b'%'));
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// L6: clear every cookie and send the browser to the end-session endpoint.
/// The end-session redirect carries a fresh `state` (L6+: some providers send the browser back
/// only with one); the ID token hint is sent even when it has expired (OpenID Connect RP-Initiated
/// Logout allows it, and Keycloak and glewlwyd accept it).
pub fn logout(env: &Env, req: &Request, rng: &mut dyn Random) -> Reply {
    let id_token = env.session(req).and_then(|s| s.id_token);
    let cookies = env.clear_all(req);
    let post_logout = if env.login.post_logout_redirect.starts_with('/') {
        match env.origin(req) {
            Some((origin, _)) => format!("{origin}{}", env.login.post_logout_redirect),
            None if !env.login.public_origins.is_empty() => return wrong_host(req, cookies),
            None => env.login.post_logout_redirect.clone(),
        }
    } else {
        env.login.post_logout_redirect.clone()
    };
    let Some(endpoint) = &env.login.end_session_endpoint else {
        return redirect(&post_logout, cookies).counting(Event::Logout);
    };
    let mut location = endpoint.clone();
    let state = random_string(rng);
    let mut pairs: Vec<(&str, &str)> = Vec::with_capacity(4);
    if let Some(hint) = &id_token {
        pairs.push(("id_token_hint", hint));
    }
    pairs.push(("post_logout_redirect_uri", &post_logout));
    pairs.push(("client_id", env.client_id()));
    if let Some(state) = &state {
        pairs.push(("state", state));
    }
    location.append_pairs(&pairs);
    redirect(location.as_str(), cookies).counting(Event::Logout)
}

/// L7: the service answered a page request with 401. `None`: let the 401 through.
pub fn upstream_401(env: &Env, req: &Request, rng: &mut dyn Random) -> Option<Reply> {
    if !req.is_page() {
        return None;
    }
    let reply = match env.login.on_upstream_401 {
        Upstream401::Pass => return None,
        Upstream401::Logout => logout(env, req, rng),
        Upstream401::Refresh if can_refresh_first(env, req) => refresh_first(env, req),
        Upstream401::Refresh | Upstream401::Login => start_login(env, req, rng, env.clear_all(req)),
    };
    Some(reply.counting(Event::Upstream401))
}

/// How long a refresh-first (L7, `refresh`) is remembered: a second 401 within it logs in.
pub const REFRESH_FIRST_WINDOW: u64 = 60;

fn can_refresh_first(env: &Env, req: &Request) -> bool {
    env.session(req).is_some_and(|s| s.refresh_token.is_some())
        && web::cookie(&req.cookies, &env.names.retried).is_none()
}

/// L7 with `refresh`: back to the same page without the access token, so that the next request
/// refreshes with the session's refresh token (no round trip to the provider's pages).
fn refresh_first(env: &Env, req: &Request) -> Reply {
    let a = env.attrs(req);
    let mut cookies = session::clear_chunked(&env.names.access, &a, &req.cookies);
    cookies.push(session::set_cookie(
        &env.names.retried,
        "1",
        REFRESH_FIRST_WINDOW,
        &a,
    ));
    let target = safe_local_path(&req.path).unwrap_or_else(|| "/".into());
    redirect(&target, cookies)
}

/// A small, readable HTML error page with the request id.
pub fn error_page(status: u32, message: &str, request_id: &str) -> Reply {
    let body = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Sign-in problem</title></head>\
         <body><h1>Sign-in problem</h1><p>{}</p><p><a href=\"/\">Start again</a></p>\
         <p><small>Request id: {}</small></p></body></html>\n",
        html_escape(message),
        html_escape(request_id)
    );
    Reply {
        status,
        headers: vec![
            ("content-type".into(), "text/html; charset=utf-8".into()),
            ("cache-control".into(), "no-store".into()),
        ],
        body: body.into_bytes(),
        events: Vec::new(),
    }
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::login::testing::*;
    use crate::testkit::*;
    use serde_json::json;

    #[test]
    fn a_page_without_session_goes_to_the_public_authorize_endpoint() {
        let f = fixture();
        let mut req = page("/productpage?u=normal", "");
        req.scheme = crate::web::Scheme::Https;
        let reply = reply_of(decide(&f.env(), &req, &mut Counter(0), true));
        assert_eq!(reply.status, 302);
        let location = reply.header("location").unwrap();
        assert!(location
            .starts_with("https://sso.example.com/realms/dev/protocol/openid-connect/auth?"));
        let q = query(location);
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["client_id"], "productpage");
        assert!(
            q["state"].as_str().is_some_and(|s| s.len() >= 32),
            "L6+: a state"
        );
        assert_eq!(q["redirect_uri"], "https://bookinfo.example.com/callback");
        assert_eq!(q["scope"], "openid profile email");
        assert_eq!(q["code_challenge_method"], "S256");
        let pairs = cookie_pairs(&reply);
        assert_eq!(pairs.len(), 1);
        let (name, value, attrs) = &pairs[0];
        let tx: Transaction = f.sealer.open(value, NOW).unwrap();
        assert_eq!(q["state"], tx.state.as_str());
        assert_eq!(q["nonce"], tx.nonce.as_str());
        assert_eq!(q["code_challenge"], pkce_challenge(&tx.verifier).as_str());
        assert_eq!(tx.path, "/productpage?u=normal");
        assert_eq!(tx.redirect_uri, "https://bookinfo.example.com/callback");
        assert_eq!(name, &f.names.transaction(&tx.state));
        assert!(
            attrs.contains("HttpOnly") && attrs.contains("Max-Age=600") && attrs.contains("Secure")
        );
        assert!(f.sealer.open::<Transaction>(value, NOW + 601).is_none());
    }

    #[test]
    fn forwarded_proto_wins_over_scheme() {
        let f = fixture();
        let mut req = page("/", "");
        req.scheme = crate::web::Scheme::Https; // as the http handler derives it from x-forwarded-proto
        let reply = reply_of(decide(&f.env(), &req, &mut Counter(0), true));
        assert_eq!(
            query(reply.header("location").unwrap())["redirect_uri"],
            "https://bookinfo.example.com/callback"
        );
        req.host = "evil.com/x".into();
        assert_eq!(
            reply_of(decide(&f.env(), &req, &mut Counter(0), true)).status,
            400
        );
    }

    #[test]
    fn two_tabs_get_two_transactions_and_stale_ones_are_cleared() {
        let f = fixture();
        let (tx1, c1) = begin(&f, "/a");
        let reply = reply_of(decide(&f.env(), &page("/b", &c1), &mut Counter(50), true));
        let pairs = cookie_pairs(&reply);
        assert_eq!(pairs.len(), 1, "the first tab's cookie is kept");
        assert_ne!(pairs[0].0, f.names.transaction(&tx1.state));

        // Garbage and expired transactions are cleared; live ones beyond the bound too.
        let mut header = vec!["access_token_tx_garbage=xyz".to_string()];
        let mut rng = Counter(100);
        for i in 0..4 {
            let r = reply_of(decide(
                &f.env(),
                &page(&format!("/{i}"), ""),
                &mut rng,
                true,
            ));
            let p = cookie_pairs(&r);
            header.push(format!("{}={}", p[0].0, p[0].1));
        }
        let reply = reply_of(decide(
            &f.env(),
            &page("/new", &header.join("; ")),
            &mut rng,
            true,
        ));
        let pairs = cookie_pairs(&reply);
        let cleared: Vec<_> = pairs
            .iter()
            .filter(|(_, v, a)| v.is_empty() && a.contains("Max-Age=0"))
            .collect();
        assert_eq!(
            cleared.len(),
            2,
            "garbage + the oldest of four live ones: {pairs:?}"
        );
        assert_eq!(pairs.len(), 3, "and the new transaction");
        assert!(cleared
            .iter()
            .any(|(n, _, _)| n == "access_token_tx_garbage"));
    }

    #[test]
    fn public_origins_decide_every_redirect() {
        let f = Fixture::new(config_with(|v| {
            v["public_origins"] = json!(["https://bookinfo.example.com"]);
        }));
        // The request reached the sidecar over plain http: the configured origin still decides.
        let r = reply_of(decide(&f.env(), &page("/p", ""), &mut Counter(0), true));
        assert_eq!(r.status, 302);
        let q = query(r.header("location").unwrap());
        assert_eq!(q["redirect_uri"], "https://bookinfo.example.com/callback");
        assert!(cookie_pairs(&r)[0].2.contains("Secure"));
        let mut evil = page("/p", "");
        evil.host = "evil.example".into();
        let r = reply_of(decide(&f.env(), &evil, &mut Counter(0), true));
        assert_eq!(r.status, 400);
        assert!(r.header("location").is_none());
        assert!(cookie_pairs(&r).iter().all(|(_, v, _)| v.is_empty()));
        let mut out = page("/logout", "");
        out.host = "evil.example".into();
        let r = reply_of(decide(&f.env(), &out, &mut Counter(0), true));
        assert_eq!(r.status, 400);
        assert!(r.header("location").is_none());
        let r = reply_of(decide(
            &f.env(),
            &page("/logout", ""),
            &mut Counter(0),
            true,
        ));
        let q = query(r.header("location").unwrap());
        assert_eq!(
            q["post_logout_redirect_uri"],
            "https://bookinfo.example.com/"
        );
        let mut cb = page("/callback?code=c&state=s", "");
        cb.host = "evil.example".into();
        assert_eq!(
            reply_of(decide(&f.env(), &cb, &mut Counter(0), true)).status,
            400
        );
    }

    #[test]
    fn a_thousand_junk_transactions_get_a_bounded_answer() {
        let f = fixture();
        let junk: Vec<String> = (0..1000)
            .map(|i| format!("access_token_tx_{i:08}=junk{i}"))
            .collect();
        let cookies = format!("access_token=expired; {}", junk.join("; "));
        let r = reply_of(decide(
            &f.env(),
            &page("/", &cookies),
            &mut Counter(0),
            true,
        ));
        assert_eq!(r.status, 302);
        let sets = r.headers.iter().filter(|(n, _)| n == "set-cookie").count();
        assert!(sets <= MAX_CLEARED_TRANSACTIONS + 4, "{sets} Set-Cookies");
        let r = reply_of(decide(
            &f.env(),
            &page("/logout", &cookies),
            &mut Counter(0),
            true,
        ));
        let sets = r.headers.iter().filter(|(n, _)| n == "set-cookie").count();
        assert!(sets <= MAX_CLEARED_TRANSACTIONS + 4, "{sets} Set-Cookies");
    }

    /// Fuzzing found these (docs/fuzzing.md): dot segments that resolve to `//host`, and checks
    /// of the decoded path that stopped at the first `&` (it was decoded as a form value).
    #[test]
    fn the_return_path_never_resolves_to_another_host() {
        for bad in [
            "/..//evil.com",
            "/.//evil.com",
            "/a/..//evil.com",
            "/%2e%2e//evil.com",
            "/%2E//evil.com",
            "/.%2F/evil.com",
            "/.%252F/evil.com",
            "/x&%5Cevil.com",
            "/x&%0d%0aSet-Cookie:%20a=b",
            "/x&%2509",
        ] {
            assert_eq!(safe_local_path(bad), None, "{bad:?}");
        }
        for good in [
            "/a/b//c",
            "/a/./b",
            "/a/../b",
            "/a&b=%2F",
            "/x?y=1+2&z=%26",
            "/.well-known/x",
        ] {
            assert_eq!(safe_local_path(good).as_deref(), Some(good));
        }
    }

    /// The dot-segment resolution agrees with the WHATWG parser (the `url` crate, as browsers).
    #[test]
    fn resolves_dot_segments_as_a_browser_does() {
        let base = url::Url::parse("http://origin.invalid/").unwrap();
        let mut paths: Vec<String> = Vec::new();
        let pieces = [
            "a", ".", "..", "", "%2e", "%2E.", ".%2e", "%2e%2e", "b?c/../", "x#/..//y", "c:", "d|",
        ];
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    paths.push(format!("/{a}/{b}/{c}"));
                    paths.push(format!("/{a}/{b}"));
                    paths.push(format!("/{a}{b}/{c}/"));
                }
            }
        }
        for path in &paths {
            let browser = base.join(path).is_ok_and(|u| {
                u.host_str() == Some("origin.invalid") && !u.path().starts_with("//")
            });
            // At least as strict as the reference (which keeps drive letters, unlike WHATWG).
            assert!(browser || !resolves_locally(path), "{path}");
            if !path.contains([':', '|']) {
                assert_eq!(resolves_locally(path), browser, "{path}");
            }
        }
    }

    #[test]
    fn the_return_path_is_always_local() {
        for bad in [
            "//evil.com",
            "/\\evil.com",
            "https://evil.com",
            "/%2F%2Fevil.com",
            "/%2fevil.com",
            "/%5Cevil.com",
            "/%252F%252Fevil.com",
            "evil.com",
            "/\t/evil.com",
            "",
            "/a\r\nb",
            // Found by fuzzing: rust-url keeps `a:` (a Windows drive letter) for `..`.
            "/.//a:/../..",
        ] {
            assert_eq!(safe_local_path(bad), None, "{bad:?}");
        }
        for good in [
            "/",
            "/productpage?u=normal",
            "/a/b//c",
            "/a?next=//x",
            "/%C3%A9",
        ] {
            assert_eq!(safe_local_path(good).as_deref(), Some(good));
        }
        // Even a transaction that somehow held a foreign target goes home instead.
        let f = fixture();
        let (mut tx, cookie) = begin(&f, "/");
        tx.path = "//evil.com".into();
        let body = token_body(&valid_token(), &id_token(&tx.nonce, "productpage"), None);
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
        assert_eq!(r.header("location"), Some("/"));
        let r = reply_of(decide(
            &f.env(),
            &page("//evil.com/x", ""),
            &mut Counter(0),
            true,
        ));
        let (_, value, _) = cookie_pairs(&r).pop().unwrap();
        assert_eq!(f.sealer.open::<Transaction>(&value, NOW).unwrap().path, "/");
    }

    #[test]
    fn logout_clears_everything_and_ends_the_provider_session() {
        let f = fixture();
        let s = Session {
            id_token: Some("the-id-token".into()),
            refresh_token: Some("r".into()),
        };
        let cookies = format!(
            "access_token={}; {}; access_token_tx_abcdefgh=x",
            valid_token(),
            session_cookie(&f, &s)
        );
        let r = reply_of(decide(
            &f.env(),
            &page("/logout", &cookies),
            &mut Counter(0),
            true,
        ));
        assert_eq!(r.status, 302);
        let location = r.header("location").unwrap();
        assert!(location
            .starts_with("https://sso.example.com/realms/dev/protocol/openid-connect/logout?"));
        let q = query(location);
        assert_eq!(q["id_token_hint"], "the-id-token");
        assert_eq!(
            q["post_logout_redirect_uri"],
            "http://bookinfo.example.com/"
        );
        assert_eq!(q["client_id"], "productpage");
        let pairs = cookie_pairs(&r);
        for name in [
            "access_token",
            "access_token_session",
            "access_token_tx_abcdefgh",
        ] {
            assert!(
                pairs
                    .iter()
                    .any(|(n, v, a)| n == name && v.is_empty() && a.contains("Max-Age=0")),
                "{name}"
            );
        }
    }

    #[test]
    fn upstream_401_follows_the_setting() {
        let cookies = format!("access_token={}", valid_token());
        let f = fixture();
        let r = upstream_401(&f.env(), &page("/productpage", &cookies), &mut Counter(0)).unwrap();
        assert_eq!(r.status, 302);
        assert!(r
            .header("location")
            .unwrap()
            .contains("/protocol/openid-connect/auth?"));
        assert!(cookie_pairs(&r)
            .iter()
            .any(|(n, v, _)| n == "access_token" && v.is_empty()));
        let mut api = page("/api", &cookies);
        api.method = "POST".into();
        assert!(
            upstream_401(&f.env(), &api, &mut Counter(0)).is_none(),
            "API calls keep their 401"
        );

        let f = Fixture::new(config_with(|v| v["on_upstream_401"] = json!("logout")));
        let r = upstream_401(&f.env(), &page("/", &cookies), &mut Counter(0)).unwrap();
        assert!(r
            .header("location")
            .unwrap()
            .contains("/protocol/openid-connect/logout?"));
        let f = Fixture::new(config_with(|v| v["on_upstream_401"] = json!("pass")));
        assert!(upstream_401(&f.env(), &page("/", &cookies), &mut Counter(0)).is_none());
    }
}
