//! Calls to the provider's endpoints as the client (token, revocation, introspection), ready to
//! dispatch through `cluster` with the endpoint's host as `:authority`.

use base64::Engine as _;

use crate::config::{ClientAuth, Endpoint};

/// A call ready to dispatch: the request headers (pseudo-headers included) and a form body.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenCall {
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl std::fmt::Debug for TokenCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenCall([redacted])")
    }
}

/// Who the call authenticates as.
pub struct Client<'a> {
    pub id: &'a str,
    pub secret: &'a str,
    pub auth: ClientAuth,
}

/// A POST of `form` to `endpoint`, with the client's credentials (`client_secret_basic`: RFC 6749
/// §2.3.1, both parts form-encoded before base64; or `client_secret_post`: in the form).
pub fn client_call<'a>(
    endpoint: &Endpoint,
    client: &Client<'a>,
    mut form: Vec<(&'a str, &'a str)>,
) -> TokenCall {
    let mut headers = vec![
        (":method".to_string(), "POST".to_string()),
        (":path".to_string(), endpoint.path.clone()),
        (":authority".to_string(), endpoint.authority.clone()),
        (":scheme".to_string(), endpoint.url.scheme().to_string()),
        (
            "content-type".to_string(),
            "application/x-www-form-urlencoded".to_string(),
        ),
        ("accept".to_string(), "application/json".to_string()),
        ("user-agent".to_string(), "mesh-oidc".to_string()),
    ];
    match client.auth {
        ClientAuth::Basic => {
            let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let pair = format!("{}:{}", enc(client.id), enc(client.secret));
            headers.push((
                "authorization".to_string(),
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ),
            ));
        }
        ClientAuth::Post => {
            form.push(("client_id", client.id));
            form.push(("client_secret", client.secret));
        }
    }
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    TokenCall { headers, body }
}
