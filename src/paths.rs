//! The path `skip_paths` are matched against (B4, B4+).
//!
//! A skip rule is only as good as the agreement between this filter and the service behind it on
//! which resource a request names. Servers disagree on `%2F`, `\`, `;` parameters, double
//! encoding and dot segments, and each disagreement has been a bypass somewhere: Envoy's path
//! parameters (`/..;/admin`: CVE-2026-73511, -73551, -73553), Istio's escaped slashes
//! (CVE-2021-31920), oauth2-proxy's skip rules matched against the query (CVE-2025-54576) and
//! across a `#` (CVE-2026-41059). So a request path is normalised as RFC 3986 says every server
//! should (unreserved escapes decoded, dot segments resolved, `//` merged), and a path servers
//! could read in two ways is never skipped: it still needs a token, which costs legitimate
//! clients nothing, since browsers and curl never send such a path for an asset or a probe.

use std::borrow::Cow;
use std::fmt;

/// Why a request path is never skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unskippable {
    /// Not an origin-form path: empty, `*`, or a full URL.
    NotOriginForm,
    /// Starts with `//`: many URL parsers read the first segment as a host.
    NetworkPath,
    /// `%2F` or `%5C` (any case): one segment here, two for a server that decodes before it splits.
    EncodedSeparator,
    /// A raw `\`: a separator for Windows servers and for WHATWG URL parsers.
    Backslash,
    /// `;` or `%3B`: path parameters, which Tomcat, Jetty and Spring drop before they route.
    Parameter,
    /// `%25`: a double encoding (`%252F`), read differently by servers that decode twice.
    DoubleEncoding,
    /// A `%` without two hex digits, an encoded control character or NUL, or encoded bytes that
    /// are not UTF-8 (overlong forms such as `%C0%AE`).
    InvalidEscape,
    /// A raw character RFC 3986 does not allow in a path: controls, NUL, space, `#`, non-ASCII…
    ForbiddenCharacter,
    /// `..` above the root.
    AboveRoot,
    /// A segment of dots and spaces other than `.` and `..` (`...`, `..%20`), which Windows trims
    /// into `..`.
    DotLike,
}

impl fmt::Display for Unskippable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unskippable::NotOriginForm => "no leading /",
            Unskippable::NetworkPath => "a leading //",
            Unskippable::EncodedSeparator => "an encoded / or \\",
            Unskippable::Backslash => "a \\",
            Unskippable::Parameter => "a ; parameter",
            Unskippable::DoubleEncoding => "an encoded %",
            Unskippable::InvalidEscape => "an invalid or non-UTF-8 percent-escape",
            Unskippable::ForbiddenCharacter => "a character not allowed in a path",
            Unskippable::AboveRoot => "a .. above the root",
            Unskippable::DotLike => "a segment of dots and spaces",
        })
    }
}

/// A request path as skip rules see it: normalised, without its query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkipPath<'a> {
    path: Cow<'a, str>,
    /// The fewest segments left after a `..` was resolved (`usize::MAX` when there was none). A
    /// rule whose own segments were removed on the way was left and entered again.
    floor: usize,
    /// The fewest segments before a `//` that was merged (`usize::MAX` when there was none). A
    /// server that keeps `//` (Envoy does unless `merge_slashes` is set, and so do many routers)
    /// reads `/api//public/x` as something other than `/api/public/x`: a rule is matched only by
    /// segments that were not merged.
    merged: usize,
}

impl SkipPath<'_> {
    pub fn as_str(&self) -> &str {
        &self.path
    }

    /// This exact path, reached without `..` or a merged `//`: `/x/../healthz` is not
    /// `/healthz`, nor is `/a//b` `/a/b`.
    pub fn is(&self, exact: &str) -> bool {
        self.floor == usize::MAX && self.merged == usize::MAX && *self.path == *exact
    }

    /// Under `prefix` (a plain string prefix: `/static/` or `/static`), and never outside it on
    /// the way: `/static/a/../b.css` is under `/static/`, `/static/../static/b.css` is not; and
    /// no `//` merged inside it: `/static//x.js` is under `/static/`, `/api//public/x` is not
    /// under `/api/public/`.
    pub fn is_under(&self, prefix: &str) -> bool {
        self.path.starts_with(prefix)
            && self.floor.min(self.merged) >= prefix.split('/').filter(|s| !s.is_empty()).count()
    }
}

