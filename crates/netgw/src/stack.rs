//! The gateway's TCP/IP stack: smoltcp over the sandbox's TUN, driven by one task.
//!
//! The task reads the TUN, filters each packet ([`TunDevice`]) and hands the passed ones to smoltcp in place
//! (no copy, no queue); the stack's segments are written to the TUN from one reused buffer as smoltcp builds
//! them. The sandbox's connections are [`SandboxStream`]s that read and write the smoltcp sockets' own buffers
//! under one lock, so a byte from the host is copied once in user space (relay buffer → socket buffer) before
//! smoltcp builds the segment from it. This replaces netstack-smoltcp, which put two channels, a hand-over ring
//! per direction and a zeroed allocation per packet between the TUN and smoltcp, and had smoltcp checksum every
//! segment it sent although the sandbox's kernel is told not to check it (`VIRTIO_NET_HDR_F_NEEDS_CSUM`).

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use futures::FutureExt;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration as SmolDuration, Instant as SmolInstant};
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint, Ipv4Address};
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, Notify};

use crate::device::{Closed, TunDevice};
use crate::dns::DnsServer;
use crate::ether::Link;
use crate::filter::Filter;

/// Each TCP connection's smoltcp socket buffers, each way. 1 MiB rather than 256 KiB: with 64 KB segments a
/// 256 KiB send buffer holds 4 segments, so the stack ran dry between the relay's writes and each wakeup moved
/// little (measured with bench/network: the gateway's CPU per GiB fell ~20%, its throughput rose ~35%). Pages
/// are touched only as data flows.
pub const TCP_BUFFER: usize = 1024 * 1024;
/// Rounds of (read, filter, stack, write) the task runs back to back while there is work, before it lets the
/// runtime's other tasks (the relays, DNS) run.
const ROUNDS_PER_YIELD: usize = 16;
/// How long the task sleeps when smoltcp has no timer pending and nothing arrives, while it holds connections.
/// With none, it sleeps until a packet arrives: nothing else can give it work (a stream exists only with its
/// socket), and an idle sandbox's gateway then runs no code at all, so that the pages of the executable it
/// dropped after start-up stay out of its memory (each 5 s wakeup brought back ~700 KiB of them: the kernel maps
/// 64 KiB around each fault, measured with /proc/PID/smaps; see docs/benchmarks.md).
const IDLE_WAKEUP: std::time::Duration = std::time::Duration::from_secs(5);
/// TCP keep-alive toward the sandbox, and the time after which an unresponsive connection is dropped (those of
/// netstack-smoltcp before: Linux's default for the latter).
const KEEP_ALIVE: SmolDuration = SmolDuration::from_secs(28);
const TIMEOUT: SmolDuration = SmolDuration::from_secs(7200);

/// What the task and the connections' streams share.
pub struct Shared {
    state: Mutex<State>,
    /// Woken by a stream that queued data to send or freed receive space, so the stack sends or opens its
    /// window; a wakeup that comes while the task runs is kept for its next wait.
    wake_stack: Notify,
}

struct State {
    sockets: SocketSet<'static>,
    /// The socket of each connection (sandbox's end, gateway's end), so that a retransmitted SYN does not open a
    /// second one.
    flows: HashMap<(SocketAddrV4, SocketAddrV4), SocketHandle>,
    /// Sockets whose stream is gone: removed once closed (after TIME-WAIT, or at once when reset).
    orphans: Vec<SocketHandle>,
}

