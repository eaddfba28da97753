//! One request's path through the filter, in either mode: decide, carry the decision out, and
//! pick the request up again when what it waits for (keys, a token call, a shared refresh)
//! arrives. Calls and waits are kept in `Shared`, so whichever context hears of an event can
//! finish the request it belongs to.

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::types::LogLevel;

use super::host::{self, OsRandom};
use super::keys::SharedRef;
use crate::flight::{self, Step};
use crate::login::{self, Action, Env, Exchanged, Forward, TokenCall};
use crate::metrics::Event;
use crate::session::{Session, Transaction};
use crate::token::TokenError;
use crate::validate::{self, Decision, Presented};
use crate::web::{self, Reply};

/// What one request carries through waits and calls.
#[derive(Debug, Default)]
pub struct State {
    /// Validate mode: the raw token (shared, not copied, when the request is decided again).
    pub token: Option<Rc<[u8]>>,
    /// Validate mode: the request carried two different access tokens (B6).
    pub conflict: bool,
    /// Validate mode: headers to set (or remove) when the request goes on (B6).
    pub rewrites: Vec<(&'static str, Option<Vec<u8>>)>,
    /// Login mode: the request.
    pub login: Option<login::Request>,
    /// `Set-Cookie` values for the service's response (after a refresh).
    pub response_cookies: Vec<String>,
}

pub type StateRef = Rc<RefCell<State>>;

#[derive(Debug)]
pub enum WaitFor {
    /// The first key set, or (`refetch`) a new one after an unknown `kid`.
    Keys { refetch: bool },
    /// Another request's refresh of the same token.
    Refresh { slot: String },
    /// The code exchange answered before its ID token could be checked: the answer, kept.
    Exchange {
        exchange: Box<PendingExchange>,
        refetch: bool,
    },
}

#[derive(Debug)]
pub struct PendingExchange {
    pub tx: Transaction,
    pub clears: Vec<String>,
    pub status: u32,
    pub body: Vec<u8>,
}

impl WaitFor {
    fn refetches(&self) -> bool {
        matches!(
            self,
            WaitFor::Keys { refetch: true } | WaitFor::Exchange { refetch: true, .. }
        )
    }

    fn needs_keys(&self) -> bool {
        matches!(self, WaitFor::Keys { .. } | WaitFor::Exchange { .. })
    }
}

#[derive(Debug)]
pub struct Waiter {
    pub context_id: u32,
    /// The key-set version the request was decided with.
    pub keys_version: u64,
    pub deadline_ms: u64,
    pub state: StateRef,
    pub what: WaitFor,
}

#[derive(Debug)]
pub enum Purpose {
    Exchange {
        tx: Transaction,
        clears: Vec<String>,
    },
    /// `slot` is set when this call owns the shared slot and must publish its answer.
    Refresh {
        session: Session,
        slot: Option<String>,
    },
}

#[derive(Debug)]
pub struct Call {
    pub context_id: u32,
    pub state: StateRef,
    pub purpose: Purpose,
}

/// Whether the request goes on now (`Continue`) or is held or answered (`Pause`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Continue,
    Pause,
}

/// What a decision needs from `Shared`, cloned out so that no borrow of it is held while the
/// decision is carried out.
pub struct Snapshot {
    pub config: Rc<crate::config::Config>,
    keys: Option<Rc<crate::jwks::KeySet>>,
    login: Option<(Rc<crate::session::Sealer>, Rc<crate::session::Names>)>,
    cache: Rc<RefCell<crate::token::Cache>>,
    version: u64,
    pub refetch_allowed: bool,
}

impl Snapshot {
    pub fn take(shared: &SharedRef, now_ms: u64) -> Snapshot {
        let s = shared.borrow();
        Snapshot {
            config: s.config.clone(),
            keys: s.keys(),
            login: s.login.clone(),
            cache: s.cache.clone(),
            version: s.store.version,
            refetch_allowed: s.store.refetch_allowed(now_ms),
        }
    }

    pub fn keys(&self) -> Option<&crate::jwks::KeySet> {
        self.keys.as_deref()
    }

    pub fn cache(&self) -> crate::token::CacheRef<'_> {
        Some((&self.cache, self.version))
    }

    /// The login-mode environment; `None` in validate mode.
    pub fn env(&self, now_ms: u64) -> Option<Env<'_>> {
        let (sealer, names) = self.login.as_ref()?;
        Some(Env {
            config: &self.config,
            login: self.config.login()?,
            sealer,
            names,
            keys: self.keys(),
            cache: self.cache(),
            now: now_ms / 1000,
        })
    }
}

