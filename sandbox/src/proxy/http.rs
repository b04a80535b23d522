//! Just enough HTTP/1.1 for a forward proxy: read a request head, tell a `CONNECT`
//! tunnel from a plain-HTTP request in absolute form, and rewrite the latter for the
//! origin server (origin-form target, `Host` forced to the vetted authority, hop-by-hop
//! headers dropped, `Connection: close`).

use super::rules::{Host, split_authority};

/// The largest request head accepted.
pub const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;

/// What a client asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// `CONNECT host:port`: a tunnel.
    Connect { host: Host, port: u16 },
    /// `METHOD http://host[:port]/path`: forward one request; `head` is what to send
    /// upstream.
    Forward {
        host: Host,
        port: u16,
        head: Vec<u8>,
    },
}

/// Where the head ends (the index after `\r\n\r\n`), if it is complete.
pub fn head_end(buffer: &[u8]) -> Option<usize> {
    buffer
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .map(|at| at + 4)
}

/// Parses a complete head. The error is a short reason for a 400 answer.
pub fn parse(head: &[u8]) -> Result<Request, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err("incomplete request head".into()),
        Err(error) => return Err(format!("malformed request: {error}")),
    }
    let method = request.method.ok_or("no method")?;
    let target = request.path.ok_or("no request target")?;
    if method.eq_ignore_ascii_case("CONNECT") {
        let (host, port) = split_authority(target, None)
            .ok_or_else(|| format!("bad CONNECT target {target:?}"))?;
        return Ok(Request::Connect { host, port });
    }
    let Some(rest) = strip_scheme(target) else {
        if target.starts_with("https://") || target.starts_with("HTTPS://") {
            return Err("https:// requests must use CONNECT".into());
        }
        return Err(format!("not a proxy request: {target:?}"));
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_owned()
    };
    let (host, port) =
        split_authority(authority, Some(80)).ok_or_else(|| format!("bad host in {target:?}"))?;

    let connection_tokens: Vec<String> = request
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| {
            String::from_utf8_lossy(h.value)
                .split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .collect();
    let mut out = Vec::with_capacity(head.len() + 64);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // The vetted authority, whatever Host the client sent: no fronting to another
    // site on the same server.
    out.extend_from_slice(format!("Host: {}\r\n", authority_text(&host, port)).as_bytes());
    for header in request.headers.iter() {
        let name = header.name.to_ascii_lowercase();
        let hop_by_hop = matches!(
            name.as_str(),
            "host"
                | "connection"
                | "proxy-connection"
                | "keep-alive"
                | "proxy-authorization"
                | "proxy-authenticate"
                | "te"
                | "trailer"
                | "upgrade"
        ) || connection_tokens.contains(&name);
        if hop_by_hop {
            continue;
        }
        out.extend_from_slice(header.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(header.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    Ok(Request::Forward {
        host,
        port,
        head: out,
    })
}

fn strip_scheme(target: &str) -> Option<&str> {
    let (scheme, rest) = target.split_once("://")?;
    scheme.eq_ignore_ascii_case("http").then_some(rest)
}

/// `host:port` as it goes into a `Host` header.
pub fn authority_text(host: &Host, port: u16) -> String {
    if port == 80 {
        host.to_string()
    } else {
        format!("{host}:{port}")
    }
}

/// A short response the proxy writes itself.
pub fn response(
    status: u16,
    reason: &str,
    body: &str,
    extra_header: Option<(&str, &str)>,
) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some((name, value)) = extra_header {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(body);
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_targets_are_parsed() {
        let request =
            parse(b"CONNECT api.anthropic.com:443 HTTP/1.1\r\nHost: x\r\n\r\n").expect("parses");
        assert_eq!(
            request,
            Request::Connect {
                host: Host::Name("api.anthropic.com".into()),
                port: 443
            }
        );
        assert!(parse(b"CONNECT api.anthropic.com HTTP/1.1\r\n\r\n").is_err());
    }

    #[test]
    fn forwarded_requests_are_rewritten_for_the_origin() {
        let head = b"POST http://Allowed.Test:8080/v1/x?y=1 HTTP/1.1\r\nHost: evil.test\r\n\
                     Proxy-Connection: keep-alive\r\nConnection: keep-alive, X-Secret\r\n\
                     X-Secret: 1\r\nContent-Length: 2\r\n\r\n";
        let Request::Forward { host, port, head } = parse(head).expect("parses") else {
            panic!("not a forward");
        };
        assert_eq!((host, port), (Host::Name("allowed.test".into()), 8080));
        let text = String::from_utf8(head).expect("utf8");
        assert_eq!(
            text,
            "POST /v1/x?y=1 HTTP/1.1\r\nHost: allowed.test:8080\r\nContent-Length: 2\r\n\
             Connection: close\r\n\r\n"
        );
    }

    #[test]
    fn origin_form_and_https_requests_are_refused() {
        assert!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").is_err());
        let error = parse(b"GET https://x/ HTTP/1.1\r\n\r\n").expect_err("https");
        assert!(error.contains("CONNECT"));
        assert!(parse(b"GET http://user@x/ HTTP/1.1\r\n\r\n").is_err());
        assert!(parse(b"\x00\x01garbage\r\n\r\n").is_err());
    }

    #[test]
    fn the_head_end_is_found() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nbody"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
    }
}
