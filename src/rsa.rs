//! RSA signature verification, public key only: RSASSA-PKCS1-v1_5 (RS256, RS384, RS512) and
//! RSASSA-PSS with MGF1 and a salt as long as the hash (PS256, PS384, PS512, as RFC 7518 §3.5
//! fixes them).
//!
//! Why not the general-purpose RSA that jwt-simple uses: a cold token check is dominated by one
//! modular exponentiation, and a general big-number library spends most of it on allocation and
//! generic division. Verification needs only `s^e mod n` with a public exponent, so this module
//! precomputes the Montgomery constants once per key (when the key set is parsed) and does the
//! exponentiation with 32-bit limbs, whose 64-bit products are native in wasm32. Nothing here is
//! secret (public key, public signature), so constant time is not a concern.
//!
//! The PKCS#1 v1.5 encoded message is rebuilt and compared in full (RFC 8017 §8.2.2 step 3–4),
//! never parsed, which is what avoids the classic PKCS#1 v1.5 parsing forgeries; PSS follows
//! EMSA-PSS-VERIFY (RFC 8017 §9.1.2) step by step. Checked against Wycheproof's vectors for every
//! hash and padding in the tests. (It also keeps jwt-simple's general RSA, some 66 KB, out of the
//! module.)

/// DER prefixes of DigestInfo (RFC 8017 §9.2, note 1).
const SHA256_DIGEST_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];
const SHA384_DIGEST_INFO: [u8; 19] = [
    0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05,
    0x00, 0x04, 0x30,
];
const SHA512_DIGEST_INFO: [u8; 19] = [
    0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05,
    0x00, 0x04, 0x40,
];

/// The hash of a signature scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn digest(self, parts: &[&[u8]]) -> Vec<u8> {
        match self {
            Hash::Sha256 => {
                let mut h = hmac_sha256::Hash::new();
                parts.iter().for_each(|p| h.update(p));
                h.finalize().to_vec()
            }
            Hash::Sha384 => {
                let mut h = hmac_sha512::sha384::Hash::new();
                parts.iter().for_each(|p| h.update(p));
                h.finalize().to_vec()
            }
            Hash::Sha512 => {
                let mut h = hmac_sha512::Hash::new();
                parts.iter().for_each(|p| h.update(p));
                h.finalize().to_vec()
            }
        }
    }

    fn digest_info(self) -> &'static [u8] {
        match self {
            Hash::Sha256 => &SHA256_DIGEST_INFO,
            Hash::Sha384 => &SHA384_DIGEST_INFO,
            Hash::Sha512 => &SHA512_DIGEST_INFO,
        }
    }
}

/// The padding of a signature scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    Pkcs1v15,
    /// MGF1 with the same hash, salt length = hash length.
    Pss,
}

/// Moduli accepted: 2048 to 8192 bits (below 2048 RSA is not safe; above, a key set is odd).
const MIN_BYTES: usize = 256;
const MAX_BYTES: usize = 1024;

#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// Modulus, little-endian 32-bit limbs.
    n: Vec<u32>,
    /// Length of the modulus in bytes (k in RFC 8017).
    k: usize,
    /// Public exponent.
    e: u64,
    /// Length of the modulus in bits.
    bits: usize,
    /// -n^-1 mod 2^32.
    n0inv: u32,
    /// R^2 mod n, R = 2^(32·limbs): turns a number into Montgomery form.
    r2: Vec<u32>,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rsa::PublicKey({} bits, e={})", self.k * 8, self.e)
    }
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes.get(first..).unwrap_or_default()
}

/// Big-endian bytes to `limbs` little-endian limbs (the value must fit).
fn to_limbs(be: &[u8], limbs: usize) -> Vec<u32> {
    let mut out = vec![0u32; limbs];
    for (i, byte) in be.iter().rev().enumerate() {
        if let Some(limb) = out.get_mut(i / 4) {
            *limb |= u32::from(*byte) << (8 * (i % 4));
        }
    }
    out
}

