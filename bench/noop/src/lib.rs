//! The floors for the benchmark, one module:
//!
//! - configured with anything else: a proxy-wasm HTTP filter that lets every request through
//!   untouched (the cost of any wasm filter);
//! - configured `"cached"`: a minimal cached JWT filter — it reads `Authorization`, looks the
//!   token's hash up in a map of tokens it has "verified" (it verifies nothing: a token seen for
//!   the first time is simply remembered), compares the entry's expiry with the clock and sets the
//!   claim header from the entry. What any cached JWT check in wasm costs at least;
//! - configured `"cached-all"`: the same, but it reads the whole header map (the SDK's
//!   `get_http_request_headers_bytes`) instead of one header, as a filter must that removes a claim
//!   header in every spelling and reads every `Authorization` header and cookie (mesh-oidc's B3 and
//!   B6);
//! - configured `"login-floor"`: the header work mesh-oidc's login mode must do for a logged-in
//!   browser, and nothing else: the whole header map; the `access_token` cookie found in `Cookie`
//!   and looked up as `cached` does; `Authorization: Bearer` set to it (L4), `Cookie` rewritten
//!   without the filter's other cookies (B6), the claim header set; and the response's `:status`
//!   read (L7).

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

thread_local! {
    static CACHE: RefCell<HashMap<u64, (u64, String)>> = RefCell::new(HashMap::new());
}

#[derive(Clone, Copy)]
enum Mode {
    Noop,
    Cached,
    CachedAll,
    LoginFloor,
}

struct Root {
    mode: Mode,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        let has = |word: &[u8]| config.windows(word.len()).any(|w| w == word);
        self.mode = if has(b"cached-all") {
            Mode::CachedAll
        } else if has(b"login-floor") {
            Mode::LoginFloor
        } else if has(b"cached") {
            Mode::Cached
        } else {
            Mode::Noop
        };
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(match self.mode {
            Mode::Noop => Box::new(Noop),
            Mode::Cached => Box::new(Cached { all: false }),
            Mode::CachedAll => Box::new(Cached { all: true }),
            Mode::LoginFloor => Box::new(LoginFloor { replied: false }),
        })
    }
}

struct Noop;

impl Context for Noop {}

impl HttpContext for Noop {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        Action::Continue
    }
}

/// The user a token was "verified" for: the token's hash looked up, the entry's expiry compared
/// with the clock.
fn cached_user(ctx: &dyn HttpContext, token: &[u8]) -> Option<String> {
    let mut h = DefaultHasher::new();
    token.hash(&mut h);
    let key = h.finish();
    let now = ctx
        .get_current_time()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        let entry = c
            .entry(key)
            .or_insert_with(|| (now + 300, "alice".to_string()));
        (entry.0 > now).then(|| entry.1.clone())
    })
}

struct Cached {
    all: bool,
}

impl Context for Cached {}

impl HttpContext for Cached {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let auth = if self.all {
            self.get_http_request_headers_bytes()
                .into_iter()
                .find(|(name, _)| name == "authorization")
                .map(|(_, value)| value)
        } else {
            self.get_http_request_header_bytes("authorization")
        };
        let Some(auth) = auth else {
            self.send_http_response(401, vec![], None);
            return Action::Pause;
        };
        match cached_user(self, &auth) {
            Some(user) => {
                self.set_http_request_header("x-user", Some(&user));
                Action::Continue
            }
            None => {
                self.send_http_response(401, vec![], None);
                Action::Pause
            }
        }
    }
}

struct LoginFloor {
    /// This filter answered the request itself: the response is its own.
    replied: bool,
}

impl Context for LoginFloor {}

impl HttpContext for LoginFloor {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let headers = self.get_http_request_headers_bytes();
        let cookie = headers
            .iter()
            .find(|(name, _)| name == "cookie")
            .map(|(_, value)| value.as_slice())
            .unwrap_or_default();
        let mut token: Option<&[u8]> = None;
        let mut kept: Vec<&[u8]> = Vec::new();
        for piece in cookie.split(|b| *b == b';') {
            let piece = piece.trim_ascii();
            if let Some(value) = piece.strip_prefix(b"access_token=") {
                token.get_or_insert(value);
            } else if !piece.starts_with(b"access_token") && !piece.is_empty() {
                kept.push(piece);
            }
        }
        let user = token.and_then(|t| cached_user(self, t));
        let (Some(token), Some(user)) = (token, user) else {
            self.replied = true;
            self.send_http_response(401, vec![], None);
            return Action::Pause;
        };
        let mut bearer = b"Bearer ".to_vec();
        bearer.extend_from_slice(token);
        let mut forwarded = kept.join(&b"; "[..]);
        if !forwarded.is_empty() {
            forwarded.extend_from_slice(b"; ");
        }
        forwarded.extend_from_slice(b"access_token=");
        forwarded.extend_from_slice(token);
        self.set_http_request_header_bytes("authorization", Some(&bearer));
        self.set_http_request_header_bytes("cookie", Some(&forwarded));
        self.set_http_request_header("x-user", Some(&user));
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        if !self.replied && self.get_http_response_header(":status").as_deref() == Some("401") {
            self.send_http_response(302, vec![("location", "/login")], None);
            return Action::Pause;
        }
        Action::Continue
    }
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { mode: Mode::Noop }) });
}}
