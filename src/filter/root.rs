//! The root context: configuration, the key-set timer, and the HTTP contexts it creates.

use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};

use super::flow;
use super::host;
use super::http::Request;
use super::keys::{Shared, SharedRef};
use crate::config::Config;

/// The first tick comes at once so that the key set is fetched right after start.
const FIRST_TICK: Duration = Duration::from_millis(1);
/// Then: pick up key sets other VMs fetched, time out waiting requests, refresh when due.
const TICK: Duration = Duration::from_millis(200);

pub struct Root {
    context_id: u32,
    shared: Option<SharedRef>,
    ticked: bool,
}

impl Root {
    pub fn new(context_id: u32) -> Self {
        Root {
            context_id,
            shared: None,
            ticked: false,
        }
    }
}

impl Context for Root {
    fn on_http_call_response(&mut self, token: u32, _: usize, body_size: usize, _: usize) {
        if let Some(shared) = &self.shared {
            let now = host::now_ms();
            if flow::on_call_response(shared, token, body_size, self.context_id) {
                return;
            }
            let handled = shared.borrow_mut().on_jwks_response(token, body_size, now);
            if handled {
                shared.borrow_mut().sync();
                flow::settle(shared, now, self.context_id);
            }
        }
    }
}

impl RootContext for Root {
    fn on_vm_start(&mut self, _: usize) -> bool {
        host::log(
            LogLevel::Info,
            concat!("mesh-oidc ", env!("CARGO_PKG_VERSION"), " started"),
        );
        true
    }

    fn on_configure(&mut self, _: usize) -> bool {
        let bytes = host::plugin_configuration().unwrap_or_default();
        match Config::parse(&bytes) {
            Ok(config) => {
                host::log(
                    LogLevel::Info,
                    &format!(
                        "mesh-oidc: configured ({} mode, issuer {}, keys from {} via cluster {})",
                        if config.login().is_some() {
                            "login"
                        } else {
                            "validate"
                        },
                        config.rules.issuer,
                        config.jwks.url,
                        config.cluster
                    ),
                );
                self.shared = Some(Shared::new(Rc::new(config)));
                self.ticked = false;
                let _ = proxy_wasm::hostcalls::set_tick_period(FIRST_TICK);
                true
            }
            Err(e) => {
                host::log(
                    LogLevel::Error,
                    &format!("mesh-oidc: invalid configuration: {e}"),
                );
                false
            }
        }
    }

    fn on_tick(&mut self) {
        if !self.ticked {
            self.ticked = true;
            let _ = proxy_wasm::hostcalls::set_tick_period(TICK);
        }
        let Some(shared) = &self.shared else {
            return;
        };
        let now = host::now_ms();
        shared.borrow_mut().sync();
        flow::settle(shared, now, self.context_id);
        shared.borrow_mut().maybe_fetch(now);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let shared = self.shared.clone()?;
        Some(Box::new(Request::new(context_id, shared)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
