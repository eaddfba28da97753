//! One request's path through the filter, in either mode: decide, carry the decision out through
//! the host, and pick the request up again when what it waits for (keys, a token call, a shared
//! refresh) arrives. Calls and waits are kept in the VM, so whichever context hears of an event
//! can finish the request it belongs to. No `RefCell` borrow is held across a host call.

use std::cell::RefCell;
use std::rc::Rc;

use crate::flight::{self, Plan};
use crate::host::{Host, HostRandom, Level};
use crate::keystore::Refetch;
use crate::login::{self, Action, Ending, Endings, Env, Exchanged, Forward, Refreshed, TokenCall};
use crate::pending::{HeldRefresh, KeysNow, PendingExchange, WaitFor};
use crate::replay::Claim;
use crate::session::{Session, Transaction};
use crate::validate::{self, Decision, Presented};
use crate::vm::{self, VmRef, Waiter};
use crate::web::Reply;

/// What one request carries through waits and calls.
#[derive(Default)]
pub struct State {
    /// Envoy's `x-request-id` (or `-`), for every log line about this request.
    pub request_id: String,
    /// Validate mode: the raw token (shared, not copied, when the request is decided again).
    pub token: Option<Rc<[u8]>>,
    /// Validate mode: the request carried two different access tokens (B6).
    pub conflict: bool,
    /// Validate mode: headers to set (or remove) when the request goes on (B6).
    pub rewrites: Vec<(&'static str, Option<Vec<u8>>)>,
    /// Validate mode: the method and the path with its query, for the rules (B7).
    pub route: (String, String),
    /// Login mode: the request (shared, not copied, by every callback that reads it).
    pub login: Option<Rc<login::Request<'static>>>,
    /// Login mode, a request that went on at once: its header map as read, from which its
    /// response callback reads the request again only if it must act on a 401 (L7).
    pub headers: Option<crate::inbound::Headers>,
    /// Login mode, the workload's own call to another service (an outbound listener): its
    /// `:authority`. Nothing is done to it; its 401 is remembered for the page (L7+).
    pub outbound: Option<String>,
    /// `Set-Cookie` values for the service's response (after a refresh).
    pub response_cookies: Vec<String>,
}

pub type StateRef = Rc<RefCell<State>>;

/// Without the token, the cookie values and the path (which may carry a code).
impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rewritten: Vec<&str> = self.rewrites.iter().map(|(name, _)| *name).collect();
        write!(
            f,
            "State(id {}, token: {}, conflict: {}, rewrites {:?}, {:?}, outbound {:?}, {} cookies to set)",
            self.request_id,
            self.token.is_some(),
            self.conflict,
            rewritten,
            self.login,
            self.outbound,
            self.response_cookies.len()
        )
    }
}

pub enum Purpose {
    Exchange {
        tx: Transaction,
        clears: Vec<String>,
    },
    /// `slot` is set when this call owns the shared slot and must publish its answer;
    /// `fallback`: a sibling's earlier successful answer for the same refresh token (L5+).
    Refresh {
        session: Session,
        slot: Option<String>,
        fallback: Option<(u32, Vec<u8>)>,
    },
    /// The logout's revocation: `then` is sent whatever the answer.
    Revoke { then: Reply },
    /// V3: is the token still active? `local`: its verified claims when it is a JWT.
    Introspect {
        lookup: crate::introspect::Lookup,
        local: Option<Rc<crate::token::Verified>>,
    },
}

impl std::fmt::Debug for Purpose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Purpose::Exchange { .. } => f.write_str("Exchange([redacted])"),
            Purpose::Revoke { .. } => f.write_str("Revoke"),
            Purpose::Introspect { .. } => f.write_str("Introspect([redacted])"),
            Purpose::Refresh { slot, .. } => write!(f, "Refresh(shared: {})", slot.is_some()),
        }
    }
}

#[derive(Debug)]
pub struct Call {
    pub context_id: u32,
    pub state: StateRef,
    pub purpose: Purpose,
}

impl Call {
    /// The shared slot this call owns: a refresh whose answer other requests wait for.
    pub fn shared_slot(&self) -> Option<&str> {
        match &self.purpose {
            Purpose::Refresh { slot, .. } => slot.as_deref(),
            Purpose::Exchange { .. } | Purpose::Revoke { .. } | Purpose::Introspect { .. } => None,
        }
    }
}

/// Whether the request goes on now (`Continue`) or is held or answered (`Pause`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Continue,
    Pause,
}

/// What a decision needs from the VM, cloned out so that no borrow of it is held while the
/// decision is carried out.
pub struct Snapshot {
    pub config: Rc<crate::config::Config>,
    keys: Option<Rc<crate::jwks::KeySet>>,
    login: Option<(Rc<crate::session::Sealer>, Rc<crate::session::Names>)>,
    cache: Rc<RefCell<crate::token::Cache>>,
    version: u64,
    refetch_now: bool,
    dropped: Rc<[String]>,
    /// So many requests wait already that no more wait for the next fetch.
    crowded: bool,
}

