//! `KeySet::parse`: a provider's key set. Never a panic; bounded (at most `MAX_ENTRIES` read);
//! every RSA key it keeps is one the pure-Rust reference (the `rsa` crate) accepts too, within
//! the size and exponent bounds, with `crate::rsa`'s constants prepared (every RSA algorithm goes
//! through it); every EC key is a 65-byte SEC1 point.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_oidc::jwks::{Alg, KeyMaterial, KeySet, MAX_ENTRIES};
use rsa::traits::PublicKeyParts as _;
use rsa::{BigUint, RsaPublicKey};

fuzz_target!(|data: &[u8]| {
    let Ok(set) = KeySet::parse(data) else {
        return;
    };
    assert!(set.keys.len() + set.skipped <= MAX_ENTRIES);
    for key in &set.keys {
        match &key.material {
            KeyMaterial::Rsa { n, e, fast } => {
                let reference =
                    RsaPublicKey::new(BigUint::from_bytes_be(n), BigUint::from_bytes_be(e))
                        .unwrap_or_else(|err| panic!("kept a key the reference refuses: {err}"));
                let bits = reference.n().bits();
                assert!((2048..=4096).contains(&bits), "{bits} bits");
                assert!(fast.is_some(), "a kept RSA key has its verifier");
                assert!(key.accepts(key.alg.unwrap_or(Alg::RS256)));
                assert!(!key.accepts(Alg::ES256));
            }
            KeyMaterial::P256(point) => {
                assert_eq!(point.len(), 65);
                assert_eq!(point.first(), Some(&4));
                assert!(key.accepts(Alg::ES256) && !key.accepts(Alg::RS256));
            }
        }
        if let Some(kid) = &key.kid {
            // The first key of a kid is the one tokens naming it are checked with.
            let first = set.by_kid(kid).expect("by_kid finds a kept key");
            assert_eq!(first.kid.as_deref(), Some(kid.as_str()));
        }
    }
});
