//! Shared-data slots that other VMs write: `replay::Claim::record` (used login states) and
//! `flight::decode`/`flight::step` (single-flight refresh). Never a panic on any slot content;
//! a slot stays bounded; a state recorded is refused the second time; what `decode` reads
//! encodes back to the same bytes.
#![no_main]

use fixtures::Input;
use libfuzzer_sys::fuzz_target;
use mesh_oidc::flight::{self, Slot, Step};
use mesh_oidc::replay::{Claim, PER_SLOT};

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let now = u64::from(input.byte()) * 100 + 1_000;
    let state = input.text();
    let slot = input.part();

    let claim = Claim::new(&state, now + 600);
    match claim.record(slot, now) {
        Some(next) => {
            assert_eq!(next.len() % 24, 0);
            assert!(next.len() / 24 <= PER_SLOT && !next.is_empty());
            assert_eq!(claim.record(&next, now + 1), None, "a state is used once");
        }
        None => {
            // Refused only when the slot holds this state, still live.
            assert!(slot.chunks_exact(24).any(|e| {
                let until = u64::from_be_bytes(e[16..24].try_into().unwrap());
                until > now
            }));
        }
    }

    let bytes = input.rest();
    let decoded = flight::decode(bytes);
    match &decoded {
        Slot::Free => {}
        Slot::Pending { digest, until_ms } => {
            let again = flight::encode_pending(digest, *until_ms);
            assert!(bytes.starts_with(&again), "pending slot re-encodes");
        }
        Slot::Done {
            digest,
            until_ms,
            status,
            body,
        } => {
            assert_eq!(flight::encode_done(digest, *until_ms, *status, body), bytes);
        }
    }
    let mine = &bytes[..bytes.len().min(16)];
    let step = flight::step(&decoded, mine, 5_000);
    if matches!(decoded, Slot::Free) {
        assert_eq!(step, Step::Take);
    }
    let key = flight::key(&state);
    assert!(key.starts_with("mesh-oidc/refresh/"));
    let _ = flight::digest(&state);
});
