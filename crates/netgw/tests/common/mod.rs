//! Harness for the gateway's integration tests: a real TUN in a fresh network namespace, the gateway serving it
//! from this (host-namespace) process, real servers on host loopback, and real clients (curl, getent, python)
//! run inside the namespace.
//!
//! The namespace and the TUN are made by a small python helper started with `unshare --net`: it opens
//! /dev/net/tun, configures `airlock0` like the plumbing does, and passes the TUN fd back over a socketpair
//! (SCM_RIGHTS), then stays alive to keep the namespace. Clients join it with `nsenter --net`, plus a private
//! mount namespace whose /etc/resolv.conf names the gateway.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netgw::{GatewayConfig, GatewayOptions, NetEvent};
use policy::sandbox::AllowRule;

pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skips the test (prints `SKIP: reason`), or fails it under CI, where the machine runs these as root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !rustix::process::geteuid().is_root() {
            if common::ci() {
                panic!("CI runs as root, but this test is not root");
            }
            eprintln!("SKIP: needs root to create a network namespace and a TUN device");
            return;
        }
    };
}

const HELPER: &str = r#"
import fcntl, os, socket, struct, subprocess, sys
fd = os.open('/dev/net/tun', os.O_RDWR)
fcntl.ioctl(fd, 0x400454ca, struct.pack('16sH', b'airlock0', 0x0001 | 0x1000 | 0x4000))  # TUNSETIFF, IFF_TUN|IFF_NO_PI|IFF_VNET_HDR
def ip(*args):
    subprocess.run(['ip', *args], check=True)
ip('link', 'set', 'lo', 'up')
ip('addr', 'add', '198.18.0.2/30', 'dev', 'airlock0')
ip('link', 'set', 'airlock0', 'mtu', sys.argv[1], 'up')
ip('route', 'add', 'default', 'via', '198.18.0.1', 'dev', 'airlock0')
s = socket.socket(fileno=1)
socket.send_fds(s, [b'tun'], [fd])
os.close(fd)
s.close()
sys.stdin.read()
"#;

pub struct Sandbox {
    helper: Child,
    gateway: Option<std::thread::JoinHandle<Result<(), netgw::GatewayError>>>,
    stop_writer: Option<OwnedFd>,
    pid: u32,
    dir: PathBuf,
    pub events: Arc<Mutex<Vec<NetEvent>>>,
}

pub fn rule(domain: &str, port: Option<u16>) -> AllowRule {
    AllowRule { domain: domain.to_owned(), port }
}

fn receive_fd(sock: &UnixStream) -> OwnedFd {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 8];
    rustix::net::recvmsg(sock, &mut [std::io::IoSliceMut::new(&mut byte)], &mut control, RecvFlags::empty())
        .expect("recvmsg from the TUN helper");
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = message {
            if let Some(fd) = fds.next() {
                return fd;
            }
        }
    }
    panic!("the TUN helper sent no fd");
}

impl Sandbox {
    /// A namespace with a TUN served by a gateway allowing `allow`; `hosts` is the gateway's resolver table.
    pub fn start(allow: Vec<AllowRule>, hosts: &[(&str, IpAddr)]) -> Sandbox {
        Sandbox::start_with(allow, hosts, GatewayOptions::default())
    }

