//! A real `airlock serve` for the tests, and a small blocking HTTP/1.1 client over its real Unix socket (or TCP):
//! requests with a Content-Length body, answers with a Content-Length or chunked body, and JSON lines read as
//! they arrive.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{airlock_path, TempDir};

/// A daemon started for one test; killed (and its sandboxes stopped and removed) on drop.
pub struct Daemon {
    pub dir: TempDir,
    pub socket: PathBuf,
    pub state: PathBuf,
    pub child: Option<Child>,
    extra: Vec<String>,
    /// Run as this user (rootless), through `runuser`.
    user: Option<String>,
}

impl Daemon {
    pub fn start(tag: &str, extra: &[&str]) -> Daemon {
        Daemon::start_as(tag, extra, None)
    }

    pub fn start_as(tag: &str, extra: &[&str], user: Option<&str>) -> Daemon {
        let dir = TempDir::new(tag);
        if user.is_some() {
            dir.chown_to_test_user();
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let socket = dir.path().join("airlock.sock");
        let state = dir.path().join("state");
        let mut d = Daemon {
            dir,
            socket,
            state,
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            user: user.map(str::to_string),
        };
        d.spawn();
        d
    }

    /// Starts (again) the daemon process with the same socket, state and flags.
    pub fn spawn(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--socket".into(),
            self.socket.display().to_string(),
            "--state-dir".into(),
            self.state.display().to_string(),
        ];
        args.extend(self.extra.iter().cloned());
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("serve.log")).unwrap();
        let mut cmd = match &self.user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(airlock_path()).args(&args);
                c
            }
            None => {
                let mut c = Command::new(airlock_path());
                c.args(&args);
                c
            }
        };
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).env_remove("AIRLOCK_HOST");
        if self.user.is_some() {
            cmd.env("XDG_RUNTIME_DIR", self.dir.path());
        }
        self.child = Some(cmd.spawn().expect("spawn airlock serve"));
        let started = Instant::now();
        while !self.socket.exists() || UnixStream::connect(&self.socket).is_err() {
            if started.elapsed() > Duration::from_secs(20) {
                panic!("airlock serve did not start: {}", self.log());
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("airlock serve exited with {status}: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The daemon's own pid (under runuser: the airlock child of runuser).
    pub fn pid(&self) -> i32 {
        let top = self.child.as_ref().unwrap().id() as i32;
        if self.user.is_none() {
            return top;
        }
        let children = std::fs::read_to_string(format!("/proc/{top}/task/{top}/children")).unwrap_or_default();
        children.split_whitespace().next().map_or(top, |p| p.parse().unwrap())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// `kill -9` of the daemon process alone (its sandboxes' supervisors are their own process groups).
    pub fn kill9(&mut self) {
        let pid = self.pid();
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    pub fn client(&self) -> Client {
        Client { target: Target::Unix(self.socket.clone()), token: None }
    }

    /// `airlock ARGS` with the daemon's state directory (as the daemon's user).
    pub fn airlock(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = match &self.user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(airlock_path());
                c
            }
            None => Command::new(airlock_path()),
        };
        cmd.args(args).env("AIRLOCK_STATE_DIR", &self.state).env_remove("AIRLOCK_HOST").stdin(Stdio::null());
        cmd.output().unwrap()
    }

    /// Names of the sandboxes in the daemon's state directory.
    pub fn sandbox_dirs(&self) -> Vec<String> {
        match std::fs::read_dir(self.state.join("sandboxes")) {
            Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
            Err(_) => Vec::new(),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            // The daemon itself: under runuser that is runuser's child, which a kill of runuser would leave
            // running (its parent gone, reparented to init).
            let pid = self.pid();
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Whatever the test left (kept, running, pooled): stopped and removed, so nothing leaks past a failure.
        for name in self.sandbox_dirs() {
            let _ = self.airlock(&["stop", &name]);
            let _ = self.airlock(&["rm", &name]);
        }
    }
}

#[derive(Clone, Debug)]
pub enum Target {
    Unix(PathBuf),
    Tcp(String),
}

#[derive(Clone, Debug)]
pub struct Client {
    pub target: Target,
    pub token: Option<String>,
}

/// An answer read to its end.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The error code of an error answer, checking the error shape.
    #[track_caller]
    pub fn error_code(&self) -> String {
        let v = self.json();
        let code = v["error"]["code"].as_str().unwrap_or_else(|| panic!("no error.code in {v}")).to_string();
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "no error.message in {v}");
        code
    }
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// An answer whose body is read as it arrives (chunked or not).
pub struct Streaming {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    reader: BufReader<Box<dyn Stream>>,
    chunked: bool,
    remaining: Option<usize>,
    chunk_left: usize,
    done: bool,
}

impl Streaming {
    fn read_some(&mut self, max: usize) -> Vec<u8> {
        if self.done {
            return Vec::new();
        }
        if !self.chunked {
            let want = self.remaining.map_or(max, |r| r.min(max));
            if want == 0 {
                self.done = true;
                return Vec::new();
            }
            let mut buf = vec![0u8; want];
            let n = self.reader.read(&mut buf).unwrap_or(0);
            buf.truncate(n);
            if n == 0 {
                self.done = true;
            }
            if let Some(r) = &mut self.remaining {
                *r -= n;
            }
            return buf;
        }
        if self.chunk_left == 0 {
            let mut line = String::new();
            if self.reader.read_line(&mut line).unwrap_or(0) == 0 {
                self.done = true;
                return Vec::new();
            }
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
            if size == 0 {
                let mut trailer = String::new();
                let _ = self.reader.read_line(&mut trailer);
                self.done = true;
                return Vec::new();
            }
            self.chunk_left = size;
        }
        let mut buf = vec![0u8; self.chunk_left.min(max)];
        let n = self.reader.read(&mut buf).unwrap_or(0);
        buf.truncate(n);
        if n == 0 {
            self.done = true;
            return buf;
        }
        self.chunk_left -= n;
        if self.chunk_left == 0 {
            let mut crlf = [0u8; 2];
            let _ = self.reader.read_exact(&mut crlf);
        }
        buf
    }

    /// The rest of the body.
    pub fn read_all(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let part = self.read_some(65536);
            if part.is_empty() {
                return out;
            }
            out.extend(part);
        }
    }

    /// The JSON lines of the body, as they arrive; `None` at the end.
    pub fn lines(self) -> JsonLines {
        JsonLines { inner: self, pending: Vec::new() }
    }
}

pub struct JsonLines {
    inner: Streaming,
    pending: Vec<u8>,
}

impl Iterator for JsonLines {
    type Item = Value;

    fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(at) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=at).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Some(
                    serde_json::from_slice(&line)
                        .unwrap_or_else(|e| panic!("not a JSON line ({e}): {}", String::from_utf8_lossy(&line))),
                );
            }
            let part = self.inner.read_some(65536);
            if part.is_empty() {
                return None;
            }
            self.pending.extend(part);
        }
    }
}

