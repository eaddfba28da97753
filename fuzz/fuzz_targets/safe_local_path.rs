//! `login::safe_local_path`, the open-redirect guard (L2): whatever it accepts is sent back as
//! the `Location` after sign-in. It must be a path on this origin, as a browser (WHATWG URL
//! parsing, the `url` crate) resolves it, as it is and after percent-decoding once and twice:
//! no scheme, no `//host`, no `/\host`, no control character, and dot segments cannot turn it
//! into a `//host` either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_oidc::login::safe_local_path;
use url::Url;

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

fn check(original: &str, variant: &str, base: &Url) {
    assert!(variant.starts_with('/'), "{original:?}: {variant:?}");
    assert!(
        !variant.starts_with("//"),
        "{original:?}: {variant:?} is //host"
    );
    assert!(
        !variant.contains('\\'),
        "{original:?}: {variant:?} has a backslash"
    );
    assert!(
        !variant.chars().any(char::is_control),
        "{original:?}: {variant:?}"
    );
    let resolved = base
        .join(variant)
        .unwrap_or_else(|e| panic!("{original:?}: {e}"));
    assert_eq!(
        resolved.scheme(),
        base.scheme(),
        "{original:?} -> {resolved}"
    );
    assert_eq!(
        resolved.host_str(),
        base.host_str(),
        "{original:?} -> {resolved}"
    );
    assert_eq!(resolved.port(), base.port(), "{original:?} -> {resolved}");
    // A path that starts with `//` once dot segments are gone is one step from `//host`: a
    // service that echoes its path into a relative redirect would send the browser away.
    assert!(
        !resolved.path().starts_with("//"),
        "{original:?} resolves to the path {:?}",
        resolved.path()
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let Some(accepted) = safe_local_path(path) else {
        return;
    };
    assert_eq!(accepted, path, "returned as given");
    let base = Url::parse("https://bookinfo.example.com/callback").unwrap();
    let once = decode(&accepted);
    let twice = decode(&once);
    for variant in [&accepted, &once, &twice] {
        check(&accepted, variant, &base);
    }
});
