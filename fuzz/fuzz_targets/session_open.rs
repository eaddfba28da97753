//! The filter's sealed cookies: `Sealer::open` on raw text and on sealed values altered byte by
//! byte (an alteration either fails to open or opens to the very value that was sealed: never to
//! anything else), seal/open round trips and expiry, and `read_chunked`/`set_chunked` round
//! trips of chunked cookies.
#![no_main]

use fixtures::{names, sealer, session_cookie, transaction, transaction_cookie, Input, NOW};
use libfuzzer_sys::fuzz_target;
use mesh_oidc::session::{
    read_chunked, set_chunked, Attributes, Session, Transaction, CHUNK_SIZE, MAX_CHUNKS,
};
use mesh_oidc::web;

fn sealed_session() -> String {
    session_cookie().split_once('=').unwrap().1.to_string()
}

fn sealed_transaction() -> String {
    transaction_cookie().split_once('=').unwrap().1.to_string()
}

fn known_session() -> Session {
    sealer()
        .open(&sealed_session(), NOW)
        .expect("fixture opens")
}

/// Opens `text` both ways; whatever opens must be what the fixtures sealed.
fn open_both(text: &str) {
    if let Some(s) = sealer().open::<Session>(text, NOW) {
        assert_eq!(s, known_session(), "opened to a value nobody sealed");
    }
    if let Some(t) = sealer().open::<Transaction>(text, NOW) {
        assert_eq!(t, transaction(), "opened to a transaction nobody sealed");
    }
}

fn cookie_safe(bytes: &[u8]) -> String {
    bytes
        .iter()
        .filter(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        .map(|b| char::from(*b))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    match input.byte() % 5 {
        0 => open_both(&String::from_utf8_lossy(input.rest())),
        1 => {
            // Byte edits of a sealed value: (position, operation, byte) triples.
            let mut sealed = if input.byte() % 2 == 0 {
                sealed_session()
            } else {
                sealed_transaction()
            }
            .into_bytes();
            for _ in 0..4 {
                let at = (usize::from(input.byte()) << 8 | usize::from(input.byte()))
                    % (sealed.len() + 1);
                let op = input.byte();
                let b = input.byte();
                match op % 3 {
                    0 if at < sealed.len() => sealed[at] = b,
                    1 => sealed.insert(at, b),
                    _ if at < sealed.len() => {
                        sealed.remove(at);
                    }
                    _ => {}
                }
            }
            open_both(&String::from_utf8_lossy(&sealed));
        }
        2 => {
            let ttl = u64::from(input.byte()) * 60 + 1;
            let id = input.text();
            let refresh = input.text();
            let session = Session {
                id_token: (!id.is_empty()).then_some(id),
                refresh_token: (!refresh.is_empty()).then_some(refresh),
            };
            let sealed = sealer().seal(&session, NOW, ttl).expect("seal");
            let opened = sealer().open::<Session>(&sealed, NOW);
            if sealed.len() <= CHUNK_SIZE * MAX_CHUNKS + 64 {
                assert_eq!(opened.as_ref(), Some(&session), "round trip");
                assert_eq!(
                    sealer().open::<Session>(&sealed, NOW + ttl - 1).as_ref(),
                    Some(&session)
                );
            } else {
                assert_eq!(opened, None, "too large to have come from cookies");
            }
            // `exp` is exclusive (RFC 7519 §4.1.4), as for tokens.
            assert_eq!(
                sealer().open::<Session>(&sealed, NOW + ttl),
                None,
                "expired"
            );
            assert_eq!(
                sealer().open::<Transaction>(&sealed, NOW),
                None,
                "wrong type"
            );
        }
        3 => {
            let header = input.rest();
            let base = &names().session;
            if let Some(value) = read_chunked(header, base) {
                // The chunks base, base_1, … in order, up to the first missing or empty one.
                let mut expected = Vec::new();
                for i in 0..MAX_CHUNKS {
                    let name = if i == 0 {
                        base.clone()
                    } else {
                        format!("{base}_{i}")
                    };
                    match web::cookie(header, &name) {
                        Some(v) if !v.is_empty() => expected.extend_from_slice(v),
                        _ => break,
                    }
                }
                assert_eq!(value.as_bytes(), &expected[..]);
                assert!(value.len() <= header.len());
            }
        }
        _ => {
            // set_chunked then read_chunked gives the value back, with stale chunks cleared.
            let repeat = usize::from(input.byte()) * 64 + 1;
            let stale = input.part().to_vec();
            let value = cookie_safe(input.rest()).repeat(repeat);
            if value.is_empty() {
                return;
            }
            let a = Attributes {
                secure: true,
                same_site: mesh_oidc::config::SameSite::Lax,
                domain: None,
            };
            let base = &names().access;
            let Some(set) = set_chunked(base, &value, 60, &a, &stale) else {
                assert!(value.len() > CHUNK_SIZE * MAX_CHUNKS);
                return;
            };
            let mut jar: Vec<String> = Vec::new();
            for c in &set {
                assert!(c.len() <= 4096, "a cookie a browser would drop");
                let pair = c.split(';').next().unwrap();
                if !pair.ends_with('=') {
                    jar.push(pair.to_string());
                }
            }
            let header = jar.join("; ");
            assert_eq!(
                read_chunked(header.as_bytes(), base).as_deref(),
                Some(value.as_str())
            );
        }
    }
});
