//! The gateway's main loop: the TUN device, the TCP/IP stack, and one task per flow.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipstack::{IpStack, IpStackConfig, IpStackStream, TcpConfig, TcpOptions};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use crate::addr::{DNS_PORT, GATEWAY_ADDR, MTU, PROXY_PORT};
use crate::device::{Closed, TunDevice};
use crate::dns::{DnsServer, HostResolver, NameTable};
use crate::event::{Decision, EventSink, Recorder};
use crate::filter::Filter;
use crate::relay::{relay, ActiveGuard, RelayContext};
use crate::rules::AllowList;

/// What the gateway serves, for one sandbox.
pub struct GatewayConfig {
    /// The sandbox's name, in every record.
    pub sandbox: String,
    /// The policy crate's validated rules (domain lower-case, maybe `*.x`; port `None` = 80 and 443).
    pub allow: Vec<policy::sandbox::AllowRule>,
    /// Receives every decision.
    pub events: EventSink,
}

/// Tunables beyond the interface's [`GatewayConfig`]; `Default` is what [`serve_tun_blocking`] uses.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// Resolve allowed names from this table instead of the host's resolver (/etc/hosts, /etc/resolv.conf).
    /// For embedding and for tests that must not edit the host's /etc/hosts.
    pub hosts: Option<HashMap<String, Vec<IpAddr>>>,
    /// Relayed TCP connections open at once (DNS and proxy connections included); further SYNs are refused.
    /// Bounds the gateway's memory per sandbox.
    pub max_connections: usize,
    /// A relayed TCP connection idle this long in both directions is reset.
    pub idle_timeout: Duration,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions { hosts: None, max_connections: 1024, idle_timeout: Duration::from_secs(300) }
    }
}

