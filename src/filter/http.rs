//! The HTTP context: one per request. It reads the request, hands it to `flow`, and on the
//! response adds cookies from a refresh or acts on a 401 from the service (L7).

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use super::flow::{self, Outcome, Snapshot, State, StateRef};
use super::host::{self, OsRandom};
use super::keys::SharedRef;
use crate::inbound;
use crate::login;
use crate::validate;
use crate::web;

pub struct Request {
    context_id: u32,
    shared: SharedRef,
    state: StateRef,
}

impl Request {
    pub fn new(context_id: u32, shared: SharedRef) -> Self {
        Request {
            context_id,
            shared,
            state: Rc::default(),
        }
    }
}

/// The request's headers, read once: every host call costs a trip through the VM boundary.
struct Headers(Vec<(String, Vec<u8>)>);

impl Headers {
    fn bytes(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    fn text(&self, name: &str) -> Option<String> {
        self.bytes(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_string)
    }

    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.0
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The `Cookie` header; HTTP/2 may send several, which count as one list.
    fn cookies(&self) -> Option<Vec<u8>> {
        let mut parts = self.0.iter().filter(|(n, _)| n == "cookie").map(|(_, v)| v);
        let first = parts.next()?.clone();
        Some(parts.fold(first, |mut all, v| {
            all.extend_from_slice(b"; ");
            all.extend_from_slice(v);
            all
        }))
    }
}

fn login_request(h: &Headers, path: String, trust_forwarded_proto: bool) -> login::Request {
    let text = |name: &str| h.bytes(name).and_then(|v| std::str::from_utf8(v).ok());
    login::Request {
        method: h.text(":method").unwrap_or_default(),
        path,
        scheme: web::request_scheme(
            text(":scheme"),
            text("x-forwarded-proto"),
            trust_forwarded_proto,
            host::connection_is_tls,
        ),
        host: h.text(":authority").unwrap_or_default(),
        accept: h.text("accept"),
        sec_fetch_mode: h.text("sec-fetch-mode"),
        sec_fetch_dest: h.text("sec-fetch-dest"),
        requested_with: h.text("x-requested-with"),
        cookies: h.cookies().unwrap_or_default(),
        authorizations: h.all("authorization").map(<[u8]>::to_vec).collect(),
        request_id: web::request_id(text("x-request-id")),
    }
}

impl Context for Request {
    fn on_http_call_response(&mut self, token: u32, _: usize, body_size: usize, _: usize) {
        let now = host::now_ms();
        if flow::on_call_response(&self.shared, token, body_size, self.context_id) {
            return;
        }
        let handled = self
            .shared
            .borrow_mut()
            .on_jwks_response(token, body_size, now);
        if handled {
            self.shared.borrow_mut().sync();
            flow::settle(&self.shared, now, self.context_id);
        }
    }

    fn on_done(&mut self) -> bool {
        let id = self.context_id;
        let mut s = self.shared.borrow_mut();
        s.waiters.retain(|w| w.context_id != id);
        s.calls.retain(|_, c| c.context_id != id);
        true
    }
}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let (config, names) = {
            let s = self.shared.borrow();
            (s.config.clone(), s.names.clone())
        };
        let headers = Headers(host::request_headers());
        // B3: a client can never set a claim header itself, in any spelling, skip paths included.
        for (name, _) in &headers.0 {
            if validate::is_claim_header(&config, name) {
                host::set_request_header(name, None);
            }
        }
        let path = String::from_utf8_lossy(headers.bytes(":path").unwrap_or_default()).into_owned();
        let cookie = headers.cookies();
        let skipped = config.is_skipped(&path);
        let login = config.login().is_some();
        // B6, read in the core: validate mode and skip paths here, login mode in its decisions.
        let inbound = (!login || skipped).then(|| {
            let auths: Vec<&[u8]> = headers.all("authorization").collect();
            inbound::read(&auths, cookie.as_deref(), &names, skipped)
        });
        if skipped {
            let inbound = inbound.unwrap_or_default();
            if inbound.conflict {
                host::send_reply(&inbound::conflict_reply());
                return Action::Pause;
            }
            for (name, value) in &inbound.rewrites {
                host::set_request_header_bytes(name, value.as_deref());
            }
            return Action::Continue;
        }
        let state = match inbound {
            None => State {
                login: Some(login_request(&headers, path, config.trust_forwarded_proto)),
                ..State::default()
            },
            Some(inbound) => State {
                token: inbound.token.map(Rc::from),
                conflict: inbound.conflict,
                rewrites: inbound.rewrites,
                ..State::default()
            },
        };
        *self.state.borrow_mut() = state;
        match flow::run(&self.shared, &self.state, self.context_id, true, false) {
            Outcome::Continue => Action::Continue,
            Outcome::Pause => Action::Pause,
        }
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        let login_req = self.state.borrow().login.clone();
        let Some(req) = login_req else {
            return Action::Continue;
        };
        let cookies = std::mem::take(&mut self.state.borrow_mut().response_cookies);
        for c in &cookies {
            host::add_response_header("set-cookie", c);
        }
        if !cookies.is_empty() {
            // L1+: a response that sets the session must never be stored by a shared cache.
            host::set_response_header("cache-control", "no-store");
        }
        if host::response_status() != 401 {
            return Action::Continue;
        }
        // L7: the service refused the token on a page request.
        let now_ms = host::now_ms();
        let snap = Snapshot::take(&self.shared, now_ms);
        let Some(env) = snap.env(now_ms) else {
            return Action::Continue;
        };
        match login::upstream_401(&env, &req, &mut OsRandom) {
            Some(reply) => {
                host::log(
                    proxy_wasm::types::LogLevel::Info,
                    &format!(
                        "mesh-oidc[{}]: the service answered 401; acting per on_upstream_401",
                        req.request_id
                    ),
                );
                self.shared.borrow_mut().count(&reply.events);
                host::send_reply(&reply);
                Action::Pause
            }
            None => Action::Continue,
        }
    }
}
