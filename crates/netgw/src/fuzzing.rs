//! Checks for the fuzz targets in `fuzz/` (cargo fuzz, nightly) and for the corpus replay test in
//! `crates/airlock/tests/fuzz_corpus.rs` (stable, every CI run). Each `check_*` takes arbitrary bytes, runs one of the
//! gateway's parsers on them and panics if an invariant that matters does not hold; a panic inside the parser
//! itself is a finding too. Not an API: hidden from the docs, used only by the fuzzing harness and its replay.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, MessageType};
use hickory_proto::rr::RData;
use policy::sandbox::AllowRule;

use crate::addr::{is_synthetic, DNS_PORT, GATEWAY_ADDR, PROXY_PORT, SANDBOX_ADDR};
use crate::dns::{DnsServer, HostResolver, NameTable};
use crate::event::Recorder;
use crate::filter::{parse_ipv4, tcp_checksum_ok, Filter, Verdict, PROTO_TCP, TCP_ACK, TCP_RST, TCP_SYN};
use crate::inspect::{classify, Classified, FirstData, MAX_PREFIX};
use crate::rules::AllowList;

/// The one name the fuzzed gateway allows (on its default ports, 80 and 443), and the address its host table
/// resolves it to.
pub const ALLOWED_NAME: &str = "allowed.test";
const ALLOWED_NAME_ADDR: Ipv4Addr = Ipv4Addr::new(93, 184, 216, 34);
/// The one IP literal the fuzzed gateway allows, on [`ALLOWED_LITERAL_PORT`] only.
pub const ALLOWED_LITERAL: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const ALLOWED_LITERAL_PORT: u16 = 22;

fn allow_list() -> Arc<AllowList> {
    Arc::new(AllowList::new(vec![
        AllowRule { domain: ALLOWED_NAME.into(), port: None },
        AllowRule { domain: "*.wild.test".into(), port: Some(8443) },
        AllowRule { domain: ALLOWED_LITERAL.to_string(), port: Some(ALLOWED_LITERAL_PORT) },
    ]))
}

fn dns_server(names: Arc<Mutex<NameTable>>) -> DnsServer {
    let table = [(ALLOWED_NAME.to_owned(), vec![IpAddr::V4(ALLOWED_NAME_ADDR)])].into_iter().collect();
    DnsServer {
        allow: allow_list(),
        names,
        resolver: Arc::new(HostResolver::Table(table)),
        recorder: Recorder::new("fuzz", Box::new(|_| {})),
    }
}

/// The DNS server on one message from the sandbox: whatever it answers is a well-formed response to that
/// message's id, and every address in it is a synthetic one (a real address never reaches the sandbox).
pub fn check_dns(data: &[u8]) {
    let server = dns_server(Arc::new(Mutex::new(NameTable::default())));
    check_dns_with(&server, data);
}

fn check_dns_with(server: &DnsServer, data: &[u8]) {
    let Some(reply) = futures::executor::block_on(server.answer(data)) else { return };
    let message = match Message::from_vec(&reply) {
        Ok(message) => message,
        Err(e) => panic!("the DNS reply does not parse: {e}"),
    };
    assert_eq!(message.metadata.message_type, MessageType::Response, "the DNS reply is not a response");
    if data.len() >= 2 {
        assert_eq!(message.metadata.id, u16::from_be_bytes([data[0], data[1]]), "the DNS reply has another id");
    }
    for record in message.answers.iter().chain(&message.additionals).chain(&message.authorities) {
        match &record.data {
            RData::A(a) => assert!(is_synthetic(a.0), "DNS answered a real address: {}", a.0),
            other => panic!("DNS answered a record that is not a synthetic A: {other:?}"),
        }
    }
}

