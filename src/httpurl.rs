//! Absolute `http`/`https` URLs as the configuration and the discovery document name the
//! provider's endpoints: a strict subset of RFC 3986, parsed without IDNA or Unicode tables.
//!
//! What is accepted: `scheme://host[:port][/path][?query]` with the scheme `http` or `https`, a
//! host of ASCII letters, digits, `-`, `.` and `_` (or a bracketed IPv6 address), a port up to
//! 65535, and a path and query of RFC 3986 characters with well-formed `%XX` escapes (no `'` in
//! the query, which WHATWG would escape: every accepted URL reads as written). What is
//! refused, each with its reason: credentials, a fragment, `.` or `..` path segments, a
//! backslash, spaces, controls and non-ASCII characters (percent-encode them). The scheme and
//! host are lower-cased and a port equal to the scheme's default is dropped, as WHATWG URL does;
//! nothing else is rewritten.

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct Url {
    https: bool,
    /// Lower-case; an IPv6 address keeps its brackets.
    host: String,
    /// `None` when absent or the scheme's default.
    port: Option<u16>,
    /// Starts with `/`.
    path: String,
    query: Option<String>,
    /// The whole URL, as [`Url::as_str`] gives it.
    text: String,
}

impl fmt::Debug for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Url({:?})", self.text)
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// RFC 3986 `unreserved` and `sub-delims`, and `:` and `@`: a path segment's characters, `%`
/// aside.
fn is_pchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b)
}

fn well_escaped(s: &str) -> bool {
    let b = s.as_bytes();
    b.iter().enumerate().all(|(i, c)| {
        *c != b'%'
            || (b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    })
}

/// `.` or `..`, also escaped (`%2e`), as WHATWG URL reads a path segment.
fn is_dot_segment(segment: &str) -> bool {
    let s = segment.to_ascii_lowercase().replace("%2e", ".");
    s == "." || s == ".."
}

impl Url {
    pub fn parse(input: &str) -> Result<Url, String> {
        // As WHATWG: C0 controls and spaces around the URL are not part of it (DEL is).
        let s = input.trim_matches(|c: char| c <= ' ');
        let Some((scheme, rest)) = s.split_once(':').filter(|(scheme, _)| {
            scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        }) else {
            return Err("relative URL without a base".into());
        };
        let https = match scheme.to_ascii_lowercase().as_str() {
            "http" => false,
            "https" => true,
            _ => return Err("must be an http or https URL".into()),
        };
        let Some(rest) = rest.strip_prefix("//") else {
            return Err("must be an absolute URL: scheme://host[:port]/path".into());
        };
        if !s.is_ascii() {
            return Err("must be ASCII (percent-encode other characters)".into());
        }
        if s.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err("must not contain spaces or control characters".into());
        }
        if s.contains('\\') {
            return Err("must not contain a backslash".into());
        }
        if s.contains('#') {
            return Err("must not have a fragment".into());
        }
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, rest) = rest.split_at(end);
        if authority.contains('@') {
            return Err("must not carry credentials".into());
        }
        let (host, port) = split_host_port(authority)?;
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        if !path.bytes().all(|b| is_pchar(b) || b == b'/' || b == b'%') || !well_escaped(path) {
            return Err("has a character a URL path cannot hold (percent-encode it)".into());
        }
        if path.split('/').any(is_dot_segment) {
            return Err("must not have . or .. path segments".into());
        }
        if let Some(q) = query {
            // `'` too: WHATWG escapes it in the query of an http(s) URL, so it would not be read
            // as written.
            if !q
                .bytes()
                .all(|b| (is_pchar(b) && b != b'\'') || b"/?%".contains(&b))
                || !well_escaped(q)
            {
                return Err("has a character a URL query cannot hold (percent-encode it)".into());
            }
        }
        let default = if https { 443 } else { 80 };
        let mut url = Url {
            https,
            host,
            port: port.filter(|p| *p != default),
            path: if path.is_empty() { "/" } else { path }.to_string(),
            query: query.map(str::to_string),
            text: String::new(),
        };
        url.text = url.serialise();
        Ok(url)
    }

    fn serialise(&self) -> String {
        let mut s = format!("{}://{}", self.scheme(), self.host);
        if let Some(port) = self.port {
            s.push_str(&format!(":{port}"));
        }
        s.push_str(&self.path);
        if let Some(q) = &self.query {
            s.push('?');
            s.push_str(q);
        }
        s
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn scheme(&self) -> &'static str {
        if self.https {
            "https"
        } else {
            "http"
        }
    }

    pub fn host_str(&self) -> &str {
        &self.host
    }

    /// The port when it is not the scheme's default.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    pub fn port_or_default(&self) -> u16 {
        self.port.unwrap_or(if self.https { 443 } else { 80 })
    }

    /// `host[:port]`, the port only when it is not the scheme's default.
    pub fn authority(&self) -> String {
        match self.port {
            Some(port) => format!("{}:{port}", self.host),
            None => self.host.clone(),
        }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// `scheme://host[:port]/`.
    pub fn origin(&self) -> Url {
        let mut origin = Url {
            path: "/".into(),
            query: None,
            text: String::new(),
            ..self.clone()
        };
        origin.text = origin.serialise();
        origin
    }

    /// This URL with the scheme, host and port of `origin`.
    pub fn moved_to(&self, origin: &Url) -> Url {
        let mut moved = Url {
            https: origin.https,
            host: origin.host.clone(),
            port: origin.port,
            text: String::new(),
            ..self.clone()
        };
        moved.text = moved.serialise();
        moved
    }

    /// Appends `name=value` pairs to the query, form-urlencoded (as a browser submits a form).
    pub fn append_pairs(&mut self, pairs: &[(&str, &str)]) {
        let mut query = self.query.take().unwrap_or_default();
        {
            // Pairs after what the query already holds, joined by `&`.
            let mut form = form_urlencoded::Serializer::for_suffix(&mut query, 0);
            for (name, value) in pairs {
                form.append_pair(name, value);
            }
        }
        self.query = Some(query);
        self.text = self.serialise();
    }
}

