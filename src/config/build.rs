//! `build`: the configuration object, key by key, into a `Config` that cannot hold a bad value.

use super::secrets::{client_secrets, session_keys, FromClientSecrets};
use super::*;
use crate::rules::Rule;

/// The whole configuration, stage by stage (each stage a function of its own: see [`provider`]).
#[inline(never)]
pub(super) fn build(root: &mut Obj) -> Result<Config, ConfigError> {
    let mode_name = root
        .string("mode")?
        .ok_or_else(|| ConfigError::new("mode", "is required (\"login\" or \"validate\")"))?;
    let login = match mode_name.as_str() {
        "login" => true,
        "validate" => false,
        _ => {
            return Err(ConfigError::new(
                "mode",
                "must be \"login\" or \"validate\"",
            ))
        }
    };
    let Provider {
        issuer,
        mut endpoints,
        jwks,
        cluster,
        mut from_secrets,
        mut warnings,
    } = provider(root)?;
    let client = client(root, &mut from_secrets, &mut warnings)?;

    let scopes = scopes(root)?;

    let session_keys = session_keys(root)?;
    let public_origins = root
        .strings("public_origins")?
        .unwrap_or_default()
        .iter()
        .map(|s| parse_origin(s))
        .collect::<Result<Vec<_>, _>>()?;
    let trust_forwarded_proto = match root.take("trust_forwarded_proto") {
        None => false,
        Some(Value::Bool(b)) => b,
        Some(_) => {
            return Err(ConfigError::new(
                "trust_forwarded_proto",
                "must be true or false",
            ))
        }
    };

    let backchannel_logout_path = match root.string("backchannel_logout_path")? {
        None => None,
        Some(p) => Some(local_path("backchannel_logout_path", p)?),
    };
    let (callback_path, logout_path, post_logout_redirect) =
        login_paths(root, from_secrets.callback_path.take())?;

    let cookie = build_cookie(root.object("cookie")?)?;

    let audiences = root.strings("audiences")?.unwrap_or_default();
    let authorized_parties = root.strings("authorized_parties")?.unwrap_or_default();
    if !login && audiences.is_empty() && authorized_parties.is_empty() {
        return Err(ConfigError::new(
            "audiences",
            "validate mode needs at least one of audiences and authorized_parties",
        ));
    }

    let skip_paths = skip_paths(root)?;

    let claims_to_headers = claims_to_headers(root)?;

    let clock_skew_seconds = root.integer("clock_skew_seconds", 0, 600)?.unwrap_or(30);
    let timeout_ms = root.integer("timeout_ms", 1, 60_000)?.unwrap_or(5000);
    let jwks_refresh_seconds = root
        .integer("jwks_refresh_seconds", 10, 86_400)?
        .unwrap_or(300);
    let on_upstream_401 = on_upstream_401(root)?;
    let upstream_401_services = upstream_401_services(root)?;
    let access_rules = access_rules(root)?;

    let introspection_endpoint = endpoints
        .remove("introspection_endpoint")
        .map(Endpoint::from_url);
    // Checked above like every endpoint; nothing calls userinfo (the token carries the claims).
    endpoints.remove("userinfo_endpoint");
    let introspection = introspection(
        root,
        introspection_endpoint.as_ref(),
        (client.id.as_ref(), client.secret.as_ref()),
        client.auth,
    )?;
    if introspection.is_some() && login {
        return Err(ConfigError::new(
            "introspection.enabled",
            "is for validate mode (login mode checks its own session)",
        ));
    }

    let client_id = client.id.clone();
    let mode = if login {
        let needed = login_needs(client, session_keys, &mut endpoints)?;
        Mode::Login(Box::new(LoginConfig {
            client_secret: needed.client_secret,
            client_auth: needed.client_auth,
            session_keys: needed.session_keys,
            public_origins,
            scopes,
            callback_path,
            logout_path,
            backchannel_logout_path,
            post_logout_redirect,
            on_upstream_401,
            upstream_401_services,
            authorization_endpoint: needed.authorization_endpoint,
            token_endpoint: Endpoint::from_url(needed.token_endpoint),
            end_session_endpoint: endpoints.remove("end_session_endpoint"),
            revocation_endpoint: endpoints
                .remove("revocation_endpoint")
                .map(Endpoint::from_url),
        }))
    } else {
        Mode::Validate
    };

    let client_id_as_audience = match (&mode, audiences.is_empty()) {
        (Mode::Login(_), true) => client_id.clone(),
        _ => None,
    };

    Ok(Config {
        mode,
        client_id,
        rules: TokenRules {
            issuer,
            audiences,
            authorized_parties,
            client_id_as_audience,
            clock_skew_seconds,
        },
        jwks: Endpoint::from_url(jwks),
        introspection_endpoint,
        cluster,
        cookie,
        skip_paths,
        claims_to_headers,
        timeout_ms,
        jwks_refresh_seconds,
        trust_forwarded_proto,
        access_rules,
        introspection,
        warnings,
        discovery: endpoints.remove("discovery_url").map(Endpoint::from_url),
        awaiting_discovery: false,
    })
}

