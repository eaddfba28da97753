//! What the fuzz targets share: keys, a key set, a login configuration and signed tokens, all
//! built from fixed inputs (the filter's `testkit` is compiled for its unit tests only), and a
//! small reader that splits a fuzz input into the parts a target needs.
//!
//! Everything here may panic: a fixture that cannot be built is a broken harness, not a finding.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod primes;

use std::sync::OnceLock;

use base64::Engine as _;
use jwt_simple::prelude::*;
use mesh_oidc::config::Config;
use mesh_oidc::jwks::{KeyMaterial, KeySet};
use mesh_oidc::login::{Env, Random, Request};
use mesh_oidc::session::{Names, Sealer, Transaction};
use rsa::{BigUint, RsaPrivateKey};
use serde_json::json;

pub const NOW: u64 = 1_800_000_000;
pub const ISSUER: &str = "https://sso.example.com/realms/dev";
pub const CLIENT_ID: &str = "productpage";
pub const HOST: &str = "bookinfo.example.com";

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn unb64(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()
}

pub fn biguint(hex: &str) -> BigUint {
    BigUint::parse_bytes(hex.as_bytes(), 16).expect("hex prime")
}

/// The provider's RSA key (2048 bits, e = 65537), from two of the fixed primes.
pub fn rsa_key() -> &'static RsaPrivateKey {
    static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| {
        RsaPrivateKey::from_p_q(
            biguint(primes::PRIMES[0]),
            biguint(primes::PRIMES[1]),
            BigUint::from(65_537u32),
        )
        .expect("rsa key")
    })
}

/// The provider's P-256 key, from a fixed scalar.
pub fn ec_key() -> &'static ES256KeyPair {
    static KEY: OnceLock<ES256KeyPair> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut scalar = [0x5au8; 32];
        scalar[0] = 0x1f;
        ES256KeyPair::from_bytes(&scalar).expect("ec key")
    })
}

pub fn rsa_jwk(kid: &str, alg: Option<&str>) -> serde_json::Value {
    use rsa::traits::PublicKeyParts as _;
    let key = rsa_key();
    let mut jwk = json!({"kty": "RSA", "kid": kid, "use": "sig",
        "n": b64(&key.n().to_bytes_be()), "e": b64(&key.e().to_bytes_be())});
    if let Some(alg) = alg {
        jwk["alg"] = json!(alg);
    }
    jwk
}

pub fn ec_jwk(kid: &str) -> serde_json::Value {
    let point = ec_key().public_key().public_key().to_bytes_uncompressed();
    let (x, y) = point[1..].split_at(32);
    json!({"kty": "EC", "kid": kid, "use": "sig", "crv": "P-256", "x": b64(x), "y": b64(y)})
}

/// A key set shaped like Keycloak's: an encryption key first, then the signing keys.
pub fn jwks_json() -> String {
    let mut enc = rsa_jwk("enc-1", Some("RSA-OAEP"));
    enc["use"] = json!("enc");
    json!({"keys": [enc, rsa_jwk("rsa-1", Some("RS256")), rsa_jwk("rsa-any", None), ec_jwk("ec-1")]})
        .to_string()
}

pub fn keyset() -> &'static KeySet {
    static KEYS: OnceLock<KeySet> = OnceLock::new();
    KEYS.get_or_init(|| KeySet::parse(jwks_json().as_bytes()).expect("key set"))
}

/// The same key set with `crate::rsa` switched off: every RSA algorithm goes through jwt-simple
/// (the `reference-rsa` feature).
pub fn keyset_without_fast_path() -> &'static KeySet {
    static KEYS: OnceLock<KeySet> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut keys = keyset().clone();
        for key in &mut keys.keys {
            if let KeyMaterial::Rsa { fast, .. } = &mut key.material {
                *fast = None;
            }
        }
        keys
    })
}

/// How a target signs the header and payload it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signer {
    Rs256,
    Rs512,
    Ps256,
    Es256,
    /// A signature of the right length for RS256 that is not one.
    Junk,
}

impl Signer {
    pub fn from_byte(b: u8) -> Signer {
        match b % 8 {
            0..=2 => Signer::Rs256,
            3 => Signer::Rs512,
            4 => Signer::Ps256,
            5 | 6 => Signer::Es256,
            _ => Signer::Junk,
        }
    }
}

