//! The gateway's main loop: the TUN device, the TCP/IP stack, and one task per flow.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::addr::{DNS_PORT, GATEWAY_ADDR, PROXY_PORT};
use crate::device::Closed;
use crate::dns::{DnsServer, HostResolver, NameTable};
use crate::ether::Link;
use crate::event::{Decision, EventSink, Recorder};
use crate::filter::Filter;
use crate::relay::{relay, ActiveGuard, RelayContext};
use crate::rules::AllowList;
use crate::stack::{SandboxStream, Stack, StackError};

/// How long the gateway's end waits for the open relays to record their close. They do so at their next poll,
/// in microseconds; the limit only bounds a sink that blocks, well under the 2 s the supervisor grants between
/// SIGTERM and SIGKILL.
const RELAY_CLOSE_LIMIT: Duration = Duration::from_millis(500);

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
#[derive(Debug)]
pub struct GatewayOptions {
    /// The gateway stops when this fd becomes readable: the read end of a pipe whose write end the supervisor
    /// holds (closed when the sandbox ends, whatever way the supervisor exits), or a pidfd of the sandbox's init
    /// (readable when it exits). Needed because the TUN alone never signals the sandbox's end: the open TUN fd
    /// keeps the sandbox's network namespace, and so the interface, alive. A signalfd works too (SIGTERM).
    /// However the gateway ends, each connection still relayed is recorded as closed, with its bytes so far and
    /// the reason "allowed by RULE; still open when the sandbox ended, closed".
    pub stop: Option<OwnedFd>,
    /// Resolve allowed names from this table instead of the host's resolver (/etc/hosts, /etc/resolv.conf).
    /// For embedding and for tests that must not edit the host's /etc/hosts.
    pub hosts: Option<HashMap<String, Vec<IpAddr>>>,
    /// Relayed TCP connections open at once (DNS and proxy connections included); further SYNs are refused.
    /// Bounds the gateway's memory per sandbox.
    pub max_connections: usize,
    /// A relayed TCP connection idle this long in both directions is reset.
    pub idle_timeout: Duration,
    /// What the descriptor served is: a TUN (the default), or a datagram socket of Ethernet frames (a VM's NIC).
    pub link: Link,
    /// Called once, [`SETTLE_AFTER`] after the gateway started serving: the gateway's own process gives back
    /// the memory start-up alone used (`airlock-netgw` drops its executable's pages). `None` for embedders.
    /// With [`serve_tun_blocking_with`] it runs on the gateway's thread as that thread next goes to sleep
    /// (tokio's park hook), so that what runs after it is only the way into the wait; [`serve_tun`] calls it
    /// from the gateway's loop.
    pub settled: Option<fn()>,
}

/// When [`GatewayOptions::settled`] is called: start-up is long over (the sandbox's init waits for the gateway
/// only to take the TUN), early enough that an idle sandbox's gateway is small from its first seconds.
pub const SETTLE_AFTER: Duration = Duration::from_secs(1);

/// Relayed connections one sandbox may hold open at once. Each busy one can hold ~2 MiB of buffers (the stack's
/// 1 MiB socket buffers each way; the relay moves bytes between them and the host socket without buffers of its
/// own), so this bounds a hostile sandbox's gateway at ~260 MiB; package managers open a few dozen at most (npm:
/// 15 per host).
pub const MAX_CONNECTIONS: usize = 128;

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            stop: None,
            hosts: None,
            max_connections: MAX_CONNECTIONS,
            idle_timeout: Duration::from_secs(300),
            link: Link::Tun,
            settled: None,
        }
    }
}

