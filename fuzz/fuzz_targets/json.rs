//! `json::from_slice`, the reader of every JSON text the filter takes (the configuration,
//! discovery documents, key sets, token endpoint and introspection answers, token headers and
//! payloads, sealed cookies), and `Value::to_json`, its writer. Never a panic; it accepts what
//! serde_json accepts and reads it the same, except a name twice in one object (refused) and a
//! number too large for an `f64` (kept as written); what it writes serde_json reads as the same
//! value, byte for byte serde_json's own writing when it holds no fraction or exponent, and it
//! reads back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_oidc::json::{self, Value};

/// Whether `ours` is serde_json's value: numbers by their integer value where they have one,
/// by the `f64` they are closest to otherwise.
fn same(ours: &Value, theirs: &serde_json::Value) -> bool {
    match (ours, theirs) {
        (Value::Null, serde_json::Value::Null) => true,
        (Value::Bool(a), serde_json::Value::Bool(b)) => a == b,
        (Value::Number(a), serde_json::Value::Number(b)) => {
            a.as_u64() == b.as_u64() && (a.as_u64().is_some() || close(a.as_str(), b.as_f64()))
        }
        (Value::String(a), serde_json::Value::String(b)) => a == b,
        (Value::Array(a), serde_json::Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y))
        }
        (Value::Object(a), serde_json::Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .zip(b)
                    .all(|((ka, va), (kb, vb))| ka == kb && same(va, vb))
        }
        _ => false,
    }
}

/// serde_json reads a fraction to within a few units in the last place (no `float_roundtrip`).
fn close(text: &str, theirs: Option<f64>) -> bool {
    match (text.parse::<f64>(), theirs) {
        (Ok(a), Some(b)) => a == b || (a - b).abs() <= a.abs().max(b.abs()) * 1e-15,
        _ => false,
    }
}

/// A value with a fraction or an exponent somewhere (serde_json writes those its own way).
fn has_float(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.as_str().contains(['.', 'e', 'E']) || n.as_u64().is_none(),
        Value::Array(items) => items.iter().any(has_float),
        Value::Object(map) => map.values().any(has_float),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let ours = json::from_slice(data);
    let theirs = serde_json::from_slice::<serde_json::Value>(data);
    match (&ours, &theirs) {
        (Ok(a), Ok(b)) => {
            assert!(same(a, b), "{:?}", String::from_utf8_lossy(data));
            let written = a.to_json();
            assert_eq!(json::from_slice(written.as_bytes()).as_ref(), Ok(a));
            let reread: serde_json::Value = serde_json::from_str(&written).unwrap();
            assert!(same(a, &reread));
            if !has_float(a) {
                assert_eq!(written, serde_json::to_string(b).unwrap());
            }
        }
        (Err(_), Err(_)) => {}
        (Err(e), Ok(_)) => assert_eq!(
            e.what,
            "duplicate name in an object",
            "{:?}",
            String::from_utf8_lossy(data)
        ),
        (Ok(_), Err(e)) => assert!(
            e.to_string().starts_with("number out of range"),
            "{:?}: serde_json: {e}",
            String::from_utf8_lossy(data)
        ),
    }
});