fn log_reply(state: &State, reply: &Reply) {
    let rid = state.login.as_ref().map_or("-", |r| r.request_id.as_str());
    let what = reply
        .header("www-authenticate")
        .or_else(|| reply.header("location").map(|_| "redirect"))
        .unwrap_or("local reply");
    // The location may carry state and nonce: only say that it redirects.
    host::log(
        LogLevel::Info,
        &format!("mesh-oidc[{rid}]: {} ({what})", reply.status),
    );
}

fn apply_forward(shared: &SharedRef, state: &StateRef, forward: Forward) {
    shared.borrow_mut().count(&forward.events);
    for (name, value) in &forward.set_headers {
        host::set_request_header(name, Some(value));
    }
    if state.borrow().login.is_some() {
        host::set_request_header_bytes("cookie", forward.cookie_header.as_deref());
    }
    state.borrow_mut().response_cookies = forward.response_cookies;
}

/// Decides a request (again, when it waited) and carries the decision out in the effective
/// context. `held`: the request was paused before, so continuing means resuming it.
pub fn run(
    shared: &SharedRef,
    state: &StateRef,
    context_id: u32,
    refetch_ok: bool,
    held: bool,
) -> Outcome {
    let now_ms = host::now_ms();
    let snap = Snapshot::take(shared, now_ms);
    let refetch_allowed = refetch_ok && snap.refetch_allowed;
    // Cloned out first: the borrow must end before carrying the decision out writes to `state`.
    let login_req = state.borrow().login.clone();
    let outcome = if let (Some(req), Some(env)) = (login_req, snap.env(now_ms)) {
        let action = login::decide(&env, &req, &mut OsRandom, refetch_allowed);
        carry_out(shared, state, context_id, action, &env, &req)
    } else {
        let (token, conflict) = {
            let st = state.borrow();
            (st.token.clone(), st.conflict)
        };
        let presented = match (&token, conflict) {
            (_, true) => Presented::Conflict,
            (Some(t), false) => Presented::Token(t),
            (None, false) => Presented::Nothing,
        };
        match validate::decide(
            &snap.config,
            presented,
            snap.keys(),
            snap.cache(),
            now_ms / 1000,
            refetch_allowed,
        ) {
            Decision::Continue(headers) => {
                for (name, value) in &headers {
                    host::set_request_header(name, Some(value));
                }
                let rewrites = std::mem::take(&mut state.borrow_mut().rewrites);
                for (name, value) in &rewrites {
                    host::set_request_header_bytes(name, value.as_deref());
                }
                Outcome::Continue
            }
            Decision::Reply(reply) => reply_with(shared, state, &reply),
            Decision::WaitForKeys => {
                wait(shared, state, context_id, WaitFor::Keys { refetch: false })
            }
            Decision::RefetchKeys => {
                wait(shared, state, context_id, WaitFor::Keys { refetch: true })
            }
        }
    };
    if held && outcome == Outcome::Continue {
        host::resume_request();
    }
    outcome
}

fn reply_with(shared: &SharedRef, state: &StateRef, reply: &Reply) -> Outcome {
    shared.borrow_mut().count(&reply.events);
    log_reply(&state.borrow(), reply);
    host::send_reply(reply);
    Outcome::Pause
}

fn wait(shared: &SharedRef, state: &StateRef, context_id: u32, what: WaitFor) -> Outcome {
    let now = host::now_ms();
    let mut s = shared.borrow_mut();
    if what.refetches() {
        s.store.refetch_requested = true;
    }
    // A refresh waiter also allows for the owner's own call to time out first.
    let slack = if matches!(what, WaitFor::Refresh { .. }) {
        1000
    } else {
        0
    };
    let deadline_ms = now + s.config.timeout_ms + slack;
    let keys_version = s.store.version;
    s.waiters.push(Waiter {
        context_id,
        keys_version,
        deadline_ms,
        state: state.clone(),
        what,
    });
    s.maybe_fetch(now);
    Outcome::Pause
}