/// `host[:port]`: a host of ASCII letters, digits, `-`, `.` and `_`, or `[IPv6]`.
fn split_host_port(authority: &str) -> Result<(String, Option<u16>), String> {
    if let Some(after) = authority.strip_prefix('[') {
        let (address, rest) = after
            .split_once(']')
            .ok_or_else(|| "has an unclosed [ in its host".to_string())?;
        // Written back in its canonical form (RFC 5952, as WHATWG serialises it); one that
        // embeds an IPv4 address (`::ffff:1.2.3.4`), which the two write differently, is refused.
        let canonical = match address.parse::<std::net::Ipv6Addr>() {
            Ok(a) => a.to_string(),
            Err(_) => return Err("has an invalid IPv6 address".into()),
        };
        if canonical.contains('.') {
            return Err("has an IPv6 address with an IPv4 part: write it in hex".into());
        }
        let port = match rest {
            "" => None,
            _ => Some(rest.strip_prefix(':').ok_or("has junk after its host")?),
        };
        return Ok((format!("[{canonical}]"), parse_port(port)?));
    }
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    if host.is_empty() {
        return Err("must have a host".into());
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    {
        return Err(
            "must have a host of ASCII letters, digits, '-', '.' and '_', or a [IPv6] address"
                .into(),
        );
    }
    if ends_in_a_number(host) && !is_dotted_quad(host) {
        return Err(
            "has a numeric host that is not an IPv4 address written a.b.c.d (WHATWG would read it as another address)"
                .into(),
        );
    }
    Ok((host.to_ascii_lowercase(), parse_port(port)?))
}

/// WHATWG's "ends in a number": such a host is read as an IPv4 address, in any of the forms
/// `inet_aton` takes (`127.1`, `0x7f.1`, `00`).
fn ends_in_a_number(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    let last = host.rsplit('.').next().unwrap_or(host);
    !last.is_empty()
        && (last.bytes().all(|b| b.is_ascii_digit())
            || last
                .strip_prefix("0x")
                .or_else(|| last.strip_prefix("0X"))
                .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit())))
}

/// `a.b.c.d`, each a decimal 0–255 without leading zeros: the one form every parser reads alike.
fn is_dotted_quad(host: &str) -> bool {
    let parts: Vec<&str> = host.split('.').collect();
    parts.len() == 4
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.len() <= 3
                && p.bytes().all(|b| b.is_ascii_digit())
                && (p.len() == 1 || !p.starts_with('0'))
                && p.parse::<u8>().is_ok()
        })
}