impl Snapshot {
    pub fn take(vm: &VmRef, now_ms: u64) -> Snapshot {
        let v = vm.borrow();
        Snapshot {
            config: v.config.clone(),
            keys: v.keys(),
            login: v.sealer.clone().map(|s| (s, v.names.clone())),
            cache: v.cache.clone(),
            version: v.store.version,
            refetch_now: v.store.refetch_allowed(now_ms),
            dropped: v.store.dropped.clone(),
            crowded: v.waiters.len() >= crate::keystore::MAX_HELD_FOR_NEXT_FETCH,
        }
    }

    /// What a token with an unknown `kid` may do; `ok`: the request has not waited for a
    /// fetch yet.
    pub fn refetch(&self, ok: bool) -> Refetch<'_> {
        match (ok, self.refetch_now, self.crowded) {
            (false, _, _) | (true, false, true) => Refetch::Never,
            (true, true, _) => Refetch::Now,
            (true, false, false) => Refetch::Next {
                dropped: &self.dropped,
            },
        }
    }

    pub fn keys(&self) -> Option<&crate::jwks::KeySet> {
        self.keys.as_deref()
    }

    pub fn cache(&self) -> crate::token::CacheRef<'_> {
        Some((&self.cache, self.version))
    }

    /// The login-mode environment; `None` in validate mode. `lookups`: what the decisions may ask
    /// the host, each only when needed (the sessions back-channel logouts ended, asked only when
    /// `backchannel_logout_path` is set; the connection's TLS).
    pub fn env<'a>(&'a self, now_ms: u64, lookups: &'a HostLookups<'a>) -> Option<Env<'a>> {
        let (sealer, names) = self.login.as_ref()?;
        let login = self.config.login()?;
        Some(Env {
            config: &self.config,
            login,
            sealer,
            names,
            keys: self.keys(),
            cache: self.cache(),
            endings: login
                .backchannel_logout_path
                .is_some()
                .then_some(lookups as &dyn Endings),
            connection: lookups,
            now: now_ms / 1000,
        })
    }
}

/// What the login decisions look up through the host, each only when a decision needs it:
/// sessions ended by back-channel logouts (L8), kept in shared data (each `sid`, and each `sub`
/// with the time it was ended, for as long as the longest session could last), and whether the
/// request's connection is TLS (asked once at most).
pub struct HostLookups<'a> {
    h: &'a dyn Host,
    now: u64,
    tls: std::cell::OnceCell<bool>,
}

impl login::Connection for HostLookups<'_> {
    fn is_tls(&self) -> bool {
        *self.tls.get_or_init(|| self.h.connection_is_tls())
    }
}

/// How long an ended `sid` or `sub` is remembered: the longest session (the session cookie's
/// default lifetime when the provider does not say).
pub const ENDINGS_TTL: u64 = 12 * 3600;
const ENDED_SIDS: &str = "mesh-oidc/ended-sid";
const ENDED_SUBS: &str = "mesh-oidc/ended-sub";

impl<'a> HostLookups<'a> {
    pub fn new(h: &'a dyn Host, now_ms: u64) -> HostLookups<'a> {
        HostLookups {
            h,
            now: now_ms / 1000,
            tls: std::cell::OnceCell::new(),
        }
    }

    fn until_of(&self, set: &str, value: &str) -> Option<u64> {
        let claim = Claim::in_set(set, value, 0);
        let (slot, _) = self.h.get_shared(&claim.key);
        claim.until_in(&slot?, self.now)
    }

    /// Records an ending (its `jti` first: false when the token was used before).
    fn record(&self, ending: &Ending) -> bool {
        let jti = Claim::in_set("mesh-oidc/logout-jti", &ending.jti, ending.jti_until);
        if !record_claim(self.h, &jti, self.now) {
            return false;
        }
        let until = self.now.saturating_add(ENDINGS_TTL);
        // §2.4: a `sid` ends that session only; a token without one ends every session of its
        // `sub`. (Keycloak sends both: only the session ends.)
        let (set, value) = match (&ending.sid, &ending.sub) {
            (Some(sid), _) => (ENDED_SIDS, sid),
            (None, Some(sub)) => (ENDED_SUBS, sub),
            (None, None) => return true,
        };
        // A later ending of the same sub moves its time on: record it again.
        let claim = Claim::in_set(set, value, until);
        record_claim(self.h, &claim.refreshed(), self.now);
        true
    }
}

impl Endings for HostLookups<'_> {
    fn ended(&self, sid: Option<&str>, sub: Option<&str>, issued_at: u64) -> bool {
        if sid.is_some_and(|s| self.until_of(ENDED_SIDS, s).is_some()) {
            return true;
        }
        // Sessions issued before the ending; one issued in its second is the new login.
        sub.and_then(|s| self.until_of(ENDED_SUBS, s))
            .is_some_and(|until| issued_at < until.saturating_sub(ENDINGS_TTL))
    }
}

