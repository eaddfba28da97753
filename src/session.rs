//! The filter's own cookies: sealed (JWE, A256KW + A256GCM, key from `session_secret`), chunked
//! when a value outgrows what a browser keeps in one cookie, and written with the configured
//! attributes.

use crate::config::{CookieConfig, SameSite, SessionKeys};
use crate::json::{Map, Value};
use crate::web;

/// Browsers keep about 4096 bytes per cookie, name and attributes included.
pub const CHUNK_SIZE: usize = 3800;
/// At most this many cookies for one value; beyond it the value is not stored.
pub const MAX_CHUNKS: usize = 4;
/// Lifetime of a login transaction (L1: at most 600 s).
pub const TRANSACTION_TTL: u64 = 600;
/// Open login transactions kept per browser; older ones are cleared.
pub const MAX_TRANSACTIONS: usize = 4;

/// What a login in flight must remember between the redirect and the callback (L1).
///
/// Sealed as the fields `s`, `n`, `v`, `p` and `r`: short names keep the cookie small (and stay
/// clear of the JWT claim names, such as `nonce`, that the sealing format itself uses).
#[derive(Clone, PartialEq, Eq)]
pub struct Transaction {
    pub state: String,
    pub nonce: String,
    pub verifier: String,
    /// The original path with its query: where the browser goes after the callback.
    pub path: String,
    pub redirect_uri: String,
}

/// What logout and refresh need (L2). Sealed as the fields `i` and `r`, each only when present.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Session {
    pub id_token: Option<String>,
    pub refresh_token: Option<String>,
}

/// A value the filter seals in a cookie: its fields, and back.
pub trait Sealable: Sized {
    fn fields(&self) -> Map;
    /// `None` when the fields are not this kind of value.
    fn from_fields(fields: &Map) -> Option<Self>;
}

impl Sealable for Transaction {
    fn fields(&self) -> Map {
        let mut fields = Map::new();
        for (name, value) in [
            ("s", &self.state),
            ("n", &self.nonce),
            ("v", &self.verifier),
            ("p", &self.path),
            ("r", &self.redirect_uri),
        ] {
            fields.insert(name.to_string(), Value::String(value.clone()));
        }
        fields
    }

    fn from_fields(fields: &Map) -> Option<Transaction> {
        let text = |name: &str| fields.get(name)?.as_str().map(str::to_string);
        Some(Transaction {
            state: text("s")?,
            nonce: text("n")?,
            verifier: text("v")?,
            path: text("p")?,
            redirect_uri: text("r")?,
        })
    }
}

impl Sealable for Session {
    fn fields(&self) -> Map {
        let mut fields = Map::new();
        for (name, value) in [("i", &self.id_token), ("r", &self.refresh_token)] {
            if let Some(value) = value {
                fields.insert(name.to_string(), Value::String(value.clone()));
            }
        }
        fields
    }

    /// A sealed transaction also reads as a session, its `r` (the redirect URI) as the refresh
    /// token: a transaction cookie put in the session cookie would start refreshes with it. Its
    /// own fields (`s`, `v`) tell it apart (found by fuzzing, docs/fuzzing.md).
    fn from_fields(fields: &Map) -> Option<Session> {
        if ["s", "v"]
            .iter()
            .any(|name| fields.get(*name).is_some_and(|v| !v.is_null()))
        {
            return None;
        }
        Some(Session {
            id_token: crate::json::optional_string(fields, "i")?,
            refresh_token: crate::json::optional_string(fields, "r")?,
        })
    }
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Transaction([redacted])")
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Session(id token: {}, refresh token: {}, [redacted])",
            self.id_token.is_some(),
            self.refresh_token.is_some()
        )
    }
}

/// Seals with the first key of `session_secret`, opens with any of them (rotation).
///
/// The format is a compact JWE (RFC 7516) with `A256KW` key wrapping (RFC 3394) and `A256GCM`
/// content encryption, the payload a JSON object with `iat` and `exp` beside the value's own
/// fields: the cookies earlier releases sealed with jwt-simple open unchanged.
pub struct Sealer {
    sealing: KeyWrap,
    older: Vec<KeyWrap>,
}

/// The protected header of every value this filter seals, in base64url (`{"alg":"A256KW",
/// "enc":"A256GCM"}`); it is also the AEAD's associated data.
const SEALED_HEADER_B64: &str = "eyJhbGciOiJBMjU2S1ciLCJlbmMiOiJBMjU2R0NNIn0";

/// A sealed value is refused unread beyond this length.
const MAX_SEALED_LEN: usize = CHUNK_SIZE * MAX_CHUNKS + 64;

impl Sealer {
    pub fn new(keys: &SessionKeys) -> Option<Sealer> {
        Some(Sealer {
            sealing: KeyWrap::new(keys.sealing().bytes()),
            older: keys
                .all()
                .skip(1)
                .map(|k| KeyWrap::new(k.bytes()))
                .collect(),
        })
    }

