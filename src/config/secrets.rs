//! Secrets in the configuration: `session_secret` (one, or a list for rotation; placeholders and
//! weak values refused) and flask-oidc's `client_secrets.json`.

use super::*;

#[derive(Default)]
pub(super) struct FromClientSecrets {
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    pub callback_path: Option<String>,
    pub internal_url: Option<Url>,
    /// Fields of the file this filter does not use (flask-oidc has more): ignored, said once.
    pub ignored: Vec<String>,
}

/// Reads flask-oidc's `client_secrets.json` (its `web` object, or the whole file) into derived
/// endpoints. Keycloak's URL layout gives the key set and end-session endpoints too.
#[inline(never)]
pub(super) fn client_secrets(
    mut cs: Obj,
    derived: &mut Named<String>,
) -> Result<FromClientSecrets, ConfigError> {
    if let Some(web) = cs.object("web")? {
        cs = web;
    }
    let mut out = FromClientSecrets::default();
    let url_of = |cs: &mut Obj, name: &str| -> Result<Option<Url>, ConfigError> {
        let key = cs.key(name);
        cs.string(name)?.map(|s| parse_url(&key, &s)).transpose()
    };
    if let Some(issuer) = url_of(&mut cs, "issuer")? {
        derived.insert("issuer", issuer.as_str().trim_end_matches('/').to_string());
    }
    let oidc = "/protocol/openid-connect/";
    if let Some(auth) = url_of(&mut cs, "auth_uri")? {
        if let Some(base) = auth.as_str().strip_suffix("/protocol/openid-connect/auth") {
            derived.insert("end_session_endpoint", format!("{base}{oidc}logout"));
        }
        derived.insert("authorization_endpoint", auth.to_string());
    }
    let token = url_of(&mut cs, "token_uri")?
        .ok_or_else(|| ConfigError::new(cs.key("token_uri"), "is required"))?;
    if let Some(base) = token
        .as_str()
        .strip_suffix("/protocol/openid-connect/token")
    {
        derived.insert("jwks_uri", format!("{base}{oidc}certs"));
        derived.insert("revocation_endpoint", format!("{base}{oidc}revoke"));
        derived.insert(
            "discovery_url",
            format!("{base}/.well-known/openid-configuration"),
        );
    }
    derived.insert("token_endpoint", token.to_string());
    if let Some(u) = url_of(&mut cs, "userinfo_uri")? {
        derived.insert("userinfo_endpoint", u.to_string());
    }
    if let Some(u) = url_of(&mut cs, "token_introspection_uri")? {
        derived.insert("introspection_endpoint", u.to_string());
    }
    out.client_id = cs.nonempty_string("client_id")?;
    out.client_secret = cs.nonempty_string("client_secret")?.map(Secret::new);
    if let Some(uris) = cs.strings("redirect_uris")? {
        // The first exact redirect URI names the callback; a wildcard one (`http://host/*`,
        // which Keycloak allows) names none.
        let exact = uris.iter().find(|u| !u.contains('*'));
        match exact {
            Some(uri) => {
                let url = parse_url(&cs.key("redirect_uris"), uri)?;
                out.callback_path = Some(url.path().to_string());
            }
            None if !uris.is_empty() => {
                return Err(ConfigError::new(
                    cs.key("redirect_uris"),
                    "has only wildcard URIs, which name no callback path: set callback_path (and register that exact URI in the realm)",
                ))
            }
            None => {}
        }
    }
    // "Paste it as it is": the fields this filter has no use for are ignored, not refused.
    out.ignored = cs.map.keys().map(|k| cs.key(k)).collect();
    out.internal_url = Some(token.origin());
    Ok(out)
}

/// Words that mark a value as a placeholder someone forgot to replace.
const PLACEHOLDER_WORDS: &[&str] = &[
    "changeme",
    "change-me",
    "change_me",
    "placeholder",
    "replace",
    "example",
    "notasecret",
    "not-a-secret",
    "xxxxxxxx",
];

/// Whether a value reads as a placeholder someone forgot to replace.
pub(super) fn is_placeholder(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    PLACEHOLDER_WORDS.iter().any(|w| lower.contains(w))
}