    pub fn start_with(allow: Vec<AllowRule>, hosts: &[(&str, IpAddr)], mut options: GatewayOptions) -> Sandbox {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        let helper = Command::new("unshare")
            .args(["--net", "python3", "-c", HELPER, &netgw::addr::MTU.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::from(OwnedFd::from(theirs)))
            .spawn()
            .expect("start the TUN helper (needs util-linux unshare and python3)");
        let tun = receive_fd(&ours);
        let pid = helper.id();
        let dir = std::env::temp_dir().join(format!("netgw-test-{}-{pid}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("client.py"), include_str!("client.py")).expect("write client.py");
        std::fs::write(dir.join("resolv.conf"), "nameserver 198.18.0.1\noptions timeout:2 attempts:2\n")
            .expect("write resolv.conf");

        let mut table: HashMap<String, Vec<IpAddr>> = HashMap::new();
        for (name, addr) in hosts {
            table.entry((*name).to_owned()).or_default().push(*addr);
        }
        options.hosts = Some(table);
        // The supervisor's side of the stop pipe: closing it ends the gateway.
        // Close-on-exec: a client left running inside must not hold the write end open.
        let (stop, stop_writer) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("pipe");
        options.stop = Some(stop);
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let config = GatewayConfig {
            sandbox: "test".into(),
            allow,
            events: Box::new(move |e: &NetEvent| sink.lock().unwrap().push(e.clone())),
        };
        let gateway = std::thread::spawn(move || netgw::serve_tun_blocking_with(tun, config, options));
        Sandbox { helper, gateway: Some(gateway), stop_writer: Some(stop_writer), pid, dir, events }
    }

    /// Runs `script` with `sh -c` inside the namespace, with /etc/resolv.conf naming the gateway.
    pub fn sh(&self, script: &str) -> Output {
        let resolv = self.dir.join("resolv.conf");
        Command::new("nsenter")
            .arg(format!("--net=/proc/{}/ns/net", self.pid))
            .args(["unshare", "--mount", "sh", "-c"])
            .arg(format!("mount --bind {} /etc/resolv.conf && {script}", resolv.display()))
            .stdin(Stdio::null())
            .output()
            .expect("nsenter")
    }

    /// Like [`Sandbox::sh`], asserting success; returns stdout.
    pub fn sh_ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "`{script}` failed: {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Path of common/client.py as written for this sandbox.
    pub fn script(&self) -> String {
        self.dir.join("client.py").display().to_string()
    }

    /// Runs a client of common/client.py inside the namespace; returns its stdout (it must succeed).
    pub fn client(&self, args: &[&str]) -> String {
        let script = self.dir.join("client.py");
        self.sh_ok(&format!("python3 {} {}", script.display(), args.join(" ")))
    }

    /// Ends the sandbox like a supervisor would (its processes exit, the stop pipe closes) and returns how the
    /// gateway ended, waiting at most `limit`.
    pub fn end_sandbox(&mut self, limit: Duration) -> Option<Result<(), netgw::GatewayError>> {
        let _ = self.helper.kill();
        let _ = self.helper.wait();
        self.stop_writer = None;
        let gateway = self.gateway.take()?;
        let deadline = Instant::now() + limit;
        while !gateway.is_finished() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        gateway.join().ok()
    }

    pub fn events(&self) -> Vec<NetEvent> {
        self.events.lock().unwrap().clone()
    }

    /// Waits until some event satisfies `pred` (events of closing connections come after the client is done).
    pub fn wait_event(&self, what: &str, pred: impl Fn(&NetEvent) -> bool) -> NetEvent {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(e) = self.events().into_iter().find(|e| pred(e)) {
                return e;
            }
            if Instant::now() > deadline {
                panic!("no event {what}; events: {:#?}", self.events());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.helper.kill();
        let _ = self.helper.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A server on host loopback that records the first bytes of every connection and answers HTTP requests.
pub struct HostServer {
    pub port: u16,
    pub seen: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl HostServer {
    pub fn start() -> HostServer {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind host loopback");
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let log = log.clone();
                std::thread::spawn(move || serve(stream, log));
            }
        });
        HostServer { port, seen }
    }

    pub fn connections(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

fn serve(mut stream: TcpStream, log: Arc<Mutex<Vec<Vec<u8>>>>) {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut buf = vec![0u8; 65536];
    let mut got = Vec::new();
    // Read until the request head ends, the peer stops, or (non-HTTP) the first chunk is in.
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
        if !got.starts_with(b"GET ") || got.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    log.lock().unwrap().push(got.clone());
    if got.starts_with(b"GET /big") {
        let size: usize = 8 << 20;
        let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n");
        let chunk = vec![b'x'; 65536];
        for _ in 0..size / chunk.len() {
            if stream.write_all(&chunk).is_err() {
                return;
            }
        }
    } else if got.starts_with(b"GET ") {
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nConnection: close\r\n\r\nhello world\n");
    } else if got.starts_with(b"ECHO") {
        let _ = stream.write_all(&got);
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
    }
}
