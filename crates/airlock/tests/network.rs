//! `--net allow` end to end, with the real binary and real servers — on the host's loopback only.
//!
//! Each test adds its own names (`allowed-T.test`, `denied-T.test`, ...) pointing at 127.0.0.1 to the host's
//! `/etc/hosts` (removed on drop) and starts its own HTTP, HTTPS (self-signed) and UDP servers on 127.0.0.1,
//! which log every connection, TLS server name, request and datagram. The sandbox's attempts run in one
//! `airlock run` per test (`common/net_client.py`, curl); the tests then read what worked, what the servers saw
//! and what the gateway recorded (`--audit`). Traffic aimed anywhere else (a DNS query to 192.0.2.1) ends in the
//! gateway, inside airlock: it is dropped there, which is what those cases check.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/hosts.rs"]
mod hosts;

use hosts::HostNames;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use common::*;

const SERVERS: &str = include_str!("common/net_servers.py");
const CLIENT: &str = include_str!("common/net_client.py");
/// Where the client script is shown inside.
const CLIENT_INSIDE: &str = "/opt/net_client.py";
/// Marks the lines the tests add to /etc/hosts.
const HOSTS_MARK: &str = "# airlock-network-test";

/// The loopback servers of one test.
struct Servers {
    child: Child,
    http: u16,
    other: u16,
    tls: u16,
    udp: u16,
    /// Reads 100 bytes, answers 1000, never closes.
    hold: u16,
    log: PathBuf,
}

