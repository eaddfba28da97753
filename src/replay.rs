//! A login's `state` is used at most once per Envoy process (L2+): a transaction cookie and a
//! code replayed to the callback get no second token call. Used states live in shared data, so
//! every worker VM of the process sees them, in a fixed number of slots of a few entries each,
//! so that they cannot grow without bound; an entry is forgotten when its transaction would have
//! expired anyway.

/// Shared-data slots; a state's digest picks one.
pub const SLOTS: usize = 1024;
/// Entries kept per slot: when a slot is full, the entry closest to expiry goes first.
pub const PER_SLOT: usize = 16;

const DIGEST_LEN: usize = 16;
const ENTRY_LEN: usize = DIGEST_LEN + 8;

/// What the callback asks the host to record before it exchanges the code.
#[derive(Clone, PartialEq, Eq)]
pub struct Claim {
    /// The shared-data key of the slot.
    pub key: String,
    digest: [u8; DIGEST_LEN],
    /// Unix seconds after which the entry may be forgotten.
    until: u64,
    /// Recording replaces an entry of the same value instead of refusing.
    replace: bool,
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Claim({}, until {})", self.key, self.until)
    }
}

impl Claim {
    pub fn new(state: &str, until: u64) -> Claim {
        Claim::in_set("mesh-oidc/state", state, until)
    }

    /// A value of another bounded set kept the same way (`prefix/<slot>`), e.g. the request ids
    /// whose outbound calls got a 401 (L7+).
    pub fn in_set(prefix: &str, value: &str, until: u64) -> Claim {
        let hash = hmac_sha256::Hash::hash(value.as_bytes());
        let mut digest = [0u8; DIGEST_LEN];
        for (d, h) in digest.iter_mut().zip(hash.iter()) {
            *d = *h;
        }
        let index = usize::from(u16::from_be_bytes([digest[0], digest[1]])) % SLOTS;
        Claim {
            key: format!("{prefix}/{index}"),
            digest,
            until,
            replace: false,
        }
    }

    /// When this value's entry in the slot runs out, if it is there and fresh at `now`.
    pub fn until_in(&self, slot: &[u8], now: u64) -> Option<u64> {
        slot.chunks_exact(ENTRY_LEN).find_map(|entry| {
            let (d, until) = entry.split_first_chunk::<DIGEST_LEN>()?;
            let until = u64::from_be_bytes(*until.first_chunk::<8>()?);
            (*d == self.digest && until > now).then_some(until)
        })
    }

    /// This claim as a replacement for an earlier entry of the same value: recording it always
    /// succeeds and moves the entry's end to this claim's (see [`Claim::record`]).
    pub fn refreshed(&self) -> Claim {
        Claim {
            replace: true,
            ..self.clone()
        }
    }

    /// Whether the slot holds this value, not yet expired.
    pub fn is_in(&self, slot: &[u8], now: u64) -> bool {
        slot.chunks_exact(ENTRY_LEN).any(|entry| {
            entry
                .split_first_chunk::<DIGEST_LEN>()
                .is_some_and(|(d, until)| {
                    *d == self.digest
                        && until
                            .first_chunk::<8>()
                            .is_some_and(|u| u64::from_be_bytes(*u) > now)
                })
        })
    }

