//! Token checks (B2): signature with a key from the set and an asymmetric algorithm that fits it,
//! issuer, time claims with skew, and the audience rules.

use crate::json::{Map, Value};

use crate::config::TokenRules;
use crate::jwks::{Alg, Jwk, KeyMaterial, KeySet};

/// Tokens longer than this are refused before any parsing (Keycloak's are a few KB).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    Malformed,
    /// `none`, HMAC, or anything else that is not an accepted asymmetric algorithm.
    AlgorithmNotAllowed,
    /// No key in the set has this `kid` (a refetch may help).
    UnknownKey,
    /// A key was found but does not fit the token's algorithm.
    KeyMismatch,
    BadSignature,
    Expired,
    MissingExpiry,
    NotYetValid,
    IssuedInFuture,
    WrongIssuer,
    WrongAudience,
    WrongAuthorizedParty,
    WrongNonce,
    /// Verified, but an ID, refresh or logout token where an access token is expected (B2+).
    NotAnAccessToken,
    /// Verified, but not an ID token where one is expected (the code exchange).
    NotAnIdToken,
    NotALogoutToken,
    /// The provider says the token is no longer active (introspection, V3).
    Revoked,
}

impl TokenError {
    /// A short, fixed text for `error_description` and logs: never the token itself.
    pub fn description(&self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed token",
            TokenError::AlgorithmNotAllowed => "signing algorithm not allowed",
            TokenError::UnknownKey => "signing key not found",
            TokenError::KeyMismatch => "signing key does not fit the algorithm",
            TokenError::BadSignature => "invalid signature",
            TokenError::Expired => "token expired",
            TokenError::MissingExpiry => "token has no expiry",
            TokenError::NotYetValid => "token not yet valid",
            TokenError::IssuedInFuture => "token issued in the future",
            TokenError::WrongIssuer => "wrong issuer",
            TokenError::WrongAudience => "wrong audience",
            TokenError::WrongAuthorizedParty => "wrong authorized party",
            TokenError::WrongNonce => "wrong nonce",
            TokenError::NotAnAccessToken => "not an access token",
            TokenError::NotAnIdToken => "not an ID token",
            TokenError::NotALogoutToken => "not a logout token",
            TokenError::Revoked => "token is not active",
        }
    }

    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed",
            TokenError::AlgorithmNotAllowed => "algorithm",
            TokenError::UnknownKey | TokenError::KeyMismatch => "unknown_key",
            TokenError::BadSignature => "signature",
            TokenError::Expired | TokenError::MissingExpiry => "expired",
            TokenError::NotYetValid | TokenError::IssuedInFuture => "not_yet_valid",
            TokenError::WrongIssuer => "issuer",
            TokenError::WrongAudience | TokenError::WrongAuthorizedParty => "audience",
            TokenError::WrongNonce => "nonce",
            TokenError::NotAnAccessToken
            | TokenError::NotAnIdToken
            | TokenError::NotALogoutToken => "token_type",
            TokenError::Revoked => "inactive",
        }
    }
}

/// A token that passed every check, with its claims.
#[derive(Debug, Clone)]
pub struct Verified {
    pub claims: Map<String, Value>,
    pub expires_at: u64,
    /// Its claim headers (B3), worked out once with the `claims_to_headers` mapping they were
    /// worked out for: a cached token's are not made again on every request
    /// (`validate::claim_headers`).
    pub claim_headers: std::cell::OnceCell<(ClaimMapping, ClaimHeaders)>,
}

/// The same token's claims: whether its claim headers were worked out yet does not count.
impl PartialEq for Verified {
    fn eq(&self, other: &Verified) -> bool {
        self.claims == other.claims && self.expires_at == other.expires_at
    }
}

/// `claims_to_headers`: (claim, header name).
pub type ClaimMapping = Vec<(String, String)>;

/// Claim headers as set on a request: (header name, value), shared.
pub type ClaimHeaders = std::rc::Rc<[(String, String)]>;

/// What the token names in its header, read without trusting it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub alg: Alg,
    pub kid: Option<String>,
    /// The media type (`typ`) as written, when the header has one.
    pub typ: Option<String>,
}

/// Longest header segment read (jwt-simple, the reference in tests, has the same bound).
const MAX_HEADER_B64_LEN: usize = 8192;

/// A base64url segment that holds a JSON object. Every name in it is unique (`crate::json`
/// refuses a name twice in one object): parsers disagree on which of two equal names wins, and a
/// token read one way here and another way elsewhere (the service behind the filter) is refused
/// instead.
fn decode_object(segment: &str) -> Option<Map<String, Value>> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .ok()?;
    crate::json::object_from_slice(&bytes).ok()
}

/// The `sub` of a token this filter verified before and kept sealed (the session's ID token):
/// read without checking again.
pub fn unverified_subject(token: &str) -> Option<String> {
    unverified_claims(token)?
        .get("sub")?
        .as_str()
        .map(str::to_string)
}

/// For a log line about an issuer or audience mismatch: what the rules expect and what the
/// (refused, unverified) token says — claim values only, never the token.
pub fn mismatch_detail(token: &str, rules: &TokenRules) -> Option<String> {
    let claims = unverified_claims(token)?;
    let show = |name: &str| -> String {
        match claims.get(name) {
            None => "none".into(),
            Some(v) => {
                let text = v.to_json();
                let text: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
                text
            }
        }
    };
    Some(format!(
        "expected iss {:?}, audiences {:?}, authorized parties {:?}{}; the token has iss {}, aud {}, azp {}, client_id {}",
        rules.issuer,
        rules.audiences,
        rules.authorized_parties,
        rules
            .client_id_as_audience
            .as_ref()
            .map(|c| format!(", client {c:?} as aud or azp"))
            .unwrap_or_default(),
        show("iss"),
        show("aud"),
        show("azp"),
        show("client_id"),
    ))
}

/// The claims of a token this filter verified before and kept sealed, read without checking
/// again.
pub fn unverified_claims(token: &str) -> Option<Map<String, Value>> {
    decode_object(token.split('.').nth(1)?)
}

pub fn read_header(token: &str) -> Result<Header, TokenError> {
    if token.is_empty()
        || token.len() > MAX_TOKEN_LEN
        || token.split('.').count() != 3
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(TokenError::Malformed);
    }
    let segment = token.split('.').next().unwrap_or_default();
    if segment.len() > MAX_HEADER_B64_LEN {
        return Err(TokenError::Malformed);
    }
    // Every member as written: what is not understood (`enc`, `zip`, `crit`) must be seen to be
    // refused.
    let header = decode_object(segment).ok_or(TokenError::Malformed)?;
    let text = |name: &str| -> Result<Option<String>, TokenError> {
        match header.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(TokenError::Malformed),
        }
    };
    let alg = text("alg")?.ok_or(TokenError::Malformed)?;
    let alg = Alg::from_name(&alg).ok_or(TokenError::AlgorithmNotAllowed)?;
    // JWE parameters in a signed token (B2+): what it claims to be is not what it is.
    if header.contains_key("enc") || header.contains_key("zip") {
        return Err(TokenError::Malformed);
    }
    // No critical extensions are understood here (an empty list means none).
    match header.get("crit") {
        None => {}
        Some(Value::Array(list)) if list.is_empty() => {}
        Some(_) => return Err(TokenError::Malformed),
    }
    // A `typ` (if any) that names a JWT: `JWT` or a `…+jwt` media type.
    let typ = text("typ")?;
    if let Some(typ) = &typ {
        let upper = typ.to_ascii_uppercase();
        if upper != "JWT" && !upper.ends_with("+JWT") {
            return Err(TokenError::Malformed);
        }
    }
    Ok(Header {
        alg,
        kid: text("kid")?,
        typ,
    })
}

/// What the caller takes the token for. Keycloak signs ID, refresh and logout tokens with the
/// same keys as access tokens, for the same issuer and often the same audience: only these
/// markers tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Any,
    Access,
    Id,
    Logout,
}

/// The back-channel logout event (OpenID Connect Back-Channel Logout 1.0 §2.4).
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// A logout token without `exp` is accepted this long after its `iat`.
pub const LOGOUT_TOKEN_MAX_AGE: u64 = 300;

/// A logout token (§2.4, §2.6): the header does not name another kind of JWT; `events` holds the
/// back-channel logout event as an object; `sid` or `sub`; a `jti`; no `nonce`.
fn is_logout_token(header: &Header, payload: &Map<String, Value>) -> bool {
    let header_ok = header.typ.as_deref().is_none_or(|typ| {
        ["JWT", "logout+jwt", "application/logout+jwt"]
            .iter()
            .any(|t| typ.eq_ignore_ascii_case(t))
    });
    let event = payload
        .get("events")
        .and_then(Value::as_object)
        .and_then(|e| e.get(BACKCHANNEL_LOGOUT_EVENT))
        .is_some_and(Value::is_object);
    let names_someone = ["sid", "sub"].iter().any(|c| {
        payload
            .get(*c)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    });
    let jti = payload
        .get("jti")
        .and_then(Value::as_str)
        .is_some_and(|j| !j.is_empty());
    header_ok
        && event
        && names_someone
        && jti
        && payload.get("iat").is_some()
        && !payload.contains_key("nonce")
}