/// Where the provider is: its issuer, endpoints and key set, and the cluster that reaches it.
struct Provider {
    issuer: String,
    endpoints: Named<Url>,
    jwks: Url,
    cluster: String,
    from_secrets: FromClientSecrets,
    warnings: Vec<String>,
}

/// `keycloak`, `client_secrets`, `oidc` and `cluster`. Each stage of `build` is a function of its
/// own (`inline(never)`): V8 compiles every function with TurboFan when the module loads, and the
/// memory that takes grows with the largest function (docs/benchmark-notes.md).
#[inline(never)]
fn provider(root: &mut Obj) -> Result<Provider, ConfigError> {
    // Keycloak: the public URL for what the browser follows, the internal one for the pod.
    let mut derived: Named<String> = Named::default();
    let mut internal_url: Option<Url> = None;
    if let Some(kc) = root.object("keycloak")? {
        internal_url = Some(keycloak(kc, &mut derived)?);
    }

    // flask-oidc's client_secrets.json `web` object: the seed application's configuration.
    let mut from_secrets = FromClientSecrets::default();
    if let Some(cs) = root.object("client_secrets")? {
        if internal_url.is_some() {
            return Err(ConfigError::new(
                "client_secrets",
                "cannot be combined with keycloak (use one of them)",
            ));
        }
        from_secrets = client_secrets(cs, &mut derived)?;
        internal_url = from_secrets.internal_url.clone();
    }

    let (issuer, mut endpoints) = oidc_endpoints(root, &derived)?;
    let issuer = issuer.ok_or_else(|| {
        ConfigError::new(
            "oidc.issuer",
            "is required (or set keycloak.public_url, keycloak.internal_url and keycloak.realm)",
        )
    })?;
    let mut warnings = Vec::new();
    if issuer.ends_with('/') {
        warnings.push(format!(
            "oidc.issuer {issuer:?} ends with /: tokens must carry exactly this iss (Keycloak's has no trailing /)"
        ));
    }
    if !from_secrets.ignored.is_empty() {
        warnings.push(format!(
            "client_secrets: ignoring the fields mesh-oidc does not use: {}",
            from_secrets.ignored.join(", ")
        ));
    }
    let jwks = endpoints.remove("jwks_uri").ok_or_else(|| {
        ConfigError::new(
            "oidc.jwks_uri",
            "is required (or set keycloak.public_url, keycloak.internal_url and keycloak.realm)",
        )
    })?;

    // Istio names the cluster of a Service `outbound|PORT||HOST`.
    let cluster_source = internal_url.unwrap_or_else(|| jwks.clone());
    let cluster = match root.nonempty_string("cluster")? {
        Some(c) => c,
        None => {
            let host = cluster_source.host_str();
            let port = cluster_source.port_or_default();
            format!("outbound|{port}||{host}")
        }
    };
    Ok(Provider {
        issuer,
        endpoints,
        jwks,
        cluster,
        from_secrets,
        warnings,
    })
}

/// Who the filter is to the provider.
struct Client {
    id: Option<String>,
    secret: Option<Secret>,
    auth: ClientAuth,
}

