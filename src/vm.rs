//! One VM's state: the configuration, the key set it uses (fetched by any VM of the process and
//! kept in shared data), the requests it holds, the calls it has dispatched, its counters. The
//! functions here take the host and a `VmRef` and never hold a borrow across a host call.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::config::Config;
use crate::flow::{Call, StateRef};
use crate::host::{Host, Level};
use crate::jwks::{JwksError, KeySet, MAX_ENTRIES, MAX_JWKS_BYTES};
use crate::keystore::{self, KeyStore};
use crate::metrics::Event;
use crate::pending::{WaitFor, GRACE_MS};
use crate::session::{Names, Sealer};
use crate::token::Cache;
use crate::token::FastHash;

/// A request held until what it waits for arrives or its deadline passes.
#[derive(Debug)]
pub struct Waiter {
    pub context_id: u32,
    /// The key-set version the request was decided with.
    pub keys_version: u64,
    pub deadline_ms: u64,
    pub state: StateRef,
    pub what: WaitFor,
}

/// Answers to calls that came before `dispatch` returned their token (Envoy answers a call that
/// fails at once inline); kept a moment so the dispatcher can take its own.
const EARLY_ANSWERS: usize = 8;

pub struct Vm {
    pub config: Rc<Config>,
    /// Login mode: the cookie sealer.
    pub sealer: Option<Rc<Sealer>>,
    /// The filter's cookie names (both modes: B6 drops unchecked copies everywhere).
    pub names: Rc<Names>,
    pub store: KeyStore,
    pub waiters: Vec<Waiter>,
    /// Dispatched token calls, by token: whose they are and what they are for. (The host
    /// hands out these ids and the context ids, so nobody picks them to collide: no SipHash.)
    pub calls: HashMap<u32, Call, FastHash>,
    /// Each live request's state, by context id.
    pub requests: HashMap<u32, StateRef, FastHash>,
    /// Access tokens verified in this VM.
    pub cache: Rc<RefCell<Cache>>,
    /// Answers that arrived for tokens not known yet: (token, status, body).
    pub early: Vec<(u32, u32, Vec<u8>)>,
    /// The start-up check against the discovery document: its call, once it is made.
    pub preflight: Option<u32>,
    preflight_done: bool,
    /// Issue 13: the configuration as given, kept while its endpoints await the discovery
    /// document; and when to ask again after a failure.
    raw_config: Vec<u8>,
    retry_discovery_at: u64,
    /// Counter ids by name, defined on first use.
    metrics: HashMap<String, u32>,
    data_key: String,
    lease_key: String,
}

pub type VmRef = Rc<RefCell<Vm>>;

impl Vm {
    /// `None` in login mode when the sealing key cannot be made (it always can from a parsed
    /// configuration).
    pub fn new(config: Config) -> Option<VmRef> {
        let config = Rc::new(config);
        let names = Rc::new(Names::new(&config.cookie.name));
        let sealer = match config.login() {
            Some(l) => Some(Rc::new(Sealer::new(&l.session_keys)?)),
            None => None,
        };
        Some(Rc::new(RefCell::new(Vm {
            data_key: KeyStore::data_key(&config.cluster, config.jwks.url.as_str()),
            lease_key: KeyStore::lease_key(&config.cluster, config.jwks.url.as_str()),
            config,
            sealer,
            names,
            store: KeyStore::default(),
            waiters: Vec::new(),
            calls: HashMap::default(),
            requests: HashMap::default(),
            cache: Rc::default(),
            early: Vec::new(),
            preflight: None,
            preflight_done: false,
            raw_config: Vec::new(),
            retry_discovery_at: 0,
            metrics: HashMap::new(),
        })))
    }

    /// Keeps the configuration's bytes, to be parsed again with the discovery document.
    pub fn keep_raw_config(&mut self, bytes: &[u8]) {
        self.raw_config = bytes.to_vec();
    }

