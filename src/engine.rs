//! The engine: what the filter does at each proxy-wasm callback, driven through [`Host`]. The
//! proxy-wasm layer (`filter/`) calls these functions and does nothing else; the tests call them
//! with a fake host.

use crate::config::{Config, Upstream401};
use crate::flow::{self, Outcome, Snapshot, State, StateRef};
use crate::host::{Host, HostRandom, Level};
use crate::inbound;
use crate::login;
use crate::replay::Claim;
use crate::validate::{self, Presented};
use crate::vm::{self, Vm, VmRef};

/// How often the root context ticks while requests wait or no key set has arrived yet.
pub const BUSY_TICK_MS: u64 = 200;
/// How often it ticks otherwise: the key-set schedule is in seconds.
pub const IDLE_TICK_MS: u64 = 1_000;

/// The version line logged once when the VM starts.
pub fn version() -> String {
    let hash = option_env!("MESH_OIDC_GIT_HASH").unwrap_or("unknown");
    format!(
        "mesh-oidc {} (git {hash}) started",
        env!("CARGO_PKG_VERSION")
    )
}

/// Parses the plugin configuration: the VM's state, or `None` after one log line that names the
/// key and what is wrong with it.
pub fn configure(h: &dyn Host, bytes: &[u8]) -> Option<VmRef> {
    let config = match Config::parse(bytes) {
        Ok(config) => config,
        Err(e) => {
            h.log(
                Level::Error,
                &format!("mesh-oidc: invalid configuration: {e}"),
            );
            return None;
        }
    };
    for warning in &config.warnings {
        h.log(Level::Warn, &format!("mesh-oidc: configuration: {warning}"));
    }
    let keys_from = if config.awaiting_discovery {
        "the discovery document".to_string()
    } else {
        config.jwks.url.to_string()
    };
    h.log(
        Level::Info,
        &format!(
            "mesh-oidc: configured ({} mode, issuer {}, keys from {} via cluster {})",
            if config.login().is_some() {
                "login"
            } else {
                "validate"
            },
            config.rules.issuer,
            keys_from,
            config.cluster
        ),
    );
    let awaiting = config.awaiting_discovery;
    create_shared_keys(h, &config);
    let vm = Vm::new(config)?;
    if awaiting {
        vm.borrow_mut().keep_raw_config(bytes);
    }
    Some(vm)
}

/// Creates, empty, every shared-data key this configuration writes with compare-and-set. Shared
/// data has no "create if absent": the first write of a key carries no CAS and always succeeds,
/// so two workers racing on a fresh key (the first refresh of a session, say) could both win,
/// and one could overwrite the other. Created here, while no request runs, every later write is
/// a real compare-and-set; a key some VM already holds is left as it is.
fn create_shared_keys(h: &dyn Host, config: &Config) {
    let mut sets: Vec<&str> = Vec::new();
    if let Some(login) = config.login() {
        sets.extend(["mesh-oidc/refresh", "mesh-oidc/state"]);
        if !login.upstream_401_services.is_empty() {
            sets.push(OUTBOUND_401_SET);
        }
        if login.backchannel_logout_path.is_some() {
            sets.extend([
                "mesh-oidc/logout-jti",
                "mesh-oidc/ended-sid",
                "mesh-oidc/ended-sub",
            ]);
        }
    }
    let slots = crate::replay::SLOTS.max(crate::login::REFRESH_SLOTS);
    for set in sets {
        for i in 0..slots {
            let key = format!("{set}/{i}");
            if h.get_shared(&key).1.is_none() {
                let _ = h.set_shared(&key, b"", None);
            }
        }
    }
    let lease = crate::keystore::KeyStore::lease_key(&config.cluster, config.jwks.url.as_str());
    if h.get_shared(&lease).1.is_none() {
        let _ = h.set_shared(&lease, b"", None);
    }
}

/// The root context's timer, in context `root`: key sets other VMs fetched, waits that are over,
/// a fetch that is due. Returns the tick period wanted next (ms).
pub fn tick(h: &dyn Host, vm: &VmRef, root: u32) -> u64 {
    let now = h.now_ms();
    vm::sync(h, vm);
    flow::settle(h, vm, now, root);
    vm::maybe_fetch(h, vm, now);
    vm::maybe_preflight(h, vm, now);
    let v = vm.borrow();
    if v.is_idle() && v.store.keys.is_some() && !v.store.fetch_in_flight(now) {
        IDLE_TICK_MS
    } else {
        BUSY_TICK_MS
    }
}

