//! The proxy-wasm layer: the only code that talks to Envoy. Each callback asks the plain-Rust
//! modules what to do and carries it out.

mod flow;
mod host;
mod http;
mod keys;
mod root;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(root::Root::new(context_id))
    });
}}
