//! Relays an allowed TCP connection: looks at the sandbox's first bytes (SNI / Host checks), then connects from
//! the host to the pinned address and copies both ways until both sides have closed.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{timeout, Instant};

use crate::addr::is_synthetic;
use crate::dns::{join_addrs, NameTable};
use crate::event::{Decision, Recorder};
use crate::inspect::{classify, Classified, FirstData, MAX_PREFIX};
use crate::rules::{AllowList, Grant};
use crate::stack::SandboxStream;

/// How long to wait for the sandbox's first bytes on the default ports (80, 443), where the client speaks first
/// (HTTP, TLS): the bytes decide the connection, so they are awaited before anything is opened on the host.
const FIRST_DATA_WAIT_WEB: Duration = Duration::from_secs(10);
/// On other ports the server may speak first (SMTP, ssh, some databases): after this wait the connection is
/// opened, and the client's first bytes are checked when they come (`relay_checking_late`).
const FIRST_DATA_WAIT_OTHER: Duration = Duration::from_millis(500);
/// Time to establish the host-side connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Copy buffer per direction: 256 KiB, a quarter of the stack's socket buffer, so one host `recv` fills several
/// 64 KB segments (fewer syscalls and wakeups per byte than 64 KiB).
const COPY_BUFFER: usize = 256 * 1024;
/// How a relay's record ends when the gateway stopped (the sandbox ended) while the connection was open.
pub const SANDBOX_ENDED: &str = "still open when the sandbox ended, closed";

/// Shared state of the relays.
pub struct RelayContext {
    pub allow: Arc<AllowList>,
    pub names: Arc<Mutex<NameTable>>,
    pub recorder: Recorder,
    pub deny_body_list: String,
    /// Set when the gateway stops (the sandbox ended). Every relay with an open host-side connection holds a
    /// receiver while it copies: it records its close (with the bytes so far) as soon as this turns true and
    /// then drops the receiver, so the gateway knows all those records are written once
    /// [`watch::Sender::closed`] resolves.
    pub ending: watch::Sender<bool>,
}