/// A request's headers, in context `ctx`; `end_of_stream`: the request has no body.
pub fn request_headers(h: &dyn Host, vm: &VmRef, ctx: u32, end_of_stream: bool) -> Outcome {
    let (config, names) = {
        let v = vm.borrow();
        (v.config.clone(), v.names.clone())
    };
    let headers = h.request_headers();
    // L7+: the outbound side is on only where it was asked for (upstream_401_services), and only
    // on a workload's outbound listener; anywhere else the login filter is a login filter.
    let watches_outbound = config
        .login()
        .is_some_and(|l| !l.upstream_401_services.is_empty());
    if watches_outbound && h.is_outbound() {
        // L7+: the workload calls another service; only its answer matters.
        let state = State {
            request_id: headers.request_id(),
            outbound: Some(headers.text(":authority").unwrap_or_default().to_string()),
            ..State::default()
        };
        let state = std::rc::Rc::new(std::cell::RefCell::new(state));
        vm.borrow_mut().requests.insert(ctx, state);
        return Outcome::Continue;
    }
    // B3: a client can never set a claim header itself, in any spelling, skip paths included.
    for name in headers.names() {
        if validate::is_claim_header(&config, name) {
            h.set_request_header(name, None);
        }
    }
    let path = String::from_utf8_lossy(headers.bytes(":path").unwrap_or_default());
    let skipped = config.is_skipped(&path);
    if config.login().is_some() && !skipped {
        // Login mode reads the credentials in its decisions.
        drop(path);
        return login_request(h, vm, ctx, &config, headers, end_of_stream);
    }
    // B6, read here for validate mode and skip paths.
    let cookie = headers.cookies();
    let auths: Vec<&[u8]> = headers.all("authorization").collect();
    let read = inbound::read(&auths, cookie.as_deref(), &names, skipped);
    if skipped {
        if read.conflict {
            h.send_reply(&inbound::conflict_reply());
            return Outcome::Pause;
        }
        for (name, value) in &read.rewrites {
            h.set_request_header(name, value.as_deref());
        }
        return Outcome::Continue;
    }
    validate_request(h, vm, ctx, &config, &headers, &path, read)
}

/// A login-mode request, decided on the request borrowed from its header map. One that goes on
/// at once keeps only that map (its response may need the request: L7); any other keeps the
/// request, owned.
fn login_request(
    h: &dyn Host,
    vm: &VmRef,
    ctx: u32,
    config: &Config,
    headers: inbound::Headers,
    end_of_stream: bool,
) -> Outcome {
    let req = headers.login_request(config.trust_forwarded_proto);
    // L8: a back-channel logout is decided on its body.
    let awaits_body = !end_of_stream
        && req.method == "POST"
        && config.login().is_some_and(|l| {
            l.backchannel_logout_path.as_deref() == Some(crate::web::path_only(&req.path))
        });
    let decided = if awaits_body {
        None
    } else {
        match flow::login_first(h, vm, &req) {
            flow::LoginFirst::Went => {
                drop(req);
                let state = State {
                    headers: Some(headers),
                    ..State::default()
                };
                let state = std::rc::Rc::new(std::cell::RefCell::new(state));
                vm.borrow_mut().requests.insert(ctx, state);
                return Outcome::Continue;
            }
            flow::LoginFirst::Decided(decided) => Some(*decided),
            flow::LoginFirst::Run => None,
        }
    };
    let req = std::rc::Rc::new(req.into_owned());
    let state = State {
        login: Some(req.clone()),
        request_id: req.request_id.to_string(),
        ..State::default()
    };
    let state = std::rc::Rc::new(std::cell::RefCell::new(state));
    vm.borrow_mut().requests.insert(ctx, state.clone());
    if awaits_body {
        // Continue from the headers: a Pause here would stop Envoy from handing this filter the
        // body at all (proxy-wasm turns it into StopAllIteration). The body callback holds the
        // request until it is whole, then answers it locally.
        return Outcome::Continue;
    }
    match decided {
        Some(decided) => flow::carry_out_login_first(h, vm, &state, ctx, &req, decided),
        None => flow::run(h, vm, &state, ctx, true, false),
    }
}

