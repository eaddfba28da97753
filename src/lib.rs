//! mesh-oidc: OpenID Connect login and token validation for Istio and Envoy, as a proxy-wasm
//! filter. Every decision lives in plain-Rust modules tested natively; `filter` is the thin layer
//! that talks to Envoy and is compiled only for wasm.

#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod calls;
pub mod config;
pub mod engine;
pub mod flight;
pub mod flow;
pub mod host;
pub mod httpurl;
pub mod inbound;
pub mod introspect;
pub mod json;
pub mod jwks;
pub mod keystore;
pub mod login;
pub mod metrics;
pub mod paths;
pub mod pending;
pub mod replay;
pub mod rsa;
pub mod rules;
pub mod session;
pub mod token;
pub mod validate;
pub mod vm;
pub mod web;

#[cfg(test)]
mod engine_tests;
#[cfg(test)]
mod fakehost;
#[cfg(test)]
mod testkit;

#[cfg(target_arch = "wasm32")]
mod filter;
