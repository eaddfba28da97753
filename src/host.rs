//! What the engine needs from the proxy: time, logs, counters, the current request's headers,
//! local replies, dispatched calls, shared data and the effective context. `filter::host`
//! implements it over proxy-wasm's host calls; tests drive the engine with `fakehost::FakeHost`.
//!
//! Every method is a call across the VM boundary that may, in Envoy, run another callback of this
//! VM before it returns (a dispatch that fails at once answers inline). The engine therefore never
//! holds a `RefCell` borrow across a call to its host.

use crate::web::Reply;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

pub trait Host {
    /// Unix time in milliseconds.
    fn now_ms(&self) -> u64;
    fn log(&self, level: Level, message: &str);
    fn define_counter(&self, name: &str) -> Option<u32>;
    fn increment(&self, counter: u32);

    /// Every header of the current request (names lower-case, values as bytes).
    fn request_headers(&self) -> crate::inbound::Headers;
    /// The first `size` bytes of the current request's body (buffered so far).
    fn request_body(&self, size: usize) -> Vec<u8>;
    /// Sets a request header (replacing every value), or removes it with `None`.
    fn set_request_header(&self, name: &str, value: Option<&[u8]>);
    /// Whether the current request's downstream connection is TLS.
    fn connection_is_tls(&self) -> bool;
    /// Whether the current request came through a workload's outbound listener (Envoy's
    /// listener direction is OUTBOUND, and the proxy is not an Istio gateway, whose listeners are
    /// all OUTBOUND): the workload's own call to another service.
    fn is_outbound(&self) -> bool;
    fn response_status(&self) -> u32;
    fn add_response_header(&self, name: &str, value: &str);
    fn set_response_header(&self, name: &str, value: &str);
    /// Answers the current request with a local reply.
    fn send_reply(&self, reply: &Reply);
    /// Lets the current (paused) request go on.
    fn resume_request(&self);

    /// Sends a call through `cluster`; the answer comes to the context that sent it, with this
    /// token. `None` when the host refused it (an unknown cluster).
    fn dispatch(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout_ms: u64,
    ) -> Option<u32>;
    /// The status of the call being answered (0: none — timed out or reset).
    fn call_response_status(&self) -> u32;
    fn call_response_body(&self, size: usize) -> Vec<u8>;

    /// Shared data of the VM id: every worker's VM sees it. The CAS number changes on each write.
    fn get_shared(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    /// False when `cas` is given and no longer current (another VM wrote first).
    fn set_shared(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool;

    /// Reads a key for a compare-and-set write. A key never written has no CAS, and a write
    /// without one always succeeds — two VMs could both "win" it — so such a key is first
    /// written empty and read again: then exactly one of two racing writers wins.
    fn get_shared_for_update(&self, key: &str) -> (Vec<u8>, Option<u32>) {
        let (value, cas) = self.get_shared(key);
        if cas.is_some() {
            return (value.unwrap_or_default(), cas);
        }
        let _ = self.set_shared(key, b"", None);
        let (value, cas) = self.get_shared(key);
        (value.unwrap_or_default(), cas)
    }

    /// Makes `context_id` the target of the following calls; false when it no longer exists.
    fn enter(&self, context_id: u32) -> bool;
    /// False when the host gave no randomness.
    fn fill_random(&self, buf: &mut [u8]) -> bool;
}

/// The host's random source as the login decisions take it.
pub struct HostRandom<'a>(pub &'a dyn Host);

impl crate::login::Random for HostRandom<'_> {
    fn fill(&mut self, buf: &mut [u8]) -> bool {
        self.0.fill_random(buf)
    }
}
