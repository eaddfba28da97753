//! The request's credentials: `web::cookies`, `web::cookie`, `web::bearer`,
//! `session::credential`, `session::forwarded_cookies` and `inbound::read` on arbitrary
//! `Authorization` and `Cookie` headers (bytes, not necessarily UTF-8).
//!
//! Checks: pairs are trimmed and hold no `;`; two different tokens (in two headers, in one joined
//! header, in two cookie copies, or a bearer and a cookie) are always a conflict, computed here
//! independently; what goes on to the service carries none of the filter's cookies, except the
//! one verified access token, once, and every other cookie unchanged and in order.
#![no_main]

use fixtures::{names, Input};
use libfuzzer_sys::fuzz_target;
use mesh_oidc::inbound;
use mesh_oidc::session::{credential, Credential};
use mesh_oidc::web;

fn foreign_cookies<'a>(header: &'a [u8]) -> Vec<(&'a [u8], &'a [u8])> {
    web::cookies(header)
        .filter(|(n, _)| !names().in_namespace(n))
        .collect()
}

fn from_cookie_token(c: &Credential) -> bool {
    matches!(
        c,
        Credential::One {
            from_cookie: true,
            ..
        }
    )
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let flags = input.byte();
    let count = usize::from(flags % 3);
    let mut auths: Vec<&[u8]> = Vec::new();
    for _ in 0..count {
        auths.push(input.part());
    }
    let header = input.rest();
    let base = names().access.as_bytes();

    let pairs: Vec<_> = web::cookies(header).collect();
    for (n, v) in &pairs {
        assert!(!n.is_empty() && !n.contains(&b';') && !v.contains(&b';'));
        assert!(
            !n.first().unwrap().is_ascii_whitespace() && !n.last().unwrap().is_ascii_whitespace()
        );
    }
    if let Some((n, v)) = pairs.first() {
        if let Ok(name) = std::str::from_utf8(n) {
            assert_eq!(
                web::cookie(header, name),
                Some(*v),
                "the first cookie of a name"
            );
        }
    }
    for a in &auths {
        if let Some(t) = web::bearer(a) {
            assert!(!t.is_empty());
            assert!(
                !t.first().unwrap().is_ascii_whitespace()
                    && !t.last().unwrap().is_ascii_whitespace()
            );
            assert!(a.trim_ascii_start()[..7].eq_ignore_ascii_case(b"bearer "));
        }
    }

    // Conflicts, computed the plain way.
    let mut distinct_headers = auths.clone();
    distinct_headers.sort();
    distinct_headers.dedup();
    let mut bearers: Vec<&[u8]> = auths
        .first()
        .map(|h| h.split(|b| *b == b',').filter_map(web::bearer).collect())
        .unwrap_or_default();
    bearers.sort();
    bearers.dedup();
    let mut copies: [Vec<&[u8]>; 4] = Default::default();
    for (n, v) in &pairs {
        if v.is_empty() {
            continue;
        }
        let index = if *n == base {
            Some(0)
        } else {
            n.strip_prefix(base)
                .and_then(|r| r.strip_prefix(b"_"))
                .and_then(|d| std::str::from_utf8(d).ok())
                .filter(|d| !d.starts_with('0') && d.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|d| d.parse::<usize>().ok())
                .filter(|i| (1..4).contains(i))
        };
        if let Some(i) = index {
            copies[i].push(v);
        }
    }
    for c in &mut copies {
        c.sort();
        c.dedup();
    }
    let cookie_conflict = copies.iter().any(|c| c.len() > 1);
    let joined: Option<Vec<u8>> = copies[0].first().map(|_| {
        copies
            .iter()
            .map_while(|c| c.first())
            .flat_map(|v| v.iter().copied())
            .collect()
    });
    let must_conflict = distinct_headers.len() > 1
        || bearers.len() > 1
        || cookie_conflict
        || matches!((bearers.first(), &joined), (Some(b), Some(c)) if *b != &c[..]);

    let got = credential(&auths, header, names());
    match &got {
        Credential::Conflict => assert!(must_conflict, "a conflict where there is one token"),
        Credential::None => {
            assert!(!must_conflict && bearers.is_empty() && joined.is_none());
        }
        Credential::One {
            token, from_cookie, ..
        } => {
            assert!(!must_conflict, "one token where there are two");
            assert!(!token.is_empty());
            match (bearers.first(), &joined) {
                (Some(b), _) => assert_eq!(&token[..], *b),
                (None, Some(c)) => assert_eq!(&token[..], &c[..]),
                (None, None) => panic!("a token from nowhere"),
            }
            assert_eq!(*from_cookie, joined.is_some());
        }
    }

    let skipped = flags & 0x80 != 0;
    let cookie = (flags & 0x40 == 0).then_some(header);
    let read = inbound::read(&auths, cookie, names(), skipped);
    let got = match cookie {
        Some(_) => got,
        None => credential(&auths, b"", names()),
    };
    assert_eq!(read.conflict, matches!(got, Credential::Conflict));
    for (name, value) in &read.rewrites {
        match *name {
            "cookie" => {
                let kept = value.as_deref().unwrap_or_default();
                let verified = match &got {
                    Credential::One {
                        token,
                        from_cookie: true,
                        ..
                    } if !skipped => Some(token.as_ref()),
                    _ => None,
                };
                // Only a token that verifies goes on, and that is base64url and dots: a quoted
                // cookie value with spaces comes back trimmed, but never verifies.
                let jwt_like = |t: &[u8]| {
                    t.iter()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
                };
                let verified = verified.filter(|t| jwt_like(t));
                let ours: Vec<_> = web::cookies(kept)
                    .filter(|(n, _)| names().in_namespace(n))
                    .collect();
                match verified {
                    Some(t) => assert_eq!(ours, vec![(base, t)], "only the verified token goes on"),
                    None if from_cookie_token(&got) && !skipped => {
                        assert!(ours.len() <= 1 && ours.iter().all(|(n, _)| *n == base))
                    }
                    None => assert!(ours.is_empty(), "a cookie of the filter goes on unchecked"),
                }

                assert_eq!(
                    foreign_cookies(kept),
                    foreign_cookies(header),
                    "other cookies kept"
                );
            }
            "authorization" => {
                let Credential::One {
                    token,
                    merged_authorization: true,
                    ..
                } = &got
                else {
                    panic!("authorization rewritten without a joined header");
                };
                let mut want = b"Bearer ".to_vec();
                want.extend_from_slice(token);
                assert_eq!(value.as_deref(), Some(&want[..]));
            }
            other => panic!("rewrites {other}"),
        }
    }
});