fn to_bytes(limbs: &[u32], k: usize) -> Vec<u8> {
    let mut out = vec![0u8; k];
    for (i, byte) in out.iter_mut().rev().enumerate() {
        let limb = limbs.get(i / 4).copied().unwrap_or(0);
        *byte = (limb >> (8 * (i % 4))) as u8;
    }
    out
}

/// a >= b, same length.
fn geq(a: &[u32], b: &[u32]) -> bool {
    for (x, y) in a.iter().rev().zip(b.iter().rev()) {
        if x != y {
            return x > y;
        }
    }
    true
}

/// a -= b, same length; returns the borrow.
fn sub_in_place(a: &mut [u32], b: &[u32]) -> bool {
    let mut borrow = 0u64;
    for (x, y) in a.iter_mut().zip(b) {
        let d = u64::from(*x)
            .wrapping_sub(u64::from(*y))
            .wrapping_sub(borrow);
        *x = d as u32;
        borrow = (d >> 63) & 1;
    }
    borrow != 0
}

impl PublicKey {
    /// `None` for a modulus that is even, out of range, or an exponent that is even or < 3.
    pub fn new(n_be: &[u8], e_be: &[u8]) -> Option<PublicKey> {
        let n_be = strip_zeros(n_be);
        let e_be = strip_zeros(e_be);
        let k = n_be.len();
        if !(MIN_BYTES..=MAX_BYTES).contains(&k) || e_be.is_empty() || e_be.len() > 8 {
            return None;
        }
        let e = e_be.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        if e < 3 || e % 2 == 0 || n_be.last().is_none_or(|b| b % 2 == 0) {
            return None;
        }
        let limbs = k.div_ceil(4);
        let n = to_limbs(n_be, limbs);
        let n0 = *n.first()?;
        // Newton's iteration doubles the correct low bits each step: 1 → 2 → … → 32.
        let mut inv: u32 = 1;
        for _ in 0..5 {
            inv = inv.wrapping_mul(2u32.wrapping_sub(n0.wrapping_mul(inv)));
        }
        let n0inv = inv.wrapping_neg();
        // R^2 mod n by doubling 1, 2·32·limbs times, reducing as it goes.
        let mut r2 = vec![0u32; limbs];
        *r2.first_mut()? = 1;
        for _ in 0..(2 * 32 * limbs) {
            let mut carry = 0u32;
            for limb in r2.iter_mut() {
                let next = *limb >> 31;
                *limb = (*limb << 1) | carry;
                carry = next;
            }
            if carry == 1 || geq(&r2, &n) {
                sub_in_place(&mut r2, &n);
            }
        }
        let top = n_be.first().copied().unwrap_or(0);
        let bits = 8 * k - top.leading_zeros() as usize;
        Some(PublicKey {
            n,
            k,
            e,
            bits,
            n0inv,
            r2,
        })
    }

    /// Montgomery product a·b·R^-1 mod n, for a, b < n: the full product first, then the
    /// reduction (separated operand scanning), every inner loop a zip over two slices.
    fn mont_mul(&self, a: &[u32], b: &[u32]) -> Vec<u32> {
        let len = self.n.len();
        let mut t = vec![0u32; 2 * len + 1];
        for (i, &bi) in b.iter().enumerate() {
            let bi = u64::from(bi);
            let Some(row) = t.get_mut(i..) else {
                return Vec::new();
            };
            let mut carry = 0u64;
            for (tj, &aj) in row.iter_mut().zip(a) {
                let s = u64::from(*tj) + u64::from(aj) * bi + carry;
                *tj = s as u32;
                carry = s >> 32;
            }
            if let Some(slot) = row.get_mut(len) {
                *slot = carry as u32;
            }
        }
        self.reduce(t)
    }