/// `client_id`, `client_secret` and `client_auth_method` (or `client_secrets`' own).
#[inline(never)]
fn client(
    root: &mut Obj,
    from_secrets: &mut FromClientSecrets,
    warnings: &mut Vec<String>,
) -> Result<Client, ConfigError> {
    let id = match (
        root.nonempty_string("client_id")?,
        from_secrets.client_id.take(),
    ) {
        (Some(a), Some(b)) if a != b => {
            return Err(ConfigError::new(
                "client_id",
                "differs from client_secrets.client_id",
            ))
        }
        (a, b) => a.or(b),
    };
    if let Some(id) = &id {
        if id.chars().any(|c| c.is_control()) {
            return Err(ConfigError::new(
                "client_id",
                "must not contain control characters",
            ));
        }
    }
    let secret = root
        .nonempty_string("client_secret")?
        .map(Secret::new)
        .or(from_secrets.client_secret.take());
    if secret
        .as_ref()
        .is_some_and(|s| super::secrets::is_placeholder(s.expose()))
    {
        warnings.push(
            "client_secret looks like a placeholder: the provider will refuse the code exchange (invalid_client) unless it holds the same placeholder".into(),
        );
    }
    let auth = match root.string("client_auth_method")?.as_deref() {
        None | Some("client_secret_basic") => ClientAuth::Basic,
        Some("client_secret_post") => ClientAuth::Post,
        Some(_) => {
            return Err(ConfigError::new(
                "client_auth_method",
                "must be \"client_secret_basic\" or \"client_secret_post\"",
            ))
        }
    };
    Ok(Client { id, secret, auth })
}

/// What login mode cannot do without.
struct LoginNeeds {
    client_secret: Secret,
    client_auth: ClientAuth,
    session_keys: SessionKeys,
    authorization_endpoint: Url,
    token_endpoint: Url,
}

#[inline(never)]
fn login_needs(
    client: Client,
    session_keys: Option<SessionKeys>,
    endpoints: &mut Named<Url>,
) -> Result<LoginNeeds, ConfigError> {
    if client.id.is_none() {
        return Err(ConfigError::new("client_id", "is required in login mode"));
    }
    let client_secret = client
        .secret
        .ok_or_else(|| ConfigError::new("client_secret", "is required in login mode"))?;
    let session_keys = session_keys
        .ok_or_else(|| ConfigError::new("session_secret", "is required in login mode"))?;
    let authorization_endpoint = endpoints.remove("authorization_endpoint").ok_or_else(|| {
        ConfigError::new("oidc.authorization_endpoint", "is required in login mode")
    })?;
    let token_endpoint = endpoints
        .remove("token_endpoint")
        .ok_or_else(|| ConfigError::new("oidc.token_endpoint", "is required in login mode"))?;
    Ok(LoginNeeds {
        client_secret,
        client_auth: client.auth,
        session_keys,
        authorization_endpoint,
        token_endpoint,
    })
}

/// `introspection.*` (V3): `None` unless enabled; then the endpoint and a client to call it as
/// (its own `client_id`/`client_secret`, else the top-level ones) are required.
#[inline(never)]
fn introspection(
    root: &mut Obj,
    endpoint: Option<&Endpoint>,
    client: (Option<&String>, Option<&Secret>),
    client_auth: ClientAuth,
) -> Result<Option<Introspection>, ConfigError> {
    let Some(mut obj) = root.object("introspection")? else {
        return Ok(None);
    };
    let enabled = match obj.take("enabled") {
        None | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(_) => {
            return Err(ConfigError::new(
                "introspection.enabled",
                "must be true or false",
            ))
        }
    };
    let cache_seconds = obj.integer("cache_seconds", 0, 3600)?.unwrap_or(30);
    let own_id = obj.nonempty_string("client_id")?;
    let own_secret = obj.nonempty_string("client_secret")?.map(Secret::new);
    obj.finish()?;
    if !enabled {
        return Ok(None);
    }
    let endpoint = endpoint.cloned().ok_or_else(|| {
        ConfigError::new(
            "oidc.introspection_endpoint",
            "is required when introspection.enabled is true (or set keycloak.*)",
        )
    })?;
    let client_id = own_id.or_else(|| client.0.cloned()).ok_or_else(|| {
        ConfigError::new(
            "introspection.client_id",
            "is required when introspection.enabled is true (or set client_id)",
        )
    })?;
    let client_secret = own_secret.or_else(|| client.1.cloned()).ok_or_else(|| {
        ConfigError::new(
            "introspection.client_secret",
            "is required when introspection.enabled is true (or set client_secret)",
        )
    })?;
    Ok(Some(Introspection {
        endpoint,
        cache_seconds,
        client_id,
        client_secret,
        client_auth,
    }))
}