impl Servers {
    fn start(dir: &TempDir) -> Servers {
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let made = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
            .args(["-days", "1", "-subj", "/CN=airlock-test", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl");
        assert!(made.success(), "openssl could not make a certificate");
        let script = dir.path().join("net_servers.py");
        std::fs::write(&script, SERVERS).unwrap();
        let log = dir.path().join("servers.log");
        std::fs::write(&log, "").unwrap();
        let mut child = Command::new(python3().unwrap())
            .arg(&script)
            .arg(&log)
            .arg(&cert)
            .arg(&key)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let ports: serde_json::Value = serde_json::from_str(&line).expect("the servers' ports");
        let port = |k: &str| ports[k].as_u64().unwrap() as u16;
        Servers {
            http: port("http"),
            other: port("other"),
            tls: port("tls"),
            udp: port("udp"),
            hold: port("hold"),
            log,
            child,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one network test needs: root (to edit /etc/hosts), python3, openssl, curl, a working sandbox.
macro_rules! require_network_tools {
    () => {
        require_sandbox!();
        if !is_root() {
            eprintln!("SKIP: the network tests edit /etc/hosts, which needs root");
            return;
        }
        for tool in ["/usr/bin/curl", "/usr/bin/openssl"] {
            if !Path::new(tool).exists() {
                skip_or_fail!("{tool} is missing (scripts/setup-debian installs it)");
            }
        }
        if python3().is_none() {
            skip_or_fail!("python3 is missing");
        }
    };
}

/// A directory holding the client script (shown inside at [`CLIENT_INSIDE`]) and the audit file.
fn test_dir(tag: &str) -> TempDir {
    let dir = TempDir::new(tag);
    std::fs::write(dir.path().join("net_client.py"), CLIENT).unwrap();
    dir
}

/// `airlock run` options for a network test: the allow entries, `--audit`, the client script.
fn net_args(dir: &TempDir, allow: &[String]) -> Vec<String> {
    let mut args = Vec::new();
    for entry in allow {
        args.push("--allow".to_string());
        args.push(entry.clone());
    }
    args.push("--audit".to_string());
    args.push(dir.path().join("audit.jsonl").display().to_string());
    args.push("--ro-bind".to_string());
    args.push(format!("{}:{CLIENT_INSIDE}", dir.path().join("net_client.py").display()));
    args
}

fn run_script(dir: &TempDir, allow: &[String], script: &str) -> Output {
    let mut args = net_args(dir, allow);
    args.extend(["--".to_string(), "/bin/sh".to_string(), "-c".to_string(), script.to_string()]);
    run(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The gateway's records.
fn audit_events(dir: &TempDir) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l:?}: {e}"))).collect()
}

fn events_for<'a>(events: &'a [serde_json::Value], name: &str, decision: &str) -> Vec<&'a serde_json::Value> {
    events.iter().filter(|e| e["name"] == name && e["decision"] == decision).collect()
}

/// The line `LABEL: ...` of the sandbox's output.
fn result<'a>(out: &'a str, label: &str) -> &'a str {
    let prefix = format!("{label}: ");
    out.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap_or_else(|| panic!("no {label} in:\n{out}"))
}

/// No gateway process of this test is left once the run is over.
fn assert_no_gateway_left(marker: &str) {
    let o = Command::new("pgrep").args(["-af", "airlock-netgw"]).output().unwrap();
    let left: Vec<String> = stdout(&o).lines().filter(|l| l.contains(marker)).map(String::from).collect();
    assert!(left.is_empty(), "gateway processes left behind: {left:?}");
}

#[test]
fn allowed_name_is_reached_by_curl_python_tls_and_the_proxy() {
    require_network_tools!();
    let name = "allowed-reach.test";
    let _hosts = HostNames::add(HOSTS_MARK, &[name]);
    let dir = test_dir("net-reach");
    let servers = Servers::start(&dir);
    let (http, tls) = (servers.http, servers.tls);
    let allow = vec![format!("{name}:{http}"), format!("{name}:{tls}")];
    let script = format!(
        "curl -sS --noproxy '*' -m 10 http://{name}:{http}/curl-direct; echo curl-direct: $?
         curl -sS -k --noproxy '*' -m 10 https://{name}:{tls}/curl-tls; echo curl-tls: $?
         curl -sS -m 10 http://{name}:{http}/curl-proxy; echo curl-proxy: $?
         curl -sS -k -m 10 https://{name}:{tls}/curl-connect; echo curl-connect: $?
         python3 {CLIENT_INSIDE} get python {name} {http} /python-raw"
    );
    let o = run_script(&dir, &allow, &script);
    let out = ok(&o);
    for (label, path) in [("curl-direct", "/curl-direct"), ("curl-proxy", "/curl-proxy")] {
        assert!(out.contains(&format!("hello from http {path}")), "{label}:\n{out}\n{}", stderr(&o));
        assert_eq!(result(&out, label), "0", "{out}");
    }
    for (label, path) in [("curl-tls", "/curl-tls"), ("curl-connect", "/curl-connect")] {
        assert!(out.contains(&format!("hello from tls {path}")), "{label}:\n{out}\n{}", stderr(&o));
        assert_eq!(result(&out, label), "0", "{out}");
    }
    assert_eq!(result(&out, "python"), "HTTP/1.1 200 OK | hello from http /python-raw");

    let log = servers.log();
    for path in ["/curl-direct", "/curl-proxy"] {
        assert!(log.contains(&format!("request http {name}:{http} {path}")), "{path} not in the log:\n{log}");
    }
    // The raw client's Host header has no port.
    assert!(log.contains(&format!("request http {name} /python-raw")), "{log}");
    for path in ["/curl-tls", "/curl-connect"] {
        assert!(log.contains(&format!("request tls {name}:{tls} {path}")), "{path} not in the log:\n{log}");
    }
    assert!(log.contains(&format!("sni {name}")), "{log}");

    // Every connection is recorded, with its bytes once it closed.
    let events = audit_events(&dir);
    let allowed = events_for(&events, name, "allowed");
    assert!(allowed.iter().any(|e| e["protocol"] == "dns"), "no DNS record: {events:#?}");
    let with_bytes: Vec<_> = allowed.iter().filter(|e| e["bytes_in"].as_u64().unwrap_or(0) > 0).collect();
    assert!(with_bytes.len() >= 5, "five connections with their bytes: {events:#?}");
    for e in &events {
        assert!(e["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{e}");
        assert!(e["sandbox"].as_str().is_some_and(|s| !s.is_empty()), "{e}");
    }
    assert_no_gateway_left(name);
}

#[test]
fn everything_not_allowed_fails_and_never_reaches_the_host() {
    require_network_tools!();
    let (allowed, denied, wild) = ("allowed-deny.test", "denied-deny.test", "wild-deny.test");
    let wild_sub = "a.wild-deny.test";
    let _hosts = HostNames::add(HOSTS_MARK, &[allowed, denied, wild, wild_sub]);
    let dir = test_dir("net-deny");
    let servers = Servers::start(&dir);
    let (http, other, tls, udp) = (servers.http, servers.other, servers.tls, servers.udp);
    let allow = vec![
        format!("{allowed}:{http}"),
        format!("{allowed}:{tls}"),
        format!("{allowed}:{udp}"),
        format!("*.{wild}:{http}"),
    ];
    let c = format!("python3 {CLIENT_INSIDE}");
    let script = format!(
        "IP=$({c} resolve ip {allowed} | sed 's/^ip: //')
         echo allowed-ip: $IP
         {c} resolve denied-name {denied} resolve wild-bare {wild}
         curl -sS --noproxy '*' -m 10 http://{denied}:{http}/denied-name >/dev/null 2>&1; echo curl-denied: $?
         {c} get own-loopback 127.0.0.1 {http} /own-loopback
         {c} get ip-direct 192.0.2.1 {http} /ip-direct
         {c} get wrong-port {allowed} {other} /wrong-port
         {c} get wild-sub {wild_sub} {http} /wild-sub
         curl -sS -k --noproxy '*' -m 10 --resolve {denied}:{tls}:$IP https://{denied}:{tls}/sni-denied >/dev/null 2>&1; echo sni-denied: $?
         timeout 10 openssl s_client -connect $IP:{tls} -servername {denied} </dev/null >/dev/null 2>&1; echo s-client-denied: $?
         {c} get host-denied {allowed} {http} /host-denied host={denied}
         echo proxy-denied: $(curl -sS -m 10 http://{denied}:{http}/proxy-denied)
         echo proxy-literal: $(NO_PROXY= no_proxy= curl -sS -m 10 http://127.0.0.1:{http}/proxy-literal)
         curl -sS -k -m 10 https://{denied}:{tls}/connect-denied >/dev/null 2>&1; echo connect-denied: $?
         {c} udp udp {allowed} {udp} dns dns-other 192.0.2.1 {allowed} dns dns-ours 198.18.0.1 {denied}
         {c} get still-allowed {allowed} {http} /still-allowed"
    );
    let o = run_script(&dir, &allow, &script);
    let out = ok(&o);
    let ip = result(&out, "allowed-ip");
    assert!(ip.starts_with("198.19."), "the allowed name resolves to a synthetic address: {out}");
    assert!(result(&out, "denied-name").starts_with("error"), "{out}");
    assert!(result(&out, "wild-bare").starts_with("error"), "a wildcard does not match its bare domain: {out}");
    assert_ne!(result(&out, "curl-denied"), "0", "{out}");
    assert!(result(&out, "own-loopback").starts_with("error"), "127.0.0.1 inside is the sandbox's own: {out}");
    assert!(result(&out, "wrong-port").starts_with("error"), "{out}");
    // An IP address no entry lists: refused by the gateway (it never leaves the machine).
    assert!(result(&out, "ip-direct").starts_with("error"), "{out}");
    // A wildcard entry never opens a loopback (or private) destination: only an exact entry does.
    assert!(!result(&out, "wild-sub").contains("200 OK"), "{out}");
    assert_ne!(result(&out, "sni-denied"), "0", "{out}");
    assert_ne!(result(&out, "s-client-denied"), "0", "{out}");
    let blocked = format!("airlock: blocked by network policy: {denied} is not allowed (allowed: ");
    let host_denied = result(&out, "host-denied");
    assert!(host_denied.starts_with("HTTP/1.1 403"), "{out}");
    assert!(host_denied.contains(&blocked), "the 403 body says what is allowed: {out}");
    assert!(result(&out, "proxy-denied").contains(&blocked), "{out}");
    assert!(result(&out, "proxy-literal").contains("airlock: blocked by network policy: 127.0.0.1"), "{out}");
    assert_ne!(result(&out, "connect-denied"), "0", "{out}");
    assert_eq!(result(&out, "udp"), "noreply", "{out}");
    assert_eq!(result(&out, "dns-other"), "noanswer", "{out}");
    assert_eq!(result(&out, "dns-ours"), "refused", "{out}");
    assert_eq!(result(&out, "still-allowed"), "HTTP/1.1 200 OK | hello from http /still-allowed");

    // The host's servers saw only the allowed request.
    let log = servers.log();
    let requests: Vec<&str> = log.lines().filter(|l| l.starts_with("request")).collect();
    assert_eq!(requests, [format!("request http {allowed} /still-allowed")], "{log}");
    assert!(!log.contains("accept other"), "the wrong port was reached: {log}");
    assert!(!log.contains("accept tls") && !log.contains("sni "), "the TLS server was reached: {log}");
    assert!(!log.contains("udp "), "the UDP server was reached: {log}");

    // Every attempt is in the audit records.
    let events = audit_events(&dir);
    let denied_events = events_for(&events, denied, "denied");
    assert!(denied_events.iter().any(|e| e["protocol"] == "dns"), "{events:#?}");
    for protocol in ["http", "tls", "proxy-http", "proxy-connect"] {
        assert!(denied_events.iter().any(|e| e["protocol"] == protocol), "no {protocol} denial: {events:#?}");
    }
    assert!(events_for(&events, wild, "denied").iter().any(|e| e["protocol"] == "dns"), "{events:#?}");
    let denied_all: Vec<_> = events.iter().filter(|e| e["decision"] == "denied").collect();
    assert!(denied_all.iter().any(|e| e["port"] == other), "wrong port: {events:#?}");
    assert!(denied_all.iter().any(|e| e["protocol"] == "udp" && e["port"] == udp), "udp: {events:#?}");
    assert!(
        denied_all.iter().any(|e| e["address"] == "192.0.2.1" && e["protocol"] == "udp"),
        "DNS to another server: {events:#?}"
    );
    assert!(
        denied_all.iter().any(|e| e["address"] == "192.0.2.1" && e["protocol"] == "tcp" && e["port"] == http),
        "TCP to an IP address: {events:#?}"
    );
    assert!(denied_all.iter().any(|e| e["address"] == "127.0.0.1" || e["name"] == "127.0.0.1"), "{events:#?}");
    for e in &denied_all {
        assert!(e["reason"].as_str().is_some_and(|r| !r.is_empty()), "a denial says why: {e}");
    }
    assert_no_gateway_left(allowed);
}

#[test]
fn hostile_packets_leave_the_gateway_serving() {
    require_network_tools!();
    let name = "allowed-fuzz.test";
    let _hosts = HostNames::add(HOSTS_MARK, &[name]);
    let dir = test_dir("net-fuzz");
    let servers = Servers::start(&dir);
    let http = servers.http;
    let c = format!("python3 {CLIENT_INSIDE}");
    let script = format!("{c} fuzz fuzz {name} {http} get after {name} {http} /after-fuzz");
    let o = run_script(&dir, &[format!("{name}:{http}")], &script);
    let out = ok(&o);
    assert_eq!(result(&out, "fuzz"), "done");
    assert_eq!(result(&out, "after"), "HTTP/1.1 200 OK | hello from http /after-fuzz", "{}", stderr(&o));
    assert!(servers.log().contains("/after-fuzz"));
    // Identical denials are rate-limited: the flood did not turn into one record per packet.
    let events = audit_events(&dir);
    assert!(events.len() < 3000, "{} records for the flood", events.len());
}

#[test]
fn rootless_sandbox_gets_the_same_network() {
    require_network_tools!();
    require_test_user!();
    let (allowed, denied) = ("allowed-rootless.test", "denied-rootless.test");
    let _hosts = HostNames::add(HOSTS_MARK, &[allowed, denied]);
    let dir = test_dir("net-rootless");
    dir.chown_to_test_user();
    let servers = Servers::start(&dir);
    let http = servers.http;
    let mut args = net_args(&dir, &[format!("{allowed}:{http}")]);
    let c = format!("python3 {CLIENT_INSIDE}");
    let script = format!("{c} get allowed {allowed} {http} /rootless resolve denied {denied}");
    args.extend(["--".to_string(), "/bin/sh".to_string(), "-c".to_string(), script]);
    let o = run_as_user(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let out = ok(&o);
    assert_eq!(result(&out, "allowed"), "HTTP/1.1 200 OK | hello from http /rootless");
    assert!(result(&out, "denied").starts_with("error"), "{out}");
    assert!(servers.log().contains("/rootless"));
    let events = audit_events(&dir);
    assert!(!events_for(&events, denied, "denied").is_empty(), "{events:#?}");
    assert_no_gateway_left(allowed);
}

/// The resident and total size (KiB) of the gateway's executable code: its executable mapping of
/// `airlock-netgw`, from /proc/PID/smaps.
fn resident_code_of_gateway(pid: &str) -> (u64, u64) {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let mut in_code = false;
    let (mut rss, mut size) = (0, 0);
    for line in smaps.lines() {
        let field = |l: &str| l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        if line.split_whitespace().next().is_some_and(|f| f.contains('-') && !f.ends_with(':')) {
            let fields: Vec<_> = line.split_whitespace().collect();
            in_code = fields.get(1) == Some(&"r-xp") && fields.last().is_some_and(|p| p.ends_with("/airlock-netgw"));
        } else if in_code && line.starts_with("Size:") {
            size += field(line);
        } else if in_code && line.starts_with("Rss:") {
            rss += field(line);
        }
    }
    assert!(size > 0, "no code mapping of airlock-netgw in /proc/{pid}/smaps");
    (rss, size)
}

/// How many times the gateway's threads gave up their CPU to wait (`voluntary_ctxt_switches` of each task):
/// each wakeup of an idle gateway adds at least one.
fn gateway_waits(pid: &str) -> u64 {
    let mut waits = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap_or_default();
        let line = status.lines().find(|l| l.starts_with("voluntary_ctxt_switches:")).unwrap_or_default();
        waits += line.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    }
    waits
}

#[test]
fn long_lived_sandbox_keeps_its_gateway_for_exec() {
    require_network_tools!();
    let name = "allowed-longlived.test";
    let _hosts = HostNames::add(HOSTS_MARK, &[name]);
    let dir = test_dir("net-longlived");
    let servers = Servers::start(&dir);
    let http = servers.http;
    let sandbox = format!("net-ll-{}", std::process::id());
    let _cleanup = StopOnDrop::new(&sandbox, airlock);
    let mut args = vec!["create".to_string()];
    args.extend(net_args(&dir, &[format!("{name}:{http}")]));
    args.push(sandbox.clone());
    let o = airlock(&args.iter().map(String::as_str).collect::<Vec<_>>());
    ok(&o);
    // The gateway parses what the sandbox sends: as host root it runs as nobody, in a process group of its own.
    let found = Command::new("pgrep").args(["-f", &format!("airlock-netgw --sandbox {sandbox} ")]).output().unwrap();
    let pid = stdout(&found).trim().to_string();
    assert!(!pid.is_empty() && !pid.contains('\n'), "one gateway for the sandbox: {pid:?}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(uid_line.split_whitespace().skip(1).collect::<Vec<_>>(), ["65534"; 4], "{uid_line}");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    assert_eq!(after_comm.split_whitespace().nth(2), Some(pid.as_str()), "its own process group: {stat}");
    // About a second after it started, an idle gateway drops the code and read-only data start-up alone used:
    // its executable's code is then resident for much less than half its size (~1/3 in both builds: what the
    // idle loop runs, with the kernel's fault-around). The requests below then run on the dropped pages.
    let mut text = (0, 0);
    for _ in 0..100 {
        text = resident_code_of_gateway(&pid);
        if text.0 * 2 < text.1 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(text.0 * 2 < text.1, "the idle gateway's code (resident KiB, size KiB) stays resident: {text:?}");
    // And an idle gateway stays asleep: nothing arrives from the sandbox while its command does nothing. Its
    // interface has no IPv6 address (the network is IPv4 only), so the kernel sends no router solicitations
    // (the second came ~4 s after the interface went up, waking the gateway and its code) nor MLD reports.
    let inside = airlock(&[
        "exec",
        &sandbox,
        "--",
        "sh",
        "-c",
        "cat /proc/sys/net/ipv6/conf/airlock0/addr_gen_mode; cat /proc/net/if_inet6",
    ]);
    let inside = ok(&inside);
    assert!(inside.starts_with("1\n") && !inside.contains("airlock0"), "IPv6 addresses on airlock0: {inside}");
    let waits = gateway_waits(&pid);
    std::thread::sleep(std::time::Duration::from_secs(5));
    assert_eq!(gateway_waits(&pid), waits, "the idle gateway woke up within 5 s");
    let later = resident_code_of_gateway(&pid);
    assert!(later.0 <= text.0, "the idle gateway's code came back: {text:?} then {later:?}");
    let exec = |path: &str| {
        airlock(&["exec", &sandbox, "--", "python3", CLIENT_INSIDE, "get", "r", name, &http.to_string(), path])
    };
    let first = exec("/exec-1");
    let second = exec("/exec-2");
    let proxy =
        airlock(&["exec", &sandbox, "--", "curl", "-sS", "-m", "10", &format!("http://{name}:{http}/exec-proxy")]);
    let stopped = airlock(&["stop", &sandbox]);
    // The gateway's decisions are records of the sandbox's own hash-chained log, beside its lifecycle and execs.
    let verified = airlock(&["logs", &sandbox, "--verify"]);
    let logged = airlock(&["logs", &sandbox, "--json"]);
    let _ = airlock(&["rm", &sandbox]);
    ok(&verified);
    let records: Vec<serde_json::Value> = stdout(&logged).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let network: Vec<_> = records.iter().filter(|r| r["kind"] == "network").collect();
    assert!(network.iter().filter(|r| r["name"] == name && r["decision"] == "allowed").count() >= 3, "{records:#?}");
    assert!(records.iter().any(|r| r["kind"] == "exec"), "execs in the same log: {records:#?}");
    assert_eq!(result(&ok(&first), "r"), "HTTP/1.1 200 OK | hello from http /exec-1");
    assert_eq!(result(&ok(&second), "r"), "HTTP/1.1 200 OK | hello from http /exec-2");
    assert!(ok(&proxy).contains("hello from http /exec-proxy"), "exec gets the proxy variables too");
    ok(&stopped);
    let events = audit_events(&dir);
    assert!(events.iter().all(|e| e["sandbox"] == sandbox.as_str()), "{events:#?}");
    assert!(events_for(&events, name, "allowed").len() >= 3, "{events:#?}");
    assert_no_gateway_left(&sandbox);
}

#[test]
fn a_connection_open_when_the_sandbox_ends_is_recorded_with_its_bytes() {
    require_network_tools!();
    let name = "allowed-open-at-end.test";
    let _hosts = HostNames::add(HOSTS_MARK, &[name]);
    let dir = test_dir("net-open-at-end");
    let servers = Servers::start(&dir);
    let hold = servers.hold;
    // The client moves 100 bytes out and 1000 in, then leaves the connection to a child that outlives the
    // command; the sandbox's init kills it at the end. The server never closes its side: the relay is still open
    // when the supervisor stops the gateway (SIGTERM), which must record it then.
    let script = format!("python3 {CLIENT_INSIDE} hold held {name} {hold}");
    let o = run_script(&dir, &[format!("{name}:{hold}")], &script);
    assert_eq!(result(&ok(&o), "held"), "1000", "{}", stderr(&o));
    let log = servers.log();
    assert!(log.contains("hold got 100"), "{log}");

    let events = audit_events(&dir);
    let closed: Vec<_> = events_for(&events, name, "allowed").into_iter().filter(|e| e["protocol"] == "tcp").collect();
    assert_eq!(closed.len(), 1, "one record for the connection: {events:#?}");
    let e = closed[0];
    assert_eq!(e["port"], hold, "{e}");
    assert_eq!(e["address"], "127.0.0.1", "{e}");
    assert_eq!((e["bytes_out"].as_u64(), e["bytes_in"].as_u64()), (Some(100), Some(1000)), "{e}");
    let reason = e["reason"].as_str().unwrap();
    assert_eq!(reason, format!("allowed by {name}:{hold}; still open when the sandbox ended, closed"));
    assert_no_gateway_left(name);
}

#[test]
fn sandbox_sees_its_own_name_files_and_proxy_variables() {
    require_network_tools!();
    let name = "allowed-files.test";
    let _hosts = HostNames::add(HOSTS_MARK, &[name]);
    let dir = test_dir("net-files");
    let mut args = net_args(&dir, &[name.to_string()]);
    args.extend(["--env", "NO_PROXY=mine", "--", "/bin/sh", "-c"].map(String::from));
    args.push(
        "cat /etc/hosts; echo ---; cat /etc/resolv.conf; echo ---; env | sort | grep -i _proxy; ip -4 route".into(),
    );
    let o = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let out = ok(&o);
    let mut parts = out.split("---\n");
    let hosts = parts.next().unwrap();
    assert!(!hosts.contains(name) && !hosts.contains(HOSTS_MARK), "the host's /etc/hosts leaked: {hosts}");
    assert!(hosts.contains("localhost"), "{hosts}");
    assert_eq!(
        parts.next().unwrap().lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>(),
        ["nameserver 198.18.0.1"]
    );
    let rest = parts.next().unwrap();
    for key in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
        assert!(rest.contains(&format!("{key}=http://198.18.0.1:3128\n")), "{rest}");
    }
    assert!(rest.contains("NO_PROXY=mine\n"), "--env overrides airlock's value: {rest}");
    assert!(rest.contains("default via 198.18.0.1 dev airlock0"), "{rest}");
    // The files cannot be changed from inside.
    let o = run(&["--allow", name, "--", "/bin/sh", "-c", "echo x >> /etc/hosts || echo x >> /etc/resolv.conf"]);
    assert_ne!(code(&o), 0, "{}", stdout(&o));
}

#[test]
fn a_refusal_tells_the_client_why() {
    require_network_tools!();
    let (allowed, denied) = ("allowed-why.test", "denied-why.test");
    let _hosts = HostNames::add(HOSTS_MARK, &[allowed, denied]);
    let dir = test_dir("net-why");
    let servers = Servers::start(&dir);
    let (http, tls) = (servers.http, servers.tls);
    let allow = vec![format!("{allowed}:{http}"), format!("{allowed}:{tls}")];
    // Through the proxy (HTTPS_PROXY and HTTP_PROXY are set inside): the refused CONNECT's and the refused
    // request's headers name the reason (`curl -v` prints them), the plain 403 has it in its body too. Straight to
    // an allowed name's address with a refused SNI (no HTTP to answer in): a TLS alert, not a bare reset.
    let script = format!(
        "curl -sS -v -k -m 10 https://{denied}:{tls}/connect-why 2>&1; echo connect: $?
         echo ---
         curl -sS -i -m 10 http://{denied}:{http}/plain-why 2>&1; echo plain: $?
         echo ---
         IP=$(python3 {CLIENT_INSIDE} resolve ip {allowed} | sed 's/^ip: //')
         curl -sS -k --noproxy '*' -m 10 --resolve {denied}:{tls}:$IP https://{denied}:{tls}/sni-why 2>&1; echo sni: $?"
    );
    let o = run_script(&dir, &allow, &script);
    let out = ok(&o);
    let mut parts = out.split("---\n");
    let (connect, plain, sni) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
    let header = format!("X-Airlock-Denied: {denied} not in the allow-list");
    assert!(connect.contains("403"), "{connect}");
    assert!(connect.contains(&header), "the CONNECT refusal names its reason:\n{connect}");
    assert_ne!(result(connect, "connect"), "0", "{connect}");
    assert!(plain.contains("HTTP/1.1 403 Forbidden"), "{plain}");
    assert!(plain.contains(&header), "{plain}");
    assert!(plain.contains(&format!("blocked by network policy: {denied} is not allowed")), "{plain}");
    assert!(plain.contains(&format!("--allow {denied}")), "the body says how to allow it: {plain}");
    assert!(sni.contains("access denied"), "a refused SNI gets a TLS access_denied alert:\n{sni}");
    assert_ne!(result(sni, "sni"), "0", "{sni}");
    // None of it reached the server; all of it is in the audit log.
    let log = servers.log();
    assert!(!log.contains("why"), "{log}");
    let events = audit_events(&dir);
    let refused = events_for(&events, denied, "denied");
    for protocol in ["proxy-connect", "proxy-http", "tls"] {
        assert!(refused.iter().any(|e| e["protocol"] == protocol), "no {protocol} refusal: {events:#?}");
    }
    assert_no_gateway_left(allowed);
}

#[test]
fn net_none_says_so_in_resolv_conf() {
    require_sandbox!();
    let o = run(&["--net", "none", "--", "/bin/cat", "/etc/resolv.conf"]);
    let out = ok(&o);
    assert!(
        out.contains("# airlock: --net none: no network by policy; see --net allow / --allow"),
        "resolv.conf under --net none: {out:?}"
    );
    assert!(!out.lines().any(|l| l.starts_with("nameserver")), "no nameserver to try: {out:?}");
    // The default is --net none too.
    let o = run(&["--", "/bin/cat", "/etc/resolv.conf"]);
    assert!(ok(&o).contains("no network by policy"), "{}", stdout(&o));
}

#[test]
fn net_host_warns_and_net_none_has_no_gateway() {
    require_sandbox!();
    let o = run(&["--net", "host", "--", "/bin/true"]);
    ok(&o);
    assert!(stderr(&o).starts_with("airlock: warning: --net host"), "{}", stderr(&o));
    let o = run(&["--", "/bin/sh", "-c", "cat /sys/class/net/airlock0/mtu 2>/dev/null || echo none"]);
    assert_eq!(ok(&o).trim(), "none");
}

#[test]
fn malformed_allow_entries_fail_closed() {
    for bad in ["*.", "**.com", "example.com:70000", "example.com:0", "https://example.com", "a.*.com", "10.0.0.0/8"] {
        let o = run(&["--allow", bad, "--", "/bin/true"]);
        assert_eq!(code(&o), 125, "{bad}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.starts_with("airlock: ") && err.lines().count() == 1, "{bad}: one line: {err}");
        assert!(err.contains("invalid allow entry"), "{bad}: {err}");
    }
    let o = run(&["--net", "allow", "--", "/bin/true"]);
    assert_eq!(code(&o), 125, "allow with no entries: {}", stderr(&o));
}

#[test]
fn an_audit_file_that_cannot_be_opened_stops_the_run() {
    require_sandbox!();
    let dir = TempDir::new("net-audit");
    let o = run(&["--allow", "example.com", "--audit", dir.str(), "--", "/bin/echo", "ran"]);
    assert_eq!(code(&o), 125, "{}", stderr(&o));
    assert!(stdout(&o).is_empty(), "nothing runs");
    let err = stderr(&o);
    assert!(err.starts_with("airlock: cannot open the audit log"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn ctrl_c_at_the_terminal_is_for_the_command_not_the_gateway() {
    require_network_tools!();
    let name = "allowed-sigint.test";
    let _hosts = HostNames::add(HOSTS_MARK, &[name]);
    let dir = test_dir("net-sigint");
    let servers = Servers::start(&dir);
    let http = servers.http;
    let mut args = net_args(&dir, &[format!("{name}:{http}")]);
    // The command ignores SIGINT, as a REPL would; its network must keep working after a Ctrl-C.
    let script =
        format!("trap '' INT; echo started; sleep 1; python3 {CLIENT_INSIDE} get after {name} {http} /after-int");
    args.extend(["--".to_string(), "/bin/sh".to_string(), "-c".to_string(), script]);
    let uid = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap();
    let mut child = Command::new(airlock_path())
        .arg("run")
        .args(&args)
        .env("AIRLOCK_STATE_DIR", test_state_dir(uid))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A foreground job of its own, as in a shell: the terminal's SIGINT goes to the whole group.
        .process_group(0)
        .spawn()
        .unwrap();
    // Once the command runs (the sandbox and its gateway are set up), Ctrl-C.
    let mut lines = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    lines.read_line(&mut first).unwrap();
    assert_eq!(first, "started\n");
    let group = format!("-{}", child.id());
    assert!(Command::new("kill").args(["-INT", "--", &group]).status().unwrap().success());
    let mut out = String::new();
    std::io::Read::read_to_string(&mut lines, &mut out).unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), 0, "{out}\n{}", stderr(&o));
    assert_eq!(result(&out, "after"), "HTTP/1.1 200 OK | hello from http /after-int", "{}", stderr(&o));
}

#[test]
fn learn_mode_suggests_the_domain_the_gateway_refused() {
    require_network_tools!();
    let (allowed, denied) = ("allowed-learn.test", "denied-learn.test");
    let _hosts = HostNames::add(HOSTS_MARK, &[allowed, denied]);
    let dir = test_dir("net-learn");
    let servers = Servers::start(&dir);
    let http = servers.http.to_string();
    let client = format!("{}:{CLIENT_INSIDE}", dir.path().join("net_client.py").display());
    let entry = format!("{allowed}:{http}");
    let o = run(&[
        "--learn",
        "--rm",
        "--allow",
        &entry,
        "--ro-bind",
        &client,
        "--",
        "python3",
        CLIENT_INSIDE,
        "get",
        "r",
        denied,
        &http,
        "/learn",
    ]);
    let err = stderr(&o);
    // The name was refused at DNS, before any port was tried: the suggestion names the domain.
    assert!(err.contains("[network]") && err.contains(&format!("\"{denied}")), "{err}");
    assert!(!servers.log().contains("/learn"), "the denied request never reached the host");
}