fn carry_out(
    shared: &SharedRef,
    state: &StateRef,
    context_id: u32,
    action: Action,
    env: &Env,
    req: &login::Request,
) -> Outcome {
    match action {
        Action::Continue(forward) => {
            apply_forward(shared, state, forward);
            Outcome::Continue
        }
        Action::Reply(reply) => reply_with(shared, state, &reply),
        Action::WaitForKeys => wait(shared, state, context_id, WaitFor::Keys { refetch: false }),
        Action::RefetchKeys => wait(shared, state, context_id, WaitFor::Keys { refetch: true }),
        Action::Exchange {
            call,
            tx,
            clears,
            replay,
        } => {
            if !record_state(&replay, env.now) {
                return reply_with(shared, state, &login::replayed(req, &clears));
            }
            dispatch(
                shared,
                state,
                context_id,
                &call,
                Purpose::Exchange { tx, clears },
                &req.request_id,
            )
        }
        Action::Refresh {
            call,
            session,
            slot,
        } => {
            let now = host::now_ms();
            let key = flight::key(&slot);
            let digest = flight::digest(&slot).to_vec();
            let (value, cas) = host::get_shared(&key);
            let current = value.unwrap_or_default();
            let decoded = flight::decode(&current);
            let step = flight::step(&decoded, &digest, now);
            if let (Step::Use, flight::Slot::Done { status, body, .. }) = (step, &decoded) {
                let action =
                    login::finish_refresh(env, req, &session, *status, body, &mut OsRandom);
                return carry_out(shared, state, context_id, action, env, req);
            }
            // Whether this request owns the shared slot (and publishes its answer), or refreshes
            // unshared because the slot is busy with another token.
            let owned = match step {
                Step::Wait => return wait(shared, state, context_id, WaitFor::Refresh { slot }),
                Step::Take => {
                    let until = now + env.config.timeout_ms + 1000;
                    if !host::set_shared(&key, &flight::encode_pending(&digest, until), cas) {
                        // Another request took the slot a moment ago: wait for its answer.
                        return wait(shared, state, context_id, WaitFor::Refresh { slot });
                    }
                    Some(slot)
                }
                // Use was handled above.
                Step::Use | Step::Bypass => None,
            };
            let purpose = Purpose::Refresh {
                session,
                slot: owned,
            };
            dispatch(shared, state, context_id, &call, purpose, &req.request_id)
        }
    }
}

/// Records a callback's state in shared data (L2+); false when it was used before, or when the
/// slot could not be written after a few tries (fail closed: the user starts again).
fn record_state(claim: &crate::replay::Claim, now: u64) -> bool {
    for _ in 0..4 {
        let (value, cas) = host::get_shared(&claim.key);
        let Some(updated) = claim.record(value.as_deref().unwrap_or_default(), now) else {
            return false;
        };
        if host::set_shared(&claim.key, &updated, cas) {
            return true;
        }
    }
    false
}

fn dispatch(
    shared: &SharedRef,
    state: &StateRef,
    context_id: u32,
    call: &TokenCall,
    purpose: Purpose,
    request_id: &str,
) -> Outcome {
    let (cluster, timeout) = {
        let s = shared.borrow();
        (s.config.cluster.clone(), s.config.timeout_ms)
    };
    let headers: Vec<(&str, &str)> = call
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    match host::dispatch(&cluster, &headers, Some(call.body.as_bytes()), timeout) {
        Some(token) => {
            shared.borrow_mut().calls.insert(
                token,
                Call {
                    context_id,
                    state: state.clone(),
                    purpose,
                },
            );
            Outcome::Pause
        }
        None => {
            host::log(
                LogLevel::Error,
                &format!("mesh-oidc: cannot call the token endpoint: cluster {cluster} is not known to Envoy"),
            );
            reply_with(
                shared,
                state,
                &login::error_page(502, "The identity provider cannot be reached.", request_id),
            )
        }
    }
}

/// A dispatched call answered (or timed out). Returns false if it was not a request's call.
pub fn on_call_response(shared: &SharedRef, token: u32, body_size: usize, current: u32) -> bool {
    let Some(call) = shared.borrow_mut().calls.remove(&token) else {
        return false;
    };
    let status = host::call_response_status();
    let body = host::call_response_body(body_size.min(1024 * 1024));
    let now_ms = host::now_ms();
    // Publish a shared refresh's answer first: others wait for it even if this request is gone.
    if let Purpose::Refresh {
        slot: Some(slot), ..
    } = &call.purpose
    {
        let until = now_ms + flight::RESULT_TTL_MS;
        let published = flight::encode_done(flight::digest(slot), until, status, &body);
        let _ = host::set_shared(&flight::key(slot), &published, None);
    }
    if !host::enter(call.context_id) {
        return true;
    }
    // The key set may have arrived from another VM since the last tick.
    shared.borrow_mut().sync();
    let snap = Snapshot::take(shared, now_ms);
    let req = call.state.borrow().login.clone();
    if let (Some(req), Some(env)) = (req, snap.env(now_ms)) {
        match call.purpose {
            Purpose::Exchange { tx, clears } => {
                let exchange = PendingExchange {
                    tx,
                    clears,
                    status,
                    body,
                };
                finish_exchange(
                    shared,
                    &call.state,
                    call.context_id,
                    &env,
                    &req,
                    exchange,
                    snap.refetch_allowed,
                );
            }
            Purpose::Refresh { session, slot } => {
                if !(200..300).contains(&status) {
                    host::log(
                        LogLevel::Info,
                        &format!(
                            "mesh-oidc[{}]: refresh failed: HTTP {status} from the token endpoint",
                            req.request_id
                        ),
                    );
                }
                let action =
                    login::finish_refresh(&env, &req, &session, status, &body, &mut OsRandom);
                let outcome = carry_out(shared, &call.state, call.context_id, action, &env, &req);
                if outcome == Outcome::Continue {
                    host::resume_request();
                }
                if slot.is_some() {
                    settle(shared, now_ms, call.context_id);
                }
            }
        }
    }
    host::enter(current);
    true
}

