//! bench-upstream: the service behind the proxy in the benchmark, and the key-set server.
//!
//!   bench-upstream <port> <jwks-file> <jwks-path> [<introspection-file> <introspection-path>]
//!
//! Listens on 127.0.0.1:<port>, HTTP/1.1 with keep-alive, one thread per connection:
//! - GET <jwks-path>: the contents of <jwks-file> (application/json);
//! - <introspection-path> (any method, the body skipped): the contents of <introspection-file>, the
//!   provider's RFC 7662 answer for whatever token is asked about;
//! - GET /echo/...: a small JSON body, and the request's `authorization`, `cookie` and `x-user`
//!   headers echoed back as `x-echo-<name>` (the benchmark's correctness checks use it);
//! - anything else: the same small JSON body (what the measured requests get).
//!
//! Every answer carries `x-bench-upstream: 1`, so a client can tell it from a proxy's own reply.
//! Prints "listening <port>" once the socket is bound.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

const BODY: &str = r#"{"id":0,"author":"William Shakespeare","year":1595,"type":"paperback","pages":200,"publisher":"PublisherA","language":"English","ISBN-10":"1234567890"}"#;
const MAX_HEAD: usize = 64 * 1024;
const ECHOED: [&str; 3] = ["authorization", "cookie", "x-user"];

struct Site {
    jwks_path: String,
    jwks: Vec<u8>,
    introspection: Option<(String, Vec<u8>)>,
    plain: Vec<u8>,
}

fn response(status: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nx-bench-upstream: 1\r\n{extra}content-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Answers one request head; returns the response and the length of the request body to skip.
fn answer(site: &Site, head: &[u8]) -> Result<(Vec<u8>, usize), ()> {
    let text = std::str::from_utf8(head).map_err(|_| ())?;
    let mut lines = text.split("\r\n");
    let request_line = lines.next().ok_or(())?;
    let mut parts = request_line.split(' ');
    let _method = parts.next().ok_or(())?;
    let target = parts.next().ok_or(())?;
    let path = target.split('?').next().unwrap_or(target);
    let mut body_len = 0usize;
    let mut echo = String::new();
    let echoing = path.starts_with("/echo/");
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim();
        if name == "content-length" {
            body_len = value.parse().map_err(|_| ())?;
        } else if name == "transfer-encoding" {
            return Err(());
        } else if echoing && ECHOED.contains(&name.as_str()) {
            echo.push_str(&format!("x-echo-{name}: {value}\r\n"));
        }
    }
    let out = if path == site.jwks_path {
        site.jwks.clone()
    } else if let Some((_, answer)) = site.introspection.as_ref().filter(|(p, _)| p == path) {
        answer.clone()
    } else if echoing {
        response("200 OK", &echo, BODY.as_bytes())
    } else {
        site.plain.clone()
    };
    Ok((out, body_len))
}

fn serve(site: Arc<Site>, mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut chunk = [0u8; 16 * 1024];
    let mut skip = 0usize; // request body bytes still to discard
    loop {
        // Answer every complete request in the buffer (pipelining), then read more.
        loop {
            if skip > 0 {
                let n = skip.min(buf.len());
                buf.drain(..n);
                skip -= n;
                if skip > 0 {
                    break;
                }
            }
            let Some(end) = find_head_end(&buf) else {
                break;
            };
            match answer(&site, &buf[..end]) {
                Ok((out, body_len)) => {
                    if stream.write_all(&out).is_err() {
                        return;
                    }
                    buf.drain(..end);
                    skip = body_len;
                }
                Err(()) => {
                    let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                    return;
                }
            }
        }
        if buf.len() > MAX_HEAD {
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 && args.len() != 6 {
        eprintln!("usage: bench-upstream <port> <jwks-file> <jwks-path> [<introspection-file> <introspection-path>]");
        std::process::exit(2);
    }
    let port: u16 = args[1].parse().unwrap_or_else(|_| {
        eprintln!("bench-upstream: bad port {}", args[1]);
        std::process::exit(2);
    });
    let jwks = std::fs::read(&args[2]).unwrap_or_else(|e| {
        eprintln!("bench-upstream: {}: {e}", args[2]);
        std::process::exit(2);
    });
    let introspection = (args.len() == 6).then(|| {
        let answer = std::fs::read(&args[4]).unwrap_or_else(|e| {
            eprintln!("bench-upstream: {}: {e}", args[4]);
            std::process::exit(2);
        });
        (args[5].clone(), response("200 OK", "", &answer))
    });
    let site = Arc::new(Site {
        jwks_path: args[3].clone(),
        jwks: response("200 OK", "", &jwks),
        introspection,
        plain: response("200 OK", "", BODY.as_bytes()),
    });
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| {
        eprintln!("bench-upstream: cannot listen on 127.0.0.1:{port}: {e}");
        std::process::exit(1);
    });
    println!("listening {port}");
    for stream in listener.incoming() {
        match stream {
            Ok(s) => {
                let site = site.clone();
                std::thread::spawn(move || serve(site, s));
            }
            Err(e) => eprintln!("bench-upstream: accept: {e}"),
        }
    }
}