impl Shared {
    fn new() -> Arc<Shared> {
        Arc::new(Shared {
            state: Mutex::new(State {
                sockets: SocketSet::new(Vec::new()),
                flows: HashMap::new(),
                orphans: Vec::new(),
            }),
            wake_stack: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would have aborted the process (panic = "abort"); in tests the state
        // is still consistent enough to finish.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Why the stack could not start.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("cannot give the stack its address {0}")]
    AddAddress(IpCidr),
    #[error("cannot add the stack's default route via {0}")]
    AddRoute(Ipv4Address),
}

/// A TCP connection from the sandbox, as the relays use it.
///
/// `shutdown` queues the FIN (sent once the data before it is out, as with `shutdown(2)`) and returns without
/// waiting for the socket's final close, which, when the gateway closes first, includes TCP's TIME-WAIT (10 s in
/// smoltcp): a relay would otherwise hold its connection slot, and record its close, only that much later.
/// Dropping the stream closes the connection the same way; data the sandbox sends after that is discarded.
pub struct SandboxStream {
    shared: Arc<Shared>,
    handle: SocketHandle,
}

/// The states before the handshake is complete, when a stream exists but can neither read nor write yet.
fn handshaking(state: tcp::State) -> bool {
    matches!(state, tcp::State::Listen | tcp::State::SynReceived)
}

impl SandboxStream {
    /// Queues the FIN after the data already written.
    pub fn close_send(&mut self) {
        self.shared.lock().sockets.get_mut::<tcp::Socket>(self.handle).close();
        self.shared.wake_stack.notify_one();
    }

    /// Moves what `host` has to read straight into this connection's send buffer: one copy (the kernel's, into
    /// smoltcp's buffer) instead of two. `Ok(0)` when `host` is at its end.
    pub fn poll_send_from(&mut self, cx: &mut Context<'_>, host: &tokio::net::TcpStream) -> Poll<io::Result<usize>> {
        loop {
            std::task::ready!(host.poll_read_ready(cx))?;
            let mut state = self.shared.lock();
            let socket = state.sockets.get_mut::<tcp::Socket>(self.handle);
            if !socket.can_send() {
                if socket.may_send() || handshaking(socket.state()) {
                    socket.register_send_waker(cx.waker());
                    return Poll::Pending;
                }
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            // The buffer is not full, so the free space offered is not empty and a read of 0 is the end.
            let result = socket.send(|free| match host.try_read(free) {
                Ok(n) => (n, Ok(n)),
                Err(e) => (0, Err(e)),
            });
            drop(state);
            match result {
                Err(_) => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
                // `try_read` cleared the readiness: the next round waits for more.
                Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Ok(Ok(n)) => {
                    self.shared.wake_stack.notify_one();
                    return Poll::Ready(Ok(n));
                }
            }
        }
    }

    /// Writes what this connection has received straight from smoltcp's buffer to `host`. `Ok(0)` when the
    /// sandbox has closed its side (or the connection is gone) and everything before was written.
    pub fn poll_recv_into(&mut self, cx: &mut Context<'_>, host: &tokio::net::TcpStream) -> Poll<io::Result<usize>> {
        loop {
            std::task::ready!(host.poll_write_ready(cx))?;
            let mut state = self.shared.lock();
            let socket = state.sockets.get_mut::<tcp::Socket>(self.handle);
            if !socket.can_recv() {
                if socket.may_recv() || handshaking(socket.state()) {
                    socket.register_recv_waker(cx.waker());
                    return Poll::Pending;
                }
                return Poll::Ready(Ok(0));
            }
            let result = socket.recv(|data| match host.try_write(data) {
                Ok(n) => (n, Ok(n)),
                Err(e) => (0, Err(e)),
            });
            drop(state);
            match result {
                Err(_) => return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into())),
                Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Ok(Ok(n)) => {
                    // Receive space freed: the stack may have a window update to send.
                    self.shared.wake_stack.notify_one();
                    return Poll::Ready(Ok(n));
                }
            }
        }
    }
}

impl tokio::io::AsyncRead for SandboxStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut tokio::io::ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut state = this.shared.lock();
        let socket = state.sockets.get_mut::<tcp::Socket>(this.handle);
        if socket.can_recv() {
            let result = socket.recv_slice(buf.initialize_unfilled());
            drop(state);
            return match result {
                Ok(n) => {
                    buf.advance(n);
                    // Receive space freed: the stack may have a window update to send.
                    this.shared.wake_stack.notify_one();
                    Poll::Ready(Ok(()))
                }
                Err(_) => Poll::Ready(Err(io::ErrorKind::ConnectionReset.into())),
            };
        }
        if socket.may_recv() || handshaking(socket.state()) {
            // Woken by smoltcp when data arrives or the state changes.
            socket.register_recv_waker(cx.waker());
            return Poll::Pending;
        }
        // The sandbox sent its FIN, or the connection is gone: end of stream.
        Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for SandboxStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut state = this.shared.lock();
        let socket = state.sockets.get_mut::<tcp::Socket>(this.handle);
        if socket.can_send() {
            let result = socket.send_slice(buf);
            drop(state);
            return match result {
                Ok(n) => {
                    this.shared.wake_stack.notify_one();
                    Poll::Ready(Ok(n))
                }
                Err(_) => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            };
        }
        if socket.may_send() || handshaking(socket.state()) {
            // Woken by smoltcp when the sandbox acknowledges data (space in the buffer) or the state changes.
            socket.register_send_waker(cx.waker());
            return Poll::Pending;
        }
        Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().close_send();
        Poll::Ready(Ok(()))
    }
}