/// `b64(header).b64(payload).b64(signature)` over exactly these bytes.
pub fn sign_raw(signer: Signer, header: &[u8], payload: &[u8]) -> String {
    use rsa::pkcs1v15::Pkcs1v15Sign;
    use sha2::Digest as _;
    let input = format!("{}.{}", b64(header), b64(payload));
    let signature = match signer {
        Signer::Rs256 => {
            let hashed = sha2::Sha256::digest(input.as_bytes());
            rsa_key()
                .sign(Pkcs1v15Sign::new::<sha2::Sha256>(), &hashed)
                .expect("rs256")
        }
        Signer::Rs512 => {
            let hashed = sha2::Sha512::digest(input.as_bytes());
            rsa_key()
                .sign(Pkcs1v15Sign::new::<sha2::Sha512>(), &hashed)
                .expect("rs512")
        }
        Signer::Ps256 => {
            use rand_core::SeedableRng as _;
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(input.len() as u64);
            let hashed = sha2::Sha256::digest(input.as_bytes());
            rsa_key()
                .sign_with_rng(&mut rng, rsa::Pss::new::<sha2::Sha256>(), &hashed)
                .expect("ps256")
        }
        Signer::Es256 => {
            let (signature, _) = ec_key()
                .key_pair()
                .as_ref()
                .sign_recoverable(input.as_bytes())
                .expect("es256");
            signature.to_bytes().to_vec()
        }
        Signer::Junk => vec![0x42; 256],
    };
    format!("{input}.{}", b64(&signature))
}

/// Claims as Keycloak puts them in an access token, valid at [`NOW`].
pub fn access_claims() -> serde_json::Value {
    json!({
        "exp": NOW + 290, "iat": NOW - 10, "nbf": NOW - 10, "iss": ISSUER, "aud": "account",
        "sub": "alice-id", "typ": "Bearer", "azp": CLIENT_ID, "preferred_username": "alice",
        "realm_access": {"roles": ["user", "reader"]}
    })
}

/// A Keycloak-shaped ID token for the client, with this nonce.
pub fn id_claims(nonce: &str) -> serde_json::Value {
    json!({
        "exp": NOW + 290, "iat": NOW - 10, "iss": ISSUER, "aud": CLIENT_ID, "sub": "alice-id",
        "typ": "ID", "azp": CLIENT_ID, "nonce": nonce, "preferred_username": "alice"
    })
}

pub fn sign_claims(claims: &serde_json::Value) -> String {
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": "rsa-1"});
    sign_raw(
        Signer::Rs256,
        header.to_string().as_bytes(),
        claims.to_string().as_bytes(),
    )
}

pub fn access_token() -> &'static str {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| sign_claims(&access_claims()))
}

/// The unit tests' login configuration (src/login.rs), with a skip rule and a claim header.
pub fn login_config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let v = json!({
            "mode": "login",
            "oidc": {
                "issuer": ISSUER,
                "jwks_uri": "http://keycloak:8080/realms/dev/protocol/openid-connect/certs",
                "authorization_endpoint": "https://sso.example.com/realms/dev/protocol/openid-connect/auth",
                "token_endpoint": "http://keycloak:8080/realms/dev/protocol/openid-connect/token",
                "end_session_endpoint": "https://sso.example.com/realms/dev/protocol/openid-connect/logout"
            },
            "client_id": CLIENT_ID,
            "client_secret": "pp secret",
            "session_secret": "nsseZrfUE/AHsM4ERYcYpaCfgpxPm14SyfAAFapYwC8=",
            "claims_to_headers": {"preferred_username": "x-user", "realm_access.roles": "x-roles"},
            "skip_paths": ["/healthz", "/static/*"]
        });
        Config::parse(v.to_string().as_bytes()).expect("login config")
    })
}

pub fn sealer() -> &'static Sealer {
    static SEALER: OnceLock<Sealer> = OnceLock::new();
    SEALER.get_or_init(|| {
        Sealer::new(&login_config().login().expect("login mode").session_keys).expect("sealer")
    })
}

pub fn names() -> &'static Names {
    static NAMES: OnceLock<Names> = OnceLock::new();
    NAMES.get_or_init(|| Names::new(&login_config().cookie.name))
}

