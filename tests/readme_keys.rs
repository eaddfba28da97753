#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! The README's configuration table and the parser's keys must be the same set.

use std::collections::BTreeSet;

#[test]
fn readme_documents_exactly_the_config_keys() {
    let readme = include_str!("../README.md");
    let start = readme
        .find("<!-- keys:start -->")
        .expect("keys table start marker");
    let end = readme
        .find("<!-- keys:end -->")
        .expect("keys table end marker");
    let documented: BTreeSet<String> = readme[start..end]
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| l.split('`').nth(1).map(str::to_string))
        .collect();
    let known: BTreeSet<String> = mesh_oidc::config::KEYS
        .iter()
        .map(|k| k.to_string())
        .collect();
    assert_eq!(documented, known, "README key table vs config::KEYS");
}

#[test]
fn every_listed_key_is_accepted_by_the_parser() {
    // Build a configuration that sets every key once: none may be reported unknown.
    let config = serde_json::json!({
        "mode": "login",
        "keycloak": {"public_url": "https://sso.example.com", "internal_url": "http://kc:8080", "realm": "dev"},
        "oidc": {
            "issuer": "https://sso.example.com/realms/dev",
            "authorization_endpoint": "https://sso.example.com/a",
            "token_endpoint": "http://kc:8080/t",
            "jwks_uri": "http://kc:8080/k",
            "end_session_endpoint": "https://sso.example.com/l",
            "introspection_endpoint": "http://kc:8080/i",
            "userinfo_endpoint": "http://kc:8080/u",
            "revocation_endpoint": "http://kc:8080/r",
            "discovery_url": "http://kc:8080/.well-known/openid-configuration"
        },
        "cluster": "keycloak",
        "client_id": "productpage",
        "client_secret": "s",
        "client_auth_method": "client_secret_post",
        "scopes": ["openid"],
        "session_secret": "nsseZrfUE/AHsM4ERYcYpaCfgpxPm14SyfAAFapYwC8=",
        "callback_path": "/cb",
        "logout_path": "/out",
        "post_logout_redirect": "/bye",
        "cookie": {"name": "at", "secure": true, "same_site": "Strict", "domain": "example.com"},
        "audiences": ["account"],
        "authorized_parties": ["productpage"],
        "skip_paths": ["/healthz"],
        "claims_to_headers": {"sub": "x-sub"},
        "clock_skew_seconds": 10,
        "timeout_ms": 1000,
        "jwks_refresh_seconds": 60,
        "on_upstream_401": "pass",
        "public_origins": ["https://bookinfo.example.com"],
        "trust_forwarded_proto": true,
        "upstream_401_services": ["details.bookinfo.svc.cluster.local:9080"],
        "backchannel_logout_path": "/backchannel-logout",
        "rules": [{"path": "/admin", "methods": ["GET"], "scopes": ["admin"], "realm_roles": ["admin"],
                   "client_roles": {"productpage": ["admin"]}, "acr": ["2"]}]
    });
    // client_secrets replaces keycloak, so it is checked in a second configuration.
    let migrated = serde_json::json!({
        "mode": "login",
        "client_secrets": {"web": {
            "issuer": "https://sso.example.com/realms/dev",
            "auth_uri": "https://sso.example.com/realms/dev/protocol/openid-connect/auth",
            "token_uri": "http://kc:8080/realms/dev/protocol/openid-connect/token",
            "client_id": "productpage", "client_secret": "s",
            "redirect_uris": ["https://bookinfo.example.com/callback"]
        }},
        "session_secret": "nsseZrfUE/AHsM4ERYcYpaCfgpxPm14SyfAAFapYwC8="
    });
    mesh_oidc::config::Config::parse(migrated.to_string().as_bytes())
        .expect("client_secrets accepted");
    // introspection is for validate mode: a third configuration.
    let validate = serde_json::json!({
        "mode": "validate",
        "oidc": {"issuer": "https://sso.example.com/realms/dev", "jwks_uri": "http://kc:8080/k",
                 "introspection_endpoint": "http://kc:8080/i"},
        "authorized_parties": ["productpage"],
        "introspection": {"enabled": true, "cache_seconds": 10, "client_id": "details",
                          "client_secret": "details-secret"}
    });
    mesh_oidc::config::Config::parse(validate.to_string().as_bytes())
        .expect("introspection accepted");
    // endpoints from discovery: a fourth.
    let discovering = serde_json::json!({
        "mode": "validate",
        "oidc": {"issuer": "https://id.example.com", "discovery_url": "http://id.svc/.well-known/openid-configuration",
                 "internal_origin": "http://id.svc"},
        "authorized_parties": ["productpage"]
    });
    mesh_oidc::config::Config::parse(discovering.to_string().as_bytes())
        .expect("discovery accepted");
    let mut set = BTreeSet::new();
    set.insert("client_secrets".to_string());
    collect_keys(&validate["introspection"], "introspection", &mut set);
    collect_keys(&discovering["oidc"], "oidc", &mut set);
    collect_keys(&config, "", &mut set);
    // claims_to_headers' entries are data, not keys.
    set.retain(|k| !k.starts_with("claims_to_headers."));
    set.insert("claims_to_headers".into());
    let known: BTreeSet<String> = mesh_oidc::config::KEYS
        .iter()
        .map(|k| k.to_string())
        .collect();
    assert_eq!(set, known, "this test must set every key");
    mesh_oidc::config::Config::parse(config.to_string().as_bytes()).expect("all keys accepted");
}

fn collect_keys(v: &serde_json::Value, prefix: &str, out: &mut BTreeSet<String>) {
    if let serde_json::Value::Object(map) = v {
        for (k, child) in map {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            if child.is_object() && k != "claims_to_headers" {
                collect_keys(child, &key, out);
            } else {
                out.insert(key);
            }
        }
    }
}
