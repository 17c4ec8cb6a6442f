//! The allow-list: which (name, port) and (IP literal, port) pairs the sandbox may reach, and which real
//! addresses need an exact (non-wildcard) entry.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use policy::sandbox::AllowRule;

/// Ports a rule without an explicit port allows: plain HTTP and HTTPS.
pub const DEFAULT_PORTS: [u16; 2] = [80, 443];

/// The sandbox's allow-list.
#[derive(Debug, Clone)]
pub struct AllowList {
    rules: Vec<AllowRule>,
}

/// Normalises a DNS name for comparison: ASCII lower case, without the trailing root dot.
pub fn normalize_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether `pattern` (a domain or `*.domain`) matches `name`. `*.example.com` matches every name strictly below
/// `example.com` (any depth), not `example.com` itself.
pub fn domain_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(parent) => {
            name.len() > parent.len() + 1 && name.ends_with(parent) && {
                let cut = name.len() - parent.len();
                name.as_bytes()[cut - 1] == b'.'
            }
        }
        None => pattern == name,
    }
}

fn port_matches(rule: &AllowRule, port: u16) -> bool {
    match rule.port {
        Some(p) => p == port,
        None => DEFAULT_PORTS.contains(&port),
    }
}

fn is_ip_literal(domain: &str) -> bool {
    domain.parse::<IpAddr>().is_ok()
}

/// Why a connection was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    NameNotAllowed,
    PortNotAllowed,
    Restricted { address: IpAddr, class: &'static str },
    NoUsableAddress,
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denial::NameNotAllowed => write!(f, "name not on the allow-list"),
            Denial::PortNotAllowed => write!(f, "port not allowed for this name"),
            Denial::Restricted { address, class } => {
                write!(f, "{class} address {address} needs an exact allow entry (no wildcard)")
            }
            Denial::NoUsableAddress => write!(f, "the name resolved to no address"),
        }
    }
}

/// An allowed connection: the rule that allowed it and the real addresses it may go to.
#[derive(Debug, Clone)]
pub struct Grant {
    pub rule: String,
    pub addresses: Vec<IpAddr>,
}

impl AllowList {
    pub fn new(rules: Vec<AllowRule>) -> AllowList {
        let rules = rules.into_iter().map(|r| AllowRule { domain: normalize_name(&r.domain), port: r.port }).collect();
        AllowList { rules }
    }

    /// Whether DNS may answer for `name`: some rule names it, on any port.
    pub fn name_allowed(&self, name: &str) -> bool {
        self.rules.iter().any(|r| !is_ip_literal(&r.domain) && domain_matches(&r.domain, name))
    }

    /// Whether some entry names `name` exactly (no wildcard), on any port.
    pub fn has_exact(&self, name: &str) -> bool {
        self.rules.iter().any(|r| r.domain == name)
    }

    /// The rule allowing `name` on `port`. An exact entry wins over a wildcard, because only an exact entry may
    /// open a restricted (private/loopback/...) address.
    fn rule_for(&self, name: &str, port: u16) -> Option<&AllowRule> {
        let mut matching = self
            .rules
            .iter()
            .filter(|r| !is_ip_literal(&r.domain) && domain_matches(&r.domain, name) && port_matches(r, port));
        let first = matching.clone().next();
        matching.find(|r| r.domain == name).or(first)
    }

    /// Decides a connection to `name`:`port` whose name resolved (on the host) to `pinned`.
    pub fn decide_name(&self, name: &str, port: u16, pinned: &[IpAddr]) -> Result<Grant, Denial> {
        if !self.name_allowed(name) {
            return Err(Denial::NameNotAllowed);
        }
        let Some(rule) = self.rule_for(name, port) else {
            return Err(Denial::PortNotAllowed);
        };
        let exact = rule.domain == name;
        let mut addresses = Vec::new();
        let mut first_restricted = None;
        for &address in pinned {
            match restricted_class(address) {
                Some(class) if !exact => {
                    first_restricted.get_or_insert(Denial::Restricted { address, class });
                }
                _ => addresses.push(address),
            }
        }
        if addresses.is_empty() {
            return Err(first_restricted.unwrap_or(Denial::NoUsableAddress));
        }
        Ok(Grant { rule: describe_rule(rule), addresses })
    }

