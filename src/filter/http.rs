//! The HTTP context: one per request.

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel};

use super::host;
use super::keys::{settle, SharedRef, Waiter};
use crate::validate::{self, Decision};
use crate::web;

pub struct Request {
    context_id: u32,
    shared: SharedRef,
}

impl Request {
    pub fn new(context_id: u32, shared: SharedRef) -> Self {
        Request { context_id, shared }
    }

    fn request_id(&self) -> String {
        host::request_header("x-request-id")
            .and_then(|v| String::from_utf8(v).ok())
            .filter(|v| v.len() <= 128 && v.chars().all(|c| c.is_ascii_graphic()))
            .unwrap_or_else(|| "-".into())
    }

    fn wait(&self, token: Vec<u8>, refetch: bool) -> Action {
        let now = host::now_ms();
        let mut s = self.shared.borrow_mut();
        if refetch {
            s.store.refetch_requested = true;
        }
        let deadline_ms = now + s.config.timeout_ms;
        s.waiters.push(Waiter {
            context_id: self.context_id,
            deadline_ms,
            token,
            refetch,
        });
        s.maybe_fetch(now);
        Action::Pause
    }
}

impl Context for Request {
    fn on_http_call_response(&mut self, token: u32, _: usize, body_size: usize, _: usize) {
        let now = host::now_ms();
        let handled = self
            .shared
            .borrow_mut()
            .on_call_response(token, body_size, now);
        if handled {
            let changed = self.shared.borrow_mut().sync();
            settle(&self.shared, changed, now, self.context_id);
        }
    }

    fn on_done(&mut self) -> bool {
        let id = self.context_id;
        self.shared
            .borrow_mut()
            .waiters
            .retain(|w| w.context_id != id);
        true
    }
}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let config = self.shared.borrow().config.clone();
        // B3: a client can never set a claim header itself, skip paths included.
        for (_, header) in &config.claims_to_headers {
            host::set_request_header(header, None);
        }
        let path = host::request_header(":path").unwrap_or_default();
        let path = String::from_utf8_lossy(&path);
        if config.is_skipped(web::path_only(&path)) {
            return Action::Continue;
        }
        let authorization = host::request_header("authorization");
        let cookie = host::request_header("cookie");
        let token = web::request_token(
            authorization.as_deref(),
            cookie.as_deref(),
            &config.cookie.name,
        )
        .map(|(t, _)| t.to_vec());
        let now = host::now_ms();
        let (keys, refetch_allowed) = {
            let s = self.shared.borrow();
            (s.keys(), s.store.refetch_allowed(now))
        };
        match validate::decide(
            &config,
            token.as_deref(),
            keys.as_deref(),
            now / 1000,
            refetch_allowed,
        ) {
            Decision::Continue(headers) => {
                for (name, value) in &headers {
                    host::set_request_header(name, Some(value));
                }
                Action::Continue
            }
            Decision::Reply(reply) => {
                if let Some(why) = reply.header("www-authenticate") {
                    host::log(
                        LogLevel::Info,
                        &format!(
                            "mesh-oidc[{}]: {} ({})",
                            self.request_id(),
                            reply.status,
                            why
                        ),
                    );
                }
                host::send_reply(&reply);
                Action::Pause
            }
            Decision::WaitForKeys => self.wait(token.unwrap_or_default(), false),
            Decision::RefetchKeys => self.wait(token.unwrap_or_default(), true),
        }
    }
}
