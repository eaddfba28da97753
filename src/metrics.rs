//! Counters the filter keeps (proxy-wasm metrics: `wasmcustom.mesh_oidc.…` at Envoy's `/stats`,
//! `mesh_oidc_…` at `/stats/prometheus`). Decisions name the events; the proxy-wasm layer counts
//! them.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    LoginStarted,
    CallbackOk,
    /// Why: `state`, `provider_error`, `timeout`, `token_endpoint`, `id_token`, `access_token`,
    /// `keys`, `too_large`.
    CallbackFailed(&'static str),
    RefreshOk,
    RefreshFailed,
    /// Why: `missing` or a [`crate::token::TokenError::reason`].
    TokenRejected(&'static str),
    KeysFetched,
    KeysFetchFailed,
    Logout,
    Upstream401,
    /// A valid token that failed its authorization rule (B7).
    Forbidden,
    /// A back-channel logout request (L8): `ok` or `refused`.
    BackchannelLogout(&'static str),
    /// A session ended by a back-channel logout came back (L8).
    SessionEnded,
}

impl Event {
    pub fn metric_name(&self) -> String {
        match self {
            Event::LoginStarted => "mesh_oidc.logins_started".into(),
            Event::CallbackOk => "mesh_oidc.callbacks_ok".into(),
            Event::CallbackFailed(why) => format!("mesh_oidc.callbacks_failed.{why}"),
            Event::RefreshOk => "mesh_oidc.refreshes_ok".into(),
            Event::RefreshFailed => "mesh_oidc.refreshes_failed".into(),
            Event::TokenRejected(why) => format!("mesh_oidc.tokens_rejected.{why}"),
            Event::KeysFetched => "mesh_oidc.jwks_fetches_ok".into(),
            Event::KeysFetchFailed => "mesh_oidc.jwks_fetches_failed".into(),
            Event::Logout => "mesh_oidc.logouts".into(),
            Event::Upstream401 => "mesh_oidc.upstream_401".into(),
            Event::Forbidden => "mesh_oidc.forbidden".into(),
            Event::BackchannelLogout(how) => format!("mesh_oidc.backchannel_logouts.{how}"),
            Event::SessionEnded => "mesh_oidc.sessions_ended".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prometheus_friendly() {
        for e in [
            Event::LoginStarted,
            Event::CallbackFailed("id_token"),
            Event::TokenRejected("expired"),
            Event::KeysFetchFailed,
        ] {
            let name = e.metric_name();
            assert!(name.starts_with("mesh_oidc."));
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.'),
                "{name}"
            );
        }
    }
}