/// Claims that only ID tokens carry (OpenID Connect Core 3.1.3.6 and 3.3.2.11, FAPI's `s_hash`):
/// a provider that marks neither kind still gives its ID tokens away by these.
const ID_TOKEN_CLAIMS: [&str; 3] = ["at_hash", "c_hash", "s_hash"];

/// B2+: a `typ` header of `at+jwt` (RFC 9068), Keycloak's `typ: Bearer` claim, or neither
/// marker. No `nonce` (ID tokens), no `events` (logout tokens). A `token_use` claim (AWS
/// Cognito marks its ID tokens `id`), when present, says `access`.
fn is_access_token(header: &Header, payload: &Map<String, Value>) -> bool {
    let header_says_access = header.typ.as_deref().is_none_or(|typ| {
        ["JWT", "at+jwt", "application/at+jwt"]
            .iter()
            .any(|t| typ.eq_ignore_ascii_case(t))
    });
    let claim_says_access = match payload.get("typ") {
        None => true,
        Some(Value::String(typ)) => typ.eq_ignore_ascii_case("Bearer"),
        Some(_) => false,
    };
    let use_says_access = match payload.get("token_use") {
        None => true,
        Some(Value::String(usage)) => usage.eq_ignore_ascii_case("access"),
        Some(_) => false,
    };
    header_says_access
        && claim_says_access
        && use_says_access
        && !payload.contains_key("nonce")
        && !payload.contains_key("events")
        && !ID_TOKEN_CLAIMS.iter().any(|c| payload.contains_key(*c))
}

/// An ID token: Keycloak's `typ` claim, when present, says `ID`; the header does not name
/// another kind of JWT (`at+jwt`, `logout+jwt`); no `events` (a logout token).
fn is_id_token(header: &Header, payload: &Map<String, Value>) -> bool {
    let header_says_id = header
        .typ
        .as_deref()
        .is_none_or(|typ| typ.eq_ignore_ascii_case("JWT"));
    let claim_says_id = match payload.get("typ") {
        None => true,
        Some(Value::String(typ)) => typ.eq_ignore_ascii_case("ID"),
        Some(_) => false,
    };
    header_says_id && claim_says_id && !payload.contains_key("events")
}

/// Checks a token against the key set and the rules at time `now` (unix seconds).
/// `nonce`, when given, must equal the token's `nonce` claim (ID tokens). This says nothing
/// about what kind of token it is: see [`verify_access`] and [`verify_id_token`].
pub fn verify(
    token: &str,
    keys: &KeySet,
    rules: &TokenRules,
    now: u64,
    nonce: Option<&str>,
) -> Result<Verified, TokenError> {
    verify_as(token, keys, rules, now, nonce, Kind::Any)
}

/// A back-channel logout token (L8): signed by the provider, for `rules` (the issuer, the client
/// as audience), and a logout token by its claims. `exp` is optional; without it the token is
/// taken [`LOGOUT_TOKEN_MAX_AGE`] after its `iat`.
pub fn verify_logout_token(
    token: &str,
    keys: &KeySet,
    rules: &TokenRules,
    now: u64,
) -> Result<Verified, TokenError> {
    verify_as(token, keys, rules, now, None, Kind::Logout)
}

/// [`verify`], and the token must be an ID token (the code exchange, a refresh's new ID token).
pub fn verify_id_token(
    token: &str,
    keys: &KeySet,
    rules: &TokenRules,
    now: u64,
    nonce: Option<&str>,
) -> Result<Verified, TokenError> {
    verify_as(token, keys, rules, now, nonce, Kind::Id)
}

fn verify_as(
    token: &str,
    keys: &KeySet,
    rules: &TokenRules,
    now: u64,
    nonce: Option<&str>,
    kind: Kind,
) -> Result<Verified, TokenError> {
    let header = read_header(token)?;
    let token = match header.alg {
        Alg::ES256 => es256_low_s(token)?,
        _ => std::borrow::Cow::Borrowed(token),
    };
    let token = token.as_ref();
    let candidates: Vec<&Jwk> = match &header.kid {
        Some(kid) => {
            let key = keys.by_kid(kid).ok_or(TokenError::UnknownKey)?;
            if !key.accepts(header.alg) {
                return Err(TokenError::KeyMismatch);
            }
            vec![key]
        }
        // No kid: only the keys that fit the algorithm, as a provider with one key does.
        None => keys.keys.iter().filter(|k| k.accepts(header.alg)).collect(),
    };
    if candidates.is_empty() {
        return Err(TokenError::UnknownKey);
    }
    let mut outcome = Err(TokenError::BadSignature);
    for key in candidates {
        outcome = check_signature(token, header.alg, &key.material);
        if outcome.is_ok() {
            break;
        }
    }
    outcome?;
    let claims = Payload::read(token)?;
    claims.check(rules, now, nonce)?;
    finish(&header, claims, rules, now, kind)
}

/// The order n of P-256's group, big-endian.
const P256_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];
/// ⌊n/2⌋: an `s` above it is "high".
const P256_HALF_ORDER: [u8; 32] = [
    0x7f, 0xff, 0xff, 0xff, 0x80, 0x00, 0x00, 0x00, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xde, 0x73, 0x7d, 0x56, 0xd3, 0x8b, 0xcf, 0x42, 0x79, 0xdc, 0xe5, 0x61, 0x7e, 0x31, 0x92, 0xa8,
];
/// An ES256 signature (r ‖ s, 64 bytes) in unpadded base64url.
const ES256_SIGNATURE_B64_LEN: usize = 86;

/// ES256 signature malleability: when (r, s) verifies, so does (r, n − s), so every ES256 token
/// has a twin that is a different string. Refusing the high-S twin is not an option: Java's
/// (Keycloak's), Go's, Node's and RustCrypto's signers do not normalise, so about half of all
/// genuine tokens have a high S. Instead the token is rewritten to its low-S form before it is
/// checked, and the cache keys on that form: twins are one token. A signature that is not
/// exactly 64 bytes is malformed; r or s outside [1, n − 1] cannot verify.
fn es256_low_s(token: &str) -> Result<std::borrow::Cow<'_, str>, TokenError> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (input, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let signature: [u8; 64] = b64
        .decode(signature)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(TokenError::Malformed)?;
    let (r, s) = signature.split_at(32);
    let in_range = |x: &[u8]| x.iter().any(|b| *b != 0) && x < &P256_ORDER[..];
    if !in_range(r) || !in_range(s) {
        return Err(TokenError::BadSignature);
    }
    if s <= &P256_HALF_ORDER[..] {
        return Ok(std::borrow::Cow::Borrowed(token));
    }
    // n − s, big-endian with a borrow; s < n, so no borrow is left at the end.
    let mut low = signature;
    let mut borrow = 0i16;
    for (out, (n, s)) in low.iter_mut().skip(32).zip(P256_ORDER.iter().zip(s)).rev() {
        let d = i16::from(*n) - i16::from(*s) - borrow;
        borrow = i16::from(d < 0);
        *out = d.rem_euclid(256) as u8;
    }
    Ok(std::borrow::Cow::Owned(format!(
        "{input}.{}",
        b64.encode(low)
    )))
}

/// The form a token is cached under: an ES256 token's low-S form, anything else as it is. Decided
/// by the signature's length (no RSA signature of 2048 bits or more is 64 bytes), so that the
/// warm path reads no header.
fn cache_key(token: &str) -> std::borrow::Cow<'_, str> {
    if es256_shaped(token.as_bytes()) {
        es256_low_s(token).unwrap_or(std::borrow::Cow::Borrowed(token))
    } else {
        std::borrow::Cow::Borrowed(token)
    }
}

/// Whether the token's last part (after its last `.`) is as long as an ES256 signature: the
/// `.` is where that length puts it, and none comes after (no search through the signature).
fn es256_shaped(token: &[u8]) -> bool {
    token
        .len()
        .checked_sub(ES256_SIGNATURE_B64_LEN + 1)
        .and_then(|dot| token.get(dot..))
        .and_then(|tail| tail.split_first())
        .is_some_and(|(first, signature)| *first == b'.' && !signature.contains(&b'.'))
}

