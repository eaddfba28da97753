//! Endpoints from the provider's discovery document (issue 13, opt-in): a configuration that names
//! `oidc.discovery_url` but not `oidc.jwks_uri` takes every endpoint it does not name from the
//! document, read through `cluster` at start. The browser follows the public ones as the provider
//! publishes them; the ones the pod calls (token, key set, introspection, revocation, userinfo)
//! are moved to `oidc.internal_origin` when it is set, as a sidecar reaches the provider by its
//! Service name.

use crate::httpurl::Url;
use crate::json::{Map, Value};

use super::ConfigError;

/// Discovery's name for each `oidc.*` key, and whether the pod (not the browser) calls it.
const FIELDS: &[(&str, &str, bool)] = &[
    ("authorization_endpoint", "authorization_endpoint", false),
    ("end_session_endpoint", "end_session_endpoint", false),
    ("token_endpoint", "token_endpoint", true),
    ("jwks_uri", "jwks_uri", true),
    ("introspection_endpoint", "introspection_endpoint", true),
    ("revocation_endpoint", "revocation_endpoint", true),
    ("userinfo_endpoint", "userinfo_endpoint", true),
];

/// Whether the configuration takes its endpoints from discovery.
fn wants_discovery(root: &Map<String, Value>) -> bool {
    let oidc = root.get("oidc").and_then(Value::as_object);
    oidc.is_some_and(|o| o.contains_key("discovery_url") && !o.contains_key("jwks_uri"))
        && !root.contains_key("keycloak")
        && !root.contains_key("client_secrets")
}

/// Fills the endpoints the configuration does not name: from `document`, or (no document yet)
/// with the discovery URL itself as a stand-in that nothing uses. Returns whether the
/// configuration still awaits its document. `oidc.internal_origin` is taken out here.
#[inline(never)]
pub(super) fn fill(
    root: &mut Map<String, Value>,
    document: Option<&Value>,
) -> Result<bool, ConfigError> {
    let internal_origin = match root.get_mut("oidc").and_then(Value::as_object_mut) {
        Some(oidc) => oidc.remove("internal_origin"),
        None => None,
    };
    let internal_origin = match internal_origin {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(origin("oidc.internal_origin", &s)?),
        Some(_) => {
            return Err(ConfigError::new(
                "oidc.internal_origin",
                "must be a URL: scheme://host[:port]",
            ))
        }
    };
    if !wants_discovery(root) {
        if internal_origin.is_some() {
            return Err(ConfigError::new(
                "oidc.internal_origin",
                "is used only with oidc.discovery_url and no oidc.jwks_uri (endpoints from discovery)",
            ));
        }
        return Ok(false);
    }
    let Some(oidc) = root.get_mut("oidc").and_then(Value::as_object_mut) else {
        return Ok(false);
    };
    let stand_in = oidc.get("discovery_url").cloned().unwrap_or(Value::Null);
    if document.is_some_and(|d| !d.is_object()) {
        return Err(ConfigError::new(
            "oidc.discovery_url",
            "answered with something that is not a discovery document",
        ));
    }
    for (key, field, internal) in FIELDS {
        if oidc.contains_key(*key) {
            continue;
        }
        let value = match document {
            None => match *key {
                // Only what the parser requires gets a stand-in.
                "authorization_endpoint" | "token_endpoint" | "jwks_uri" => stand_in.clone(),
                _ => continue,
            },
            Some(doc) => match doc.get(field).and_then(Value::as_str) {
                None => continue,
                Some(url) if *internal => Value::String(moved(url, internal_origin.as_ref())),
                Some(url) => Value::String(url.to_string()),
            },
        };
        oidc.insert((*key).to_string(), value);
    }
    if !oidc.contains_key("issuer") {
        if let Some(issuer) = document.and_then(|d| d.get("issuer")) {
            oidc.insert("issuer".into(), issuer.clone());
        } else if document.is_none() {
            oidc.insert("issuer".into(), stand_in);
        }
    }
    if let Some(origin) = &internal_origin {
        // The cluster of the internal origin, unless named: as for keycloak.internal_url.
        if !root.contains_key("cluster") {
            let host = origin.host_str();
            let port = origin.port_or_default();
            root.insert(
                "cluster".into(),
                Value::String(format!("outbound|{port}||{host}")),
            );
        }
    }
    Ok(document.is_none())
}

