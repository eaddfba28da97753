#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! What operators deploy must agree with the filter and with itself: every configuration in
//! istio/ and deploy/compose/ is accepted by the filter's own parser, and the values that must be
//! equal in several files (client secret, redirect URIs, Keycloak's public URL and the `iss` it
//! stamps) are.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use mesh_oidc::config::Config;
use serde_json::Value as Json;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const WASM_FILTER_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const HCM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const COMPOSE_ENVOY: &str = "deploy/compose/envoy.yaml";
const COMPOSE: &str = "deploy/compose/compose.yaml";
const REALM: &str = "istio/keycloak/realm-dev.json";

fn path(rel: &str) -> PathBuf {
    Path::new(REPO).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every document of a (multi-document) YAML file, as JSON values.
fn yaml_docs(rel: &str) -> Vec<Json> {
    let text = read(rel);
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let value = <serde_yaml::Value as serde::Deserialize>::deserialize(doc)
                .unwrap_or_else(|e| panic!("{rel}: not valid YAML: {e}"));
            serde_json::to_value(value).unwrap_or_else(|e| panic!("{rel}: {e}"))
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn yaml_doc(rel: &str) -> Json {
    let mut docs = yaml_docs(rel);
    assert_eq!(docs.len(), 1, "{rel}: expected one YAML document");
    docs.remove(0)
}

/// Repository-relative paths of the YAML files under `dir`, sorted.
fn yaml_files(dir: &str) -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let p = entry.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
                out.push(p);
            }
        }
    }
    let mut found = Vec::new();
    walk(&path(dir), &mut found);
    let mut rels: Vec<String> = found
        .iter()
        .map(|p| {
            p.strip_prefix(REPO)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/")
        })
        .collect();
    rels.sort();
    rels
}

/// The session secret placeholder every shipped manifest carries: the filter must refuse it, so
/// that nothing runs with a secret anyone can read here.
const SECRET_PLACEHOLDER: &str = "PLACEHOLDER+replace+with+openssl+rand+base64+32+CHANGEME";
/// What an operator puts in its place (`openssl rand -base64 32`).
const REAL_SECRET: &str = "3q2+7wGm0sX9yVb1nLk4TzH8cJpR6uFeDaQiWoYtN5M=";

/// Parses a shipped configuration as the operator will run it: a `session_secret` placeholder is
/// first shown to be refused, then replaced by a real secret.
fn parse_config(origin: &str, config: &Json) -> Config {
    let mut config = config.clone();
    if config["session_secret"] == SECRET_PLACEHOLDER {
        let refused = Config::parse(config.to_string().as_bytes())
            .err()
            .unwrap_or_else(|| panic!("{origin}: the placeholder session_secret was accepted"));
        assert!(
            refused.to_string().starts_with("session_secret: "),
            "{origin}: {refused}"
        );
        config["session_secret"] = Json::from(REAL_SECRET);
    }
    Config::parse(config.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("{origin}: the filter refuses this configuration: {e}"))
}

fn str_at<'a>(v: &'a Json, pointer: &str, origin: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Json::as_str)
        .unwrap_or_else(|| panic!("{origin}: no string at {pointer}"))
}

/// A filter configuration and where it came from.
struct FilterConfig {
    origin: String,
    raw: Json,
    config: Config,
}

impl FilterConfig {
    fn is_login(&self) -> bool {
        self.config.login().is_some()
    }
    fn realm(&self) -> &str {
        str_at(&self.raw, "/keycloak/realm", &self.origin)
    }
    fn public_url(&self) -> &str {
        str_at(&self.raw, "/keycloak/public_url", &self.origin)
    }
}

struct WasmPlugin {
    origin: String,
    doc: Json,
    filter: FilterConfig,
}

impl WasmPlugin {
    fn on_gateway(&self) -> bool {
        self.doc
            .pointer("/spec/selector/matchLabels/istio")
            .is_some()
    }
}

/// Every WasmPlugin under istio/, its pluginConfig parsed by the filter.
fn wasm_plugins() -> Vec<WasmPlugin> {
    let mut plugins = Vec::new();
    for file in yaml_files("istio") {
        for doc in yaml_docs(&file) {
            if doc["kind"] != "WasmPlugin" {
                continue;
            }
            let origin = format!("{file} WasmPlugin {}", doc["metadata"]["name"]);
            let raw = doc
                .pointer("/spec/pluginConfig")
                .unwrap_or_else(|| panic!("{origin}: no spec.pluginConfig"))
                .clone();
            let config = parse_config(&origin, &raw);
            plugins.push(WasmPlugin {
                filter: FilterConfig {
                    origin: origin.clone(),
                    raw,
                    config,
                },
                origin,
                doc,
            });
        }
    }
    plugins
}