/// The packet filter on one packet from the sandbox, with `allowed.test` already resolved: a RST it answers
/// with is a valid IPv4/TCP RST back to the sandbox; a packet it passes is IPv4 from the sandbox's address; a
/// SYN it passes goes to the gateway's own ports or to an allowed destination; a DNS query it hands on is
/// answered as [`check_dns`] requires.
pub fn check_filter(data: &[u8]) {
    let names = Arc::new(Mutex::new(NameTable::default()));
    let synthetic = names
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(ALLOWED_NAME, vec![IpAddr::V4(ALLOWED_NAME_ADDR)])
        .map(|entry| entry.synthetic);
    let filter = Filter {
        allow: allow_list(),
        names: names.clone(),
        recorder: Recorder::new("fuzz", Box::new(|_| {})),
        active: Arc::new(AtomicUsize::new(0)),
        max_connections: 4,
    };
    match filter.inspect(data) {
        Verdict::Drop => {}
        Verdict::Pass => {
            let ip = match parse_ipv4(data) {
                Ok(ip) => ip,
                Err(reason) => panic!("the filter passed a packet that is not IPv4 ({reason})"),
            };
            assert_eq!(ip.src, SANDBOX_ADDR, "the filter passed a packet from another source");
            let l4 = &data[ip.header_len..ip.total_len];
            if ip.protocol == PROTO_TCP && l4.len() >= 20 && l4[13] & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN {
                assert!(tcp_checksum_ok(&ip, l4), "the filter passed a SYN with a bad checksum");
                let port = u16::from_be_bytes([l4[2], l4[3]]);
                let to_gateway = ip.dst == GATEWAY_ADDR && (port == DNS_PORT || port == PROXY_PORT);
                let to_literal = ip.dst == ALLOWED_LITERAL && port == ALLOWED_LITERAL_PORT;
                let to_name = Some(ip.dst) == synthetic && (port == 80 || port == 443);
                assert!(to_gateway || to_literal || to_name, "the filter passed a SYN to {}:{port}", ip.dst);
            }
        }
        Verdict::Reply(rst) => {
            let ip = match parse_ipv4(&rst) {
                Ok(ip) => ip,
                Err(reason) => panic!("the filter's RST is not valid IPv4 ({reason})"),
            };
            assert_eq!(ip.dst, SANDBOX_ADDR, "the filter's RST does not go to the sandbox");
            assert_eq!(ip.protocol, PROTO_TCP, "the filter's reply is not TCP");
            let tcp = &rst[ip.header_len..ip.total_len];
            assert!(tcp.len() >= 20 && tcp[13] & TCP_RST != 0, "the filter's reply is not a RST");
            assert!(tcp_checksum_ok(&ip, tcp), "the filter's RST has a bad checksum");
        }
        Verdict::Dns { client, query } => {
            assert_eq!(*client.ip(), SANDBOX_ADDR, "a DNS query from another source was handed on");
            assert!(query.len() + 28 <= data.len(), "the DNS query is longer than its packet");
            check_dns_with(&dns_server(names), &query);
        }
    }
}

/// The first-bytes inspection on a connection's prefix: an HTTP head lies within the prefix and ends with its
/// blank line, a host or SNI is lower-case and without a trailing dot, an SNI is a non-empty printable ASCII
/// name, and a full buffer is always decided (the relay must never wait for more bytes than it keeps).
pub fn check_inspect(data: &[u8]) {
    let classified = classify(data);
    if data.len() >= MAX_PREFIX {
        assert_ne!(classified, Classified::NeedMore, "a full prefix buffer left undecided");
    }
    match classified {
        Classified::Done(FirstData::Http(request)) => {
            assert!(request.head_len <= data.len(), "the HTTP head is longer than the prefix");
            assert!(data[..request.head_len].ends_with(b"\n"), "the HTTP head does not end with its blank line");
            if let Some(host) = request.host {
                assert!(!host.ends_with('.'), "the Host keeps a trailing dot: {host:?}");
                assert!(!host.bytes().any(|b| b.is_ascii_uppercase()), "the Host is not lower-cased: {host:?}");
            }
        }
        Classified::Done(FirstData::Tls { sni: Some(sni) }) => {
            assert!(!sni.is_empty(), "an empty SNI was accepted");
            assert!(sni.bytes().all(|b| b.is_ascii_graphic()), "the SNI is not printable ASCII: {sni:?}");
            assert!(!sni.bytes().any(|b| b.is_ascii_uppercase()), "the SNI is not lower-cased: {sni:?}");
            assert!(!sni.ends_with('.'), "the SNI keeps a trailing dot: {sni:?}");
        }
        _ => {}
    }
}