/// Normalises a request's `:path` (query and all) for skip matching, or says why it must never be
/// skipped. Borrows when the path needs no change (no `%`, `//` or dot segment), which is the
/// case of nearly every request.
pub fn normalise(request_path: &str) -> Result<SkipPath<'_>, Unskippable> {
    // The query never matters (CVE-2025-54576 matched skip rules against it).
    let path = request_path
        .split_once('?')
        .map_or(request_path, |(path, _)| path);
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(Unskippable::NotOriginForm);
    }
    if bytes.get(1) == Some(&b'/') {
        return Err(Unskippable::NetworkPath);
    }
    let mut escaped = false;
    for &b in bytes {
        match b {
            b'%' => escaped = true,
            b'\\' => return Err(Unskippable::Backslash),
            b';' => return Err(Unskippable::Parameter),
            b if is_path_char(b) => {}
            _ => return Err(Unskippable::ForbiddenCharacter),
        }
    }
    if !escaped && !needs_resolving(path)? {
        return Ok(SkipPath {
            path: Cow::Borrowed(path),
            floor: usize::MAX,
            merged: usize::MAX,
        });
    }
    if escaped {
        resolve(&decode_unreserved(path)?)
    } else {
        resolve(path)
    }
}

/// RFC 3986's `pchar` and `/`, without `;` (handled before) and with `%` (checked when decoding).
fn is_path_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@/%".contains(&b)
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~".contains(&b)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment {
    Empty,
    Dot,
    DotDot,
    Name,
}

/// A segment after decoding; escapes left in it are upper-case `%XX`.
fn segment(s: &str) -> Result<Segment, Unskippable> {
    match s {
        "" => Ok(Segment::Empty),
        "." => Ok(Segment::Dot),
        ".." => Ok(Segment::DotDot),
        _ if s.starts_with('.') && only_dots_and_spaces(s) => Err(Unskippable::DotLike),
        _ => Ok(Segment::Name),
    }
}

fn only_dots_and_spaces(mut s: &str) -> bool {
    while let Some(rest) = s.strip_prefix('.').or_else(|| s.strip_prefix("%20")) {
        s = rest;
    }
    s.is_empty()
}

/// Whether a path without escapes has an empty (`//`), `.` or `..` segment. The empty segment
/// after a trailing `/` is fine.
fn needs_resolving(path: &str) -> Result<bool, Unskippable> {
    let mut segments = path.split('/').skip(1).peekable();
    while let Some(s) = segments.next() {
        match segment(s)? {
            Segment::Name => {}
            Segment::Empty if segments.peek().is_none() => {}
            Segment::Empty | Segment::Dot | Segment::DotDot => return Ok(true),
        }
    }
    Ok(false)
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Decodes the escapes of unreserved characters (so `%2e%2e` is a `..` segment) and keeps every
/// other escape, in upper case; refuses the escapes servers disagree on.
fn decode_unreserved(path: &str) -> Result<String, Unskippable> {
    let mut out = String::with_capacity(path.len());
    // Every byte the path stands for, to check that encoded bytes form UTF-8.
    let mut all = Vec::with_capacity(path.len());
    let mut rest = path.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        if b != b'%' {
            out.push(char::from(b));
            all.push(b);
            continue;
        }
        let (hi, lo) = match rest {
            [hi, lo, tail @ ..] => {
                rest = tail;
                (*hi, *lo)
            }
            _ => return Err(Unskippable::InvalidEscape),
        };
        let (Some(h), Some(l)) = (hex(hi), hex(lo)) else {
            return Err(Unskippable::InvalidEscape);
        };
        let byte = (h << 4) | l;
        match byte {
            b'/' | b'\\' => return Err(Unskippable::EncodedSeparator),
            b';' => return Err(Unskippable::Parameter),
            b'%' => return Err(Unskippable::DoubleEncoding),
            0..=0x1f | 0x7f => return Err(Unskippable::InvalidEscape),
            b if is_unreserved(b) => out.push(char::from(b)),
            _ => {
                out.push('%');
                out.push(char::from(hi.to_ascii_uppercase()));
                out.push(char::from(lo.to_ascii_uppercase()));
            }
        }
        all.push(byte);
    }
    if std::str::from_utf8(&all).is_err() {
        return Err(Unskippable::InvalidEscape);
    }
    Ok(out)
}

