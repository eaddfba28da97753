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
use crate::login::{self, Action, Env, Forward, TokenCall};
use crate::session::{Session, Transaction};
use crate::token::TokenError;
use crate::validate::{self, Decision};
use crate::web::{self, Reply};

/// What one request carries through waits and calls.
#[derive(Debug, Default)]
pub struct State {
    /// Validate mode: the raw token.
    pub token: Option<Vec<u8>>,
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
        match &forward.cookie_header {
            Some(v) => host::set_request_header_bytes("cookie", v),
            None => host::set_request_header("cookie", None),
        }
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
    let (config, keys, login_parts, refetch_allowed, cache, version) = {
        let s = shared.borrow();
        (
            s.config.clone(),
            s.keys(),
            s.login.clone(),
            refetch_ok && s.store.refetch_allowed(now_ms),
            s.cache.clone(),
            s.store.version,
        )
    };
    // Cloned out first: the borrow must end before carrying the decision out writes to `state`.
    let login_req = state.borrow().login.clone();
    let outcome = if let (Some(req), Some((sealer, names)), Some(login_cfg)) =
        (login_req, login_parts, config.login())
    {
        let env = Env {
            config: &config,
            login: login_cfg,
            sealer: &sealer,
            names: &names,
            keys: keys.as_deref(),
            cache: Some((&cache, version)),
            now: now_ms / 1000,
        };
        let action = login::decide(&env, &req, &mut OsRandom, refetch_allowed);
        carry_out(shared, state, context_id, action, &env, &req)
    } else {
        let token = state.borrow().token.clone();
        match validate::decide(
            &config,
            token.as_deref(),
            keys.as_deref(),
            Some((&cache, version)),
            now_ms / 1000,
            refetch_allowed,
        ) {
            Decision::Continue(headers) => {
                for (name, value) in &headers {
                    host::set_request_header(name, Some(value));
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
    if matches!(what, WaitFor::Keys { refetch: true }) {
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
        Action::Exchange { call, tx, clears } => dispatch(
            shared,
            state,
            context_id,
            &call,
            Purpose::Exchange { tx, clears },
            &req.request_id,
        ),
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
            match flight::step(&decoded, &digest, now) {
                Step::Use => {
                    if let flight::Slot::Done { status, body, .. } = decoded {
                        let action =
                            login::finish_refresh(env, req, &session, status, body, &mut OsRandom);
                        return carry_out(shared, state, context_id, action, env, req);
                    }
                    Outcome::Pause
                }
                Step::Wait => wait(shared, state, context_id, WaitFor::Refresh { slot }),
                Step::Take => {
                    let until = now + env.config.timeout_ms + 1000;
                    if host::set_shared(&key, &flight::encode_pending(&digest, until), cas) {
                        dispatch(
                            shared,
                            state,
                            context_id,
                            &call,
                            Purpose::Refresh {
                                session,
                                slot: Some(slot),
                            },
                            &req.request_id,
                        )
                    } else {
                        // Another request took the slot a moment ago: wait for its answer.
                        wait(shared, state, context_id, WaitFor::Refresh { slot })
                    }
                }
                Step::Bypass => dispatch(
                    shared,
                    state,
                    context_id,
                    &call,
                    Purpose::Refresh {
                        session,
                        slot: None,
                    },
                    &req.request_id,
                ),
            }
        }
    }
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
    if !host::enter(call.context_id) {
        return true;
    }
    let now_ms = host::now_ms();
    let (config, keys, login_parts, cache, version) = {
        let s = shared.borrow();
        (
            s.config.clone(),
            s.keys(),
            s.login.clone(),
            s.cache.clone(),
            s.store.version,
        )
    };
    let req = call.state.borrow().login.clone();
    if let (Some(req), Some((sealer, names)), Some(login_cfg)) = (req, login_parts, config.login())
    {
        let env = Env {
            config: &config,
            login: login_cfg,
            sealer: &sealer,
            names: &names,
            keys: keys.as_deref(),
            cache: Some((&cache, version)),
            now: now_ms / 1000,
        };
        match call.purpose {
            Purpose::Exchange { tx, clears } => {
                let reply = login::finish_exchange(&env, &req, &tx, clears, status, &body);
                if reply.status >= 400 {
                    host::log(
                        LogLevel::Warn,
                        &format!("mesh-oidc[{}]: code exchange failed: HTTP {status} from the token endpoint", req.request_id),
                    );
                }
                reply_with(shared, &call.state, &reply);
            }
            Purpose::Refresh { session, slot } => {
                if let Some(slot) = &slot {
                    let until = now_ms + flight::RESULT_TTL_MS;
                    let published = flight::encode_done(flight::digest(slot), until, status, &body);
                    let _ = host::set_shared(&flight::key(slot), &published, None);
                }
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
            WaitFor::Keys { .. } => has_keys && version != w.keys_version,
            WaitFor::Refresh { slot, .. } => {
                let (value, _) = host::get_shared(&flight::key(slot));
                let value = value.unwrap_or_default();
                matches!(
                    flight::step(&flight::decode(&value), flight::digest(slot), now_ms),
                    Step::Use | Step::Take | Step::Bypass
                )
            }
        };
        if !ready && w.deadline_ms > now_ms {
            keep.push(w);
            continue;
        }
        if !host::enter(w.context_id) {
            continue;
        }
        touched = true;
        if ready {
            // Decide again from the start: keys are here, or the shared refresh answered.
            run(shared, &w.state, w.context_id, false, true);
        } else {
            let reply = match &w.what {
                WaitFor::Keys { refetch: true } => {
                    web::unauthorized(Some(TokenError::UnknownKey.description()))
                }
                WaitFor::Keys { refetch: false } => web::keys_unavailable(),
                WaitFor::Refresh { .. } => {
                    let rid = w
                        .state
                        .borrow()
                        .login
                        .as_ref()
                        .map(|r| r.request_id.clone())
                        .unwrap_or_default();
                    login::error_page(504, "The identity provider did not answer in time.", &rid)
                }
            };
            reply_with(shared, &w.state, &reply);
        }
    }
    shared.borrow_mut().waiters.extend(keep);
    if touched {
        host::enter(current);
    }
}
