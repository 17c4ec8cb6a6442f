//! The gateway's DNS server and its name table (fake-IP DNS pinning).
//!
//! An A query for an allowed name is answered with a synthetic address from [`crate::addr::SYNTHETIC_NET`], one
//! per name for the sandbox's life. The gateway resolves the name itself on the host and pins the real
//! addresses; a later TCP connection to the synthetic address goes to a pinned address and nowhere else, so a
//! DNS answer that changes later (rebinding) cannot move an allowed name onto the host's own services.
//! AAAA and other types for allowed names get an empty NOERROR (the sandbox is IPv4 only); other names get
//! REFUSED.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, PoisonError};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use hickory_resolver::config::{ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;

use crate::addr::{SYNTHETIC_NET, SYNTHETIC_PREFIX};
use crate::event::{Decision, Recorder};
use crate::rules::{normalize_name, restricted_class, AllowList};

/// TTL of synthetic answers. The mapping lives as long as the sandbox, so the TTL only bounds how long a
/// client caches it; a day spares needless queries.
const SYNTHETIC_TTL: u32 = 86_400;

/// Where allowed names are resolved on the host.
pub enum HostResolver {
    /// The host's resolver configuration: /etc/hosts first, then the name servers of /etc/resolv.conf.
    System(Box<TokioResolver>),
    /// A fixed table (for embedding and tests).
    Table(HashMap<String, Vec<IpAddr>>),
}

impl HostResolver {
    /// Builds the system resolver. Must be called inside the tokio runtime. Without a usable /etc/resolv.conf
    /// the resolver still answers from /etc/hosts.
    pub fn system() -> HostResolver {
        let builder = match TokioResolver::builder_tokio() {
            Ok(builder) => builder,
            Err(_) => TokioResolver::builder_with_config(ResolverConfig::default(), TokioRuntimeProvider::default()),
        };
        let mut builder = builder;
        builder.options_mut().use_hosts_file = ResolveHosts::Always;
        match builder.build() {
            Ok(resolver) => HostResolver::System(Box::new(resolver)),
            Err(_) => HostResolver::Table(HashMap::new()),
        }
    }

    /// Resolves `name` (normalised, without the trailing dot) to its addresses.
    pub async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, String> {
        match self {
            HostResolver::Table(table) => match table.get(name) {
                Some(addrs) if !addrs.is_empty() => Ok(addrs.clone()),
                _ => Err(format!("{name} is not in the gateway's host table")),
            },
            HostResolver::System(resolver) => {
                // Fully qualified, so that the host's search domains are not tried.
                let lookup = resolver.lookup_ip(format!("{name}.")).await.map_err(|e| e.to_string())?;
                let addrs: Vec<IpAddr> = lookup.iter().collect();
                if addrs.is_empty() {
                    return Err(format!("{name} has no address"));
                }
                Ok(addrs)
            }
        }
    }
}

/// One name handed out to the sandbox.
#[derive(Debug, Clone)]
pub struct NameEntry {
    pub name: String,
    pub synthetic: Ipv4Addr,
    pub pinned: Vec<IpAddr>,
}

/// Names ↔ synthetic addresses, for the sandbox's life.
#[derive(Debug, Default)]
pub struct NameTable {
    by_name: HashMap<String, NameEntry>,
    by_addr: HashMap<Ipv4Addr, String>,
    allocated: u32,
}

/// The number of usable synthetic addresses (the network's first and last address are skipped).
const POOL_SIZE: u32 = (1 << (32 - SYNTHETIC_PREFIX as u32)) - 2;

impl NameTable {
    pub fn get(&self, name: &str) -> Option<&NameEntry> {
        self.by_name.get(name)
    }

    pub fn by_synthetic(&self, addr: Ipv4Addr) -> Option<&NameEntry> {
        self.by_addr.get(&addr).and_then(|name| self.by_name.get(name))
    }

    /// Hands out the next synthetic address for `name`, or returns the one it already has.
    pub fn insert(&mut self, name: &str, pinned: Vec<IpAddr>) -> Option<NameEntry> {
        if let Some(entry) = self.by_name.get(name) {
            return Some(entry.clone());
        }
        if self.allocated >= POOL_SIZE {
            return None;
        }
        self.allocated += 1;
        let synthetic = Ipv4Addr::from(u32::from(SYNTHETIC_NET) + self.allocated);
        let entry = NameEntry { name: name.to_owned(), synthetic, pinned };
        self.by_addr.insert(synthetic, name.to_owned());
        self.by_name.insert(name.to_owned(), entry.clone());
        Some(entry)
    }
}