/// A secret is refused when it reads as a placeholder, or when its bytes are too uniform to have
/// come from a random source (32 random bytes hold about 30 distinct values; fewer than 20 is a
/// typed phrase or a pattern).
fn weak_secret(text: &str, bytes: &[u8]) -> Option<&'static str> {
    let lower_text = text.to_ascii_lowercase();
    let lower_bytes = String::from_utf8_lossy(bytes).to_ascii_lowercase();
    if PLACEHOLDER_WORDS
        .iter()
        .any(|w| lower_text.contains(w) || lower_bytes.contains(w))
    {
        return Some("is a placeholder");
    }
    let mut seen = [false; 256];
    for b in bytes {
        if let Some(slot) = seen.get_mut(usize::from(*b)) {
            *slot = true;
        }
    }
    if seen.iter().filter(|s| **s).count() < 20 {
        return Some("has too little entropy (too few distinct bytes)");
    }
    None
}

pub(super) fn parse_session_secret(key: &str, s: &str) -> Result<SessionKey, ConfigError> {
    let trimmed = s.trim();
    let engines = [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    let bytes = engines
        .iter()
        .find_map(|e| e.decode(trimmed).ok())
        .ok_or_else(|| ConfigError::new(key, "must be base64"))?;
    if bytes.len() < 32 {
        return Err(ConfigError::new(
            key,
            format!("must decode to at least 32 bytes, got {}", bytes.len()),
        ));
    }
    if let Some(why) = weak_secret(trimmed, &bytes) {
        return Err(ConfigError::new(
            key,
            format!("{why}: generate one with `openssl rand -base64 32`"),
        ));
    }
    Ok(SessionKey(fold_key(&bytes)))
}

/// Folds any secret of 32 bytes or more into a 32-byte key with SHA-256 (via HMAC, with a fixed
/// label, so the sealing key is not the raw secret).
fn fold_key(secret: &[u8]) -> [u8; 32] {
    hmac_sha256::HMAC::mac(b"mesh-oidc session key v1", secret)
}

/// `session_secret`: one base64 secret, or a list (the first seals, all unseal).
#[inline(never)]
pub(super) fn session_keys(root: &mut Obj) -> Result<Option<SessionKeys>, ConfigError> {
    Ok(match root.take("session_secret") {
        None => None,
        Some(Value::String(s)) => Some(SessionKeys {
            sealing: parse_session_secret("session_secret", &s)?,
            older: Vec::new(),
        }),
        Some(Value::Array(items)) => {
            let mut keys = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let key = format!("session_secret[{i}]");
                let Value::String(s) = item else {
                    return Err(ConfigError::new(key, "must be a string (base64)"));
                };
                keys.push(parse_session_secret(&key, s)?);
            }
            let mut keys = keys.into_iter();
            let sealing = keys
                .next()
                .ok_or_else(|| ConfigError::new("session_secret", "must not be an empty list"))?;
            Some(SessionKeys {
                sealing,
                older: keys.collect(),
            })
        }
        Some(_) => {
            return Err(ConfigError::new(
                "session_secret",
                "must be a base64 string, or a list of them (the first seals, all unseal)",
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use crate::config::testing::*;
    use serde_json::json;

    #[test]
    fn flask_oidc_client_secrets_migrate_as_they_are() {
        // The seed's client_secrets.json, as flask-oidc read it.
        let v = json!({
            "mode": "login",
            "client_secrets": {"web": {
                "issuer": "https://sso.example.com/realms/dev",
                "auth_uri": "https://sso.example.com/realms/dev/protocol/openid-connect/auth",
                "client_id": "productpage",
                "client_secret": "s3cr3t",
                "redirect_uris": ["https://bookinfo.example.com/oidc_callback"],
                "userinfo_uri": "http://keycloak.keycloak.svc.cluster.local:8080/realms/dev/protocol/openid-connect/userinfo",
                "token_uri": "http://keycloak.keycloak.svc.cluster.local:8080/realms/dev/protocol/openid-connect/token",
                "token_introspection_uri": "http://keycloak.keycloak.svc.cluster.local:8080/realms/dev/protocol/openid-connect/token/introspect"
            }},
            "session_secret": SECRET
        });
        let c = parse(&v).unwrap();
        let l = c.login().unwrap();
        assert_eq!(c.rules.issuer, "https://sso.example.com/realms/dev");
        assert_eq!(c.client_id.as_deref(), Some("productpage"));
        assert_eq!(l.client_secret.expose(), "s3cr3t");
        assert_eq!(l.callback_path, "/oidc_callback");
        assert_eq!(
            c.cluster,
            "outbound|8080||keycloak.keycloak.svc.cluster.local"
        );
        assert_eq!(c.jwks.path, "/realms/dev/protocol/openid-connect/certs");
        assert_eq!(
            l.token_endpoint.authority,
            "keycloak.keycloak.svc.cluster.local:8080"
        );
        assert_eq!(
            l.end_session_endpoint.as_ref().unwrap().as_str(),
            "https://sso.example.com/realms/dev/protocol/openid-connect/logout"
        );

        let mut both = v.clone();
        both["keycloak"] = login_base()["keycloak"].clone();
        assert!(error_of(&both).starts_with("client_secrets: cannot be combined with keycloak"));
        let mut differ = v.clone();
        differ["client_id"] = json!("other");
        assert!(error_of(&differ).starts_with("client_id: differs"));
        // A real client_secrets.json has fields mesh-oidc does not use: ignored, said once.
        let mut odd = v.clone();
        odd["client_secrets"]["web"]["flavour"] = json!(1);
        odd["client_secrets"]["web"]["redirect_uris"] = json!([
            "https://bookinfo.example.com/*",
            "https://bookinfo.example.com/oidc_callback"
        ]);
        let c = parse(&odd).unwrap();
        assert_eq!(
            c.warnings,
            vec!["client_secrets: ignoring the fields mesh-oidc does not use: client_secrets.web.flavour".to_string()]
        );
        assert_eq!(
            c.login().unwrap().callback_path,
            "/oidc_callback",
            "the exact one"
        );
        odd["client_secrets"]["web"]["redirect_uris"] = json!(["https://bookinfo.example.com/*"]);
        assert!(error_of(&odd).starts_with("client_secrets.web.redirect_uris: has only wildcard"));
        let mut no_token = v;
        no_token["client_secrets"]["web"]
            .as_object_mut()
            .unwrap()
            .remove("token_uri");
        assert!(error_of(&no_token).starts_with("client_secrets.web.token_uri: is required"));
    }

    #[test]
    fn secrets_never_print() {
        let c = parse(&login_base()).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(!shown.contains(SECRET));
        assert!(shown.contains("[redacted]"));
    }

    #[test]
    fn session_secrets_of_any_base64_flavour() {
        for s in [
            SECRET,
            SECRET.trim_end_matches('='),
            &SECRET.replace('+', "-").replace('/', "_"),
        ] {
            let mut v = login_base();
            v["session_secret"] = json!(s);
            assert!(parse(&v).is_ok(), "{s}");
        }
    }

    #[test]
    fn placeholder_and_weak_session_secrets_are_refused() {
        use base64::Engine as _;
        let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
        for weak in [
            "PLACEHOLDER+replace+with+openssl+rand+base64+32+CHANGEME".to_string(),
            b64(b"0123456789abcdef0123456789abcdef"),
            b64(&[0u8; 32]),
            b64(b"mesh-oidc-demo-only-NOT-A-SECRET"),
            b64(b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
            b64(b"changeme-changeme-changeme-changeme!"),
        ] {
            let mut v = login_base();
            v["session_secret"] = json!(weak);
            let e = error_of(&v);
            assert!(
                e.starts_with("session_secret: ") && e.contains("openssl rand -base64 32"),
                "{weak}: {e}"
            );
        }
        let mut v = login_base();
        v["session_secret"] = json!([SECRET, b64(&[1u8; 32])]);
        assert!(error_of(&v).starts_with("session_secret[1]: "));
    }

    #[test]
    fn a_list_of_session_secrets_rotates() {
        let other = "q3Wm0b8cTzY1n2Xh7Jk4LpRsEo9VfGaD6iUyBtNwC5M=";
        let mut v = login_base();
        v["session_secret"] = json!([other, SECRET]);
        let c = parse(&v).unwrap();
        let keys = &c.login().unwrap().session_keys;
        assert_eq!(keys.all().count(), 2);
        let mut single = login_base();
        single["session_secret"] = json!(other);
        let s = parse(&single).unwrap();
        assert_eq!(
            keys.sealing(),
            s.login().unwrap().session_keys.sealing(),
            "the first seals"
        );
        v["session_secret"] = json!([]);
        assert!(error_of(&v).starts_with("session_secret: must not be an empty list"));
        v["session_secret"] = json!(42);
        assert!(error_of(&v).starts_with("session_secret: must be a base64 string"));
    }
}
