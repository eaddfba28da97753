//! HTTP pieces with no proxy-wasm in them: cookies, the bearer token, paths, local replies.
//! Header values arrive as bytes (they need not be UTF-8); everything here copes with that.

use crate::metrics::Event;

/// A response the filter sends itself instead of forwarding the request.
#[derive(Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u32,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// What to count for this reply.
    pub events: Vec<Event>,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Set-Cookie values hold tokens and Location holds state and nonce: names only.
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        write!(
            f,
            "Reply({} {names:?}, {} bytes)",
            self.status,
            self.body.len()
        )
    }
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(status: u32, body: &crate::json::Value) -> Reply {
        Reply {
            status,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("cache-control".into(), "no-store".into()),
            ],
            body: body.to_json().into_bytes(),
            events: Vec::new(),
        }
    }

    pub fn counting(mut self, event: Event) -> Reply {
        self.events.push(event);
        self
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Reply {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// The one way a reply sets cookies: a `Set-Cookie` header each.
    pub fn with_cookies(mut self, cookies: impl IntoIterator<Item = String>) -> Reply {
        self.headers
            .extend(cookies.into_iter().map(|c| ("set-cookie".to_string(), c)));
        self
    }
}

/// The body of an OAuth error answer (RFC 6749 §5.2, RFC 6750 §3): `error` and its description.
pub fn error_body(error: &str, description: &str) -> crate::json::Value {
    crate::json::Value::object([
        ("error", error.into()),
        ("error_description", description.into()),
    ])
}

/// 401 for a request without a usable token (V2): `error="invalid_token"` only when a token was
/// sent, per RFC 6750 §3.1.
pub fn unauthorized(invalid: Option<&str>) -> Reply {
    match invalid {
        None => Reply::json(
            401,
            &error_body(
                "unauthorized",
                "a bearer token or session cookie is required",
            ),
        )
        .with_header("www-authenticate", "Bearer"),
        Some(description) => Reply::json(401, &error_body("invalid_token", description))
            .with_header(
                "www-authenticate",
                format!("Bearer error=\"invalid_token\", error_description=\"{description}\""),
            ),
    }
}

/// 503 when the signing keys have not arrived in time (B1).
pub fn keys_unavailable() -> Reply {
    Reply::json(
        503,
        &error_body(
            "temporarily_unavailable",
            "signing keys are not available yet",
        ),
    )
    .with_header("retry-after", "1")
}

/// The path without its query (B4 matches on this).
pub fn path_only(path: &str) -> &str {
    // By bytes: both are ASCII, so where one is found is a char boundary (a `char` pattern
    // decodes the path as it searches).
    match path.bytes().position(|b| b == b'?' || b == b'#') {
        Some(i) => path.get(..i).unwrap_or(path),
        None => path,
    }
}

/// The query of a request path, if any.
pub fn query_of(path: &str) -> Option<&str> {
    let q = path.split_once('?')?.1;
    Some(q.split_once('#').map_or(q, |(q, _)| q))
}

/// `name=value` pairs of a `Cookie` header, in order, unquoted. Malformed pieces are skipped.
pub fn cookies(header: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    pieces(header).filter_map(|piece| {
        let piece = trim(piece);
        let eq = find_byte(piece, b'=')?;
        let name = trim(piece.get(..eq)?);
        let value = cookie_value(piece.get(eq + 1..)?);
        (!name.is_empty()).then_some((name, value))
    })
}

/// A cookie's value as written after its `=`: trimmed, and without the double quotes RFC 6265
/// allows around it.
pub fn cookie_value(raw: &[u8]) -> &[u8] {
    let value = trim(raw);
    match value {
        [b'"', inner @ .., b'"'] => inner,
        _ => value,
    }
}

/// `values` without repeats, each kept where it first appears: a reply's handful of `Set-Cookie`
/// values (no sort: its code would cost the module more than these comparisons).
pub fn without_repeats(values: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(values.len());
    for value in values {
        if !out.contains(&value) {
            out.push(value);
        }
    }
    out
}

/// The pieces of a header between `;`s, as `split` gives them.
pub fn pieces(header: &[u8]) -> impl Iterator<Item = &[u8]> {
    pieces_by(header, b';')
}

/// The pieces of `header` between `separator`s, as `split` gives them, eight bytes at a time.
pub fn pieces_by(header: &[u8], separator: u8) -> impl Iterator<Item = &[u8]> {
    Pieces {
        rest: Some(header),
        separator,
    }
}

struct Pieces<'a> {
    rest: Option<&'a [u8]>,
    separator: u8,
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest?;
        match find_byte(rest, self.separator) {
            Some(i) => {
                self.rest = rest.get(i + 1..);
                rest.get(..i)
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

/// The first position of `needle`, eight bytes at a time: the `Cookie` header of a logged-in
/// browser is 2–4 KB (token and sealed session) and is read on every request, and wasm has no
/// vectorised `memchr`; a byte-at-a-time scan was the largest part of login mode's warm path.
/// The words are whole arrays (`as_chunks`), each one load in wasm: at `opt-level = "z"`,
/// `chunks_exact` and `copy_from_slice` stayed calls per word, and cost more than the scan.
/// Blocks of four words go first, one branch for the four (a bearer token is scanned whole for
/// a comma on every request); the word that holds the byte is then found in its block.
pub fn find_byte(haystack: &[u8], needle: u8) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let pattern = ONES.wrapping_mul(u64::from(needle));
    // A byte equal to the needle is zero in `x`; the lowest flagged byte is always a true zero
    // (a borrow only ever flags bytes above one), and little-endian puts it first.
    let zeros = |word: &[u8; 8]| {
        let x = u64::from_le_bytes(*word) ^ pattern;
        x.wrapping_sub(ONES) & !x & HIGHS
    };
    let (blocks, _) = haystack.as_chunks::<32>();
    let mut from = blocks.len() * 32;
    for (n, block) in blocks.iter().enumerate() {
        if let [a, b, c, d] = block.as_chunks::<8>().0 {
            if zeros(a) | zeros(b) | zeros(c) | zeros(d) != 0 {
                from = n * 32;
                break;
            }
        }
    }
    let rest = haystack.get(from..).unwrap_or_default();
    let (words, tail) = rest.as_chunks::<8>();
    for (n, word) in words.iter().enumerate() {
        let zero = zeros(word);
        if zero != 0 {
            return Some(from + n * 8 + (zero.trailing_zeros() / 8) as usize);
        }
    }
    let offset = from + words.len() * 8;
    tail.iter().position(|b| *b == needle).map(|i| offset + i)
}

/// `a == b`, eight bytes at a time: wasm's `memcmp` (compiler-builtins) compares byte by byte,
/// and the token cache compares a whole 1–2 KB token on every request.
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (a_words, a_rest) = a.as_chunks::<8>();
    let (b_words, b_rest) = b.as_chunks::<8>();
    let mut differ = 0u64;
    for (x, y) in a_words.iter().zip(b_words) {
        differ |= u64::from_le_bytes(*x) ^ u64::from_le_bytes(*y);
    }
    differ == 0 && a_rest == b_rest
}

/// The scheme a login-mode request came in with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scheme {
    #[default]
    Http,
    Https,
    /// Neither: no redirect can be built for the request.
    Other,
    /// The connection's: an untrusted `x-forwarded-proto` is present, and Envoy copies a client's
    /// into `:scheme`. Asked of the host (`connection_is_tls`) only when a redirect or a cookie
    /// needs it.
    OfConnection,
}

