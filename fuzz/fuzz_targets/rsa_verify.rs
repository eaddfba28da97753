//! `rsa::PublicKey` (the filter's RS256 verifier) against the pure-Rust reference on the same
//! inputs: the `rsa` crate that jwt-simple's pure-Rust build uses, and the arithmetic itself
//! (`s^e mod n` with num-bigint). A disagreement is a bug.
//!
//! Moduli are products of two fixed primes (or one prime alone), so the harness knows φ(n) and
//! can make a valid signature for any message and any exponent it picks: the Montgomery
//! arithmetic is checked on signatures that must verify, at many sizes (k not a multiple of 4,
//! top limbs nearly empty or full), and on those signatures altered. Moduli and signatures of
//! raw fuzz bytes check the key bounds and that nothing else is accepted.
#![no_main]

use std::sync::OnceLock;

use fixtures::primes::PRIMES;
use fixtures::{biguint, Input};
use libfuzzer_sys::fuzz_target;
use mesh_oidc::rsa::PublicKey;
use num_bigint_dig::ModInverse as _;
use num_integer::Integer as _;
use num_traits::{One as _, Zero as _};
use rsa::traits::PublicKeyParts as _;
use rsa::{BigUint, Pkcs1v15Sign, RsaPublicKey};
use sha2::Digest as _;

const DIGEST_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

fn primes() -> &'static [BigUint] {
    static P: OnceLock<Vec<BigUint>> = OnceLock::new();
    P.get_or_init(|| PRIMES.iter().map(|h| biguint(h)).collect())
}

/// RFC 8017 EMSA-PKCS1-v1_5 for SHA-256, `k` bytes.
fn encoded(message: &[u8], k: usize) -> Option<Vec<u8>> {
    let digest = sha2::Sha256::digest(message);
    let t = DIGEST_INFO.len() + digest.len();
    if k < t + 11 {
        return None;
    }
    let mut em = vec![0x00, 0x01];
    em.resize(k - t - 1, 0xff);
    em.push(0x00);
    em.extend_from_slice(&DIGEST_INFO);
    em.extend_from_slice(&digest);
    Some(em)
}

fn be_padded(x: &BigUint, k: usize) -> Vec<u8> {
    let bytes = x.to_bytes_be();
    let mut out = vec![0u8; k.saturating_sub(bytes.len())];
    out.extend_from_slice(&bytes);
    out
}

/// What the filter's verifier must accept (RFC 8017 §8.2.2), computed the slow, obvious way.
fn expected(n: &BigUint, e: &BigUint, message: &[u8], signature: &[u8]) -> bool {
    let k = n.to_bytes_be().len();
    if signature.len() != k {
        return false;
    }
    let s = BigUint::from_bytes_be(signature);
    if &s >= n {
        return false;
    }
    let m = s.modpow(e, n);
    encoded(message, k).is_some_and(|em| be_padded(&m, k) == em)
}

/// The bounds the filter states for a key: 2048–8192 bits, odd n, odd e ≥ 3 of at most 8 bytes.
fn in_bounds(n: &BigUint, e: &BigUint) -> bool {
    let k = n.to_bytes_be().len();
    (256..=1024).contains(&k)
        && n.is_odd()
        && e.is_odd()
        && e >= &BigUint::from(3u8)
        && e.to_bytes_be().len() <= 8
}

fn exponent(input: &mut Input) -> BigUint {
    match input.byte() % 8 {
        0 | 1 | 2 => BigUint::from(65_537u32),
        3 => BigUint::from(3u8),
        4 => BigUint::from(u64::from(input.byte()) * 2 + 1),
        5 => BigUint::from(
            u32::from_be_bytes([input.byte(), input.byte(), input.byte(), input.byte()]) | 1,
        ),
        6 => BigUint::from((1u64 << 32) + 1),
        _ => {
            BigUint::from_bytes_be(&[
                input.byte(),
                input.byte(),
                input.byte(),
                input.byte(),
                input.byte(),
                input.byte(),
                input.byte(),
                input.byte(),
            ]) | BigUint::one()
        }
    }
}