/// Every `envoy.filters.http.wasm` config object in a JSON tree.
fn wasm_filter_configs<'a>(v: &'a Json, out: &mut Vec<&'a Json>) {
    match v {
        Json::Object(map) => {
            if map.get("@type").and_then(Json::as_str) == Some(WASM_FILTER_TYPE) {
                out.push(&map["config"]);
            }
            map.values()
                .for_each(|child| wasm_filter_configs(child, out));
        }
        Json::Array(items) => items
            .iter()
            .for_each(|child| wasm_filter_configs(child, out)),
        _ => {}
    }
}

/// Every HttpConnectionManager configuration in a JSON tree.
fn connection_managers<'a>(v: &'a Json, out: &mut Vec<&'a Json>) {
    match v {
        Json::Object(map) => {
            if map.get("@type").and_then(Json::as_str) == Some(HCM_TYPE) {
                out.push(v);
            }
            map.values()
                .for_each(|child| connection_managers(child, out));
        }
        Json::Array(items) => items
            .iter()
            .for_each(|child| connection_managers(child, out)),
        _ => {}
    }
}

/// B4+ and B3+ at the door: the connection manager normalises paths (dot segments, `//`), refuses
/// %2F and %5C, and refuses header names with `_`, before mesh-oidc sees the request.
fn assert_path_and_header_hygiene(hcm: &Json, origin: &str) {
    assert_eq!(hcm["normalize_path"], true, "{origin}: normalize_path");
    assert_eq!(hcm["merge_slashes"], true, "{origin}: merge_slashes");
    assert_eq!(
        hcm["path_with_escaped_slashes_action"], "REJECT_REQUEST",
        "{origin}: path_with_escaped_slashes_action"
    );
    assert_eq!(
        hcm["common_http_protocol_options"]["headers_with_underscores_action"], "REJECT_REQUEST",
        "{origin}: common_http_protocol_options.headers_with_underscores_action"
    );
}

struct EnvoyFilter {
    vm_id: String,
    wasm_file: String,
    fail_open: bool,
    filter: FilterConfig,
}

/// The mesh-oidc filters of deploy/compose/envoy.yaml, each configuration parsed by the filter.
fn compose_envoy_filters() -> (Json, Vec<EnvoyFilter>) {
    let bootstrap = yaml_doc(COMPOSE_ENVOY);
    let mut found = Vec::new();
    wasm_filter_configs(&bootstrap, &mut found);
    let filters = found
        .into_iter()
        .map(|wasm| {
            let vm_id = str_at(wasm, "/vm_config/vm_id", COMPOSE_ENVOY).to_string();
            let origin = format!("{COMPOSE_ENVOY} vm_id {vm_id}");
            assert_eq!(
                wasm.pointer("/configuration/@type").and_then(Json::as_str),
                Some("type.googleapis.com/google.protobuf.StringValue"),
                "{origin}: the configuration must be a StringValue"
            );
            let text = str_at(wasm, "/configuration/value", &origin);
            let raw: Json = serde_json::from_str(text)
                .unwrap_or_else(|e| panic!("{origin}: configuration is not JSON: {e}"));
            let config = parse_config(&origin, &raw);
            EnvoyFilter {
                wasm_file: str_at(wasm, "/vm_config/code/local/filename", &origin).to_string(),
                fail_open: wasm["fail_open"].as_bool().unwrap_or(false),
                vm_id,
                filter: FilterConfig {
                    origin,
                    raw,
                    config,
                },
            }
        })
        .collect();
    (bootstrap, filters)
}

fn compose_service(name: &str) -> Json {
    let compose = yaml_doc(COMPOSE);
    compose["services"][name].clone()
}

/// The host port that publishes `container_port` of a compose service ("8000:8000",
/// "127.0.0.1:9901:9901").
fn published_port(service: &Json, container_port: u16, origin: &str) -> u16 {
    service["ports"]
        .as_array()
        .unwrap_or_else(|| panic!("{origin}: no ports"))
        .iter()
        .filter_map(Json::as_str)
        .find_map(|spec| {
            let parts: Vec<&str> = spec.split(':').collect();
            let container: u16 = parts.last()?.parse().ok()?;
            let host: u16 = parts.get(parts.len().checked_sub(2)?)?.parse().ok()?;
            (container == container_port).then_some(host)
        })
        .unwrap_or_else(|| panic!("{origin}: container port {container_port} is not published"))
}

fn compose_env(service: &Json, name: &str, origin: &str) -> String {
    service["environment"][name]
        .as_str()
        .unwrap_or_else(|| panic!("{origin}: no environment variable {name} (as a map entry)"))
        .to_string()
}