    /// `None` only when the platform has no randomness to give.
    pub fn seal<T: Sealable>(&self, value: &T, now: u64, ttl: u64) -> Option<String> {
        self.seal_fields(value.fields(), now, ttl)
    }

    fn seal_fields(&self, fields: Map, now: u64, ttl: u64) -> Option<String> {
        use aes_gcm::aead::{Aead as _, KeyInit as _, Payload};
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;

        let mut payload = Map::new();
        payload.insert("iat".into(), now.into());
        payload.insert("exp".into(), now.saturating_add(ttl).into());
        payload.extend(fields);
        let plaintext = crate::json::object_to_json(&payload).into_bytes();

        let mut cek = [0u8; 32];
        let mut iv = [0u8; 12];
        getrandom::getrandom(&mut cek).ok()?;
        getrandom::getrandom(&mut iv).ok()?;
        let wrapped = self.sealing.encapsulate(&cek).ok()?;
        let sealed = aes_gcm::Aes256Gcm::new(&cek.into())
            .encrypt(
                &iv.into(),
                Payload {
                    msg: &plaintext,
                    aad: SEALED_HEADER_B64.as_bytes(),
                },
            )
            .ok()?;
        let (ciphertext, tag) = sealed.split_at(sealed.len().checked_sub(16)?);
        Some(format!(
            "{SEALED_HEADER_B64}.{}.{}.{}.{}",
            b64.encode(wrapped),
            b64.encode(iv),
            b64.encode(ciphertext),
            b64.encode(tag)
        ))
    }

    /// Opens a sealed value; `None` if it was tampered with, sealed with no key of the list, or
    /// expired. Every failure ends the same way (no padding or MAC oracle: A256GCM authenticates
    /// before anything is read, and the caller sees only `None`).
    pub fn open<T: Sealable>(&self, sealed: &str, now: u64) -> Option<T> {
        if sealed.len() > MAX_SEALED_LEN {
            return None;
        }
        let parts = SealedParts::read(sealed)?;
        std::iter::once(&self.sealing)
            .chain(self.older.iter())
            .find_map(|key| parts.open_with(key))
            .and_then(|payload| Self::fields(&payload, now))
            .and_then(|fields| T::from_fields(&fields))
    }

    /// The value's own fields, if the payload has not expired (`exp` is exclusive).
    fn fields(payload: &[u8], now: u64) -> Option<Map> {
        let mut map = crate::json::object_from_slice(payload).ok()?;
        let expires_at = map.remove("exp")?.as_u64()?;
        if now >= expires_at {
            return None;
        }
        map.remove("iat");
        Some(map)
    }
}

/// AES-256 key wrapping (RFC 3394) with one key of `session_secret`.
type KeyWrap = aes_keywrap::Aes256KeyWrapAligned;

/// The five parts of a compact JWE, decoded; the header checked to be the one this filter
/// writes (the algorithm names, and nothing that would change how the rest is read).
struct SealedParts<'a> {
    header_b64: &'a str,
    wrapped_key: Vec<u8>,
    iv: [u8; 12],
    ciphertext_and_tag: Vec<u8>,
}

impl<'a> SealedParts<'a> {
    fn read(sealed: &'a str) -> Option<SealedParts<'a>> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut parts = sealed.split('.');
        let (Some(header_b64), Some(key), Some(iv), Some(ciphertext), Some(tag), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        let header = crate::json::object_from_slice(&b64.decode(header_b64).ok()?).ok()?;
        let names =
            |name: &str, value: &str| header.get(name).and_then(Value::as_str) == Some(value);
        if !names("alg", "A256KW")
            || !names("enc", "A256GCM")
            || header.contains_key("zip")
            || header
                .get("crit")
                .is_some_and(|c| c.as_array().is_none_or(|c| !c.is_empty()))
        {
            return None;
        }
        let mut ciphertext_and_tag = b64.decode(ciphertext).ok()?;
        let tag = b64.decode(tag).ok()?;
        if tag.len() != 16 {
            return None;
        }
        ciphertext_and_tag.extend_from_slice(&tag);
        Some(SealedParts {
            header_b64,
            wrapped_key: b64.decode(key).ok()?,
            iv: b64.decode(iv).ok()?.try_into().ok()?,
            ciphertext_and_tag,
        })
    }

    fn open_with(&self, key: &KeyWrap) -> Option<Vec<u8>> {
        use aes_gcm::aead::{Aead as _, KeyInit as _, Payload};
        if self.wrapped_key.len() != 40 {
            return None;
        }
        let cek: [u8; 32] = key.decapsulate(&self.wrapped_key).ok()?.try_into().ok()?;
        aes_gcm::Aes256Gcm::new(&cek.into())
            .decrypt(
                &self.iv.into(),
                Payload {
                    msg: &self.ciphertext_and_tag,
                    aad: self.header_b64.as_bytes(),
                },
            )
            .ok()
    }
}

/// Cookie names derived from `cookie.name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub access: String,
    pub session: String,
    /// Set when a 401 sent the browser to refresh first (L7, `refresh`): a second 401 soon after
    /// goes to the login instead.
    pub retried: String,
    tx_prefix: String,
}

