//! The explicit HTTP proxy on [`crate::addr::GATEWAY_ADDR`]:[`crate::addr::PROXY_PORT`], for tools that prefer
//! `HTTP_PROXY`/`HTTPS_PROXY`: `CONNECT host:port` and absolute-form plain HTTP (`GET http://host/...`). The
//! policy is the transparent path's: name and port, the restricted-address rule, and SNI / `Host` checks on the
//! first tunnelled bytes. Names are resolved and pinned through the same table as the gateway's DNS.

use std::net::IpAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::dns::{join_addrs, DnsServer};
use crate::event::Decision;
use crate::inspect::{host_without_port, MAX_PREFIX};
use crate::relay::{denied_header_value, http_refusal, relay, RelayContext, Target, NAME_NOT_ALLOWED};
use crate::rules::normalize_name;

/// Time for the client to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// A parsed proxy request.
#[derive(Debug, PartialEq, Eq)]
pub enum ProxyRequest {
    /// `CONNECT host:port`; `rest` is what followed the head (the tunnel's first bytes, if already sent).
    Connect { host: String, port: u16, rest: Vec<u8> },
    /// An absolute-form request, rewritten to origin form for the server: `forward` is the new head plus any body
    /// bytes already received.
    Forward { host: String, port: u16, forward: Vec<u8> },
}

/// Why a request head is refused before any policy applies: (status line, message).
type BadRequest = (&'static str, String);

/// Parses a complete request head in `buf` (`head_len` bytes long).
pub fn parse_request(buf: &[u8]) -> Result<Option<ProxyRequest>, BadRequest> {
    let bad = |why: &str| ("400 Bad Request", format!("airlock proxy: {why}\n"));
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(bad("malformed request")),
    };
    let method = request.method.unwrap_or_default();
    let target = request.path.unwrap_or_default();
    if method.eq_ignore_ascii_case("CONNECT") {
        let (host, port) = split_authority(target, None).ok_or_else(|| bad("CONNECT needs host:port"))?;
        return Ok(Some(ProxyRequest::Connect { host, port, rest: buf[head_len..].to_vec() }));
    }
    let Some(rest) = target
        .strip_prefix("http://")
        .or_else(|| target.get(..7).filter(|s| s.eq_ignore_ascii_case("http://")).map(|_| &target[7..]))
    else {
        return Err(if target.starts_with("https://") {
            bad("use CONNECT for https:// URLs")
        } else {
            bad("the proxy takes CONNECT or absolute http:// URLs")
        });
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    if authority.contains('@') {
        return Err(bad("user information in the URL is not supported"));
    }
    let (host, port) = split_authority(authority, Some(80)).ok_or_else(|| bad("bad host in the URL"))?;
    let mut host_header = None;
    let mut head = format!("{method} {path} HTTP/1.{}\r\n", request.version.unwrap_or(1));
    for h in request.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        if name == "host" {
            if host_header.is_some() {
                return Err(bad("more than one Host header"));
            }
            host_header = Some(host_without_port(&String::from_utf8_lossy(h.value)));
            continue;
        }
        // Hop-by-hop proxy headers stay here; the connection to the server is used for this one request.
        if name.starts_with("proxy-") || name == "connection" || name == "keep-alive" {
            continue;
        }
        head.push_str(h.name);
        head.push_str(": ");
        head.push_str(&String::from_utf8_lossy(h.value));
        head.push_str("\r\n");
    }
    if let Some(header) = &host_header {
        if *header != host {
            return Err((
                "403 Forbidden",
                format!("airlock: blocked by network policy: Host {header} does not match the URL's host {host}\n"),
            ));
        }
    }
    let shown_host = if host.contains(':') { format!("[{host}]") } else { host.clone() };
    let host_line = if port == 80 { shown_host } else { format!("{shown_host}:{port}") };
    head.push_str(&format!("Host: {host_line}\r\nConnection: close\r\n\r\n"));
    let mut forward = head.into_bytes();
    forward.extend_from_slice(&buf[head_len..]);
    Ok(Some(ProxyRequest::Forward { host, port, forward }))
}

