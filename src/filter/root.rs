//! The root context: configuration and the timer, handed to the engine.

use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

use super::host::{self, Envoy};
use super::http::Request;
use crate::engine;
use crate::host::{Host, Level};
use crate::vm::VmRef;

pub struct Root {
    context_id: u32,
    vm: Option<VmRef>,
    tick_ms: u64,
}

impl Root {
    pub fn new(context_id: u32) -> Self {
        Root {
            context_id,
            vm: None,
            tick_ms: 0,
        }
    }

    fn set_tick(&mut self, ms: u64) {
        if ms != self.tick_ms
            && proxy_wasm::hostcalls::set_tick_period(Duration::from_millis(ms)).is_ok()
        {
            self.tick_ms = ms;
        }
    }
}

impl Context for Root {
    fn on_http_call_response(&mut self, token: u32, _: usize, body_size: usize, _: usize) {
        if let Some(vm) = &self.vm {
            engine::call_response(&Envoy, vm, self.context_id, token, body_size);
        }
    }
}

impl RootContext for Root {
    fn on_vm_start(&mut self, _: usize) -> bool {
        Envoy.log(Level::Info, &engine::version());
        true
    }

    fn on_configure(&mut self, _: usize) -> bool {
        self.vm = engine::configure(&Envoy, &host::plugin_configuration());
        // The first tick comes at once, so that the key set is fetched right after start.
        self.tick_ms = 0;
        self.set_tick(1);
        self.vm.is_some()
    }

    fn on_tick(&mut self) {
        if let Some(vm) = self.vm.clone() {
            let next = engine::tick(&Envoy, &vm, self.context_id);
            self.set_tick(next);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let vm = self.vm.clone()?;
        Some(Box::new(Request { context_id, vm }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