impl Names {
    pub fn new(base: &str) -> Names {
        Names {
            access: base.to_string(),
            session: format!("{base}_session"),
            retried: format!("{base}_retried"),
            tx_prefix: format!("{base}_tx_"),
        }
    }

    /// The transaction cookie of one login: its name carries an id bound to the state, so that
    /// logins started in several tabs at once do not overwrite each other.
    pub fn transaction(&self, state: &str) -> String {
        let id: String = state.chars().take(8).collect();
        format!("{}{}", self.tx_prefix, id)
    }

    pub fn is_transaction(&self, name: &[u8]) -> bool {
        name.starts_with(self.tx_prefix.as_bytes())
    }

    /// Whether a cookie name is in the filter's namespace: `cookie.name` itself, or
    /// `cookie.name_` followed by anything (chunks, the session, transactions, and forged
    /// look-alikes such as `access_token_99`). The service never sees these unchecked.
    pub fn in_namespace(&self, name: &[u8]) -> bool {
        match name.strip_prefix(self.access.as_bytes()) {
            Some(rest) => rest.is_empty() || rest.first() == Some(&b'_'),
            None => false,
        }
    }
}

/// `base` is chunk 0; `base_1`, `base_2`, … follow.
fn chunk_name(base: &str, index: usize) -> String {
    if index == 0 {
        base.to_string()
    } else {
        format!("{base}_{index}")
    }
}

fn chunk_index(name: &[u8], base: &str) -> Option<usize> {
    let rest = name.strip_prefix(base.as_bytes())?;
    if rest.is_empty() {
        return Some(0);
    }
    let digits = rest.strip_prefix(b"_")?;
    // Digits only: `usize::from_str` also takes a sign (`_+2`).
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
    (n > 0 && n < MAX_CHUNKS && digits.first() != Some(&b'0')).then_some(n)
}

/// Reassembles a chunked cookie value.
/// One pass over the header: the first cookie of each chunk's name, in chunk order, up to the
/// first missing or empty one.
pub fn read_chunked(cookie_header: &[u8], base: &str) -> Option<String> {
    let mut chunks: [Option<&[u8]>; MAX_CHUNKS] = [None; MAX_CHUNKS];
    for (name, value) in web::cookies(cookie_header) {
        if let Some(slot) = chunk_index(name, base).and_then(|i| chunks.get_mut(i)) {
            slot.get_or_insert(value);
        }
    }
    chunks_joined(&chunks)
}

/// Attributes every cookie of the filter carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    pub secure: bool,
    pub same_site: SameSite,
    pub domain: Option<String>,
}

impl Attributes {
    pub fn new(config: &CookieConfig, secure: bool) -> Attributes {
        Attributes {
            // SameSite=None is only kept by browsers on Secure cookies.
            secure: secure || config.same_site == SameSite::None,
            same_site: config.same_site,
            domain: config.domain.clone(),
        }
    }

    /// The transaction cookie must come back on the provider's cross-site redirect: Lax at
    /// least, even when the session cookies are Strict.
    pub fn for_transaction(&self) -> Attributes {
        let mut a = self.clone();
        if a.same_site == SameSite::Strict {
            a.same_site = SameSite::Lax;
        }
        a
    }
}

pub fn set_cookie(name: &str, value: &str, max_age: u64, a: &Attributes) -> String {
    let mut s = format!(
        "{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite={}",
        a.same_site.as_str()
    );
    if a.secure {
        s.push_str("; Secure");
    }
    if let Some(d) = &a.domain {
        s.push_str("; Domain=");
        s.push_str(d);
    }
    s
}

pub fn clear_cookie(name: &str, a: &Attributes) -> String {
    set_cookie(name, "", 0, a)
}

/// `Set-Cookie` values that store `value` under `base` (chunked when needed) and clear chunks
/// of an older, longer value that the request still carries. `None` if it needs more than
/// [`MAX_CHUNKS`] cookies.
pub fn set_chunked(
    base: &str,
    value: &str,
    max_age: u64,
    a: &Attributes,
    request_cookies: &[u8],
) -> Option<Vec<String>> {
    let chunks: Vec<&str> = split_at_chars(value, CHUNK_SIZE);
    if chunks.len() > MAX_CHUNKS {
        return None;
    }
    let mut out: Vec<String> = chunks
        .iter()
        .enumerate()
        .map(|(i, c)| set_cookie(&chunk_name(base, i), c, max_age, a))
        .collect();
    for i in chunks.len()..MAX_CHUNKS {
        let name = chunk_name(base, i);
        if web::cookie(request_cookies, &name).is_some() {
            out.push(clear_cookie(&name, a));
        }
    }
    Some(out)
}

/// Clears every chunk of `base` that the request carries (and chunk 0 always).
pub fn clear_chunked(base: &str, a: &Attributes, request_cookies: &[u8]) -> Vec<String> {
    (0..MAX_CHUNKS)
        .map(|i| chunk_name(base, i))
        .filter(|name| name == base || web::cookie(request_cookies, name).is_some())
        .map(|name| clear_cookie(&name, a))
        .collect()
}

