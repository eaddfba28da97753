//! When to fetch the key set, and how it is kept in Envoy's shared data so that every worker VM
//! uses the one set that any of them fetched.
//!
//! Shared data holds, under [`KeyStore::data_key`], the fetch time followed by the raw JWKS body;
//! under [`KeyStore::lease_key`], the time until which one VM owns the next fetch. Each VM parses
//! the body once per change (the shared data's CAS number tells it when); the VM that fetched it
//! keeps the set it parsed before publishing ([`KeyStore::adopt_published`]).

use std::rc::Rc;

use crate::jwks::KeySet;

/// After a failed fetch, wait this long before the next attempt, doubling with each failure in a
/// row up to [`MAX_RETRY_MS`] (a provider that is down is not hammered, nor the log filled).
pub const RETRY_MS: u64 = 1_000;
pub const MAX_RETRY_MS: u64 = 4_000;
/// At most one fetch for an unknown `kid` this often.
pub const REFETCH_MIN_INTERVAL_MS: u64 = 5_000;
/// How many `kid`s of keys that left the set are remembered (refused without waiting).
pub const MAX_DROPPED_KIDS: usize = 64;

/// A VM holding this many requests already refuses an unknown `kid` instead of holding one more
/// until the next fetch (a flood of forged `kid`s must not pile up held streams).
pub const MAX_HELD_FOR_NEXT_FETCH: usize = 1024;

/// What a token whose `kid` the set lacks may do.
#[derive(Debug, Clone, Copy)]
pub enum Refetch<'a> {
    /// Have the set fetched now (the rate limit allows it).
    Now,
    /// Wait for the next fetch the rate limit allows, unless its `kid` belongs to a key that a
    /// fetch already saw leave the set (a dropped key is refused at once). A token that names
    /// a new key a moment after the last fetch (a rotation) is not refused for the timing.
    Next { dropped: &'a [String] },
    /// Nothing: the request waited for a fetch already.
    Never,
}

impl From<bool> for Refetch<'static> {
    fn from(now: bool) -> Self {
        if now {
            Refetch::Now
        } else {
            Refetch::Never
        }
    }
}

impl Refetch<'_> {
    /// Whether `token`, refused for an unknown signing key, waits for a key-set fetch.
    pub fn allows(self, token: &str) -> bool {
        match self {
            Refetch::Now => true,
            Refetch::Never => false,
            Refetch::Next { dropped } => crate::token::read_header(token)
                .ok()
                .and_then(|h| h.kid)
                .is_some_and(|kid| !dropped.contains(&kid)),
        }
    }
}

pub fn encode_entry(fetched_at_ms: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&fetched_at_ms.to_be_bytes());
    out.extend_from_slice(body);
    out
}

pub fn decode_entry(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (time, body) = bytes.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*time), body))
}

pub fn encode_lease(until_ms: u64) -> [u8; 8] {
    until_ms.to_be_bytes()
}

pub fn lease_is_free(now_ms: u64, lease: Option<&[u8]>) -> bool {
    match lease.and_then(|b| b.first_chunk::<8>()) {
        Some(until) => u64::from_be_bytes(*until) <= now_ms,
        None => true,
    }
}

/// One VM's view of the key set.
#[derive(Debug, Default)]
pub struct KeyStore {
    pub keys: Option<Rc<KeySet>>,
    /// Bumped whenever `keys` is replaced: a waiting request wakes when it changes.
    pub version: u64,
    /// The shared-data CAS of the entry `keys` was parsed from.
    pub cas: Option<u32>,
    /// When the set in shared data was fetched (by any VM).
    pub fetched_at_ms: u64,
    /// When this VM last started a fetch.
    pub last_attempt_ms: Option<u64>,
    /// The dispatched call, and when it is given up on.
    pub in_flight: Option<(u32, u64)>,
    /// A request named a `kid` the set lacks: fetch now (rate-limited).
    pub refetch_requested: bool,
    /// Failed fetches in a row.
    pub failures: u32,
    /// The `kid`s of keys that were in an earlier set and are not in this one, newest last.
    pub dropped: Rc<[String]>,
}

impl KeyStore {
    pub fn data_key(cluster: &str, uri: &str) -> String {
        format!("mesh-oidc/jwks/{cluster}/{uri}")
    }

    pub fn lease_key(cluster: &str, uri: &str) -> String {
        format!("mesh-oidc/jwks-lease/{cluster}/{uri}")
    }

    /// Whether the shared entry with this CAS holds nothing this VM has not parsed: no entry, or
    /// the one `keys` came from.
    pub fn is_current(&self, cas: Option<u32>) -> bool {
        cas.is_none() || cas == self.cas
    }