/// Resolves once the gateway is stopping.
async fn gateway_ending(ending: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which cannot happen while a relay holds the context; never resolve then.
    if ending.wait_for(|ending| *ending).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Counts a live relay for the connection limit while it exists.
pub struct ActiveGuard(Arc<AtomicUsize>);

impl ActiveGuard {
    pub fn new(active: &Arc<AtomicUsize>) -> ActiveGuard {
        active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(active.clone())
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Where a connection goes, as decided.
pub struct Target {
    /// The allowed name, for connections by name (synthetic address or proxy request).
    pub name: Option<String>,
    pub port: u16,
    pub grant: Grant,
}

impl RelayContext {
    /// Decides a connection the sandbox opened to `dst` (synthetic or IP literal).
    pub fn target_for(&self, dst: SocketAddr) -> Result<Target, Decision> {
        let port = dst.port();
        if let IpAddr::V4(v4) = dst.ip() {
            if is_synthetic(v4) {
                let entry = self.names.lock().unwrap_or_else(PoisonError::into_inner).by_synthetic(v4).cloned();
                let Some(entry) = entry else {
                    return Err(Decision {
                        protocol: "tcp",
                        address: Some(v4.to_string()),
                        port: Some(port),
                        reason: "synthetic address not handed out by the gateway's DNS".into(),
                        ..Default::default()
                    });
                };
                return match self.allow.decide_name(&entry.name, port, &entry.pinned) {
                    Ok(grant) => Ok(Target { name: Some(entry.name), port, grant }),
                    Err(denial) => Err(Decision {
                        protocol: "tcp",
                        name: Some(entry.name),
                        address: Some(join_addrs(&entry.pinned)),
                        port: Some(port),
                        reason: denial.to_string(),
                        ..Default::default()
                    }),
                };
            }
        }
        match self.allow.decide_ip(dst.ip(), port) {
            Ok(grant) => Ok(Target { name: None, port, grant }),
            Err(_) => Err(Decision {
                protocol: "tcp",
                address: Some(dst.ip().to_string()),
                port: Some(port),
                reason: format!("IP literal {} is not on the allow-list (port {port})", dst.ip()),
                ..Default::default()
            }),
        }
    }

    /// The 403 response for a refused plain-HTTP request: the reason in an `X-Airlock-Denied` header (what
    /// `curl -v` and HTTP libraries show an agent) and in the body.
    pub fn forbidden_response(&self, host: &str, reason: &str) -> Vec<u8> {
        let body = self.forbidden_body(host);
        http_refusal("403 Forbidden", &denied_header_value(host, reason), &body).into_bytes()
    }

    /// The body of a policy refusal: what is refused, what is allowed, and how to allow more.
    pub fn forbidden_body(&self, host: &str) -> String {
        format!(
            "airlock: blocked by network policy: {host} is not allowed (allowed: {}); \
             to allow it, run the sandbox with --allow {host} or a profile's [network] allow\n",
            self.deny_body_list
        )
    }
}

/// Why the gateway refused, as the value of the `X-Airlock-Denied` header: `HOST not in the allow-list`, or
/// `HOST: REASON`. Cut to printable ASCII on one line: the host comes from the sandbox's request, and a CR or LF
/// in it must not start a header of its own.
pub fn denied_header_value(host: &str, reason: &str) -> String {
    let text =
        if reason == NAME_NOT_ALLOWED { format!("{host} not in the allow-list") } else { format!("{host}: {reason}") };
    text.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).take(512).collect()
}

/// The reason recorded for a name the allow-list does not have.
pub const NAME_NOT_ALLOWED: &str = "name not on the allow-list";

/// A complete HTTP/1.1 refusal: status, `X-Airlock-Denied` (when not empty), a plain-text body, and the end of
/// the connection.
pub fn http_refusal(status: &str, denied: &str, body: &str) -> String {
    let header = if denied.is_empty() { String::new() } else { format!("X-Airlock-Denied: {denied}\r\n") };
    format!(
        "HTTP/1.1 {status}\r\n{header}Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A TLS fatal alert `access_denied` (49) in a TLS 1.2 record: what a client whose ClientHello was refused gets
/// instead of a bare reset, so its error names a refusal (`tlsv1 alert access denied`). TLS 1.3 clients accept
/// it too: before the handshake, alerts are sent in plaintext records.
pub const TLS_ACCESS_DENIED_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 49];

impl RelayContext {
    /// Tells the relays the gateway is stopping and waits (at most `limit`) until every relay that had a
    /// host-side connection open has recorded its close.
    pub async fn end_relays(&self, limit: Duration) {
        // `send_replace`, not `send`: the value must change even when no relay is listening right now, so that
        // a relay that connects during the wait sees it at once.
        self.ending.send_replace(true);
        let _ = timeout(limit, self.ending.closed()).await;
    }
}

/// Reads from `client` into `prefix` until the first data is classified, the buffer is full, the client stops
/// sending (EOF) or `deadline` passes. Returns the classification (`None`: nothing arrived in time).
pub async fn read_first_data<S: AsyncRead + Unpin>(
    client: &mut S,
    prefix: &mut Vec<u8>,
    deadline: Instant,
) -> io::Result<Option<FirstData>> {
    let mut chunk = [0u8; 4096];
    loop {
        if !prefix.is_empty() {
            if let Classified::Done(first) = classify(prefix) {
                return Ok(Some(first));
            }
            if prefix.len() >= MAX_PREFIX {
                return Ok(Some(FirstData::Other));
            }
        }
        let want = chunk.len().min(MAX_PREFIX - prefix.len());
        let n = match tokio::time::timeout_at(deadline, client.read(&mut chunk[..want])).await {
            Ok(n) => n?,
            Err(_) if prefix.is_empty() => return Ok(None),
            // Something arrived but not enough to decide: judged on what there is.
            Err(_) => return Ok(Some(incomplete(prefix))),
        };
        if n == 0 {
            return Ok(if prefix.is_empty() { None } else { Some(incomplete(prefix)) });
        }
        prefix.extend_from_slice(&chunk[..n]);
    }
}

/// Classification of a prefix that will not grow: a partial TLS or HTTP head counts as malformed.
fn incomplete(prefix: &[u8]) -> FirstData {
    match prefix.first() {
        Some(0x16) => FirstData::MalformedTls("incomplete ClientHello"),
        _ => match classify(prefix) {
            Classified::Done(first) => first,
            Classified::NeedMore => FirstData::MalformedHttp("incomplete request head"),
        },
    }
}

/// The policy on the first data of a connection by name. Ok: the protocol to record. Err: (protocol, name seen,
/// reason, whether to answer 403).
pub fn check_first_data(
    name: &str,
    first: &FirstData,
) -> Result<&'static str, (&'static str, Option<String>, String, bool)> {
    match first {
        FirstData::Tls { sni: Some(sni) } if sni == name => Ok("tls"),
        FirstData::Tls { sni: Some(sni) } => {
            Err(("tls", Some(sni.clone()), format!("SNI {sni} does not match {name}"), false))
        }
        // Without SNI the check cannot be made: the server (often a CDN fronting many names) would choose which
        // site to serve from its default certificate or from a later encrypted name. Every TLS client that
        // connects by name sends SNI, so refusing costs nothing legitimate.
        FirstData::Tls { sni: None } => Err(("tls", None, format!("TLS ClientHello without SNI to {name}"), false)),
        FirstData::MalformedTls(why) => {
            Err(("tls", None, format!("malformed TLS ClientHello to {name}: {why}"), false))
        }
        FirstData::Http(request) => match &request.host {
            Some(host) if host == name => Ok("http"),
            Some(host) => Err(("http", Some(host.clone()), format!("Host {host} does not match {name}"), true)),
            None => Err(("http", None, format!("HTTP request to {name} without a Host header"), true)),
        },
        FirstData::MalformedHttp(why) => Err(("http", None, format!("malformed HTTP request to {name}: {why}"), true)),
        FirstData::Other => Ok("tcp"),
    }
}

/// Counts bytes through the host-side stream.
struct Counted<T> {
    inner: T,
    read: u64,
    written: u64,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.read += (buf.filled().len() - before) as u64;
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            self.written += n as u64;
        }
        result
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// When a connection last moved a byte either way.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity { start: Instant::now(), last_ms: AtomicU64::new(0) }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once nothing moved for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            if last.elapsed() >= limit {
                return;
            }
            tokio::time::sleep_until(last + limit).await;
        }
    }
}

