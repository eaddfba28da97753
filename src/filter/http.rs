//! The HTTP context: one per request, each callback handed to the engine.

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use super::host::Envoy;
use crate::engine;
use crate::flow::Outcome;
use crate::vm::VmRef;

pub struct Request {
    pub context_id: u32,
    pub vm: VmRef,
}

fn action(outcome: Outcome) -> Action {
    match outcome {
        Outcome::Continue => Action::Continue,
        Outcome::Pause => Action::Pause,
    }
}

impl Context for Request {
    fn on_http_call_response(&mut self, token: u32, _: usize, body_size: usize, _: usize) {
        engine::call_response(&Envoy, &self.vm, self.context_id, token, body_size);
    }

    fn on_done(&mut self) -> bool {
        engine::done(&Envoy, &self.vm, self.context_id);
        true
    }
}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        action(engine::request_headers(
            &Envoy,
            &self.vm,
            self.context_id,
            end_of_stream,
        ))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        action(engine::request_body(
            &Envoy,
            &self.vm,
            self.context_id,
            body_size,
            end_of_stream,
        ))
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        action(engine::response_headers(&Envoy, &self.vm, self.context_id))
    }
}