    /// Takes a set parsed from the shared entry with this CAS, fetched (by any VM) at that time.
    pub fn install(&mut self, keys: KeySet, cas: Option<u32>, fetched_at_ms: u64) {
        self.dropped = dropped_kids(self.keys.as_deref(), &self.dropped, &keys);
        self.keys = Some(Rc::new(keys));
        self.cas = cas;
        self.fetched_at_ms = fetched_at_ms;
        self.version += 1;
    }

    /// After this VM published `written` (an encoded entry) and read the entry back with its
    /// CAS: keeps `keys`, parsed from that body, when what was read back is what was written (no
    /// other VM wrote in between), so that the next sync finds the CAS known and does not parse
    /// the same body again. False, and nothing changed, otherwise: the sync then parses whatever
    /// is there.
    pub fn adopt_published(
        &mut self,
        keys: KeySet,
        written: &[u8],
        read_back: Option<&[u8]>,
        cas: Option<u32>,
    ) -> bool {
        let Some((fetched_at_ms, _)) = decode_entry(written) else {
            return false;
        };
        if cas.is_none() || read_back != Some(written) {
            return false;
        }
        self.install(keys, cas, fetched_at_ms);
        true
    }

    pub fn fetch_in_flight(&self, now_ms: u64) -> bool {
        self.in_flight
            .is_some_and(|(_, deadline)| deadline > now_ms)
    }

    /// Whether this VM should try to fetch now (it still needs the shared lease).
    pub fn wants_fetch(&self, now_ms: u64, refresh_ms: u64) -> bool {
        if self.fetch_in_flight(now_ms) {
            return false;
        }
        let retry = (RETRY_MS << self.failures.min(4)).min(MAX_RETRY_MS);
        let recently_tried = self
            .last_attempt_ms
            .is_some_and(|t| now_ms < t.saturating_add(retry));
        if self.keys.is_none() {
            return !recently_tried;
        }
        if self.refetch_requested {
            return self.refetch_allowed(now_ms);
        }
        !recently_tried && now_ms >= self.fetched_at_ms.saturating_add(refresh_ms)
    }

    /// An unknown `kid` may trigger a fetch only this often.
    pub fn refetch_allowed(&self, now_ms: u64) -> bool {
        now_ms >= self.refetch_at_ms()
    }

    /// When the rate limit next allows a fetch for an unknown `kid`.
    pub fn refetch_at_ms(&self) -> u64 {
        let last = self.fetched_at_ms.max(self.last_attempt_ms.unwrap_or(0));
        last.saturating_add(REFETCH_MIN_INTERVAL_MS)
    }
}