/// Marks activity on the sandbox side of a relay (both directions pass through it).
struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if result.is_ready() {
            self.activity.touch();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if result.is_ready() {
            self.activity.touch();
        }
        result
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn connect(addresses: &[IpAddr], port: u16) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for &ip in addresses {
        match timeout(CONNECT_TIMEOUT, TcpStream::connect(SocketAddr::new(ip, port))).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => last = e,
            Err(_) => last = io::Error::new(io::ErrorKind::TimedOut, format!("connect to {ip} timed out")),
        }
    }
    Err(last)
}

/// Relays `client` to `target` and records the outcome. `record_as` overrides the protocol recorded (the proxy's
/// "proxy-connect"/"proxy-http"); `prefix` holds bytes the caller already read from the client.
pub async fn relay<S: AsyncRead + AsyncWrite + Unpin + 'static>(
    ctx: &RelayContext,
    mut client: S,
    target: Target,
    record_as: Option<&'static str>,
    mut prefix: Vec<u8>,
    idle_timeout: Duration,
) {
    let port = target.port;
    let address = join_addrs(&target.grant.addresses);
    let wait = if crate::rules::DEFAULT_PORTS.contains(&port) { FIRST_DATA_WAIT_WEB } else { FIRST_DATA_WAIT_OTHER };
    let mut protocol = "tcp";
    // A connection by name whose client sent nothing in time: its first bytes are checked when they come.
    let mut late_check = None;
    if let Some(name) = &target.name {
        let first = match read_first_data(&mut client, &mut prefix, Instant::now() + wait).await {
            Ok(first) => first,
            Err(_) => return,
        };
        match first {
            None => late_check = Some(name.as_str()),
            Some(first) => match check_first_data(name, &first) {
                Ok(p) => protocol = p,
                Err(refusal) => {
                    let forbidden = refusal.3;
                    let reason = refusal.2.clone();
                    record_refusal(ctx, record_as, name, &address, port, refusal, "");
                    if forbidden {
                        let shown = match &first {
                            FirstData::Http(r) => r.host.clone().unwrap_or_else(|| "(no Host)".into()),
                            _ => name.clone(),
                        };
                        let _ = client.write_all(&ctx.forbidden_response(&shown, &reason)).await;
                        let _ = client.shutdown().await;
                    } else if matches!(first, FirstData::Tls { .. } | FirstData::MalformedTls(_)) {
                        // No HTTP to answer inside TLS: an alert is the one refusal a TLS client reports as such.
                        let _ = client.write_all(&TLS_ACCESS_DENIED_ALERT).await;
                        let _ = client.shutdown().await;
                    }
                    return;
                }
            },
        }
    }
    let record = |protocol: &'static str, reason: String, bytes_out: u64, bytes_in: u64| {
        ctx.recorder.allowed(Decision {
            protocol: record_as.unwrap_or(protocol),
            name: target.name.clone(),
            address: Some(address.clone()),
            port: Some(port),
            reason,
            bytes_out,
            bytes_in,
        })
    };
    let upstream = match connect(&target.grant.addresses, port).await {
        Ok(upstream) => upstream,
        Err(e) => {
            let reason = format!("allowed by {}; connecting from the host failed: {e}", target.grant.rule);
            record(protocol, reason, 0, 0);
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    // Subscribed only now that the host-side connection is open: the gateway's stop waits for the relays that
    // have something to record, not for those still waiting for first bytes or connecting (those are dropped).
    let mut ending = ctx.ending.subscribe();
    let activity = Arc::new(Activity::new());
    let mut client = Watched { inner: client, activity: activity.clone() };
    let mut upstream = Counted { inner: upstream, read: 0, written: 0 };
    let copy = async {
        match late_check {
            None => {
                upstream.write_all(&prefix).await?;
                match (&mut client.inner as &mut dyn std::any::Any).downcast_mut::<SandboxStream>() {
                    Some(sandbox) => splice(sandbox, &mut upstream, &activity).await?,
                    None => {
                        tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, COPY_BUFFER, COPY_BUFFER)
                            .await?;
                    }
                }
                Ok(protocol)
            }
            Some(name) => relay_checking_late(&mut client, &mut upstream, name, idle_timeout).await,
        }
    };
    let outcome = tokio::select! {
        result = copy => result,
        () = activity.idle_for(idle_timeout) => Err(Ended::Io(format!("idle for {}s, closed", idle_timeout.as_secs()))),
        () = gateway_ending(&mut ending) => Err(Ended::Io(SANDBOX_ENDED.to_owned())),
    };
    let rule = &target.grant.rule;
    match outcome {
        Ok(protocol) => record(protocol, format!("allowed by {rule}; closed"), upstream.written, upstream.read),
        Err(Ended::Io(why)) => record(protocol, format!("allowed by {rule}; {why}"), upstream.written, upstream.read),
        Err(Ended::Refused(refusal)) => {
            let name = target.name.as_deref().unwrap_or_default();
            let note = " (its first bytes came after the connection was opened; none were forwarded)";
            record_refusal(ctx, record_as, name, &address, port, refusal, note);
        }
    }
}