/// Why the gateway could not serve.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot start the gateway's async runtime: {0}")]
    StartRuntime(#[source] io::Error),
    #[error("cannot make the TUN file descriptor non-blocking: {0}")]
    SetNonBlocking(#[source] io::Error),
    #[error("cannot start the user-space TCP/IP stack: {0}")]
    StartStack(#[source] StackError),
    #[error("cannot register the TUN file descriptor with the event loop: {0}")]
    RegisterTun(#[source] io::Error),
    #[error("cannot register the stop file descriptor with the event loop: {0}")]
    RegisterStop(#[source] io::Error),
    #[error("reading the TUN device failed: {0}")]
    ReadTun(#[source] io::Error),
}

/// Serves the sandbox's TUN until reading it fails or ends. Builds its own tokio runtime. Blocking.
///
/// Note: an open TUN fd keeps its network namespace alive, so the TUN does not end by itself when the sandbox's
/// processes are gone; the embedder ends the gateway (process exit, PR_SET_PDEATHSIG) or passes
/// [`GatewayOptions::stop`] to [`serve_tun_blocking_with`].
pub fn serve_tun_blocking(tun: OwnedFd, config: GatewayConfig) -> Result<(), GatewayError> {
    serve_tun_blocking_with(tun, config, GatewayOptions::default())
}

/// [`serve_tun_blocking`] with explicit [`GatewayOptions`].
pub fn serve_tun_blocking_with(
    tun: OwnedFd,
    config: GatewayConfig,
    options: GatewayOptions,
) -> Result<(), GatewayError> {
    // One thread: a sandbox's gateway uses at most one core and little memory. Host lookups are async.
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_all();
    let mut options = options;
    // `settled` (which drops the executable's pages) as the thread goes to sleep, once due: whatever code runs
    // after it is mapped again at once, 64 KiB around each page run (the kernel's fault-around). From the park
    // hook that is tokio's way into `epoll_wait` only; from the loop it was also the loop's way back there
    // (an idle gateway's PSS: 660 KiB against 1,048, bench/network's idle sample).
    let settle = match options.settled.take() {
        Some(settled) => {
            let due = Arc::new(AtomicBool::new(false));
            let hook_due = Arc::clone(&due);
            builder.on_thread_park(move || {
                if hook_due.swap(false, Ordering::Relaxed) {
                    settled();
                }
            });
            Some(Settle::AtPark(due))
        }
        None => None,
    };
    let runtime = builder.build().map_err(GatewayError::StartRuntime)?;
    runtime.block_on(serve(tun, config, options, settle))
}

/// How [`GatewayOptions::settled`] is run once due.
enum Settle {
    /// Called from the gateway's loop.
    Now(fn()),
    /// Run by the runtime's park hook, which this flag arms.
    AtPark(Arc<AtomicBool>),
}

/// The gateway as a future, for embedders that run their own (multi-threaded) tokio runtime.
pub async fn serve_tun(tun: OwnedFd, config: GatewayConfig, options: GatewayOptions) -> Result<(), GatewayError> {
    let settle = options.settled.map(Settle::Now);
    serve(tun, config, options, settle).await
}

async fn serve(
    tun: OwnedFd,
    config: GatewayConfig,
    options: GatewayOptions,
    settle: Option<Settle>,
) -> Result<(), GatewayError> {
    let flags = rustix::fs::fcntl_getfl(&tun).map_err(|e| GatewayError::SetNonBlocking(e.into()))?;
    rustix::fs::fcntl_setfl(&tun, flags | rustix::fs::OFlags::NONBLOCK)
        .map_err(|e| GatewayError::SetNonBlocking(e.into()))?;
    // `AsyncFd::new` is deprecated because an `AsyncFd` over a borrowed raw fd could outlive that fd (I/O
    // safety). Here it owns the `OwnedFd`, which is closed only after deregistration when the `AsyncFd` drops,
    // so the concern does not apply; the replacement, `register`, is `unsafe` and this crate forbids that.
    #[allow(deprecated)]
    let tun = AsyncFd::new(tun).map_err(GatewayError::RegisterTun)?;
    let stop = match options.stop {
        Some(fd) => {
            #[allow(deprecated)] // as above: the AsyncFd owns the fd
            let fd = AsyncFd::new(fd).map_err(GatewayError::RegisterStop)?;
            Some(fd)
        }
        None => None,
    };

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
        ending: tokio::sync::watch::channel(false).0,
    });
    let filter = Filter {
        allow,
        names,
        recorder: recorder.clone(),
        active: active.clone(),
        max_connections: options.max_connections,
    };

    let stack = Stack::new(Arc::new(tun), filter, dns.clone(), options.link).map_err(GatewayError::StartStack)?;
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
    let mut stack_task = tokio::spawn(stack.run(accepted_tx));

    let idle_timeout = options.idle_timeout;
    // The flows' tasks, so that they end with the gateway (dropping the set aborts them) also when an embedder's
    // runtime outlives this future.
    let mut flows = tokio::task::JoinSet::new();
    let settle_timer = tokio::time::sleep(SETTLE_AFTER);
    tokio::pin!(settle_timer);
    let mut settle = settle;
    let result = loop {
        while flows.try_join_next().is_some() {}
        tokio::select! {
            closed = &mut stack_task => break match closed {
                Ok(Closed::Eof) | Err(_) => Ok(()),
                Ok(Closed::Error(e)) if tun_gone(&e) => Ok(()),
                Ok(Closed::Error(e)) => Err(GatewayError::ReadTun(e)),
            },
            _ = stopped(stop.as_ref()) => break Ok(()),
            () = &mut settle_timer, if settle.is_some() => match settle.take() {
                Some(Settle::Now(settled)) => settled(),
                Some(Settle::AtPark(due)) => due.store(true, Ordering::Relaxed),
                None => {}
            },
            stream = accepted.recv() => match stream {
                Some((stream, dst)) => {
                    dispatch_tcp(&mut flows, stream, dst, &dns, &relays, &active, idle_timeout)
                }
                None => break Ok(()),
            },
        }
    };
    // No new connection is taken from here on. The relays still open record their close with the bytes so far
    // (the sink writes synchronously, so the records are written when this returns); without this, the
    // connections open when the sandbox ended would never be recorded.
    relays.end_relays(RELAY_CLOSE_LIMIT).await;
    stack_task.abort();
    flows.abort_all();
    recorder.flush();
    result
}

/// Resolves when the stop fd is readable (never without one).
async fn stopped(stop: Option<&AsyncFd<OwnedFd>>) {
    match stop {
        Some(fd) => {
            let _ = fd.readable().await;
        }
        None => std::future::pending().await,
    }
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

fn dispatch_tcp(
    flows: &mut tokio::task::JoinSet<()>,
    tcp: SandboxStream,
    dst: SocketAddr,
    dns: &DnsServer,
    relays: &Arc<RelayContext>,
    active: &Arc<AtomicUsize>,
    idle_timeout: Duration,
) {
    let guard = ActiveGuard::new(active);
    if dst.ip() == IpAddr::V4(GATEWAY_ADDR) {
        match dst.port() {
            DNS_PORT => {
                let dns = dns.clone();
                flows.spawn(async move {
                    let _guard = guard;
                    serve_dns_tcp(dns, tcp).await;
                });
            }
            PROXY_PORT => {
                let (relays, dns) = (relays.clone(), dns.clone());
                flows.spawn(async move {
                    let _guard = guard;
                    crate::proxy::serve_proxy(&relays, &dns, tcp, idle_timeout).await;
                });
            }
            // The filter refuses other ports of the gateway at the SYN.
            _ => {}
        }
        return;
    }
    let relays = relays.clone();
    flows.spawn(async move {
        let _guard = guard;
        match relays.target_for(dst) {
            Ok(target) => relay(&relays, tcp, target, None, Vec::new(), idle_timeout).await,
            Err(denial) => relays.recorder.denied(denial),
        }
    });
}

/// DNS over TCP: 2-byte length-prefixed messages, until the client closes or idles.
async fn serve_dns_tcp(dns: DnsServer, mut tcp: SandboxStream) {
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