/// s = EM^d mod n, by CRT over the known prime factors.
fn sign(factors: &[&BigUint], e: &BigUint, em: &BigUint) -> Option<BigUint> {
    let n: BigUint = factors.iter().copied().product();
    let mut result = BigUint::zero();
    for p in factors {
        let p1 = *p - BigUint::one();
        let d = e.clone().mod_inverse(&p1)?.to_biguint()?;
        let sp = em.modpow(&d, p);
        // Garner-free CRT: result += sp · (n/p) · ((n/p)^-1 mod p).
        let np = &n / *p;
        let inv = (&np % *p).mod_inverse(*p)?.to_biguint()?;
        result = (result + sp * &np * inv) % &n;
    }
    Some(result)
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mode = input.byte();
    let (n, e, factors): (BigUint, BigUint, Vec<&BigUint>) = if mode & 0x80 == 0 {
        let pool = primes();
        let p = &pool[usize::from(input.byte()) % pool.len()];
        let qi = usize::from(input.byte()) % (pool.len() + 1);
        let factors = match pool.get(qi) {
            Some(q) if q != p => vec![p, q],
            _ => vec![p],
        };
        (
            factors.iter().copied().product(),
            exponent(&mut input),
            factors,
        )
    } else {
        let len = usize::from(input.byte()) * 4 + 8;
        let raw = input.part();
        let n = BigUint::from_bytes_be(&raw[..raw.len().min(len)]);
        (n, exponent(&mut input), Vec::new())
    };
    if n.is_zero() {
        return;
    }
    let k = n.to_bytes_be().len();
    let how = input.byte();
    let at = usize::from(input.byte()) | usize::from(input.byte()) << 8;
    let message = input.rest().to_vec();

    let mut made_valid = false;
    let mut signature = match how % 4 {
        // A signature that verifies, when the exponent has an inverse.
        0 | 1 => match encoded(&message, k)
            .filter(|_| !factors.is_empty())
            .and_then(|em| sign(&factors, &e, &BigUint::from_bytes_be(&em)))
        {
            Some(s) => {
                made_valid = true;
                be_padded(&s, k)
            }
            None => message.clone(),
        },
        // The message's own bytes as the signature, at the right length.
        2 => {
            let mut s = message.clone();
            s.resize(k, 0x5a);
            s
        }
        _ => message.clone(),
    };
    // Alter it: flip one bit, add n, drop or add a leading byte.
    match how / 4 % 8 {
        1 if !signature.is_empty() => {
            let i = at % signature.len();
            signature[i] ^= 1 << (how % 8);
        }
        2 => {
            let s = BigUint::from_bytes_be(&signature) + &n;
            signature = be_padded(&s, k);
        }
        3 if !signature.is_empty() => {
            signature.remove(0);
        }
        4 => signature.insert(0, 0),
        5 => signature = be_padded(&(&n - BigUint::one()), k),
        _ => {}
    }

    let want = expected(&n, &e, &message, &signature);
    if made_valid && how / 4 % 8 == 0 {
        assert!(want, "the harness made a signature that does not verify");
    }

    let key = PublicKey::new(&n.to_bytes_be(), &e.to_bytes_be());
    assert_eq!(
        key.is_some(),
        in_bounds(&n, &e),
        "key bounds: {} bytes, e = {e}",
        k
    );
    if let Some(key) = &key {
        assert_eq!(
            key.verify_sha256(&message, &signature),
            want,
            "crate::rsa disagrees with s^e mod n"
        );
        // Leading zero bytes of n and e mean the same key.
        let mut padded = vec![0u8; 3];
        padded.extend_from_slice(&n.to_bytes_be());
        assert_eq!(
            PublicKey::new(&padded, &[0, 0, 1, 0, 1]).is_some(),
            in_bounds(&n, &BigUint::from(65_537u32))
        );
    }
    if let Ok(reference) = RsaPublicKey::new(n.clone(), e.clone()) {
        let hashed = sha2::Sha256::digest(&message);
        let theirs = reference
            .verify(Pkcs1v15Sign::new::<sha2::Sha256>(), &hashed, &signature)
            .is_ok();
        assert_eq!(
            theirs,
            want,
            "the rsa crate disagrees with s^e mod n ({} bits)",
            reference.n().bits()
        );
        if let Some(key) = &key {
            assert_eq!(
                key.verify_sha256(&message, &signature),
                theirs,
                "crate::rsa disagrees with the rsa crate"
            );
        }
    }
});