    /// Takes the configuration completed from discovery.
    fn adopt(&mut self, config: Config) {
        self.data_key = KeyStore::data_key(&config.cluster, config.jwks.url.as_str());
        self.lease_key = KeyStore::lease_key(&config.cluster, config.jwks.url.as_str());
        self.config = Rc::new(config);
        self.raw_config = Vec::new();
    }

    pub fn keys(&self) -> Option<Rc<KeySet>> {
        self.store.keys.clone()
    }

    /// Forgets a request whose stream is gone: its waits and its calls (Envoy cancels a gone
    /// stream's calls; an answer that still comes is dropped). Returns the refresh slots its
    /// calls held, which must be given up so that the requests waiting on them go on.
    pub fn forget(&mut self, context_id: u32) -> Vec<String> {
        self.requests.remove(&context_id);
        self.waiters.retain(|w| w.context_id != context_id);
        let mut slots = Vec::new();
        self.calls.retain(|_, c| {
            if c.context_id != context_id {
                return true;
            }
            if let Some(slot) = c.shared_slot() {
                slots.push(slot.to_string());
            }
            false
        });
        slots
    }

    /// Whether a tick has something to do besides the key-set schedule.
    pub fn is_idle(&self) -> bool {
        self.waiters.is_empty()
    }

    fn remember_early(&mut self, token: u32, status: u32, body: Vec<u8>) {
        if self.early.len() >= EARLY_ANSWERS {
            self.early.remove(0);
        }
        self.early.push((token, status, body));
    }

    /// The answer that came for `token` before its dispatch returned, if any.
    pub fn take_early(&mut self, token: u32) -> Option<(u32, Vec<u8>)> {
        let i = self.early.iter().position(|(t, _, _)| *t == token)?;
        let (_, status, body) = self.early.remove(i);
        Some((status, body))
    }

    pub fn keep_early(vm: &VmRef, token: u32, status: u32, body: Vec<u8>) {
        vm.borrow_mut().remember_early(token, status, body);
    }
}

/// Counts events (counters are defined on first use).
pub fn count(h: &dyn Host, vm: &VmRef, events: &[Event]) {
    for event in events {
        let name = event.metric_name();
        let known = vm.borrow().metrics.get(&name).copied();
        let id = match known {
            Some(id) => Some(id),
            None => {
                let id = h.define_counter(&name);
                if let Some(id) = id {
                    vm.borrow_mut().metrics.insert(name, id);
                }
                id
            }
        };
        if let Some(id) = id {
            h.increment(id);
        }
    }
}

/// Picks up a key set another VM published; true when a new one was installed.
pub fn sync(h: &dyn Host, vm: &VmRef) -> bool {
    let data_key = vm.borrow().data_key.clone();
    let (value, cas) = h.get_shared(&data_key);
    if vm.borrow().store.is_current(cas) {
        return false;
    }
    let Some((fetched_at, body)) = value.as_deref().and_then(keystore::decode_entry) else {
        return false;
    };
    match KeySet::parse(body) {
        Ok(set) => {
            vm.borrow_mut().store.install(set, cas, fetched_at);
            true
        }
        Err(e) => {
            {
                let mut v = vm.borrow_mut();
                v.store.cas = cas;
                v.store.fetched_at_ms = fetched_at;
            }
            h.log(Level::Warn, &format!("mesh-oidc: ignoring key set: {e}"));
            false
        }
    }
}

