//! `airlock run --isolation vm --allow ...`: a real QEMU guest (TCG, as tests/vm.rs explains) whose only NIC
//! leads to the network gateway on the host. The servers are the test's own, on the host's loopback, reached by
//! names the test adds to the host's `/etc/hosts` (the gateway resolves allowed names with the host's resolver),
//! as tests/network.rs does for namespaces. One guest boot per test that needs one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/hosts.rs"]
mod hosts;
mod vm_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{airlock_path, code, stderr, stdout, TempDir};
use hosts::HostNames;

/// Marks the lines these tests add to the host's /etc/hosts (tests/network.rs has its own mark).
const HOSTS_MARK: &str = "# airlock-vm-net-test";

/// The VM tests' state directory, shared with tests/vm.rs (the initramfs cache in it is built once).
fn state_dir() -> PathBuf {
    std::env::temp_dir().join("airlock-vm-test-state")
}

/// Why this test can't run, if it can't: what every VM test needs (`vm_support::missing`), and curl.
fn missing() -> Option<String> {
    vm_support::missing().or_else(|| {
        (!Path::new("/usr/bin/curl").exists())
            .then(|| "/usr/bin/curl is missing (scripts/setup-debian installs it)".into())
    })
}

macro_rules! require_vm_and_curl {
    () => {
        if let Some(why) = missing() {
            skip_or_fail!("{why}");
        }
        eprintln!("vm test: accel tcg (emulated): this host's KVM may be PVM, which Debian's kernel cannot boot on");
    };
}

/// The variable that marks the processes of one test's run (QEMU and the gateway inherit airlock's environment).
const MARKER_VARIABLE: &str = "AIRLOCK_VM_NET_TEST";

/// `airlock ARGS`, its processes marked with `marker` (see [`processes_with`]).
fn airlock_cmd(args: &[&str], marker: &str) -> Command {
    let mut cmd = Command::new(airlock_path());
    cmd.args(args)
        .env("AIRLOCK_STATE_DIR", state_dir())
        .env("AIRLOCK_VM_ACCEL", "tcg")
        .env_remove("AIRLOCK_VM_KERNEL")
        .env(MARKER_VARIABLE, marker);
    cmd
}

fn vm(args: &[&str], marker: &str) -> Output {
    airlock_cmd(args, marker).stdin(Stdio::null()).output().unwrap()
}

/// An HTTP server on the host's loopback: answers `hello from vm-net PATH` and keeps each request line.
struct HttpServer {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
}

impl HttpServer {
    fn start() -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let kept = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let kept = kept.clone();
                std::thread::spawn(move || serve(stream, &kept));
            }
        });
        HttpServer { port, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve(stream: TcpStream, requests: &Mutex<Vec<String>>) {
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) | Err(_) => return,
            Ok(_) if header.trim().is_empty() => break,
            Ok(_) => {}
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("").to_string();
    requests.lock().unwrap().push(request_line.trim().to_string());
    let body = format!("hello from vm-net {}\n", path.rsplit_once("//").map_or(path.as_str(), |(_, p)| p));
    let reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    let _ = (&stream).write_all(reply.as_bytes());
}

/// A listener on the host's loopback that counts the connections it gets (it must get none).
fn counting_listener() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (port, count)
}

/// The line `LABEL: ...` of the guest's output.
fn result<'a>(out: &'a str, label: &str) -> &'a str {
    let prefix = format!("{label}: ");
    out.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap_or_else(|| panic!("no {label} in:\n{out}"))
}

fn audit_events(file: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l:?}: {e}"))).collect()
}

/// The processes running `program` whose environment has the test's `marker` (see [`airlock_cmd`]).
fn processes_with(program: &str, marker: &str) -> Vec<String> {
    let variable = format!("{MARKER_VARIABLE}={marker}");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.parse::<u32>().is_ok()))
        .filter_map(|e| {
            let cmdline = String::from_utf8_lossy(&std::fs::read(e.path().join("cmdline")).ok()?).replace('\0', " ");
            let environ = std::fs::read(e.path().join("environ")).ok()?;
            let marked = environ.split(|b| *b == 0).any(|v| v == variable.as_bytes());
            (cmdline.contains(program) && marked).then(|| format!("{}: {cmdline}", e.file_name().to_string_lossy()))
        })
        .collect()
}

