//! What the filter does to a request's credentials before deciding it (B6): one access token per
//! request, and only the checked one goes on. Shared by both modes and by skip paths, where
//! nothing is checked and so none of the filter's cookies goes on.

use crate::metrics::Event;
use crate::session::{self, Credential, Names};
use crate::web::{self, Reply};

/// The credential part of a request, read once from its headers.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Inbound<'a> {
    /// The access token to check (validate mode), if one was presented: the request's own bytes
    /// unless pieces of a chunked cookie were joined.
    pub token: Option<std::borrow::Cow<'a, [u8]>>,
    /// Two different access tokens: the request is refused, whichever is valid.
    pub conflict: bool,
    /// Headers to set (or, with `None`, remove) when the request goes on to the service.
    pub rewrites: Vec<(&'static str, Option<Vec<u8>>)>,
}

/// Without the token and the rewritten values: their lengths only.
impl std::fmt::Debug for Inbound<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rewrites: Vec<(&str, Option<usize>)> = self
            .rewrites
            .iter()
            .map(|(name, value)| (*name, value.as_ref().map(Vec::len)))
            .collect();
        write!(
            f,
            "Inbound(token: {:?} bytes, conflict: {}, rewrites {rewrites:?})",
            self.token.as_ref().map(|t| t.len()),
            self.conflict
        )
    }
}

/// A request's headers, read once with one host call (names lower-case, values as bytes), kept
/// as the host serialised them: proxy-wasm's header map (a little-endian `u32` count, then a
/// name length and a value length per header, then each name and value followed by a NUL). One
/// buffer and one index instead of two allocations per header; a malformed map reads as the
/// headers before the fault, never as a panic.
#[derive(Default)]
pub struct Headers {
    buf: Vec<u8>,
    /// Where each whole header's name and value are in `buf`, in order: the map is walked once,
    /// and each lookup compares names' lengths before their bytes.
    spans: Vec<Span>,
}

#[derive(Clone, Copy)]
struct Span {
    name: (usize, usize),
    value: (usize, usize),
}

fn word(buf: &[u8], at: usize) -> Option<usize> {
    let b: [u8; 4] = buf.get(at..at.checked_add(4)?)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(b)).ok()
}

/// The whole headers of a serialised map, up to the first that is not (its lengths from offset
/// 4, its bytes after the lengths, each followed by a NUL).
fn spans(buf: &[u8]) -> Vec<Span> {
    let declared = word(buf, 0).unwrap_or(0);
    let Some(mut at) = declared.checked_mul(8).and_then(|n| n.checked_add(4)) else {
        return Vec::new();
    };
    // Never more than the buffer could hold (a lying count must not reserve gigabytes).
    let mut out = Vec::with_capacity(declared.min(buf.len() / 10));
    for i in 0..declared {
        let span = (|| {
            let lengths = i.checked_mul(8)?.checked_add(4)?;
            let name_end = at.checked_add(word(buf, lengths)?)?;
            let value_start = name_end.checked_add(1)?;
            let value_end = value_start.checked_add(word(buf, lengths.checked_add(4)?)?)?;
            // The NUL after the value must be there too.
            buf.get(value_end)?;
            Some(Span {
                name: (at, name_end),
                value: (value_start, value_end),
            })
        })();
        let Some(span) = span else { break };
        at = span.value.1 + 1;
        out.push(span);
    }
    out
}

impl Headers {
    pub fn parse(buf: Vec<u8>) -> Headers {
        let spans = spans(&buf);
        Headers { buf, spans }
    }

