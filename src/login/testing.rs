//! Fixtures of the login-mode tests: a configuration, a sealer, a key set, requests.

use super::*;
use crate::config::Config;
use crate::testkit::*;
use jwt_simple::prelude::*;
use serde_json::{json, Map, Value};

pub struct Counter(pub u8);
impl Random for Counter {
    fn fill(&mut self, buf: &mut [u8]) -> bool {
        self.0 = self.0.wrapping_add(1);
        buf.fill(self.0);
        true
    }
}

pub fn config_with(edit: impl FnOnce(&mut Value)) -> Config {
    let mut v = json!({
        "mode": "login",
        "oidc": {
            "issuer": ISSUER,
            "jwks_uri": "http://keycloak:8080/realms/dev/protocol/openid-connect/certs",
            "authorization_endpoint": "https://sso.example.com/realms/dev/protocol/openid-connect/auth",
            "token_endpoint": "http://keycloak:8080/realms/dev/protocol/openid-connect/token",
            "end_session_endpoint": "https://sso.example.com/realms/dev/protocol/openid-connect/logout"
        },
        "client_id": "productpage",
        "client_secret": "pp secret",
        "session_secret": "nsseZrfUE/AHsM4ERYcYpaCfgpxPm14SyfAAFapYwC8=",
        "claims_to_headers": {"preferred_username": "x-user"}
    });
    edit(&mut v);
    Config::parse(v.to_string().as_bytes()).unwrap()
}

pub struct Fixture {
    pub config: Config,
    pub sealer: Sealer,
    pub names: Names,
    pub keys: KeySet,
}

impl Fixture {
    pub fn new(config: Config) -> Fixture {
        let sealer = Sealer::new(&config.login().unwrap().session_keys).unwrap();
        let names = Names::new(&config.cookie.name);
        Fixture {
            config,
            sealer,
            names,
            keys: keyset(),
        }
    }
    pub fn env(&self) -> Env<'_> {
        self.env_at(NOW)
    }
    pub fn env_at(&self, now: u64) -> Env<'_> {
        Env {
            config: &self.config,
            login: self.config.login().unwrap(),
            sealer: &self.sealer,
            names: &self.names,
            keys: Some(&self.keys),
            cache: None,
            endings: None,
            connection: &Plaintext,
            now,
        }
    }
}

/// A connection without TLS.
pub struct Plaintext;

impl crate::login::Connection for Plaintext {
    fn is_tls(&self) -> bool {
        false
    }
}

pub fn fixture() -> Fixture {
    Fixture::new(config_with(|_| {}))
}

pub fn page(path: &str, cookies: &str) -> Request<'static> {
    Request {
        method: "GET".into(),
        path: path.to_string().into(),
        scheme: crate::web::Scheme::Http,
        host: "bookinfo.example.com".into(),
        accept: Some("text/html,application/xhtml+xml;q=0.9,*/*;q=0.8".into()),
        cookies: cookies.as_bytes().to_vec().into(),
        request_id: "rid-1".into(),
        ..Request::default()
    }
}

pub fn cookie_pairs(reply: &Reply) -> Vec<(String, String, String)> {
    reply
        .headers
        .iter()
        .filter(|(n, _)| n == "set-cookie")
        .map(|(_, v)| {
            let (pair, attrs) = v.split_once(';').unwrap_or((v, ""));
            let (n, val) = pair.split_once('=').unwrap();
            (n.to_string(), val.to_string(), attrs.to_string())
        })
        .collect()
}

pub fn as_cookie_header(pairs: &[(String, String, String)]) -> String {
    pairs
        .iter()
        .filter(|(_, v, _)| !v.is_empty())
        .map(|(n, v, _)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

pub fn query(location: &str) -> Map<String, Value> {
    let url = url::Url::parse(location).unwrap();
    url.query_pairs()
        .map(|(k, v)| (k.into_owned(), json!(v.into_owned())))
        .collect()
}

pub fn reply_of(a: Action) -> Reply {
    match a {
        Action::Reply(r) => r,
        other => panic!("expected a reply, got {other:?}"),
    }
}

/// Keycloak's ID token: its claims, `typ: ID`, the client as audience, the login's nonce.
pub fn id_token(nonce: &str, aud: &str) -> String {
    let mut custom = keycloak_claims();
    custom.insert("typ".into(), json!("ID"));
    let mut c = claims(custom);
    c.audiences = Some(Audiences::AsString(aud.into()));
    c.nonce = Some(nonce.into());
    sign_rsa(c)
}

/// Starts a login at `path` and returns the transaction and the cookie header holding it.
pub fn begin(f: &Fixture, path: &str) -> (Transaction, String) {
    let reply = reply_of(decide(&f.env(), &page(path, ""), &mut Counter(0), true));
    let pairs = cookie_pairs(&reply);
    let (name, value, _) = pairs.iter().find(|(n, _, _)| n.contains("_tx_")).unwrap();
    let tx: Transaction = f.sealer.open(value, NOW).unwrap();
    (tx, format!("{name}={value}"))
}

pub fn token_body(access: &str, id: &str, refresh: Option<&str>) -> Vec<u8> {
    let mut v = json!({"access_token": access, "id_token": id, "token_type": "Bearer", "expires_in": 290, "refresh_expires_in": 1800});
    if let Some(r) = refresh {
        v["refresh_token"] = json!(r);
    }
    v.to_string().into_bytes()
}

pub fn session_cookie(f: &Fixture, s: &Session) -> String {
    format!(
        "access_token_session={}",
        f.sealer.seal(s, NOW, 1800).unwrap()
    )
}

pub fn expired_token() -> String {
    let mut c = claims(keycloak_claims());
    c.expires_at = Some(UnixTimeStamp::from_secs(NOW - 100));
    sign_rsa(c)
}