/// Starts a key-set fetch when one is due and no other VM holds the lease.
pub fn maybe_fetch(h: &dyn Host, vm: &VmRef, now_ms: u64) {
    // Another VM may have fetched a moment ago.
    sync(h, vm);
    let (lease_key, config) = {
        let v = vm.borrow();
        if v.config.awaiting_discovery {
            return; // the key set's URL comes from discovery
        }
        let refresh_ms = v.config.jwks_refresh_seconds.saturating_mul(1000);
        if !v.store.wants_fetch(now_ms, refresh_ms) {
            return;
        }
        (v.lease_key.clone(), v.config.clone())
    };
    let (lease, cas) = h.get_shared_for_update(&lease_key);
    if !keystore::lease_is_free(now_ms, Some(&lease)) {
        return;
    }
    let until = now_ms
        .saturating_add(config.timeout_ms)
        .saturating_add(GRACE_MS);
    if !h.set_shared(&lease_key, &keystore::encode_lease(until), cas) {
        return;
    }
    {
        let mut v = vm.borrow_mut();
        v.store.last_attempt_ms = Some(now_ms);
        v.store.refetch_requested = false;
    }
    let jwks = &config.jwks;
    let headers = [
        (":method", "GET"),
        (":path", jwks.path.as_str()),
        (":authority", jwks.authority.as_str()),
        (":scheme", jwks.url.scheme()),
        ("accept", "application/json"),
        ("user-agent", "mesh-oidc"),
    ];
    match h.dispatch(&config.cluster, &headers, None, config.timeout_ms) {
        Some(token) => {
            vm.borrow_mut().store.in_flight = Some((token, until));
            let early = vm.borrow_mut().take_early(token);
            if let Some((status, body)) = early {
                keys_answered(h, vm, status, Some(&body), now_ms);
            }
        }
        None => {
            // Backs off like a failed fetch, counts, and says so once (then every 30th time).
            let failures = {
                let mut v = vm.borrow_mut();
                v.store.failures = v.store.failures.saturating_add(1);
                v.store.failures
            };
            count(h, vm, &[Event::KeysFetchFailed]);
            if failures == 1 || failures % 30 == 0 {
                h.log(
                    Level::Warn,
                    &format!(
                        "mesh-oidc: could not fetch the key set: cluster {} is not known to Envoy (attempt {failures}; retrying with back-off): define it, or set `cluster` to the name Envoy has for the provider's internal host",
                        config.cluster
                    ),
                );
            }
            let _ = h.set_shared(&lease_key, &keystore::encode_lease(0), None);
        }
    }
}

/// At start, once per Envoy process: reads the provider's discovery document through `cluster`
/// and says in one line whether the configuration agrees with it.
pub fn maybe_preflight(h: &dyn Host, vm: &VmRef, now_ms: u64) {
    let config = {
        let mut v = vm.borrow_mut();
        let due = !v.preflight_done
            || (v.config.awaiting_discovery
                && v.preflight.is_none()
                && now_ms >= v.retry_discovery_at);
        if !due {
            return;
        }
        v.preflight_done = true;
        v.config.clone()
    };
    let Some(discovery) = config.discovery.as_ref() else {
        return;
    };
    // A check only: one VM of the process does it (the others would say the same). Endpoints
    // from discovery: every VM reads the document for itself.
    if !config.awaiting_discovery {
        let flag = format!("mesh-oidc/preflight/{}/{}", config.cluster, discovery.url);
        let (seen, cas) = h.get_shared_for_update(&flag);
        if !seen.is_empty() || !h.set_shared(&flag, b"1", cas) {
            return;
        }
    }
    let headers = [
        (":method", "GET"),
        (":path", discovery.path.as_str()),
        (":authority", discovery.authority.as_str()),
        (":scheme", discovery.url.scheme()),
        ("accept", "application/json"),
        ("user-agent", "mesh-oidc"),
    ];
    match h.dispatch(&config.cluster, &headers, None, config.timeout_ms) {
        Some(token) => vm.borrow_mut().preflight = Some(token),
        None => {
            vm.borrow_mut().retry_discovery_at = now_ms.saturating_add(DISCOVERY_RETRY_MS);
            if config.awaiting_discovery {
                h.log(
                    Level::Error,
                    &format!(
                        "mesh-oidc: cannot read the discovery document: cluster {} is not known to Envoy",
                        config.cluster
                    ),
                );
            }
        }
    }
}

/// After a failed discovery, the next attempt waits this long.
const DISCOVERY_RETRY_MS: u64 = 5_000;