/// A validate-mode request, decided on its own bytes: its state is built only when it waits, is
/// answered, or is introspected; one that goes on at once leaves nothing behind.
fn validate_request(
    h: &dyn Host,
    vm: &VmRef,
    ctx: u32,
    config: &Config,
    headers: &inbound::Headers,
    path: &str,
    read: inbound::Inbound,
) -> Outcome {
    // Only the access rules (B7) read the route.
    let route = if config.access_rules.is_empty() {
        ("", "")
    } else {
        (headers.text(":method").unwrap_or_default(), path)
    };
    let presented = match (&read.token, read.conflict) {
        (_, true) => Presented::Conflict,
        (Some(t), false) => Presented::Token(t),
        (None, false) => Presented::Nothing,
    };
    let Some(first) = flow::validate_first(h, vm, presented, route, &read.rewrites) else {
        return Outcome::Continue;
    };
    let state = State {
        token: read.token.map(|t| std::rc::Rc::from(&*t)),
        conflict: read.conflict,
        rewrites: read.rewrites,
        route: (route.0.to_string(), route.1.to_string()),
        request_id: headers.request_id(),
        ..State::default()
    };
    let state = std::rc::Rc::new(std::cell::RefCell::new(state));
    vm.borrow_mut().requests.insert(ctx, state.clone());
    flow::carry_out_validate_first(h, vm, &state, ctx, first)
}

fn path_of(state: &State) -> String {
    state
        .login
        .as_ref()
        .map(|r| r.path.to_string())
        .unwrap_or_default()
}

/// A request's body, in context `ctx`: only a back-channel logout waits for it (L8); it is read
/// whole (bounded), then decided.
pub fn request_body(
    h: &dyn Host,
    vm: &VmRef,
    ctx: u32,
    body_size: usize,
    end_of_stream: bool,
) -> Outcome {
    let state = vm.borrow().requests.get(&ctx).cloned();
    let Some(state) = state else {
        return Outcome::Continue;
    };
    let waiting = state
        .borrow()
        .login
        .as_ref()
        .is_some_and(|r| r.body.is_none() && r.method == "POST");
    let is_backchannel = {
        let v = vm.borrow();
        v.config
            .login()
            .and_then(|l| l.backchannel_logout_path.clone())
            .is_some_and(|p| p == crate::web::path_only(&path_of(&state.borrow())))
    };
    if !waiting || !is_backchannel {
        return Outcome::Continue;
    }
    let too_large = body_size > crate::login::backchannel::MAX_BODY;
    if !end_of_stream && !too_large {
        return Outcome::Pause; // Envoy buffers until the whole body is there
    }
    let body = h.request_body(body_size.min(crate::login::backchannel::MAX_BODY + 1));
    if let Some(req) = state.borrow_mut().login.as_mut() {
        std::rc::Rc::make_mut(req).body = Some(body);
    }
    flow::run(h, vm, &state, ctx, true, false)
}

/// The service's response headers, in context `ctx`: cookies from a refresh, and L7.
pub fn response_headers(h: &dyn Host, vm: &VmRef, ctx: u32) -> Outcome {
    let state = vm.borrow().requests.get(&ctx).cloned();
    let Some(state) = state else {
        return Outcome::Continue;
    };
    let outbound = state.borrow().outbound.clone();
    if let Some(authority) = outbound {
        if h.response_status() == 401 {
            remember_outbound_401(h, vm, &state, &authority);
        }
        return Outcome::Continue;
    }
    let (kept, headers, cookies) = {
        let mut st = state.borrow_mut();
        (
            st.login.clone(),
            st.headers.take(),
            std::mem::take(&mut st.response_cookies),
        )
    };
    if kept.is_none() && headers.is_none() {
        return Outcome::Continue;
    }
    for c in &cookies {
        h.add_response_header("set-cookie", c);
    }
    if !cookies.is_empty() {
        // L1+: a response that sets the session must never be stored by a shared cache.
        h.set_response_header("cache-control", "no-store");
    }
    // L7: the service refused the token on a page request, or (L7+) a service the page called
    // (marks only the outbound side writes, when upstream_401_services names services).
    let status = h.response_status();
    let (watches, trust_forwarded_proto) = {
        let v = vm.borrow();
        let watches = v.config.login().is_some_and(|l| {
            l.on_upstream_401 != Upstream401::Pass && !l.upstream_401_services.is_empty()
        });
        (watches, v.config.trust_forwarded_proto)
    };
    if status != 401 && !watches {
        return Outcome::Continue;
    }
    // A request that went on at once is read again from its header map.
    let read;
    let req: &login::Request = match (&kept, &headers) {
        (Some(req), _) => req,
        (None, Some(headers)) => {
            read = headers.login_request(trust_forwarded_proto);
            &read
        }
        (None, None) => return Outcome::Continue,
    };
    if status != 401 && !req.is_page() {
        return Outcome::Continue;
    }
    let now_ms = h.now_ms();
    if status != 401 && !outbound_401_seen(h, &req.request_id, now_ms / 1000) {
        return Outcome::Continue;
    }
    let snap = Snapshot::take(vm, now_ms);
    let lookups = flow::HostLookups::new(h, now_ms);
    let Some(env) = snap.env(now_ms, &lookups) else {
        return Outcome::Continue;
    };
    match login::upstream_401(&env, req, &mut HostRandom(h)) {
        Some(reply) => {
            let why = if status == 401 {
                "the service answered 401"
            } else {
                "a service the page called answered 401"
            };
            h.log(
                Level::Info,
                &format!(
                    "mesh-oidc[{}]: {why}; acting per on_upstream_401",
                    req.request_id
                ),
            );
            vm::count(h, vm, &reply.events);
            h.send_reply(&reply);
            Outcome::Pause
        }
        None => Outcome::Continue,
    }
}