/// The signature of a compact JWS over its signing input, with one key. Nothing of the payload
/// is read before this succeeds.
fn check_signature(token: &str, alg: Alg, material: &KeyMaterial) -> Result<(), TokenError> {
    use crate::rsa::{Hash, Padding};
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let scheme = match alg {
        Alg::RS256 => Some((Padding::Pkcs1v15, Hash::Sha256)),
        Alg::RS384 => Some((Padding::Pkcs1v15, Hash::Sha384)),
        Alg::RS512 => Some((Padding::Pkcs1v15, Hash::Sha512)),
        Alg::PS256 => Some((Padding::Pss, Hash::Sha256)),
        Alg::PS384 => Some((Padding::Pss, Hash::Sha384)),
        Alg::PS512 => Some((Padding::Pss, Hash::Sha512)),
        Alg::ES256 => None,
    };
    let (signing_input, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let signature = b64.decode(signature).map_err(|_| TokenError::Malformed)?;
    let valid = match (material, scheme) {
        // Every RSA algorithm through `crate::rsa`; a key it refused (size, exponent) verifies
        // nothing.
        (
            KeyMaterial::Rsa {
                fast: Some(key), ..
            },
            Some((padding, hash)),
        ) => key.verify(padding, hash, signing_input.as_bytes(), &signature),
        // Fuzzing only (`make fuzz`): jwt-simple's general RSA as the reference the fuzz
        // targets compare `crate::rsa` against; never in the module.
        #[cfg(feature = "reference-rsa")]
        (KeyMaterial::Rsa { n, e, fast: None }, Some(_)) => return reference_rsa(token, alg, n, e),
        (KeyMaterial::P256(point), None) => {
            es256_verify(point, signing_input.as_bytes(), &signature)?
        }
        _ => return Err(TokenError::KeyMismatch),
    };
    if valid {
        Ok(())
    } else {
        Err(TokenError::BadSignature)
    }
}

/// ECDSA P-256 with SHA-256 (RFC 7518 §3.4): `signature` is r ‖ s, 32 bytes each, already in its
/// low-S form (see [`es256_low_s`]); `point` is the key's uncompressed SEC1 point.
fn es256_verify(point: &[u8], message: &[u8], signature: &[u8]) -> Result<bool, TokenError> {
    use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
    use p256::ecdsa::{Signature, VerifyingKey};
    let key = VerifyingKey::from_sec1_bytes(point).map_err(|_| TokenError::KeyMismatch)?;
    let Ok(signature) = Signature::from_slice(signature) else {
        return Ok(false);
    };
    // SHA-256 by the crate the rest of the filter hashes with, not a second implementation.
    let digest = hmac_sha256::Hash::hash(message);
    Ok(key.verify_prehash(&digest, &signature).is_ok())
}

/// Fuzzing only: jwt-simple's RSA on the signature alone (its claim checks are made
/// unconditional by a time it cannot refuse), so that only the signature is compared.
#[cfg(feature = "reference-rsa")]
fn reference_rsa(token: &str, alg: Alg, n: &[u8], e: &[u8]) -> Result<(), TokenError> {
    use jwt_simple::prelude::*;
    let far = Duration::from_secs(u64::from(u32::MAX) * 4);
    let options = Some(VerificationOptions {
        accept_future: true,
        time_tolerance: Some(far),
        artificial_time: Some(far),
        max_token_length: Some(MAX_TOKEN_LEN),
        ..Default::default()
    });
    type Any = JWTClaims<NoCustomClaims>;
    let result: Result<Any, jwt_simple::Error> = (|| match alg {
        Alg::RS256 => RS256PublicKey::from_components(n, e)?.verify_token(token, options),
        Alg::RS384 => RS384PublicKey::from_components(n, e)?.verify_token(token, options),
        Alg::RS512 => RS512PublicKey::from_components(n, e)?.verify_token(token, options),
        Alg::PS256 => PS256PublicKey::from_components(n, e)?.verify_token(token, options),
        Alg::PS384 => PS384PublicKey::from_components(n, e)?.verify_token(token, options),
        Alg::PS512 => PS512PublicKey::from_components(n, e)?.verify_token(token, options),
        Alg::ES256 => Err(jwt_simple::JWTError::InvalidPublicKey.into()),
    })();
    match result {
        Ok(_) => Ok(()),
        Err(e) => match e.downcast_ref::<jwt_simple::JWTError>() {
            Some(
                jwt_simple::JWTError::InvalidPublicKey
                | jwt_simple::JWTError::UnsupportedRSAModulus,
            ) => Err(TokenError::KeyMismatch),
            Some(jwt_simple::JWTError::InvalidSignature) | None => Err(TokenError::BadSignature),
            Some(_) => Err(TokenError::Malformed),
        },
    }
}

/// The payload of a token whose signature verified, every name once, and the registered claims
/// read from it with their types (RFC 7519 §4.1): a claim of the wrong type is a malformed token.
struct Payload {
    raw: Map<String, Value>,
    issued_at: Option<u64>,
    not_before: Option<u64>,
    expires_at: Option<u64>,
    audiences: Vec<String>,
}

impl Payload {
    fn read(token: &str) -> Result<Payload, TokenError> {
        let raw = token
            .split('.')
            .nth(1)
            .and_then(decode_object)
            .ok_or(TokenError::Malformed)?;
        // A null reads as an absent claim (what the type checks below see), though the name
        // still counts where its presence marks a kind of token (`nonce`).
        for name in ["iss", "sub", "jti", "nonce"] {
            if raw
                .get(name)
                .is_some_and(|v| !v.is_string() && !v.is_null())
            {
                return Err(TokenError::Malformed);
            }
        }
        let audiences = match raw.get("aud") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => {
                let mut list: Vec<String> = Vec::with_capacity(items.len());
                for item in items {
                    let item = item.as_str().ok_or(TokenError::Malformed)?;
                    if !list.iter().any(|a| a == item) {
                        list.push(item.to_string());
                    }
                }
                list
            }
            Some(_) => return Err(TokenError::Malformed),
        };
        Ok(Payload {
            issued_at: time_claim(&raw, "iat")?,
            not_before: time_claim(&raw, "nbf")?,
            expires_at: time_claim(&raw, "exp")?,
            audiences,
            raw,
        })
    }

    /// `iat` and `nbf` not in the future and `exp` not past, with the skew; the issuer; the
    /// nonce when one is required. (What kind of token it is, and the audience, come after.)
    fn check(&self, rules: &TokenRules, now: u64, nonce: Option<&str>) -> Result<(), TokenError> {
        let later = now.saturating_add(rules.clock_skew_seconds);
        if self.issued_at.is_some_and(|t| t > later) {
            return Err(TokenError::IssuedInFuture);
        }
        if self.not_before.is_some_and(|t| t > later) {
            return Err(TokenError::NotYetValid);
        }
        if self
            .expires_at
            .is_some_and(|t| !before_expiry(now, t, rules.clock_skew_seconds))
        {
            return Err(TokenError::Expired);
        }
        if self.raw.get("iss").and_then(Value::as_str) != Some(rules.issuer.as_str()) {
            return Err(TokenError::WrongIssuer);
        }
        if let Some(required) = nonce {
            if self.raw.get("nonce").and_then(Value::as_str) != Some(required) {
                return Err(TokenError::WrongNonce);
            }
        }
        Ok(())
    }
}

/// A NumericDate claim: a whole number of seconds, not negative and below 2^32 (a time that
/// wraps or that no clock reaches is a malformed token, not one that never expires).
fn time_claim(map: &Map<String, Value>, name: &str) -> Result<Option<u64>, TokenError> {
    match map.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|t| *t < u64::from(u32::MAX))
            .map(Some)
            .ok_or(TokenError::Malformed),
    }
}

/// B2+: `exp` is exclusive (RFC 7519 §4.1.4), so a token is valid only while
/// `now < exp + skew` (jwt-simple, which checked tokens before, accepted `now == exp + skew`).
fn before_expiry(now: u64, expires_at: u64, skew: u64) -> bool {
    now < expires_at.saturating_add(skew)
}

/// The client a token was issued to (B2+): `azp` when present (OpenID Connect), else RFC 9068's
/// `client_id`, else the audience when it is the only one (OpenID Connect Core §2). A present but
/// malformed `azp` names no one.
fn authorized_party<'a>(
    custom: &'a Map<String, Value>,
    audiences: &'a [String],
) -> Option<&'a str> {
    match custom.get("azp") {
        Some(azp) => azp.as_str(),
        None => match custom.get("client_id") {
            Some(client) => client.as_str(),
            None => match audiences {
                [only] => Some(only.as_str()),
                _ => None,
            },
        },
    }
}

/// The audience rules (B2, B2+): `audiences`, `authorized_parties`, and in login mode the client
/// as the audience or the authorized party.
fn audience_rules(
    audiences: &[String],
    custom: &Map<String, Value>,
    rules: &TokenRules,
) -> Result<(), TokenError> {
    let azp = authorized_party(custom, audiences);
    if !rules.audiences.is_empty() && !audiences.iter().any(|a| rules.audiences.contains(a)) {
        return Err(TokenError::WrongAudience);
    }
    if !rules.authorized_parties.is_empty()
        && !azp.is_some_and(|p| rules.authorized_parties.iter().any(|a| a == p))
    {
        return Err(TokenError::WrongAuthorizedParty);
    }
    if let Some(client) = &rules.client_id_as_audience {
        if !audiences.iter().any(|a| a == client) && azp != Some(client.as_str()) {
            return Err(TokenError::WrongAudience);
        }
    }
    Ok(())
}

/// An introspection answer's claims (V3), judged by the rules of a local token: `iss`, `exp`
/// (required, exclusive), `nbf`/`iat` with the skew, the audience rules, and the access-token
/// marker (a `typ` other than Bearer is not an access token). Returns `exp`.
pub fn check_introspected(
    claims: &Map<String, Value>,
    rules: &TokenRules,
    now: u64,
) -> Result<u64, TokenError> {
    if claims.get("iss").and_then(Value::as_str) != Some(rules.issuer.as_str()) {
        return Err(TokenError::WrongIssuer);
    }
    let time = |name: &str| time_claim(claims, name);
    let exp = time("exp")?.ok_or(TokenError::MissingExpiry)?;
    if !before_expiry(now, exp, rules.clock_skew_seconds) {
        return Err(TokenError::Expired);
    }
    let later = now.saturating_add(rules.clock_skew_seconds);
    if time("nbf")?.is_some_and(|t| t > later) {
        return Err(TokenError::NotYetValid);
    }
    if time("iat")?.is_some_and(|t| t > later) {
        return Err(TokenError::IssuedInFuture);
    }
    if claims
        .get("typ")
        .is_some_and(|t| !t.as_str().is_some_and(|t| t.eq_ignore_ascii_case("bearer")))
    {
        return Err(TokenError::NotAnAccessToken);
    }
    let audiences: Vec<String> = match claims.get("aud") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(_) => return Err(TokenError::Malformed),
    };
    audience_rules(&audiences, claims, rules)?;
    Ok(exp)
}