impl Scheme {
    fn named(name: &str) -> Scheme {
        if name.eq_ignore_ascii_case("http") {
            Scheme::Http
        } else if name.eq_ignore_ascii_case("https") {
            Scheme::Https
        } else {
            Scheme::Other
        }
    }
}

/// The scheme a request came in with. With `trust` (a proxy in front sets it), the first
/// `x-forwarded-proto` value; otherwise `:scheme` — unless an `x-forwarded-proto` is present:
/// then the connection decides.
pub fn request_scheme(scheme: Option<&str>, forwarded_proto: Option<&str>, trust: bool) -> Scheme {
    let forwarded = forwarded_proto
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .filter(|s| !s.is_empty());
    match (forwarded, trust) {
        (Some(f), true) => Scheme::named(f),
        (Some(_), false) => Scheme::OfConnection,
        (None, _) => Scheme::named(scheme.unwrap_or("http")),
    }
}

/// A request id fit for a log line: Envoy's `x-request-id` when it is short and printable.
pub fn request_id(header: Option<&str>) -> String {
    safe_request_id(header).to_string()
}

/// [`request_id`], borrowed.
pub fn safe_request_id(header: Option<&str>) -> &str {
    header
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or("-")
}

/// The first cookie called `name`.
pub fn cookie<'a>(header: &'a [u8], name: &str) -> Option<&'a [u8]> {
    cookies(header)
        .find(|(n, _)| *n == name.as_bytes())
        .map(|(_, v)| v)
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    bytes.get(start..end).unwrap_or_default()
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
pub fn bearer(header: &[u8]) -> Option<&[u8]> {
    let header = trim(header);
    let scheme = header.get(..7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = trim(header.get(7..)?);
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_repeats_keeps_first_occurrences_in_order() {
        let v = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            without_repeats(v(&["b", "a", "b", "c", "a"])),
            v(&["b", "a", "c"])
        );
        assert_eq!(without_repeats(v(&[])), v(&[]));
    }

    #[test]
    fn find_byte_agrees_with_a_plain_scan() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..200 {
            for _ in 0..20 {
                let hay: Vec<u8> = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        // Few distinct bytes, the needle's neighbours among them (borrows).
                        [b';', b':', b'<', 0x00, 0x80, 0xff, b'a', b'='][(seed % 8) as usize]
                    })
                    .collect();
                for needle in [b';', b'=', 0x00, 0x80, 0xff] {
                    assert_eq!(
                        find_byte(&hay, needle),
                        hay.iter().position(|b| *b == needle),
                        "{hay:?} {needle}"
                    );
                }
            }
        }
    }

    #[test]
    fn same_bytes_agrees_with_eq() {
        let base: Vec<u8> = (0..40u8).collect();
        for len in 0..base.len() {
            let a = &base[..len];
            assert!(same_bytes(a, a));
            assert!(!same_bytes(a, &base[..len + 1]), "lengths differ");
            for at in 0..len {
                let mut b = a.to_vec();
                b[at] ^= 0x80;
                assert!(!same_bytes(a, &b), "{len} {at}");
            }
        }
    }

    #[test]
    fn cookie_pieces_are_split_as_split_does() {
        for header in [
            &b""[..],
            b";",
            b"a=1;",
            b";;a=1;;b=2",
            b"a=1; b=2; c",
            b"x=\"q\"; y=;",
        ] {
            let ours: Vec<_> = pieces(header).collect();
            let split: Vec<_> = header.split(|b| *b == b';').collect();
            assert_eq!(ours, split, "{header:?}");
        }
    }

    #[test]
    fn cookies_are_matched_by_exact_name() {
        let h =
            b"xaccess_token=evil; access_token=\"tok\"; other=1; =x; noequals; access_token=second";
        assert_eq!(cookie(h, "access_token"), Some(&b"tok"[..]));
        assert_eq!(cookie(h, "other"), Some(&b"1"[..]));
        assert_eq!(cookie(h, "access"), None);
        assert_eq!(cookie(b"", "a"), None);
        assert_eq!(cookie(b";;;  ;", "a"), None);
        assert_eq!(cookie(b"a=\xff\xfe", "a"), Some(&b"\xff\xfe"[..]));
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer   abc  "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Basic YWxhZGRpbjo="), None);
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"Bearer"), None);
        assert_eq!(bearer(b""), None);
        assert_eq!(bearer(b"\xff\xff\xff\xff\xff\xff\xff\xff"), None);
    }

    #[test]
    fn the_forwarded_proto_counts_only_when_trusted() {
        assert_eq!(
            request_scheme(Some("http"), Some("https"), false),
            Scheme::OfConnection
        );
        // Envoy has already copied the client's header into :scheme.
        assert_eq!(
            request_scheme(Some("https"), Some("https"), false),
            Scheme::OfConnection
        );
        assert_eq!(
            request_scheme(Some("http"), Some("https, http"), true),
            Scheme::Https
        );
        assert_eq!(request_scheme(Some("HTTPS"), None, true), Scheme::Https);
        assert_eq!(request_scheme(None, Some(" "), true), Scheme::Http);
        assert_eq!(request_scheme(Some("ftp"), None, false), Scheme::Other);
        assert_eq!(
            request_scheme(Some("http"), Some("gopher"), true),
            Scheme::Other
        );
        assert_eq!(request_id(Some("abc-1")), "abc-1");
        assert_eq!(request_id(Some("a b")), "-");
        assert_eq!(request_id(None), "-");
    }

    #[test]
    fn paths_and_queries() {
        assert_eq!(path_only("/a/b?x=1"), "/a/b");
        assert_eq!(path_only("/a#f"), "/a");
        assert_eq!(path_only("/"), "/");
        assert_eq!(query_of("/cb?code=1&state=2"), Some("code=1&state=2"));
        assert_eq!(query_of("/cb?code=1#frag"), Some("code=1"));
        assert_eq!(query_of("/cb"), None);
    }

    #[test]
    fn unauthorized_replies() {
        let r = unauthorized(None);
        assert_eq!(r.status, 401);
        assert_eq!(r.header("WWW-Authenticate"), Some("Bearer"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        let r = unauthorized(Some("token expired"));
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer error=\"invalid_token\", error_description=\"token expired\"")
        );
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["error"], "invalid_token");
    }
}