fn realm() -> Json {
    serde_json::from_str(&read(REALM)).unwrap_or_else(|e| panic!("{REALM}: {e}"))
}

fn realm_client<'a>(realm: &'a Json, client_id: &str) -> &'a Json {
    realm["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["clientId"] == client_id)
        .unwrap_or_else(|| panic!("{REALM}: no client {client_id}"))
}

fn strings(v: &Json) -> Vec<String> {
    v.as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// `${NAME}` -> Some("NAME"): a value Keycloak takes from its environment during the import.
fn env_placeholder(value: &str) -> Option<&str> {
    value.strip_prefix("${")?.strip_suffix('}')
}

/// What Keycloak in the cluster fills `${name}` with: Deployment env -> secretKeyRef ->
/// the kustomize secretGenerator literal.
fn istio_keycloak_env(name: &str) -> String {
    let origin = "istio/keycloak/deployment.yaml";
    let deployment = yaml_doc(origin);
    let env = deployment
        .pointer("/spec/template/spec/containers/0/env")
        .and_then(Json::as_array)
        .unwrap_or_else(|| panic!("{origin}: no container env"));
    let var = env
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("{origin}: no env {name}"));
    if let Some(value) = var["value"].as_str() {
        return value.to_string();
    }
    let secret = str_at(var, "/valueFrom/secretKeyRef/name", origin);
    let key = str_at(var, "/valueFrom/secretKeyRef/key", origin);
    let kustomization = yaml_doc("istio/keycloak/kustomization.yaml");
    let generator = kustomization["secretGenerator"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|g| g["name"] == secret)
        .unwrap_or_else(|| {
            panic!("istio/keycloak/kustomization.yaml: no secretGenerator {secret}")
        });
    strings(&generator["literals"])
        .iter()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
        .unwrap_or_else(|| panic!("secretGenerator {secret}: no literal {key}"))
}

/// The origins Bookinfo is served at, in the mesh (the Gateway's https hosts) and in compose.
fn istio_bookinfo_origins() -> Vec<String> {
    let origin = "istio/gateway/gateway.yaml";
    let gateway = yaml_docs(origin)
        .into_iter()
        .find(|d| d["kind"] == "Gateway")
        .unwrap_or_else(|| panic!("{origin}: no Gateway"));
    let mut origins = BTreeSet::new();
    for server in gateway["spec"]["servers"].as_array().unwrap() {
        if server["port"]["protocol"] == "HTTPS" {
            for host in strings(&server["hosts"]) {
                origins.insert(format!("https://{host}"));
            }
        }
    }
    assert!(!origins.is_empty(), "{origin}: no HTTPS host");
    origins.into_iter().collect()
}

fn compose_bookinfo_origin() -> String {
    let port = published_port(&compose_service("envoy"), 8000, "compose envoy");
    format!("http://localhost:{port}")
}

/// The absolute URL Keycloak must accept as post_logout_redirect_uri.
fn post_logout_url(origin: &str, config: &Config) -> String {
    let target = &config.login().unwrap().post_logout_redirect;
    if target.starts_with('/') {
        format!("{origin}{target}")
    } else {
        target.clone()
    }
}

/// The realm's client accepts the redirect and post-logout URIs the filter will send from
/// `origin`, with the same client secret.
fn assert_realm_accepts(origin: &str, filter: &FilterConfig, expected_secret_in_realm: &str) {
    let realm = realm();
    let who = &filter.origin;
    assert_eq!(realm["realm"], filter.realm(), "{who}: realm name");
    let client_id = filter.config.client_id.as_deref().unwrap();
    let client = realm_client(&realm, client_id);
    let login = filter.config.login().unwrap();

    let redirect = format!("{origin}{}", login.callback_path);
    assert!(
        strings(&client["redirectUris"]).contains(&redirect),
        "{REALM}: client {client_id} must list {redirect} in redirectUris (for {who})"
    );
    let post_logout = post_logout_url(origin, &filter.config);
    let registered: Vec<&str> = client["attributes"]["post.logout.redirect.uris"]
        .as_str()
        .unwrap_or_default()
        .split("##")
        .collect();
    assert!(
        registered.contains(&post_logout.as_str()),
        "{REALM}: client {client_id} must list {post_logout} in post.logout.redirect.uris (for {who})"
    );
    assert!(
        strings(&client["webOrigins"]).iter().any(|o| o == origin),
        "{REALM}: client {client_id} should list {origin} in webOrigins (for {who})"
    );
    assert_eq!(
        login.client_secret.expose(),
        expected_secret_in_realm,
        "{who}: client_secret differs from what Keycloak imports for client {client_id}"
    );
}