    /// Decides a connection to an IP literal: only an entry naming that address (and port) allows it.
    pub fn decide_ip(&self, address: IpAddr, port: u16) -> Result<Grant, Denial> {
        let rule =
            self.rules.iter().find(|r| r.domain.parse::<IpAddr>().ok() == Some(address) && port_matches(r, port));
        match rule {
            Some(rule) => Ok(Grant { rule: describe_rule(rule), addresses: vec![address] }),
            None => Err(Denial::NameNotAllowed),
        }
    }

    /// The allow-list as the 403 body and denial messages show it.
    pub fn describe(&self) -> String {
        if self.rules.is_empty() {
            return "nothing".to_owned();
        }
        self.rules.iter().map(describe_rule).collect::<Vec<_>>().join(", ")
    }
}

/// A rule as the user wrote it: `domain`, `domain:port`, `[v6]:port`.
pub fn describe_rule(rule: &AllowRule) -> String {
    match rule.port {
        None => rule.domain.clone(),
        Some(port) if rule.domain.contains(':') => format!("[{}]:{port}", rule.domain),
        Some(port) => format!("{}:{port}", rule.domain),
    }
}

/// The class of a restricted address (one a wildcard entry may not open), or `None` for a public one.
pub fn restricted_class(address: IpAddr) -> Option<&'static str> {
    match address {
        IpAddr::V4(v4) => restricted_v4(v4),
        IpAddr::V6(v6) => restricted_v6(v6),
    }
}

fn in_v4_net(addr: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
    u32::from(addr) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn restricted_v4(addr: Ipv4Addr) -> Option<&'static str> {
    const CLASSES: &[([u8; 4], u32, &str)] = &[
        ([169, 254, 169, 254], 32, "cloud metadata"),
        ([0, 0, 0, 0], 8, "unspecified"),
        ([127, 0, 0, 0], 8, "loopback"),
        ([10, 0, 0, 0], 8, "private"),
        ([172, 16, 0, 0], 12, "private"),
        ([192, 168, 0, 0], 16, "private"),
        ([100, 64, 0, 0], 10, "private (carrier-grade NAT)"),
        ([169, 254, 0, 0], 16, "link-local"),
        ([192, 0, 0, 0], 24, "private (IETF protocol assignments)"),
        ([198, 18, 0, 0], 15, "benchmarking (airlock's own link)"),
        ([224, 0, 0, 0], 4, "multicast"),
        ([240, 0, 0, 0], 4, "reserved"),
    ];
    CLASSES.iter().find(|(net, prefix, _)| in_v4_net(addr, *net, *prefix)).map(|(_, _, class)| *class)
}