    /// The same map from name and value pairs (the fake host's, and tests').
    pub fn from_pairs<N: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(N, V)]) -> Headers {
        let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
        let mut buf = len(pairs.len()).to_vec();
        for (name, value) in pairs {
            buf.extend_from_slice(&len(name.as_ref().len()));
            buf.extend_from_slice(&len(value.as_ref().len()));
        }
        for (name, value) in pairs {
            buf.extend_from_slice(name.as_ref());
            buf.push(0);
            buf.extend_from_slice(value.as_ref());
            buf.push(0);
        }
        Headers::parse(buf)
    }

    /// Every header in order, repeated names as many times as sent.
    pub fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.spans
            .iter()
            .filter_map(|s| Some((self.buf.get(s.name.0..s.name.1)?, self.value(s)?)))
    }

    /// Whether the header at `span` is called `name` (the lengths compared first).
    fn has_name(&self, span: &Span, name: &[u8]) -> bool {
        span.name.1 - span.name.0 == name.len()
            && self.buf.get(span.name.0..span.name.1) == Some(name)
    }

    fn value(&self, span: &Span) -> Option<&[u8]> {
        self.buf.get(span.value.0..span.value.1)
    }

    pub fn bytes(&self, name: &str) -> Option<&[u8]> {
        let name = name.as_bytes();
        self.spans
            .iter()
            .find(|s| self.has_name(s, name))
            .and_then(|s| self.value(s))
    }

    /// The first value of each of `names`, found in one walk of the map (as [`Headers::bytes`]
    /// finds each).
    pub fn firsts<const N: usize>(&self, names: [&str; N]) -> [Option<&[u8]>; N] {
        let mut found = [None; N];
        for span in &self.spans {
            let length = span.name.1 - span.name.0;
            for (name, slot) in names.iter().zip(found.iter_mut()) {
                // The length first, here: a call per pair cost more than the comparisons.
                if slot.is_none() && name.len() == length && self.has_name(span, name.as_bytes()) {
                    *slot = self.value(span);
                }
            }
        }
        found
    }

    pub fn text(&self, name: &str) -> Option<&str> {
        self.bytes(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.spans
            .iter()
            .filter(move |s| self.has_name(s, name.as_bytes()))
            .filter_map(|s| self.value(s))
    }

    /// Every name (a name that is not UTF-8, which Envoy never passes, is left out).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.pairs()
            .filter_map(|(n, _)| std::str::from_utf8(n).ok())
    }

    /// The `Cookie` header; HTTP/2 may send several, which count as one list.
    pub fn cookies(&self) -> Option<std::borrow::Cow<'_, [u8]>> {
        let mut parts = self.all("cookie");
        let first = parts.next()?;
        let Some(second) = parts.next() else {
            return Some(std::borrow::Cow::Borrowed(first));
        };
        let mut all = first.to_vec();
        for v in std::iter::once(second).chain(parts) {
            all.extend_from_slice(b"; ");
            all.extend_from_slice(v);
        }
        Some(std::borrow::Cow::Owned(all))
    }

    /// The login-mode request, borrowed from the map.
    pub fn login_request(&self, trust_forwarded_proto: bool) -> crate::login::Request<'_> {
        use std::borrow::Cow;
        // One walk of the map for these ten (a walk for each was most of this function's work).
        let [path, method, scheme, forwarded_proto, host, accept, mode, dest, with, id] = self
            .firsts([
                ":path",
                ":method",
                ":scheme",
                "x-forwarded-proto",
                ":authority",
                "accept",
                "sec-fetch-mode",
                "sec-fetch-dest",
                "x-requested-with",
                "x-request-id",
            ]);
        fn text(v: Option<&[u8]>) -> Option<&str> {
            v.and_then(|v| std::str::from_utf8(v).ok())
        }
        let borrowed = |v| text(v).map(Cow::Borrowed);
        crate::login::Request {
            method: borrowed(method).unwrap_or_default(),
            path: String::from_utf8_lossy(path.unwrap_or_default()),
            scheme: web::request_scheme(text(scheme), text(forwarded_proto), trust_forwarded_proto),
            host: borrowed(host).unwrap_or_default(),
            accept: borrowed(accept),
            sec_fetch_mode: borrowed(mode),
            sec_fetch_dest: borrowed(dest),
            requested_with: borrowed(with),
            cookies: self.cookies().unwrap_or_default(),
            authorizations: self.all("authorization").map(Cow::Borrowed).collect(),
            request_id: Cow::Borrowed(web::safe_request_id(text(id))),
            body: None,
        }
    }

    pub fn request_id(&self) -> String {
        web::request_id(self.text("x-request-id"))
    }
}

/// The answer to a request that carries two different access tokens (B6).
pub fn conflict_reply() -> Reply {
    web::unauthorized(Some("more than one access token in the request"))
        .counting(Event::TokenRejected("conflict"))
}

/// Reads a request's `Authorization` headers and joined `Cookie` header. `skipped`: a skip path,
/// which goes on unchecked, so it gets no cookie of the filter at all.
pub fn read<'a>(
    authorizations: &[&'a [u8]],
    cookie: Option<&'a [u8]>,
    names: &Names,
    skipped: bool,
) -> Inbound<'a> {
    let jar = session::CookieRead::new(cookie.unwrap_or_default(), names);
    let (token, from_cookie, merged) = match session::credential_in(authorizations, &jar) {
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
        let kept = jar.forwarded(names, verified);
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
        token,
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

#[cfg(test)]
mod header_map_tests {
    use super::Headers;

    #[test]
    fn reads_the_hosts_map_and_survives_any_truncation() {
        let pairs = [
            (":path", "/a"),
            ("cookie", "a=1"),
            ("cookie", ""),
            ("x", "v\u{0}w"),
        ];
        let full = Headers::from_pairs(&pairs);
        let read: Vec<(&[u8], &[u8])> = full.pairs().collect();
        let want: Vec<(&[u8], &[u8])> = pairs
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect();
        assert_eq!(read, want);
        assert_eq!(full.all("cookie").count(), 2);
        assert_eq!(full.text(":path"), Some("/a"));
        for cut in 0..full.buf.len() {
            let short = Headers::parse(full.buf[..cut].to_vec());
            let got: Vec<_> = short.pairs().collect();
            assert!(got.len() < pairs.len(), "{cut}");
            assert_eq!(got[..], read[..got.len()], "{cut}");
        }
        let mut huge = full.buf.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Headers::parse(huge).pairs().count(), 0);
        assert_eq!(Headers::parse(Vec::new()).pairs().count(), 0);
    }

    #[test]
    fn one_walk_finds_what_each_lookup_finds() {
        let h = Headers::from_pairs(&[
            (":method", "GET"),
            ("accept", "a"),
            ("accept", "b"),
            ("x-request-id", "r"),
            ("Accept-Language", "en"),
        ]);
        let names = [
            ":method",
            "accept",
            "x-request-id",
            ":scheme",
            "accept-language",
            "",
        ];
        let found = h.firsts(names);
        for (name, got) in names.iter().zip(found) {
            assert_eq!(got, h.bytes(name), "{name}");
        }
        assert_eq!(found[1], Some(&b"a"[..]));
    }
}