/// Whether `token` is the start-up check's call; if so, its verdict is logged.
pub fn on_preflight_response(h: &dyn Host, vm: &VmRef, token: u32, body_size: usize) -> bool {
    let config = {
        let mut v = vm.borrow_mut();
        if v.preflight != Some(token) {
            return false;
        }
        v.preflight = None;
        v.config.clone()
    };
    let status = h.call_response_status();
    let body = h.call_response_body(body_size.min(64 * 1024));
    let url = config
        .discovery
        .as_ref()
        .map(|d| d.url.to_string())
        .unwrap_or_default();
    if config.awaiting_discovery {
        adopt_discovery(h, vm, status, &body, &url);
        return true;
    }
    let (level, verdict) = judge_discovery(status, &body, &config.rules.issuer);
    h.log(
        level,
        &format!(
            "mesh-oidc: start-up check of {url} via cluster {}: {verdict}",
            config.cluster
        ),
    );
    true
}

/// Issue 13: the configuration completed with the discovery document's endpoints, or (a failure)
/// one line that says why and another attempt a moment later; requests wait meanwhile.
fn adopt_discovery(h: &dyn Host, vm: &VmRef, status: u32, body: &[u8], url: &str) {
    let raw = vm.borrow().raw_config.clone();
    let document = (status == 200)
        .then(|| crate::json::from_slice(body).ok())
        .flatten();
    let outcome = match &document {
        None => Err(format!("HTTP {status}, not a discovery document")),
        Some(doc) => Config::parse_discovered(&raw, Some(doc)).map_err(|e| e.to_string()),
    };
    match outcome {
        Ok(config) => {
            let issuer_line = judge_discovery(200, body, &config.rules.issuer).1;
            h.log(
                Level::Info,
                &format!(
                    "mesh-oidc: endpoints from {url}: keys from {}, token calls to {} via cluster {}; {issuer_line}",
                    config.jwks.url,
                    config
                        .login()
                        .map_or("-".to_string(), |l| l.token_endpoint.url.to_string()),
                    config.cluster
                ),
            );
            vm.borrow_mut().adopt(config);
        }
        Err(why) => {
            let now = h.now_ms();
            vm.borrow_mut().retry_discovery_at = now.saturating_add(DISCOVERY_RETRY_MS);
            h.log(
                Level::Error,
                &format!(
                    "mesh-oidc: discovery from {url} failed: {why}; requests wait, trying again"
                ),
            );
        }
    }
}

/// What the discovery document says about the configuration.
pub fn judge_discovery(status: u32, body: &[u8], issuer: &str) -> (Level, String) {
    match status {
        200 => {}
        0 => {
            return (
                Level::Warn,
                "no answer (the cluster's endpoints are down, or the call timed out)".into(),
            )
        }
        404 => {
            return (
                Level::Warn,
                "404: no such realm or path at the provider (check keycloak.realm, or oidc.discovery_url)".into(),
            )
        }
        other => return (Level::Warn, format!("HTTP {other}")),
    }
    let found = crate::json::from_slice(body)
        .ok()
        .and_then(|v| v.get("issuer")?.as_str().map(str::to_string));
    match found {
        Some(found) if found == issuer => (Level::Info, "the provider's issuer is oidc.issuer: OK".into()),
        Some(found) => (
            Level::Warn,
            format!(
                "the provider says its issuer is {found:?}, but tokens must carry {issuer:?}: every token will be refused (check keycloak.public_url against Keycloak's KC_HOSTNAME, or oidc.issuer)"
            ),
        ),
        None => (Level::Warn, "the answer is not a discovery document".into()),
    }
}
pub fn on_keys_response(
    h: &dyn Host,
    vm: &VmRef,
    token: u32,
    body_size: usize,
    now_ms: u64,
) -> bool {
    if vm.borrow().store.in_flight.map(|(t, _)| t) != Some(token) {
        return false;
    }
    let status = h.call_response_status();
    // A body over the cap is not even read.
    let body = (body_size <= MAX_JWKS_BYTES).then(|| h.call_response_body(body_size));
    keys_answered(h, vm, status, body.as_deref(), now_ms);
    true
}