    /// Montgomery square a·a·R^-1 mod n: each cross product once, doubled, plus the squares.
    fn mont_square(&self, a: &[u32]) -> Vec<u32> {
        let len = self.n.len();
        let mut t = vec![0u32; 2 * len + 1];
        for (i, &ai) in a.iter().enumerate() {
            let ai = u64::from(ai);
            let (Some(rest), Some(row)) = (a.get(i + 1..), t.get_mut(2 * i + 1..)) else {
                return Vec::new();
            };
            // Slices on both sides: the loop compiles to plain indexed code (an iterator held
            // by reference would live in wasm's linear memory and be reloaded every step).
            let Some((head, tail)) = row.split_at_mut_checked(rest.len()) else {
                return Vec::new();
            };
            let mut carry = 0u64;
            for (tj, &aj) in head.iter_mut().zip(rest) {
                let s = u64::from(*tj) + u64::from(aj) * ai + carry;
                *tj = s as u32;
                carry = s >> 32;
            }
            if let Some(slot) = tail.first_mut() {
                *slot = carry as u32;
            }
        }
        // Double the cross products, then add the squares on the diagonal.
        let mut top = 0u32;
        for limb in t.iter_mut() {
            let next = *limb >> 31;
            *limb = (*limb << 1) | top;
            top = next;
        }
        let mut carry = 0u64;
        for (pair, &ai) in t.chunks_exact_mut(2).zip(a) {
            let sq = u64::from(ai) * u64::from(ai);
            if let [lo, hi] = pair {
                let s = u64::from(*lo) + (sq & 0xffff_ffff) + carry;
                *lo = s as u32;
                let s = u64::from(*hi) + (sq >> 32) + (s >> 32);
                *hi = s as u32;
                carry = s >> 32;
            }
        }
        if let Some(last) = t.last_mut() {
            *last = last.wrapping_add(carry as u32);
        }
        self.reduce(t)
    }

    /// t·R^-1 mod n for t < n·R (2·len + 1 limbs).
    fn reduce(&self, mut t: Vec<u32>) -> Vec<u32> {
        let len = self.n.len();
        for i in 0..len {
            let Some(window) = t.get_mut(i..) else {
                return Vec::new();
            };
            let m = u64::from(
                window
                    .first()
                    .copied()
                    .unwrap_or(0)
                    .wrapping_mul(self.n0inv),
            );
            let Some((head, tail)) = window.split_at_mut_checked(len) else {
                return Vec::new();
            };
            let mut carry = 0u64;
            for (tj, &nj) in head.iter_mut().zip(&self.n) {
                let s = u64::from(*tj) + m * u64::from(nj) + carry;
                *tj = s as u32;
                carry = s >> 32;
            }
            for tj in tail.iter_mut() {
                if carry == 0 {
                    break;
                }
                let s = u64::from(*tj) + carry;
                *tj = s as u32;
                carry = s >> 32;
            }
        }
        let mut out: Vec<u32> = t.get(len..2 * len).map(<[u32]>::to_vec).unwrap_or_default();
        let overflow = t.get(2 * len).copied().unwrap_or(0) != 0;
        if overflow || geq(&out, &self.n) {
            sub_in_place(&mut out, &self.n);
        }
        out
    }

    /// Checks an RS256 signature over `message`.
    pub fn verify_sha256(&self, message: &[u8], signature: &[u8]) -> bool {
        self.verify(Padding::Pkcs1v15, Hash::Sha256, message, signature)
    }

    /// Checks a signature over `message` made with this padding and hash.
    pub fn verify(&self, padding: Padding, hash: Hash, message: &[u8], signature: &[u8]) -> bool {
        let Some(em) = self.public_op(signature) else {
            return false;
        };
        match padding {
            Padding::Pkcs1v15 => em == self.pkcs1_encoding(hash, message),
            Padding::Pss => self.pss_consistent(hash, message, &em),
        }
    }