/// What [`DnsServer::answer_at_once`] could do with a message.
pub enum Answer {
    /// The reply to send, or nothing (the message was dropped and recorded).
    Ready(Option<Vec<u8>>),
    /// An A query for an allowed name that must first be resolved on the host.
    Lookup(PendingLookup),
}

/// A query waiting for its name's host lookup.
pub struct PendingLookup {
    request: Message,
    name: String,
}

/// The DNS service shared by the UDP and TCP listeners.
#[derive(Clone)]
pub struct DnsServer {
    pub allow: Arc<AllowList>,
    pub names: Arc<Mutex<NameTable>>,
    pub resolver: Arc<HostResolver>,
    pub recorder: Recorder,
}

fn error_reply(request: &Message, code: ResponseCode) -> Message {
    let mut reply = Message::error_msg(request.metadata.id, request.metadata.op_code, code);
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.queries = request.queries.clone();
    reply
}

impl DnsServer {
    fn lock_names(&self) -> std::sync::MutexGuard<'_, NameTable> {
        self.names.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn deny(&self, name: Option<String>, reason: String) {
        self.recorder.denied(Decision { protocol: "dns", name, reason, ..Default::default() })
    }

    /// Answers one DNS message. `None`: nothing to answer (not a parseable query; dropped and recorded).
    pub async fn answer(&self, packet: &[u8]) -> Option<Vec<u8>> {
        match self.answer_at_once(packet) {
            Answer::Ready(reply) => reply,
            Answer::Lookup(pending) => self.finish_lookup(pending).await,
        }
    }

    /// Answers one DNS message as far as it can without waiting: everything but the first A query for an
    /// allowed name, whose host lookup is left to [`DnsServer::finish_lookup`]. The UDP listener answers these
    /// in its own loop, so a burst of queries (a parallel build resolving the same few names) is answered whole
    /// instead of meeting the bound on lookups in flight.
    pub fn answer_at_once(&self, packet: &[u8]) -> Answer {
        let request = match Message::from_vec(packet) {
            Ok(request) => request,
            Err(e) => {
                self.deny(None, format!("malformed DNS message ({} bytes): {e}", packet.len()));
                // A parseable header still gets FORMERR, so the client does not wait for a timeout.
                if packet.len() >= 12 && packet[2] & 0x80 == 0 {
                    let id = u16::from_be_bytes([packet[0], packet[1]]);
                    return Answer::Ready(Message::error_msg(id, OpCode::Query, ResponseCode::FormErr).to_vec().ok());
                }
                return Answer::Ready(None);
            }
        };
        if request.metadata.message_type != MessageType::Query {
            self.deny(None, "DNS message is not a query".to_owned());
            return Answer::Ready(None);
        }
        match self.reply_at_once(&request) {
            Ok(reply) => Answer::Ready(reply.to_vec().ok()),
            Err(name) => Answer::Lookup(PendingLookup { request, name }),
        }
    }

    /// Resolves a pending query's name on the host (unless another query pinned it meanwhile) and answers it.
    pub async fn finish_lookup(&self, pending: PendingLookup) -> Option<Vec<u8>> {
        let PendingLookup { request, name } = pending;
        let entry = self.lookup(&name).await;
        self.reply_with_entry(&request, name, entry).to_vec().ok()
    }

    /// The reply to a query, or `Err(name)` when it is an A query for an allowed name not in the table yet.
    fn reply_at_once(&self, request: &Message) -> Result<Message, String> {
        if request.metadata.op_code != OpCode::Query {
            self.deny(None, format!("DNS opcode {:?} is not supported", request.metadata.op_code));
            return Ok(error_reply(request, ResponseCode::NotImp));
        }
        let [query] = request.queries.as_slice() else {
            self.deny(None, format!("DNS query with {} questions", request.queries.len()));
            return Ok(error_reply(request, ResponseCode::FormErr));
        };
        let name = normalize_name(&query.name.to_ascii());
        if query.query_class != DNSClass::IN {
            self.deny(Some(name), format!("DNS class {:?} is not supported", query.query_class));
            return Ok(error_reply(request, ResponseCode::Refused));
        }
        if !self.allow.name_allowed(&name) {
            self.deny(Some(name), "name not on the allow-list".to_owned());
            return Ok(error_reply(request, ResponseCode::Refused));
        }
        if query.query_type != RecordType::A {
            // Allowed name, other type (AAAA, HTTPS, MX...): no data. The sandbox is IPv4 only, and real records
            // would name real addresses the sandbox cannot reach anyway.
            let mut reply = error_reply(request, ResponseCode::NoError);
            reply.metadata.authoritative = true;
            return Ok(reply);
        }
        let known = self.lock_names().get(&name).cloned();
        match known {
            Some(entry) => Ok(self.reply_with_entry(request, name, Ok(entry))),
            None => Err(name),
        }
    }