fn restricted_v6(addr: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = addr.to_ipv4_mapped() {
        return restricted_v4(v4);
    }
    let first = addr.segments()[0];
    if addr.is_unspecified() {
        Some("unspecified")
    } else if addr.is_loopback() {
        Some("loopback")
    } else if addr == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        Some("cloud metadata")
    } else if first & 0xfe00 == 0xfc00 {
        Some("private (unique local)")
    } else if first & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if first & 0xff00 == 0xff00 {
        Some("multicast")
    } else if addr.segments()[..6] == [0, 0, 0, 0, 0, 0] {
        // IPv4-compatible (deprecated) addresses embed an IPv4 address the host would reach.
        Some("IPv4-compatible")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(domain: &str, port: Option<u16>) -> AllowRule {
        AllowRule { domain: domain.into(), port }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn wildcard_matches_strict_subdomains_only() {
        assert!(domain_matches("*.example.com", "a.example.com"));
        assert!(domain_matches("*.example.com", "b.a.example.com"));
        assert!(!domain_matches("*.example.com", "example.com"));
        assert!(!domain_matches("*.example.com", "badexample.com"));
        assert!(!domain_matches("*.example.com", "a.example.com.evil"));
        assert!(!domain_matches("*.example.com", ".example.com"));
        assert!(domain_matches("example.com", "example.com"));
        assert!(!domain_matches("example.com", "a.example.com"));
    }

    #[test]
    fn default_ports_are_80_and_443() {
        let list = AllowList::new(vec![rule("a.test", None), rule("b.test", Some(8080))]);
        let public = [ip("93.184.216.34")];
        assert!(list.decide_name("a.test", 80, &public).is_ok());
        assert!(list.decide_name("a.test", 443, &public).is_ok());
        assert_eq!(list.decide_name("a.test", 22, &public).unwrap_err(), Denial::PortNotAllowed);
        assert!(list.decide_name("b.test", 8080, &public).is_ok());
        assert_eq!(list.decide_name("b.test", 443, &public).unwrap_err(), Denial::PortNotAllowed);
        assert_eq!(list.decide_name("c.test", 443, &public).unwrap_err(), Denial::NameNotAllowed);
    }

    #[test]
    fn restricted_addresses_need_an_exact_entry() {
        let list = AllowList::new(vec![rule("*.corp.test", None), rule("db.corp.test", Some(5432))]);
        let private = [ip("10.1.2.3")];
        assert!(matches!(
            list.decide_name("web.corp.test", 443, &private),
            Err(Denial::Restricted { class: "private", .. })
        ));
        assert!(list.decide_name("db.corp.test", 5432, &private).is_ok());
        // The wildcard matches db.corp.test on 443, but only the exact entry may open a private address, and it
        // is for port 5432 only.
        assert!(list.decide_name("db.corp.test", 443, &private).is_err());
        // Mixed answers: the restricted addresses are dropped, the public one kept.
        let mixed = [ip("127.0.0.1"), ip("93.184.216.34")];
        assert_eq!(list.decide_name("x.corp.test", 443, &mixed).unwrap().addresses, vec![ip("93.184.216.34")]);
        let exact = AllowList::new(vec![rule("allowed.test", None)]);
        assert!(exact.decide_name("allowed.test", 80, &[ip("127.0.0.1")]).is_ok());
    }

    #[test]
    fn ip_literals_need_their_own_entry() {
        let list = AllowList::new(vec![rule("a.test", None), rule("192.0.2.7", Some(22)), rule("::1", None)]);
        assert!(list.decide_ip(ip("192.0.2.7"), 22).is_ok());
        assert!(list.decide_ip(ip("192.0.2.7"), 23).is_err());
        assert!(list.decide_ip(ip("192.0.2.8"), 22).is_err());
        assert!(list.decide_ip(ip("::1"), 443).is_ok());
        assert!(!list.name_allowed("192.0.2.7"));
    }

    #[test]
    fn address_classes() {
        for (addr, class) in [
            ("127.0.0.1", Some("loopback")),
            ("10.0.0.1", Some("private")),
            ("172.31.255.255", Some("private")),
            ("172.32.0.1", None),
            ("192.168.1.1", Some("private")),
            ("100.64.0.1", Some("private (carrier-grade NAT)")),
            ("169.254.169.254", Some("cloud metadata")),
            ("169.254.1.1", Some("link-local")),
            ("0.0.0.0", Some("unspecified")),
            ("224.0.0.1", Some("multicast")),
            ("255.255.255.255", Some("reserved")),
            ("8.8.8.8", None),
            ("::1", Some("loopback")),
            ("::", Some("unspecified")),
            ("fd00::1", Some("private (unique local)")),
            ("fe80::1", Some("link-local")),
            ("ff02::1", Some("multicast")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("::ffff:8.8.8.8", None),
            ("fd00:ec2::254", Some("cloud metadata")),
            ("2001:db8::1", None),
        ] {
            assert_eq!(restricted_class(ip(addr)), class, "{addr}");
        }
    }

    #[test]
    fn describe_lists_rules_as_written() {
        let list = AllowList::new(vec![rule("a.test", None), rule("*.b.test", Some(8443)), rule("::1", Some(22))]);
        assert_eq!(list.describe(), "a.test, *.b.test:8443, [::1]:22");
        assert_eq!(AllowList::new(vec![]).describe(), "nothing");
    }
}