/// No gateway and no QEMU of `marker`'s run is left (given a moment: the last ones are reaped as the run ends).
fn assert_nothing_left(marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let gateways = processes_with("airlock-netgw", marker);
        let qemus = processes_with("qemu-system", marker);
        if gateways.is_empty() && qemus.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "left behind: gateways {gateways:?}, QEMUs {qemus:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_allowed_destination_is_reached_from_the_guest_and_refused_ones_are_not() {
    require_vm_and_curl!();
    let pid = std::process::id();
    let (allowed, denied) = (format!("allowed-vmnet-{pid}.test"), format!("denied-vmnet-{pid}.test"));
    // Both names lead to the host's loopback: only the gateway's allow-list keeps the guest from the second.
    let _hosts = HostNames::add(HOSTS_MARK, &[&allowed, &denied]);
    let server = HttpServer::start();
    let (other_port, other_connections) = counting_listener();
    let port = server.port;
    let dir = TempDir::new("vm-net");
    let audit = dir.path().join("audit.jsonl");
    let script = format!(
        "grep -c '^nameserver 198.18.0.1$' /etc/resolv.conf | sed 's/^/resolv: /'
         echo proxy-variable: $HTTP_PROXY
         curl -sS --noproxy '*' -m 30 http://{allowed}:{port}/direct; echo direct: $?
         curl -sS -m 30 http://{allowed}:{port}/proxy; echo proxy: $?
         curl -sS --noproxy '*' -m 10 http://{allowed}:{other_port}/other-port; echo other-port: $?
         curl -sS --noproxy '*' -m 10 http://{denied}:{port}/other-name; echo other-name: $?
         curl -sSf -m 10 http://{denied}:{port}/other-name-proxy; echo other-name-proxy: $?"
    );
    let allow = format!("{allowed}:{port}");
    let o = vm(
        &[
            "run",
            "--isolation",
            "vm",
            "--allow",
            &allow,
            "--audit",
            audit.to_str().unwrap(),
            "--",
            "/bin/sh",
            "-c",
            &script,
        ],
        &allowed,
    );
    let out = stdout(&o);
    assert_eq!(code(&o), 0, "stdout: {out}\nstderr: {}", stderr(&o));
    assert_eq!(result(&out, "resolv"), "1", "the guest's resolver is the gateway:\n{out}");
    assert_eq!(result(&out, "proxy-variable"), "http://198.18.0.1:3128", "{out}");
    for path in ["direct", "proxy"] {
        assert_eq!(result(&out, path), "0", "{out}\n{}", stderr(&o));
        assert!(out.contains(&format!("hello from vm-net /{path}")), "{out}");
    }
    for refused in ["other-port", "other-name", "other-name-proxy"] {
        assert_ne!(result(&out, refused), "0", "{refused} was reached:\n{out}");
    }
    assert!(!out.contains("hello from vm-net /other"), "{out}");
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "the server saw only the allowed requests: {requests:?}");
    assert!(requests.iter().any(|r| r.contains("/direct")) && requests.iter().any(|r| r.contains("/proxy")));
    assert_eq!(other_connections.load(Ordering::SeqCst), 0, "the other port was reached");

    // Every attempt is in the audit log, as the gateway records it for namespaces.
    let events = audit_events(&audit);
    let network: Vec<_> = events.iter().filter(|e| e["kind"] == "network").collect();
    let has = |name: &str, decision: &str, what: &dyn Fn(&serde_json::Value) -> bool| {
        network.iter().any(|e| e["name"] == name && e["decision"] == decision && what(e))
    };
    assert!(has(&allowed, "allowed", &|e| e["protocol"] == "dns"), "no DNS answer recorded: {network:#?}");
    assert!(
        has(&allowed, "allowed", &|e| e["protocol"] == "http" && e["bytes_in"].as_u64().unwrap_or(0) > 0),
        "no direct connection with its bytes: {network:#?}"
    );
    assert!(has(&allowed, "allowed", &|e| e["protocol"] == "proxy-http"), "no proxied request: {network:#?}");
    assert!(has(&allowed, "denied", &|e| e["port"] == other_port), "no refusal of the other port: {network:#?}");
    assert!(has(&denied, "denied", &|_| true), "no refusal of the other name: {network:#?}");
    for e in &network {
        assert!(e["sandbox"].as_str().is_some_and(|s| !s.is_empty()), "{e}");
    }
    // The gateway's records and the guest's execs (written by airlock on the host) share one hash chain.
    assert!(events.iter().any(|e| e["kind"] == "exec"), "no exec record of the guest: {events:#?}");
    assert!(audit::verify(&audit).unwrap().ok(), "the chain is broken: {events:#?}");
    assert_nothing_left(&allowed);
}

