//! Login mode (L1–L7): the browser flow, decided in plain Rust. The proxy-wasm layer carries out
//! what these functions return: forward the request, reply, dispatch a token call, or wait.

use base64::Engine as _;
use std::borrow::Cow;

use crate::keystore::Refetch;

use crate::config::{Config, LoginConfig, TokenRules, Upstream401};
use crate::jwks::KeySet;
use crate::metrics::Event;
use crate::replay;
use crate::session::{self, Attributes, Credential, Names, Sealer, Session, Transaction};
use crate::token::{self, TokenError, Verified};
use crate::validate::claim_headers;
use crate::web::{self, Reply};

pub mod backchannel;
mod callback;
mod pages;
mod refresh;
#[cfg(test)]
pub mod testing;

pub use backchannel::{ended_reply, replayed_reply, Ending, Endings};
pub use callback::{finish_exchange, keys_missing_page, provider_error_code, replayed, Exchanged};
pub use pages::{error_page, logout, safe_local_path, start_login, upstream_401};
pub use refresh::{finish_refresh, refresh_slot, Refreshed, REFRESH_SLOTS};

/// Randomness for state, nonce and verifier; injected so tests control it.
pub trait Random {
    /// False when no randomness could be had: the caller then fails closed.
    fn fill(&mut self, buf: &mut [u8]) -> bool;
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn random_string(rng: &mut dyn Random) -> Option<String> {
    let mut buf = [0u8; 32];
    rng.fill(&mut buf).then(|| b64url(&buf))
}

pub fn pkce_challenge(verifier: &str) -> String {
    b64url(&hmac_sha256::Hash::hash(verifier.as_bytes()))
}

/// A login-mode request, as much of it as the decisions need: borrowed from the request's header
/// map while it is decided, owned ([`Request::into_owned`]) when it is kept (it waits, a call is
/// made for it, or its response may need it).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: Cow<'a, str>,
    /// Path with its query.
    pub path: Cow<'a, str>,
    /// `:scheme`, or `x-forwarded-proto` when the configuration trusts it.
    pub scheme: web::Scheme,
    pub host: Cow<'a, str>,
    pub accept: Option<Cow<'a, str>>,
    pub sec_fetch_mode: Option<Cow<'a, str>>,
    pub sec_fetch_dest: Option<Cow<'a, str>>,
    pub requested_with: Option<Cow<'a, str>>,
    pub cookies: Cow<'a, [u8]>,
    /// Every `Authorization` header (two different ones are refused, B6).
    pub authorizations: Vec<Cow<'a, [u8]>>,
    pub request_id: Cow<'a, str>,
    /// The body, read only for a back-channel logout (L8).
    pub body: Option<Vec<u8>>,
}

impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Cookies and credentials stay out; the path may carry a code, so only its length shows.
        write!(
            f,
            "Request({} [{} bytes of path] host {:?}, id {})",
            self.method,
            self.path.len(),
            self.host,
            self.request_id
        )
    }
}