impl Drop for SandboxStream {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.sockets.get_mut::<tcp::Socket>(self.handle).close();
        state.orphans.push(self.handle);
        drop(state);
        self.shared.wake_stack.notify_one();
    }
}

/// The smoltcp interface: any address (`set_any_ip`), so that it terminates connections to whatever the filter
/// let through, each socket listening on the exact address and port its SYN was for.
fn interface(device: &mut TunDevice) -> Result<Interface, StackError> {
    let mut config = Config::new(HardwareAddress::Ip);
    // The seed of the stack's initial sequence numbers.
    config.random_seed = RandomState::new().build_hasher().finish();
    let mut iface = Interface::new(config, device, SmolInstant::now());
    let any = IpCidr::new(IpAddress::v4(0, 0, 0, 1), 0);
    let mut pushed = Ok(());
    iface.update_ip_addrs(|addrs| pushed = addrs.push(any).map_err(|_| StackError::AddAddress(any)));
    pushed?;
    let via = Ipv4Address::new(0, 0, 0, 1);
    iface.routes_mut().add_default_ipv4_route(via).map_err(|_| StackError::AddRoute(via))?;
    iface.set_any_ip(true);
    Ok(iface)
}

/// A listening socket for the SYN of the connection `src` → `dst` the filter passed, and its stream for the
/// relays; `None` when the connection already has a socket (a retransmitted SYN, which that socket answers).
fn open(shared: &Arc<Shared>, state: &mut State, src: SocketAddrV4, dst: SocketAddrV4) -> Option<SandboxStream> {
    if let Some(&handle) = state.flows.get(&(src, dst)) {
        let previous = state.sockets.get::<tcp::Socket>(handle).state();
        let over = matches!(previous, tcp::State::Closed | tcp::State::TimeWait);
        if !over || !state.orphans.contains(&handle) {
            return None;
        }
        // A new connection on the 4-tuple of one that is over (the sandbox reused its port): the old socket goes.
        remove(state, handle);
    }
    let mut socket =
        tcp::Socket::new(tcp::SocketBuffer::new(vec![0u8; TCP_BUFFER]), tcp::SocketBuffer::new(vec![0u8; TCP_BUFFER]));
    socket.set_keep_alive(Some(KEEP_ALIVE));
    socket.set_timeout(Some(TIMEOUT));
    socket.listen(IpEndpoint::new(IpAddress::Ipv4(*dst.ip()), dst.port())).ok()?;
    let handle = state.sockets.add(socket);
    state.flows.insert((src, dst), handle);
    Some(SandboxStream { shared: shared.clone(), handle })
}

fn remove(state: &mut State, handle: SocketHandle) {
    state.sockets.remove(handle);
    state.flows.retain(|_, h| *h != handle);
    state.orphans.retain(|h| *h != handle);
}