pub fn env(keys: Option<&'static KeySet>) -> Env<'static> {
    let config = login_config();
    Env {
        config,
        login: config.login().expect("login mode"),
        sealer: sealer(),
        names: names(),
        keys,
        cache: None,
        endings: None,
        connection: &Tls(false),
        now: NOW,
    }
}

/// A connection that is TLS or not.
pub struct Tls(pub bool);

impl mesh_oidc::login::Connection for Tls {
    fn is_tls(&self) -> bool {
        self.0
    }
}

/// The state every fuzzed callback may carry, and its transaction.
pub const STATE: &str = "c3RhdGUtZnV6ei1zdGF0ZS1mdXp6LXN0YXRlLWZ1eno";

pub fn transaction() -> Transaction {
    Transaction {
        state: STATE.into(),
        nonce: "bm9uY2UtZnV6ei1ub25jZS1mdXp6LW5vbmNlLWZ1eno".into(),
        verifier: "dmVyaWZpZXItZnV6ei12ZXJpZmllci1mdXp6LXZlcmk".into(),
        path: "/productpage?u=normal".into(),
        redirect_uri: format!("http://{HOST}/callback"),
    }
}

/// `name=value` of the sealed transaction cookie for [`STATE`].
pub fn transaction_cookie() -> &'static str {
    static COOKIE: OnceLock<String> = OnceLock::new();
    COOKIE.get_or_init(|| {
        let sealed = sealer()
            .seal(&transaction(), NOW - 5, mesh_oidc::session::TRANSACTION_TTL)
            .expect("seal");
        format!("{}={sealed}", names().transaction(STATE))
    })
}

/// A sealed session with a refresh token, as `name=value`.
pub fn session_cookie() -> &'static str {
    static COOKIE: OnceLock<String> = OnceLock::new();
    COOKIE.get_or_init(|| {
        let session = mesh_oidc::session::Session {
            id_token: Some(sign_claims(&id_claims(&transaction().nonce))),
            refresh_token: Some("refresh-1".into()),
        };
        let sealed = sealer().seal(&session, NOW - 5, 1800).expect("seal");
        format!("{}={sealed}", names().session)
    })
}

pub fn page(path: &str, cookies: &[u8]) -> Request<'static> {
    Request {
        method: "GET".into(),
        path: path.to_string().into(),
        scheme: mesh_oidc::web::Scheme::Http,
        host: HOST.into(),
        accept: Some("text/html,application/xhtml+xml;q=0.9,*/*;q=0.8".into()),
        cookies: cookies.to_vec().into(),
        request_id: "rid-1".into(),
        ..Request::default()
    }
}

/// Deterministic randomness for the login decisions.
pub struct Counter(pub u8);

impl Random for Counter {
    fn fill(&mut self, buf: &mut [u8]) -> bool {
        self.0 = self.0.wrapping_add(1);
        buf.fill(self.0);
        true
    }
}

/// Reads a fuzz input front to back: single bytes for choices, and the parts between `0xff`
/// separators (a byte that is never in UTF-8 text, so text parts stay intact).
pub struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { rest: data }
    }

    pub fn byte(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((b, rest)) => {
                self.rest = rest;
                *b
            }
            None => 0,
        }
    }

    /// The bytes up to the next `0xff` (or the end).
    pub fn part(&mut self) -> &'a [u8] {
        match self.rest.iter().position(|b| *b == 0xff) {
            Some(i) => {
                let (part, rest) = self.rest.split_at(i);
                self.rest = &rest[1..];
                part
            }
            None => std::mem::take(&mut self.rest),
        }
    }

    pub fn text(&mut self) -> String {
        String::from_utf8_lossy(self.part()).into_owned()
    }

    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }
}

/// A header value is safe to hand to Envoy: no CR, LF or NUL (header injection).
pub fn assert_header_safe(name: &str, value: &str) {
    assert!(
        !value.contains(['\r', '\n', '\0']),
        "header {name} carries a line break or NUL: {value:?}"
    );
    assert!(
        !name.is_empty() && !name.contains(['\r', '\n', '\0', ':', ' ']) || name.starts_with(':'),
        "bad header name {name:?}"
    );
}

pub fn assert_reply_safe(reply: &mesh_oidc::web::Reply) {
    for (name, value) in &reply.headers {
        assert_header_safe(name, value);
    }
    if let Some(location) = reply.header("location") {
        assert_redirect_target_safe(location);
    }
}

/// A `Location` the filter sends is either the provider (an absolute https/http URL of the
/// configured endpoints) or a path on this origin.
pub fn assert_redirect_target_safe(location: &str) {
    let base = url::Url::parse(&format!("http://{HOST}/callback")).unwrap();
    let resolved = base.join(location).expect("location resolves");
    let allowed_hosts = [HOST, "sso.example.com"];
    assert!(
        resolved
            .host_str()
            .is_some_and(|h| allowed_hosts.contains(&h)),
        "redirect to a foreign host: {location:?} -> {resolved}"
    );
}