/// Checks the code exchange's answer, or holds it until the key set can check its ID token.
fn finish_exchange(
    shared: &SharedRef,
    state: &StateRef,
    context_id: u32,
    env: &Env,
    req: &login::Request,
    exchange: PendingExchange,
    refetch_allowed: bool,
) {
    let PendingExchange {
        tx,
        clears,
        status,
        body,
    } = &exchange;
    let outcome =
        login::finish_exchange(env, req, tx, clears.clone(), *status, body, refetch_allowed);
    let refetch = match outcome {
        Exchanged::Reply(reply) => {
            if let Some(why) = reply.events.iter().find_map(|e| match e {
                Event::CallbackFailed(why) => Some(*why),
                _ => None,
            }) {
                host::log(
                    LogLevel::Warn,
                    &format!(
                        "mesh-oidc[{}]: sign-in failed ({why}; token endpoint answered HTTP {status})",
                        req.request_id
                    ),
                );
            }
            reply_with(shared, state, &reply);
            return;
        }
        Exchanged::WaitForKeys => false,
        Exchanged::RefetchKeys => true,
    };
    wait(
        shared,
        state,
        context_id,
        WaitFor::Exchange {
            exchange: Box::new(exchange),
            refetch,
        },
    );
}

/// Picks up waiting requests: after a key-set change, a published refresh, or a deadline.
pub fn settle(shared: &SharedRef, now_ms: u64, current: u32) {
    let waiters = {
        let mut s = shared.borrow_mut();
        if s.waiters.is_empty() {
            return;
        }
        std::mem::take(&mut s.waiters)
    };
    let (has_keys, version) = {
        let s = shared.borrow();
        (s.keys().is_some(), s.store.version)
    };
    let mut keep = Vec::new();
    let mut touched = false;
    for w in waiters {
        let ready = match &w.what {
            what if what.needs_keys() => has_keys && version != w.keys_version,
            WaitFor::Refresh { slot, .. } => {
                let (value, _) = host::get_shared(&flight::key(slot));
                let value = value.unwrap_or_default();
                matches!(
                    flight::step(&flight::decode(&value), flight::digest(slot), now_ms),
                    Step::Use | Step::Take | Step::Bypass
                )
            }
            _ => false,
        };
        if !ready && w.deadline_ms > now_ms {
            keep.push(w);
            continue;
        }
        if !host::enter(w.context_id) {
            continue;
        }
        touched = true;
        let req = w.state.borrow().login.clone();
        match w.what {
            WaitFor::Exchange { exchange, .. } => {
                let snap = Snapshot::take(shared, now_ms);
                match (req, snap.env(now_ms)) {
                    (Some(req), Some(env)) if ready => finish_exchange(
                        shared,
                        &w.state,
                        w.context_id,
                        &env,
                        &req,
                        *exchange,
                        false,
                    ),
                    (req, _) => {
                        let req = req.unwrap_or_default();
                        reply_with(
                            shared,
                            &w.state,
                            &login::keys_missing_page(&req, &exchange.clears),
                        );
                    }
                }
            }
            // Decide again from the start: keys are here, or the shared refresh answered.
            _ if ready => {
                run(shared, &w.state, w.context_id, false, true);
            }
            WaitFor::Keys { refetch: true } => {
                let reply = web::unauthorized(Some(TokenError::UnknownKey.description()));
                reply_with(shared, &w.state, &reply);
            }
            WaitFor::Keys { refetch: false } => {
                reply_with(shared, &w.state, &web::keys_unavailable());
            }
            WaitFor::Refresh { .. } => {
                let rid = req.map(|r| r.request_id).unwrap_or_default();
                let reply =
                    login::error_page(504, "The identity provider did not answer in time.", &rid);
                reply_with(shared, &w.state, &reply);
            }
        }
    }
    shared.borrow_mut().waiters.extend(keep);
    if touched {
        host::enter(current);
    }
}