/// How long an outbound 401 is remembered for the page it belongs to.
pub const OUTBOUND_401_TTL_SECONDS: u64 = 30;
const OUTBOUND_401_SET: &str = "mesh-oidc/401";

/// L7+: an outbound call answered 401; if its service counts, the page it was made for (the
/// same `x-request-id`) will act per `on_upstream_401`.
fn remember_outbound_401(h: &dyn Host, vm: &VmRef, state: &StateRef, authority: &str) {
    let (services, rid) = {
        let v = vm.borrow();
        let services = v
            .config
            .login()
            .map(|l| l.upstream_401_services.clone())
            .unwrap_or_default();
        (services, state.borrow().request_id.clone())
    };
    if rid == "-" || !service_counts(&services, authority) {
        return;
    }
    let now = h.now_ms() / 1000;
    let mark = Claim::in_set(OUTBOUND_401_SET, &rid, now + OUTBOUND_401_TTL_SECONDS);
    for _ in 0..4 {
        let (value, cas) = h.get_shared_for_update(&mark.key);
        let Some(updated) = mark.record(&value, now) else {
            return; // already recorded
        };
        if h.set_shared(&mark.key, &updated, cas) {
            h.log(
                Level::Info,
                &format!("mesh-oidc[{rid}]: {authority} answered the workload 401"),
            );
            return;
        }
    }
}

/// Whether an outbound call's `:authority` is one of `services` (`*`: any): the host alone
/// matches any port.
pub fn service_counts(services: &[String], authority: &str) -> bool {
    if services.iter().any(|s| s == "*") {
        return true;
    }
    let authority = authority.to_ascii_lowercase();
    let host = authority
        .rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(authority.as_str(), |(h, _)| h);
    services.iter().any(|s| *s == authority || *s == host)
}

fn outbound_401_seen(h: &dyn Host, request_id: &str, now: u64) -> bool {
    if request_id == "-" {
        return false;
    }
    let mark = Claim::in_set(OUTBOUND_401_SET, request_id, 0);
    let (value, _) = h.get_shared(&mark.key);
    value.is_some_and(|v| mark.is_in(&v, now))
}

/// A dispatched call's answer, heard in context `current` (the root or a request's).
pub fn call_response(h: &dyn Host, vm: &VmRef, current: u32, token: u32, body_size: usize) {
    if flow::on_call_response(h, vm, token, body_size, current) {
        return;
    }
    let now = h.now_ms();
    if vm::on_preflight_response(h, vm, token, body_size) {
        return;
    }
    if vm::on_keys_response(h, vm, token, body_size, now) {
        vm::sync(h, vm);
        flow::settle(h, vm, now, current);
        return;
    }
    // Not known yet: an answer that came before its dispatch returned.
    flow::keep_early(h, vm, token, body_size);
}

/// The request's stream is over (answered, or reset by the client): forget it. A refresh that
/// others wait for is given up (Envoy cancels the gone stream's call), so that one of them takes
/// the slot over at the next tick instead of waiting out its deadline.
pub fn done(h: &dyn Host, vm: &VmRef, ctx: u32) {
    let slots = vm.borrow_mut().forget(ctx);
    for slot in slots {
        let key = crate::flight::key(&slot);
        let (value, cas) = h.get_shared_for_update(&key);
        if let Some(released) = crate::flight::release(&slot, &value) {
            let _ = h.set_shared(&key, &released, cas);
        }
    }
}
