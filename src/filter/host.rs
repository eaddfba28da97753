//! [`Host`] over proxy-wasm's host calls: every host error is handled (never an `unwrap`), and
//! header values stay bytes (they need not be UTF-8).

use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType, MetricType};

use crate::host::{Host, Level};
use crate::inbound::Headers;
use crate::web::Reply;

pub struct Envoy;

#[link(wasm_import_module = "env")]
extern "C" {
    /// The ABI's own call (proxy-wasm 0.2.1): `map_type` 0 is the request headers; the status
    /// comes back as a plain number, 0 for success.
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
}

/// `MapType::HttpRequestHeaders` and `Status::Ok` in the ABI.
const REQUEST_HEADERS: u32 = 0;
const OK: u32 = 0;

fn status_of(map: MapType) -> u32 {
    hostcalls::get_map_value_bytes(map, ":status")
        .ok()
        .flatten()
        .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok())
        .unwrap_or(0)
}

impl Host for Envoy {
    fn now_ms(&self) -> u64 {
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    fn log(&self, level: Level, message: &str) {
        let level = match level {
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        let _ = hostcalls::log(level, message);
    }

    fn define_counter(&self, name: &str) -> Option<u32> {
        hostcalls::define_metric(MetricType::Counter, name).ok()
    }

    fn increment(&self, counter: u32) {
        let _ = hostcalls::increment_metric(counter, 1);
    }

    /// The header map as Envoy serialises it, read in place (`Headers::parse`): the SDK's
    /// `get_map_bytes` would allocate twice per header, and panics on a name that is not UTF-8.
    fn request_headers(&self) -> Headers {
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut size: usize = 0;
        // SAFETY: the host writes a pointer to a buffer it allocated through this module's
        // `proxy_on_memory_allocate` (the SDK's, a `Vec<u8>` of exactly `size` bytes), which is
        // ours from then on, as `hostcalls::get_map_bytes` takes it.
        let buf = unsafe {
            if proxy_get_header_map_pairs(REQUEST_HEADERS, &mut data, &mut size) != OK
                || data.is_null()
            {
                return Headers::default();
            }
            Vec::from_raw_parts(data, size, size)
        };
        Headers::parse(buf)
    }

    fn request_body(&self, size: usize) -> Vec<u8> {
        hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size)
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    fn set_request_header(&self, name: &str, value: Option<&[u8]>) {
        let _ = hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, value);
    }

    fn connection_is_tls(&self) -> bool {
        hostcalls::get_property(vec!["connection", "tls_version"])
            .ok()
            .flatten()
            .is_some_and(|v| !v.is_empty())
    }

    fn is_outbound(&self) -> bool {
        // An enum attribute comes as a little-endian int64: 1 INBOUND, 2 OUTBOUND. Envoy 1.40
        // has it as `xds.listener_direction`; older ones as `listener_direction`.
        let outbound = [
            vec!["xds", "listener_direction"],
            vec!["listener_direction"],
        ]
        .into_iter()
        .find_map(|path| hostcalls::get_property(path).ok().flatten())
        .and_then(|v| v.first().copied())
            == Some(2);
        // Istio's gateways run every listener as OUTBOUND: a gateway is never a workload's
        // outbound side (its node id is `router~…`, a sidecar's `sidecar~…`).
        outbound
            && !hostcalls::get_property(vec!["node", "id"])
                .ok()
                .flatten()
                .is_some_and(|id| id.starts_with(b"router~"))
    }

    fn response_status(&self) -> u32 {
        status_of(MapType::HttpResponseHeaders)
    }

    fn add_response_header(&self, name: &str, value: &str) {
        let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, name, value);
    }

    fn set_response_header(&self, name: &str, value: &str) {
        let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, name, Some(value));
    }

    fn send_reply(&self, reply: &Reply) {
        let headers: Vec<(&str, &str)> = reply
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        if hostcalls::send_http_response(reply.status, headers, Some(&reply.body)).is_err() {
            self.log(Level::Error, "mesh-oidc: could not send a local reply");
        }
    }

    fn resume_request(&self) {
        if hostcalls::resume_http_request().is_err() {
            self.log(Level::Warn, "mesh-oidc: could not resume a held request");
        }
    }

    fn dispatch(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout_ms: u64,
    ) -> Option<u32> {
        let timeout = Duration::from_millis(timeout_ms);
        hostcalls::dispatch_http_call(cluster, headers.to_vec(), body, Vec::new(), timeout).ok()
    }

    fn call_response_status(&self) -> u32 {
        status_of(MapType::HttpCallResponseHeaders)
    }

    fn call_response_body(&self, size: usize) -> Vec<u8> {
        hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, size)
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    fn get_shared(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        hostcalls::get_shared_data(key).unwrap_or((None, None))
    }

    fn set_shared(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        hostcalls::set_shared_data(key, Some(value), cas).is_ok()
    }

    fn enter(&self, context_id: u32) -> bool {
        hostcalls::set_effective_context(context_id).is_ok()
    }

    fn fill_random(&self, buf: &mut [u8]) -> bool {
        // WASI `random_get`.
        getrandom::getrandom(buf).is_ok()
    }
}

/// The plugin configuration buffer.
pub fn plugin_configuration() -> Vec<u8> {
    hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
        .ok()
        .flatten()
        .unwrap_or_default()
}