/// Records a value in its bounded shared-data set; false when it was there (and fresh) already,
/// or when the slot could not be written after a few tries.
fn record_claim(h: &dyn Host, claim: &Claim, now: u64) -> bool {
    for _ in 0..4 {
        let (value, cas) = h.get_shared_for_update(&claim.key);
        let Some(updated) = claim.record(&value, now) else {
            return false;
        };
        if h.set_shared(&claim.key, &updated, cas) {
            return true;
        }
    }
    false
}

fn log_reply(h: &dyn Host, vm: &VmRef, state: &StateRef, reply: &Reply) {
    let rid = state.borrow().request_id.clone();
    let what = reply
        .header("www-authenticate")
        .or_else(|| reply.header("location").map(|_| "redirect"))
        .unwrap_or("local reply");
    // An issuer or audience mismatch: what was expected and what the token says (never the
    // token itself), so that one line explains a misconfiguration.
    let mismatch = reply.events.iter().any(|e| {
        matches!(
            e,
            crate::metrics::Event::TokenRejected("issuer" | "audience")
        )
    });
    let detail = if mismatch {
        let names = vm.borrow().names.clone();
        let token = presented_token(state, &names);
        let config = vm.borrow().config.clone();
        token
            .as_deref()
            .and_then(|t| crate::token::mismatch_detail(t, &config.rules))
            .map(|d| format!(": {d}"))
            .unwrap_or_default()
    } else {
        String::new()
    };
    // The location may carry state and nonce: only say that it redirects.
    h.log(
        Level::Info,
        &format!("mesh-oidc[{rid}]: {} ({what}){detail}", reply.status),
    );
}

/// The token a request presented, for a log line's details (validate mode's, or login mode's
/// bearer or cookie).
fn presented_token(state: &StateRef, names: &crate::session::Names) -> Option<String> {
    let st = state.borrow();
    if let Some(t) = &st.token {
        return Some(String::from_utf8_lossy(t).into_owned());
    }
    let req = st.login.as_ref()?;
    match crate::session::credential(&req.authorization_values(), &req.cookies, names) {
        crate::session::Credential::One { token, .. } => {
            Some(String::from_utf8_lossy(&token).into_owned())
        }
        _ => None,
    }
}

fn apply_forward(h: &dyn Host, vm: &VmRef, state: &StateRef, forward: Forward) {
    vm::count(h, vm, &forward.events);
    if forward.events.contains(&crate::metrics::Event::RefreshOk) {
        let rid = state.borrow().request_id.clone();
        h.log(
            Level::Debug,
            &format!("mesh-oidc[{rid}]: session refreshed"),
        );
    }
    for (name, value) in forward.headers() {
        h.set_request_header(name, Some(value.as_bytes()));
    }
    h.set_request_header("cookie", forward.cookie_header.as_deref());
    state.borrow_mut().response_cookies = forward.response_cookies;
}

/// Decides a request (again, when it waited) and carries the decision out in the effective
/// context. `held`: the request was paused before, so continuing means resuming it.
pub fn run(
    h: &dyn Host,
    vm: &VmRef,
    state: &StateRef,
    context_id: u32,
    refetch_ok: bool,
    held: bool,
) -> Outcome {
    let now_ms = h.now_ms();
    let snap = Snapshot::take(vm, now_ms);
    let lookups = HostLookups::new(h, now_ms);
    let refetch = snap.refetch(refetch_ok);
    // Cloned out first: the borrow must end before carrying the decision out writes to `state`.
    let login_req = state.borrow().login.clone();
    let outcome = if snap.config.awaiting_discovery {
        // Issue 13: no endpoint is known before the discovery document: held like the keys.
        wait(h, vm, state, context_id, WaitFor::Keys { refetch: false })
    } else if let (Some(req), Some(env)) = (login_req, snap.env(now_ms, &lookups)) {
        let action = login::decide(&env, &req, &mut HostRandom(h), refetch);
        carry_out(h, vm, state, context_id, action, &env, &req)
    } else {
        // A plain decision, no host call: the borrow may last through it.
        let decision = {
            let st = state.borrow();
            let presented = match (&st.token, st.conflict) {
                (_, true) => Presented::Conflict,
                (Some(t), false) => Presented::Token(t),
                (None, false) => Presented::Nothing,
            };
            decide_validate(
                &snap,
                (&st.route.0, &st.route.1),
                presented,
                now_ms,
                refetch,
            )
        };
        carry_out_validate(h, vm, state, context_id, decision, &snap, now_ms)
    };
    if held && outcome == Outcome::Continue {
        h.resume_request();
    }
    outcome
}

fn decide_validate(
    snap: &Snapshot,
    route: (&str, &str),
    presented: Presented,
    now_ms: u64,
    refetch: Refetch,
) -> Decision {
    validate::decide(
        &snap.config,
        route,
        presented,
        snap.keys(),
        snap.cache(),
        now_ms / 1000,
        refetch,
    )
}