    /// The reply to an A query for the allowed `name`, from its table entry or the reason there is none.
    fn reply_with_entry(
        &self,
        request: &Message,
        name: String,
        entry: Result<NameEntry, (ResponseCode, String)>,
    ) -> Message {
        let entry = match entry {
            Ok(entry) => entry,
            Err((code, reason)) => {
                self.deny(Some(name), reason);
                return error_reply(request, code);
            }
        };
        self.recorder.allowed_limited(Decision {
            protocol: "dns",
            name: Some(name),
            address: Some(join_addrs(&entry.pinned)),
            reason: format!("answered {} (pinned)", entry.synthetic),
            ..Default::default()
        });
        let mut reply = error_reply(request, ResponseCode::NoError);
        reply.metadata.authoritative = true;
        // `reply_at_once` passed only messages with exactly one query.
        if let Some(query) = request.queries.first() {
            reply.answers.push(Record::from_rdata(
                query.name.clone(),
                SYNTHETIC_TTL,
                RData::from(IpAddr::V4(entry.synthetic)),
            ));
        }
        reply
    }

    /// The name's entry, resolving and pinning it on first use.
    pub async fn lookup(&self, name: &str) -> Result<NameEntry, (ResponseCode, String)> {
        if let Some(entry) = self.lock_names().get(name) {
            return Ok(entry.clone());
        }
        let pinned = self
            .resolver
            .resolve(name)
            .await
            .map_err(|e| (ResponseCode::ServFail, format!("host could not resolve the name: {e}")))?;
        // Refuse at DNS time already when no entry could ever open the addresses: the agent learns why at once.
        if !self.allow.has_exact(name) {
            if let Some(&address) = pinned.iter().find(|a| restricted_class(**a).is_some()) {
                if pinned.iter().all(|a| restricted_class(*a).is_some()) {
                    let class = restricted_class(address).unwrap_or("restricted");
                    let reason = format!("{class} address {address} needs an exact allow entry (no wildcard)");
                    return Err((ResponseCode::Refused, reason));
                }
            }
        }
        self.lock_names()
            .insert(name, pinned)
            .ok_or((ResponseCode::ServFail, "synthetic address pool exhausted".to_owned()))
    }
}