/// RFC 3986 `remove_dot_segments` with `//` merged, except that `..` above the root is refused
/// instead of ignored.
fn resolve(path: &str) -> Result<SkipPath<'static>, Unskippable> {
    let mut out = String::with_capacity(path.len());
    let mut depth = 0usize;
    let mut floor = usize::MAX;
    let mut merged = usize::MAX;
    // Whether the result ends with `/`: after an empty, `.` or `..` last segment.
    let mut trailing = false;
    let mut segments = path.split('/').skip(1).peekable();
    while let Some(s) = segments.next() {
        match segment(s)? {
            Segment::Empty => {
                // Not the empty segment after a trailing `/`: a `//` merged into one.
                if segments.peek().is_some() {
                    merged = merged.min(depth);
                }
                trailing = true;
            }
            Segment::Dot => trailing = true,
            Segment::DotDot => {
                if depth == 0 {
                    return Err(Unskippable::AboveRoot);
                }
                out.truncate(out.rfind('/').unwrap_or(0));
                depth -= 1;
                floor = floor.min(depth);
                trailing = true;
            }
            Segment::Name => {
                out.push('/');
                out.push_str(s);
                depth += 1;
                trailing = false;
            }
        }
    }
    if trailing || out.is_empty() {
        out.push('/');
    }
    Ok(SkipPath {
        path: Cow::Owned(out),
        floor,
        merged,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_forms() {
        for (raw, normal) in [
            ("/", "/"),
            ("/healthz", "/healthz"),
            ("/healthz?", "/healthz"),
            ("/static/a?x=/productpage", "/static/a"),
            ("/static/a?x=%2F..;\\#", "/static/a"),
            ("/static/app.css", "/static/app.css"),
            ("/.well-known/x", "/.well-known/x"),
            ("/static/a/./b.css", "/static/a/b.css"),
            ("/static//x.js", "/static/x.js"),
            ("/static///", "/static/"),
            ("/static/.", "/static/"),
            ("/static/a/..", "/static/"),
            ("/static/a/../b.css", "/static/b.css"),
            ("/static/../productpage", "/productpage"),
            ("/static/%2e%2e/productpage", "/productpage"),
            ("/static/.%2E/productpage", "/productpage"),
            ("/static/%2e/app.css", "/static/app.css"),
            ("/static/%7Euser", "/static/~user"),
            ("/%41%62%2D%5f%30", "/Ab-_0"),
            ("/static/a%3ab%2B", "/static/a%3Ab%2B"),
            ("/static/%E2%9C%93.png", "/static/%E2%9C%93.png"),
            ("/static/%c3%a9", "/static/%C3%A9"),
            ("/static/..a/...b/a..", "/static/..a/...b/a.."),
            ("/.", "/"),
            ("/a/..", "/"),
            ("/STATIC/", "/STATIC/"),
        ] {
            let got = normalise(raw).map(|p| p.as_str().to_string());
            assert_eq!(got.as_deref(), Ok(normal), "{raw}");
        }
    }

    #[test]
    fn refusals() {
        use Unskippable::*;
        for (raw, why) in [
            ("", NotOriginForm),
            ("*", NotOriginForm),
            ("http://h/static/x", NotOriginForm),
            ("?x=/static/", NotOriginForm),
            ("//static/x", NetworkPath),
            ("//static/..//productpage", NetworkPath),
            ("/static/..%2Fproductpage", EncodedSeparator),
            ("/static/..%2fproductpage", EncodedSeparator),
            ("/static/..%5Cproductpage", EncodedSeparator),
            ("/static/..%5cproductpage", EncodedSeparator),
            ("/%2fstatic/x", EncodedSeparator),
            ("/static/..\\productpage", Backslash),
            ("/static/..;/productpage", Parameter),
            ("/static;x=1/a", Parameter),
            ("/static/a;", Parameter),
            ("/static/%3B/../productpage", Parameter),
            ("/static/%252e%252e/productpage", DoubleEncoding),
            ("/static/..%252Fproductpage", DoubleEncoding),
            ("/static/100%25", DoubleEncoding),
            ("/static/%00", InvalidEscape),
            ("/static/%0a", InvalidEscape),
            ("/static/%7f", InvalidEscape),
            ("/static/%zz", InvalidEscape),
            ("/static/%2", InvalidEscape),
            ("/static/%", InvalidEscape),
            ("/static/%C0%AE%C0%AE/productpage", InvalidEscape),
            ("/static/%E2%9C", InvalidEscape),
            ("/static/%ff", InvalidEscape),
            ("/healthz#x", ForbiddenCharacter),
            ("/static/x#/../../productpage", ForbiddenCharacter),
            ("/static/\0", ForbiddenCharacter),
            ("/static/a b", ForbiddenCharacter),
            ("/static/\t", ForbiddenCharacter),
            ("/static/\u{7f}", ForbiddenCharacter),
            ("/static/é", ForbiddenCharacter),
            ("/static/\u{fffd}", ForbiddenCharacter),
            ("/static/\"<>", ForbiddenCharacter),
            ("/..", AboveRoot),
            ("/static/../..", AboveRoot),
            ("/%2e%2e/static/x", AboveRoot),
            ("/static/...", DotLike),
            ("/static/..%20/productpage", DotLike),
            ("/static/.%20./productpage", DotLike),
            ("/static/%2e%2e%2e/productpage", DotLike),
        ] {
            assert_eq!(normalise(raw), Err(why), "{raw}");
        }
    }

    #[test]
    fn untouched_paths_are_borrowed() {
        for raw in [
            "/",
            "/healthz",
            "/static/app.css",
            "/static/",
            "/productpage?u=normal&x=/a//../b",
            "/a.b/c..d/.e",
        ] {
            let p = normalise(raw).unwrap();
            assert!(matches!(p.path, Cow::Borrowed(_)), "{raw}");
        }
        for raw in ["/static//x", "/static/./x", "/static/%7Ex"] {
            assert!(
                matches!(normalise(raw).unwrap().path, Cow::Owned(_)),
                "{raw}"
            );
        }
    }

    /// What the filter did before B4+: the raw path up to `?` or `#`, compared as a string.
    fn old_skip(rules: &[&str], path: &str) -> bool {
        let path = path.split(['?', '#']).next().unwrap_or(path);
        rules.iter().any(|rule| match rule.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => path == *rule,
        })
    }

    fn skip(rules: &[&str], path: &str) -> bool {
        normalise(path).is_ok_and(|p| {
            rules.iter().any(|rule| match rule.strip_suffix('*') {
                Some(prefix) => p.is_under(prefix),
                None => p.is(rule),
            })
        })
    }

    /// productpage's rules (istio/wasmplugin-productpage.yaml). `escape`: the old matching skipped
    /// the path although the service may read it as a protected page.
    #[test]
    fn skip_decisions_with_productpage_rules() {
        const RULES: &[&str] = &["/", "/healthz", "/static/*"];
        for (path, skipped, escape) in [
            // tricks
            ("/static/..%2Fproductpage", false, true),
            ("/static/..%2fproductpage", false, true),
            ("/static/..%5Cproductpage", false, true),
            ("/static/..%252Fproductpage", false, true),
            ("/static/../productpage", false, true),
            ("/static/..\\productpage", false, true),
            ("/static/..;/productpage", false, true),
            ("/static/;/../productpage", false, true),
            ("/static/%3B/../productpage", false, true),
            ("/static;x=1/a", false, false),
            ("//static/..//productpage", false, false),
            ("/static//..//productpage", false, true),
            ("/static/%2e%2e/productpage", false, true),
            ("/static/%2E%2E/productpage", false, true),
            ("/static/.%2e/productpage", false, true),
            ("/static/%252e%252e/productpage", false, true),
            ("/static/%C0%AE%C0%AE/productpage", false, true),
            ("/static/..%20/productpage", false, true),
            ("/static/.../productpage", false, true),
            ("/static/%00", false, true),
            ("/static/x#/../../productpage", false, true),
            ("/healthz#x", false, true),
            ("/%2fstatic/x", false, false),
            ("/STATIC/", false, false),
            ("/productpage?x=/static/", false, false),
            ("/x/../healthz", false, false),
            ("/productpage/..", false, false),
            ("/static/../static/app.css", false, false),
            ("/static", false, false),
            ("/..", false, false),
            // what must still pass
            ("/static/a?x=/productpage", true, false),
            ("/healthz?", true, false),
            ("/healthz?probe=1", true, false),
            ("/static/app.css", true, false),
            ("/static/a/./b.css", true, false),
            ("/static/a/../b.css", true, false),
            ("/static//x.js", true, false),
            ("/static/%7Euser", true, false),
            ("/static/%2e/app.css", true, false),
            ("/static/%E2%9C%93.png", true, false),
            ("/healthz", true, false),
            ("/", true, false),
            ("/.", true, false),
        ] {
            assert_eq!(skip(RULES, path), skipped, "{path}");
            if escape {
                assert!(
                    old_skip(RULES, path),
                    "{path}: the old matching did not skip it"
                );
            }
        }
    }

    /// Fuzzing found this (docs/fuzzing.md): `/api/v1//public/x` was skipped by `/api/v1/public/*`
    /// because `//` was merged first, but a server that keeps `//` (Envoy without
    /// `merge_slashes`, Express, …) routes it as another path, perhaps a protected one. A `//`
    /// merged after the rule's own segments is still fine.
    #[test]
    fn a_merged_slash_inside_a_rule_does_not_match_it() {
        const RULES: &[&str] = &["/api/v1/public/*", "/static/*", "/a/b", "/static*"];
        for (path, skipped) in [
            ("/api/v1//public/x", false),
            ("/api//v1/public/x", false),
            ("/api/v1/.//public/x", false),
            ("/api/v1/public//x", true),
            ("/api/v1/public/x//y", true),
            ("/api/v1/public/x/..//y", true),
            ("/static//x.js", true),
            ("/static///", true),
            ("/a//b", false),
            ("/a/b", true),
            ("/a/./b", true),
            ("/static/../a//b", false),
        ] {
            assert_eq!(skip(RULES, path), skipped, "{path}");
        }
    }

    /// `/static*` (prefix `/static`, no slash) keeps its string-prefix meaning, and dot segments
    /// still cannot leave it.
    #[test]
    fn prefix_without_a_slash() {
        const RULES: &[&str] = &["/static*"];
        for (path, skipped) in [
            ("/static", true),
            ("/staticfoo", true),
            ("/static/x", true),
            ("/static/a/../x", true),
            ("/staticx/../static/a", false),
            ("/static/../productpage", false),
            ("/productpage", false),
        ] {
            assert_eq!(skip(RULES, path), skipped, "{path}");
        }
        assert!(skip(&["/*"], "/a/../b"), "everything is under /");
        assert!(!skip(&["/*"], "/.."), "but not above it");
    }

    /// B5: any input, no panic; and what comes out is a normal form, unchanged when normalised
    /// again.
    #[test]
    fn every_short_path_is_handled_and_normal_forms_are_fixed_points() {
        const ALPHABET: &[u8] = b"/.%2eF50c;\\?a\0";
        let mut level = vec![Vec::new()];
        let mut inputs = Vec::new();
        for _ in 0..5 {
            level = level
                .iter()
                .flat_map(|s: &Vec<u8>| {
                    ALPHABET.iter().map(move |&b| {
                        let mut t = s.clone();
                        t.push(b);
                        t
                    })
                })
                .collect();
            inputs.extend(level.iter().cloned());
        }
        for input in inputs {
            let raw = format!("/{}", String::from_utf8(input).unwrap());
            let Ok(p) = normalise(&raw) else { continue };
            let normal = p.as_str();
            assert!(normal.starts_with('/') && !normal.contains("//"), "{raw:?}");
            assert!(
                normal
                    .split('/')
                    .all(|s| s != "." && s != ".." && !s.contains(['?', '#', ';', '\\'])),
                "{raw:?} -> {normal:?}"
            );
            let again = normalise(normal).unwrap();
            assert_eq!(again.as_str(), normal, "{raw:?}");
        }
    }
}
