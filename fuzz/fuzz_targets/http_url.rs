//! `httpurl::Url::parse`, the parser of every provider URL (the configuration, `client_secrets.json`,
//! a discovery document). Never a panic; what it accepts the WHATWG parser (the `url` crate, as
//! browsers) reads the same (scheme, host, port, path and query, and the whole URL), with none of
//! what it refuses (credentials, a fragment, dot segments, a backslash, spaces or controls); and
//! parsing its own output gives it back. Moving it to another origin keeps its path and query.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_oidc::httpurl::Url;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(ours) = Url::parse(input) else {
        return;
    };
    let theirs = url::Url::parse(input).unwrap_or_else(|e| panic!("{input:?}: url refuses: {e}"));
    assert_eq!(ours.as_str(), theirs.as_str(), "{input:?}");
    assert_eq!(ours.scheme(), theirs.scheme(), "{input:?}");
    assert_eq!(Some(ours.host_str()), theirs.host_str(), "{input:?}");
    assert_eq!(ours.port(), theirs.port(), "{input:?}");
    assert_eq!(
        ours.port_or_default(),
        theirs.port_or_known_default().unwrap(),
        "{input:?}"
    );
    assert_eq!(ours.path(), theirs.path(), "{input:?}");
    assert_eq!(ours.query(), theirs.query(), "{input:?}");
    assert!(
        theirs.username().is_empty() && theirs.password().is_none(),
        "{input:?}"
    );
    assert!(theirs.fragment().is_none(), "{input:?}");
    assert!(!ours.as_str().contains(['\\', ' ', '#']), "{input:?}");
    assert!(
        ours.as_str().bytes().all(|b| b.is_ascii_graphic()),
        "{input:?}"
    );
    assert_eq!(Url::parse(ours.as_str()).as_ref(), Ok(&ours), "{input:?}");
    let origin = Url::parse("http://keycloak.keycloak.svc:8080").unwrap();
    let moved = ours.moved_to(&origin);
    assert_eq!((moved.path(), moved.query()), (ours.path(), ours.query()));
    assert_eq!(moved.authority(), "keycloak.keycloak.svc:8080");
});