pub fn join_addrs(addrs: &[IpAddr]) -> String {
    addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::NetEvent;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;
    use policy::sandbox::AllowRule;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
    }

    fn server(hosts: &[(&str, &str)]) -> (DnsServer, Arc<Mutex<Vec<NetEvent>>>) {
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let table = hosts.iter().map(|(n, a)| ((*n).to_owned(), vec![a.parse().unwrap()])).collect();
        let server = DnsServer {
            allow: Arc::new(AllowList::new(vec![
                AllowRule { domain: "allowed.test".into(), port: None },
                AllowRule { domain: "*.wild.test".into(), port: Some(8443) },
            ])),
            names: Arc::new(Mutex::new(NameTable::default())),
            resolver: Arc::new(HostResolver::Table(table)),
            recorder: Recorder::new("t", Box::new(move |e: &NetEvent| sink.lock().unwrap().push(e.clone()))),
        };
        (server, events)
    }

    fn query(name: &str, kind: RecordType) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 0x1234;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
        m.to_vec().unwrap()
    }

    fn ask(server: &DnsServer, packet: &[u8]) -> Message {
        Message::from_vec(&block_on(server.answer(packet)).unwrap()).unwrap()
    }

    #[test]
    fn allowed_names_get_stable_synthetic_addresses() {
        let (server, events) = server(&[("allowed.test", "203.0.113.5"), ("x.wild.test", "203.0.113.6")]);
        let first = ask(&server, &query("Allowed.Test.", RecordType::A));
        assert_eq!(first.metadata.response_code, ResponseCode::NoError);
        assert_eq!(first.metadata.id, 0x1234);
        let addr = first.answers[0].data.ip_addr().unwrap();
        assert_eq!(addr, IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1)));
        let again = ask(&server, &query("allowed.test.", RecordType::A));
        assert_eq!(again.answers[0].data.ip_addr(), Some(addr));
        let wild = ask(&server, &query("x.wild.test.", RecordType::A));
        assert_eq!(wild.answers[0].data.ip_addr(), Some(IpAddr::V4(Ipv4Addr::new(198, 19, 0, 2))));
        let aaaa = ask(&server, &query("allowed.test.", RecordType::AAAA));
        assert_eq!((aaaa.metadata.response_code, aaaa.answers.len()), (ResponseCode::NoError, 0));
        let entry = server.names.lock().unwrap().by_synthetic(Ipv4Addr::new(198, 19, 0, 1)).cloned().unwrap();
        assert_eq!(entry.pinned, vec!["203.0.113.5".parse::<IpAddr>().unwrap()]);
        assert_eq!(events.lock().unwrap().iter().filter(|e| e.decision == "allowed").count(), 3);
    }

    #[test]
    fn other_names_are_refused_and_failures_reported() {
        let (server, events) = server(&[("evil.test", "203.0.113.7")]);
        assert_eq!(ask(&server, &query("evil.test.", RecordType::A)).metadata.response_code, ResponseCode::Refused);
        assert_eq!(ask(&server, &query("wild.test.", RecordType::A)).metadata.response_code, ResponseCode::Refused);
        // Allowed but unknown to the host: SERVFAIL.
        assert_eq!(ask(&server, &query("allowed.test.", RecordType::A)).metadata.response_code, ResponseCode::ServFail);
        let events = events.lock().unwrap();
        assert!(events.iter().all(|e| e.decision == "denied"));
        assert_eq!(events[0].name.as_deref(), Some("evil.test"));
    }

    /// Only a first A query for an allowed name waits for a host lookup; once pinned, the name is answered at once.
    #[test]
    fn only_first_lookups_wait() {
        let (server, _) = server(&[("allowed.test", "203.0.113.5")]);
        let ready = |packet: &[u8]| match server.answer_at_once(packet) {
            Answer::Ready(reply) => Some(Message::from_vec(&reply.unwrap()).unwrap()),
            Answer::Lookup(_) => None,
        };
        assert_eq!(ready(&query("evil.test.", RecordType::A)).unwrap().metadata.response_code, ResponseCode::Refused);
        assert!(ready(&query("allowed.test.", RecordType::AAAA)).unwrap().answers.is_empty());
        let Answer::Lookup(pending) = server.answer_at_once(&query("allowed.test.", RecordType::A)) else {
            panic!("a first A query was answered without a lookup");
        };
        // A second query for the same name is still pending; finishing it answers from the table.
        let Answer::Lookup(second) = server.answer_at_once(&query("allowed.test.", RecordType::A)) else {
            panic!("answered before the name was pinned");
        };
        let first = Message::from_vec(&block_on(server.finish_lookup(pending)).unwrap()).unwrap();
        let again = Message::from_vec(&block_on(server.finish_lookup(second)).unwrap()).unwrap();
        let cached = ready(&query("allowed.test.", RecordType::A)).unwrap();
        assert_eq!(first.answers[0].data.ip_addr(), Some(IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1))));
        assert_eq!(again.answers, first.answers);
        assert_eq!((cached.metadata.id, cached.answers), (0x1234, first.answers));
    }

    /// Garbage and mutated queries never panic the server; each is answered with a DNS message or dropped.
    #[test]
    fn hostile_messages_never_panic() {
        let (server, _) = server(&[("allowed.test", "203.0.113.5")]);
        let seed = query("allowed.test.", RecordType::A);
        let mut state = 0x1234_5678_9abc_def1_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        block_on(async {
            for i in 0..20_000 {
                let mut p = if i % 2 == 0 { seed.clone() } else { (0..(next() % 300)).map(|_| next() as u8).collect() };
                for _ in 0..(next() % 5) {
                    if !p.is_empty() {
                        let at = (next() as usize) % p.len();
                        p[at] = next() as u8;
                    }
                }
                if let Some(reply) = server.answer(&p).await {
                    assert!(reply.len() >= 12);
                }
            }
        });
    }

    /// The host resolver honours /etc/hosts (as the static binary will run it).
    #[test]
    fn system_resolver_reads_etc_hosts() {
        let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        let has_localhost = hosts.lines().any(|l| {
            l.split_whitespace().next() == Some("127.0.0.1") && l.split_whitespace().any(|w| w == "localhost")
        });
        if !has_localhost {
            eprintln!("SKIP: /etc/hosts has no 127.0.0.1 localhost line");
            return;
        }
        let addrs = block_on(async { HostResolver::system().resolve("localhost").await }).unwrap();
        assert!(addrs.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)), "{addrs:?}");
    }
}
