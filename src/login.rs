//! Login mode (L1–L7): the browser flow, decided in plain Rust. The proxy-wasm layer carries out
//! what these functions return: forward the request, reply, dispatch a token call, or wait.

use base64::Engine as _;
use serde::Deserialize;
use url::form_urlencoded;

use crate::config::{ClientAuth, Config, LoginConfig, TokenRules, Upstream401};
use crate::jwks::KeySet;
use crate::metrics::Event;
use crate::replay;
use crate::session::{self, Attributes, Credential, Names, Sealer, Session, Transaction};
use crate::token::{self, TokenError, Verified};
use crate::validate::claim_headers;
use crate::web::{self, Reply};

/// Randomness for state, nonce and verifier; injected so tests control it.
pub trait Random {
    fn fill(&mut self, buf: &mut [u8]);
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn random_string(rng: &mut dyn Random) -> String {
    let mut buf = [0u8; 32];
    rng.fill(&mut buf);
    b64url(&buf)
}

pub fn pkce_challenge(verifier: &str) -> String {
    b64url(&hmac_sha256::Hash::hash(verifier.as_bytes()))
}

/// A login-mode request, as much of it as the decisions need (owned: a request may wait).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// Path with its query.
    pub path: String,
    /// `:scheme`, or `x-forwarded-proto` when the configuration trusts it.
    pub scheme: String,
    pub host: String,
    pub accept: Option<String>,
    pub sec_fetch_mode: Option<String>,
    pub sec_fetch_dest: Option<String>,
    pub requested_with: Option<String>,
    pub cookies: Vec<u8>,
    /// Every `Authorization` header (two different ones are refused, B6).
    pub authorizations: Vec<Vec<u8>>,
    pub request_id: String,
}

impl Request {
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

    /// `scheme://host`, when the host is a plausible host name (it ends up in `redirect_uri`).
    pub fn origin(&self) -> Option<String> {
        let host_ok = !self.host.is_empty()
            && self.host.len() <= 255
            && self.host.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']' | '_')
            });
        let scheme = self.scheme.to_ascii_lowercase();
        (host_ok && (scheme == "http" || scheme == "https"))
            .then(|| format!("{scheme}://{}", self.host.to_ascii_lowercase()))
    }

    pub fn is_https(&self) -> bool {
        self.scheme.eq_ignore_ascii_case("https")
    }
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

/// A call to the token endpoint, ready to dispatch through `cluster`.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenCall {
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl std::fmt::Debug for TokenCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenCall([redacted])")
    }
}

/// The request goes on to the service.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Forward {
    /// Headers to set: the bearer token and the claim headers.
    pub set_headers: Vec<(String, String)>,
    /// The `Cookie` header the service sees: `None` to remove it.
    pub cookie_header: Option<Vec<u8>>,
    /// `Set-Cookie` values to add to the service's response (after a refresh).
    pub response_cookies: Vec<String>,
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Continue(Forward),
    Reply(Reply),
    WaitForKeys,
    RefetchKeys,
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
    pub now: u64,
}

