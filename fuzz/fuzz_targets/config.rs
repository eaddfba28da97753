//! `Config::parse`: the plugin configuration (JSON, keycloak shorthand, flask-oidc
//! `client_secrets`). Never a panic; an error names a key of the input; a configuration that
//! parses is usable (its sealer builds, its paths are local and in normal form) and never prints
//! its secrets.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_oidc::config::{Config, PathMatch, KEYS};
use mesh_oidc::paths;
use mesh_oidc::session::{Names, Sealer};
use serde_json::Value;

/// Secret strings of the input long and distinctive enough to look for in what is printed.
fn secrets(input: &str, v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut add = |s: Option<&str>| {
        if let Some(s) = s {
            if s.len() >= 12 && input.matches(s).count() == 1 {
                out.push(s.to_string());
            }
        }
    };
    add(v.get("client_secret").and_then(Value::as_str));
    add(v.get("session_secret").and_then(Value::as_str));
    for cs in [v.get("client_secrets"), v.pointer("/client_secrets/web")] {
        add(cs
            .and_then(|c| c.get("client_secret"))
            .and_then(Value::as_str));
    }
    out
}

/// Whether what `print` shows of the configuration holds `secret` because it is the secret: the
/// same input with the secret replaced by a marker must not show the marker (a secret can also
/// be a substring of an error message that the rest of the input causes).
fn leaks(text: &str, secret: &str, print: fn(&[u8]) -> String) -> bool {
    const MARKER: &str = "Zx7Qm4Wv9Kp2Jr5T";
    print(text.replacen(secret, MARKER, 1).as_bytes()).contains(MARKER)
}

fn shown_of(bytes: &[u8]) -> String {
    match Config::parse(bytes) {
        Ok(c) => format!("{c:?}"),
        Err(e) => e.to_string(),
    }
}

fuzz_target!(|data: &[u8]| {
    let parsed = Config::parse(data);
    let text = String::from_utf8_lossy(data);
    let value: Option<Value> = serde_json::from_slice(data).ok();
    let hidden = value
        .as_ref()
        .map(|v| secrets(&text, v))
        .unwrap_or_default();
    match parsed {
        Err(e) => {
            assert!(!e.message.is_empty());
            let shown = e.to_string();
            for s in &hidden {
                if shown.contains(s.as_str()) {
                    assert!(!leaks(&text, s, shown_of), "error prints a secret: {shown}");
                }
            }
            if !e.key.is_empty() {
                // The key names a known setting or a member the input has.
                let root = e.key.split(['.', '[']).next().unwrap_or_default();
                let known = KEYS.iter().any(|k| k.split('.').next() == Some(root));
                let present = value
                    .as_ref()
                    .and_then(Value::as_object)
                    .is_some_and(|o| o.contains_key(root) || o.contains_key(&e.key));
                assert!(known || present, "error key {:?} names nothing", e.key);
            }
        }
        Ok(config) => {
            let shown = format!("{config:?}");
            for s in &hidden {
                if shown.contains(s.as_str()) {
                    assert!(!leaks(&text, s, shown_of), "Debug prints a secret");
                }
            }
            assert!(config.timeout_ms >= 1 && config.rules.clock_skew_seconds <= 600);
            let _ = Names::new(&config.cookie.name);
            for m in &config.skip_paths {
                let (PathMatch::Exact(p) | PathMatch::Prefix(p)) = m;
                assert!(p.starts_with('/') && !p.contains(['*', '?', '#']), "{p:?}");
                let normal = paths::normalise(p).expect("a skip rule is a normal path");
                assert_eq!(normal.as_str(), p);
            }
            for (claim, header) in &config.claims_to_headers {
                assert!(!claim.is_empty());
                assert!(!header.is_empty() && header.bytes().all(|b| b.is_ascii_graphic()));
                assert_eq!(header, &header.to_ascii_lowercase());
            }
            if let Some(login) = config.login() {
                assert!(Sealer::new(&login.session_keys).is_some());
                for path in [&login.callback_path, &login.logout_path] {
                    assert!(path.starts_with('/') && !path.starts_with("//"), "{path:?}");
                }
                assert_ne!(login.callback_path, login.logout_path);
                assert!(login.scopes.iter().any(|s| s == "openid"));
                assert!(config.client_id.is_some());
                let p = &login.post_logout_redirect;
                assert!(
                    (p.starts_with('/') && !p.starts_with("//"))
                        || p.starts_with("http://")
                        || p.starts_with("https://"),
                    "{p:?}"
                );
            }
        }
    }
});