/// A validate-mode request's first decision, made on the request's own bytes before it has any
/// state: one that goes on at once (the warm path) leaves nothing behind, and is carried out
/// here. Any other comes back with what carrying it out needs ([`carry_out_validate_first`]), once the
/// request's state is built; the decision is never made twice (a token that fails costs one
/// verification).
pub fn validate_first(
    h: &dyn Host,
    vm: &VmRef,
    presented: Presented,
    route: (&str, &str),
    rewrites: &[(&'static str, Option<Vec<u8>>)],
) -> Option<ValidateDecided> {
    let now_ms = h.now_ms();
    let snap = Snapshot::take(vm, now_ms);
    let decision = if snap.config.awaiting_discovery {
        // Issue 13: no endpoint is known before the discovery document: held like the keys.
        Decision::WaitForKeys
    } else {
        decide_validate(&snap, route, presented, now_ms, snap.refetch(true))
    };
    match decision {
        Decision::Continue(headers) => {
            for (name, value) in headers.iter() {
                h.set_request_header(name, Some(value.as_bytes()));
            }
            for (name, value) in rewrites {
                h.set_request_header(name, value.as_deref());
            }
            None
        }
        decision => Some(ValidateDecided {
            decision,
            snap,
            now_ms,
        }),
    }
}

/// A login-mode request's first decision, made on the request borrowed from its header map: one
/// that goes on at once (the warm path: a valid access token, nothing to refresh) is carried out
/// here and needs no owned copy of the request. Any other comes back to be carried out once
/// the request's state is built ([`carry_out_login_first`]); the decision is never made twice.
pub fn login_first(h: &dyn Host, vm: &VmRef, req: &login::Request) -> LoginFirst {
    let now_ms = h.now_ms();
    let snap = Snapshot::take(vm, now_ms);
    if snap.config.awaiting_discovery {
        return LoginFirst::Run;
    }
    let lookups = HostLookups::new(h, now_ms);
    let Some(env) = snap.env(now_ms, &lookups) else {
        return LoginFirst::Run;
    };
    let action = login::decide(&env, req, &mut HostRandom(h), snap.refetch(true));
    let tls = lookups.tls.get().copied();
    match action {
        Action::Continue(forward)
            if forward.response_cookies.is_empty() && forward.events.is_empty() =>
        {
            for (name, value) in forward.headers() {
                h.set_request_header(name, Some(value.as_bytes()));
            }
            h.set_request_header("cookie", forward.cookie_header.as_deref());
            LoginFirst::Went
        }
        action => LoginFirst::Decided(Box::new(LoginDecided {
            action,
            tls,
            snap,
            now_ms,
        })),
    }
}

/// A login-mode decision that needs the request's state, from [`login_first`].
pub struct LoginDecided {
    action: Action,
    /// Whether the connection is TLS, when the decision asked.
    tls: Option<bool>,
    snap: Snapshot,
    now_ms: u64,
}

/// What [`login_first`] did.
pub enum LoginFirst {
    /// The request went on; nothing of it is kept but its header map.
    Went,
    /// Decided: to be carried out with the request's state.
    Decided(Box<LoginDecided>),
    /// Not decided here (the configuration awaits discovery): [`run`] it with its state.
    Run,
}

/// Carries out a login-mode first decision that needs the request's state, whose request `req`
/// is.
pub fn carry_out_login_first(
    h: &dyn Host,
    vm: &VmRef,
    state: &StateRef,
    context_id: u32,
    req: &login::Request,
    decided: LoginDecided,
) -> Outcome {
    let LoginDecided {
        action,
        tls,
        snap,
        now_ms,
    } = decided;
    let lookups = HostLookups::new(h, now_ms);
    if let Some(tls) = tls {
        let _ = lookups.tls.set(tls);
    }
    match snap.env(now_ms, &lookups) {
        Some(env) => carry_out(h, vm, state, context_id, action, &env, req),
        // Never: the decision was made with this snapshot's environment.
        None => run(h, vm, state, context_id, true, false),
    }
}

/// A validate-mode decision that needs the request's state, from [`validate_first`].
pub struct ValidateDecided {
    decision: Decision,
    snap: Snapshot,
    now_ms: u64,
}

/// Carries out a validate-mode first decision that needs the request's state.
pub fn carry_out_validate_first(
    h: &dyn Host,
    vm: &VmRef,
    state: &StateRef,
    context_id: u32,
    first: ValidateDecided,
) -> Outcome {
    let ValidateDecided {
        decision,
        snap,
        now_ms,
    } = first;
    carry_out_validate(h, vm, state, context_id, decision, &snap, now_ms)
}

/// Carries a validate-mode decision out.
fn carry_out_validate(
    h: &dyn Host,
    vm: &VmRef,
    state: &StateRef,
    context_id: u32,
    decision: Decision,
    snap: &Snapshot,
    now_ms: u64,
) -> Outcome {
    match decision {
        Decision::Continue(headers) => {
            for (name, value) in headers.iter() {
                h.set_request_header(name, Some(value.as_bytes()));
            }
            let rewrites = std::mem::take(&mut state.borrow_mut().rewrites);
            for (name, value) in &rewrites {
                h.set_request_header(name, value.as_deref());
            }
            Outcome::Continue
        }
        Decision::Reply(reply) => reply_with(h, vm, state, &reply),
        Decision::WaitForKeys => wait(h, vm, state, context_id, WaitFor::Keys { refetch: false }),
        Decision::RefetchKeys => wait(h, vm, state, context_id, WaitFor::Keys { refetch: true }),
        Decision::Introspect { local } => {
            let (token, route) = {
                let st = state.borrow();
                (st.token.clone().unwrap_or_default(), st.route.clone())
            };
            let lookup = crate::introspect::Lookup::new(&snap.config.rules.issuer, &token);
            let (cached, _) = h.get_shared(&lookup.key);
            if let Some(answer) = cached.and_then(|v| lookup.cached(&v, now_ms / 1000)) {
                let decision = validate::after_introspection(
                    &snap.config,
                    (&route.0, &route.1),
                    local.as_deref(),
                    &answer,
                );
                return carry_out_validate(h, vm, state, context_id, decision, snap, now_ms);
            }
            let Some(intro) = snap.config.introspection.as_ref() else {
                return reply_with(h, vm, state, &introspection_refused());
            };
            let call = crate::introspect::call(intro, &String::from_utf8_lossy(&token));
            dispatch(
                h,
                vm,
                state,
                context_id,
                &call,
                Purpose::Introspect { lookup, local },
            )
        }
    }
}

fn introspection_refused() -> Reply {
    match validate::introspection_failed() {
        Decision::Reply(r) => r,
        _ => crate::web::unauthorized(None),
    }
}

pub fn reply_with(h: &dyn Host, vm: &VmRef, state: &StateRef, reply: &Reply) -> Outcome {
    vm::count(h, vm, &reply.events);
    log_reply(h, vm, state, reply);
    h.send_reply(reply);
    Outcome::Pause
}

fn wait(h: &dyn Host, vm: &VmRef, state: &StateRef, context_id: u32, what: WaitFor) -> Outcome {
    let now = h.now_ms();
    {
        let mut v = vm.borrow_mut();
        // A wait for a refetch starts when the rate limit allows the fetch.
        let from = if what.refetches() {
            v.store.refetch_requested = true;
            now.max(v.store.refetch_at_ms())
        } else {
            now
        };
        let deadline_ms = what.deadline_ms(from, v.config.timeout_ms);
        let keys_version = v.store.version;
        v.waiters.push(Waiter {
            context_id,
            keys_version,
            deadline_ms,
            state: state.clone(),
            what,
        });
    }
    // The fetch itself starts from the root context's next tick: a call made on behalf of a
    // request is cancelled by Envoy when that request's client goes away, and every other
    // request waiting for the keys would wait with it.
    Outcome::Pause
}

fn carry_out(
    h: &dyn Host,
    vm: &VmRef,
    state: &StateRef,
    context_id: u32,
    action: Action,
    env: &Env,
    req: &login::Request,
) -> Outcome {
    match action {
        Action::Continue(forward) => {
            apply_forward(h, vm, state, forward);
            Outcome::Continue
        }
        Action::Reply(reply) => reply_with(h, vm, state, &reply),
        Action::WaitForKeys => wait(h, vm, state, context_id, WaitFor::Keys { refetch: false }),
        Action::RefetchKeys => wait(h, vm, state, context_id, WaitFor::Keys { refetch: true }),
        Action::EndSessions { ending } => {
            let endings = HostLookups::new(h, h.now_ms());
            let reply = if endings.record(&ending) {
                h.log(
                    Level::Info,
                    &format!(
                        "mesh-oidc[{}]: back-channel logout: sessions of that {} end",
                        req.request_id,
                        if ending.sid.is_some() { "sid" } else { "sub" }
                    ),
                );
                login::ended_reply()
            } else {
                login::replayed_reply()
            };
            reply_with(h, vm, state, &reply)
        }
        Action::Revoke { call, then } => {
            dispatch(h, vm, state, context_id, &call, Purpose::Revoke { then })
        }
        Action::Exchange {
            call,
            tx,
            clears,
            replay,
        } => {
            if !record_state(h, &replay, env.now) {
                return reply_with(h, vm, state, &login::replayed(req, &clears));
            }
            let purpose = Purpose::Exchange { tx, clears };
            dispatch(h, vm, state, context_id, &call, purpose)
        }
        Action::Refresh {
            call,
            session,
            slot,
        } => {
            let key = flight::key(&slot);
            let (value, cas) = h.get_shared_for_update(&key);
            let plan = flight::plan(&slot, &value, h.now_ms(), env.config.timeout_ms);
            // L5+: a sibling's earlier success for this very token, kept in case the provider
            // says the token was spent (rotation): then that answer is the user's session.
            let fallback = flight::previous_success(&slot, &value);
            // Whether this request owns the shared slot (and publishes its answer), or refreshes
            // unshared because the slot is busy with another token.
            let owned = match plan {
                Plan::Use { status, body } => {
                    let held = HeldRefresh {
                        session,
                        status,
                        body,
                    };
                    let snap = Snapshot::take(vm, h.now_ms());
                    let refetch = snap.refetch(true);
                    return refresh_answered(h, vm, state, context_id, env, req, held, refetch);
                }
                Plan::Wait => return wait(h, vm, state, context_id, WaitFor::Refresh { slot }),
                Plan::Take { value } => {
                    if !h.set_shared(&key, &value, cas) {
                        // Another request took the slot a moment ago: wait for its answer.
                        return wait(h, vm, state, context_id, WaitFor::Refresh { slot });
                    }
                    Some(slot)
                }
                Plan::Bypass => None,
            };
            let purpose = Purpose::Refresh {
                fallback,
                session,
                slot: owned,
            };
            dispatch(h, vm, state, context_id, &call, purpose)
        }
    }
}

/// Records a callback's state in shared data (L2+); false when it was used before, or when the
/// slot could not be written after a few tries (fail closed: the user starts again).
fn record_state(h: &dyn Host, claim: &Claim, now: u64) -> bool {
    record_claim(h, claim, now)
}

fn dispatch(
    h: &dyn Host,
    vm: &VmRef,
    state: &StateRef,
    context_id: u32,
    call: &TokenCall,
    purpose: Purpose,
) -> Outcome {
    let config = vm.borrow().config.clone();
    let headers: Vec<(&str, &str)> = call
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let Some(token) = h.dispatch(
        &config.cluster,
        &headers,
        Some(call.body.as_bytes()),
        config.timeout_ms,
    ) else {
        h.log(
            Level::Error,
            &format!(
                "mesh-oidc: cannot call the token endpoint: cluster {} is not known to Envoy",
                config.cluster
            ),
        );
        if let Purpose::Revoke { then } = purpose {
            return reply_with(h, vm, state, &then);
        }
        let rid = state.borrow().request_id.clone();
        let page = login::error_page(502, "The identity provider cannot be reached.", &rid);
        return reply_with(h, vm, state, &page);
    };
    let call = Call {
        context_id,
        state: state.clone(),
        purpose,
    };
    // An answer that came inline, before the token was known, is handled here and now.
    let early = vm.borrow_mut().take_early(token);
    match early {
        Some((status, body)) => call_answered(h, vm, call, status, body, context_id),
        None => {
            vm.borrow_mut().calls.insert(token, call);
            Outcome::Pause
        }
    }
}

/// Largest token-endpoint answer read.
const MAX_CALL_BODY: usize = 1024 * 1024;

/// A dispatched call answered (or timed out), heard in context `current`. False if it was not a
/// request's call (it may be the key-set fetch, or an answer that came before its dispatch
/// returned, which is kept for the dispatcher).
pub fn on_call_response(
    h: &dyn Host,
    vm: &VmRef,
    token: u32,
    body_size: usize,
    current: u32,
) -> bool {
    let call = vm.borrow_mut().calls.remove(&token);
    let Some(call) = call else {
        return false;
    };
    let status = h.call_response_status();
    let body = h.call_response_body(body_size.min(MAX_CALL_BODY));
    if !h.enter(call.context_id) {
        // The request is gone (its stream was reset): the late answer is dropped.
        h.enter(current);
        return true;
    }
    if call_answered(h, vm, call, status, body, current) == Outcome::Continue {
        h.resume_request();
    }
    h.enter(current);
    true
}

/// Keeps an answer for a token no call is known under yet.
pub fn keep_early(h: &dyn Host, vm: &VmRef, token: u32, body_size: usize) {
    let status = h.call_response_status();
    let body = h.call_response_body(body_size.min(MAX_CALL_BODY));
    vm::Vm::keep_early(vm, token, status, body);
}

/// Carries out what a token-endpoint answer means for the request that made the call (in its
/// context, when it still exists). A shared refresh's answer is published first, and the
/// requests waiting for it are settled.
fn call_answered(
    h: &dyn Host,
    vm: &VmRef,
    call: Call,
    status: u32,
    body: Vec<u8>,
    current: u32,
) -> Outcome {
    let now_ms = h.now_ms();
    let rid = call.state.borrow().request_id.clone();
    let (status, body) = match &call.purpose {
        // L5+: the provider says the refresh token was spent — by a sibling that refreshed it a
        // moment ago (rotation): its answer is this session's.
        Purpose::Refresh {
            fallback: Some((s, b)),
            ..
        } if flight::is_invalid_grant(status, &body) => {
            h.log(
                Level::Info,
                &format!("mesh-oidc[{rid}]: the refresh token was spent by a sibling request: its answer is used"),
            );
            (*s, b.clone())
        }
        _ => (status, body),
    };
    let mut published = false;
    if let Purpose::Refresh {
        slot: Some(slot), ..
    } = &call.purpose
    {
        let until = now_ms.saturating_add(flight::result_ttl_ms(status, &body));
        let answer = flight::encode_done(flight::digest(slot), until, status, &body);
        let _ = h.set_shared(&flight::key(slot), &answer, None);
        published = true;
    }
    if !(200..300).contains(&status) {
        let what = match call.purpose {
            Purpose::Exchange { .. } => "code exchange",
            Purpose::Refresh { .. } => "refresh",
            Purpose::Revoke { .. } => "revocation at logout (the logout goes on)",
            Purpose::Introspect { .. } => "introspection (the token is refused)",
        };
        // The provider's error code, as the user's page shows it (never its description).
        let code = crate::login::provider_error_code(&body);
        h.log(
            Level::Info,
            format!("mesh-oidc[{rid}]: {what}: the token endpoint answered HTTP {status} {code}")
                .trim_end(),
        );
    }
    // The key set may have arrived from another VM since the last tick.
    vm::sync(h, vm);
    let snap = Snapshot::take(vm, now_ms);
    let lookups = HostLookups::new(h, now_ms);
    let req = call.state.borrow().login.clone();
    let outcome = match (req, snap.env(now_ms, &lookups), call.purpose) {
        (_, _, Purpose::Revoke { then }) => reply_with(h, vm, &call.state, &then),
        (_, _, Purpose::Introspect { lookup, local }) => introspected(
            h,
            vm,
            &call.state,
            call.context_id,
            &snap,
            lookup,
            local,
            status,
            &body,
        ),
        (Some(req), Some(env), Purpose::Exchange { tx, clears }) => {
            let exchange = PendingExchange {
                tx,
                clears,
                status,
                body,
            };
            let refetch = snap.refetch(true);
            finish_exchange(
                h,
                vm,
                &call.state,
                call.context_id,
                &env,
                &req,
                exchange,
                refetch,
            )
        }
        (Some(req), Some(env), Purpose::Refresh { session, .. }) => {
            let held = HeldRefresh {
                session,
                status,
                body,
            };
            let refetch = snap.refetch(true);
            refresh_answered(
                h,
                vm,
                &call.state,
                call.context_id,
                &env,
                &req,
                held,
                refetch,
            )
        }
        _ => Outcome::Pause,
    };
    if published {
        settle(h, vm, now_ms, current);
    }
    outcome
}

/// V3: the provider answered an introspection: cached (a judged answer, never an error), then the
/// validate-mode decision.
#[allow(clippy::too_many_arguments)]
fn introspected(
    h: &dyn Host,
    vm: &VmRef,
    state: &StateRef,
    context_id: u32,
    snap: &Snapshot,
    lookup: crate::introspect::Lookup,
    local: Option<Rc<crate::token::Verified>>,
    status: u32,
    body: &[u8],
) -> Outcome {
    let now_ms = h.now_ms();
    let now = now_ms / 1000;
    let route = state.borrow().route.clone();
    let decision = match crate::introspect::judge(status, body, &snap.config.rules, now) {
        Ok(answer) => {
            let cache_seconds = snap
                .config
                .introspection
                .as_ref()
                .map_or(0, |i| i.cache_seconds);
            let until = crate::introspect::cache_until(&answer, now, cache_seconds);
            if let Some(value) = lookup.encode(&answer, until).filter(|_| until > now) {
                let _ = h.set_shared(&lookup.key, &value, None);
            }
            validate::after_introspection(
                &snap.config,
                (&route.0, &route.1),
                local.as_deref(),
                &answer,
            )
        }
        Err(why) => {
            let rid = state.borrow().request_id.clone();
            h.log(
                Level::Warn,
                &format!("mesh-oidc[{rid}]: {why}; the token is refused"),
            );
            validate::introspection_failed()
        }
    };
    carry_out_validate(h, vm, state, context_id, decision, snap, now_ms)
}

/// Checks the code exchange's answer, or holds it until the key set can check its ID token.
#[allow(clippy::too_many_arguments)]
fn finish_exchange(
    h: &dyn Host,
    vm: &VmRef,
    state: &StateRef,
    context_id: u32,
    env: &Env,
    req: &login::Request,
    exchange: PendingExchange,
    refetch: Refetch,
) -> Outcome {
    let PendingExchange {
        tx,
        clears,
        status,
        body,
    } = &exchange;
    let outcome = login::finish_exchange(env, req, tx, clears.clone(), *status, body, refetch);
    let refetch = match outcome {
        Exchanged::Reply(reply) => {
            if let Some(why) = reply.events.iter().find_map(|e| match e {
                crate::metrics::Event::CallbackFailed(why) => Some(*why),
                _ => None,
            }) {
                h.log(
                    Level::Info,
                    &format!("mesh-oidc[{}]: sign-in failed ({why})", req.request_id),
                );
            }
            return reply_with(h, vm, state, &reply);
        }
        Exchanged::WaitForKeys => false,
        Exchanged::RefetchKeys => true,
    };
    let what = WaitFor::Exchange {
        exchange: Box::new(exchange),
        refetch,
    };
    wait(h, vm, state, context_id, what)
}

/// Judges a refresh's answer (the request's own, or one a sibling published): go on with the new
/// token, log in again (the reason logged), or hold the answer until the key set can check it.
#[allow(clippy::too_many_arguments)]
fn refresh_answered(
    h: &dyn Host,
    vm: &VmRef,
    state: &StateRef,
    context_id: u32,
    env: &Env,
    req: &login::Request,
    held: HeldRefresh,
    refetch: Refetch,
) -> Outcome {
    let judged = login::finish_refresh(
        env,
        req,
        &held.session,
        held.status,
        &held.body,
        &mut HostRandom(h),
        refetch,
    );
    let refetch = match judged {
        Refreshed::Done { action, failure } => {
            if let Some(why) = failure {
                h.log(
                    Level::Info,
                    &format!("mesh-oidc[{}]: refresh refused: {why}", req.request_id),
                );
            }
            return carry_out(h, vm, state, context_id, *action, env, req);
        }
        Refreshed::RefetchKeys => true,
        Refreshed::WaitForKeys => false,
    };
    let what = WaitFor::Refreshed {
        refresh: Box::new(held),
        refetch,
    };
    wait(h, vm, state, context_id, what)
}

/// Picks up waiting requests: after a key-set change, a published refresh, or a deadline.
/// `current` is the context the host is in; it is entered again at the end.
pub fn settle(h: &dyn Host, vm: &VmRef, now_ms: u64, current: u32) {
    let (waiters, has_keys, version) = {
        let mut v = vm.borrow_mut();
        if v.waiters.is_empty() {
            return;
        }
        (
            std::mem::take(&mut v.waiters),
            v.store.keys.is_some(),
            v.store.version,
        )
    };
    let mut keep = Vec::new();
    let mut touched = false;
    for w in waiters {
        let slot_step = match &w.what {
            WaitFor::Refresh { slot } => {
                let (value, _) = h.get_shared(&flight::key(slot));
                let value = value.unwrap_or_default();
                Some(flight::step(
                    &flight::decode(&value),
                    flight::digest(slot),
                    now_ms,
                ))
            }
            _ => None,
        };
        let keys = KeysNow {
            present: has_keys,
            newer: version != w.keys_version,
        };
        let ready = w.what.is_ready(keys, slot_step);
        if !ready && w.deadline_ms > now_ms {
            keep.push(w);
            continue;
        }
        if !h.enter(w.context_id) {
            continue;
        }
        touched = true;
        resume_waiter(h, vm, w, ready, now_ms);
    }
    vm.borrow_mut().waiters.extend(keep);
    if touched {
        h.enter(current);
    }
}

/// A waiter whose wait is over, in its own context: decided again, or answered as expired.
fn resume_waiter(h: &dyn Host, vm: &VmRef, w: Waiter, ready: bool, now_ms: u64) {
    let req = w.state.borrow().login.clone();
    let lookups = HostLookups::new(h, now_ms);
    match w.what {
        WaitFor::Exchange { exchange, .. } if ready => {
            let snap = Snapshot::take(vm, now_ms);
            if let (Some(req), Some(env)) = (req, snap.env(now_ms, &lookups)) {
                finish_exchange(
                    h,
                    vm,
                    &w.state,
                    w.context_id,
                    &env,
                    &req,
                    *exchange,
                    Refetch::Never,
                );
            }
        }
        WaitFor::Refreshed { refresh, .. } if ready => {
            let snap = Snapshot::take(vm, now_ms);
            if let (Some(req), Some(env)) = (req, snap.env(now_ms, &lookups)) {
                let outcome = refresh_answered(
                    h,
                    vm,
                    &w.state,
                    w.context_id,
                    &env,
                    &req,
                    *refresh,
                    Refetch::Never,
                );
                if outcome == Outcome::Continue {
                    h.resume_request();
                }
            }
        }
        // Decide again from the start: keys are here, or the shared refresh answered.
        _ if ready => {
            run(h, vm, &w.state, w.context_id, false, true);
        }
        what => {
            let rid = w.state.borrow().request_id.clone();
            reply_with(h, vm, &w.state, &what.expired(&rid));
        }
    }
}

#[cfg(test)]
mod debug_tests {
    use super::*;

    #[test]
    fn state_and_cache_never_print_their_tokens() {
        let state = State {
            request_id: "rid-1".into(),
            token: Some(Rc::from(&b"secret.token.value"[..])),
            rewrites: vec![("cookie", Some(b"access_token=secret.token.value".to_vec()))],
            route: ("GET".into(), "/cb?code=secret-code".into()),
            response_cookies: vec!["access_token_session=secret-sealed".into()],
            ..State::default()
        };
        let shown = format!("{state:?}");
        assert!(
            shown.contains("rid-1") && shown.contains("cookie"),
            "{shown}"
        );
        assert!(!shown.contains("secret"), "{shown}");
        let cache = crate::token::Cache::default();
        assert_eq!(format!("{cache:?}"), "Cache(0 tokens)");
    }
}