impl Client {
    pub fn tcp(addr: &str, token: Option<&str>) -> Client {
        Client { target: Target::Tcp(addr.to_string()), token: token.map(str::to_string) }
    }

    fn connect(&self) -> Box<dyn Stream> {
        match &self.target {
            Target::Unix(p) => {
                let s = UnixStream::connect(p).unwrap_or_else(|e| panic!("connect {}: {e}", p.display()));
                s.set_read_timeout(Some(Duration::from_secs(180))).unwrap();
                Box::new(s)
            }
            Target::Tcp(a) => {
                let s = TcpStream::connect(a).unwrap_or_else(|e| panic!("connect {a}: {e}"));
                s.set_read_timeout(Some(Duration::from_secs(180))).unwrap();
                Box::new(s)
            }
        }
    }

    /// Sends a request and reads the status line and headers; the body is read by the caller.
    pub fn start(&self, method: &str, path: &str, body: &[u8], headers: &[(&str, &str)]) -> Streaming {
        let mut stream = self.connect();
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        if !body.is_empty() || matches!(method, "POST" | "PUT") {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        if let Some(t) = &self.token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        // A server may answer (e.g. 400 or 401) before reading a large body: write errors are not the test's.
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(body);
        let mut reader = BufReader::new(stream);
        let mut status_line = String::new();
        reader.read_line(&mut status_line).unwrap();
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?} for {method} {path}"));
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let get = |name: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
        let chunked = get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        let remaining = get("content-length").and_then(|v| v.parse().ok());
        let done = method == "HEAD" || status == 204 || status == 304;
        Streaming { status, headers, reader, chunked, remaining, chunk_left: 0, done }
    }

    pub fn request(&self, method: &str, path: &str, body: &[u8], headers: &[(&str, &str)]) -> Answer {
        let mut s = self.start(method, path, body, headers);
        let body = s.read_all();
        Answer { status: s.status, headers: std::mem::take(&mut s.headers), body }
    }

    pub fn get(&self, path: &str) -> Answer {
        self.request("GET", path, b"", &[])
    }

    pub fn delete(&self, path: &str) -> Answer {
        self.request("DELETE", path, b"", &[])
    }

    pub fn post(&self, path: &str, body: &Value) -> Answer {
        self.request("POST", path, body.to_string().as_bytes(), &[("Content-Type", "application/json")])
    }

    pub fn post_raw(&self, path: &str, body: &[u8]) -> Answer {
        self.request("POST", path, body, &[("Content-Type", "application/json")])
    }

    /// A created sandbox's name (asserting 201).
    #[track_caller]
    pub fn create(&self, body: &Value) -> String {
        let a = self.post("/v1/sandboxes", body);
        assert_eq!(a.status, 201, "create {body}: {}", a.text());
        a.json()["name"].as_str().unwrap().to_string()
    }

    /// A wait-for-result exec's answer object (asserting 200).
    #[track_caller]
    pub fn exec(&self, name: &str, body: &Value) -> Value {
        let a = self.post(&format!("/v1/sandboxes/{name}/exec"), body);
        assert_eq!(a.status, 200, "exec {body} in {name}: {}", a.text());
        a.json()
    }

    /// `sh -c SCRIPT`'s stdout (asserting exit 0).
    #[track_caller]
    pub fn sh(&self, name: &str, script: &str) -> String {
        let v = self.exec(name, &serde_json::json!({ "cmd": ["sh", "-c", script] }));
        assert_eq!(v["exit_code"], 0, "{script}: {v}");
        v["stdout"].as_str().unwrap().to_string()
    }
}

/// Waits until `cond` holds (panics after `secs`).
#[track_caller]
pub fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        if started.elapsed() > Duration::from_secs(secs) {
            panic!("timed out after {secs}s waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The file mode of `path`.
pub fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}