fn origin(key: &str, s: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(s).map_err(|e| ConfigError::new(key, e))?;
    if url.path() != "/" || url.query().is_some() {
        return Err(ConfigError::new(
            key,
            "must be scheme://host[:port], with no path",
        ));
    }
    Ok(url)
}

/// `url` with the scheme, host and port of `origin` (when given).
fn moved(url: &str, origin: Option<&Url>) -> String {
    let (Some(origin), Ok(u)) = (origin, Url::parse(url)) else {
        return url.to_string();
    };
    u.moved_to(origin).to_string()
}

#[cfg(test)]
mod tests {
    use crate::config::testing::*;
    use crate::config::Config;
    use serde_json::json;

    fn discovering() -> serde_json::Value {
        json!({
            "mode": "login",
            "oidc": {
                "issuer": "https://id.example.com/api/oidc",
                "discovery_url": "http://glewlwyd.auth.svc:4593/api/oidc/.well-known/openid-configuration",
                "internal_origin": "http://glewlwyd.auth.svc:4593"
            },
            "client_id": "productpage",
            "client_secret": "s",
            "session_secret": SECRET
        })
    }

    fn document() -> serde_json::Value {
        json!({
            "issuer": "https://id.example.com/api/oidc",
            "authorization_endpoint": "https://id.example.com/api/oidc/auth",
            "token_endpoint": "https://id.example.com/api/oidc/token",
            "jwks_uri": "https://id.example.com/api/oidc/jwks",
            "end_session_endpoint": "https://id.example.com/api/oidc/end_session",
            "revocation_endpoint": "https://id.example.com/api/oidc/revoke"
        })
    }

    #[test]
    fn endpoints_come_from_the_document_the_internal_ones_moved() {
        let bytes = discovering().to_string();
        let waiting = Config::parse(bytes.as_bytes()).unwrap();
        assert!(waiting.awaiting_discovery);
        assert_eq!(waiting.cluster, "outbound|4593||glewlwyd.auth.svc");
        let c = Config::parse_discovered(bytes.as_bytes(), Some(&document().into())).unwrap();
        assert!(!c.awaiting_discovery);
        let l = c.login().unwrap();
        assert_eq!(
            l.authorization_endpoint.as_str(),
            "https://id.example.com/api/oidc/auth"
        );
        assert_eq!(
            l.token_endpoint.url.as_str(),
            "http://glewlwyd.auth.svc:4593/api/oidc/token"
        );
        assert_eq!(l.token_endpoint.authority, "glewlwyd.auth.svc:4593");
        assert_eq!(
            c.jwks.url.as_str(),
            "http://glewlwyd.auth.svc:4593/api/oidc/jwks"
        );
        assert_eq!(
            l.end_session_endpoint.as_ref().unwrap().as_str(),
            "https://id.example.com/api/oidc/end_session"
        );
        // What the configuration names wins over the document.
        let mut v = discovering();
        v["oidc"]["end_session_endpoint"] = json!("https://elsewhere.example.com/logout");
        let c =
            Config::parse_discovered(v.to_string().as_bytes(), Some(&document().into())).unwrap();
        assert_eq!(
            c.login()
                .unwrap()
                .end_session_endpoint
                .as_ref()
                .unwrap()
                .as_str(),
            "https://elsewhere.example.com/logout"
        );
        // A document without a required endpoint is a configuration error, named.
        let mut d = document();
        d.as_object_mut().unwrap().remove("token_endpoint");
        let e = Config::parse_discovered(bytes.as_bytes(), Some(&d.into())).unwrap_err();
        assert!(e.to_string().starts_with("oidc.token_endpoint: "), "{e}");
        // internal_origin without discovery is a mistake.
        let mut v = discovering();
        v["oidc"]["jwks_uri"] = json!("http://x/jwks");
        v["oidc"]["token_endpoint"] = json!("http://x/token");
        v["oidc"]["authorization_endpoint"] = json!("https://x/auth");
        assert!(Config::parse(v.to_string().as_bytes())
            .unwrap_err()
            .to_string()
            .starts_with("oidc.internal_origin: "));
    }
}