fn parse_port(port: Option<&str>) -> Result<Option<u16>, String> {
    match port {
        None => Ok(None),
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(Some(p.parse::<u16>().map_err(|_| "invalid port number")?))
        }
        Some(_) => Err("invalid port number".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_a_provider_and_an_operator_write() {
        let u = Url::parse("HTTPS://SSO.Example.com:443/realms/dev/protocol?x=1&y=%2F").unwrap();
        assert_eq!(
            u.as_str(),
            "https://sso.example.com/realms/dev/protocol?x=1&y=%2F"
        );
        assert_eq!(u.scheme(), "https");
        assert_eq!(u.host_str(), "sso.example.com");
        assert_eq!(u.port(), None);
        assert_eq!(u.port_or_default(), 443);
        assert_eq!(u.path(), "/realms/dev/protocol");
        assert_eq!(u.query(), Some("x=1&y=%2F"));
        let u = Url::parse("http://keycloak.keycloak.svc.cluster.local:8080").unwrap();
        assert_eq!(
            u.as_str(),
            "http://keycloak.keycloak.svc.cluster.local:8080/"
        );
        assert_eq!(u.authority(), "keycloak.keycloak.svc.cluster.local:8080");
        assert_eq!(
            u.origin().as_str(),
            "http://keycloak.keycloak.svc.cluster.local:8080/"
        );
        let u = Url::parse("http://[::1]:9000/t").unwrap();
        assert_eq!((u.host_str(), u.port()), ("[::1]", Some(9000)));
        assert_eq!(
            Url::parse(" http://a/b\t\n").unwrap().as_str(),
            "http://a/b"
        );
        assert!(
            Url::parse("http://a/b\u{7f}").is_err(),
            "DEL is not trimmed"
        );
    }

    #[test]
    fn refuses_what_is_not_a_plain_endpoint() {
        for (input, why) in [
            ("not a url", "relative URL without a base"),
            ("/token", "relative URL without a base"),
            ("ftp://x", "must be an http or https URL"),
            ("http:x", "must be an absolute URL"),
            ("http://u:p@h/", "must not carry credentials"),
            ("http://h/#f", "must not have a fragment"),
            ("http:///p", "must have a host"),
            ("http://h:99999/", "invalid port number"),
            ("http://h:/", "invalid port number"),
            ("http://h:+80/", "invalid port number"),
            ("http://h/a b", "must not contain spaces"),
            ("http://h/\u{7f}x", "control"),
            ("http://bü.de/", "must be ASCII"),
            ("http://h%2f/", "must have a host of ASCII"),
            ("http://h\\@evil/", "backslash"),
            ("http://h/a/../b", "must not have . or .."),
            ("http://h/%2e%2E/b", "must not have . or .."),
            ("http://h/a/.", "must not have . or .."),
            ("http://h/%zz", "percent-encode"),
            ("http://h/a?b=<", "percent-encode"),
            ("http://h/a?b='", "percent-encode"),
            ("http://[::1/", "unclosed"),
            ("http://[zz]/", "invalid IPv6"),
            ("http://[::1]x/", "junk"),
            ("http://[::ffff:1.2.3.4]/", "IPv4 part"),
            ("http://00/", "numeric host"),
            ("http://127.1/", "numeric host"),
            ("http://0x7f.0.0.1/", "numeric host"),
            ("http://a.0x1/", "numeric host"),
            ("http://1.2.3.256/", "numeric host"),
            ("http://1.2.3.4./", "numeric host"),
        ] {
            let err = Url::parse(input).unwrap_err();
            assert!(err.contains(why), "{input}: {err}");
        }
    }

    #[test]
    fn moves_to_another_origin_and_appends_form_pairs() {
        let u = Url::parse("https://sso.example.com/realms/dev/token?a=1").unwrap();
        let origin = Url::parse("http://keycloak.svc:8080").unwrap();
        assert_eq!(
            u.moved_to(&origin).as_str(),
            "http://keycloak.svc:8080/realms/dev/token?a=1"
        );
        let mut u = Url::parse("https://sso.example.com/auth").unwrap();
        u.append_pairs(&[("redirect_uri", "https://app/cb?x=1 2"), ("state", "s&t")]);
        assert_eq!(
            u.as_str(),
            "https://sso.example.com/auth?redirect_uri=https%3A%2F%2Fapp%2Fcb%3Fx%3D1+2&state=s%26t"
        );
        let mut u = Url::parse("https://sso.example.com/auth?kc_idp_hint=x").unwrap();
        u.append_pairs(&[("a", "b")]);
        assert_eq!(u.query(), Some("kc_idp_hint=x&a=b"));
    }

    /// What this parser accepts, the WHATWG parser (the `url` crate, as browsers) reads the same.
    #[test]
    fn agrees_with_whatwg_on_what_it_accepts() {
        for input in [
            "HTTPS://SSO.Example.com:443/realms/dev/protocol?x=1&y=%2F",
            "http://keycloak:80",
            "http://keycloak:8080/a/b/?c=d/e?f",
            "http://[::1]:9000/t",
            "http://[0:0::0:1]:9000/t",
            "http://[FE80:0:0:0:0:0:0:1]/",
            "http://127.0.0.1:8080/x",
            "http://10.0.0.255/",
            "http://a.1b/",
            "http://0x.example/",
            "https://h/a;b=c/@:!$'()*+,",
            "https://h/%41%e2%82%ac",
            "http://a_b.c-d.e./",
        ] {
            let ours = Url::parse(input).unwrap();
            let theirs = url::Url::parse(input).unwrap();
            assert_eq!(ours.as_str(), theirs.as_str(), "{input}");
            assert_eq!(Some(ours.host_str()), theirs.host_str(), "{input}");
            assert_eq!(ours.port(), theirs.port(), "{input}");
            assert_eq!(ours.path(), theirs.path(), "{input}");
            assert_eq!(ours.query(), theirs.query(), "{input}");
        }
    }
}
