//! Fixtures of the configuration tests.

use super::*;
use serde_json::{json, Value};

pub const SECRET: &str = "nsseZrfUE/AHsM4ERYcYpaCfgpxPm14SyfAAFapYwC8="; // 32 bytes

pub fn validate_base() -> Value {
    json!({
        "mode": "validate",
        "keycloak": {
            "public_url": "https://sso.example.com",
            "internal_url": "http://keycloak.keycloak.svc.cluster.local:8080",
            "realm": "dev"
        },
        "authorized_parties": ["productpage"]
    })
}

pub fn login_base() -> Value {
    json!({
        "mode": "login",
        "keycloak": {
            "public_url": "https://sso.example.com/",
            "internal_url": "http://keycloak.keycloak.svc.cluster.local:8080",
            "realm": "dev"
        },
        "client_id": "productpage",
        "client_secret": "s3cr3t",
        "session_secret": SECRET
    })
}

pub fn parse(v: &Value) -> Result<Config, ConfigError> {
    Config::parse(v.to_string().as_bytes())
}

pub fn error_of(v: &Value) -> String {
    parse(v).unwrap_err().to_string()
}