impl Request<'_> {
    /// Its `Authorization` values, as B6's credential rules read them.
    pub fn authorization_values(&self) -> Vec<&[u8]> {
        self.authorizations.iter().map(|a| &**a).collect()
    }

    /// The same request, owned: kept past its headers callback.
    pub fn into_owned(self) -> Request<'static> {
        let own = |v: Option<Cow<str>>| v.map(|v| Cow::Owned(v.into_owned()));
        Request {
            method: Cow::Owned(self.method.into_owned()),
            path: Cow::Owned(self.path.into_owned()),
            scheme: self.scheme,
            host: Cow::Owned(self.host.into_owned()),
            accept: own(self.accept),
            sec_fetch_mode: own(self.sec_fetch_mode),
            sec_fetch_dest: own(self.sec_fetch_dest),
            requested_with: own(self.requested_with),
            cookies: Cow::Owned(self.cookies.into_owned()),
            authorizations: self
                .authorizations
                .into_iter()
                .map(|a| Cow::Owned(a.into_owned()))
                .collect(),
            request_id: Cow::Owned(self.request_id.into_owned()),
            body: self.body,
        }
    }

    /// A page request (L1): a browser navigation that can follow a redirect to the login page.
    /// `Sec-Fetch-*` decide when present; otherwise GET/HEAD whose `Accept` allows HTML.
    pub fn is_page(&self) -> bool {
        if self.method != "GET" && self.method != "HEAD" {
            return false;
        }
        if self
            .requested_with
            .as_deref()
            .is_some_and(|v| v.eq_ignore_ascii_case("XMLHttpRequest"))
        {
            return false;
        }
        if let Some(mode) = &self.sec_fetch_mode {
            let dest_ok = self
                .sec_fetch_dest
                .as_deref()
                .is_none_or(|d| matches!(d, "document" | "iframe" | "frame" | "embed" | "object"));
            return mode.eq_ignore_ascii_case("navigate") && dest_ok;
        }
        match &self.accept {
            None => true,
            Some(accept) => accepts_html(accept),
        }
    }

    /// The host, when it is a plausible host name (it ends up in `redirect_uri`).
    fn plausible_host(&self) -> Option<&str> {
        let host_ok = !self.host.is_empty()
            && self.host.len() <= 255
            && self.host.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']' | '_')
            });
        host_ok.then_some(&*self.host)
    }
}

/// What the decisions may ask about the request's connection: only a redirect or a cookie needs
/// it, so the warm path never does (it is a host call).
pub trait Connection {
    fn is_tls(&self) -> bool;
}

fn accepts_html(accept: &str) -> bool {
    accept.split(',').any(|item| {
        let mut parts = item.split(';');
        let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let refused = parts.any(|p| {
            let p = p.trim().replace(' ', "");
            p == "q=0" || p == "q=0.0" || p == "q=0.00" || p == "q=0.000"
        });
        !refused
            && matches!(
                media.as_str(),
                "text/html" | "text/*" | "*/*" | "application/xhtml+xml"
            )
    })
}

pub use crate::calls::TokenCall;

/// The request goes on to the service.
#[derive(Clone, PartialEq, Eq)]
pub struct Forward {
    /// The `Authorization` header to set: the verified token as the bearer (L4).
    pub authorization: String,
    /// The claim headers to set (B3), shared with the verified token's.
    pub claim_headers: crate::token::ClaimHeaders,
    /// The `Cookie` header the service sees: `None` to remove it.
    pub cookie_header: Option<Vec<u8>>,
    /// `Set-Cookie` values to add to the service's response (after a refresh).
    pub response_cookies: Vec<String>,
    pub events: Vec<Event>,
}

impl Forward {
    /// Every header it sets: the bearer, then the claim headers.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        std::iter::once(("authorization", self.authorization.as_str())).chain(
            self.claim_headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str())),
        )
    }
}

impl std::fmt::Debug for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers().map(|(n, _)| n).collect();
        write!(
            f,
            "Forward(sets {names:?}, {} response cookies, [redacted])",
            self.response_cookies.len()
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Continue(Forward),
    Reply(Reply),
    WaitForKeys,
    RefetchKeys,
    /// L8: a valid logout token: record `ending` (its `jti` once), then answer 200.
    EndSessions {
        ending: Ending,
    },
    /// L6+: revoke the refresh token (RFC 7009), then send `then` whatever the answer.
    Revoke {
        call: TokenCall,
        then: Reply,
    },
    /// L2: exchange the code, once `replay` is recorded (a state already used: [`replayed`]).
    Exchange {
        call: TokenCall,
        tx: Transaction,
        clears: Vec<String>,
        replay: replay::Claim,
    },
    /// L5: refresh the session. `slot` names the single-flight entry of this refresh token.
    Refresh {
        call: TokenCall,
        session: Session,
        slot: String,
    },
}

