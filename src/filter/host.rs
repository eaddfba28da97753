//! Thin wrappers over `proxy_wasm::hostcalls` that never panic on a host error and never expose
//! header bytes as `String` (header values need not be UTF-8).

use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType};

use crate::web::Reply;

pub fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}

/// All request headers in one host call (names are lower-case; values as bytes).
pub fn request_headers() -> Vec<(String, Vec<u8>)> {
    hostcalls::get_map_bytes(MapType::HttpRequestHeaders).unwrap_or_default()
}

pub fn set_request_header(name: &str, value: Option<&str>) {
    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value);
}

pub fn send_reply(reply: &Reply) {
    let headers: Vec<(&str, &str)> = reply
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    if hostcalls::send_http_response(reply.status, headers, Some(&reply.body)).is_err() {
        log(LogLevel::Error, "mesh-oidc: could not send a local reply");
    }
}

pub fn resume_request() {
    if hostcalls::resume_http_request().is_err() {
        log(LogLevel::Warn, "mesh-oidc: could not resume a held request");
    }
}

/// Makes `context_id` the target of the following host calls. False when it no longer exists.
pub fn enter(context_id: u32) -> bool {
    hostcalls::set_effective_context(context_id).is_ok()
}

pub fn plugin_configuration() -> Option<Vec<u8>> {
    hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
        .ok()
        .flatten()
}

pub fn call_response_body(size: usize) -> Vec<u8> {
    hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, size)
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// The `:status` of a dispatched call's response (0 when there is none: reset or timed out).
pub fn call_response_status() -> u32 {
    hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
        .ok()
        .flatten()
        .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok())
        .unwrap_or(0)
}

pub fn dispatch(
    cluster: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout_ms: u64,
) -> Option<u32> {
    hostcalls::dispatch_http_call(
        cluster,
        headers.to_vec(),
        body,
        Vec::new(),
        Duration::from_millis(timeout_ms),
    )
    .ok()
}

pub fn get_shared(key: &str) -> (Option<Vec<u8>>, Option<u32>) {
    hostcalls::get_shared_data(key).unwrap_or((None, None))
}

pub fn set_shared(key: &str, value: &[u8], cas: Option<u32>) -> bool {
    hostcalls::set_shared_data(key, Some(value), cas).is_ok()
}

/// Sets (or, with `None`, removes) a request header from bytes.
pub fn set_request_header_bytes(name: &str, value: Option<&[u8]>) {
    let _ = hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, value);
}

/// Whether the downstream connection is TLS (Envoy's `connection.tls_version` attribute).
pub fn connection_is_tls() -> bool {
    hostcalls::get_property(vec!["connection", "tls_version"])
        .ok()
        .flatten()
        .is_some_and(|v| !v.is_empty())
}

pub fn set_response_header(name: &str, value: &str) {
    let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, name, Some(value));
}

pub fn add_response_header(name: &str, value: &str) {
    let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, name, value);
}

pub fn response_status() -> u32 {
    hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, ":status")
        .ok()
        .flatten()
        .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok())
        .unwrap_or(0)
}

/// The host's random source (WASI `random_get`, through the `rand` that jwt-simple uses).
pub struct OsRandom;

impl crate::login::Random for OsRandom {
    fn fill(&mut self, buf: &mut [u8]) {
        use jwt_simple::reexports::rand::RngCore as _;
        jwt_simple::reexports::rand::thread_rng().fill_bytes(buf);
    }
}

pub fn define_counter(name: &str) -> Option<u32> {
    hostcalls::define_metric(proxy_wasm::types::MetricType::Counter, name).ok()
}

pub fn increment(metric_id: u32) {
    let _ = hostcalls::increment_metric(metric_id, 1);
}