/// `host:port`, `[v6]:port`, or (with a default port) `host`. The host is normalised.
fn split_authority(authority: &str, default_port: Option<u16>) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return None,
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0)?,
        None => default_port?,
    };
    let host = normalize_name(host);
    if host.is_empty() || !host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b)) {
        return None;
    }
    Some((host, port))
}

/// Answers and closes. `denied`: the `X-Airlock-Denied` header's value for a policy refusal (empty: none). A
/// refused CONNECT's body is not shown by most clients, but its headers are (`curl -v`), so the reason is in both.
async fn respond<S: AsyncWrite + Unpin>(client: &mut S, status: &str, denied: &str, body: &str) {
    let response = http_refusal(status, denied, body);
    let _ = client.write_all(response.as_bytes()).await;
    let _ = client.shutdown().await;
}

/// Serves one proxy connection.
pub async fn serve_proxy<S: AsyncRead + AsyncWrite + Unpin + 'static>(
    ctx: &RelayContext,
    dns: &DnsServer,
    mut client: S,
    idle_timeout: Duration,
) {
    let deadline = Instant::now() + HEAD_TIMEOUT;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let request = loop {
        match parse_request(&buf) {
            Ok(Some(request)) => break request,
            Ok(None) if buf.len() < MAX_PREFIX => {}
            Ok(None) => return respond(&mut client, "431 Request Header Fields Too Large", "", "").await,
            Err((status, body)) => {
                ctx.recorder.denied(Decision {
                    protocol: "proxy-http",
                    reason: body.trim_end().to_owned(),
                    ..Default::default()
                });
                // Only a policy refusal (a Host that does not match the URL) names itself in the header.
                let denied = if status.starts_with("403") {
                    body.trim_end().chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect()
                } else {
                    String::new()
                };
                return respond(&mut client, status, &denied, &body).await;
            }
        }
        match tokio::time::timeout_at(deadline, client.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return,
        }
    };
    let (protocol, host, port, prefix, connect) = match request {
        ProxyRequest::Connect { host, port, rest } => ("proxy-connect", host, port, rest, true),
        ProxyRequest::Forward { host, port, forward } => ("proxy-http", host, port, forward, false),
    };
    let target = match decide(ctx, dns, &host, port).await {
        Ok(target) => target,
        Err((status, address, reason)) => {
            ctx.recorder.denied(Decision {
                protocol,
                name: Some(host.clone()),
                address,
                port: Some(port),
                reason: reason.clone(),
                ..Default::default()
            });
            let (denied, body) = if status.starts_with("403") {
                (denied_header_value(&host, &reason), ctx.forbidden_body(&host))
            } else {
                (String::new(), format!("airlock proxy: {reason}\n"))
            };
            return respond(&mut client, status, &denied, &body).await;
        }
    };
    if connect && client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await.is_err() {
        return;
    }
    relay(ctx, client, target, Some(protocol), prefix, idle_timeout).await;
}

