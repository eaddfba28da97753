//! What the filter does to a request's credentials before deciding it (B6): one access token per
//! request, and only the checked one goes on. Shared by both modes and by skip paths, where
//! nothing is checked and so none of the filter's cookies goes on.

use crate::metrics::Event;
use crate::session::{self, Credential, Names};
use crate::web::{self, Reply};

/// The credential part of a request, read once from its headers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Inbound {
    /// The access token to check (validate mode), if one was presented.
    pub token: Option<Vec<u8>>,
    /// Two different access tokens: the request is refused, whichever is valid.
    pub conflict: bool,
    /// Headers to set (or, with `None`, remove) when the request goes on to the service.
    pub rewrites: Vec<(&'static str, Option<Vec<u8>>)>,
}

/// The answer to a request that carries two different access tokens (B6).
pub fn conflict_reply() -> Reply {
    web::unauthorized(Some("more than one access token in the request"))
        .counting(Event::TokenRejected("conflict"))
}

/// Reads a request's `Authorization` headers and joined `Cookie` header. `skipped`: a skip path,
/// which goes on unchecked, so it gets no cookie of the filter at all.
pub fn read(
    authorizations: &[&[u8]],
    cookie: Option<&[u8]>,
    names: &Names,
    skipped: bool,
) -> Inbound {
    let header = cookie.unwrap_or_default();
    let (token, from_cookie, merged) = match session::credential(authorizations, header, names) {
        Credential::Conflict => {
            return Inbound {
                conflict: true,
                ..Inbound::default()
            }
        }
        Credential::None => (None, false, false),
        Credential::One {
            token,
            from_cookie,
            merged_authorization,
        } => (Some(token), from_cookie, merged_authorization),
    };
    let mut rewrites = Vec::new();
    if let Some(cookie) = cookie {
        let verified = token.as_deref().filter(|_| from_cookie && !skipped);
        let kept = session::forwarded_cookies(cookie, names, verified);
        if kept.as_deref() != Some(cookie) {
            rewrites.push(("cookie", kept));
        }
    }
    if merged {
        if let Some(t) = &token {
            let mut value = b"Bearer ".to_vec();
            value.extend_from_slice(t);
            rewrites.push(("authorization", Some(value)));
        }
    }
    Inbound {
        token: token.map(std::borrow::Cow::into_owned),
        conflict: false,
        rewrites,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        Names::new("access_token")
    }

    #[test]
    fn an_untouched_request_has_no_rewrite() {
        let i = read(&[], Some(b"a=1; access_token=t"), &names(), false);
        assert_eq!(i.token.as_deref(), Some(&b"t"[..]));
        assert!(i.rewrites.is_empty() && !i.conflict);
        let i = read(&[b"Bearer t"], None, &names(), false);
        assert!(i.rewrites.is_empty());
    }

    #[test]
    fn copies_and_sealed_cookies_are_dropped() {
        let i = read(
            &[],
            Some(b"access_token=t; access_token=t; access_token_session=s; a=1"),
            &names(),
            false,
        );
        assert_eq!(
            i.rewrites,
            vec![("cookie", Some(b"access_token=t; a=1".to_vec()))]
        );
        // A skip path: nothing was checked, so nothing of the filter's goes on.
        let i = read(
            &[],
            Some(b"access_token=t; access_token_tx_x=s"),
            &names(),
            true,
        );
        assert_eq!(i.rewrites, vec![("cookie", None)]);
    }

    #[test]
    fn a_joined_authorization_header_becomes_the_one_token() {
        let i = read(&[b"Bearer t,Bearer t"], None, &names(), false);
        assert_eq!(
            i.rewrites,
            vec![("authorization", Some(b"Bearer t".to_vec()))]
        );
        let i = read(&[b"Bearer t,Bearer u"], None, &names(), true);
        assert!(i.conflict);
    }
}