impl Env<'_> {
    /// The browser-facing origin of a request (`scheme://host`) and whether it is https: the
    /// configured `public_origins` entry its `Host` names, or, with none configured, the
    /// request's scheme and `Host`. `None`: no redirect may be built for this request.
    fn origin(&self, req: &Request) -> Option<(String, bool)> {
        if self.login.public_origins.is_empty() {
            return req.origin().map(|o| (o, req.is_https()));
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
                None => req.is_https(),
            },
        };
        Attributes::new(&self.config.cookie, secure)
    }

    fn client_id(&self) -> &str {
        self.config.client_id.as_deref().unwrap_or_default()
    }

    fn session(&self, req: &Request) -> Option<Session> {
        let sealed = session::read_chunked(&req.cookies, &self.names.session)?;
        self.sealer.open::<Session>(&sealed, self.now)
    }

    /// A token call with the client's credentials (`client_secret_basic` or `_post`).
    fn token_call<'s>(&'s self, mut form: Vec<(&'s str, &'s str)>) -> TokenCall {
        let endpoint = &self.login.token_endpoint;
        let mut headers = vec![
            (":method".to_string(), "POST".to_string()),
            (":path".to_string(), endpoint.path.clone()),
            (":authority".to_string(), endpoint.authority.clone()),
            (":scheme".to_string(), endpoint.url.scheme().to_string()),
            (
                "content-type".to_string(),
                "application/x-www-form-urlencoded".to_string(),
            ),
            ("accept".to_string(), "application/json".to_string()),
            ("user-agent".to_string(), "mesh-oidc".to_string()),
        ];
        let secret = self.login.client_secret.expose();
        match self.login.client_auth {
            ClientAuth::Basic => {
                // RFC 6749 §2.3.1: both parts form-encoded before base64.
                let enc =
                    |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                let pair = format!("{}:{}", enc(self.client_id()), enc(secret));
                headers.push((
                    "authorization".to_string(),
                    format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(pair)
                    ),
                ));
            }
            ClientAuth::Post => {
                form.push(("client_id", self.client_id()));
                form.push(("client_secret", secret));
            }
        }
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        TokenCall { headers, body }
    }

    fn credential<'r>(&self, req: &'r Request) -> Credential<'r> {
        let auths: Vec<&[u8]> = req.authorizations.iter().map(Vec::as_slice).collect();
        session::credential(&auths, &req.cookies, self.names)
    }

    /// L4 and B6: the verified token as the bearer, and as the one `cookie.name` cookie when the
    /// browser keeps its session in cookies; no other copy and no sealed cookie goes on.
    fn forward(&self, req: &Request, token: &str, verified: &Verified, as_cookie: bool) -> Forward {
        let mut set_headers = vec![("authorization".to_string(), format!("Bearer {token}"))];
        set_headers.extend(claim_headers(self.config, verified));
        Forward {
            set_headers,
            cookie_header: session::forwarded_cookies(
                &req.cookies,
                self.names,
                as_cookie.then_some(token.as_bytes()),
            ),
            response_cookies: Vec::new(),
            events: Vec::new(),
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
        let tx_attrs = a.for_transaction();
        let transactions = web::cookies(&req.cookies)
            .filter(|(name, _)| self.names.is_transaction(name))
            .filter_map(|(name, _)| std::str::from_utf8(name).ok())
            .take(MAX_CLEARED_TRANSACTIONS);
        for name in transactions {
            out.push(session::clear_cookie(name, &tx_attrs));
        }
        out.sort();
        out.dedup();
        out
    }
}

/// Transaction cookies cleared in one response at most: a request stuffed with a thousand junk
/// ones must not get a thousand `Set-Cookie`s back (a front proxy would turn that into a 502).
pub const MAX_CLEARED_TRANSACTIONS: usize = 8;