/// Decides a proxy request by name or IP literal. Err: (status, address as recorded, reason).
async fn decide(
    ctx: &RelayContext,
    dns: &DnsServer,
    host: &str,
    port: u16,
) -> Result<Target, (&'static str, Option<String>, String)> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return match ctx.allow.decide_ip(ip, port) {
            Ok(grant) => Ok(Target { name: None, port, grant }),
            Err(_) => Err((
                "403 Forbidden",
                Some(ip.to_string()),
                format!("IP literal {ip} is not on the allow-list (port {port})"),
            )),
        };
    }
    if !ctx.allow.name_allowed(host) {
        return Err(("403 Forbidden", None, NAME_NOT_ALLOWED.into()));
    }
    let entry = dns.lookup(host).await.map_err(|(code, reason)| {
        let status = if code == hickory_proto::op::ResponseCode::Refused { "403 Forbidden" } else { "502 Bad Gateway" };
        (status, None, reason)
    })?;
    match ctx.allow.decide_name(host, port, &entry.pinned) {
        Ok(grant) => Ok(Target { name: Some(host.to_owned()), port, grant }),
        Err(denial) => Err(("403 Forbidden", Some(join_addrs(&entry.pinned)), denial.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_requests() {
        let req =
            parse_request(b"CONNECT Allowed.Test:443 HTTP/1.1\r\nHost: allowed.test:443\r\n\r\n\x16\x03").unwrap();
        assert_eq!(req, Some(ProxyRequest::Connect { host: "allowed.test".into(), port: 443, rest: vec![0x16, 3] }));
        assert!(parse_request(b"CONNECT allowed.test HTTP/1.1\r\n\r\n").is_err());
        assert!(parse_request(b"CONNECT allowed.test:0 HTTP/1.1\r\n\r\n").is_err());
        assert!(parse_request(b"CONNECT allowed.test:99999 HTTP/1.1\r\n\r\n").is_err());
        assert_eq!(parse_request(b"CONNECT allowed.test:443 HTTP/1.1\r\n"), Ok(None));
        let v6 = parse_request(b"CONNECT [::1]:22 HTTP/1.1\r\n\r\n").unwrap();
        assert!(matches!(v6, Some(ProxyRequest::Connect { host, port: 22, .. }) if host == "::1"));
    }

    #[test]
    fn absolute_form_is_rewritten_to_origin_form() {
        let req = b"GET http://allowed.test:8080/a?b HTTP/1.1\r\nHost: allowed.test:8080\r\nProxy-Connection: keep-alive\r\nAccept: */*\r\n\r\n";
        let Ok(Some(ProxyRequest::Forward { host, port, forward })) = parse_request(req) else { panic!() };
        assert_eq!((host.as_str(), port), ("allowed.test", 8080));
        assert_eq!(
            String::from_utf8(forward).unwrap(),
            "GET /a?b HTTP/1.1\r\nAccept: */*\r\nHost: allowed.test:8080\r\nConnection: close\r\n\r\n"
        );
        let Ok(Some(ProxyRequest::Forward { port, forward, .. })) =
            parse_request(b"GET http://a.test HTTP/1.0\r\n\r\n")
        else {
            panic!()
        };
        assert_eq!(port, 80);
        assert!(String::from_utf8(forward).unwrap().starts_with("GET / HTTP/1.0\r\nHost: a.test\r\n"));
    }

    #[test]
    fn mismatched_or_odd_requests_are_refused() {
        let fronted = b"GET http://allowed.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\n";
        assert_eq!(parse_request(fronted).unwrap_err().0, "403 Forbidden");
        assert!(parse_request(b"GET /relative HTTP/1.1\r\nHost: a.test\r\n\r\n").is_err());
        assert!(parse_request(b"GET https://a.test/ HTTP/1.1\r\n\r\n").is_err());
        assert!(parse_request(b"GET http://user@a.test/ HTTP/1.1\r\n\r\n").is_err());
        assert!(parse_request(b"\x00\x01garbage\r\n\r\n").is_err());
    }

    #[test]
    fn hostile_heads_never_panic() {
        let mut state = 0xdead_beef_cafe_f00d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let seeds: [&[u8]; 2] = [
            b"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test\r\n\r\n",
            b"GET http://[::1]:80/x HTTP/1.1\r\nHost: [::1]\r\n\r\n",
        ];
        for i in 0..50_000 {
            let mut p = seeds[i % 2].to_vec();
            for _ in 0..(next() % 6) {
                let at = (next() as usize) % p.len();
                p[at] = next() as u8;
            }
            p.truncate((next() as usize) % (p.len() + 1));
            let _ = parse_request(&p);
        }
    }
}
