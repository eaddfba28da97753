//! Carrying out the key-set logic of `keystore`: fetch through the cluster, publish to shared
//! data, pick up what other VMs published, and settle the requests that wait for keys.

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::types::LogLevel;

use super::host;
use std::collections::HashMap;

use super::flow::{Call, Waiter};
use crate::config::Config;
use crate::jwks::{JwksError, KeySet, MAX_ENTRIES, MAX_JWKS_BYTES};
use crate::keystore::{self, KeyStore};
use crate::metrics::Event;
use crate::session::{Names, Sealer};
use crate::token::Cache;

/// What a root context and its HTTP contexts share (one VM, one thread).
pub struct Shared {
    pub config: Rc<Config>,
    /// Login mode: the cookie sealer and the cookie names.
    pub login: Option<(Rc<Sealer>, Rc<Names>)>,
    /// The filter's cookie names (both modes: B6 drops unchecked copies everywhere).
    pub names: Rc<Names>,
    pub store: KeyStore,
    pub waiters: Vec<Waiter>,
    /// Dispatched token calls, by token: whose they are and what they are for.
    pub calls: HashMap<u32, Call>,
    /// Access tokens verified in this VM.
    pub cache: Rc<RefCell<Cache>>,
    /// Counter ids by name, defined on first use.
    metrics: HashMap<String, u32>,
    data_key: String,
    lease_key: String,
}

pub type SharedRef = Rc<RefCell<Shared>>;

impl Shared {
    pub fn new(config: Rc<Config>) -> SharedRef {
        let data_key = KeyStore::data_key(&config.cluster, config.jwks.url.as_str());
        let lease_key = KeyStore::lease_key(&config.cluster, config.jwks.url.as_str());
        let names = Rc::new(Names::new(&config.cookie.name));
        let login = config.login().and_then(|l| {
            let sealer = Sealer::new(&l.session_keys)?;
            Some((Rc::new(sealer), names.clone()))
        });
        Rc::new(RefCell::new(Shared {
            config,
            login,
            names,
            store: KeyStore::default(),
            waiters: Vec::new(),
            calls: HashMap::new(),
            metrics: HashMap::new(),
            cache: Rc::default(),
            data_key,
            lease_key,
        }))
    }

    pub fn count(&mut self, events: &[Event]) {
        for event in events {
            let name = event.metric_name();
            let id = match self.metrics.get(&name) {
                Some(id) => Some(*id),
                None => {
                    let id = host::define_counter(&name);
                    if let Some(id) = id {
                        self.metrics.insert(name, id);
                    }
                    id
                }
            };
            if let Some(id) = id {
                host::increment(id);
            }
        }
    }

    pub fn keys(&self) -> Option<Rc<KeySet>> {
        self.store.keys.clone()
    }

    /// Reads the shared entry; true when it changed and was parsed.
    pub fn sync(&mut self) -> bool {
        let (value, cas) = host::get_shared(&self.data_key);
        if self.store.is_current(cas) {
            return false;
        }
        let Some((fetched_at, body)) = value.as_deref().and_then(keystore::decode_entry) else {
            return false;
        };
        match KeySet::parse(body) {
            Ok(set) => {
                self.store.install(set, cas, fetched_at);
                true
            }
            Err(e) => {
                self.store.cas = cas;
                self.store.fetched_at_ms = fetched_at;
                host::log(LogLevel::Warn, &format!("mesh-oidc: ignoring key set: {e}"));
                false
            }
        }
    }

    /// Starts a fetch when one is due and no other VM holds the lease.
    pub fn maybe_fetch(&mut self, now_ms: u64) {
        // Another VM may have fetched a moment ago.
        self.sync();
        let refresh_ms = self.config.jwks_refresh_seconds.saturating_mul(1000);
        if !self.store.wants_fetch(now_ms, refresh_ms) {
            return;
        }
        let (lease, cas) = host::get_shared(&self.lease_key);
        if !keystore::lease_is_free(now_ms, lease.as_deref()) {
            return;
        }
        let until = now_ms + self.config.timeout_ms + 1000;
        if !host::set_shared(&self.lease_key, &keystore::encode_lease(until), cas) {
            return;
        }
        self.store.last_attempt_ms = Some(now_ms);
        self.store.refetch_requested = false;
        let jwks = &self.config.jwks;
        let headers = [
            (":method", "GET"),
            (":path", jwks.path.as_str()),
            (":authority", jwks.authority.as_str()),
            (":scheme", jwks.url.scheme()),
            ("accept", "application/json"),
            ("user-agent", "mesh-oidc"),
        ];
        match host::dispatch(&self.config.cluster, &headers, None, self.config.timeout_ms) {
            Some(token) => {
                self.store.in_flight = Some((token, until));
            }
            None => {
                host::log(
                    LogLevel::Warn,
                    &format!(
                        "mesh-oidc: could not fetch the key set: cluster {} is not known to Envoy",
                        self.config.cluster
                    ),
                );
                let _ = host::set_shared(&self.lease_key, &keystore::encode_lease(0), None);
            }
        }
    }

    /// Handles a dispatched call's response if it is this VM's key-set fetch.
    pub fn on_jwks_response(&mut self, token: u32, body_size: usize, now_ms: u64) -> bool {
        if self.store.in_flight.map(|(t, _)| t) != Some(token) {
            return false;
        }
        self.store.in_flight = None;
        let status = host::call_response_status();
        let body = if body_size <= MAX_JWKS_BYTES {
            host::call_response_body(body_size)
        } else {
            Vec::new()
        };
        let outcome = if status != 200 {
            Err(if status == 0 {
                "no response (timed out or connection failed)".to_string()
            } else {
                format!("status {status}")
            })
        } else if body_size > MAX_JWKS_BYTES {
            Err(JwksError::TooLarge.to_string())
        } else {
            KeySet::parse(&body).map_err(|e| e.to_string())
        };
        let fetched = outcome.is_ok();
        self.store.failures = if fetched {
            0
        } else {
            self.store.failures.saturating_add(1)
        };
        self.count(&[if fetched {
            Event::KeysFetched
        } else {
            Event::KeysFetchFailed
        }]);
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
                host::log(
                    if set.not_read > 0 {
                        LogLevel::Warn
                    } else {
                        LogLevel::Info
                    },
                    &format!(
                        "mesh-oidc: key set fetched from {}: {} signing keys, {} skipped{not_read}",
                        self.config.jwks.url,
                        set.keys.len(),
                        set.skipped
                    ),
                );
                // Parse once per VM: this VM keeps the set it just parsed, so the sync that
                // follows finds the CAS it knows instead of parsing the same body again.
                let entry = keystore::encode_entry(now_ms, &body);
                if host::set_shared(&self.data_key, &entry, None) {
                    let (read_back, cas) = host::get_shared(&self.data_key);
                    self.store
                        .adopt_published(set, &entry, read_back.as_deref(), cas);
                }
            }
            Err(why) => host::log(
                LogLevel::Warn,
                &format!(
                    "mesh-oidc: key set fetch from {} failed: {why}",
                    self.config.jwks.url
                ),
            ),
        }
        // After a good fetch the lease is kept for the refetch interval, so that an unknown
        // `kid` seen by several workers at once costs the provider one fetch, not one each.
        let hold = if fetched {
            now_ms + keystore::REFETCH_MIN_INTERVAL_MS
        } else {
            0
        };
        let _ = host::set_shared(&self.lease_key, &keystore::encode_lease(hold), None);
        true
    }
}
