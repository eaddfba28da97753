//! Two floors for the benchmark, one module:
//!
//! - configured with anything else: a proxy-wasm HTTP filter that lets every request through
//!   untouched (the cost of any wasm filter);
//! - configured `"cached"`: a minimal cached JWT filter — it reads `Authorization`, looks the
//!   token's hash up in a map of tokens it has "verified" (it verifies nothing: a token seen for
//!   the first time is simply remembered), compares the entry's expiry with the clock and sets the
//!   claim header from the entry. What any cached JWT check in wasm costs at least.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

thread_local! {
    static CACHE: RefCell<HashMap<u64, (u64, String)>> = RefCell::new(HashMap::new());
}

struct Root {
    cached: bool,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        self.cached = self
            .get_plugin_configuration()
            .is_some_and(|c| c.windows(6).any(|w| w == b"cached"));
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(if self.cached {
            Box::new(Cached)
        } else {
            Box::new(Noop)
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

struct Cached;

impl Context for Cached {}

impl HttpContext for Cached {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let Some(auth) = self.get_http_request_header_bytes("authorization") else {
            self.send_http_response(401, vec![], None);
            return Action::Pause;
        };
        let mut h = DefaultHasher::new();
        auth.hash(&mut h);
        let key = h.finish();
        let now = self
            .get_current_time()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        let user = CACHE.with(|c| {
            let mut c = c.borrow_mut();
            let entry = c
                .entry(key)
                .or_insert_with(|| (now + 300, "alice".to_string()));
            (entry.0 > now).then(|| entry.1.clone())
        });
        match user {
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

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { cached: false }) });
}}