/// `create --isolation vm --allow`: the held guest's NIC is served by the gateway between execs, and `stop`
/// ends both QEMU and the gateway.
#[test]
fn a_created_vm_reaches_an_allowed_destination_from_each_exec() {
    require_vm_and_curl!();
    let pid = std::process::id();
    let allowed = format!("held-vmnet-{pid}.test");
    let _hosts = HostNames::add(HOSTS_MARK, &[&allowed]);
    let server = HttpServer::start();
    let (other_port, other_connections) = counting_listener();
    let port = server.port;
    let name = format!("vmnet-held-{pid}");
    let allow = format!("{allowed}:{port}");
    let o = vm(&["create", "--isolation", "vm", "--allow", &allow, &name], &allowed);
    assert_eq!(code(&o), 0, "create: {}", stderr(&o));
    let exec = |url: &str| vm(&["exec", &name, "--", "curl", "-sS", "--noproxy", "*", "-m", "20", url], &allowed);
    for round in ["first", "second"] {
        let o = exec(&format!("http://{allowed}:{port}/{round}"));
        assert_eq!(code(&o), 0, "{round} exec: {}\n{}", stdout(&o), stderr(&o));
        assert!(stdout(&o).contains(&format!("hello from vm-net /{round}")), "{}", stdout(&o));
    }
    let o = exec(&format!("http://{allowed}:{other_port}/other-port"));
    assert_ne!(code(&o), 0, "the other port was reached: {}", stdout(&o));
    assert_eq!(other_connections.load(Ordering::SeqCst), 0, "the other port was reached");
    assert_eq!(server.requests().len(), 2, "{:?}", server.requests());
    assert!(!processes_with("airlock-netgw", &allowed).is_empty(), "the held VM has no gateway");
    let o = vm(&["stop", &name], &allowed);
    assert_eq!(code(&o), 0, "stop: {}", stderr(&o));
    assert_nothing_left(&allowed);
    let o = vm(&["rm", &name], &allowed);
    assert_eq!(code(&o), 0, "rm: {}", stderr(&o));
}

#[test]
fn net_host_is_refused_for_a_vm_and_says_why() {
    // Refused before anything starts: no QEMU, kernel or root needed.
    let o = vm(&["run", "--isolation", "vm", "--net", "host", "--", "/bin/true"], "net-host");
    assert_eq!(code(&o), 125, "stdout: {}\nstderr: {}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    // One line: no "shares the host's network" warning for a run that will not happen.
    let error = err.lines().collect::<Vec<_>>();
    assert_eq!(error.len(), 1, "one error line: {err}");
    assert!(error[0].contains("--net host") && error[0].contains("the guest the host's network"), "{err}");
}

/// airlock killed mid-run: its gateway and its QEMU die with it (PR_SET_PDEATHSIG), nothing is left serving.
#[test]
fn a_killed_airlock_leaves_no_gateway_and_no_qemu() {
    require_vm_and_curl!();
    let name = format!("killed-vmnet-{}.test", std::process::id());
    let allow = format!("{name}:1");
    let args = ["run", "--isolation", "vm", "--allow", &allow, "--", "/bin/sh", "-c", "echo up; sleep 120"];
    let mut child =
        airlock_cmd(&args, &name).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut first = [0u8; 3];
    out.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"up\n");
    assert_eq!(processes_with("airlock-netgw", &name).len(), 1, "one gateway while the guest runs");
    assert_eq!(processes_with("qemu-system", &name).len(), 1, "one QEMU while the guest runs");
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "SIGKILL");
    assert_nothing_left(&name);
}

/// Rootless: a user's VM gets the same gateway (run as that user, QEMU too).
#[test]
fn a_users_vm_reaches_an_allowed_destination_through_the_gateway() {
    require_vm_and_curl!();
    let Some(_) = common::test_user() else {
        skip_or_fail!("cannot create the test user");
    };
    let name = format!("user-vmnet-{}.test", std::process::id());
    let _hosts = HostNames::add(HOSTS_MARK, &[&name]);
    let server = HttpServer::start();
    let dir = TempDir::new("vm-net-user");
    std::os::unix::fs::chown(dir.path(), Some(common::test_user_uid()), None).unwrap();
    let allow = format!("{name}:{}", server.port);
    let script = format!("curl -sS --noproxy '*' -m 30 http://{allow}/user; echo user: $?");
    let o = common::airlock_as_user_in(
        &dir.path().join("state"),
        &["AIRLOCK_VM_ACCEL=tcg".to_string()],
        &["run", "--isolation", "vm", "--allow", &allow, "--", "/bin/sh", "-c", &script],
    );
    let out = stdout(&o);
    assert_eq!(code(&o), 0, "stdout: {out}\nstderr: {}", stderr(&o));
    assert_eq!(result(&out, "user"), "0", "{out}\n{}", stderr(&o));
    assert!(out.contains("hello from vm-net /user"), "{out}");
    assert_eq!(server.requests().len(), 1);
}
