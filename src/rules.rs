//! Authorization rules (B7): per path prefix and optionally method, the scopes, Keycloak realm and
//! client roles, and `acr` values a valid token must carry. The first rule whose path and method
//! match decides; no rule matching: the valid token is enough. Values are compared literally.

use crate::json::{Map, Value};

use crate::metrics::Event;
use crate::web::Reply;

/// One entry of `rules`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rule {
    /// A path prefix, matched against the normalised path (as `skip_paths`).
    pub path: String,
    /// Upper-case methods; empty: any method.
    pub methods: Vec<String>,
    /// Every one of these must be in the token's `scope` (space-separated).
    pub scopes: Vec<String>,
    /// Every one of these must be in `realm_access.roles`.
    pub realm_roles: Vec<String>,
    /// For each client, every listed role must be in `resource_access.<client>.roles`.
    pub client_roles: Vec<(String, Vec<String>)>,
    /// When not empty, the token's `acr` must be one of these.
    pub acr: Vec<String>,
}

/// Why a token failed its rule (for the log and `error_description`; never a claim value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    Scope,
    RealmRole,
    ClientRole,
    Acr,
    /// The path cannot be put in normal form, so no rule can be trusted to match it.
    Path,
}

impl Denied {
    pub fn description(&self) -> &'static str {
        match self {
            Denied::Scope => "a required scope is missing",
            Denied::RealmRole => "a required realm role is missing",
            Denied::ClientRole => "a required client role is missing",
            Denied::Acr => "the authentication context is not accepted",
            Denied::Path => "the path cannot be checked against the rules",
        }
    }
}

impl Rule {
    /// A literal prefix, as the contract says: `/api/v1` also covers `/api/v1beta` (a rule that
    /// covers too much denies; one that covers too little would let through).
    fn applies(&self, method: &str, path: &str) -> bool {
        path.starts_with(self.path.as_str())
            && (self.methods.is_empty() || self.methods.iter().any(|m| m == method))
    }

    fn check(&self, claims: &Map<String, Value>) -> Result<(), Denied> {
        let scope: Vec<&str> = claims
            .get("scope")
            .and_then(Value::as_str)
            .map(|s| s.split(' ').filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        if !self.scopes.iter().all(|s| scope.contains(&s.as_str())) {
            return Err(Denied::Scope);
        }
        let realm = strings_at(claims, &["realm_access", "roles"]);
        if !self.realm_roles.iter().all(|r| realm.contains(&r.as_str())) {
            return Err(Denied::RealmRole);
        }
        for (client, roles) in &self.client_roles {
            let held = strings_at(claims, &["resource_access", client, "roles"]);
            if !roles.iter().all(|r| held.contains(&r.as_str())) {
                return Err(Denied::ClientRole);
            }
        }
        if !self.acr.is_empty() {
            let acr = claims.get("acr").and_then(Value::as_str);
            if !acr.is_some_and(|a| self.acr.iter().any(|x| x == a)) {
                return Err(Denied::Acr);
            }
        }
        Ok(())
    }
}

fn strings_at<'a>(claims: &'a Map<String, Value>, path: &[&str]) -> Vec<&'a str> {
    let mut current: Option<&Value> = None;
    for (i, part) in path.iter().enumerate() {
        current = if i == 0 {
            claims.get(*part)
        } else {
            current.and_then(|v| v.get(part))
        };
    }
    current
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Checks a verified token's claims against the first rule that matches `method` and the raw
/// request `path` (query included; it is normalised here, as for `skip_paths`).
pub fn check(
    rules: &[Rule],
    method: &str,
    path: &str,
    claims: &Map<String, Value>,
) -> Result<(), Denied> {
    if rules.is_empty() {
        return Ok(());
    }
    // Fail closed: a path that cannot be normalised could be read differently by the service.
    let Ok(normal) = crate::paths::normalise(path) else {
        return Err(Denied::Path);
    };
    match rules.iter().find(|r| r.applies(method, normal.as_str())) {
        Some(rule) => rule.check(claims),
        None => Ok(()),
    }
}