/// `rules` (B7): a list of `{path, methods, scopes, realm_roles, client_roles, acr}`.
#[inline(never)]
fn access_rules(root: &mut Obj) -> Result<Vec<Rule>, ConfigError> {
    let key = "rules";
    let items = match root.take(key) {
        None => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(ConfigError::new(key, "must be a list of rule objects")),
    };
    let mut rules = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let prefix = format!("rules[{i}]");
        let Value::Object(map) = item else {
            return Err(ConfigError::new(prefix, "must be an object with a path"));
        };
        let mut obj = Obj::new(&prefix, map);
        let path = obj
            .nonempty_string("path")?
            .ok_or_else(|| ConfigError::new(obj.key("path"), "is required (a path prefix)"))?;
        if !path.starts_with('/') || path.contains(['?', '#', '*']) {
            return Err(ConfigError::new(
                obj.key("path"),
                "must be a path prefix starting with / (no query, fragment or *)",
            ));
        }
        match paths::normalise(&path) {
            Ok(normal) if normal.as_str() == path => {}
            _ => {
                return Err(ConfigError::new(
                    obj.key("path"),
                    "must be in normal form (requests are matched in normal form)",
                ))
            }
        }
        let methods: Vec<String> = obj
            .strings("methods")?
            .unwrap_or_default()
            .iter()
            .map(|m| m.to_ascii_uppercase())
            .collect();
        let scopes = obj.strings("scopes")?.unwrap_or_default();
        let realm_roles = obj.strings("realm_roles")?.unwrap_or_default();
        let acr = obj.strings("acr")?.unwrap_or_default();
        let mut client_roles = Vec::new();
        if let Some(clients) = obj.object("client_roles")? {
            let mut clients = clients;
            let names: Vec<String> = clients.map.keys().cloned().collect();
            for client in names {
                let roles = clients.strings(&client)?.unwrap_or_default();
                client_roles.push((client, roles));
            }
            clients.finish()?;
        }
        obj.finish()?;
        rules.push(Rule {
            path,
            methods,
            scopes,
            realm_roles,
            client_roles,
            acr,
        });
    }
    Ok(rules)
}

/// `keycloak.*`: the endpoints derived from the two URLs and the realm (public for what the
/// browser follows, internal for what the pod calls); returns the internal URL.
/// A host name only the cluster resolves.
fn is_cluster_local(host: &str) -> bool {
    let host = host.trim_end_matches('.');
    host.ends_with(".svc")
        || host.ends_with(".svc.cluster.local")
        || host.ends_with(".cluster.local")
}

#[inline(never)]
fn keycloak(mut kc: Obj, derived: &mut Named<String>) -> Result<Url, ConfigError> {
    let public = kc
        .url("public_url")?
        .ok_or_else(|| ConfigError::new("keycloak.public_url", "is required"))?;
    let internal = kc
        .url("internal_url")?
        .ok_or_else(|| ConfigError::new("keycloak.internal_url", "is required"))?;
    let realm = kc
        .nonempty_string("realm")?
        .ok_or_else(|| ConfigError::new("keycloak.realm", "is required"))?;
    if realm.contains(['/', '?', '#', '%', '\\']) || realm.chars().any(char::is_whitespace) {
        return Err(ConfigError::new(
            "keycloak.realm",
            "must be a plain realm name (no /, ?, #, %, \\ or space)",
        ));
    }
    kc.finish()?;
    // The mistakes of the seed's own history: the two URLs swapped, the issuer pasted whole.
    for (key, url) in [
        ("keycloak.public_url", &public),
        ("keycloak.internal_url", &internal),
    ] {
        if url.path().contains("/realms/") {
            return Err(ConfigError::new(
                key,
                "must be Keycloak's base URL (e.g. https://sso.example.com), without /realms/…: the realm goes in keycloak.realm",
            ));
        }
    }
    if is_cluster_local(public.host_str()) {
        return Err(ConfigError::new(
            "keycloak.public_url",
            "names a Kubernetes Service, which browsers cannot reach: public_url is what the browser uses (and what Keycloak puts in iss), internal_url what the sidecar calls — are they swapped?",
        ));
    }
    let public_base = format!(
        "{}/realms/{realm}",
        base_url("keycloak.public_url", public)?
    );
    let internal_base = format!(
        "{}/realms/{realm}",
        base_url("keycloak.internal_url", internal.clone())?
    );
    let oidc = "/protocol/openid-connect";
    derived.insert("issuer", public_base.clone());
    derived.insert(
        "authorization_endpoint",
        format!("{public_base}{oidc}/auth"),
    );
    derived.insert(
        "end_session_endpoint",
        format!("{public_base}{oidc}/logout"),
    );
    derived.insert("token_endpoint", format!("{internal_base}{oidc}/token"));
    derived.insert("jwks_uri", format!("{internal_base}{oidc}/certs"));
    derived.insert(
        "introspection_endpoint",
        format!("{internal_base}{oidc}/token/introspect"),
    );
    derived.insert(
        "userinfo_endpoint",
        format!("{internal_base}{oidc}/userinfo"),
    );
    derived.insert(
        "revocation_endpoint",
        format!("{internal_base}{oidc}/revoke"),
    );
    derived.insert(
        "discovery_url",
        format!("{internal_base}/.well-known/openid-configuration"),
    );
    Ok(internal)
}