/// Everything the login decisions need besides the request.
pub struct Env<'a> {
    pub config: &'a Config,
    pub login: &'a LoginConfig,
    pub sealer: &'a Sealer,
    pub names: &'a Names,
    pub keys: Option<&'a KeySet>,
    /// Verified access tokens (the warm path); `None` checks every time.
    pub cache: token::CacheRef<'a>,
    /// Sessions ended by back-channel logouts (L8), when `backchannel_logout_path` is set.
    pub endings: Option<&'a dyn Endings>,
    /// Asked when the request's scheme is the connection's ([`web::Scheme::OfConnection`]).
    pub connection: &'a dyn Connection,
    pub now: u64,
}

impl Env<'_> {
    /// The browser-facing origin of a request (`scheme://host`) and whether it is https: the
    /// configured `public_origins` entry its `Host` names, or, with none configured, the
    /// request's scheme and `Host`. `None`: no redirect may be built for this request.
    fn origin(&self, req: &Request) -> Option<(String, bool)> {
        if self.login.public_origins.is_empty() {
            let host = req.plausible_host()?;
            let https = match req.scheme {
                web::Scheme::Http => false,
                web::Scheme::Https => true,
                web::Scheme::OfConnection => self.connection.is_tls(),
                web::Scheme::Other => return None,
            };
            let scheme = if https { "https" } else { "http" };
            return Some((format!("{scheme}://{}", host.to_ascii_lowercase()), https));
        }
        self.login
            .public_origins
            .iter()
            .find(|o| o.matches_host(&req.host))
            .map(|o| (o.as_url(), o.https))
    }

    fn attrs(&self, req: &Request) -> Attributes {
        let secure = match self.config.cookie.secure {
            crate::config::SecureCookie::Always => true,
            crate::config::SecureCookie::Never => false,
            crate::config::SecureCookie::Auto => match self.origin(req) {
                Some((_, https)) => https,
                None => self.is_https(req),
            },
        };
        Attributes::new(&self.config.cookie, secure)
    }

    /// Whether the request came over https (the connection asked only when it decides).
    fn is_https(&self, req: &Request) -> bool {
        match req.scheme {
            web::Scheme::Https => true,
            web::Scheme::OfConnection => self.connection.is_tls(),
            web::Scheme::Http | web::Scheme::Other => false,
        }
    }

    /// ID tokens: the issuer, and the client as their audience.
    fn id_token_rules(&self) -> TokenRules {
        TokenRules {
            issuer: self.config.rules.issuer.clone(),
            audiences: vec![self.client_id().to_string()],
            authorized_parties: Vec::new(),
            client_id_as_audience: None,
            clock_skew_seconds: self.config.rules.clock_skew_seconds,
        }
    }

    fn client_id(&self) -> &str {
        self.config.client_id.as_deref().unwrap_or_default()
    }

    fn session(&self, req: &Request) -> Option<Session> {
        let sealed = session::read_chunked(&req.cookies, &self.names.session)?;
        self.sealer.open::<Session>(&sealed, self.now)
    }

    /// A token call with the client's credentials (`client_secret_basic` or `_post`).
    fn token_call<'s>(&'s self, form: Vec<(&'s str, &'s str)>) -> TokenCall {
        self.client_call(&self.login.token_endpoint, form)
    }

    /// A call to one of the provider's endpoints, authenticated as the client.
    fn client_call(
        &self,
        endpoint: &crate::config::Endpoint,
        form: Vec<(&str, &str)>,
    ) -> TokenCall {
        let client = crate::calls::Client {
            id: self.client_id(),
            secret: self.login.client_secret.expose(),
            auth: self.login.client_auth,
        };
        crate::calls::client_call(endpoint, &client, form)
    }

    fn credential<'r>(&self, req: &'r Request, jar: &session::CookieRead<'r>) -> Credential<'r> {
        session::credential_in(&req.authorization_values(), jar)
    }

    /// L4 and B6: the verified token as the bearer, and as the one `cookie.name` cookie when the
    /// browser keeps its session in cookies; no other copy and no sealed cookie goes on.
    fn forward(
        &self,
        jar: &session::CookieRead,
        token: &str,
        verified: &Verified,
        as_cookie: bool,
    ) -> Forward {
        let mut bearer = String::with_capacity("Bearer ".len() + token.len());
        bearer.push_str("Bearer ");
        bearer.push_str(token);
        Forward {
            authorization: bearer,
            claim_headers: claim_headers(self.config, verified),
            cookie_header: jar.forwarded(self.names, as_cookie.then_some(token.as_bytes())),
            response_cookies: Vec::new(),
            events: Vec::new(),
        }
    }

    /// A verified token goes on (L4) if it passes its authorization rule (B7), else 403.
    /// `jar`: the request's `Cookie` header, read.
    fn admit(
        &self,
        req: &Request,
        jar: &session::CookieRead,
        token: &str,
        verified: &Verified,
        as_cookie: bool,
    ) -> Action {
        let path = &*req.path;
        match crate::rules::check(
            &self.config.access_rules,
            &req.method,
            path,
            &verified.claims,
        ) {
            Ok(()) => Action::Continue(self.forward(jar, token, verified, as_cookie)),
            Err(denied) => Action::Reply(crate::rules::forbidden(
                &denied,
                req.is_page(),
                &req.request_id,
            )),
        }
    }

    /// `Set-Cookie` values that clear every cookie of the filter the request carries.
    fn clear_all(&self, req: &Request) -> Vec<String> {
        let a = self.attrs(req);
        let mut out = session::clear_chunked(&self.names.access, &a, &req.cookies);
        out.extend(session::clear_chunked(
            &self.names.session,
            &a,
            &req.cookies,
        ));
        if web::cookie(&req.cookies, &self.names.retried).is_some() {
            out.push(session::clear_cookie(&self.names.retried, &a));
        }
        let tx_attrs = a.for_transaction();
        let transactions = web::cookies(&req.cookies)
            .filter(|(name, _)| self.names.is_transaction(name))
            .filter_map(|(name, _)| std::str::from_utf8(name).ok())
            .take(MAX_CLEARED_TRANSACTIONS);
        for name in transactions {
            out.push(session::clear_cookie(name, &tx_attrs));
        }
        web::without_repeats(out)
    }
}

