//! The proxy-wasm layer: the only code that talks to Envoy. Each callback hands over to
//! `crate::engine` with [`host::Envoy`] as its host, and carries out the outcome.

mod host;
mod http;
mod root;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    // A panic would stop the VM for every later request; say so in Envoy's log first (the hook
    // only formats the message: no unwrap, no allocation that could fail silently).
    std::panic::set_hook(Box::new(|info| {
        let _ = proxy_wasm::hostcalls::log(
            proxy_wasm::types::LogLevel::Critical,
            &format!("mesh-oidc: panicked: {info}"),
        );
    }));
    proxy_wasm::set_root_context(|context_id| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(root::Root::new(context_id))
    });
}}