    /// RSAVP1 (RFC 8017 §5.2.2): s^e mod n as k bytes, `None` when the signature is not k bytes
    /// or not below n.
    fn public_op(&self, signature: &[u8]) -> Option<Vec<u8>> {
        if signature.len() != self.k {
            return None;
        }
        let len = self.n.len();
        let s = to_limbs(signature, len);
        if geq(&s, &self.n) {
            return None;
        }
        // m = s^e mod n, left to right over the exponent's bits, in Montgomery form.
        let s_mont = self.mont_mul(&s, &self.r2);
        let mut x = s_mont.clone();
        let bits = 64 - self.e.leading_zeros();
        for bit in (0..bits.saturating_sub(1)).rev() {
            x = self.mont_square(&x);
            if (self.e >> bit) & 1 == 1 {
                x = self.mont_mul(&x, &s_mont);
            }
        }
        let mut one = vec![0u32; len];
        *one.first_mut()? = 1;
        let m = self.mont_mul(&x, &one);
        Some(to_bytes(&m, self.k))
    }

    /// EMSA-PKCS1-v1_5: 0x00 0x01 FF…FF 0x00 DigestInfo(hash(message)), k bytes.
    fn pkcs1_encoding(&self, hash: Hash, message: &[u8]) -> Vec<u8> {
        let digest = hash.digest(&[message]);
        let info = hash.digest_info();
        let t_len = info.len() + digest.len();
        let mut em = Vec::with_capacity(self.k);
        em.push(0x00);
        em.push(0x01);
        em.resize(self.k.saturating_sub(t_len + 1), 0xff);
        em.push(0x00);
        em.extend_from_slice(info);
        em.extend_from_slice(&digest);
        em
    }

    /// EMSA-PSS-VERIFY (RFC 8017 §9.1.2) with MGF1(hash) and sLen = hLen; `em_k` is RSAVP1's
    /// output as k bytes.
    fn pss_consistent(&self, hash: Hash, message: &[u8], em_k: &[u8]) -> bool {
        let m_hash = hash.digest(&[message]);
        let h_len = m_hash.len();
        let s_len = h_len;
        let em_bits = self.bits.saturating_sub(1);
        let em_len = em_bits.div_ceil(8);
        // §8.1.2 step 2c: m must fit in emLen bytes (the top byte is zero when emLen < k).
        let Some((high, em)) = em_k.split_at_checked(self.k.saturating_sub(em_len)) else {
            return false;
        };
        if high.iter().any(|b| *b != 0) || em.len() != em_len {
            return false;
        }
        // Steps 3–5.
        if em_len < h_len + s_len + 2 || em.last() != Some(&0xbc) {
            return false;
        }
        let db_len = em_len - h_len - 1;
        let (Some(masked_db), Some(h)) = (em.get(..db_len), em.get(db_len..em_len - 1)) else {
            return false;
        };
        // Step 6: the bits above emBits must be zero.
        let unused = 8 * em_len - em_bits;
        let top_mask = 0xffu8.checked_shr(unused as u32).unwrap_or(0);
        if masked_db.first().is_none_or(|b| b & !top_mask != 0) {
            return false;
        }
        // Steps 7–9: DB = maskedDB xor MGF1(H, dbLen), the unused bits cleared.
        let mut db = mgf1(hash, h, db_len);
        for (d, m) in db.iter_mut().zip(masked_db) {
            *d ^= m;
        }
        if let Some(first) = db.first_mut() {
            *first &= top_mask;
        }
        // Step 10: PS (zeros), then 0x01, then the salt.
        let ps_len = em_len - h_len - s_len - 2;
        let (Some(ps), Some(one), Some(salt)) =
            (db.get(..ps_len), db.get(ps_len), db.get(ps_len + 1..))
        else {
            return false;
        };
        if ps.iter().any(|b| *b != 0) || *one != 0x01 || salt.len() != s_len {
            return false;
        }
        // Steps 12–14.
        hash.digest(&[&[0u8; 8], &m_hash, salt]) == h
    }
}