/// 403 for a valid token that fails its rule: `insufficient_scope` and JSON for an API call
/// (RFC 6750 §3.1), a small page for a page.
pub fn forbidden(denied: &Denied, page: bool, request_id: &str) -> Reply {
    let reply = if page {
        let mut r = crate::login::error_page(
            403,
            "You are signed in, but not allowed to see this page.",
            request_id,
        );
        r.body = String::from_utf8_lossy(&r.body)
            .replace("Sign-in problem", "Not allowed")
            .into_bytes();
        r
    } else {
        Reply::json(
            403,
            &crate::web::error_body("insufficient_scope", denied.description()),
        )
        .with_header(
            "www-authenticate",
            format!(
                "Bearer error=\"insufficient_scope\", error_description=\"{}\"",
                denied.description()
            ),
        )
    };
    reply.counting(Event::Forbidden)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn claims(v: Value) -> Map {
        crate::json::map(v)
    }

    fn reviewer_rules() -> Vec<Rule> {
        vec![
            Rule {
                path: "/reviews/admin".into(),
                realm_roles: vec!["admin".into()],
                ..Rule::default()
            },
            Rule {
                path: "/reviews".into(),
                methods: vec!["POST".into()],
                scopes: vec!["reviews:write".into()],
                client_roles: vec![("reviews".into(), vec!["reviewer".into()])],
                ..Rule::default()
            },
            Rule {
                path: "/secure/".into(),
                acr: vec!["2".into()],
                ..Rule::default()
            },
        ]
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let alice = claims(json!({
            "scope": "openid reviews:write",
            "realm_access": {"roles": ["user"]},
            "resource_access": {"reviews": {"roles": ["reviewer"]}},
            "acr": "1"
        }));
        let r = reviewer_rules();
        assert_eq!(check(&r, "POST", "/reviews/0", &alice), Ok(()));
        assert_eq!(
            check(&r, "GET", "/reviews/0", &alice),
            Ok(()),
            "GET: no rule"
        );
        assert_eq!(
            check(&r, "GET", "/reviews/admin/x", &alice),
            Err(Denied::RealmRole)
        );
        assert_eq!(
            check(&r, "POST", "/reviewsX", &alice),
            Ok(()),
            "a literal prefix: the rule applies, and alice passes it"
        );
        let bob = claims(json!({"scope": "openid"}));
        assert_eq!(check(&r, "POST", "/reviewsX", &bob), Err(Denied::Scope));
        assert_eq!(check(&r, "GET", "/secure/a", &alice), Err(Denied::Acr));
        // The rule's path is matched in normal form: no escape through dot segments or escapes.
        assert_eq!(
            check(&r, "GET", "/static/../reviews/admin", &alice),
            Err(Denied::RealmRole)
        );
        assert_eq!(
            check(&r, "GET", "/reviews/%61dmin?x", &alice),
            Err(Denied::RealmRole)
        );
        assert_eq!(
            check(&r, "GET", "/reviews/..%2Fadmin", &alice),
            Err(Denied::Path)
        );
        assert_eq!(check(&[], "GET", "/..%2F", &alice), Ok(()), "no rules");
    }

    #[test]
    fn values_are_compared_literally() {
        let r = reviewer_rules();
        for (what, c) in [
            (
                "no scope claim",
                json!({"resource_access": {"reviews": {"roles": ["reviewer"]}}}),
            ),
            (
                "a scope prefix",
                json!({"scope": "reviews:writer", "resource_access": {"reviews": {"roles": ["reviewer"]}}}),
            ),
            (
                "a pattern",
                json!({"scope": "reviews:*", "resource_access": {"reviews": {"roles": ["reviewer"]}}}),
            ),
            (
                "roles of another client",
                json!({"scope": "reviews:write", "resource_access": {"details": {"roles": ["reviewer"]}}}),
            ),
            (
                "roles as a string",
                json!({"scope": "reviews:write", "resource_access": {"reviews": {"roles": "reviewer"}}}),
            ),
        ] {
            assert!(
                check(&r, "POST", "/reviews/1", &claims(c)).is_err(),
                "{what}"
            );
        }
    }

    #[test]
    fn forbidden_replies() {
        let api = forbidden(&Denied::Scope, false, "rid");
        assert_eq!(api.status, 403);
        assert_eq!(
            api.header("www-authenticate"),
            Some("Bearer error=\"insufficient_scope\", error_description=\"a required scope is missing\"")
        );
        let page = forbidden(&Denied::Scope, true, "rid");
        assert_eq!(page.status, 403);
        assert!(String::from_utf8_lossy(&page.body).contains("not allowed"));
    }
}