/// The `kid`s not in `new`: those dropped before, then those `old` had (newest last), at most
/// [`MAX_DROPPED_KIDS`]. A key that comes back is no longer dropped.
fn dropped_kids(old: Option<&KeySet>, before: &[String], new: &KeySet) -> Rc<[String]> {
    let in_new = |kid: &String| new.by_kid(kid).is_some();
    let mut kids: Vec<String> = before.iter().filter(|k| !in_new(k)).cloned().collect();
    for kid in old
        .into_iter()
        .flat_map(|s| s.keys.iter().filter_map(|k| k.kid.as_ref()))
    {
        if !in_new(kid) && !kids.contains(kid) {
            kids.push(kid.clone());
        }
    }
    let extra = kids.len().saturating_sub(MAX_DROPPED_KIDS);
    kids.drain(..extra);
    kids.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let e = encode_entry(42, b"{\"keys\":[]}");
        assert_eq!(decode_entry(&e), Some((42, &b"{\"keys\":[]}"[..])));
        assert_eq!(decode_entry(b"short"), None);
    }

    #[test]
    fn leases_expire() {
        assert!(lease_is_free(10, None));
        assert!(lease_is_free(10, Some(&encode_lease(10))));
        assert!(!lease_is_free(10, Some(&encode_lease(11))));
        assert!(lease_is_free(10, Some(b"bad")));
    }

    #[test]
    fn first_fetch_then_retry_then_refresh() {
        let mut s = KeyStore::default();
        assert!(s.wants_fetch(1_000, 300_000), "no keys yet");
        s.last_attempt_ms = Some(1_000);
        s.in_flight = Some((7, 7_000));
        assert!(!s.wants_fetch(1_500, 300_000), "one at a time");
        s.in_flight = None; // failed
        assert!(!s.wants_fetch(1_500, 300_000), "retry waits");
        assert!(s.wants_fetch(2_000, 300_000));
        s.keys = Some(Rc::new(KeySet::default()));
        s.fetched_at_ms = 2_000;
        s.last_attempt_ms = Some(2_000);
        assert!(!s.wants_fetch(100_000, 300_000), "fresh");
        assert!(s.wants_fetch(302_000, 300_000), "stale");
        // An in-flight call that never answered is given up after its deadline.
        s.in_flight = Some((8, 303_000));
        assert!(!s.wants_fetch(302_500, 300_000));
        assert!(s.wants_fetch(303_000, 300_000));
    }

    #[test]
    fn failures_back_off() {
        let mut s = KeyStore {
            last_attempt_ms: Some(0),
            failures: 1,
            ..KeyStore::default()
        };
        assert!(!s.wants_fetch(1_999, 300_000));
        assert!(s.wants_fetch(2_000, 300_000));
        s.failures = 10;
        assert!(!s.wants_fetch(3_999, 300_000));
        assert!(s.wants_fetch(MAX_RETRY_MS, 300_000));
    }

    #[test]
    fn the_fetching_vm_keeps_what_it_parsed() {
        let body = br#"{"keys":[]}"#;
        let written = encode_entry(42, body);
        let parsed = KeySet {
            skipped: 3,
            ..KeySet::default()
        };
        let mut s = KeyStore::default();
        assert!(!s.is_current(Some(7)), "a new entry: parse it");
        assert!(s.adopt_published(parsed.clone(), &written, Some(&written), Some(7)));
        // The sync that follows sees the CAS it knows: no second parse.
        assert!(s.is_current(Some(7)));
        assert_eq!(s.version, 1, "waiting requests wake");
        assert_eq!(s.fetched_at_ms, 42);
        assert_eq!(s.keys.as_deref(), Some(&parsed));
        // Another VM wrote between the write and the read-back: its entry is parsed, not ours
        // taken for it.
        let mut s = KeyStore::default();
        let theirs = encode_entry(43, br#"{"keys":[1]}"#);
        assert!(!s.adopt_published(parsed.clone(), &written, Some(&theirs), Some(8)));
        assert!(!s.is_current(Some(8)));
        assert_eq!((s.version, s.keys.is_none()), (0, true));
        assert!(!s.adopt_published(parsed, &written, None, None));
    }

    #[test]
    fn unknown_kid_refetch_is_rate_limited() {
        let mut s = KeyStore {
            keys: Some(Rc::new(KeySet::default())),
            fetched_at_ms: 10_000,
            last_attempt_ms: Some(10_000),
            refetch_requested: true,
            ..KeyStore::default()
        };
        assert!(!s.refetch_allowed(14_999));
        assert!(!s.wants_fetch(14_999, 300_000));
        assert!(s.refetch_allowed(15_000));
        assert!(s.wants_fetch(15_000, 300_000));
        s.refetch_requested = false;
        assert!(!s.wants_fetch(15_000, 300_000));
    }

    #[test]
    fn kids_that_left_the_set_are_remembered_until_they_come_back() {
        let set = |kids: &[&str]| {
            let keys: Vec<_> = kids
                .iter()
                .map(|k| crate::testkit::rsa_jwk(crate::testkit::rsa(), k))
                .collect();
            KeySet::parse(serde_json::json!({ "keys": keys }).to_string().as_bytes()).unwrap()
        };
        let mut s = KeyStore::default();
        s.install(set(&["a", "b"]), Some(1), 0);
        assert!(s.dropped.is_empty());
        s.install(set(&["b", "c"]), Some(2), 0);
        assert_eq!(&*s.dropped, ["a".to_string()]);
        s.install(set(&["c"]), Some(3), 0);
        assert_eq!(&*s.dropped, ["a".to_string(), "b".to_string()]);
        s.install(set(&["a", "c"]), Some(4), 0);
        assert_eq!(&*s.dropped, ["b".to_string()], "a came back");
        use jwt_simple::prelude::RSAKeyPairLike;
        let tok = |kid: &str| {
            crate::testkit::rsa()
                .clone()
                .with_key_id(kid)
                .sign(jwt_simple::prelude::Claims::create(
                    jwt_simple::prelude::Duration::from_secs(60),
                ))
                .unwrap()
        };
        let next = Refetch::Next {
            dropped: &s.dropped,
        };
        assert!(
            next.allows(&tok("new")),
            "a new kid waits for the next fetch"
        );
        assert!(!next.allows(&tok("b")), "a dropped one does not");
        assert!(!next.allows("garbage"));
        assert!(Refetch::Now.allows(&tok("b")));
        assert!(!Refetch::Never.allows(&tok("new")));
        // Bounded: a flood of rotations keeps the newest.
        for i in 0..(MAX_DROPPED_KIDS + 10) {
            s.install(set(&[&format!("k{i}")]), Some(10 + i as u32), 0);
        }
        assert_eq!(s.dropped.len(), MAX_DROPPED_KIDS);
        assert_eq!(
            s.dropped.last().map(String::as_str),
            Some(format!("k{}", MAX_DROPPED_KIDS + 8).as_str())
        );
    }
}