/// (protocol, name seen, reason, whether to answer 403), as [`check_first_data`] refuses.
type Refusal = (&'static str, Option<String>, String, bool);

fn record_refusal(
    ctx: &RelayContext,
    record_as: Option<&'static str>,
    name: &str,
    address: &str,
    port: u16,
    (protocol, seen, reason, _): Refusal,
    note: &str,
) {
    ctx.recorder.denied(Decision {
        protocol: record_as.unwrap_or(protocol),
        name: Some(seen.unwrap_or_else(|| name.to_owned())),
        address: Some(address.to_owned()),
        port: Some(port),
        reason: format!("{reason}{note}"),
        ..Default::default()
    });
}

/// How a relay ended other than by both sides closing.
enum Ended {
    Io(String),
    Refused(Refusal),
}

impl From<io::Error> for Ended {
    fn from(e: io::Error) -> Ended {
        Ended::Io(format!("ended: {e}"))
    }
}

/// Copies both ways between a connection of the gateway's stack and its host-side socket, each byte moved once
/// in user space: the host's bytes are read straight into the stack's send buffer, and the sandbox's written
/// straight from its receive buffer. Like `copy_bidirectional`: the end of one side is passed on as a
/// half-close, and it returns when both directions are done or one fails.
async fn splice(sandbox: &mut SandboxStream, host: &mut Counted<TcpStream>, activity: &Activity) -> io::Result<()> {
    let (mut to_sandbox_done, mut to_host_done) = (false, false);
    std::future::poll_fn(|cx| {
        while !to_sandbox_done {
            match sandbox.poll_send_from(cx, &host.inner) {
                Poll::Ready(Ok(0)) => {
                    sandbox.close_send();
                    to_sandbox_done = true;
                }
                Poll::Ready(Ok(n)) => {
                    host.read += n as u64;
                    activity.touch();
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => break,
            }
        }
        while !to_host_done {
            match sandbox.poll_recv_into(cx, &host.inner) {
                Poll::Ready(Ok(0)) => {
                    // A TCP stream's shutdown is immediate: shutdown(SHUT_WR).
                    if let Poll::Ready(Err(e)) = Pin::new(&mut host.inner).poll_shutdown(cx) {
                        return Poll::Ready(Err(e));
                    }
                    to_host_done = true;
                }
                Poll::Ready(Ok(n)) => {
                    host.written += n as u64;
                    activity.touch();
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => break,
            }
        }
        if to_sandbox_done && to_host_done {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
    .await
}

/// Relays a connection that was opened before the client spoke (a server-first protocol, or a client that
/// waited): the server's bytes flow at once, and the client's first bytes are still classified and checked
/// before any of them is forwarded. Returns the protocol to record.
async fn relay_checking_late<C, U>(
    client: &mut C,
    upstream: &mut U,
    name: &str,
    idle_timeout: Duration,
) -> Result<&'static str, Ended>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
    let to_client = async {
        tokio::io::copy(&mut upstream_read, &mut client_write).await?;
        client_write.shutdown().await?;
        Ok::<(), Ended>(())
    };
    let to_upstream = async {
        let mut prefix = Vec::new();
        // Without a deadline of its own: the relay's idle timeout ends a client that never speaks.
        let first = read_first_data(&mut client_read, &mut prefix, Instant::now() + idle_timeout).await?;
        let protocol = match first {
            Some(first) => check_first_data(name, &first).map_err(Ended::Refused)?,
            None => "tcp",
        };
        upstream_write.write_all(&prefix).await?;
        tokio::io::copy(&mut client_read, &mut upstream_write).await?;
        upstream_write.shutdown().await?;
        Ok::<&'static str, Ended>(protocol)
    };
    let ((), protocol) = futures::future::try_join(to_client, to_upstream).await?;
    Ok(protocol)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::HttpRequest;

    fn http(host: Option<&str>) -> FirstData {
        FirstData::Http(HttpRequest {
            method: "GET".into(),
            target: "/".into(),
            host: host.map(str::to_owned),
            head_len: 0,
        })
    }

    #[test]
    fn first_data_policy() {
        let name = "allowed.test";
        assert_eq!(check_first_data(name, &FirstData::Tls { sni: Some(name.into()) }), Ok("tls"));
        assert_eq!(check_first_data(name, &http(Some(name))), Ok("http"));
        assert_eq!(check_first_data(name, &FirstData::Other), Ok("tcp"));
        let sni = check_first_data(name, &FirstData::Tls { sni: Some("evil.test".into()) }).unwrap_err();
        assert_eq!((sni.0, sni.1.as_deref(), sni.3), ("tls", Some("evil.test"), false));
        assert!(check_first_data(name, &FirstData::Tls { sni: None }).is_err());
        assert!(check_first_data(name, &FirstData::MalformedTls("x")).is_err());
        let host = check_first_data(name, &http(Some("evil.test"))).unwrap_err();
        assert_eq!((host.0, host.2.as_str(), host.3), ("http", "Host evil.test does not match allowed.test", true));
        assert!(check_first_data(name, &http(None)).unwrap_err().3);
        assert!(check_first_data(name, &FirstData::MalformedHttp("x")).unwrap_err().3);
    }

    #[test]
    fn forbidden_response_carries_the_body_agents_act_on() {
        let ctx = RelayContext {
            allow: Arc::new(AllowList::new(vec![])),
            names: Arc::new(Mutex::new(NameTable::default())),
            recorder: Recorder::new("t", Box::new(|_| {})),
            deny_body_list: "a.test, *.b.test:8443".into(),
            ending: watch::channel(false).0,
        };
        let response = String::from_utf8(ctx.forbidden_response("evil.test", NAME_NOT_ALLOWED)).unwrap();
        let body = ctx.forbidden_body("evil.test");
        assert!(body.starts_with(
            "airlock: blocked by network policy: evil.test is not allowed (allowed: a.test, *.b.test:8443)"
        ));
        assert!(response.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{response}");
        assert!(response.contains("\r\nX-Airlock-Denied: evil.test not in the allow-list\r\n"), "{response}");
        let hostile = denied_header_value("evil.test\r\nSet-Cookie: x", "Host a does not match b");
        assert_eq!(hostile, "evil.test??Set-Cookie: x: Host a does not match b");
        assert!(response.contains(&format!("Content-Length: {}\r\n", body.len())), "{response}");
        assert!(response.ends_with(&format!("\r\n\r\n{body}")), "{response}");
    }
}