/// What a key-set answer means: a set to publish, or why not. `body` is `None` when it was over
/// the size cap.
pub fn judge_keys_answer(status: u32, body: Option<&[u8]>) -> Result<KeySet, String> {
    match (status, body) {
        (200, Some(body)) => KeySet::parse(body).map_err(|e| e.to_string()),
        (200, None) => Err(JwksError::TooLarge.to_string()),
        (0, _) => Err("no response (timed out or connection failed)".to_string()),
        (other, _) => Err(format!("status {other}")),
    }
}

fn keys_answered(h: &dyn Host, vm: &VmRef, status: u32, body: Option<&[u8]>, now_ms: u64) {
    let outcome = judge_keys_answer(status, body);
    let body = body.unwrap_or_default();
    let fetched = outcome.is_ok();
    let (config, data_key, lease_key) = {
        let mut v = vm.borrow_mut();
        v.store.in_flight = None;
        v.store.failures = if fetched {
            0
        } else {
            v.store.failures.saturating_add(1)
        };
        (v.config.clone(), v.data_key.clone(), v.lease_key.clone())
    };
    count(
        h,
        vm,
        &[if fetched {
            Event::KeysFetched
        } else {
            Event::KeysFetchFailed
        }],
    );
    match outcome {
        Ok(set) => {
            let not_read = if set.not_read > 0 {
                format!(
                    ", {} not read (only the first {} entries are)",
                    set.not_read, MAX_ENTRIES
                )
            } else {
                String::new()
            };
            let level = if set.not_read > 0 {
                Level::Warn
            } else {
                Level::Info
            };
            h.log(
                level,
                &format!(
                    "mesh-oidc: key set fetched from {}: {} signing keys, {} skipped{not_read}",
                    config.jwks.url,
                    set.keys.len(),
                    set.skipped
                ),
            );
            // Parse once per VM: this VM keeps the set it just parsed, so the sync that
            // follows finds the CAS it knows instead of parsing the same body again.
            let entry = keystore::encode_entry(now_ms, body);
            if h.set_shared(&data_key, &entry, None) {
                let (read_back, cas) = h.get_shared(&data_key);
                vm.borrow_mut()
                    .store
                    .adopt_published(set, &entry, read_back.as_deref(), cas);
            }
        }
        Err(why) => h.log(
            Level::Warn,
            &format!(
                "mesh-oidc: key set fetch from {} failed: {why}",
                config.jwks.url
            ),
        ),
    }
    // After a good fetch the lease is kept for the refetch interval, so that an unknown
    // `kid` seen by several workers at once costs the provider one fetch, not one each.
    let hold = if fetched {
        now_ms.saturating_add(keystore::REFETCH_MIN_INTERVAL_MS)
    } else {
        0
    };
    let _ = h.set_shared(&lease_key, &keystore::encode_lease(hold), None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_up_check_says_what_is_wrong() {
        let doc = br#"{"issuer":"https://sso.example.com/realms/dev"}"#;
        assert_eq!(
            judge_discovery(200, doc, "https://sso.example.com/realms/dev").0,
            Level::Info
        );
        let (level, text) = judge_discovery(200, doc, "https://sso.example.com/realms/prod");
        assert_eq!(level, Level::Warn);
        assert!(
            text.contains("\"https://sso.example.com/realms/dev\""),
            "{text}"
        );
        assert!(judge_discovery(404, b"", "x").1.contains("keycloak.realm"));
        assert!(judge_discovery(0, b"", "x").1.contains("no answer"));
        assert!(judge_discovery(200, b"<html>", "x")
            .1
            .contains("not a discovery"));
    }

    #[test]
    fn what_a_key_set_answer_means() {
        assert!(judge_keys_answer(200, Some(br#"{"keys":[]}"#)).is_ok());
        assert_eq!(
            judge_keys_answer(0, Some(b"")).unwrap_err(),
            "no response (timed out or connection failed)"
        );
        assert_eq!(judge_keys_answer(503, Some(b"")).unwrap_err(), "status 503");
        assert!(judge_keys_answer(200, Some(b"<html>")).is_err());
        assert!(judge_keys_answer(200, None).is_err());
    }
}