fn finish(
    header: &Header,
    claims: Payload,
    rules: &TokenRules,
    now: u64,
    kind: Kind,
) -> Result<Verified, TokenError> {
    let raw = &claims.raw;
    match kind {
        Kind::Access if !is_access_token(header, raw) => return Err(TokenError::NotAnAccessToken),
        Kind::Id if !is_id_token(header, raw) => return Err(TokenError::NotAnIdToken),
        Kind::Logout if !is_logout_token(header, raw) => return Err(TokenError::NotALogoutToken),
        _ => {}
    }
    let expires_at = match (claims.expires_at, &kind, claims.issued_at) {
        (Some(exp), _, _) => exp,
        (None, Kind::Logout, Some(iat)) => iat.saturating_add(LOGOUT_TOKEN_MAX_AGE),
        _ => return Err(TokenError::MissingExpiry),
    };
    if !before_expiry(now, expires_at, rules.clock_skew_seconds) {
        return Err(TokenError::Expired);
    }
    audience_rules(&claims.audiences, raw, rules)?;

    let Payload {
        mut raw, audiences, ..
    } = claims;
    raw.insert("exp".to_string(), Value::from(expires_at));
    // One audience reads as a string, several as a list without repeats.
    let aud = match audiences.len() {
        0 => None,
        1 => audiences.into_iter().next().map(Value::String),
        _ => Some(Value::from(audiences)),
    };
    match aud {
        Some(aud) => raw.insert("aud".to_string(), aud),
        None => raw.remove("aud"),
    };
    Ok(Verified {
        claims: raw,
        expires_at,
        claim_headers: std::cell::OnceCell::new(),
    })
}

/// Verified access tokens, so that a token is checked once, not on every request (issue: the
/// warm path). Only successes are kept, each until its `exp` plus the skew; the whole cache is
/// dropped when the key set changes, so a removed key stops working at once. Bounded: when full,
/// expired entries go first, then everything.
#[derive(Default)]
pub struct Cache {
    /// By the token's [`FastHasher`] hash, each with its whole token, which a hit must equal
    /// (`web::same_bytes`: wasm's `memcmp` goes byte by byte). Two tokens of one hash share the
    /// slot: the later one verified takes it.
    entries: std::collections::HashMap<u64, CacheEntry, HashIsKey>,
    keys_version: u64,
}

struct CacheEntry {
    token: std::rc::Rc<str>,
    verified: std::rc::Rc<Verified>,
}

/// For keys that are already hashes ([`Cache`]'s): the key is the hash.
#[derive(Debug, Default, Clone, Copy)]
pub struct HashIsKey;

impl std::hash::BuildHasher for HashIsKey {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

#[derive(Debug, Default)]
pub struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut h = FastHasher(self.0);
        h.write(bytes);
        self.0 = h.0;
    }
    fn write_u64(&mut self, key: u64) {
        self.0 = key;
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A token's [`FastHasher`] hash.
fn fast_hash(token: &[u8]) -> u64 {
    use std::hash::Hasher as _;
    let mut h = FastHasher(0);
    h.write(token);
    h.finish()
}

/// The number of entries only: the keys are tokens.
impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cache({} tokens)", self.entries.len())
    }
}

/// A multiply-rotate hash of a token's length and last 64 bytes, 8 bytes at a time: hashing a
/// whole 1–2 KB token with SipHash on every request cost more than the rest of the warm path.
/// Flooding is not a concern: only tokens that verified are stored, and a lookup compares the
/// whole token.
#[derive(Debug, Default, Clone, Copy)]
pub struct FastHash;

impl std::hash::BuildHasher for FastHash {
    type Hasher = FastHasher;
    fn build_hasher(&self) -> FastHasher {
        FastHasher(0)
    }
}

#[derive(Debug, Default)]
pub struct FastHasher(u64);

impl std::hash::Hasher for FastHasher {
    /// The length and the last 64 bytes only: a token ends with its signature, which tells
    /// tokens apart (and a lookup compares the whole token anyway).
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        self.0 = (self.0.rotate_left(5) ^ bytes.len() as u64).wrapping_mul(K);
        let tail = bytes.get(bytes.len().saturating_sub(64)..).unwrap_or(bytes);
        // Whole arrays: each word one load in wasm (see `web::find_byte`).
        let (words, rest) = tail.as_chunks::<8>();
        for word in words {
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(*word)).wrapping_mul(K);
        }
        for &b in rest {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Entries kept per VM; a Keycloak access token is 1–2 KB, so this is a few MB at most.
pub const CACHE_CAPACITY: usize = 1024;

/// The per-VM cache and the key-set version it belongs to, as decisions receive them.
pub type CacheRef<'a> = Option<(&'a std::cell::RefCell<Cache>, u64)>;

/// Checks an access token (B2+: an access token and nothing else), through the cache when there
/// is one.
pub fn verify_access(
    token: &str,
    keys: &KeySet,
    cache: CacheRef,
    rules: &TokenRules,
    now: u64,
) -> Result<std::rc::Rc<Verified>, TokenError> {
    match cache {
        Some((cache, version)) => cache.borrow_mut().verify(token, keys, version, rules, now),
        None => verify_as(token, keys, rules, now, None, Kind::Access).map(std::rc::Rc::new),
    }
}

/// An access token verified before under the same key set and not expired, found by its bytes
/// (no UTF-8 check: an entry's token is a `str`, so bytes equal to it are one). `None`: it is to
/// be verified ([`verify_access`]).
pub fn cached_access(
    token: &[u8],
    cache: CacheRef,
    rules: &TokenRules,
    now: u64,
) -> Option<std::rc::Rc<Verified>> {
    cached_access_text(token, cache, rules, now).map(|(_, verified)| verified)
}

/// [`cached_access`], with the cached token: the same bytes as `token`, as a `str` (login mode
/// forwards it as text; no second UTF-8 check of 1–2 KB).
pub fn cached_access_text(
    token: &[u8],
    cache: CacheRef,
    rules: &TokenRules,
    now: u64,
) -> Option<(std::rc::Rc<str>, std::rc::Rc<Verified>)> {
    let (cache, version) = cache?;
    let cache = cache.borrow();
    // An ES256 token is cached under its low-S form: verify_access finds it.
    if version != cache.keys_version || es256_shaped(token) {
        return None;
    }
    let entry = cache.entries.get(&fast_hash(token))?;
    (crate::web::same_bytes(entry.token.as_bytes(), token)
        && before_expiry(now, entry.verified.expires_at, rules.clock_skew_seconds))
    .then(|| (entry.token.clone(), entry.verified.clone()))
}