/// `oidc.*`: each explicit endpoint, else the derived one; the issuer as given (a URL).
#[inline(never)]
fn oidc_endpoints(
    root: &mut Obj,
    derived: &Named<String>,
) -> Result<(Option<String>, Named<Url>), ConfigError> {
    let mut endpoints: Named<Url> = Named::default();
    let mut issuer: Option<String> = derived.get("issuer").cloned();
    let mut oidc = root.object("oidc")?;
    for name in [
        "issuer",
        "authorization_endpoint",
        "token_endpoint",
        "jwks_uri",
        "end_session_endpoint",
        "introspection_endpoint",
        "userinfo_endpoint",
        "revocation_endpoint",
        "discovery_url",
    ] {
        let key = format!("oidc.{name}");
        let explicit = match oidc.as_mut() {
            Some(o) => o.string(name)?,
            None => None,
        };
        if name == "issuer" {
            if let Some(s) = explicit {
                // `iss` is compared as a string; still, it must be a URL.
                parse_url(&key, &s)?;
                issuer = Some(s);
            }
            continue;
        }
        let chosen = match explicit {
            Some(s) => Some(parse_url(&key, &s)?),
            None => derived.get(name).map(|s| parse_url(&key, s)).transpose()?,
        };
        if let Some(url) = chosen {
            endpoints.insert(name, url);
        }
    }
    if let Some(o) = oidc {
        o.finish()?;
    }
    Ok((issuer, endpoints))
}

/// `skip_paths`: exact paths, or prefixes ending in `*`, each in normal form (requests are
/// matched in normal form, B4+).
#[inline(never)]
fn skip_paths(root: &mut Obj) -> Result<Vec<PathMatch>, ConfigError> {
    let mut skip_paths = Vec::new();
    for entry in root.strings("skip_paths")?.unwrap_or_default() {
        if !entry.starts_with('/') {
            return Err(ConfigError::new(
                "skip_paths",
                format!("{entry:?} must start with /"),
            ));
        }
        let m = match entry.strip_suffix('*') {
            Some(prefix) => PathMatch::Prefix(prefix.to_string()),
            None => PathMatch::Exact(entry.clone()),
        };
        let body = match &m {
            PathMatch::Exact(p) | PathMatch::Prefix(p) => p,
        };
        if body.contains(['*', '?', '#']) {
            return Err(ConfigError::new(
                "skip_paths",
                format!("{entry:?}: * is allowed only at the end, and no query or fragment"),
            ));
        }
        // Requests are matched in normal form, so an entry in another form would never match.
        match paths::normalise(body) {
            Ok(normal) if normal.as_str() == body => {}
            Ok(normal) => {
                return Err(ConfigError::new(
                    "skip_paths",
                    format!(
                        "{entry:?}: write it in normal form, as {:?}",
                        normal.as_str()
                    ),
                ))
            }
            Err(why) => {
                return Err(ConfigError::new(
                    "skip_paths",
                    format!("{entry:?} would never match: it has {why}"),
                ))
            }
        }
        skip_paths.push(m);
    }
    Ok(skip_paths)
}

