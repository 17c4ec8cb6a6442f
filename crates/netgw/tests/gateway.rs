//! End-to-end tests of the gateway: real TUN, real namespace, real clients and servers (see common/mod.rs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{rule, HostServer, Sandbox};
use netgw::GatewayOptions;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[test]
fn dns_answers_synthetic_addresses_for_allowed_names_only() {
    require_root!();
    let sb = Sandbox::start(
        vec![rule("allowed.test", None), rule("*.wild.test", None)],
        &[
            ("allowed.test", LOOPBACK),
            // Only resolved, never connected to: a documentation address stands for a public one.
            ("a.wild.test", IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10))),
            ("rebind.wild.test", LOOPBACK),
            ("denied.test", LOOPBACK),
        ],
    );
    let out = sb.sh_ok("getent ahostsv4 allowed.test");
    assert!(out.starts_with("198.19."), "{out}");
    // The same name keeps its address; another name gets another one.
    assert_eq!(sb.sh_ok("getent ahostsv4 allowed.test").split_whitespace().next(), out.split_whitespace().next());
    let wild = sb.sh_ok("getent ahostsv4 a.wild.test");
    assert!(wild.starts_with("198.19.") && wild.split_whitespace().next() != out.split_whitespace().next(), "{wild}");
    assert!(!sb.sh("getent ahostsv4 denied.test").status.success());
    assert!(!sb.sh("getent ahostsv4 wild.test").status.success());
    // A wildcard entry cannot open loopback (DNS rebinding onto the host's services).
    assert!(!sb.sh("getent ahostsv4 rebind.wild.test").status.success());
    let rebind = sb.wait_event("rebind denial", |e| e.name.as_deref() == Some("rebind.wild.test"));
    assert_eq!(rebind.reason, "loopback address 127.0.0.1 needs an exact allow entry (no wildcard)");
    let denied = sb.wait_event("dns denial", |e| e.protocol == "dns" && e.name.as_deref() == Some("denied.test"));
    assert_eq!(denied.decision, "denied");
    assert_eq!(denied.reason, "name not on the allow-list");
    let allowed = sb.wait_event("dns answer", |e| {
        e.protocol == "dns" && e.decision == "allowed" && e.name.as_deref() == Some("allowed.test")
    });
    assert_eq!(allowed.address.as_deref(), Some("127.0.0.1"));
}

#[test]
fn http_reaches_an_allowed_name_and_port_on_host_loopback() {
    require_root!();
    let server = HostServer::start();
    let sb = Sandbox::start(vec![rule("allowed.test", Some(server.port))], &[("allowed.test", LOOPBACK)]);
    let port = server.port.to_string();
    let out = sb.client(&["http", "allowed.test", &port, "/hello"]);
    assert_eq!(out, "200\nhello world\n");
    assert_eq!(server.connections(), 1);
    let closed = sb.wait_event("closed connection", |e| e.protocol == "http" && e.decision == "allowed");
    assert_eq!(closed.name.as_deref(), Some("allowed.test"));
    assert_eq!(closed.address.as_deref(), Some("127.0.0.1"));
    assert_eq!(closed.port, Some(server.port));
    assert!(closed.bytes_out > 0 && closed.bytes_in >= 12, "{closed:?}");
}

#[test]
fn denied_names_wrong_ports_and_ip_literals_never_reach_the_host() {
    require_root!();
    let server = HostServer::start();
    let other = HostServer::start();
    let sb = Sandbox::start(
        vec![rule("allowed.test", Some(server.port))],
        &[("allowed.test", LOOPBACK), ("denied.test", LOOPBACK)],
    );
    let get = |host: &str, port: u16| sb.sh(&format!("python3 {} http {host} {port} /", sb.script()));
    assert!(!get("denied.test", server.port).status.success());
    let wrong_port = get("allowed.test", other.port);
    assert!(String::from_utf8_lossy(&wrong_port.stderr).contains("ConnectionRefused"), "{wrong_port:?}");
    // An IP literal, routed into the TUN and refused there at the SYN.
    assert!(!get("198.18.5.5", server.port).status.success());
    assert_eq!(server.connections() + other.connections(), 0);
    sb.wait_event("wrong port", |e| {
        e.protocol == "tcp" && e.port == Some(other.port) && e.reason == "port not allowed for this name"
    });
    sb.wait_event("ip literal", |e| e.protocol == "tcp" && e.reason.starts_with("IP literal 198.18.5.5"));
}

