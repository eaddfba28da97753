//! `paths::normalise`, the path skip rules match (B4+). Never a panic; a normal form is a fixed
//! point (normalising it again changes nothing); it has no `//`, `.`/`..` segment, `;`, `\`, `?`
//! or `#`; and a request a rule skips names a resource under that rule for a server that decodes
//! every escape and then resolves dot segments, whether it merges `//` or not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_oidc::config::PathMatch;
use mesh_oidc::paths::normalise;

/// RFC 3986 remove_dot_segments, `..` at the root ignored (what servers do), `//` kept.
fn remove_dots(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (i, s) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *s {
            "." => {
                if last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if last {
                    out.push("");
                }
            }
            other => out.push(other),
        }
    }
    format!("/{}", out.join("/"))
}

/// A server that percent-decodes everything first (lossy UTF-8).
fn decoded(path: &str) -> String {
    percent_encoding::percent_decode_str(path)
        .decode_utf8_lossy()
        .into_owned()
}

fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

const RULES: &[&str] = &[
    "/",
    "/healthz",
    "/static/*",
    "/static*",
    "/api/v1/public/*",
    "/a/b",
];

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(normal) = normalise(raw) else {
        return;
    };
    let n = normal.as_str();
    assert!(n.starts_with('/') && !n.contains("//"), "{raw:?} -> {n:?}");
    assert!(
        n.split('/')
            .all(|s| s != "." && s != ".." && !s.contains(['?', '#', ';', '\\'])),
        "{raw:?} -> {n:?}"
    );
    let again = normalise(n).unwrap_or_else(|why| panic!("{raw:?} -> {n:?} -> {why}"));
    assert_eq!(again.as_str(), n, "not a fixed point: {raw:?}");

    let path = raw.split_once('?').map_or(raw, |(p, _)| p);
    // Servers as RFC 3986 has them (escapes decoded, dot segments resolved), merging `//` or not.
    let views = [
        merge_slashes(&remove_dots(&decoded(path))),
        remove_dots(&decoded(path)),
    ];
    for rule in RULES {
        let m = match rule.strip_suffix('*') {
            Some(prefix) => PathMatch::Prefix(prefix.to_string()),
            None => PathMatch::Exact(rule.to_string()),
        };
        if !m.matches(&normal) {
            continue;
        }
        for view in &views {
            let ok = match &m {
                PathMatch::Prefix(p) => view.starts_with(p.as_str()),
                PathMatch::Exact(p) => view == p,
            };
            assert!(
                ok,
                "{raw:?} is skipped by {rule} but a server reads {view:?}"
            );
        }
    }
});