/// Why the gateway could not serve.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot start the gateway's async runtime: {0}")]
    StartRuntime(#[source] io::Error),
    #[error("cannot make the TUN file descriptor non-blocking: {0}")]
    SetNonBlocking(#[source] io::Error),
    #[error("cannot register the TUN file descriptor with the event loop: {0}")]
    RegisterTun(#[source] io::Error),
    #[error("reading the TUN device failed: {0}")]
    ReadTun(#[source] io::Error),
}

/// Serves the sandbox's TUN until it closes (the sandbox's netns is gone → read error/EOF). Builds its own tokio
/// runtime. Blocking.
pub fn serve_tun_blocking(tun: OwnedFd, config: GatewayConfig) -> Result<(), GatewayError> {
    serve_tun_blocking_with(tun, config, GatewayOptions::default())
}

/// [`serve_tun_blocking`] with explicit [`GatewayOptions`].
pub fn serve_tun_blocking_with(
    tun: OwnedFd,
    config: GatewayConfig,
    options: GatewayOptions,
) -> Result<(), GatewayError> {
    // Multi-threaded with one worker: the stack blocks in place when a TCP stream is dropped, which the
    // current-thread runtime does not allow. One worker keeps a sandbox's gateway to one core and little memory.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(4)
        .enable_all()
        .build()
        .map_err(GatewayError::StartRuntime)?;
    runtime.block_on(serve_tun(tun, config, options))
}

/// The gateway as a future, for embedders that run their own (multi-threaded) tokio runtime.
pub async fn serve_tun(tun: OwnedFd, config: GatewayConfig, options: GatewayOptions) -> Result<(), GatewayError> {
    let flags = rustix::fs::fcntl_getfl(&tun).map_err(|e| GatewayError::SetNonBlocking(e.into()))?;
    rustix::fs::fcntl_setfl(&tun, flags | rustix::fs::OFlags::NONBLOCK)
        .map_err(|e| GatewayError::SetNonBlocking(e.into()))?;
    // `AsyncFd::new` is deprecated because an `AsyncFd` over a borrowed raw fd could outlive that fd (I/O
    // safety). Here it owns the `OwnedFd`, which is closed only after deregistration when the `AsyncFd` drops,
    // so the concern does not apply; the replacement, `register`, is `unsafe` and this crate forbids that.
    #[allow(deprecated)]
    let tun = AsyncFd::new(tun).map_err(GatewayError::RegisterTun)?;

    let allow = Arc::new(AllowList::new(config.allow));
    let recorder = Recorder::new(&config.sandbox, config.events);
    let names = Arc::new(Mutex::new(NameTable::default()));
    let active = Arc::new(AtomicUsize::new(0));
    let resolver = match options.hosts {
        Some(table) => HostResolver::Table(table),
        None => HostResolver::system(),
    };
    let dns = DnsServer {
        allow: allow.clone(),
        names: names.clone(),
        resolver: Arc::new(resolver),
        recorder: recorder.clone(),
    };
    let relays = Arc::new(RelayContext {
        allow: allow.clone(),
        names: names.clone(),
        recorder: recorder.clone(),
        deny_body_list: allow.describe(),
    });
    let filter = Filter {
        allow,
        names,
        recorder: recorder.clone(),
        active: active.clone(),
        max_connections: options.max_connections,
    };

    let (closed_tx, mut closed_rx) = oneshot::channel();
    let device = TunDevice::new(tun, filter, closed_tx);
    let mut stack_config = IpStackConfig::default();
    stack_config.mtu_unchecked(MTU).udp_timeout(Duration::from_secs(10));
    let mut tcp = TcpConfig::default();
    tcp.timeout = options.idle_timeout;
    // Advertise the link's MSS: without it the sandbox's kernel falls back to 536-byte segments.
    tcp.options = Some(vec![TcpOptions::MaximumSegmentSize(MTU - 40)]);
    tcp.max_unacked_bytes = 256 * 1024;
    tcp.read_buffer_size = 256 * 1024;
    stack_config.with_tcp_config(tcp);
    let mut stack = IpStack::new(stack_config, device);

    let result = loop {
        tokio::select! {
            closed = &mut closed_rx => break match closed {
                Ok(Closed::Eof) | Err(_) => Ok(()),
                Ok(Closed::Error(e)) if tun_gone(&e) => Ok(()),
                Ok(Closed::Error(e)) => Err(GatewayError::ReadTun(e)),
            },
            stream = stack.accept() => match stream {
                Ok(stream) => dispatch(stream, &dns, &relays, &active),
                // The stack stopped (its device failed): the TUN is gone.
                Err(_) => break Ok(()),
            },
        }
    };
    recorder.flush();
    result
}

/// Errors meaning the interface or its namespace disappeared, the normal end of a sandbox.
fn tun_gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(code) if [
        rustix::io::Errno::BADFD.raw_os_error(),
        rustix::io::Errno::IO.raw_os_error(),
        rustix::io::Errno::NODEV.raw_os_error(),
        rustix::io::Errno::NXIO.raw_os_error(),
        rustix::io::Errno::PIPE.raw_os_error(),
    ].contains(&code))
}

fn dispatch(stream: IpStackStream, dns: &DnsServer, relays: &Arc<RelayContext>, active: &Arc<AtomicUsize>) {
    match stream {
        IpStackStream::Tcp(tcp) => {
            let dst = tcp.peer_addr();
            let guard = ActiveGuard::new(active);
            if dst.ip() == IpAddr::V4(GATEWAY_ADDR) {
                match dst.port() {
                    DNS_PORT => {
                        let dns = dns.clone();
                        tokio::spawn(async move {
                            let _guard = guard;
                            serve_dns_tcp(dns, tcp).await;
                        });
                    }
                    PROXY_PORT => {
                        let relays = relays.clone();
                        tokio::spawn(async move {
                            let _guard = guard;
                            crate::proxy::serve_proxy(&relays, tcp).await;
                        });
                    }
                    _ => {}
                }
                return;
            }
            let relays = relays.clone();
            tokio::spawn(async move {
                let _guard = guard;
                match relays.target_for(dst) {
                    Ok(target) => relay(&relays, tcp, target, None, Vec::new()).await,
                    Err(denial) => relays.recorder.denied(denial),
                }
            });
        }
        IpStackStream::Udp(udp) => {
            // The filter passes only DNS to the gateway.
            if udp.peer_addr() != SocketAddr::new(IpAddr::V4(GATEWAY_ADDR), DNS_PORT) {
                return;
            }
            let dns = dns.clone();
            tokio::spawn(serve_dns_udp(dns, udp));
        }
        IpStackStream::UnknownTransport(_) | IpStackStream::UnknownNetwork(_) => {}
    }
}

/// One UDP flow (client port) to the DNS server: each read is one datagram.
async fn serve_dns_udp(dns: DnsServer, mut udp: ipstack::IpStackUdpStream) {
    let mut buf = vec![0u8; 4096];
    // The stream ends after the stack's UDP timeout without packets.
    while let Ok(n) = udp.read(&mut buf).await {
        if n == 0 {
            break;
        }
        if let Some(reply) = dns.answer(&buf[..n]).await {
            // Answers over UDP are limited to 512 bytes unless EDNS says otherwise; synthetic answers hold one A
            // record and stay far below.
            if udp.write_all(&reply).await.is_err() {
                break;
            }
        }
    }
}

/// DNS over TCP: 2-byte length-prefixed messages, until the client closes or idles.
async fn serve_dns_tcp(dns: DnsServer, mut tcp: ipstack::IpStackTcpStream) {
    const IDLE: Duration = Duration::from_secs(10);
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(IDLE, tcp.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => break,
        }
        let mut message = vec![0u8; usize::from(u16::from_be_bytes(len))];
        match tokio::time::timeout(IDLE, tcp.read_exact(&mut message)).await {
            Ok(Ok(_)) => {}
            _ => break,
        }
        let Some(reply) = dns.answer(&message).await else {
            dns.recorder.denied(Decision {
                protocol: "dns",
                reason: "unanswerable message over TCP".into(),
                ..Default::default()
            });
            break;
        };
        let Ok(reply_len) = u16::try_from(reply.len()) else { break };
        let mut framed = reply_len.to_be_bytes().to_vec();
        framed.extend_from_slice(&reply);
        if tcp.write_all(&framed).await.is_err() {
            break;
        }
    }
    let _ = tcp.shutdown().await;
}
