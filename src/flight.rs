//! Single-flight refresh (L5): concurrent requests of one session, in one Envoy process, spend
//! the (rotating) refresh token once. A slot in shared data is the lock and the result: the
//! first request marks it pending and calls the provider; the others wait and then reuse the
//! answer. Slots are a fixed number, so they cannot grow without bound.

/// How long a published answer is reused by requests that still carry the old refresh token.
pub const RESULT_TTL_MS: u64 = 30_000;

/// How long this answer may be reused: [`RESULT_TTL_MS`], but never past half the lifetime of
/// the access token it holds (a provider that does not rotate refresh tokens would otherwise hand
/// out an expired token from the slot).
pub fn result_ttl_ms(status: u32, body: &[u8]) -> u64 {
    if !(200..300).contains(&status) {
        return RESULT_TTL_MS;
    }
    crate::json::from_slice(body)
        .ok()
        .and_then(|answer| answer.get("expires_in")?.as_u64())
        .map_or(RESULT_TTL_MS, |s| RESULT_TTL_MS.min(s.saturating_mul(500)))
}

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

/// What a request that must refresh does with its token's slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Another request's answer for this token is there: use it.
    Use { status: u32, body: Vec<u8> },
    /// Another request is refreshing this token: wait for its answer.
    Wait,
    /// Write `value` to the slot (with the CAS it was read with), then call the provider and
    /// publish the answer; if the write loses a race, wait instead.
    Take { value: Vec<u8> },
    /// The slot is busy with another token: refresh without sharing.
    Bypass,
}

/// The plan for refreshing `slot` (see [`crate::login::refresh_slot`]) when the slot holds
/// `current`: a pending mark lasts the call's timeout and [`crate::pending::GRACE_MS`].
pub fn plan(slot: &str, current: &[u8], now_ms: u64, timeout_ms: u64) -> Plan {
    let mine = digest(slot);
    let decoded = decode(current);
    match (step(&decoded, mine, now_ms), decoded) {
        (Step::Use, Slot::Done { status, body, .. }) => Plan::Use {
            status,
            body: body.to_vec(),
        },
        (Step::Wait, _) => Plan::Wait,
        (Step::Take, _) => {
            let until = now_ms
                .saturating_add(timeout_ms)
                .saturating_add(crate::pending::GRACE_MS);
            Plan::Take {
                value: encode_pending(mine, until),
            }
        }
        (Step::Use | Step::Bypass, _) => Plan::Bypass,
    }
}

/// The slot's content after its owner gave up (its request is gone): a pending mark that has
/// already run out, so the next request takes the slot. `None` when the slot holds something
/// else (an answer, or another token's refresh).
pub fn release(slot: &str, current: &[u8]) -> Option<Vec<u8>> {
    let mine = digest(slot);
    match decode(current) {
        Slot::Pending { digest, .. } if digest == mine => Some(encode_pending(mine, 0)),
        _ => None,
    }
}

/// A successful answer for this slot's token that the slot still holds, however old (L5+: used
/// when the provider says the token was spent).
pub fn previous_success(slot: &str, current: &[u8]) -> Option<(u32, Vec<u8>)> {
    match decode(current) {
        Slot::Done {
            digest: d,
            status,
            body,
            ..
        } if d == digest(slot) && (200..300).contains(&status) => Some((status, body.to_vec())),
        _ => None,
    }
}

/// Whether a token-endpoint answer says the grant (the refresh token) is no longer valid.
pub fn is_invalid_grant(status: u32, body: &[u8]) -> bool {
    status == 400
        && crate::json::from_slice(body).is_ok_and(|answer| {
            answer.get("error").and_then(|e| e.as_str()) == Some("invalid_grant")
        })
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
    fn the_plan_for_a_slot() {
        let slot = "3:abc";
        assert_eq!(
            plan(slot, b"", 100, 5_000),
            Plan::Take {
                value: encode_pending(b"abc", 6_100)
            }
        );
        assert_eq!(
            plan(slot, &encode_pending(b"abc", 6_100), 200, 5_000),
            Plan::Wait
        );
        assert_eq!(
            plan(slot, &encode_pending(b"xyz", 6_100), 200, 5_000),
            Plan::Bypass
        );
        assert_eq!(
            plan(slot, &encode_done(b"abc", 9_000, 200, b"{}"), 300, 5_000),
            Plan::Use {
                status: 200,
                body: b"{}".to_vec()
            }
        );
        assert!(matches!(
            plan(slot, &encode_pending(b"abc", 6_100), 6_100, 5_000),
            Plan::Take { .. }
        ));
    }

    #[test]
    fn an_owner_that_gives_up_frees_its_slot() {
        let slot = "3:abc";
        let pending = encode_pending(b"abc", 9_000);
        let released = release(slot, &pending).unwrap();
        assert!(matches!(
            plan(slot, &released, 100, 5_000),
            Plan::Take { .. }
        ));
        assert_eq!(release(slot, &encode_pending(b"xyz", 9_000)), None);
        assert_eq!(release(slot, &encode_done(b"abc", 9_000, 200, b"{}")), None);
        assert_eq!(release(slot, b""), None);
    }

    #[test]
    fn an_answer_is_reused_at_most_half_its_token_lifetime() {
        assert_eq!(result_ttl_ms(200, br#"{"expires_in": 3}"#), 1_500);
        assert_eq!(result_ttl_ms(200, br#"{"expires_in": 300}"#), RESULT_TTL_MS);
        assert_eq!(result_ttl_ms(200, b"{}"), RESULT_TTL_MS);
        assert_eq!(result_ttl_ms(400, br#"{"expires_in": 1}"#), RESULT_TTL_MS);
        assert_eq!(result_ttl_ms(200, b"junk"), RESULT_TTL_MS);
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