/// MGF1 (RFC 8017 §B.2.1): `len` bytes from hash(seed ‖ counter) for counter = 0, 1, …
fn mgf1(hash: Hash, seed: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut counter = 0u32;
    while out.len() < len {
        out.extend_from_slice(&hash.digest(&[seed, &counter.to_be_bytes()]));
        counter = counter.wrapping_add(1);
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use wycheproof::rsa_pkcs1_verify::{TestName, TestSet};
    use wycheproof::TestResult;

    #[test]
    fn wycheproof_rsa_pkcs1_sha256() {
        for name in [
            TestName::Rsa2048Sha256,
            TestName::Rsa3072Sha256,
            TestName::Rsa4096Sha256,
        ] {
            let checked = run_with(name, Hash::Sha256);
            assert!(checked > 50, "{checked} vectors");
        }
    }

    /// One Wycheproof vector: asserts its verdict; false for an "acceptable" one (not counted).
    fn judged(
        key: Option<&PublicKey>,
        (padding, hash): (Padding, Hash),
        (msg, sig): (&[u8], &[u8]),
        result: &TestResult,
        what: &str,
    ) -> bool {
        let ok = key.is_some_and(|k| k.verify(padding, hash, msg, sig));
        match result {
            TestResult::Valid => assert!(ok, "{what} must verify"),
            TestResult::Invalid => assert!(!ok, "{what} must fail"),
            TestResult::Acceptable => return false,
        }
        true
    }

    fn run_with(name: TestName, hash: Hash) -> usize {
        let set = TestSet::load(name).unwrap();
        let mut checked = 0;
        for group in set.test_groups {
            let key = PublicKey::new(group.key.n.as_ref(), group.key.e.as_ref());
            for t in group.tests {
                let what = format!("{name:?} tc {}", t.tc_id);
                let scheme = (Padding::Pkcs1v15, hash);
                checked += usize::from(judged(
                    key.as_ref(),
                    scheme,
                    (&t.msg, &t.sig),
                    &t.result,
                    &what,
                ));
            }
        }
        checked
    }

    #[test]
    fn wycheproof_rsa_pkcs1_sha384_sha512() {
        for (name, hash) in [
            (TestName::Rsa2048Sha384, Hash::Sha384),
            (TestName::Rsa3072Sha384, Hash::Sha384),
            (TestName::Rsa2048Sha512, Hash::Sha512),
            (TestName::Rsa4096Sha512, Hash::Sha512),
        ] {
            let checked = run_with(name, hash);
            assert!(checked > 50, "{name:?}: {checked} vectors");
        }
    }

    #[test]
    fn wycheproof_rsa_pss() {
        use wycheproof::rsa_pss_verify::{TestName as Pss, TestSet as PssSet};
        for (name, hash) in [
            (Pss::RsaPss2048Sha256Mgf1SaltLen32, Hash::Sha256),
            (Pss::RsaPss3072Sha256Mgf1SaltLen32, Hash::Sha256),
            (Pss::RsaPss4096Sha256Mgf1SaltLen32, Hash::Sha256),
            (Pss::RsaPss2048Sha384Mgf1SaltLen48, Hash::Sha384),
            (Pss::RsaPss4096Sha384Mgf1SaltLen48, Hash::Sha384),
            (Pss::RsaPss4096Sha512Mgf1SaltLen64, Hash::Sha512),
        ] {
            let set = PssSet::load(name).unwrap();
            let mut checked = 0;
            for group in set.test_groups {
                let key = PublicKey::new(group.key.n.as_ref(), group.key.e.as_ref());
                for t in group.tests {
                    let what = format!("{name:?} tc {}", t.tc_id);
                    let scheme = (Padding::Pss, hash);
                    checked += usize::from(judged(
                        key.as_ref(),
                        scheme,
                        (&t.msg, &t.sig),
                        &t.result,
                        &what,
                    ));
                }
            }
            assert!(checked > 20, "{name:?}: {checked} vectors");
        }
    }

    #[test]
    fn agrees_with_jwt_simple_on_every_rsa_algorithm() {
        use jwt_simple::prelude::*;
        let pair = crate::testkit::rsa();
        let c = pair.public_key().to_components();
        let fast = PublicKey::new(&c.n, &c.e).unwrap();
        let der = pair.to_der().unwrap();
        let claims = || Claims::create(Duration::from_secs(60));
        let tokens = [
            (
                Padding::Pkcs1v15,
                Hash::Sha384,
                RS384KeyPair::from_der(&der)
                    .unwrap()
                    .sign(claims())
                    .unwrap(),
            ),
            (
                Padding::Pkcs1v15,
                Hash::Sha512,
                RS512KeyPair::from_der(&der)
                    .unwrap()
                    .sign(claims())
                    .unwrap(),
            ),
            (
                Padding::Pss,
                Hash::Sha256,
                PS256KeyPair::from_der(&der)
                    .unwrap()
                    .sign(claims())
                    .unwrap(),
            ),
            (
                Padding::Pss,
                Hash::Sha384,
                PS384KeyPair::from_der(&der)
                    .unwrap()
                    .sign(claims())
                    .unwrap(),
            ),
            (
                Padding::Pss,
                Hash::Sha512,
                PS512KeyPair::from_der(&der)
                    .unwrap()
                    .sign(claims())
                    .unwrap(),
            ),
        ];
        for (padding, hash, token) in tokens {
            let (input, sig) = token.rsplit_once('.').unwrap();
            let sig =
                base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sig)
                    .unwrap();
            assert!(
                fast.verify(padding, hash, input.as_bytes(), &sig),
                "{padding:?} {hash:?}"
            );
            let other = if hash == Hash::Sha256 {
                Hash::Sha384
            } else {
                Hash::Sha256
            };
            assert!(!fast.verify(padding, other, input.as_bytes(), &sig));
            let other = if padding == Padding::Pss {
                Padding::Pkcs1v15
            } else {
                Padding::Pss
            };
            assert!(!fast.verify(other, hash, input.as_bytes(), &sig));
            assert!(!fast.verify(padding, hash, format!("{input}x").as_bytes(), &sig));
        }
    }

    #[test]
    fn agrees_with_jwt_simple_on_its_own_tokens() {
        let key = crate::testkit::rsa();
        let c = key.public_key().to_components();
        let fast = PublicKey::new(&c.n, &c.e).unwrap();
        let token = crate::testkit::valid_token();
        let (input, sig) = token.rsplit_once('.').unwrap();
        let sig =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sig).unwrap();
        assert!(fast.verify_sha256(input.as_bytes(), &sig));
        assert!(!fast.verify_sha256(format!("{input}x").as_bytes(), &sig));
        let mut bad = sig.clone();
        bad[10] ^= 1;
        assert!(!fast.verify_sha256(input.as_bytes(), &bad));
        assert!(!fast.verify_sha256(input.as_bytes(), &sig[1..]));
    }

    #[test]
    fn refuses_weak_or_odd_keys() {
        assert!(
            PublicKey::new(&[0xff; 128], &[1, 0, 1]).is_none(),
            "1024-bit"
        );
        assert!(
            PublicKey::new(&[0xfe; 256], &[1, 0, 1]).is_none(),
            "even modulus"
        );
        assert!(
            PublicKey::new(&[0xff; 256], &[2]).is_none(),
            "even exponent"
        );
        assert!(PublicKey::new(&[0xff; 256], &[1]).is_none(), "e = 1");
        assert!(PublicKey::new(&[0xff; 256], &[1, 0, 1]).is_some());
    }
}