#[test]
fn every_wasmplugin_config_is_accepted_by_the_filter() {
    let plugins = wasm_plugins();
    let names: BTreeSet<String> = plugins
        .iter()
        .map(|p| p.doc["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    for expected in [
        "productpage-oidc",
        "details-oidc",
        "reviews-oidc",
        "bookinfo-oidc",
    ] {
        assert!(
            names.contains(expected),
            "no WasmPlugin {expected} under istio/: {names:?}"
        );
    }
    for p in &plugins {
        let selected = &p.doc["spec"]["selector"]["matchLabels"];
        if p.filter.is_login() {
            assert!(
                selected["app"] == "productpage" || selected["istio"] == "ingressgateway",
                "{}: login mode belongs on productpage or the ingress gateway",
                p.origin
            );
        } else {
            assert!(
                p.filter
                    .config
                    .rules
                    .authorized_parties
                    .contains(&"productpage".to_string()),
                "{}: validate mode must accept tokens obtained by productpage (azp)",
                p.origin
            );
        }
    }
}

#[test]
fn wasmplugins_fail_closed_before_authentication_on_the_right_traffic() {
    let image = format!(
        "oci://ghcr.io/mesh-oidc/mesh-oidc:{}",
        env!("CARGO_PKG_VERSION")
    );
    for p in wasm_plugins() {
        let spec = &p.doc["spec"];
        assert_eq!(
            p.doc["apiVersion"], "extensions.istio.io/v1alpha1",
            "{}",
            p.origin
        );
        assert_eq!(spec["phase"], "AUTHN", "{}: phase", p.origin);
        assert_eq!(
            spec["failStrategy"], "FAIL_CLOSE",
            "{}: failStrategy",
            p.origin
        );
        assert_eq!(
            spec["url"],
            image.as_str(),
            "{}: url (the crate's version)",
            p.origin
        );
        assert!(
            spec["imagePullPolicy"].is_string(),
            "{}: imagePullPolicy should be explicit",
            p.origin
        );
        assert!(
            spec["selector"]["matchLabels"].is_object(),
            "{}: selector.matchLabels",
            p.origin
        );
        // A validate-mode sidecar sees inbound traffic only; productpage's login plugin also its
        // outbound side (CLIENT_AND_SERVER), where it only notes the services' 401s (L7+) — and
        // then it must name those services, or its outbound side would be a login filter; on a
        // gateway everything is CLIENT traffic.
        let modes: Vec<&str> = spec["match"]
            .as_array()
            .unwrap_or_else(|| panic!("{}: spec.match must say which traffic", p.origin))
            .iter()
            .map(|m| m["mode"].as_str().unwrap_or("UNDEFINED"))
            .collect();
        let expected = if p.on_gateway() {
            "CLIENT"
        } else if p.filter.is_login() {
            "CLIENT_AND_SERVER"
        } else {
            "SERVER"
        };
        assert_eq!(modes, vec![expected], "{}: match.mode", p.origin);
        if expected == "CLIENT_AND_SERVER" {
            let services = &p.filter.config.login().unwrap().upstream_401_services;
            assert!(
                !services.is_empty(),
                "{}: the outbound side needs upstream_401_services",
                p.origin
            );
        }
    }
}

#[test]
fn compose_envoy_filters_are_accepted_by_the_filter() {
    let (bootstrap, filters) = compose_envoy_filters();
    assert_eq!(filters.len(), 3, "productpage, details, reviews");
    let vm_ids: BTreeSet<&str> = filters.iter().map(|f| f.vm_id.as_str()).collect();
    assert_eq!(
        vm_ids.len(),
        filters.len(),
        "one VM per sidecar: {vm_ids:?}"
    );
    assert_eq!(filters.iter().filter(|f| f.filter.is_login()).count(), 1);

    let clusters: BTreeSet<&str> = bootstrap["static_resources"]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let envoy_service = compose_service("envoy");
    let mounted: Vec<String> = envoy_service["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["target"].as_str().map(str::to_string))
        .collect();
    for f in &filters {
        let who = &f.filter.origin;
        assert!(!f.fail_open, "{who}: fail_open must be false");
        assert!(
            clusters.contains(f.filter.config.cluster.as_str()),
            "{who}: calls go to cluster {:?}, which envoy.yaml does not define",
            f.filter.config.cluster
        );
        assert!(
            mounted.contains(&f.wasm_file),
            "{who}: {} is not mounted by compose.yaml",
            f.wasm_file
        );
    }
}

#[test]
fn shipped_envoy_configs_normalise_paths_and_refuse_underscored_headers() {
    let mut files = yaml_files("envoy");
    files.push(COMPOSE_ENVOY.to_string());
    for file in files {
        let bootstrap = yaml_doc(&file);
        let mut hcms = Vec::new();
        connection_managers(&bootstrap, &mut hcms);
        let mut wasm = Vec::new();
        wasm_filter_configs(&bootstrap, &mut wasm);
        assert!(!wasm.is_empty(), "{file}: no mesh-oidc filter");
        assert!(
            hcms.len() >= wasm.len(),
            "{file}: a mesh-oidc filter outside an HttpConnectionManager?"
        );
        for (i, hcm) in hcms.iter().enumerate() {
            let origin = format!("{file} HttpConnectionManager #{i} ({})", hcm["stat_prefix"]);
            assert_path_and_header_hygiene(hcm, &origin);
        }
    }
}

/// Every proxy that runs a WasmPlugin gets an EnvoyFilter with the same hygiene from the same
/// directory (so from the same `kubectl apply -k`): the sidecars' inbound listeners in the
/// plugin's namespace, or the gateway the plugin selects.
#[test]
fn istio_proxies_running_the_filter_normalise_paths_and_refuse_underscored_headers() {
    struct Patch {
        file: String,
        namespace: Json,
        selector: Json,
        context: String,
    }
    let mut patches = Vec::new();
    for file in yaml_files("istio") {
        for doc in yaml_docs(&file) {
            if doc["kind"] != "EnvoyFilter" {
                continue;
            }
            let origin = format!("{file} EnvoyFilter {}", doc["metadata"]["name"]);
            assert_eq!(
                doc["apiVersion"], "networking.istio.io/v1alpha3",
                "{origin}"
            );
            for patch in doc["spec"]["configPatches"].as_array().unwrap() {
                assert_eq!(patch["applyTo"], "NETWORK_FILTER", "{origin}");
                assert_eq!(
                    patch["match"]["listener"]["filterChain"]["filter"]["name"],
                    "envoy.filters.network.http_connection_manager",
                    "{origin}"
                );
                assert_eq!(patch["patch"]["operation"], "MERGE", "{origin}");
                let hcm = &patch["patch"]["value"]["typed_config"];
                assert_eq!(hcm["@type"], HCM_TYPE, "{origin}");
                assert_path_and_header_hygiene(hcm, &origin);
                patches.push(Patch {
                    file: file.clone(),
                    namespace: doc["metadata"]["namespace"].clone(),
                    selector: doc["spec"]["workloadSelector"]["labels"].clone(),
                    context: patch["match"]["context"]
                        .as_str()
                        .unwrap_or("ANY")
                        .to_string(),
                });
            }
        }
    }
    let dir = |file: &str| Path::new(file).parent().unwrap().to_path_buf();
    for p in wasm_plugins() {
        let file = p.origin.split(' ').next().unwrap().to_string();
        let context = if p.on_gateway() {
            "GATEWAY"
        } else {
            "SIDECAR_INBOUND"
        };
        let covered = patches.iter().find(|e| {
            dir(&e.file) == dir(&file)
                && e.namespace == p.doc["metadata"]["namespace"]
                && (e.selector.is_null() || e.selector == p.doc["spec"]["selector"]["matchLabels"])
                && e.context == context
        });
        let Some(e) = covered else {
            panic!(
                "{}: no EnvoyFilter next to it normalises paths on its proxies",
                p.origin
            );
        };
        let kustomization = yaml_doc(&format!("{}/kustomization.yaml", dir(&file).display()));
        let name = Path::new(&e.file).file_name().unwrap().to_string_lossy();
        assert!(
            strings(&kustomization["resources"])
                .iter()
                .any(|r| *r == name),
            "{}/kustomization.yaml must apply {name} with the plugins",
            dir(&file).display()
        );
    }
}

#[test]
fn realm_export_agrees_with_the_login_plugins() {
    let realm = realm();
    assert_eq!(realm["enabled"], true);
    assert_eq!(realm["accessTokenLifespan"], 300);
    assert_eq!(realm["ssoSessionIdleTimeout"], 1800);
    let client = realm_client(&realm, "productpage");
    assert_eq!(client["publicClient"], false, "productpage is confidential");
    assert_eq!(client["standardFlowEnabled"], true);
    assert_eq!(client["attributes"]["pkce.code.challenge.method"], "S256");
    let alice = realm["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "alice")
        .expect("user alice");
    assert!(strings(&alice["realmRoles"]).contains(&"user".to_string()));

    let in_realm = client["secret"].as_str().expect("client secret");

    // The mesh: Keycloak fills the placeholder from its Secret.
    let istio_secret = match env_placeholder(in_realm) {
        Some(var) => istio_keycloak_env(var),
        None => in_realm.to_string(),
    };
    let login: Vec<WasmPlugin> = wasm_plugins()
        .into_iter()
        .filter(|p| p.filter.is_login())
        .collect();
    assert!(!login.is_empty());
    for origin in istio_bookinfo_origins() {
        for p in &login {
            assert_realm_accepts(&origin, &p.filter, &istio_secret);
        }
    }

    // Compose: Keycloak fills it from the service's environment.
    let keycloak = compose_service("keycloak");
    let compose_secret = match env_placeholder(in_realm) {
        Some(var) => compose_env(&keycloak, var, "compose keycloak"),
        None => in_realm.to_string(),
    };
    let (_, filters) = compose_envoy_filters();
    for f in filters.iter().filter(|f| f.filter.is_login()) {
        assert_realm_accepts(&compose_bookinfo_origin(), &f.filter, &compose_secret);
    }
}

/// Keycloak stamps `iss` with its KC_HOSTNAME; the filter expects public_url + /realms/<realm>.
#[test]
fn keycloak_hostname_is_the_filters_public_url() {
    let kc_hostname = istio_keycloak_env("KC_HOSTNAME");
    assert_eq!(
        istio_keycloak_env("KC_HOSTNAME_BACKCHANNEL_DYNAMIC"),
        "true"
    );
    for p in wasm_plugins() {
        assert_eq!(
            p.filter.config.rules.issuer,
            format!("{kc_hostname}/realms/{}", p.filter.realm()),
            "{}: issuer vs KC_HOSTNAME of istio/keycloak/deployment.yaml",
            p.origin
        );
        assert_eq!(
            p.filter.config.cluster, "outbound|8080||keycloak.keycloak.svc.cluster.local",
            "{}: the keycloak Service's cluster",
            p.origin
        );
    }

    let keycloak = compose_service("keycloak");
    let compose_hostname = compose_env(&keycloak, "KC_HOSTNAME", "compose keycloak");
    assert_eq!(
        compose_env(
            &keycloak,
            "KC_HOSTNAME_BACKCHANNEL_DYNAMIC",
            "compose keycloak"
        ),
        "true"
    );
    let published = published_port(&keycloak, 8080, "compose keycloak");
    assert_eq!(
        compose_hostname,
        format!("http://localhost:{published}"),
        "compose keycloak: KC_HOSTNAME must be the URL the browser uses (its published port)"
    );
    let (_, filters) = compose_envoy_filters();
    for f in &filters {
        assert_eq!(
            f.filter.public_url(),
            compose_hostname,
            "{}",
            f.filter.origin
        );
        assert_eq!(
            f.filter.config.rules.issuer,
            format!("{compose_hostname}/realms/{}", f.filter.realm()),
            "{}",
            f.filter.origin
        );
    }
}

#[test]
fn optional_istio_jwt_policy_matches_the_validate_plugins() {
    let validate: Vec<WasmPlugin> = wasm_plugins()
        .into_iter()
        .filter(|p| !p.filter.is_login())
        .collect();
    let docs = yaml_docs("istio/security.yaml");
    let mut apps = BTreeSet::new();
    for doc in docs.iter().filter(|d| d["kind"] == "RequestAuthentication") {
        let app = str_at(doc, "/spec/selector/matchLabels/app", "istio/security.yaml");
        apps.insert(app.to_string());
        let plugin = validate
            .iter()
            .find(|p| p.doc["spec"]["selector"]["matchLabels"]["app"] == app)
            .unwrap_or_else(|| panic!("istio/security.yaml: no validate WasmPlugin for {app}"));
        let rule = &doc["spec"]["jwtRules"][0];
        assert_eq!(
            rule["issuer"],
            plugin.filter.config.rules.issuer.as_str(),
            "{app}"
        );
        assert_eq!(
            rule["jwksUri"],
            plugin.filter.config.jwks.url.as_str(),
            "{app}"
        );
    }
    assert_eq!(
        apps,
        BTreeSet::from(["details".to_string(), "reviews".to_string()])
    );
}

/// The defence in depth that makes a missing validate-mode plugin fail closed: every workload a
/// validate plugin runs on has an ALLOW policy in istio/security.yaml whose every rule either
/// requires a token of the plugin's issuer obtained by one of its authorized parties, or opens
/// only paths the plugin opens too (its skip_paths). A call without a token then gets 403 from
/// Istio where the plugin is not in the listener.
#[test]
fn istio_policy_refuses_tokenless_calls_where_the_validate_plugins_run() {
    let origin = "istio/security.yaml";
    let docs = yaml_docs(origin);
    for p in wasm_plugins().iter().filter(|p| !p.filter.is_login()) {
        let app = &p.doc["spec"]["selector"]["matchLabels"]["app"];
        let issuer = &p.filter.config.rules.issuer;
        let parties = &p.filter.config.rules.authorized_parties;
        let skip_paths = strings(&p.filter.raw["skip_paths"]);
        let policies: Vec<&Json> = docs
            .iter()
            .filter(|d| d["kind"] == "AuthorizationPolicy")
            .filter(|d| d["spec"]["selector"]["matchLabels"]["app"] == *app)
            .collect();
        assert_eq!(
            policies.len(),
            1,
            "{origin}: one AuthorizationPolicy for app {app} (where {} runs)",
            p.origin
        );
        let policy = policies[0];
        assert_eq!(policy["apiVersion"], "security.istio.io/v1", "{origin}");
        assert_eq!(policy["spec"]["action"], "ALLOW", "{origin}: app {app}");
        let rules = policy["spec"]["rules"].as_array().unwrap();
        assert!(!rules.is_empty(), "{origin}: app {app}: no rules");
        for rule in rules {
            let principals: Vec<String> = rule["from"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|f| strings(&f["source"]["requestPrincipals"]))
                .collect();
            if principals.is_empty() {
                // No token asked for: only the paths the plugin leaves open.
                assert!(rule["from"].is_null(), "{origin}: app {app}: {rule}");
                assert!(rule["when"].is_null(), "{origin}: app {app}: {rule}");
                let operations = rule["to"].as_array().unwrap();
                for op in operations {
                    let paths = strings(&op["operation"]["paths"]);
                    assert!(!paths.is_empty(), "{origin}: app {app}: {rule}");
                    for path in paths {
                        assert!(
                            skip_paths.contains(&path),
                            "{origin}: app {app} opens {path} without a token, {} does not",
                            p.origin
                        );
                    }
                }
                continue;
            }
            for principal in &principals {
                assert_eq!(
                    principal,
                    &format!("{issuer}/*"),
                    "{origin}: app {app}: tokens of the plugin's issuer only"
                );
            }
            let azp: Vec<String> = rule["when"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|w| w["key"] == "request.auth.claims[azp]")
                .flat_map(|w| strings(&w["values"]))
                .collect();
            assert!(
                !azp.is_empty() && azp.iter().all(|a| parties.contains(a)),
                "{origin}: app {app}: azp must be one of {parties:?}, as for {}",
                p.origin
            );
        }
    }
}

/// The gateway variant's login runs on the HTTPS server's listener only. Istio matches
/// `match.ports` against the gateway listener's port: the Service's targetPort for the Gateway
/// server's port (8443 for the `istio-ingressgateway` of istioctl, 443 for the Helm chart
/// istio/gateway). The http server only redirects to https, from Envoy's router, after the
/// filter: the filter must not run there.
#[test]
fn gateway_login_runs_on_the_https_listener_only() {
    // Service port -> the listener ports it becomes: Helm's istio/gateway, istioctl's gateway.
    fn listener_ports(service_port: u64) -> Vec<u64> {
        match service_port {
            443 => vec![443, 8443],
            80 => vec![80, 8080],
            other => vec![other],
        }
    }
    let origin = "istio/gateway/gateway.yaml";
    let gateway = yaml_docs(origin)
        .into_iter()
        .find(|d| d["kind"] == "Gateway")
        .unwrap_or_else(|| panic!("{origin}: no Gateway"));
    let servers = gateway["spec"]["servers"].as_array().unwrap();
    let ports_of = |protocol: &str| -> BTreeSet<u64> {
        servers
            .iter()
            .filter(|s| s["port"]["protocol"] == protocol)
            .flat_map(|s| listener_ports(s["port"]["number"].as_u64().unwrap()))
            .collect()
    };
    let https = ports_of("HTTPS");
    let http = ports_of("HTTP");
    assert!(!https.is_empty(), "{origin}: no HTTPS server");
    for server in servers.iter().filter(|s| s["port"]["protocol"] == "HTTP") {
        assert_eq!(
            server["tls"]["httpsRedirect"], true,
            "{origin}: the http server must redirect to https"
        );
    }
    let on_gateway: Vec<WasmPlugin> = wasm_plugins()
        .into_iter()
        .filter(WasmPlugin::on_gateway)
        .collect();
    assert!(!on_gateway.is_empty(), "no WasmPlugin on the gateway");
    for p in &on_gateway {
        for m in p.doc["spec"]["match"].as_array().unwrap() {
            let ports: BTreeSet<u64> = m["ports"]
                .as_array()
                .unwrap_or_else(|| {
                    panic!(
                        "{}: match.ports must name the https listener (without ports the \
                         filter also runs on http)",
                        p.origin
                    )
                })
                .iter()
                .map(|port| port["number"].as_u64().unwrap())
                .collect();
            assert_eq!(ports, https, "{}: match.ports", p.origin);
            assert!(ports.is_disjoint(&http), "{}: match.ports", p.origin);
        }
    }
}

#[test]
fn kustomizations_name_existing_files() {
    for file in yaml_files("istio") {
        if !file.ends_with("/kustomization.yaml") {
            continue;
        }
        let dir = Path::new(&file)
            .parent()
            .unwrap()
            .to_string_lossy()
            .to_string();
        let k = yaml_doc(&file);
        let mut named = strings(&k["resources"]);
        for generator in k["configMapGenerator"].as_array().into_iter().flatten() {
            named.extend(strings(&generator["files"]));
        }
        assert!(!named.is_empty(), "{file}: lists nothing");
        for name in named {
            assert!(
                path(&format!("{dir}/{name}")).exists(),
                "{file}: {name} does not exist"
            );
        }
    }
}

/// Envoy and the module for `envoy --mode validate` (`make setup` and `make build`, or ENVOY_BIN
/// and MESH_OIDC_WASM), or None after saying what is missing.
fn envoy_and_module(what: &str) -> Option<(PathBuf, PathBuf)> {
    let envoy = std::env::var_os("ENVOY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| path(".venv/bin/envoy"));
    let wasm = std::env::var_os("MESH_OIDC_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| path("target/wasm32-wasip1/release/mesh_oidc.wasm"));
    if envoy.exists() && wasm.exists() {
        return Some((envoy, wasm));
    }
    // `make unit` builds both first and sets this: there, a missing piece is a failure.
    assert!(
        std::env::var_os("MESH_OIDC_REQUIRE_ENVOY").is_none(),
        "need {} and {}",
        envoy.display(),
        wasm.display()
    );
    eprintln!(
        "SKIPPED envoy --mode validate of {what}: need {} and {}",
        envoy.display(),
        wasm.display()
    );
    None
}

/// Runs `envoy --mode validate` on `rel` with each of `module_paths` pointed at `wasm`, and
/// returns Envoy's output. Validation loads the module and runs its on_configure for each filter.
fn envoy_validate(envoy: &Path, wasm: &Path, rel: &str, module_paths: &BTreeSet<String>) -> String {
    let mut text = read(rel);
    for module_path in module_paths {
        text = text.replace(module_path.as_str(), &wasm.display().to_string());
    }
    // As compose.yaml's command does before Envoy starts.
    assert!(
        read(COMPOSE).contains(SECRET_PLACEHOLDER),
        "compose.yaml must replace the session_secret placeholder"
    );
    text = text.replace(SECRET_PLACEHOLDER, REAL_SECRET);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("manifests");
    std::fs::create_dir_all(&dir).unwrap();
    let local = dir.join(rel.replace('/', "-"));
    std::fs::write(&local, text).unwrap();

    let out = Command::new(envoy)
        .arg("--mode")
        .arg("validate")
        .arg("-c")
        .arg(&local)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", envoy.display()));
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "envoy --mode validate -c {} ({rel}) failed:\n{log}",
        local.display()
    );
    log
}

/// The file names the module where compose mounts it; validation points that path at the local
/// build. Without Envoy or the module this test says so and checks nothing more.
#[test]
fn compose_envoy_config_passes_envoy_validate() {
    let Some((envoy, wasm)) = envoy_and_module(COMPOSE_ENVOY) else {
        return;
    };
    let (_, filters) = compose_envoy_filters();
    let module_paths = filters.iter().map(|f| f.wasm_file.clone()).collect();
    let log = envoy_validate(&envoy, &wasm, COMPOSE_ENVOY, &module_paths);
    for f in &filters {
        let mode = if f.filter.is_login() {
            "login"
        } else {
            "validate"
        };
        let line = format!("{}: mesh-oidc: configured ({mode} mode", f.vm_id);
        assert!(log.contains(&line), "no {line:?} in Envoy's output:\n{log}");
    }
}

/// envoy/*.yaml name the module relative to the repository (where `make build` leaves it).
#[test]
fn envoy_dir_configs_pass_envoy_validate() {
    let Some((envoy, wasm)) = envoy_and_module("envoy/*.yaml") else {
        return;
    };
    for file in yaml_files("envoy") {
        let mut found = Vec::new();
        let bootstrap = yaml_doc(&file);
        wasm_filter_configs(&bootstrap, &mut found);
        let module_paths: BTreeSet<String> = found
            .iter()
            .map(|w| str_at(w, "/vm_config/code/local/filename", &file).to_string())
            .collect();
        let log = envoy_validate(&envoy, &wasm, &file, &module_paths);
        let configured = log.matches("mesh-oidc: configured (").count();
        assert!(
            configured >= found.len(),
            "{file}: {} filters, {configured} configured:\n{log}",
            found.len()
        );
    }
}
