//! Waiting as a decision: what a held request waits for, until when, when it may go on, and what
//! it is answered when time runs out (B1, L2, L5).

use crate::login;
use crate::session::Transaction;
use crate::token::TokenError;
use crate::web::{self, Reply};

/// The one grace period: a request that waits for another's dispatched call allows that call its
/// own `timeout_ms` and this much more, so the call's own timeout decides first; the key-set
/// lease and a refresh slot are held as long.
pub const GRACE_MS: u64 = 1_000;

/// What a held request waits for.
#[derive(Debug)]
pub enum WaitFor {
    /// The first key set, or (`refetch`) a new one after an unknown `kid`.
    Keys { refetch: bool },
    /// Another request's refresh of the same token, published in this shared-data slot.
    Refresh { slot: String },
    /// The code exchange answered before its ID token could be checked: the answer, kept.
    Exchange {
        exchange: Box<PendingExchange>,
        refetch: bool,
    },
    /// A refresh answered with tokens the key set cannot check yet (L5+): the answer, kept.
    Refreshed {
        refresh: Box<HeldRefresh>,
        refetch: bool,
    },
}

/// A token-endpoint answer to a refresh, held until the key set can check it.
pub struct HeldRefresh {
    pub session: crate::session::Session,
    pub status: u32,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for HeldRefresh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HeldRefresh(status {}, [redacted])", self.status)
    }
}

/// A token-endpoint answer to a code exchange, held until the key set can check it.
pub struct PendingExchange {
    pub tx: Transaction,
    pub clears: Vec<String>,
    pub status: u32,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for PendingExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PendingExchange(status {}, [redacted])", self.status)
    }
}

impl WaitFor {
    /// Whether waiting asks for the key set to be fetched again (an unknown `kid`).
    pub fn refetches(&self) -> bool {
        matches!(
            self,
            WaitFor::Keys { refetch: true }
                | WaitFor::Exchange { refetch: true, .. }
                | WaitFor::Refreshed { refetch: true, .. }
        )
    }

    pub fn needs_keys(&self) -> bool {
        !matches!(self, WaitFor::Refresh { .. })
    }

    /// When the wait ends at the latest.
    pub fn deadline_ms(&self, now_ms: u64, timeout_ms: u64) -> u64 {
        let grace = match self {
            WaitFor::Refresh { .. } => GRACE_MS,
            WaitFor::Keys { .. } | WaitFor::Exchange { .. } | WaitFor::Refreshed { .. } => 0,
        };
        now_ms.saturating_add(timeout_ms).saturating_add(grace)
    }

    /// Whether the request can be decided again: a key set newer than the one it was decided
    /// with, or (a refresh) the slot answered or given up.
    pub fn is_ready(&self, keys: KeysNow, slot_step: Option<crate::flight::Step>) -> bool {
        match self {
            WaitFor::Refresh { .. } => !matches!(slot_step, Some(crate::flight::Step::Wait)),
            WaitFor::Keys { .. } | WaitFor::Exchange { .. } | WaitFor::Refreshed { .. } => {
                keys.present && keys.newer
            }
        }
    }

    /// The answer to a request whose wait ran out (B1: 503 without keys; an unknown `kid` that
    /// no new set knows: 401; L5: a refresh nobody answered: 504; L2: the sign-in page).
    pub fn expired(&self, request_id: &str) -> Reply {
        match self {
            WaitFor::Keys { refetch: true } => {
                web::unauthorized(Some(TokenError::UnknownKey.description()))
            }
            WaitFor::Keys { refetch: false } => web::keys_unavailable(),
            WaitFor::Refresh { .. } => login::error_page(
                504,
                "The identity provider did not answer in time.",
                request_id,
            ),
            WaitFor::Exchange { exchange, .. } => {
                login::keys_missing_page(request_id, &exchange.clears)
            }
            WaitFor::Refreshed { .. } => login::keys_missing_page(request_id, &[]),
        }
    }
}

/// The key set as a waiter sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeysNow {
    pub present: bool,
    /// Newer than the set the request was decided with.
    pub newer: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flight::Step;

    fn keys(present: bool, newer: bool) -> KeysNow {
        KeysNow { present, newer }
    }

    #[test]
    fn deadlines_allow_a_refresh_its_owner_call_first() {
        assert_eq!(
            WaitFor::Keys { refetch: false }.deadline_ms(1_000, 5_000),
            6_000
        );
        let r = WaitFor::Refresh { slot: "1:x".into() };
        assert_eq!(r.deadline_ms(1_000, 5_000), 6_000 + GRACE_MS);
        assert_eq!(r.deadline_ms(u64::MAX, 5_000), u64::MAX);
    }

    #[test]
    fn readiness() {
        let k = WaitFor::Keys { refetch: true };
        assert!(!k.is_ready(keys(false, true), None));
        assert!(!k.is_ready(keys(true, false), None), "the same set again");
        assert!(k.is_ready(keys(true, true), None));
        let r = WaitFor::Refresh { slot: "1:x".into() };
        assert!(!r.is_ready(keys(true, true), Some(Step::Wait)));
        for step in [Step::Use, Step::Take, Step::Bypass] {
            assert!(r.is_ready(keys(false, false), Some(step)));
        }
    }

    #[test]
    fn what_an_expired_wait_answers() {
        let status = |w: WaitFor| w.expired("rid").status;
        assert_eq!(status(WaitFor::Keys { refetch: false }), 503);
        assert_eq!(status(WaitFor::Keys { refetch: true }), 401);
        assert_eq!(status(WaitFor::Refresh { slot: "s".into() }), 504);
        let exchange = PendingExchange {
            tx: Transaction {
                state: "s".into(),
                nonce: "n".into(),
                verifier: "v".into(),
                path: "/".into(),
                redirect_uri: "http://x/callback".into(),
            },
            clears: vec!["access_token_tx_s=; Max-Age=0".into()],
            status: 200,
            body: b"{\"access_token\":\"secret\"}".to_vec(),
        };
        assert!(!format!("{exchange:?}").contains("secret"));
        let r = WaitFor::Exchange {
            exchange: Box::new(exchange),
            refetch: false,
        }
        .expired("rid");
        assert_eq!(r.status, 503);
        assert!(r.headers.iter().any(|(n, _)| n == "set-cookie"));
        assert_eq!(
            WaitFor::Keys { refetch: true }
                .expired("rid")
                .header("www-authenticate"),
            Some("Bearer error=\"invalid_token\", error_description=\"signing key not found\"")
        );
    }
}
