//! Single-flight refresh (L5): concurrent requests of one session, in one Envoy process, spend
//! the (rotating) refresh token once. A slot in shared data is the lock and the result: the
//! first request marks it pending and calls the provider; the others wait and then reuse the
//! answer. Slots are a fixed number, so they cannot grow without bound.

/// How long a published answer is reused by requests that still carry the old refresh token.
pub const RESULT_TTL_MS: u64 = 30_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot<'a> {
    Free,
    Pending {
        digest: &'a [u8],
        until_ms: u64,
    },
    Done {
        digest: &'a [u8],
        until_ms: u64,
        status: u32,
        body: &'a [u8],
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Mark the slot pending and call the provider.
    Take,
    /// Another request is refreshing this token: wait for its answer.
    Wait,
    /// The answer is there: use it.
    Use,
    /// The slot is busy with another token: refresh without sharing.
    Bypass,
}

pub fn key(slot: &str) -> String {
    let index = slot.split(':').next().unwrap_or_default();
    format!("mesh-oidc/refresh/{index}")
}

pub fn digest(slot: &str) -> &[u8] {
    slot.split_once(':').map_or(&b""[..], |(_, d)| d.as_bytes())
}

pub fn encode_pending(digest: &[u8], until_ms: u64) -> Vec<u8> {
    let mut out = vec![b'P'];
    out.extend_from_slice(&until_ms.to_be_bytes());
    out.push(u8::try_from(digest.len()).unwrap_or(0));
    out.extend_from_slice(digest);
    out
}

pub fn encode_done(digest: &[u8], until_ms: u64, status: u32, body: &[u8]) -> Vec<u8> {
    let mut out = vec![b'D'];
    out.extend_from_slice(&until_ms.to_be_bytes());
    out.push(u8::try_from(digest.len()).unwrap_or(0));
    out.extend_from_slice(digest);
    out.extend_from_slice(&status.to_be_bytes());
    out.extend_from_slice(body);
    out
}

pub fn decode(bytes: &[u8]) -> Slot<'_> {
    fn parse(bytes: &[u8]) -> Option<Slot<'_>> {
        let (&kind, rest) = bytes.split_first()?;
        let (until, rest) = rest.split_first_chunk::<8>()?;
        let until_ms = u64::from_be_bytes(*until);
        let (&len, rest) = rest.split_first()?;
        let (digest, rest) = rest.split_at_checked(usize::from(len))?;
        match kind {
            b'P' => Some(Slot::Pending { digest, until_ms }),
            b'D' => {
                let (status, body) = rest.split_first_chunk::<4>()?;
                Some(Slot::Done {
                    digest,
                    until_ms,
                    status: u32::from_be_bytes(*status),
                    body,
                })
            }
            _ => None,
        }
    }
    parse(bytes).unwrap_or(Slot::Free)
}

pub fn step(slot: &Slot, mine: &[u8], now_ms: u64) -> Step {
    match slot {
        Slot::Free => Step::Take,
        Slot::Pending { until_ms, .. } | Slot::Done { until_ms, .. } if *until_ms <= now_ms => {
            Step::Take
        }
        Slot::Pending { digest, .. } if *digest == mine => Step::Wait,
        Slot::Done { digest, .. } if *digest == mine => Step::Use,
        _ => Step::Bypass,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_refresh_many_readers() {
        let me = b"abc";
        assert_eq!(step(&decode(b""), me, 0), Step::Take);
        let pending = encode_pending(me, 1_000);
        assert_eq!(step(&decode(&pending), me, 500), Step::Wait);
        assert_eq!(step(&decode(&pending), b"other", 500), Step::Bypass);
        assert_eq!(
            step(&decode(&pending), me, 1_000),
            Step::Take,
            "owner gave up"
        );
        let done = encode_done(me, 2_000, 200, b"{\"access_token\":\"x\"}");
        assert_eq!(
            decode(&done),
            Slot::Done {
                digest: me,
                until_ms: 2_000,
                status: 200,
                body: b"{\"access_token\":\"x\"}"
            }
        );
        assert_eq!(step(&decode(&done), me, 1_500), Step::Use);
        assert_eq!(step(&decode(&done), b"zzz", 1_500), Step::Bypass);
        assert_eq!(step(&decode(&done), b"zzz", 2_000), Step::Take);
    }

    #[test]
    fn garbage_slots_are_free() {
        for junk in [
            &b"X"[..],
            b"P",
            b"P12345678",
            b"D12345678\x05ab",
            b"\xff\xff",
        ] {
            assert_eq!(decode(junk), Slot::Free, "{junk:?}");
        }
        assert_eq!(key("17:abc"), "mesh-oidc/refresh/17");
        assert_eq!(digest("17:abc"), b"abc");
    }
}