/// `claims_to_headers`: (claim, lower-case header name), never a reserved header.
#[inline(never)]
fn claims_to_headers(root: &mut Obj) -> Result<Vec<(String, String)>, ConfigError> {
    let mut claims_to_headers = Vec::new();
    if let Some(obj) = root.object("claims_to_headers")? {
        for (claim, header) in obj.map {
            let key = format!("claims_to_headers.{claim}");
            let Value::String(header) = header else {
                return Err(ConfigError::new(key, "must be a header name (string)"));
            };
            let header = header.to_ascii_lowercase();
            if claim.is_empty() {
                return Err(ConfigError::new(key, "claim name must not be empty"));
            }
            if header.is_empty() || !header.chars().all(is_token_char) {
                return Err(ConfigError::new(key, "must be a valid header name"));
            }
            if RESERVED_HEADERS.contains(&header.as_str()) {
                return Err(ConfigError::new(
                    key,
                    format!("{header} is reserved and cannot carry a claim"),
                ));
            }
            claims_to_headers.push((claim, header));
        }
    }
    Ok(claims_to_headers)
}

/// `scopes`: printable tokens; `openid` always among them.
#[inline(never)]
fn scopes(root: &mut Obj) -> Result<Vec<String>, ConfigError> {
    let mut scopes = root
        .strings("scopes")?
        .unwrap_or_else(|| vec!["openid".into(), "profile".into(), "email".into()]);
    if scopes.iter().any(|s| {
        !s.chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\')
    }) {
        return Err(ConfigError::new(
            "scopes",
            "each scope must be printable ASCII without spaces, quotes or backslashes",
        ));
    }
    if !scopes.iter().any(|s| s == "openid") {
        scopes.insert(0, "openid".into());
    }
    Ok(scopes)
}

/// `callback_path`, `logout_path` (two different local paths) and `post_logout_redirect`.
#[inline(never)]
fn login_paths(
    root: &mut Obj,
    from_client_secrets: Option<String>,
) -> Result<(String, String, String), ConfigError> {
    let callback_path = local_path(
        "callback_path",
        root.string("callback_path")?
            .or(from_client_secrets)
            .unwrap_or_else(|| "/callback".into()),
    )?;
    let logout_path = local_path(
        "logout_path",
        root.string("logout_path")?
            .unwrap_or_else(|| "/logout".into()),
    )?;
    if callback_path == logout_path {
        return Err(ConfigError::new(
            "logout_path",
            "must differ from callback_path",
        ));
    }
    let post_logout_redirect = match root.string("post_logout_redirect")? {
        None => "/".to_string(),
        Some(s) if s.starts_with('/') => local_path("post_logout_redirect", s)?,
        Some(s) => parse_url("post_logout_redirect", &s)?.to_string(),
    };
    Ok((callback_path, logout_path, post_logout_redirect))
}

#[inline(never)]
fn on_upstream_401(root: &mut Obj) -> Result<Upstream401, ConfigError> {
    Ok(match root.string("on_upstream_401")?.as_deref() {
        None | Some("login") => Upstream401::Login,
        Some("refresh") => Upstream401::Refresh,
        Some("logout") => Upstream401::Logout,
        Some("pass") => Upstream401::Pass,
        Some(_) => {
            return Err(ConfigError::new(
                "on_upstream_401",
                "must be \"login\", \"refresh\", \"logout\" or \"pass\"",
            ))
        }
    })
}

/// `upstream_401_services`: the hosts whose 401s to outbound calls count (L7+).
#[inline(never)]
fn upstream_401_services(root: &mut Obj) -> Result<Vec<String>, ConfigError> {
    let hosts = root.strings("upstream_401_services")?.unwrap_or_default();
    for host in &hosts {
        let ok = host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_' | '[' | ']'));
        if !ok {
            return Err(ConfigError::new(
                "upstream_401_services",
                format!("{host:?} must be a host name, with an optional :port (as in the call's Host header)"),
            ));
        }
    }
    Ok(hosts.iter().map(|h| h.to_ascii_lowercase()).collect())
}

/// One entry of `public_origins`: `scheme://host[:port]`, nothing else.
fn parse_origin(s: &str) -> Result<Origin, ConfigError> {
    let key = "public_origins";
    let url = parse_url(key, s)?;
    if url.path() != "/" || url.query().is_some() || s.trim_end_matches('/').len() < s.len() - 1 {
        return Err(ConfigError::new(
            key,
            format!("{s:?} must be an origin: scheme://host[:port], no path or query"),
        ));
    }
    let authority = url.authority();
    Ok(Origin {
        https: url.scheme() == "https",
        authority,
    })
}