#[test]
fn host_header_naming_another_domain_gets_403_and_never_reaches_the_host() {
    require_root!();
    let server = HostServer::start();
    let sb = Sandbox::start(
        vec![rule("allowed.test", Some(server.port)), rule("other.test", None)],
        &[("allowed.test", LOOPBACK)],
    );
    let out = sb.client(&["http", "allowed.test", &server.port.to_string(), "/", "evil.test"]);
    assert_eq!(
        out,
        format!(
            "403\nairlock: blocked by network policy: evil.test is not allowed (allowed: allowed.test:{}, other.test); \
             to allow it, run the sandbox with --allow evil.test or a profile's [network] allow\n",
            server.port
        )
    );
    assert_eq!(server.connections(), 0);
    let e = sb.wait_event("host denial", |e| e.protocol == "http" && e.decision == "denied");
    assert_eq!(e.name.as_deref(), Some("evil.test"));
    assert_eq!(e.reason, "Host evil.test does not match allowed.test");
}

#[test]
fn tls_sni_must_name_the_allowed_domain() {
    require_root!();
    let server = HostServer::start();
    let sb = Sandbox::start(vec![rule("allowed.test", Some(server.port))], &[("allowed.test", LOOPBACK)]);
    let port = server.port.to_string();
    sb.client(&["tls", "allowed.test", &port, "evil.test"]);
    sb.client(&["tls", "allowed.test", &port, "-"]);
    assert_eq!(server.connections(), 0, "a refused ClientHello reached the host");
    sb.wait_event("sni denial", |e| e.protocol == "tls" && e.reason == "SNI evil.test does not match allowed.test");
    sb.wait_event("no-sni denial", |e| {
        e.protocol == "tls" && e.reason == "TLS ClientHello without SNI to allowed.test"
    });
    // The matching SNI goes through: the host server receives the ClientHello itself.
    sb.client(&["tls", "allowed.test", &port, "allowed.test"]);
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0][0], 0x16, "not a TLS record");
    assert!(seen[0].windows(12).any(|w| w == b"allowed.test"));
}

#[test]
fn udp_icmp_and_other_dns_servers_are_dropped_and_recorded() {
    require_root!();
    let sb = Sandbox::start(vec![rule("allowed.test", None)], &[("allowed.test", LOOPBACK)]);
    assert_eq!(sb.client(&["udp", "198.18.0.1", "9999"]), "timeout\n");
    // A DNS query to another server: dropped in the gateway, never leaves it.
    assert_eq!(sb.client(&["udp", "192.0.2.53", "53"]), "timeout\n");
    assert_eq!(sb.client(&["ping", "198.18.0.1"]), "timeout\n");
    sb.wait_event("udp", |e| e.protocol == "udp" && e.port == Some(9999));
    sb.wait_event("dns elsewhere", |e| e.reason == "DNS to another server than the gateway is dropped");
    sb.wait_event("icmp", |e| e.protocol == "icmp" && e.reason == "ICMP is not forwarded");
}

#[test]
fn proxy_applies_the_same_policy() {
    require_root!();
    let server = HostServer::start();
    let sb = Sandbox::start(
        vec![rule("allowed.test", Some(server.port))],
        &[("allowed.test", LOOPBACK), ("denied.test", LOOPBACK)],
    );
    let port = server.port.to_string();
    let url = |host: &str| format!("http://{host}:{port}/via-proxy");
    assert_eq!(sb.client(&["proxy-http", &url("allowed.test")]), "200\nhello world\n");
    let seen = server.seen.lock().unwrap().clone();
    assert!(seen[0].starts_with(b"GET /via-proxy HTTP/1.1\r\n"), "{:?}", String::from_utf8_lossy(&seen[0]));
    let denied = sb.client(&["proxy-http", &url("denied.test")]);
    assert_eq!(
        denied,
        format!(
            "403\nairlock: blocked by network policy: denied.test is not allowed (allowed: allowed.test:{port}); \
             to allow it, run the sandbox with --allow denied.test or a profile's [network] allow\n"
        )
    );
    let connect = sb.client(&["proxy-connect", "denied.test", &port, "denied.test"]);
    assert!(connect.starts_with("HTTP/1.1 403 Forbidden\n"), "{connect}");
    // CONNECT to the allowed name with another SNI inside the tunnel: refused before the host sees it.
    let fronted = sb.client(&["proxy-connect", "allowed.test", &port, "evil.test"]);
    assert!(fronted.starts_with("HTTP/1.1 200 Connection established\nhandshake failed"), "{fronted}");
    assert_eq!(server.connections(), 1);
    let tunnelled = sb.client(&["proxy-connect", "allowed.test", &port, "allowed.test"]);
    assert!(tunnelled.starts_with("HTTP/1.1 200"), "{tunnelled}");
    assert_eq!(server.connections(), 2);
    sb.wait_event("proxy-http allowed", |e| e.protocol == "proxy-http" && e.decision == "allowed");
    sb.wait_event("proxy-http denied", |e| e.protocol == "proxy-http" && e.name.as_deref() == Some("denied.test"));
    sb.wait_event("connect denied", |e| e.protocol == "proxy-connect" && e.name.as_deref() == Some("denied.test"));
    sb.wait_event("connect sni", |e| e.protocol == "proxy-connect" && e.reason.starts_with("SNI evil.test"));
    sb.wait_event("connect allowed", |e| e.protocol == "proxy-connect" && e.decision == "allowed");
}