/// Removes the orphaned sockets that are closed, and empties the others' receive buffers: nobody reads them.
fn reap(state: &mut State) {
    let State { sockets, flows, orphans } = state;
    orphans.retain(|&handle| {
        let socket = sockets.get_mut::<tcp::Socket>(handle);
        if socket.state() == tcp::State::Closed {
            sockets.remove(handle);
            flows.retain(|_, h| *h != handle);
            return false;
        }
        while socket.can_recv() {
            if socket.recv(|data| (data.len(), ())).is_err() {
                break;
            }
        }
        true
    });
}

/// The stack, ready to [`run`](Stack::run).
pub struct Stack {
    tun: Arc<AsyncFd<OwnedFd>>,
    device: TunDevice,
    iface: Interface,
    shared: Arc<Shared>,
}

impl Stack {
    pub fn new(tun: Arc<AsyncFd<OwnedFd>>, filter: Filter, dns: DnsServer, link: Link) -> Result<Stack, StackError> {
        let mut device = TunDevice::new(tun.clone(), filter, dns, link);
        let iface = interface(&mut device)?;
        Ok(Stack { tun, device, iface, shared: Shared::new() })
    }

    /// Runs the stack until the TUN ends or fails: reads and filters the sandbox's packets, feeds the stack,
    /// writes its segments, and hands each new connection's stream to `accepted` with the address it was for.
    pub async fn run(self, accepted: mpsc::UnboundedSender<(SandboxStream, SocketAddr)>) -> Closed {
        let Stack { tun, mut device, mut iface, shared } = self;
        run(tun, &mut device, &mut iface, shared, accepted).await
    }
}

async fn run(
    tun: Arc<AsyncFd<OwnedFd>>,
    device: &mut TunDevice,
    iface: &mut Interface,
    shared: Arc<Shared>,
    accepted: mpsc::UnboundedSender<(SandboxStream, SocketAddr)>,
) -> Closed {
    let mut rounds = 0;
    loop {
        // Read readiness is taken (without waiting) before the reads, so that it is cleared only when a read
        // made after it found the TUN empty: a packet arriving in between sets it again.
        let ready = match tun.readable().now_or_never() {
            Some(Ok(guard)) => Some(guard),
            Some(Err(e)) => return Closed::Error(e),
            None => None,
        };
        device.start_round(ready.is_some());
        let (delay, stream, no_sockets) = {
            let mut state = shared.lock();
            // A SYN the device holds back gets its socket first, so that the stack accepts it in this poll.
            let stream = match device.take_new_flow() {
                Some((src, dst)) => open(&shared, &mut state, src, dst).map(|stream| (stream, dst)),
                None => None,
            };
            let now = SmolInstant::now();
            iface.poll(now, device, &mut state.sockets);
            reap(&mut state);
            let no_sockets = state.sockets.iter().next().is_none();
            (iface.poll_delay(now, &state.sockets), stream, no_sockets)
        };
        // Sent with the lock released: a stream the gateway has stopped taking is dropped here, and its drop
        // takes the lock.
        if let Some((stream, dst)) = stream {
            let _ = accepted.send((stream, SocketAddr::V4(dst)));
        }
        if let Some(mut guard) = ready {
            if device.drained() {
                guard.clear_ready();
            }
        }
        if let Some(closed) = device.take_closed() {
            return closed;
        }
        if device.has_more() || delay == Some(SmolDuration::ZERO) {
            rounds += 1;
            if rounds >= ROUNDS_PER_YIELD {
                rounds = 0;
                tokio::task::yield_now().await;
            }
            continue;
        }
        rounds = 0;
        let sleep = delay.map_or(IDLE_WAKEUP, std::time::Duration::from);
        tokio::select! {
            ready = tun.readable() => {
                if let Err(e) = ready {
                    return Closed::Error(e);
                }
            }
            _ = shared.wake_stack.notified() => {}
            _ = tokio::time::sleep(sleep), if delay.is_some() || !no_sockets => {}
        }
    }
}