fn split_at_chars(value: &str, size: usize) -> Vec<&str> {
    // Sealed values and tokens are ASCII; byte offsets are character offsets.
    let mut out = Vec::new();
    let mut rest = value;
    while !rest.is_empty() {
        let mut cut = rest.len().min(size);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (head, tail) = rest.split_at(cut);
        out.push(head);
        rest = tail;
    }
    out
}

/// The access token a request presents (V1, B6): at most one. Two different tokens — in two
/// `Authorization` headers, in a bearer and a cookie, or in two copies of a cookie — are a
/// conflict: a service behind the filter might read the copy that was not checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential<'a> {
    None,
    One {
        token: std::borrow::Cow<'a, [u8]>,
        /// Whether the request carried the access-token cookie (the service then gets the
        /// verified token back as that cookie).
        from_cookie: bool,
        /// Whether the `Authorization` header holds more than the one bearer token (Envoy
        /// joins repeated headers with `,`): it must be set to that token before going on.
        merged_authorization: bool,
    },
    Conflict,
}

/// One pass over a request's `Cookie` header for everything its decision reads there: every
/// copy and chunk of the access token, the sealed session's chunks, and the cookies outside the
/// filter's namespace (all the service may see). A logged-in browser's header holds a sealed
/// session of a few KB; it is split once per request, not once per question.
pub struct CookieRead<'a> {
    access: [Option<&'a [u8]>; MAX_CHUNKS],
    /// Two copies of one access-token chunk with different values.
    access_conflict: bool,
    session: [Option<&'a [u8]>; MAX_CHUNKS],
    /// The pieces outside the namespace, trimmed, in order.
    kept: Vec<&'a [u8]>,
    /// How many of `kept` came before the first `cookie.name` cookie: the verified token is
    /// forwarded in its place.
    access_at: Option<usize>,
}

impl<'a> CookieRead<'a> {
    pub fn new(header: &'a [u8], names: &Names) -> CookieRead<'a> {
        let mut read = CookieRead {
            access: [None; MAX_CHUNKS],
            access_conflict: false,
            session: [None; MAX_CHUNKS],
            kept: Vec::new(),
            access_at: None,
        };
        for piece in web::pieces(header) {
            let piece = piece.trim_ascii();
            if piece.is_empty() {
                continue;
            }
            let (name, value) = match web::find_byte(piece, b'=') {
                Some(eq) => (
                    piece.get(..eq).unwrap_or_default().trim_ascii(),
                    piece.get(eq + 1..).map(web::cookie_value),
                ),
                None => (piece, None),
            };
            if !names.in_namespace(name) {
                read.kept.push(piece);
                continue;
            }
            if name == names.access.as_bytes() && read.access_at.is_none() {
                read.access_at = Some(read.kept.len());
            }
            let Some(value) = value else {
                continue;
            };
            if let Some(slot) =
                chunk_index(name, &names.access).and_then(|i| read.access.get_mut(i))
            {
                match slot {
                    _ if value.is_empty() => {}
                    None => *slot = Some(value),
                    Some(seen) if *seen != value => read.access_conflict = true,
                    Some(_) => {}
                }
            } else if let Some(slot) =
                chunk_index(name, &names.session).and_then(|i| read.session.get_mut(i))
            {
                slot.get_or_insert(value);
            }
        }
        read
    }

    /// Whether the request carries a sealed session (its first chunk, not empty).
    pub fn has_session(&self) -> bool {
        self.session
            .first()
            .copied()
            .flatten()
            .is_some_and(|v| !v.is_empty())
    }

    /// The sealed session reassembled: the first cookie of each chunk's name, in chunk order, up
    /// to the first missing or empty one.
    pub fn session(&self) -> Option<String> {
        chunks_joined(&self.session)
    }

    /// The `Cookie` header the service sees (B6): every cookie in the filter's namespace
    /// removed — all copies and chunks of the access token, the sealed session and
    /// transactions — and the verified access token, when given, put back as one `cookie.name`
    /// cookie in the place of the first. `None` when nothing is left.
    pub fn forwarded(&self, names: &Names, verified: Option<&[u8]>) -> Option<Vec<u8>> {
        let token = verified.map(|t| [names.access.as_bytes(), b"=", t]);
        let at = self.access_at.unwrap_or(self.kept.len());
        let (before, after) = self.kept.split_at(at.min(self.kept.len()));
        let pieces = before
            .iter()
            .map(std::slice::from_ref)
            .chain(token.as_ref().map(|t| &t[..]))
            .chain(after.iter().map(std::slice::from_ref));
        // Sized once: the header is 3–4 KB on a logged-in request, and growing it reallocates.
        let size = self.kept.iter().map(|p| p.len() + 2).sum::<usize>()
            + token
                .as_ref()
                .map_or(0, |t| t.iter().map(|p| p.len()).sum::<usize>() + 2);
        let mut out: Vec<u8> = Vec::with_capacity(size);
        for parts in pieces {
            if !out.is_empty() {
                out.extend_from_slice(b"; ");
            }
            for part in parts {
                out.extend_from_slice(part);
            }
        }
        (!out.is_empty()).then_some(out)
    }
}

fn chunks_joined(chunks: &[Option<&[u8]>]) -> Option<String> {
    let mut out = String::new();
    for value in chunks.iter().map_while(|c| c.filter(|v| !v.is_empty())) {
        out.push_str(std::str::from_utf8(value).ok()?);
    }
    (!out.is_empty()).then_some(out)
}

/// Reads the request's access token from every `Authorization` header and every copy of the
/// access-token cookie and its chunks.
pub fn credential<'a>(
    authorizations: &[&'a [u8]],
    cookie_header: &'a [u8],
    names: &Names,
) -> Credential<'a> {
    credential_in(authorizations, &CookieRead::new(cookie_header, names))
}

/// [`credential`] with the `Cookie` header already read.
pub fn credential_in<'a>(authorizations: &[&'a [u8]], cookies: &CookieRead<'a>) -> Credential<'a> {
    let mut bearer: Option<&[u8]> = None;
    let mut merged_authorization = false;
    if let Some((first, rest)) = authorizations.split_first() {
        if rest.iter().any(|other| other != first) {
            return Credential::Conflict;
        }
        // A bearer token never holds a comma: one in the header joins repeated headers.
        for part in web::pieces_by(first, b',') {
            merged_authorization |= part.len() < first.len();
            match (web::bearer(part), bearer) {
                (Some(t), None) => bearer = Some(t),
                (Some(t), Some(seen)) if t != seen => return Credential::Conflict,
                _ => {}
            }
        }
    }
    if cookies.access_conflict {
        return Credential::Conflict;
    }
    let mut parts = cookies.access.iter().map_while(|c| *c);
    let cookie: Option<std::borrow::Cow<'a, [u8]>> = parts.next().map(|first| {
        let mut rest = parts.peekable();
        if rest.peek().is_none() {
            std::borrow::Cow::Borrowed(first)
        } else {
            let mut all = first.to_vec();
            for part in rest {
                all.extend_from_slice(part);
            }
            std::borrow::Cow::Owned(all)
        }
    });
    match (bearer, cookie) {
        (Some(b), Some(c)) if b != c.as_ref() => Credential::Conflict,
        (Some(b), c) => Credential::One {
            token: std::borrow::Cow::Borrowed(b),
            from_cookie: c.is_some(),
            merged_authorization,
        },
        (None, Some(c)) => Credential::One {
            token: c,
            from_cookie: true,
            merged_authorization: false,
        },
        (None, None) => Credential::None,
    }
}