impl Cache {
    /// Verifies `token` as an access token, or finds it verified before under the same key set.
    pub fn verify(
        &mut self,
        token: &str,
        keys: &KeySet,
        keys_version: u64,
        rules: &TokenRules,
        now: u64,
    ) -> Result<std::rc::Rc<Verified>, TokenError> {
        if keys_version != self.keys_version {
            self.entries.clear();
            self.keys_version = keys_version;
        }
        let live = |v: &Verified| before_expiry(now, v.expires_at, rules.clock_skew_seconds);
        let key = cache_key(token);
        let hash = fast_hash(key.as_bytes());
        if let Some(hit) = self.entries.get(&hash) {
            if crate::web::same_bytes(hit.token.as_bytes(), key.as_bytes()) {
                if live(&hit.verified) {
                    return Ok(hit.verified.clone());
                }
                self.entries.remove(&hash);
            }
        }
        let verified = std::rc::Rc::new(verify_as(token, keys, rules, now, None, Kind::Access)?);
        if self.entries.len() >= CACHE_CAPACITY {
            self.entries.retain(|_, e| live(&e.verified));
            if self.entries.len() >= CACHE_CAPACITY {
                self.entries.clear();
            }
        }
        self.entries.insert(
            hash,
            CacheEntry {
                token: key.into(),
                verified: verified.clone(),
            },
        );
        Ok(verified)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The header value for a claim: strings as they are, numbers and booleans printed, a list of
/// those joined with commas; `name` may be a dotted path (`realm_access.roles`). `None` when the
/// claim is absent, is an object, or would not be a valid header value.
pub fn claim_header_value(claims: &Map<String, Value>, name: &str) -> Option<String> {
    let value = match claims.get(name) {
        Some(v) => v,
        None => {
            let mut parts = name.split('.');
            let mut current = claims.get(parts.next()?)?;
            for part in parts {
                current = current.get(part)?;
            }
            current
        }
    };
    let text = match value {
        Value::Array(items) => {
            let parts: Option<Vec<String>> = items.iter().map(scalar).collect();
            parts?.join(",")
        }
        other => scalar(other)?,
    };
    is_header_value(&text).then_some(text)
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.as_str().to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// RFC 9110 field-value: visible characters, spaces and tabs inside, no control characters, no
/// surrounding whitespace; bounded in size.
pub fn is_header_value(s: &str) -> bool {
    s.len() <= 8192
        && !s.starts_with([' ', '\t'])
        && !s.ends_with([' ', '\t'])
        && s.chars().all(|c| c == '\t' || !c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;
    use jwt_simple::prelude::*;
    use serde_json::{json, Map, Value};

    fn check(token: &str) -> Result<Verified, TokenError> {
        verify(token, &keyset(), &rules(), NOW, None)
    }

    fn with(edit: impl FnOnce(&mut JWTClaims<Map<String, Value>>)) -> String {
        let mut c = claims(keycloak_claims());
        edit(&mut c);
        sign_rsa(c)
    }

    #[test]
    fn accepts_a_keycloak_access_token() {
        let v = check(&valid_token()).unwrap();
        assert_eq!(
            v.claims.get("preferred_username").and_then(|c| c.as_str()),
            Some("alice")
        );
        assert_eq!(v.claims.get("iss").and_then(|c| c.as_str()), Some(ISSUER));
        assert_eq!(
            v.claims.get("sub").and_then(|c| c.as_str()),
            Some("alice-id")
        );
        assert_eq!(v.expires_at, NOW + 290);
    }

    #[test]
    fn refuses_expired_tokens_beyond_the_skew() {
        let t = with(|c| c.expires_at = Some(UnixTimeStamp::from_secs(NOW - 31)));
        assert_eq!(check(&t), Err(TokenError::Expired));
        let t = with(|c| c.expires_at = Some(UnixTimeStamp::from_secs(NOW - 29)));
        assert!(check(&t).is_ok(), "within the 30 s skew");
    }

    #[test]
    fn exp_is_exclusive_in_every_path() {
        // Valid while now < exp + skew: at exactly exp + skew the token is expired.
        let exp = NOW + 290;
        let boundary = exp + 30;
        let t = valid_token();
        assert!(verify(&t, &keyset(), &rules(), boundary - 1, None).is_ok());
        assert_eq!(
            verify(&t, &keyset(), &rules(), boundary, None).map(|_| ()),
            Err(TokenError::Expired),
            "RS256 fast path"
        );
        // jwt-simple's path (ES256 here) accepts now == exp + tolerance on its own.
        let es = ec().sign(claims(keycloak_claims())).unwrap();
        assert!(verify(&es, &keyset(), &rules(), boundary - 1, None).is_ok());
        assert_eq!(
            verify(&es, &keyset(), &rules(), boundary, None).map(|_| ()),
            Err(TokenError::Expired),
            "jwt-simple path"
        );
        // A cache hit: verified a second before, then asked again at the boundary.
        let mut cache = Cache::default();
        let keys = keyset();
        assert!(cache.verify(&t, &keys, 1, &rules(), boundary - 1).is_ok());
        assert_eq!(
            cache
                .verify(&t, &KeySet::default(), 1, &rules(), boundary)
                .map(|_| ()),
            Err(TokenError::UnknownKey),
            "the entry is dead at exp + skew, so the (empty) key set is consulted"
        );
        assert!(cache.verify(&t, &keys, 1, &rules(), boundary - 1).is_ok());
        assert_eq!(
            cache.verify(&t, &keys, 1, &rules(), boundary).map(|_| ()),
            Err(TokenError::Expired)
        );
        assert!(cache.is_empty());
        // And with no skew at all: valid at exp - 1, expired at exp.
        let mut strict = rules();
        strict.clock_skew_seconds = 0;
        assert!(verify(&t, &keyset(), &strict, exp - 1, None).is_ok());
        assert_eq!(
            verify(&t, &keyset(), &strict, exp, None).map(|_| ()),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn refuses_tokens_from_the_future() {
        let t = with(|c| c.invalid_before = Some(UnixTimeStamp::from_secs(NOW + 31)));
        assert_eq!(check(&t), Err(TokenError::NotYetValid));
        let t = with(|c| c.issued_at = Some(UnixTimeStamp::from_secs(NOW + 31)));
        assert_eq!(check(&t), Err(TokenError::IssuedInFuture));
    }

    #[test]
    fn negative_or_absurd_times_are_refused() {
        for field in ["exp", "nbf", "iat"] {
            for bad in [json!(-1), json!(-1_000_000), json!(1u64 << 41)] {
                // The library's claim types cannot hold -1: leave the typed field out and
                // put the raw value among the custom claims, which serialise flat.
                let mut c = claims(keycloak_claims());
                match field {
                    "exp" => c.expires_at = None,
                    "nbf" => c.invalid_before = None,
                    _ => c.issued_at = None,
                }
                c.custom.insert(field.into(), bad.clone());
                let t = sign_rsa(c);
                assert!(check(&t).is_err(), "{field}={bad}");
            }
        }
    }

    #[test]
    fn requires_an_expiry() {
        let t = with(|c| c.expires_at = None);
        assert_eq!(check(&t), Err(TokenError::MissingExpiry));
    }

    #[test]
    fn refuses_a_wrong_or_missing_issuer() {
        let t = with(|c| c.issuer = Some("https://evil.example.com/realms/dev".into()));
        assert_eq!(check(&t), Err(TokenError::WrongIssuer));
        let t = with(|c| c.issuer = None);
        assert_eq!(check(&t), Err(TokenError::WrongIssuer));
    }

    #[test]
    fn checks_authorized_party_and_audience() {
        let t = with(|c| {
            c.custom.insert("azp".into(), json!("someone-else"));
        });
        assert_eq!(check(&t), Err(TokenError::WrongAuthorizedParty));
        let t = with(|c| {
            c.custom.remove("azp");
        });
        assert_eq!(check(&t), Err(TokenError::WrongAuthorizedParty));

        let mut r = rules();
        r.authorized_parties.clear();
        r.audiences = vec!["details".into()];
        assert_eq!(
            verify(&valid_token(), &keyset(), &r, NOW, None).map(|_| ()),
            Err(TokenError::WrongAudience)
        );
        r.audiences = vec!["account".into()];
        assert!(verify(&valid_token(), &keyset(), &r, NOW, None).is_ok());
    }

    #[test]
    fn the_authorized_party_is_azp_else_client_id_else_the_only_audience() {
        // RFC 9068 (glewlwyd and others): `client_id`, no `azp`.
        let t = with(|c| {
            c.custom.remove("azp");
            c.custom.insert("client_id".into(), json!("productpage"));
        });
        assert!(check(&t).is_ok());
        // `azp` decides when present, whatever `client_id` says.
        let t = with(|c| {
            c.custom.insert("azp".into(), json!("someone-else"));
            c.custom.insert("client_id".into(), json!("productpage"));
        });
        assert_eq!(check(&t), Err(TokenError::WrongAuthorizedParty));
        let t = with(|c| {
            c.custom.insert("azp".into(), json!(7));
        });
        assert_eq!(check(&t), Err(TokenError::WrongAuthorizedParty));
        // No azp, no client_id: the sole audience is the party; several audiences name no one.
        let t = with(|c| {
            c.custom.remove("azp");
            c.audiences = Some(Audiences::AsString("productpage".into()));
        });
        assert!(check(&t).is_ok());
        let t = with(|c| {
            c.custom.remove("azp");
            c.audiences = Some(Audiences::AsSet(
                ["productpage".to_string(), "other".to_string()].into(),
            ));
        });
        assert_eq!(check(&t), Err(TokenError::WrongAuthorizedParty));
    }

    #[test]
    fn login_mode_accepts_client_as_aud_or_azp() {
        let mut r = rules();
        r.authorized_parties.clear();
        r.client_id_as_audience = Some("productpage".into());
        assert!(
            verify(&valid_token(), &keyset(), &r, NOW, None).is_ok(),
            "azp"
        );
        let t = with(|c| {
            c.custom.remove("azp");
            c.audiences = Some(Audiences::AsString("productpage".into()));
        });
        assert!(verify(&t, &keyset(), &r, NOW, None).is_ok(), "aud");
        let t = with(|c| {
            c.custom.insert("azp".into(), json!("other"));
        });
        assert_eq!(
            verify(&t, &keyset(), &r, NOW, None).map(|_| ()),
            Err(TokenError::WrongAudience)
        );
    }

    #[test]
    fn refuses_alg_none() {
        let header = json!({"alg": "none", "typ": "JWT", "kid": "rsa-1"});
        let payload = serde_json::to_value(claims(keycloak_claims())).unwrap();
        for sig in [&b""[..], b"x"] {
            let t = raw_token(&header, &payload, sig);
            assert_eq!(check(&t).map(|_| ()), Err(TokenError::AlgorithmNotAllowed));
        }
    }

    #[test]
    fn refuses_hmac_signed_with_the_public_key() {
        let pem = rsa().public_key().to_pem().unwrap();
        let hs = HS256Key::from_bytes(pem.as_bytes()).with_key_id("rsa-1");
        let t = hs.authenticate(claims(keycloak_claims())).unwrap();
        assert_eq!(check(&t).map(|_| ()), Err(TokenError::AlgorithmNotAllowed));
    }

    #[test]
    fn refuses_an_unknown_kid_and_a_key_of_another_type() {
        let other = other_rsa().clone().with_key_id("rotated-2");
        let t = other.sign(claims(keycloak_claims())).unwrap();
        assert_eq!(check(&t).map(|_| ()), Err(TokenError::UnknownKey));
        // ES256 token naming the RSA key's kid.
        let ec = ES256KeyPair::from_bytes(&ec().to_bytes())
            .unwrap()
            .with_key_id("rsa-1");
        let t = ec.sign(claims(keycloak_claims())).unwrap();
        assert_eq!(check(&t).map(|_| ()), Err(TokenError::KeyMismatch));
    }

    #[test]
    fn every_rsa_algorithm_verifies_against_a_key_published_for_it() {
        /// A token signed with `key` (DER) by `alg`, naming `kid`.
        fn signed(alg: &str, key: &[u8], kid: &str) -> String {
            let c = || claims(keycloak_claims());
            match alg {
                "RS384" => RS384KeyPair::from_der(key)
                    .unwrap()
                    .with_key_id(kid)
                    .sign(c()),
                "RS512" => RS512KeyPair::from_der(key)
                    .unwrap()
                    .with_key_id(kid)
                    .sign(c()),
                "PS256" => PS256KeyPair::from_der(key)
                    .unwrap()
                    .with_key_id(kid)
                    .sign(c()),
                "PS384" => PS384KeyPair::from_der(key)
                    .unwrap()
                    .with_key_id(kid)
                    .sign(c()),
                "PS512" => PS512KeyPair::from_der(key)
                    .unwrap()
                    .with_key_id(kid)
                    .sign(c()),
                other => panic!("{other}"),
            }
            .unwrap()
        }
        let algs = ["RS384", "RS512", "PS256", "PS384", "PS512"];
        let der = rsa().to_der().unwrap();
        let other = other_rsa().to_der().unwrap();
        for (i, alg) in algs.iter().enumerate() {
            let mut jwk = rsa_jwk(rsa(), alg);
            jwk["alg"] = json!(alg);
            let set = crate::jwks::KeySet::parse(json!({ "keys": [jwk] }).to_string().as_bytes())
                .unwrap();
            let v = verify(&signed(alg, &der, alg), &set, &rules(), NOW, None);
            assert!(v.is_ok(), "{alg}: {:?}", v.err());
            // Signed with another key: refused.
            let forged = signed(alg, &other, alg);
            assert!(verify(&forged, &set, &rules(), NOW, None).is_err(), "{alg}");
            // A token of another algorithm naming this key: refused before any check.
            let other_alg = algs[(i + 1) % algs.len()];
            assert_eq!(
                verify(&signed(other_alg, &der, alg), &set, &rules(), NOW, None).map(|_| ()),
                Err(TokenError::KeyMismatch),
                "{other_alg} token, {alg} key"
            );
        }
    }

    #[test]
    fn refuses_the_encryption_key_even_by_kid() {
        let enc = other_rsa().clone().with_key_id("enc-1");
        let t = enc.sign(claims(keycloak_claims())).unwrap();
        assert_eq!(check(&t).map(|_| ()), Err(TokenError::UnknownKey));
    }

    #[test]
    fn refuses_a_tampered_payload_and_signature() {
        let t = valid_token();
        let parts: Vec<&str> = t.split('.').collect();
        let mut payload = serde_json::to_value(claims(keycloak_claims())).unwrap();
        payload["preferred_username"] = json!("admin");
        let forged_payload = raw_token(&json!({}), &payload, b"")
            .split('.')
            .nth(1)
            .unwrap()
            .to_string();
        let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        assert_eq!(check(&forged).map(|_| ()), Err(TokenError::BadSignature));

        let mut sig = parts[2].to_string();
        let last = sig.pop().unwrap();
        sig.push(if last == 'A' { 'B' } else { 'A' });
        let t2 = format!("{}.{}.{}", parts[0], parts[1], sig);
        assert!(check(&t2).is_err());
    }

    #[test]
    fn accepts_es256() {
        let t = ec().sign(claims(keycloak_claims())).unwrap();
        assert_eq!(
            check(&t)
                .unwrap()
                .claims
                .get("given_name")
                .and_then(|c| c.as_str()),
            Some("Alice")
        );
    }

    #[test]
    fn a_token_without_kid_is_tried_against_fitting_keys() {
        let key = RS256KeyPair::from_pem(&rsa().to_pem().unwrap()).unwrap();
        let t = key.sign(claims(keycloak_claims())).unwrap();
        assert!(read_header(&t).unwrap().kid.is_none());
        assert!(check(&t).is_ok());
    }

    #[test]
    fn checks_the_nonce_when_asked() {
        let t = with(|c| c.nonce = Some("n-1".into()));
        assert!(verify(&t, &keyset(), &rules(), NOW, Some("n-1")).is_ok());
        assert_eq!(
            verify(&t, &keyset(), &rules(), NOW, Some("n-2")).map(|_| ()),
            Err(TokenError::WrongNonce)
        );
        assert_eq!(
            verify(&valid_token(), &keyset(), &rules(), NOW, Some("n-1")).map(|_| ()),
            Err(TokenError::WrongNonce)
        );
    }

    /// A token with this header and Keycloak's access-token claims, signed with the EC key
    /// (`kid` ec-1 added unless the header names one).
    fn signed_with_header(header: Value) -> String {
        let mut header = header;
        if header.get("kid").is_none() {
            header["kid"] = json!("ec-1");
        }
        let payload = serde_json::to_value(claims(keycloak_claims())).unwrap();
        sign_raw_es256(&header.to_string(), &payload.to_string())
    }

    #[test]
    fn a_header_of_our_own_making_verifies() {
        let t = signed_with_header(json!({"alg": "ES256", "typ": "JWT"}));
        assert!(check(&t).is_ok());
        assert_eq!(read_header(&t).unwrap().typ.as_deref(), Some("JWT"));
    }

    #[test]
    fn refuses_jwe_parameters_in_a_signed_token() {
        for extra in [
            json!({"enc": "A256GCM"}),
            json!({"zip": "DEF"}),
            json!({"enc": null}),
            json!({"crit": ["exp"], "exp": 1}),
            json!({"crit": "b64"}),
        ] {
            let mut header = json!({"alg": "ES256", "typ": "JWT"});
            for (k, v) in extra.as_object().unwrap() {
                header[k] = v.clone();
            }
            let t = signed_with_header(header);
            assert_eq!(check(&t).map(|_| ()), Err(TokenError::Malformed), "{extra}");
        }
        let t = signed_with_header(json!({"alg": "ES256", "crit": []}));
        assert!(check(&t).is_ok(), "an empty crit names no extension");
    }

    #[test]
    fn refuses_duplicate_names_in_the_header() {
        // serde_json keeps the last name; a parser that keeps the first sees another token.
        let payload = serde_json::to_value(claims(keycloak_claims()))
            .unwrap()
            .to_string();
        for header in [
            r#"{"alg":"none","alg":"ES256","kid":"ec-1"}"#,
            r#"{"alg":"ES256","kid":"other","kid":"ec-1"}"#,
            r#"{"alg":"ES256","kid":"ec-1","typ":"logout+jwt","typ":"JWT"}"#,
        ] {
            let t = sign_raw_es256(header, &payload);
            assert_eq!(
                check(&t).map(|_| ()),
                Err(TokenError::Malformed),
                "{header}"
            );
        }
        let t = sign_raw_es256(r#"{"alg":"ES256","kid":"ec-1"}"#, &payload);
        assert!(check(&t).is_ok());
    }

    /// Checks as an access token: without a cache, and through a fresh one (which must not
    /// keep a refusal).
    fn access(token: &str, r: &TokenRules) -> Result<(), TokenError> {
        let keys = keyset();
        let plain = verify_access(token, &keys, None, r, NOW).map(|_| ());
        let cache = std::cell::RefCell::new(Cache::default());
        let cached = verify_access(token, &keys, Some((&cache, 1)), r, NOW).map(|_| ());
        assert_eq!(plain, cached, "the cache decides as the plain check does");
        assert_eq!(cache.borrow().len(), usize::from(plain.is_ok()));
        plain
    }

    /// Login mode's rules: the client as `aud` or `azp`, which an ID token satisfies too.
    fn login_rules() -> TokenRules {
        let mut r = rules();
        r.authorized_parties.clear();
        r.client_id_as_audience = Some("productpage".into());
        r
    }

    /// An ID token as Keycloak issues it to productpage.
    fn keycloak_id_token(edit: impl FnOnce(&mut Map<String, Value>)) -> String {
        let mut c = claims(keycloak_claims());
        c.custom.insert("typ".into(), json!("ID"));
        c.custom.insert("at_hash".into(), json!("x2r4mDq7Nq0l2A"));
        c.audiences = Some(Audiences::AsString("productpage".into()));
        c.nonce = Some("n-1".into());
        edit(&mut c.custom);
        sign_rsa(c)
    }

    fn payload_with(edit: impl FnOnce(&mut Map<String, Value>)) -> String {
        let mut payload = match serde_json::to_value(claims(keycloak_claims())).unwrap() {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        edit(&mut payload);
        Value::Object(payload).to_string()
    }

    #[test]
    fn access_tokens_are_accepted_with_either_marker_or_none() {
        for r in [rules(), login_rules()] {
            assert_eq!(access(&valid_token(), &r), Ok(()), "typ: Bearer");
            let t = with(|c| {
                c.custom.insert("typ".into(), json!("bearer"));
            });
            assert_eq!(access(&t, &r), Ok(()), "any case");
            let t = with(|c| {
                c.custom.remove("typ");
            });
            assert_eq!(access(&t, &r), Ok(()), "no marker");
            for typ in ["at+jwt", "AT+JWT", "application/at+jwt", "JWT", "jwt"] {
                let t = signed_with_header(json!({"alg": "ES256", "typ": typ}));
                assert_eq!(access(&t, &r), Ok(()), "{typ}");
            }
            let t = signed_with_header(json!({"alg": "ES256"}));
            assert_eq!(access(&t, &r), Ok(()), "no typ header");
        }
    }

    #[test]
    fn an_id_token_is_not_an_access_token() {
        let id = keycloak_id_token(|_| {});
        // Everything else holds: the plain check takes it.
        assert!(verify(&id, &keyset(), &login_rules(), NOW, Some("n-1")).is_ok());
        for r in [rules(), login_rules()] {
            assert_eq!(access(&id, &r), Err(TokenError::NotAnAccessToken));
            // Each marker alone is enough.
            let t = keycloak_id_token(|c| {
                c.remove("at_hash");
            });
            assert_eq!(access(&t, &r), Err(TokenError::NotAnAccessToken), "typ ID");
            let t = with(|c| c.nonce = Some("n-1".into()));
            assert_eq!(access(&t, &r), Err(TokenError::NotAnAccessToken), "nonce");
            let t = with(|c| {
                c.custom.remove("typ");
                c.custom.insert("at_hash".into(), json!("x2r4mDq7Nq0l2A"));
            });
            assert_eq!(access(&t, &r), Err(TokenError::NotAnAccessToken), "at_hash");
            // Cognito's marker.
            let t = with(|c| {
                c.custom.remove("typ");
                c.custom.insert("token_use".into(), json!("id"));
            });
            assert_eq!(
                access(&t, &r),
                Err(TokenError::NotAnAccessToken),
                "token_use"
            );
            let t = with(|c| {
                c.custom.remove("typ");
                c.custom.insert("token_use".into(), json!("access"));
            });
            assert_eq!(access(&t, &r), Ok(()), "token_use access");
            // A nonce the typed claims drop (null) still counts.
            let t = sign_raw_es256(
                r#"{"alg":"ES256","kid":"ec-1"}"#,
                &payload_with(|p| {
                    p.insert("nonce".into(), Value::Null);
                }),
            );
            assert_eq!(
                access(&t, &r),
                Err(TokenError::NotAnAccessToken),
                "nonce null"
            );
        }
    }

    #[test]
    fn refresh_offline_and_logout_tokens_are_not_access_tokens() {
        for typ in [
            json!("Refresh"),
            json!("Offline"),
            json!("Logout"),
            json!("ID"),
            json!("id"),
            json!("Serialized-ID"),
            json!("DPoP"),
            json!(""),
            json!(null),
            json!(1),
            json!(["Bearer"]),
        ] {
            let t = with(|c| {
                c.custom.insert("typ".into(), typ.clone());
            });
            assert_eq!(
                access(&t, &rules()),
                Err(TokenError::NotAnAccessToken),
                "{typ}"
            );
        }
        // A back-channel logout token: `events`, and no typ claim at all.
        let t = with(|c| {
            c.custom.remove("typ");
            c.custom.insert(
                "events".into(),
                json!({"http://schemas.openid.net/event/backchannel-logout": {}}),
            );
            c.custom.insert("sid".into(), json!("s-1"));
        });
        assert_eq!(access(&t, &rules()), Err(TokenError::NotAnAccessToken));
        // Header types of other JWTs, even with an access token's claims.
        for typ in [
            "logout+jwt",
            "secevent+jwt",
            "dpop+jwt",
            "token-introspection+jwt",
        ] {
            let t = signed_with_header(json!({"alg": "ES256", "typ": typ}));
            assert_eq!(
                access(&t, &rules()),
                Err(TokenError::NotAnAccessToken),
                "{typ}"
            );
        }
        // Both markers present and disagreeing.
        let t = sign_raw_es256(
            r#"{"alg":"ES256","kid":"ec-1","typ":"at+jwt"}"#,
            &payload_with(|p| {
                p.insert("typ".into(), json!("ID"));
            }),
        );
        assert_eq!(access(&t, &rules()), Err(TokenError::NotAnAccessToken));
    }

    #[test]
    fn refuses_duplicate_names_in_the_payload() {
        // serde_json would read the last typ (Bearer); a parser that keeps the first sees ID.
        let payload = payload_with(|p| {
            p.remove("typ");
        });
        let payload = format!(r#"{{"typ":"ID",{}"#, payload.trim_start_matches('{'));
        let payload = format!(r#"{},"typ":"Bearer"}}"#, payload.trim_end_matches('}'));
        let t = sign_raw_es256(r#"{"alg":"ES256","kid":"ec-1"}"#, &payload);
        assert_eq!(check(&t).map(|_| ()), Err(TokenError::Malformed));
        assert_eq!(access(&t, &rules()), Err(TokenError::Malformed));
    }

    #[test]
    fn verify_id_token_wants_an_id_token() {
        let id_rules = {
            let mut r = rules();
            r.authorized_parties.clear();
            r.audiences = vec!["productpage".into()];
            r
        };
        let id = |t: &str| verify_id_token(t, &keyset(), &id_rules, NOW, Some("n-1")).map(|_| ());
        assert_eq!(id(&keycloak_id_token(|_| {})), Ok(()));
        let t = keycloak_id_token(|c| {
            c.insert("typ".into(), json!("id"));
        });
        assert_eq!(id(&t), Ok(()), "any case");
        let t = keycloak_id_token(|c| {
            c.remove("typ");
        });
        assert_eq!(id(&t), Ok(()), "another provider: no typ claim");
        // The nonce is still checked.
        assert_eq!(
            verify_id_token(
                &keycloak_id_token(|_| {}),
                &keyset(),
                &id_rules,
                NOW,
                Some("n-2")
            )
            .map(|_| ()),
            Err(TokenError::WrongNonce)
        );
        // Keycloak's other tokens, with everything else right.
        for typ in ["Bearer", "Refresh", "Offline", "Logout"] {
            let t = keycloak_id_token(|c| {
                c.insert("typ".into(), json!(typ));
            });
            assert_eq!(id(&t), Err(TokenError::NotAnIdToken), "{typ}");
        }
        let t = keycloak_id_token(|c| {
            c.remove("typ");
            c.insert("events".into(), json!({}));
        });
        assert_eq!(id(&t), Err(TokenError::NotAnIdToken), "logout token");
        for typ in ["at+jwt", "application/at+jwt", "logout+jwt"] {
            let header = format!(r#"{{"alg":"ES256","kid":"ec-1","typ":"{typ}"}}"#);
            let payload = payload_with(|p| {
                p.remove("typ");
                p.insert("aud".into(), json!("productpage"));
                p.insert("nonce".into(), json!("n-1"));
            });
            assert_eq!(
                id(&sign_raw_es256(&header, &payload)),
                Err(TokenError::NotAnIdToken),
                "{typ}"
            );
        }
    }

    /// A valid ES256 token in both its forms: (low-S, high-S).
    fn es256_twins() -> (String, String) {
        es256_twins_of(&ec().sign(claims(keycloak_claims())).unwrap())
    }

    fn es256_twins_of(t: &str) -> (String, String) {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (input, sig) = t.rsplit_once('.').unwrap();
        let sig = b64.decode(sig).unwrap();
        let s = &sig[32..];
        // n − s, with plain big-integer arithmetic on u128 halves.
        let be = |b: &[u8]| u128::from_be_bytes(b.try_into().unwrap());
        let (n_hi, n_lo) = (be(&P256_ORDER[..16]), be(&P256_ORDER[16..]));
        let (s_hi, s_lo) = (be(&s[..16]), be(&s[16..]));
        let (lo, borrow) = n_lo.overflowing_sub(s_lo);
        let hi = n_hi - s_hi - u128::from(borrow);
        let mut twin = sig[..32].to_vec();
        twin.extend_from_slice(&hi.to_be_bytes());
        twin.extend_from_slice(&lo.to_be_bytes());
        let twin = format!("{input}.{}", b64.encode(&twin));
        if s > &P256_HALF_ORDER[..] {
            (twin, t.to_string())
        } else {
            (t.to_string(), twin)
        }
    }

    #[test]
    fn standard_signers_emit_high_s_half_the_time() {
        // Why high-S twins are normalised rather than refused: refusing would refuse genuine
        // tokens (RustCrypto here; Java's, Go's and Node's signers behave the same).
        let high = (0..64)
            .filter(|i| {
                let mut c = claims(keycloak_claims());
                c.jwt_id = Some(format!("jti-{i}"));
                let t = ec().sign(c).unwrap();
                let (low, _) = es256_twins_of(&t);
                low != t
            })
            .count();
        assert!(high > 0 && high < 64, "{high} of 64");
    }

    #[test]
    fn an_es256_high_s_twin_is_the_same_token() {
        let (low, high) = es256_twins();
        assert_ne!(low, high);
        let a = check(&low).unwrap();
        let b = check(&high).unwrap();
        assert_eq!(a, b);
        // One cache entry for both: the twin is a hit (the empty key set proves it).
        let mut cache = Cache::default();
        assert!(cache.verify(&low, &keyset(), 1, &rules(), NOW).is_ok());
        assert!(cache
            .verify(&high, &KeySet::default(), 1, &rules(), NOW)
            .is_ok());
        assert_eq!(cache.len(), 1);
        let mut cache = Cache::default();
        assert!(cache.verify(&high, &keyset(), 1, &rules(), NOW).is_ok());
        assert!(cache
            .verify(&low, &KeySet::default(), 1, &rules(), NOW)
            .is_ok());
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn es256_signatures_are_64_bytes_with_r_and_s_in_range() {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (low, _) = es256_twins();
        let (input, sig) = low.rsplit_once('.').unwrap();
        let sig = b64.decode(sig).unwrap();
        let with_sig = |bytes: &[u8]| format!("{input}.{}", b64.encode(bytes));
        let mut long = sig.clone();
        long.push(0);
        let mut padded = vec![0u8];
        padded.extend_from_slice(&sig);
        for bad in [&sig[..63], &long[..], &padded[..], &[][..]] {
            assert_eq!(
                check(&with_sig(bad)).map(|_| ()),
                Err(TokenError::Malformed),
                "{} bytes",
                bad.len()
            );
        }
        let r = &sig[..32];
        for s in [[0u8; 32], P256_ORDER, [0xff; 32]] {
            let mut bad = r.to_vec();
            bad.extend_from_slice(&s);
            assert_eq!(
                check(&with_sig(&bad)).map(|_| ()),
                Err(TokenError::BadSignature)
            );
        }
    }

    #[test]
    fn garbage_never_panics() {
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        for junk in [
            "",
            ".",
            "..",
            "...",
            "a.b.c",
            "e30.e30.",
            "e30.e30.e30",
            "ZZZ.YYY.XXX",
            "eyJhbGciOiJSUzI1NiJ9.!!!.abc",
            long.as_str(),
            "\u{0}.\u{1}.\u{2}",
            "eyJhbGciOiJSUzI1NiIsImtpZCI6WzEsMl19.e30.e30",
        ] {
            assert!(check(junk).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn the_cache_keeps_successes_until_expiry_and_forgets_on_key_change() {
        let mut cache = Cache::default();
        let keys = keyset();
        let t = valid_token();
        assert!(cache.verify(&t, &keys, 1, &rules(), NOW).is_ok());
        assert_eq!(cache.len(), 1);
        // A hit needs no keys that verify: an empty set proves the cache answered.
        let empty = KeySet::default();
        assert!(cache.verify(&t, &empty, 1, &rules(), NOW + 100).is_ok());
        // Past exp + skew the entry is gone and the token is checked again (and refused).
        assert_eq!(
            cache
                .verify(&t, &keys, 1, &rules(), NOW + 290 + 31)
                .map(|_| ()),
            Err(TokenError::Expired)
        );
        assert!(cache.is_empty());
        // Failures are never cached.
        let expired = with(|c| c.expires_at = Some(UnixTimeStamp::from_secs(NOW - 100)));
        assert!(cache.verify(&expired, &keys, 1, &rules(), NOW).is_err());
        assert!(cache.is_empty());
        // A new key set version drops what was verified under the old one.
        assert!(cache.verify(&t, &keys, 1, &rules(), NOW).is_ok());
        assert_eq!(
            cache.verify(&t, &empty, 2, &rules(), NOW).map(|_| ()),
            Err(TokenError::UnknownKey)
        );
        // A tampered copy is not the same key.
        let mut forged = t.clone();
        forged.push('A');
        assert!(cache.verify(&forged, &keys, 1, &rules(), NOW).is_err());
    }

    #[test]
    fn es256_shape_is_the_last_parts_length() {
        let sig = "s".repeat(ES256_SIGNATURE_B64_LEN);
        for token in [
            format!("h.p.{sig}"),
            format!("h.p.{sig}x"),
            format!("h.p.{}", &sig[1..]),
            format!(".{sig}"),
            sig.clone(),
            format!("h.p.{}.{}", &sig[..40], &sig[41..]),
            format!("h.p{}", &sig[..]),
            String::new(),
        ] {
            let by_split = token
                .rsplit_once('.')
                .is_some_and(|(_, s)| s.len() == ES256_SIGNATURE_B64_LEN);
            assert_eq!(es256_shaped(token.as_bytes()), by_split, "{token}");
        }
    }

    #[test]
    fn a_cached_token_is_found_by_its_bytes_until_it_expires() {
        let cache = std::cell::RefCell::new(Cache::default());
        let keys = keyset();
        let t = valid_token();
        let at = |version, now| cached_access(t.as_bytes(), Some((&cache, version)), &rules(), now);
        assert!(at(1, NOW).is_none(), "not verified yet");
        assert!(cache
            .borrow_mut()
            .verify(&t, &keys, 1, &rules(), NOW)
            .is_ok());
        assert!(at(1, NOW + 100).is_some());
        assert!(at(2, NOW).is_none(), "another key set");
        assert!(at(1, NOW + 290 + 31).is_none(), "past exp and the skew");
        let mut other = t.clone().into_bytes();
        let last = other.len() - 1;
        other[last] ^= 1;
        assert!(cached_access(&other, Some((&cache, 1)), &rules(), NOW).is_none());
        assert!(cached_access(t.as_bytes(), None, &rules(), NOW).is_none());
    }

    #[test]
    fn a_token_of_a_cached_tokens_hash_is_verified_not_served() {
        // The hash reads the length and the last 64 bytes: a payload changed in the middle
        // keeps both, so the forged token lands in the cached token's slot.
        let mut cache = Cache::default();
        let keys = keyset();
        let t = valid_token();
        assert!(cache.verify(&t, &keys, 1, &rules(), NOW).is_ok());
        let mid = t.find('.').unwrap() + 10;
        let mut forged = t.clone().into_bytes();
        forged[mid] = if forged[mid] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        assert_eq!(
            fast_hash(forged.as_bytes()),
            fast_hash(t.as_bytes()),
            "same slot"
        );
        assert_eq!(
            cache.verify(&forged, &keys, 1, &rules(), NOW).map(|_| ()),
            Err(TokenError::BadSignature)
        );
        // The cached token still answers from its slot (an empty key set verifies nothing).
        let empty = KeySet::default();
        assert!(cache.verify(&t, &empty, 1, &rules(), NOW).is_ok());
        assert_eq!(
            cache.verify(&forged, &empty, 1, &rules(), NOW).map(|_| ()),
            Err(TokenError::UnknownKey)
        );
    }

    #[test]
    fn the_cache_is_bounded() {
        let mut cache = Cache::default();
        let keys = keyset();
        for i in 0..(CACHE_CAPACITY + 5) {
            let t = with(|c| c.jwt_id = Some(format!("jti-{i}")));
            assert!(cache.verify(&t, &keys, 1, &rules(), NOW).is_ok());
            assert!(cache.len() <= CACHE_CAPACITY);
        }
    }

    #[test]
    fn claim_header_values() {
        let v = check(&valid_token()).unwrap();
        assert_eq!(
            claim_header_value(&v.claims, "preferred_username").as_deref(),
            Some("alice")
        );
        assert_eq!(
            claim_header_value(&v.claims, "realm_access.roles").as_deref(),
            Some("user,reader")
        );
        assert_eq!(
            claim_header_value(&v.claims, "exp").as_deref(),
            Some(&*(NOW + 290).to_string())
        );
        assert_eq!(claim_header_value(&v.claims, "realm_access"), None);
        assert_eq!(claim_header_value(&v.claims, "missing"), None);
        let m = crate::json::map(json!({
            "bad": "alice\r\nx-admin: true",
            "nul": "a\u{0}b",
            "utf8": "Zoë",
        }));
        assert_eq!(claim_header_value(&m, "bad"), None);
        assert_eq!(claim_header_value(&m, "nul"), None);
        assert_eq!(claim_header_value(&m, "utf8").as_deref(), Some("Zoë"));
    }
}

#[cfg(test)]
mod timing {
    use super::*;
    use crate::testkit::*;
    use jwt_simple::prelude::*;

    /// `cargo test --release --lib timing -- --ignored --nocapture`: where a cold check spends.
    #[test]
    #[ignore]
    fn cold_verification_cost() {
        let keys = keyset();
        let t = valid_token();
        let n = 200;
        let start = std::time::Instant::now();
        for _ in 0..n {
            assert!(verify(&t, &keys, &rules(), NOW, None).is_ok());
        }
        let full = start.elapsed() / n;
        let KeyMaterial::Rsa { n: modulus, e, .. } = &keys.by_kid("rsa-1").unwrap().material else {
            panic!()
        };
        let start = std::time::Instant::now();
        for _ in 0..n {
            assert!(RS256PublicKey::from_components(modulus, e).is_ok());
        }
        let build = start.elapsed() / n;
        let key = RS256PublicKey::from_components(modulus, e).unwrap();
        let opts = VerificationOptions {
            artificial_time: Some(UnixTimeStamp::from_secs(NOW)),
            ..Default::default()
        };
        let start = std::time::Instant::now();
        for _ in 0..n {
            assert!(key
                .verify_token::<NoCustomClaims>(&t, Some(opts.clone()))
                .is_ok());
        }
        let lib = start.elapsed() / n;
        let fast = crate::rsa::PublicKey::new(modulus, e).unwrap();
        let (input, sig) = t.rsplit_once('.').unwrap();
        let sig =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sig).unwrap();
        let start = std::time::Instant::now();
        for _ in 0..n {
            assert!(fast.verify_sha256(input.as_bytes(), &sig));
        }
        let rsa = start.elapsed() / n;
        println!(
            "verify() (RS256 fast path): {full:?}, of which the RSA operation: {rsa:?}; \
             jwt-simple: key from components {build:?}, verify_token {lib:?}"
        );
    }
}