/// Decides a login-mode request (claim headers already stripped, skip paths already passed).
pub fn decide(env: &Env, req: &Request, rng: &mut dyn Random, refetch_allowed: bool) -> Action {
    let path = web::path_only(&req.path);
    if path == env.login.callback_path {
        return callback(env, req);
    }
    if path == env.login.logout_path {
        return Action::Reply(logout(env, req));
    }

    let mut clears = Vec::new();
    let mut invalid = None;
    let session = env.session(req);
    match env.credential(req) {
        Credential::Conflict => return Action::Reply(conflicting_tokens(env, req, rng)),
        Credential::None => {}
        Credential::One {
            token, from_cookie, ..
        } => {
            let Some(keys) = env.keys else {
                return Action::WaitForKeys;
            };
            let checked = std::str::from_utf8(&token)
                .map_err(|_| TokenError::Malformed)
                .and_then(|token| {
                    token::verify_access(token, keys, env.cache, &env.config.rules, env.now)
                        .map(|v| (token, v))
                });
            match checked {
                Ok((token, verified)) => {
                    let as_cookie = from_cookie || session.is_some();
                    return Action::Continue(env.forward(req, token, &verified, as_cookie));
                }
                Err(TokenError::UnknownKey) if refetch_allowed => return Action::RefetchKeys,
                Err(e) => {
                    clears = env.clear_all(req);
                    invalid = Some(e);
                }
            }
        }
    }

    match session {
        Some(session) if session.refresh_token.is_some() => refresh(env, session),
        _ => Action::Reply(unauthenticated(env, req, rng, clears, invalid)),
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

fn refresh(env: &Env, session: Session) -> Action {
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
        let mut reply = match invalid {
            Some(e) => {
                web::unauthorized(Some(e.description())).counting(Event::TokenRejected(e.reason()))
            }
            None => web::unauthorized(None).counting(Event::TokenRejected("missing")),
        };
        for c in clears {
            reply.headers.push(("set-cookie".into(), c));
        }
        return reply;
    }
    start_login(env, req, rng, clears)
}

/// L1: 302 to the authorization endpoint, with a sealed transaction cookie.
pub fn start_login(env: &Env, req: &Request, rng: &mut dyn Random, clears: Vec<String>) -> Reply {
    let Some((origin, _)) = env.origin(req) else {
        return wrong_host(req, clears);
    };
    let state = random_string(rng);
    let nonce = random_string(rng);
    let verifier = random_string(rng);
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
    location
        .query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", env.client_id())
        .append_pair("redirect_uri", &redirect_uri)
        .append_pair("scope", &scope)
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");

    let a = env.attrs(req).for_transaction();
    let mut cookies = clears;
    cookies.extend(stale_transactions(env, req, &a));
    cookies.sort();
    cookies.dedup();
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
fn wrong_host(req: &Request, clears: Vec<String>) -> Reply {
    let mut reply = error_page(
        400,
        "This site is not served under the host name in the request.",
        &req.request_id,
    )
    .counting(Event::CallbackFailed("host"));
    reply
        .headers
        .extend(clears.into_iter().map(|c| ("set-cookie".to_string(), c)));
    reply
}

fn redirect(location: &str, cookies: Vec<String>) -> Reply {
    let mut headers = vec![
        ("location".to_string(), location.to_string()),
        ("cache-control".to_string(), "no-store".to_string()),
    ];
    headers.extend(cookies.into_iter().map(|c| ("set-cookie".to_string(), c)));
    Reply {
        status: 302,
        headers,
        body: Vec::new(),
        events: Vec::new(),
    }
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

/// Resolved as a browser resolves a `Location` (WHATWG URL), `path` stays on this origin and its
/// path does not start with `//`: `/.//evil.com` and `/a/..//evil.com` resolve to `//evil.com`,
/// a step from another host for any page that echoes its path into a redirect.
fn resolves_locally(path: &str) -> bool {
    const ORIGIN: &str = "origin.invalid";
    url::Url::parse("http://origin.invalid/")
        .and_then(|base| base.join(path))
        .is_ok_and(|u| u.host_str() == Some(ORIGIN) && !u.path().starts_with("//"))
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

/// L2: the browser comes back from the provider.
fn callback(env: &Env, req: &Request) -> Action {
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
        let mut reply = error_page(
            status,
            &format!("The identity provider refused the sign-in ({code})."),
            &req.request_id,
        )
        .counting(Event::CallbackFailed("provider_error"));
        reply
            .headers
            .extend(clear_tx.into_iter().map(|c| ("set-cookie".into(), c)));
        return Action::Reply(reply);
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
        let mut reply = error_page(
            400,
            "This sign-in does not match one started in this browser, or it took too long. Please start again.",
            &req.request_id,
        )
        .counting(Event::CallbackFailed("state"));
        reply
            .headers
            .extend(clear_tx.into_iter().map(|c| ("set-cookie".into(), c)));
        return Action::Reply(reply);
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
    let mut reply = error_page(
        400,
        "This sign-in response was already used. Please start again.",
        &req.request_id,
    )
    .counting(Event::CallbackFailed("replayed"));
    reply
        .headers
        .extend(clears.iter().map(|c| ("set-cookie".to_string(), c.clone())));
    reply
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    id_token: Option<String>,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    refresh_expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct TokenErrorResponse {
    error: String,
}

/// Session cookies live as long as the refresh token when the provider says (Keycloak does).
const DEFAULT_SESSION_TTL: u64 = 12 * 3600;

/// Why a token-endpoint answer was not usable; the text goes to the log and the error page.
fn token_response(status: u32, body: &[u8]) -> Result<TokenResponse, (u32, String)> {
    // Envoy answers a dispatched call that timed out with its own 504.
    if status == 0 || status == 504 {
        return Err((504, "the identity provider did not answer in time".into()));
    }
    if !(200..300).contains(&status) {
        let code = serde_json::from_slice::<TokenErrorResponse>(body)
            .map(|e| {
                e.error
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .take(64)
                    .collect::<String>()
            })
            .unwrap_or_default();
        return Err((
            502,
            format!("the token endpoint answered {status} {code}")
                .trim_end()
                .into(),
        ));
    }
    serde_json::from_slice::<TokenResponse>(body).map_err(|_| {
        (
            502,
            "the token endpoint answered with a malformed body".into(),
        )
    })
}

/// The cookies of a fresh session: the access token, and the sealed session.
fn session_cookies(
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
pub fn finish_exchange(
    env: &Env,
    req: &Request,
    tx: &Transaction,
    clears: Vec<String>,
    status: u32,
    body: &[u8],
    refetch_allowed: bool,
) -> Exchanged {
    let rid = &req.request_id;
    let fail = |status: u32, why: &str, reason: &'static str| {
        let mut reply = error_page(status, &format!("Sign-in failed: {why}."), rid)
            .counting(Event::CallbackFailed(reason));
        reply
            .headers
            .extend(clears.iter().map(|c| ("set-cookie".to_string(), c.clone())));
        reply
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
    let id_rules = TokenRules {
        issuer: env.config.rules.issuer.clone(),
        audiences: vec![env.client_id().to_string()],
        authorized_parties: Vec::new(),
        client_id_as_audience: None,
        clock_skew_seconds: env.config.rules.clock_skew_seconds,
    };
    match token::verify_id_token(id_token, keys, &id_rules, env.now, Some(&tx.nonce)) {
        Ok(_) => {}
        Err(TokenError::UnknownKey) if refetch_allowed => return Exchanged::RefetchKeys,
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
pub fn keys_missing_page(req: &Request, clears: &[String]) -> Reply {
    let mut reply = error_page(
        503,
        "Sign-in failed: the signing keys are not available yet. Please try again.",
        &req.request_id,
    )
    .counting(Event::CallbackFailed("keys"));
    reply
        .headers
        .extend(clears.iter().map(|c| ("set-cookie".to_string(), c.clone())));
    reply
}

/// L5: the token endpoint answered a refresh. Success: the same request goes on with the new
/// token and the response sets the new cookies. Failure: cookies cleared, then L1.
pub fn finish_refresh(
    env: &Env,
    req: &Request,
    old: &Session,
    status: u32,
    body: &[u8],
    rng: &mut dyn Random,
) -> Action {
    let refreshed = token_response(status, body).ok().and_then(|tokens| {
        let keys = env.keys?;
        let access = token::verify_access(
            &tokens.access_token,
            keys,
            env.cache,
            &env.config.rules,
            env.now,
        )
        .ok()?;
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
        let cookies = session_cookies(env, req, &tokens.access_token, &access, &session, ttl)?;
        Some((tokens.access_token, access, cookies))
    });
    match refreshed {
        Some((token, verified, cookies)) => {
            let mut forward = env.forward(req, &token, &verified, true);
            forward.response_cookies = cookies;
            forward.events.push(Event::RefreshOk);
            Action::Continue(forward)
        }
        None => Action::Reply(
            unauthenticated(env, req, rng, env.clear_all(req), None).counting(Event::RefreshFailed),
        ),
    }
}

/// L6: clear every cookie and send the browser to the end-session endpoint.
pub fn logout(env: &Env, req: &Request) -> Reply {
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
    {
        let mut q = location.query_pairs_mut();
        if let Some(hint) = &id_token {
            q.append_pair("id_token_hint", hint);
        }
        q.append_pair("post_logout_redirect_uri", &post_logout);
        q.append_pair("client_id", env.client_id());
    }
    redirect(location.as_str(), cookies).counting(Event::Logout)
}

/// L7: the service answered a page request with 401. `None`: let the 401 through.
pub fn upstream_401(env: &Env, req: &Request, rng: &mut dyn Random) -> Option<Reply> {
    if !req.is_page() {
        return None;
    }
    let reply = match env.login.on_upstream_401 {
        Upstream401::Pass => return None,
        Upstream401::Logout => logout(env, req),
        Upstream401::Login => start_login(env, req, rng, env.clear_all(req)),
    };
    Some(reply.counting(Event::Upstream401))
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
    use crate::config::Config;
    use crate::testkit::*;
    use jwt_simple::prelude::*;
    use serde_json::{json, Map, Value};

    struct Counter(u8);
    impl Random for Counter {
        fn fill(&mut self, buf: &mut [u8]) {
            self.0 = self.0.wrapping_add(1);
            buf.fill(self.0);
        }
    }

    fn config_with(edit: impl FnOnce(&mut Value)) -> Config {
        let mut v = json!({
            "mode": "login",
            "oidc": {
                "issuer": ISSUER,
                "jwks_uri": "http://keycloak:8080/realms/dev/protocol/openid-connect/certs",
                "authorization_endpoint": "https://sso.example.com/realms/dev/protocol/openid-connect/auth",
                "token_endpoint": "http://keycloak:8080/realms/dev/protocol/openid-connect/token",
                "end_session_endpoint": "https://sso.example.com/realms/dev/protocol/openid-connect/logout"
            },
            "client_id": "productpage",
            "client_secret": "pp secret",
            "session_secret": "nsseZrfUE/AHsM4ERYcYpaCfgpxPm14SyfAAFapYwC8=",
            "claims_to_headers": {"preferred_username": "x-user"}
        });
        edit(&mut v);
        Config::parse(v.to_string().as_bytes()).unwrap()
    }

    struct Fixture {
        config: Config,
        sealer: Sealer,
        names: Names,
        keys: KeySet,
    }

    impl Fixture {
        fn new(config: Config) -> Fixture {
            let sealer = Sealer::new(&config.login().unwrap().session_keys).unwrap();
            let names = Names::new(&config.cookie.name);
            Fixture {
                config,
                sealer,
                names,
                keys: keyset(),
            }
        }
        fn env(&self) -> Env<'_> {
            self.env_at(NOW)
        }
        fn env_at(&self, now: u64) -> Env<'_> {
            Env {
                config: &self.config,
                login: self.config.login().unwrap(),
                sealer: &self.sealer,
                names: &self.names,
                keys: Some(&self.keys),
                cache: None,
                now,
            }
        }
    }

    fn fixture() -> Fixture {
        Fixture::new(config_with(|_| {}))
    }

    fn page(path: &str, cookies: &str) -> Request {
        Request {
            method: "GET".into(),
            path: path.into(),
            scheme: "http".into(),
            host: "bookinfo.example.com".into(),
            accept: Some("text/html,application/xhtml+xml;q=0.9,*/*;q=0.8".into()),
            cookies: cookies.as_bytes().to_vec(),
            request_id: "rid-1".into(),
            ..Request::default()
        }
    }

    fn cookie_pairs(reply: &Reply) -> Vec<(String, String, String)> {
        reply
            .headers
            .iter()
            .filter(|(n, _)| n == "set-cookie")
            .map(|(_, v)| {
                let (pair, attrs) = v.split_once(';').unwrap_or((v, ""));
                let (n, val) = pair.split_once('=').unwrap();
                (n.to_string(), val.to_string(), attrs.to_string())
            })
            .collect()
    }

    fn as_cookie_header(pairs: &[(String, String, String)]) -> String {
        pairs
            .iter()
            .filter(|(_, v, _)| !v.is_empty())
            .map(|(n, v, _)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn query(location: &str) -> Map<String, Value> {
        let url = url::Url::parse(location).unwrap();
        url.query_pairs()
            .map(|(k, v)| (k.into_owned(), json!(v.into_owned())))
            .collect()
    }

    fn reply_of(a: Action) -> Reply {
        match a {
            Action::Reply(r) => r,
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    /// Keycloak's ID token: its claims, `typ: ID`, the client as audience, the login's nonce.
    fn id_token(nonce: &str, aud: &str) -> String {
        let mut custom = keycloak_claims();
        custom.insert("typ".into(), json!("ID"));
        let mut c = claims(custom);
        c.audiences = Some(Audiences::AsString(aud.into()));
        c.nonce = Some(nonce.into());
        sign_rsa(c)
    }

    /// Starts a login at `path` and returns the transaction and the cookie header holding it.
    fn begin(f: &Fixture, path: &str) -> (Transaction, String) {
        let reply = reply_of(decide(&f.env(), &page(path, ""), &mut Counter(0), true));
        let pairs = cookie_pairs(&reply);
        let (name, value, _) = pairs.iter().find(|(n, _, _)| n.contains("_tx_")).unwrap();
        let tx: Transaction = f.sealer.open(value, NOW).unwrap();
        (tx, format!("{name}={value}"))
    }

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
    fn a_page_without_session_goes_to_the_public_authorize_endpoint() {
        let f = fixture();
        let mut req = page("/productpage?u=normal", "");
        req.scheme = "https".into();
        let reply = reply_of(decide(&f.env(), &req, &mut Counter(0), true));
        assert_eq!(reply.status, 302);
        let location = reply.header("location").unwrap();
        assert!(location
            .starts_with("https://sso.example.com/realms/dev/protocol/openid-connect/auth?"));
        let q = query(location);
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["client_id"], "productpage");
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
        req.scheme = "https".into(); // as the http handler derives it from x-forwarded-proto
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
        assert!(fwd
            .set_headers
            .contains(&("authorization".into(), format!("Bearer {t}"))));
        assert!(fwd.set_headers.contains(&("x-user".into(), "alice".into())));
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
        bearer_and_cookie.authorizations = vec![format!("Bearer {t}").into_bytes()];
        assert!(matches!(
            decide(&f.env(), &bearer_and_cookie, &mut Counter(0), true),
            Action::Reply(_)
        ));
        let mut two_headers = page("/", "");
        two_headers.authorizations = vec![
            format!("Bearer {t}").into_bytes(),
            format!("Bearer {forged}").into_bytes(),
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
        bearer.authorizations = vec![format!("Bearer {t}").into_bytes()];
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
        api.cookies = Vec::new();
        let r = reply_of(decide(&f.env(), &api, &mut Counter(0), true));
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
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

    fn token_body(access: &str, id: &str, refresh: Option<&str>) -> Vec<u8> {
        let mut v = json!({"access_token": access, "id_token": id, "token_type": "Bearer", "expires_in": 290, "refresh_expires_in": 1800});
        if let Some(r) = refresh {
            v["refresh_token"] = json!(r);
        }
        v.to_string().into_bytes()
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
        assert_eq!(keys_missing_page(&req, &[]).status, 503);
    }

    fn session_cookie(f: &Fixture, s: &Session) -> String {
        format!(
            "access_token_session={}",
            f.sealer.seal(s, NOW, 1800).unwrap()
        )
    }

    fn expired_token() -> String {
        let mut c = claims(keycloak_claims());
        c.expires_at = Some(UnixTimeStamp::from_secs(NOW - 100));
        sign_rsa(c)
    }

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
        let Action::Continue(fwd) =
            finish_refresh(&f.env(), &req, &old, 200, body.as_bytes(), &mut Counter(0))
        else {
            panic!("expected continue")
        };
        assert!(fwd
            .set_headers
            .contains(&("authorization".into(), format!("Bearer {access}"))));
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
            let r = reply_of(finish_refresh(
                &f.env(),
                &page("/p", &cookies),
                &old,
                status,
                body,
                &mut Counter(0),
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
        let r = reply_of(finish_refresh(
            &f.env(),
            &api,
            &old,
            400,
            b"{}",
            &mut Counter(0),
        ));
        assert_eq!(r.status, 401);
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
        assert!(fwd
            .set_headers
            .contains(&("authorization".into(), format!("Bearer {big}"))));
    }
}