/// Transaction cookies cleared in one response at most: a request stuffed with a thousand junk
/// ones must not get a thousand `Set-Cookie`s back (a front proxy would turn that into a 502).
pub const MAX_CLEARED_TRANSACTIONS: usize = 8;

/// Decides a login-mode request (claim headers already stripped, skip paths already passed).
pub fn decide<'r>(
    env: &Env,
    req: &Request,
    rng: &mut dyn Random,
    refetch: impl Into<Refetch<'r>>,
) -> Action {
    let refetch = refetch.into();
    let path = web::path_only(&req.path);
    if path == env.login.callback_path {
        return callback::callback(env, req);
    }
    if path == env.login.logout_path {
        return logout_and_revoke(env, req, rng);
    }
    if env.login.backchannel_logout_path.as_deref() == Some(path) {
        return backchannel::backchannel(env, req, refetch);
    }

    let mut clears = Vec::new();
    let mut invalid = None;
    // The sealed session is opened (AES key unwrap, AES-GCM, JSON) only where its content is
    // read: for a back-channel logout check, or a refresh. A request whose access token is valid
    // needs only to know that a session cookie is there.
    let jar = session::CookieRead::new(&req.cookies, env.names);
    let open = || {
        jar.session()
            .and_then(|s| env.sealer.open::<Session>(&s, env.now))
    };
    let session = env.endings.is_some().then(open).flatten();
    // L8: the provider ended this session: logged out here too, at its next request.
    if session
        .as_ref()
        .is_some_and(|s| backchannel::session_ended(env, s))
    {
        let clears = env.clear_all(req);
        return Action::Reply(
            unauthenticated(env, req, rng, clears, None).counting(Event::SessionEnded),
        );
    }
    match env.credential(req, &jar) {
        Credential::Conflict => return Action::Reply(conflicting_tokens(env, req, rng)),
        Credential::None => {}
        Credential::One {
            token, from_cookie, ..
        } => {
            let Some(keys) = env.keys else {
                return Action::WaitForKeys;
            };
            // The warm path: a token verified before, found by its bytes.
            let cached = token::cached_access_text(&token, env.cache, &env.config.rules, env.now);
            let checked = match &cached {
                Some((text, verified)) => Ok((&**text, verified.clone())),
                None => std::str::from_utf8(&token)
                    .map_err(|_| TokenError::Malformed)
                    .and_then(|token| {
                        token::verify_access(token, keys, env.cache, &env.config.rules, env.now)
                            .map(|v| (token, v))
                    }),
            };
            match checked {
                Ok((token, verified)) => {
                    let as_cookie = from_cookie || jar.has_session();
                    return env.admit(req, &jar, token, &verified, as_cookie);
                }
                Err(TokenError::UnknownKey)
                    if refetch.allows(std::str::from_utf8(&token).unwrap_or_default()) =>
                {
                    return Action::RefetchKeys
                }
                Err(e) => {
                    clears = env.clear_all(req);
                    invalid = Some(e);
                }
            }
        }
    }

    let session = match session {
        Some(s) => Some(s),
        None if env.endings.is_none() => open(),
        None => None,
    };
    match session {
        Some(session) if session.refresh_token.is_some() => refresh::refresh(env, session),
        _ => Action::Reply(unauthenticated(env, req, rng, clears, invalid)),
    }
}