/// [`CookieRead::forwarded`] of a `Cookie` header.
pub fn forwarded_cookies(
    cookie_header: &[u8],
    names: &Names,
    verified: Option<&[u8]>,
) -> Option<Vec<u8>> {
    CookieRead::new(cookie_header, names).forwarded(names, verified)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sealer() -> Sealer {
        let key = crate::config::Config::parse(
            serde_json::json!({
                "mode": "login",
                "oidc": {"issuer": "https://i", "jwks_uri": "https://i/k",
                         "authorization_endpoint": "https://i/a", "token_endpoint": "https://i/t"},
                "client_id": "c", "client_secret": "s",
                "session_secret": "nsseZrfUE/AHsM4ERYcYpaCfgpxPm14SyfAAFapYwC8="
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        Sealer::new(&key.login().unwrap().session_keys).unwrap()
    }

    fn session() -> Session {
        Session {
            id_token: Some("id.token.x".into()),
            refresh_token: Some("refresh".into()),
        }
    }

    #[test]
    fn sessions_and_transactions_never_print_their_secrets() {
        let shown = format!("{:?}", session());
        assert!(
            !shown.contains("refresh\"") && !shown.contains("id.token"),
            "{shown}"
        );
        let tx = Transaction {
            state: "the-state".into(),
            nonce: "the-nonce".into(),
            verifier: "the-verifier".into(),
            path: "/p".into(),
            redirect_uri: "http://x/cb".into(),
        };
        let shown = format!("{tx:?}");
        assert!(!shown.contains("the-"), "{shown}");
    }

    #[test]
    fn seal_and_open() {
        let s = sealer();
        let sealed = s.seal(&session(), 1000, 60).unwrap();
        assert!(!sealed.contains("refresh"));
        assert_eq!(s.open::<Session>(&sealed, 1030), Some(session()));
        assert_eq!(s.open::<Session>(&sealed, 1059), Some(session()));
        assert_eq!(
            s.open::<Session>(&sealed, 1060),
            None,
            "expired: exp is exclusive"
        );
    }

    /// The format is jwt-simple's JWE (A256KW, A256GCM), which sealed the cookies of earlier
    /// releases: a cookie sealed by either opens with the other, so an upgrade logs no one out.
    #[test]
    fn cookies_sealed_by_jwt_simple_open_and_the_other_way_round() {
        use jwt_simple::prelude::*;
        let secret = "nsseZrfUE/AHsM4ERYcYpaCfgpxPm14SyfAAFapYwC8=";
        let bytes =
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, secret).unwrap();
        // The session key as earlier releases folded it: HMAC-SHA256 by jwt-simple.
        let folded = HS256Key::from_bytes(&bytes).authentication_tag(b"mesh-oidc session key v1");
        let theirs = A256KWKey::from_bytes(&folded).unwrap();
        let ours = sealer();

        // The session's fields as earlier releases wrote them (serde's derive, `i` and `r`).
        let fields = || match serde_json::json!({"i": "id.token.x", "r": "refresh"}) {
            serde_json::Value::Object(m) => m,
            _ => unreachable!(),
        };
        let mut claims = Claims::with_custom_claims(fields(), Duration::from_secs(60));
        claims.issued_at = Some(UnixTimeStamp::from_secs(1000));
        claims.invalid_before = None;
        claims.expires_at = Some(UnixTimeStamp::from_secs(1060));
        let by_them = theirs.encrypt(claims).unwrap();
        assert_eq!(ours.open::<Session>(&by_them, 1030), Some(session()));
        assert_eq!(ours.open::<Session>(&by_them, 1060), None, "expired");

        let by_us = ours.seal(&session(), 1000, 60).unwrap();
        let options = DecryptionOptions {
            claim_options: Some(VerificationOptions {
                artificial_time: Some(UnixTimeStamp::from_secs(1030)),
                ..Default::default()
            }),
            ..Default::default()
        };
        let opened: JWTClaims<serde_json::Map<String, serde_json::Value>> =
            theirs.decrypt_token(&by_us, Some(options)).unwrap();
        assert_eq!(opened.custom, fields());
        assert_eq!(opened.expires_at, Some(UnixTimeStamp::from_secs(1060)));
    }

    #[test]
    fn every_seal_has_its_own_key_and_iv() {
        let s = sealer();
        let a = s.seal(&session(), 1000, 60).unwrap();
        let b = s.seal(&session(), 1000, 60).unwrap();
        let parts = |v: &str| v.split('.').map(str::to_string).collect::<Vec<_>>();
        let (a, b) = (parts(&a), parts(&b));
        assert_eq!(a.len(), 5);
        assert_eq!(a[0], b[0], "the same header");
        assert_ne!(a[1], b[1], "a fresh content key");
        assert_ne!(a[2], b[2], "a fresh IV");
    }

    #[test]
    fn a_header_other_than_ours_is_refused_even_when_authentic() {
        use aes_gcm::aead::{Aead as _, KeyInit as _, Payload};
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let s = sealer();
        let seal_with = |header: &str| {
            let header = b64.encode(header);
            let cek = [9u8; 32];
            let iv = [3u8; 12];
            let body = br#"{"exp":2000,"i":"id.token.x","r":"refresh"}"#;
            let sealed = aes_gcm::Aes256Gcm::new(&cek.into())
                .encrypt(
                    &iv.into(),
                    Payload {
                        msg: body,
                        aad: header.as_bytes(),
                    },
                )
                .unwrap();
            let (c, t) = sealed.split_at(sealed.len() - 16);
            format!(
                "{header}.{}.{}.{}.{}",
                b64.encode(s.sealing.encapsulate(&cek).unwrap()),
                b64.encode(iv),
                b64.encode(c),
                b64.encode(t)
            )
        };
        let good = seal_with(r#"{"alg":"A256KW","enc":"A256GCM","typ":"JWT"}"#);
        assert_eq!(s.open::<Session>(&good, 1000), Some(session()));
        for header in [
            r#"{"alg":"A256KW","enc":"A256GCM","zip":"DEF"}"#,
            r#"{"alg":"A256KW","enc":"A256GCM","crit":["exp"]}"#,
            r#"{"alg":"A128KW","enc":"A256GCM"}"#,
            r#"{"alg":"A256KW","enc":"A128GCM"}"#,
            r#"{"alg":"dir","enc":"A256GCM"}"#,
        ] {
            assert_eq!(
                s.open::<Session>(&seal_with(header), 1000),
                None,
                "{header}"
            );
        }
    }

    /// The one-pass reading answers as the cookie-by-cookie readers do.
    #[test]
    fn one_pass_reads_as_the_separate_readers() {
        let n = Names::new("access_token");
        let pieces = [
            "access_token=a",
            "access_token=b",
            "access_token_1=c",
            "access_token_session=s0",
            "access_token_session_1=\"s1\"",
            "access_token_session=",
            "access_token_session_2=s2",
            " theme = dark ",
            "access_token_tx_1=t",
            "flag",
            "access_token",
            "=x",
            "",
        ];
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    let header = format!("{a}; {b};{c}");
                    let jar = CookieRead::new(header.as_bytes(), &n);
                    assert_eq!(
                        jar.session(),
                        read_chunked(header.as_bytes(), &n.session),
                        "{header}"
                    );
                    assert_eq!(jar.has_session(), jar.session().is_some(), "{header}");
                    let pairs: Vec<_> = web::cookies(header.as_bytes()).collect();
                    let access = pairs.iter().filter(|(name, v)| {
                        chunk_index(name, &n.access).is_some() && !v.is_empty()
                    });
                    let conflict = access
                        .clone()
                        .any(|(name, v)| access.clone().any(|(other, w)| name == other && v != w));
                    assert_eq!(
                        matches!(credential(&[], header.as_bytes(), &n), Credential::Conflict),
                        conflict,
                        "{header}"
                    );
                }
            }
        }
    }

    #[test]
    fn tampering_or_another_key_fails() {
        let s = sealer();
        let sealed = s.seal(&session(), 1000, 60).unwrap();
        let mut bytes = sealed.clone().into_bytes();
        let mid = bytes.len() / 2;
        bytes[mid] = if bytes[mid] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            s.open::<Session>(&String::from_utf8(bytes).unwrap(), 1001),
            None
        );
        let other = Sealer {
            sealing: KeyWrap::new(&[7u8; 32]),
            older: Vec::new(),
        };
        assert_eq!(other.open::<Session>(&sealed, 1001), None);
        assert_eq!(s.open::<Session>("garbage", 1001), None);
        assert_eq!(s.open::<Session>("a.b.c.d.e", 1001), None);
    }

    /// Fuzzing found this (docs/fuzzing.md): a sealed transaction opened as a session, with its
    /// redirect URI as the refresh token.
    #[test]
    fn a_sealed_transaction_is_not_a_session() {
        let s = sealer();
        let tx = Transaction {
            state: "st".into(),
            nonce: "no".into(),
            verifier: "ve".into(),
            path: "/p".into(),
            redirect_uri: "https://app/callback".into(),
        };
        let sealed = s.seal(&tx, 1000, 600).unwrap();
        assert_eq!(s.open::<Transaction>(&sealed, 1001), Some(tx));
        assert_eq!(s.open::<Session>(&sealed, 1001), None);
        let sealed = s.seal(&session(), 1000, 600).unwrap();
        assert_eq!(s.open::<Session>(&sealed, 1001), Some(session()));
        assert_eq!(s.open::<Transaction>(&sealed, 1001), None);
    }

    /// The fields as the serde derive read them before `src/json.rs`: a session's `i` and `r`
    /// are strings or absent (null reads as absent), a null `s` or `v` does not make it a
    /// transaction; a transaction has all five fields as strings; other fields are ignored.
    #[test]
    fn sealed_fields_are_read_by_their_types() {
        let s = sealer();
        let open = |fields: serde_json::Value| {
            let sealed = s.seal_fields(crate::json::map(fields), 1000, 600).unwrap();
            (
                s.open::<Session>(&sealed, 1001),
                s.open::<Transaction>(&sealed, 1001),
            )
        };
        let only_id = Session {
            id_token: Some("x".into()),
            refresh_token: None,
        };
        assert_eq!(open(json!({"i": "x"})).0, Some(only_id.clone()));
        assert_eq!(
            open(json!({"i": "x", "r": null, "s": null})).0,
            Some(only_id)
        );
        assert_eq!(open(json!({"i": 7})).0, None);
        assert_eq!(open(json!({"i": "x", "r": ["y"]})).0, None);
        assert_eq!(open(json!({"i": "x", "v": 1})).0, None);
        assert_eq!(open(json!({})).0, Some(Session::default()));
        let tx = json!({"s": "a", "n": "b", "v": "c", "p": "/", "r": "https://app/cb", "z": 1});
        assert_eq!(open(tx).1.map(|t| t.path), Some("/".to_string()));
        assert_eq!(
            open(json!({"s": "a", "n": "b", "v": "c", "p": "/"})).1,
            None
        );
        assert_eq!(
            open(json!({"s": "a", "n": "b", "v": "c", "p": 1, "r": "x"})).1,
            None
        );
    }

    /// Fuzzing found this (docs/fuzzing.md): `access_token_+2` counted as chunk 2, since
    /// `usize::from_str` takes a `+`; with another chunk 2 the request was a conflict.
    #[test]
    fn a_chunk_number_is_digits_only() {
        let names = Names::new("access_token");
        for name in [
            "access_token_+2",
            "access_token_-1",
            "access_token_ 1",
            "access_token_02",
        ] {
            assert_eq!(chunk_index(name.as_bytes(), "access_token"), None, "{name}");
        }
        assert_eq!(chunk_index(b"access_token_2", "access_token"), Some(2));
        let header = b"access_token=a; access_token_1=b; access_token_2=c; access_token_+2=x";
        assert_eq!(
            credential(&[], header, &names),
            Credential::One {
                token: std::borrow::Cow::Owned(b"abc".to_vec()),
                from_cookie: true,
                merged_authorization: false,
            }
        );
    }

    #[test]
    fn chunking_round_trips_and_clears_leftovers() {
        let a = Attributes {
            secure: true,
            same_site: SameSite::Lax,
            domain: None,
        };
        let value = "x".repeat(CHUNK_SIZE * 2 + 10);
        let set = set_chunked("s", &value, 60, &a, b"s_3=old").unwrap();
        assert_eq!(set.len(), 4);
        assert!(set[0].starts_with("s=x"));
        assert!(set[1].starts_with("s_1=x"));
        assert!(set[2].starts_with("s_2=x"));
        assert!(set[3].starts_with("s_3=; Path=/; Max-Age=0"));
        let header: Vec<String> = set[..3]
            .iter()
            .map(|c| c.split(';').next().unwrap().to_string())
            .collect();
        assert_eq!(read_chunked(header.join("; ").as_bytes(), "s"), Some(value));
        assert!(set_chunked("s", &"y".repeat(CHUNK_SIZE * MAX_CHUNKS + 1), 60, &a, b"").is_none());
        assert_eq!(read_chunked(b"s_1=x", "s"), None, "no chunk 0");
    }

    #[test]
    fn cookie_attributes() {
        let a = Attributes {
            secure: false,
            same_site: SameSite::Strict,
            domain: Some("example.com".into()),
        };
        assert_eq!(
            set_cookie("n", "v", 5, &a),
            "n=v; Path=/; Max-Age=5; HttpOnly; SameSite=Strict; Domain=example.com"
        );
        assert_eq!(a.for_transaction().same_site, SameSite::Lax);
        assert!(clear_cookie("n", &a).contains("Max-Age=0"));
    }

    #[test]
    fn names_and_the_forwarded_cookie_header() {
        let n = Names::new("access_token");
        let tx = n.transaction("abcdefghijkl");
        assert_eq!(tx, "access_token_tx_abcdefgh");
        for ours in [
            &b"access_token"[..],
            b"access_token_1",
            b"access_token_9",
            b"access_token_session_2",
            tx.as_bytes(),
        ] {
            assert!(n.in_namespace(ours), "{}", String::from_utf8_lossy(ours));
        }
        assert!(!n.in_namespace(b"access_tokens"));
        assert!(!n.in_namespace(b"xaccess_token"));
        // B6: only the verified token goes on, once; forged copies and sealed cookies never.
        let h = b"a=1; access_token=t; access_token=forged; access_token_1=x; access_token_session=s; access_token_tx_abc=x; access_token_77=z; b=2";
        assert_eq!(
            forwarded_cookies(h, &n, Some(b"t")).unwrap(),
            b"a=1; access_token=t; b=2".to_vec()
        );
        assert_eq!(
            forwarded_cookies(h, &n, None).unwrap(),
            b"a=1; b=2".to_vec()
        );
        assert_eq!(forwarded_cookies(b"access_token_session=s", &n, None), None);
    }

    #[test]
    fn one_credential_per_request() {
        let n = Names::new("access_token");
        let one = |t: &str, from_cookie: bool| Credential::One {
            token: std::borrow::Cow::Owned(t.as_bytes().to_vec()),
            from_cookie,
            merged_authorization: false,
        };
        // Envoy joins repeated headers with a comma.
        assert_eq!(
            credential(&[b"Bearer t,Bearer t"], b"", &n),
            Credential::One {
                token: std::borrow::Cow::Borrowed(&b"t"[..]),
                from_cookie: false,
                merged_authorization: true,
            }
        );
        assert_eq!(
            credential(&[b"Bearer a, Bearer b"], b"", &n),
            Credential::Conflict
        );
        assert_eq!(credential(&[], b"", &n), Credential::None);
        assert_eq!(credential(&[b"Basic eA=="], b"a=1", &n), Credential::None);
        assert_eq!(credential(&[b"Bearer h"], b"", &n), one("h", false));
        assert_eq!(credential(&[], b"access_token=c", &n), one("c", true));
        assert_eq!(
            credential(&[b"Bearer t"], b"access_token=t", &n),
            one("t", true)
        );
        assert_eq!(
            credential(&[], b"access_token=c; access_token=c", &n),
            one("c", true),
            "an identical copy is no conflict"
        );
        assert_eq!(
            credential(
                &[],
                b"access_token=a; access_token_1=b; access_token_2=c",
                &n
            ),
            one("abc", true)
        );
        assert_eq!(credential(&[], b"access_token=; x=1", &n), Credential::None);
        for conflict in [
            (&[&b"Bearer a"[..], b"Bearer b"][..], &b""[..]),
            (&[&b"Bearer a"[..], b"Basic eA=="][..], &b""[..]),
            (&[&b"Bearer a"[..]][..], &b"access_token=b"[..]),
            (&[][..], &b"access_token=a; access_token=b"[..]),
            (
                &[][..],
                &b"access_token=a; access_token_1=b; access_token_1=c"[..],
            ),
        ] {
            assert_eq!(
                credential(conflict.0, conflict.1, &n),
                Credential::Conflict,
                "{conflict:?}"
            );
        }
    }
}
