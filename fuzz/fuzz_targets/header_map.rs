//! `inbound::Headers::parse`: the request's header map as the host serialises it (a
//! little-endian count, a name and value length per header, then each name and value followed
//! by a NUL), on arbitrary bytes.
//!
//! Checks: no panic; the headers read are exactly those a plain reading of the format finds
//! whole, in order, up to the first that is not; `bytes`, `all` and `text` agree with them,
//! and `firsts` with `bytes`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_oidc::inbound::Headers;

fn le32(buf: &[u8], at: usize) -> Option<usize> {
    let b = buf.get(at..at + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

/// The format read the plain way.
fn reference(buf: &[u8]) -> Vec<(&[u8], &[u8])> {
    let mut out = Vec::new();
    let Some(count) = le32(buf, 0) else {
        return out;
    };
    let mut at = 4 + 8 * count as u128;
    for i in 0..count {
        let (Some(n), Some(v)) = (le32(buf, 4 + 8 * i), le32(buf, 8 + 8 * i)) else {
            break;
        };
        let name_end = at + n as u128;
        let value_end = name_end + 1 + v as u128;
        if value_end >= buf.len() as u128 {
            break;
        }
        let (s, ne, ve) = (at as usize, name_end as usize, value_end as usize);
        out.push((&buf[s..ne], &buf[ne + 1..ve]));
        at = value_end + 1;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let headers = Headers::parse(data.to_vec());
    let read: Vec<_> = headers.pairs().collect();
    assert_eq!(read, reference(data));
    for (name, _) in &read {
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        let all: Vec<&[u8]> = read
            .iter()
            .filter(|(n, _)| *n == name.as_bytes())
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(headers.all(name).collect::<Vec<_>>(), all);
        assert_eq!(headers.bytes(name), all.first().copied());
        assert_eq!(
            headers.text(name),
            all.first().and_then(|v| std::str::from_utf8(v).ok())
        );
    }
    let names: Vec<&str> = read
        .iter()
        .filter_map(|(n, _)| std::str::from_utf8(n).ok())
        .chain(["cookie", ":path", "absent"])
        .take(4)
        .collect();
    if let [a, b, c, d] = names[..] {
        let found = headers.firsts([a, b, c, d]);
        for (name, got) in [a, b, c, d].iter().zip(found) {
            assert_eq!(got, headers.bytes(name));
        }
    }
});
