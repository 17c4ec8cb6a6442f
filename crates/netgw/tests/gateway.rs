//! End-to-end tests of the gateway: real TUN, real namespace, real clients and servers (see common/mod.rs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr};

use common::{rule, HostServer, Sandbox};

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
fn curl_reaches_an_allowed_name_and_port_on_host_loopback() {
    require_root!();
    let server = HostServer::start();
    let sb = Sandbox::start(vec![rule("allowed.test", Some(server.port))], &[("allowed.test", LOOPBACK)]);
    let body = sb.sh_ok(&format!("curl -sS --max-time 10 http://allowed.test:{}/hello", server.port));
    assert_eq!(body, "hello world\n");
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
    let curl = |url: String| sb.sh(&format!("curl -sS --max-time 5 {url}"));
    assert!(!curl(format!("http://denied.test:{}/", server.port)).status.success());
    assert!(!curl(format!("http://allowed.test:{}/", other.port)).status.success());
    // An IP literal (routed into the TUN; refused by the gateway at the SYN).
    assert!(!curl(format!("http://198.18.5.5:{}/", server.port)).status.success());
    assert_eq!(server.connections() + other.connections(), 0);
    sb.wait_event("wrong port", |e| {
        e.protocol == "tcp" && e.port == Some(other.port) && e.reason == "port not allowed for this name"
    });
    sb.wait_event("ip literal", |e| e.protocol == "tcp" && e.reason.starts_with("IP literal 198.18.5.5"));
}