/// L6, L6+: the logout redirect, after the refresh token is revoked when the provider has a
/// revocation endpoint (a failed revocation never blocks the logout).
fn logout_and_revoke(env: &Env, req: &Request, rng: &mut dyn Random) -> Action {
    let reply = logout(env, req, rng);
    let refresh_token = env.session(req).and_then(|s| s.refresh_token);
    match (refresh_token, &env.login.revocation_endpoint) {
        (Some(token), Some(endpoint)) if reply.status == 302 => {
            let call = env.client_call(
                endpoint,
                vec![
                    ("token", token.as_str()),
                    ("token_type_hint", "refresh_token"),
                ],
            );
            Action::Revoke { call, then: reply }
        }
        _ => Action::Reply(reply),
    }
}

/// B6: two different access tokens in one request. A page starts over with every cookie of the
/// filter cleared; anything else gets a 401.
fn conflicting_tokens(env: &Env, req: &Request, rng: &mut dyn Random) -> Reply {
    if req.is_page() {
        return start_login(env, req, rng, env.clear_all(req))
            .counting(Event::TokenRejected("conflict"));
    }
    crate::inbound::conflict_reply()
}

/// No valid session: a page goes to the login page (L1), anything else gets a 401 (V2, with
/// `error="invalid_token"` when a token was presented: L1+).
fn unauthenticated(
    env: &Env,
    req: &Request,
    rng: &mut dyn Random,
    clears: Vec<String>,
    invalid: Option<TokenError>,
) -> Reply {
    if !req.is_page() {
        let reply = match invalid {
            Some(e) => {
                web::unauthorized(Some(e.description())).counting(Event::TokenRejected(e.reason()))
            }
            None => web::unauthorized(None).counting(Event::TokenRejected("missing")),
        };
        return reply.with_cookies(clears);
    }
    start_login(env, req, rng, clears)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::login::testing::*;
    use crate::testkit::*;
    use jwt_simple::prelude::*;
    use serde_json::json;

    #[test]
    fn pages_and_api_calls() {
        assert!(page("/", "").is_page());
        let mut r = page("/", "");
        r.accept = None;
        assert!(r.is_page(), "no Accept");
        r.accept = Some("application/json".into());
        assert!(!r.is_page());
        r.accept = Some("text/html;q=0, application/json".into());
        assert!(!r.is_page());
        r.accept = Some("*/*".into());
        assert!(r.is_page(), "curl");
        r.sec_fetch_mode = Some("cors".into());
        r.sec_fetch_dest = Some("empty".into());
        assert!(
            !r.is_page(),
            "fetch() sends Accept */* but Sec-Fetch-Mode cors"
        );
        r.sec_fetch_mode = Some("navigate".into());
        r.sec_fetch_dest = Some("document".into());
        assert!(r.is_page());
        let mut post = page("/", "");
        post.method = "POST".into();
        assert!(!post.is_page());
        let mut xhr = page("/", "");
        xhr.requested_with = Some("XMLHttpRequest".into());
        assert!(!xhr.is_page());
    }

    #[test]
    fn api_calls_without_session_get_401_json() {
        let f = fixture();
        let mut req = page("/api/v1/products", "");
        req.method = "POST".into();
        let reply = reply_of(decide(&f.env(), &req, &mut Counter(0), true));
        assert_eq!(reply.status, 401);
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert!(reply.header("location").is_none());
    }

    #[test]
    fn a_valid_cookie_forwards_the_bearer_and_hides_sealed_cookies() {
        let f = fixture();
        let t = valid_token();
        let cookies = format!(
            "theme=dark; access_token={t}; access_token_session=sealed; access_token_tx_abc=x"
        );
        let Action::Continue(fwd) = decide(&f.env(), &page("/", &cookies), &mut Counter(0), true)
        else {
            panic!("expected continue")
        };
        assert_eq!(fwd.authorization, format!("Bearer {t}"));
        assert!(fwd.headers().any(|h| h == ("x-user", "alice")));
        assert_eq!(
            String::from_utf8(fwd.cookie_header.unwrap()).unwrap(),
            format!("theme=dark; access_token={t}")
        );
        assert!(fwd.response_cookies.is_empty());
    }

    #[test]
    fn only_the_verified_token_reaches_the_service() {
        let f = fixture();
        let t = valid_token();
        let forged = sign_rsa(claims(keycloak_claims())).replace('.', ".x");
        // Two different access tokens: refused, whichever order (B6).
        for cookies in [
            format!("access_token={t}; access_token={forged}"),
            format!("access_token={forged}; access_token={t}"),
        ] {
            let mut api = page("/api", &cookies);
            api.accept = Some("application/json".into());
            let r = reply_of(decide(&f.env(), &api, &mut Counter(0), true));
            assert_eq!(r.status, 401);
            assert!(r
                .header("www-authenticate")
                .unwrap()
                .contains("invalid_token"));
            // A page starts over, with the filter's cookies cleared.
            let r = reply_of(decide(
                &f.env(),
                &page("/", &cookies),
                &mut Counter(0),
                true,
            ));
            assert_eq!(r.status, 302);
            assert!(cookie_pairs(&r)
                .iter()
                .any(|(n, v, _)| n == "access_token" && v.is_empty()));
        }
        let mut bearer_and_cookie = page("/", &format!("access_token={forged}"));
        bearer_and_cookie.authorizations = vec![format!("Bearer {t}").into_bytes().into()];
        assert!(matches!(
            decide(&f.env(), &bearer_and_cookie, &mut Counter(0), true),
            Action::Reply(_)
        ));
        let mut two_headers = page("/", "");
        two_headers.authorizations = vec![
            format!("Bearer {t}").into_bytes().into(),
            format!("Bearer {forged}").into_bytes().into(),
        ];
        assert!(matches!(
            decide(&f.env(), &two_headers, &mut Counter(0), true),
            Action::Reply(_)
        ));
        // An identical copy and a forged chunk are dropped; the verified token goes on once.
        let cookies = format!("access_token={t}; a=1; access_token={t}; access_token_5=evil");
        let Action::Continue(fwd) = decide(&f.env(), &page("/", &cookies), &mut Counter(0), true)
        else {
            panic!()
        };
        assert_eq!(
            String::from_utf8(fwd.cookie_header.unwrap()).unwrap(),
            format!("access_token={t}; a=1")
        );
        // A bearer alone: no cookie is made up for it.
        let mut bearer = page("/", "a=1");
        bearer.authorizations = vec![format!("Bearer {t}").into_bytes().into()];
        let Action::Continue(fwd) = decide(&f.env(), &bearer, &mut Counter(0), true) else {
            panic!()
        };
        assert_eq!(fwd.cookie_header.as_deref(), Some(&b"a=1"[..]));
    }

    #[test]
    fn an_api_call_with_a_bad_token_is_told_invalid_token() {
        let f = fixture();
        let mut api = page("/api", "access_token=garbage");
        api.accept = Some("application/json".into());
        let r = reply_of(decide(&f.env(), &api, &mut Counter(0), true));
        assert_eq!(r.status, 401);
        assert!(
            r.header("www-authenticate")
                .unwrap()
                .starts_with("Bearer error=\"invalid_token\""),
            "{:?}",
            r.header("www-authenticate")
        );
        api.cookies = Vec::new().into();
        let r = reply_of(decide(&f.env(), &api, &mut Counter(0), true));
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    }

    #[test]
    fn cookies_sealed_under_a_retired_secret_still_open() {
        let old = fixture();
        let s = Session {
            id_token: None,
            refresh_token: Some("r".into()),
        };
        let sealed_by_old = session_cookie(&old, &s);
        let old_secret = old.config.clone();
        let _ = old_secret;
        let rotated = Fixture::new(config_with(|v| {
            let previous = v["session_secret"].clone();
            v["session_secret"] = json!(["Yc1C7n0Zb2k4PqWm8RtXv5Hs3Lf9JdGa6EoUiTyBwN0=", previous]);
        }));
        assert!(matches!(
            decide(
                &rotated.env(),
                &page("/", &sealed_by_old),
                &mut Counter(0),
                true
            ),
            Action::Refresh { .. }
        ));
        let replaced = Fixture::new(config_with(|v| {
            v["session_secret"] = json!(["Yc1C7n0Zb2k4PqWm8RtXv5Hs3Lf9JdGa6EoUiTyBwN0="]);
        }));
        let r = reply_of(decide(
            &replaced.env(),
            &page("/", &sealed_by_old),
            &mut Counter(0),
            true,
        ));
        assert_eq!(r.status, 302, "a retired secret no longer opens: L1");
        // New cookies are sealed with the first secret only.
        let fresh = rotated.sealer.seal(&s, NOW, 60).unwrap();
        assert_eq!(
            replaced.sealer.open::<Session>(&fresh, NOW),
            Some(s.clone())
        );
        assert_eq!(old.sealer.open::<Session>(&fresh, NOW), None);
    }

    #[test]
    fn rules_give_403_to_a_valid_session_that_lacks_a_role() {
        let f = Fixture::new(config_with(|v| {
            v["rules"] = json!([{"path": "/admin", "realm_roles": ["admin"]}]);
        }));
        let cookies = format!("access_token={}", valid_token());
        let r = reply_of(decide(
            &f.env(),
            &page("/admin/x", &cookies),
            &mut Counter(0),
            true,
        ));
        assert_eq!(r.status, 403);
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
        let mut api = page("/admin/x", &cookies);
        api.accept = Some("application/json".into());
        let r = reply_of(decide(&f.env(), &api, &mut Counter(0), true));
        assert_eq!(r.status, 403);
        assert!(r
            .header("www-authenticate")
            .unwrap()
            .contains("insufficient_scope"));
        assert!(matches!(
            decide(&f.env(), &page("/other", &cookies), &mut Counter(0), true),
            Action::Continue(_)
        ));
    }

    #[test]
    fn waits_for_keys_and_refetches_unknown_kids() {
        let f = fixture();
        let t = valid_token();
        let mut env = f.env();
        env.keys = None;
        let req = page("/", &format!("access_token={t}"));
        assert_eq!(
            decide(&env, &req, &mut Counter(0), true),
            Action::WaitForKeys
        );
        let other = other_rsa()
            .clone()
            .with_key_id("new")
            .sign(claims(keycloak_claims()))
            .unwrap();
        let req = page("/", &format!("access_token={other}"));
        assert_eq!(
            decide(&f.env(), &req, &mut Counter(0), true),
            Action::RefetchKeys
        );
        assert_eq!(
            reply_of(decide(&f.env(), &req, &mut Counter(0), false)).status,
            302
        );
    }
}