#[test]
fn many_concurrent_connections_with_half_close() {
    require_root!();
    let server = HostServer::start();
    let sb = Sandbox::start(vec![rule("allowed.test", Some(server.port))], &[("allowed.test", LOOPBACK)]);
    let port = server.port.to_string();
    assert_eq!(sb.client(&["echo", "allowed.test", &port, "1", "100"]), "1 []\n");
    assert_eq!(sb.client(&["echo", "allowed.test", &port, "1", "65536"]), "1 []\n");
    let out = sb.client(&["echo", "allowed.test", &port, "100", "65536"]);
    assert_eq!(out, "100 []\n");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    // Every connection records its close with the bytes each way.
    let full = |e: &netgw::NetEvent| e.protocol == "tcp" && e.decision == "allowed" && e.bytes_out == 65540;
    while sb.events().iter().filter(|e| full(e)).count() < 100 {
        assert!(std::time::Instant::now() < deadline, "not every connection recorded its close");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(sb.events().iter().filter(|e| full(e)).all(|e| e.bytes_in == 65540));
}

#[test]
fn a_burst_of_dns_queries_is_answered_whole() {
    require_root!();
    let sb = Sandbox::start(
        vec![rule("allowed.test", None), rule("other.test", None)],
        &[("allowed.test", LOOPBACK), ("other.test", LOOPBACK)],
    );
    // 400 queries (A and AAAA) sent before any answer is read, for three names in turn: two not yet pinned (their
    // first A queries' host lookups run in tasks) and one that is refused. Every one is answered (NOERROR or
    // REFUSED), none dropped; then 400 for a name the table knows.
    assert_eq!(sb.client(&["dns-burst", "400", "allowed.test", "other.test", "denied.test"]), "400 [0, 5]\n");
    assert_eq!(sb.client(&["dns-burst", "400", "allowed.test"]), "400 [0]\n");
    assert!(!sb.events().iter().any(|e| e.reason.contains("waiting for a host lookup")));
}

#[test]
fn connection_limit_refuses_the_excess() {
    require_root!();
    let server = HostServer::start();
    let options = GatewayOptions { max_connections: 5, ..GatewayOptions::default() };
    let sb = Sandbox::start_with(vec![rule("allowed.test", Some(server.port))], &[("allowed.test", LOOPBACK)], options);
    let out = sb.client(&["hold", "allowed.test", &server.port.to_string(), "8", "0"]);
    assert_eq!(out, "5 3\n");
    sb.wait_event("limit", |e| e.reason == "too many open connections (limit 5)");
}

#[test]
fn hostile_packets_and_dns_from_inside_leave_the_gateway_serving() {
    require_root!();
    let server = HostServer::start();
    let sb = Sandbox::start(vec![rule("allowed.test", Some(server.port))], &[("allowed.test", LOOPBACK)]);
    let sent: u64 = sb.client(&["fuzz", "3"]).trim().parse().unwrap();
    assert!(sent > 1000, "fuzz sent only {sent} packets");
    // DNS (UDP and TCP) and relays still work. A connection may meet leftovers of the flood (stack sockets of
    // forged SYNs, released by their idle timeouts), so the first DNS-over-TCP attempt gets two retries.
    let mut attempts = Vec::new();
    for _ in 0..3 {
        let out = sb.sh(&format!("python3 {} dns-tcp allowed.test", sb.script()));
        if out.status.success() {
            assert_eq!(String::from_utf8_lossy(&out.stdout), "0 198.19.0.1\n");
            break;
        }
        attempts.push(String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or_default().to_owned());
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(attempts.len() < 3, "DNS over TCP failed after the fuzz: {attempts:?}");
    if !attempts.is_empty() {
        eprintln!("note: DNS over TCP needed {} retries after the fuzz: {attempts:?}", attempts.len());
    }
    assert_eq!(sb.client(&["http", "allowed.test", &server.port.to_string(), "/after-fuzz"]), "200\nhello world\n");
    // The flood was recorded, but rate limited.
    let denials = sb.events().iter().filter(|e| e.decision == "denied").count();
    assert!(denials > 0 && (denials as u64) < sent / 2, "{denials} denial records for {sent} packets");
}

#[test]
fn idle_connections_are_closed_after_the_idle_timeout() {
    require_root!();
    let server = HostServer::start();
    let options = GatewayOptions { idle_timeout: Duration::from_secs(1), ..GatewayOptions::default() };
    let sb = Sandbox::start_with(vec![rule("allowed.test", Some(server.port))], &[("allowed.test", LOOPBACK)], options);
    assert_eq!(sb.client(&["idle", "allowed.test", &server.port.to_string(), "3"]), "closed\n");
    sb.wait_event("idle close", |e| e.decision == "allowed" && e.reason.ends_with("idle for 1s, closed"));
}

#[test]
fn dns_over_tcp_is_served_too() {
    require_root!();
    let sb = Sandbox::start(vec![rule("allowed.test", None)], &[("allowed.test", LOOPBACK)]);
    assert_eq!(sb.client(&["dns-tcp", "allowed.test"]), "0 198.19.0.1\n");
    assert_eq!(sb.client(&["dns-tcp", "denied.test"]), "5 -\n"); // REFUSED
}

#[test]
fn gateway_returns_when_the_sandbox_ends() {
    require_root!();
    let mut sb = Sandbox::start(vec![rule("allowed.test", None)], &[("allowed.test", LOOPBACK)]);
    assert!(sb.sh_ok("getent ahostsv4 allowed.test").starts_with("198.19."));
    match sb.end_sandbox(Duration::from_secs(10)) {
        Some(Ok(())) => {}
        other => panic!("the gateway did not end cleanly with its sandbox: {other:?}"),
    }
}

#[test]
fn first_bytes_sent_late_are_still_checked() {
    require_root!();
    let server = HostServer::start();
    let sb = Sandbox::start(vec![rule("allowed.test", Some(server.port))], &[("allowed.test", LOOPBACK)]);
    let port = server.port.to_string();
    // On a port other than 80/443 the gateway connects after 0.5 s of silence (server-first protocols).
    assert!(sb.client(&["tls-late", "allowed.test", &port, "evil.test", "1.2"]).starts_with("handshake failed"));
    let e = sb.wait_event("late sni", |e| e.decision == "denied" && e.reason.starts_with("SNI evil.test"));
    assert!(e.reason.ends_with("none were forwarded)"), "{}", e.reason);
    sb.client(&["tls-late", "allowed.test", &port, "allowed.test", "1.2"]);
    let seen = server.seen.lock().unwrap().clone();
    assert!(seen.iter().all(|s| !s.windows(9).any(|w| w == b"evil.test")), "the refused ClientHello was forwarded");
    assert!(
        seen.iter().any(|s| s.windows(12).any(|w| w == b"allowed.test")),
        "the allowed ClientHello was not forwarded"
    );
}

#[test]
fn close_is_recorded_at_once_when_the_server_closes_first() {
    require_root!();
    let server = HostServer::start();
    let sb = Sandbox::start(vec![rule("allowed.test", Some(server.port))], &[("allowed.test", LOOPBACK)]);
    let start = std::time::Instant::now();
    assert_eq!(sb.client(&["get-eof", "allowed.test", &server.port.to_string(), "/x"]), "HTTP/1.1 200 OK\n");
    sb.wait_event("close", |e| e.protocol == "http" && e.decision == "allowed");
    // Not after the stack's TIME-WAIT (10 s): the relay does not wait for its socket's final close.
    assert!(start.elapsed() < Duration::from_secs(5), "the close was recorded after {:?}", start.elapsed());
}

#[test]
fn connections_open_when_the_gateway_stops_are_recorded_with_their_bytes() {
    require_root!();
    let server = HostServer::start();
    let mut sb = Sandbox::start(vec![rule("allowed.test", Some(server.port))], &[("allowed.test", LOOPBACK)]);
    // Three connections echo 4 bytes each way, then stay open in a client left running in the background.
    let out = std::path::Path::new(&sb.script()).with_file_name("held.txt");
    let script =
        format!("python3 {} hold allowed.test {} 3 30 >{} 2>&1 & echo $!", sb.script(), server.port, out.display());
    let client = sb.sh_ok(&script).trim().to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&out).unwrap_or_default().is_empty() {
        assert!(Instant::now() < deadline, "the client did not report its connections");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "3 0\n");
    assert!(sb.events().iter().all(|e| e.protocol != "tcp"), "nothing closed yet: {:#?}", sb.events());

    let start = Instant::now();
    match sb.end_sandbox(Duration::from_secs(10)) {
        Some(Ok(())) => {}
        other => panic!("the gateway did not end cleanly with its sandbox: {other:?}"),
    }
    let took = start.elapsed();
    let _ = std::process::Command::new("kill").arg(&client).status();
    let closed: Vec<_> = sb.events().into_iter().filter(|e| e.protocol == "tcp" && e.decision == "allowed").collect();
    assert_eq!(closed.len(), 3, "{closed:#?}");
    for e in &closed {
        assert_eq!((e.bytes_out, e.bytes_in), (4, 4), "{e:?}");
        assert_eq!(
            e.reason,
            format!("allowed by allowed.test:{}; still open when the sandbox ended, closed", server.port)
        );
    }
    // Well within the 2 s the supervisor allows between SIGTERM and SIGKILL.
    assert!(took < Duration::from_secs(1), "the gateway took {took:?} to end");
}

/// The client of [`bulk_transfers_arrive_intact_both_ways`]: `down HOST PORT` prints the byte count and sha256
/// of what the server sends; `up HOST PORT FILE` sends the file, half-closes, and prints the server's verdict.
/// The first byte says which (a digit: a letter could start an HTTP method, which the gateway checks).
const BULK_CLIENT: &str = r#"
import hashlib, socket, sys
mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.create_connection((host, port), timeout=60)
if mode == "down":
    s.sendall(b"1")
    h, n = hashlib.sha256(), 0
    while True:
        b = s.recv(1 << 20)
        if not b:
            break
        h.update(b)
        n += len(b)
    print(n, h.hexdigest())
else:
    s.sendall(b"2")
    with open(sys.argv[4], "rb") as f:
        s.sendall(f.read())
    s.shutdown(socket.SHUT_WR)
    print(s.recv(100).decode())
"#;

#[test]
fn bulk_transfers_arrive_intact_both_ways() {
    require_root!();
    // Pseudo-random bytes (xorshift), so that a byte lost, repeated or reordered anywhere changes the hash.
    const SIZE: usize = 24 << 20;
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let data: Arc<Vec<u8>> = Arc::new(
        (0..SIZE / 8)
            .flat_map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()
            })
            .collect(),
    );
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = data.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let (Ok(mut stream), data) = (stream, served.clone()) else { continue };
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut mode = [0u8; 1];
                stream.read_exact(&mut mode).unwrap();
                if &mode == b"1" {
                    stream.write_all(&data).unwrap();
                } else {
                    let mut got = Vec::new();
                    stream.read_to_end(&mut got).unwrap();
                    let verdict =
                        if got == *data { "intact".to_owned() } else { format!("corrupt ({} bytes)", got.len()) };
                    stream.write_all(verdict.as_bytes()).unwrap();
                }
            });
        }
    });
    let sb = Sandbox::start(vec![rule("allowed.test", Some(port))], &[("allowed.test", LOOPBACK)]);
    let dir = std::env::temp_dir().join(format!("netgw-bulk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (client, file) = (dir.join("bulk.py"), dir.join("data"));
    std::fs::write(&client, BULK_CLIENT).unwrap();
    std::fs::write(&file, &*data).unwrap();
    let expected = std::process::Command::new("sha256sum").arg(&file).output().unwrap();
    let expected = String::from_utf8_lossy(&expected.stdout).split_whitespace().next().unwrap().to_owned();

    // Two downloads and an upload at once, on three connections through the one stack.
    let (client, file) = (client.display(), file.display());
    let out = sb.sh_ok(&format!(
        "python3 {client} down allowed.test {port} > {dir}/d1 &
         python3 {client} down allowed.test {port} > {dir}/d2 &
         python3 {client} up allowed.test {port} {file} > {dir}/u &
         wait; cat {dir}/d1 {dir}/d2 {dir}/u",
        dir = dir.display()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let want = format!("{SIZE} {expected}");
    assert_eq!(out.lines().collect::<Vec<_>>(), [want.as_str(), want.as_str(), "intact"], "{out}");
}