    /// The slot's new content with this state recorded, or `None` when the state was used
    /// before (a replay). `slot` is the slot's current content (empty when it was never set).
    pub fn record(&self, slot: &[u8], now: u64) -> Option<Vec<u8>> {
        let mut live: Vec<([u8; DIGEST_LEN], u64)> = slot
            .chunks_exact(ENTRY_LEN)
            .filter_map(|entry| {
                let (digest, until) = entry.split_first_chunk::<DIGEST_LEN>()?;
                let until = u64::from_be_bytes(*until.first_chunk::<8>()?);
                Some((*digest, until))
            })
            .filter(|(_, until)| *until > now)
            .collect();
        if self.replace {
            live.retain(|(d, _)| *d != self.digest);
        } else if live.iter().any(|(d, _)| *d == self.digest) {
            return None;
        }
        // The state being recorded is always kept: were it evicted at once (a slot full of
        // entries that live longer, as when a plugin version with a longer transaction lifetime
        // shares the process), the exchange would go ahead and the state would not be refused
        // next time. Found by fuzzing (docs/fuzzing.md).
        // The entries that expire first make room (a slot holds a handful).
        while live.len() >= PER_SLOT {
            let first = live
                .iter()
                .enumerate()
                .min_by_key(|(_, (_, until))| *until)
                .map(|(i, _)| i);
            let Some(first) = first else { break };
            live.swap_remove(first);
        }
        live.push((self.digest, self.until));
        let mut out = Vec::with_capacity(live.len() * ENTRY_LEN);
        for (digest, until) in live {
            out.extend_from_slice(&digest);
            out.extend_from_slice(&until.to_be_bytes());
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_is_recorded_once() {
        let a = Claim::new("state-a", 1600);
        let slot = a.record(b"", 1000).unwrap();
        assert_eq!(a.record(&slot, 1001), None, "replayed");
        // Another state in the same slot is fine, and the first is still remembered.
        let mut b = Claim::new("state-b", 1600);
        b.key = a.key.clone();
        let slot = b.record(&slot, 1002).unwrap();
        assert_eq!(a.record(&slot, 1003), None);
        assert_eq!(b.record(&slot, 1003), None);
        // Once its transaction has expired, a state is forgotten (its cookie cannot open).
        assert!(a.record(&slot, 1600).is_some());
    }

    #[test]
    fn slots_are_bounded_and_keep_the_longest_lived() {
        let mut slot = Vec::new();
        for i in 0..(PER_SLOT as u64 * 3) {
            slot = Claim::new(&format!("s{i}"), 2000 + i)
                .record(&slot, 1000)
                .unwrap();
        }
        assert_eq!(slot.len(), PER_SLOT * ENTRY_LEN);
        let newest = PER_SLOT as u64 * 3 - 1;
        assert_eq!(
            Claim::new(&format!("s{newest}"), 9999).record(&slot, 1000),
            None
        );
        // Garbage in the slot is ignored, never a panic.
        assert!(Claim::new("x", 2000).record(&[1, 2, 3], 1000).is_some());
    }

    /// Fuzzing found this: a full slot whose entries all outlive the new state evicted the new
    /// state at once, so the same state was accepted again.
    #[test]
    fn a_state_recorded_into_a_full_slot_of_longer_lived_entries_is_kept() {
        let mut slot = Vec::new();
        for i in 0..PER_SLOT as u64 {
            slot = Claim::new(&format!("long{i}"), 9_000 + i)
                .record(&slot, 1000)
                .unwrap();
        }
        let short = Claim::new("short-lived", 1_600);
        let slot = short.record(&slot, 1000).unwrap();
        assert_eq!(slot.len(), PER_SLOT * ENTRY_LEN);
        assert_eq!(short.record(&slot, 1001), None, "replayed");
        // The entry closest to expiry among the others made room.
        assert!(Claim::new("long0", 1).record(&slot, 1001).is_some());
        assert_eq!(Claim::new("long1", 1).record(&slot, 1001), None);
    }

    #[test]
    fn other_sets_share_the_format_under_their_own_keys() {
        let m = Claim::in_set("mesh-oidc/401", "rid-1", 1_030);
        assert!(m.key.starts_with("mesh-oidc/401/"));
        let slot = m.record(b"", 1_000).unwrap();
        assert!(m.is_in(&slot, 1_029));
        assert!(!m.is_in(&slot, 1_030), "expired");
        assert!(!Claim::in_set("mesh-oidc/401", "rid-2", 1_030).is_in(&slot, 1_000));
    }

    #[test]
    fn claims_never_print_their_digest() {
        let c = Claim::new("secret-state", 1);
        assert!(!format!("{c:?}").contains("secret"));
        assert!(c.key.starts_with("mesh-oidc/state/"));
    }
}
