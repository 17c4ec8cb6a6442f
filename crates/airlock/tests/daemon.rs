//! `airlock serve`, driven over its real socket: every endpoint, streaming, a client that disconnects, `kill -9`
//! of the daemon and a restart, races, limits, bad input, TCP with a token, lifetimes, pools, 50 concurrent
//! creates and 200 concurrent execs with nothing leaked, and the daemon run rootless.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/daemon.rs"]
mod daemon_client;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::{code, stderr, TempDir};
use daemon_client::{mode_of, wait_for, Client, Daemon};
use serde_json::{json, Value};

/// A workspace the sandbox may write (as root, the sandbox's identity maps to the test user).
fn workspace(tag: &str) -> TempDir {
    let ws = TempDir::new(tag);
    fs::write(ws.path().join("a.txt"), "original\n").unwrap();
    ws.chown_to_test_user();
    ws
}

fn unique(tag: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!("{tag}-{}-{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::SeqCst))
}

fn state_of(c: &Client, name: &str) -> String {
    let a = c.get(&format!("/v1/sandboxes/{name}"));
    assert_eq!(a.status, 200, "{}", a.text());
    a.json()["state"].as_str().unwrap().to_string()
}

#[test]
fn every_endpoint_over_the_socket() {
    require_sandbox!();
    let _user = require_test_user!();
    let d = Daemon::start("api-all", &[]);
    let c = d.client();
    let ws = workspace("api-all-ws");

    // The socket: only its owner may connect.
    assert_eq!(mode_of(&d.socket) & 0o077 & !0o060, 0, "socket mode {:o}", mode_of(&d.socket));

    let h = c.get("/v1/health");
    assert_eq!(h.status, 200);
    assert_eq!(h.json()["sandboxes"], 0);
    assert!(h.json()["version"].as_str().is_some());

    // Create: 201, the sandbox object; listed; got.
    let name = unique("all");
    let a = c.post("/v1/sandboxes", &json!({ "name": name, "workspace": ws.str(), "env": {"GREETING": "hi"} }));
    assert_eq!(a.status, 201, "{}", a.text());
    let obj = a.json();
    assert_eq!(obj["name"], name.as_str());
    assert_eq!(obj["state"], "running");
    assert_eq!(obj["workspace"], ws.str());
    assert!(obj["created"].as_f64().is_some());
    let list = c.get("/v1/sandboxes").json();
    assert!(list["sandboxes"].as_array().unwrap().iter().any(|s| s["name"] == name.as_str()));
    assert_eq!(state_of(&c, &name), "running");
    // The CLI, on the daemon's state directory, sees the same sandbox.
    assert!(common::stdout(&d.airlock(&["ls"])).contains(&name));

    // Exec, waiting: stdout, stderr, exit status, the sandbox's env plus the exec's, cwd, stdin.
    let v = c.exec(&name, &json!({ "cmd": ["sh", "-c", "echo out; echo err >&2; exit 3"] }));
    assert_eq!(
        (v["exit_code"].as_i64(), v["stdout"].as_str(), v["stderr"].as_str()),
        (Some(3), Some("out\n"), Some("err\n"))
    );
    assert_eq!(v["timed_out"], false);
    assert!(v["duration_ms"].as_u64().is_some());
    let v = c.exec(
        &name,
        &json!({ "cmd": ["sh", "-c", "echo \"$GREETING $EXTRA\"; pwd"], "env": {"EXTRA": "a\nb"}, "cwd": "/tmp" }),
    );
    assert_eq!(v["stdout"], "hi a\nb\n/tmp\n");
    // Another user inside (the sandbox was created as root: it maps 0-65535).
    let v = c.exec(&name, &json!({ "cmd": ["sh", "-c", "id -u; id -g"], "user": "1000:1001" }));
    assert_eq!(v["stdout"], "1000\n1001\n", "{v}");
    let v = c.exec(&name, &json!({ "cmd": ["cat"], "stdin": "fed through stdin" }));
    assert_eq!(v["stdout"], "fed through stdin");
    // A command that never reads a large stdin: the daemon's write fails (EPIPE), the daemon lives on.
    let v = c.exec(&name, &json!({ "cmd": ["true"], "stdin": "x".repeat(2 << 20) }));
    assert_eq!(v["exit_code"], 0);
    assert_eq!(c.get("/v1/health").status, 200, "the daemon died of SIGPIPE");
    // Bytes that are not UTF-8 come base64.
    let v = c.exec(&name, &json!({ "cmd": ["printf", "\\377\\376"] }));
    assert_eq!(v["stdout_b64"], "//4=", "{v}");
    // A per-exec timeout: the command and its background process are killed; 124.
    let started = Instant::now();
    let v = c.exec(&name, &json!({ "cmd": ["sh", "-c", "sleep 100 & echo $! > /tmp/bg; sleep 100"], "timeout": "1s" }));
    assert!(started.elapsed() < Duration::from_secs(8));
    assert_eq!((v["exit_code"].as_i64(), v["timed_out"].as_bool()), (Some(124), Some(true)), "{v}");
    let alive = "p=$(cat /tmp/bg); if [ -e /proc/$p ] && ! grep -q '^State:.*Z' /proc/$p/status; then echo alive; else echo gone; fi";
    assert_eq!(c.sh(&name, alive), "gone\n");
    // A command that cannot start.
    let v = c.exec(&name, &json!({ "cmd": ["no-such-command-here"] }));
    assert_eq!(v["exit_code"], 127);

    // Exec, streamed: started, then output as it happens, then exit.
    let s = c.start(
        "POST",
        &format!("/v1/sandboxes/{name}/exec"),
        json!({ "cmd": ["sh", "-c", "echo one; sleep 0.3; echo two >&2; exit 5"] }).to_string().as_bytes(),
        &[("Accept", "application/x-ndjson")],
    );
    assert_eq!(s.status, 200);
    let events: Vec<Value> = s.lines().collect();
    assert_eq!(events.first().unwrap()["type"], "started", "{events:?}");
    assert!(events[0]["pid"].as_i64().is_some());
    assert!(events.iter().any(|e| e["type"] == "stdout" && e["data"] == "one\n"), "{events:?}");
    assert!(events.iter().any(|e| e["type"] == "stderr" && e["data"] == "two\n"), "{events:?}");
    let last = events.last().unwrap();
    assert_eq!((last["type"].as_str(), last["exit_code"].as_i64()), (Some("exit"), Some(5)), "{events:?}");

    // The workspace: a change, then diff, checkpoint, rollback, commit, discard — on the running sandbox.
    c.sh(&name, "echo first > b.txt");
    let diff = c.get(&format!("/v1/sandboxes/{name}/diff"));
    assert_eq!(diff.status, 200);
    assert!(diff.text().contains("b.txt"), "{}", diff.text());
    let cp = c.post(&format!("/v1/sandboxes/{name}/checkpoints"), &json!({ "label": "c1" }));
    assert_eq!(cp.status, 201, "{}", cp.text());
    c.sh(&name, "echo second > b.txt; echo x > c.txt");
    let cps = c.get(&format!("/v1/sandboxes/{name}/checkpoints"));
    assert_eq!(cps.status, 200);
    assert!(cps.text().contains("c1"), "{}", cps.text());
    let rb = c.post(&format!("/v1/sandboxes/{name}/rollback"), &json!({ "label": "c1" }));
    assert_eq!(rb.status, 204, "{}", rb.text());
    assert_eq!(c.sh(&name, "cat b.txt; test -e c.txt || echo no-c"), "first\nno-c\n");
    let missing = c.post(&format!("/v1/sandboxes/{name}/rollback"), &json!({ "label": "nope" }));
    assert_eq!(missing.status, 404, "{}", missing.text());
    assert_eq!(missing.error_code(), "not_found");
    assert!(!ws.path().join("b.txt").exists(), "the host changed before a commit");
    let cm = c.post(&format!("/v1/sandboxes/{name}/commit"), &json!({}));
    assert_eq!(cm.status, 200, "{}", cm.text());
    assert!(cm.json()["committed"].as_u64().unwrap() >= 1);
    assert_eq!(fs::read_to_string(ws.path().join("b.txt")).unwrap(), "first\n");
    c.sh(&name, "echo scratch > d.txt");
    let dc = c.post(&format!("/v1/sandboxes/{name}/discard"), &json!({}));
    assert_eq!(dc.status, 200, "{}", dc.text());
    assert_eq!(c.sh(&name, "test -e d.txt && echo d || echo no-d"), "no-d\n");

    // Logs: the audit records, JSON lines; with follow, new ones arrive on an open stream.
    let logs = c.get(&format!("/v1/sandboxes/{name}/logs"));
    assert_eq!(logs.status, 200);
    let records: Vec<Value> = logs.text().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(records.len() >= 3, "{}", logs.text());
    assert!(logs.text().contains("no-such-command-here"));
    let follow = c.start("GET", &format!("/v1/sandboxes/{name}/logs?follow=true"), b"", &[]);
    assert_eq!(follow.status, 200);
    let marker = unique("marker");
    let c2 = c.clone();
    let (n2, m2) = (name.clone(), marker.clone());
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        c2.exec(&n2, &json!({ "cmd": ["echo", m2] }));
    });
    let mut lines = follow.lines();
    let seen = lines.any(|r| r.to_string().contains(&marker));
    assert!(seen, "the followed log never showed the new exec");
    drop(lines); // the client goes away mid-stream
    writer.join().unwrap();

    // Stats: a sandbox without limits has no cgroup (409, said plainly); with limits, numbers.
    let st = c.get(&format!("/v1/sandboxes/{name}/stats"));
    assert_eq!(st.status, 409, "{}", st.text());
    assert!(st.json()["error"]["message"].as_str().unwrap().contains("no resource limits"));
    let limited = c.create(&json!({ "pids": 64, "memory": "128M" }));
    let st = c.get(&format!("/v1/sandboxes/{limited}/stats"));
    assert_eq!(st.status, 200, "{}", st.text());
    assert_eq!(st.json()["memory"]["limit_bytes"], 128 << 20);
    assert_eq!(st.json()["pids"]["limit"], 64);

    // A lifetime set later.
    let t = c.post(&format!("/v1/sandboxes/{name}/timeout"), &json!({ "timeout": "1h" }));
    assert_eq!(t.status, 200, "{}", t.text());
    let left = t.json()["expires_at"].as_f64().unwrap() - common_now();
    assert!((3500.0..3700.0).contains(&left), "expires in {left}s");

    // Delete with keep: stopped, still there; then deleted: gone, 404, nothing left in the state directory.
    let a = c.delete(&format!("/v1/sandboxes/{name}?keep=true"));
    assert_eq!(a.status, 204, "{}", a.text());
    assert_eq!(state_of(&c, &name), "exited");
    let v = c.post(&format!("/v1/sandboxes/{name}/exec"), &json!({ "cmd": ["true"] }));
    assert_eq!(v.status, 409, "{}", v.text());
    assert_eq!(c.delete(&format!("/v1/sandboxes/{name}")).status, 204);
    let gone = c.get(&format!("/v1/sandboxes/{name}"));
    assert_eq!(gone.status, 404);
    assert_eq!(gone.error_code(), "not_found");
    assert!(!d.state.join("sandboxes").join(&name).exists());
    assert_eq!(c.delete(&format!("/v1/sandboxes/{limited}")).status, 204);
    assert_eq!(c.get("/v1/health").json()["sandboxes"], 0);

    // The spec names every route; unknown endpoints are the JSON 404.
    let spec = c.get("/openapi.json");
    assert_eq!(spec.status, 200);
    let paths = spec.json()["paths"].as_object().unwrap().keys().cloned().collect::<BTreeSet<_>>();
    for p in ["/v1/sandboxes", "/v1/sandboxes/{name}/exec", "/v1/pools", "/v1/health"] {
        assert!(paths.contains(p), "{p} missing from /openapi.json");
    }
    let nope = c.get("/v1/nothing-here");
    assert_eq!(nope.status, 404);
    assert_eq!(nope.error_code(), "not_found");
}

fn common_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

#[test]
fn bad_input_is_400_and_creates_nothing() {
    require_sandbox!();
    let d = Daemon::start("api-bad", &[]);
    let c = d.client();
    let long_name = "a".repeat(64 * 1024);
    let bodies: Vec<Vec<u8>> = vec![
        b"{not json".to_vec(),
        b"[1, 2]".to_vec(),
        b"[null, null]".to_vec(),
        b"null".to_vec(),
        br#"{"unknown_field": 1}"#.to_vec(),
        br#"{"name": "../escape"}"#.to_vec(),
        br#"{"name": "a/b"}"#.to_vec(),
        "{\"name\": \"nul\\u0000name\"}".as_bytes().to_vec(),
        format!("{{\"name\": \"{long_name}\"}}").into_bytes(),
        br#"{"workspace": "relative/path"}"#.to_vec(),
        br#"{"workspace": "/no/such/dir/anywhere"}"#.to_vec(),
        br#"{"memory": "lots"}"#.to_vec(),
        br#"{"net": "everything"}"#.to_vec(),
        br#"{"allow": ["bad domain!"]}"#.to_vec(),
        br#"{"env": {"BAD KEY": "v"}}"#.to_vec(),
        br#"{"timeout": "forever"}"#.to_vec(),
        br#"{"profile": "../../etc/passwd"}"#.to_vec(),
        br#"{"pool": "no-such-pool"}"#.to_vec(),
        // A huge body (over the JSON limit).
        format!("{{\"name\": \"x\", \"env\": {{\"A\": \"{}\"}}}}", "v".repeat(5 << 20)).into_bytes(),
    ];
    for body in &bodies {
        let a = c.post_raw("/v1/sandboxes", body);
        let shown = String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned();
        assert!(matches!(a.status, 400 | 404 | 413 | 422), "{shown}: {} {}", a.status, a.text());
        if a.status != 413 {
            let code = a.error_code();
            assert!(["bad_request", "not_found", "setup_failed"].contains(&code.as_str()), "{shown}: {code}");
            assert!(a.text().len() < 4096, "the error echoes the hostile input: {} bytes", a.text().len());
        }
    }
    // Hostile names in the path.
    for path in ["/v1/sandboxes/..%2F..%2Fetc", "/v1/sandboxes/a%00b", "/v1/sandboxes/%2e%2e"] {
        let a = c.get(path);
        assert!(matches!(a.status, 400 | 404), "{path}: {}", a.status);
    }
    let a = c.get(&format!("/v1/sandboxes/{long_name}"));
    assert!(matches!(a.status, 400 | 404 | 414 | 431), "{}", a.status);
    // Exec and pool bodies.
    let a = c.post("/v1/pools", &json!({ "name": "p", "size": 100000, "sandbox": {} }));
    assert_eq!(a.status, 400);
    let a = c.post("/v1/pools", &json!({ "name": "../p", "size": 1, "sandbox": {} }));
    assert_eq!(a.status, 400);
    // Nothing was created.
    assert_eq!(c.get("/v1/health").json()["sandboxes"], 0);
    assert!(d.sandbox_dirs().is_empty(), "{:?}", d.sandbox_dirs());
    assert!(c.get("/v1/pools").json()["pools"].as_array().unwrap().is_empty());

    // Exec's own bad input, on a real sandbox.
    let name = c.create(&json!({}));
    for body in [
        json!({}),
        json!({ "cmd": [] }),
        json!({ "cmd": [""] }),
        json!({ "cmd": ["true"], "cwd": "relative" }),
        json!({ "cmd": ["true"], "env": {"A=B": "1"} }),
        json!({ "cmd": ["true"], "timeout": "never" }),
        json!({ "cmd": ["true"], "user": "nobody" }),
        json!({ "cmd": ["true"], "user": "4294967295" }),
        json!({ "cmd": ["true"], "surprise": 1 }),
        json!({ "cmd": ["a\u{0}b"] }),
    ] {
        let a = c.post(&format!("/v1/sandboxes/{name}/exec"), &body);
        assert_eq!(a.status, 400, "{body}: {}", a.text());
        assert_eq!(a.error_code(), "bad_request");
    }
    assert_eq!(c.delete(&format!("/v1/sandboxes/{name}")).status, 204);
}

#[test]
fn races_are_409_and_limits_are_429() {
    require_sandbox!();
    let d = Daemon::start("api-race", &["--max-sandboxes", "2", "--max-execs", "2"]);
    let c = d.client();
    let a = c.create(&json!({}));
    let b = c.create(&json!({}));
    let third = c.post("/v1/sandboxes", &json!({}));
    assert_eq!(third.status, 429, "{}", third.text());
    assert_eq!(third.error_code(), "limit");
    assert_eq!(d.sandbox_dirs().len(), 2);

    // Two execs run; a third at once is 429; a commit while an exec runs is 409.
    let slow = |name: String, c: Client| std::thread::spawn(move || c.exec(&name, &json!({ "cmd": ["sleep", "2"] })));
    let t1 = slow(a.clone(), c.clone());
    let t2 = slow(b.clone(), c.clone());
    std::thread::sleep(Duration::from_millis(700));
    let e = c.post(&format!("/v1/sandboxes/{a}/exec"), &json!({ "cmd": ["true"] }));
    assert_eq!(e.status, 429, "{}", e.text());
    assert_eq!(e.error_code(), "limit");
    let cm = c.post(&format!("/v1/sandboxes/{a}/commit"), &json!({}));
    assert_eq!(cm.status, 409, "{}", cm.text());
    assert_eq!(cm.error_code(), "conflict");
    let cp = c.post(&format!("/v1/sandboxes/{b}/checkpoints"), &json!({ "label": "x" }));
    assert_eq!(cp.status, 409, "{}", cp.text());
    assert_eq!(t1.join().unwrap()["exit_code"], 0);
    assert_eq!(t2.join().unwrap()["exit_code"], 0);
    // Free again.
    assert_eq!(c.exec(&a, &json!({ "cmd": ["true"] }))["exit_code"], 0);

    // Two deletes at once: one 204, the other 409 (or 404 once the first is done); never a 500, never half-done.
    let (c1, c2, n1, n2) = (c.clone(), c.clone(), a.clone(), a.clone());
    let d1 = std::thread::spawn(move || c1.delete(&format!("/v1/sandboxes/{n1}")));
    let d2 = std::thread::spawn(move || c2.delete(&format!("/v1/sandboxes/{n2}")));
    let mut statuses = [d1.join().unwrap().status, d2.join().unwrap().status];
    statuses.sort();
    assert!(statuses == [204, 409] || statuses == [204, 404], "{statuses:?}");
    assert_eq!(c.get(&format!("/v1/sandboxes/{a}")).status, 404);
    assert!(!d.state.join("sandboxes").join(&a).exists());
    // A name that exists already.
    let dup = c.post("/v1/sandboxes", &json!({ "name": b }));
    assert_eq!(dup.status, 409, "{}", dup.text());
    assert_eq!(c.delete(&format!("/v1/sandboxes/{b}")).status, 204);
}

#[test]
fn a_streaming_client_that_disconnects_kills_nothing() {
    require_sandbox!();
    let d = Daemon::start("api-disc", &[]);
    let c = d.client();
    let name = c.create(&json!({}));
    let s = c.start(
        "POST",
        &format!("/v1/sandboxes/{name}/exec"),
        json!({ "cmd": ["sh", "-c", "echo begun; sleep 1.5; echo finished > /tmp/marker"] }).to_string().as_bytes(),
        &[("Accept", "application/x-ndjson")],
    );
    let mut lines = s.lines();
    assert_eq!(lines.next().unwrap()["type"], "started");
    assert_eq!(lines.next().unwrap()["data"], "begun\n");
    drop(lines);
    wait_for("the command to finish after its client left", 20, || {
        c.exec(&name, &json!({ "cmd": ["cat", "/tmp/marker"] }))["stdout"] == "finished\n"
    });
    // The daemon is fine and counts no exec still running.
    assert_eq!(c.exec(&name, &json!({ "cmd": ["echo", "ok"] }))["stdout"], "ok\n");
    assert_eq!(c.delete(&format!("/v1/sandboxes/{name}")).status, 204);
}

#[test]
fn kill_9_of_the_daemon_loses_nothing() {
    require_sandbox!();
    let _user = require_test_user!();
    let mut d = Daemon::start("api-kill", &[]);
    let c = d.client();
    let ws = workspace("api-kill-ws");
    let running = c.create(&json!({ "workspace": ws.str() }));
    c.sh(&running, "echo kept > k.txt; echo live > /tmp/t");
    let kept = c.create(&json!({ "workspace": ws.str() }));
    c.sh(&kept, "echo other > o.txt");
    assert_eq!(c.delete(&format!("/v1/sandboxes/{kept}?keep=true")).status, 204);
    let lifetime = c.create(&json!({ "timeout": "1h" }));
    let expires = c.get(&format!("/v1/sandboxes/{lifetime}")).json()["expires_at"].as_f64().unwrap();

    d.kill9();
    // The sandboxes live on without the daemon.
    let out = d.airlock(&["exec", &running, "--", "cat", "/tmp/t"]);
    assert_eq!(common::stdout(&out), "live\n", "{}", stderr(&out));

    d.spawn();
    let c = d.client();
    let names: BTreeSet<String> = c.get("/v1/sandboxes").json()["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, BTreeSet::from([running.clone(), kept.clone(), lifetime.clone()]));
    assert_eq!(state_of(&c, &running), "running");
    assert_eq!(state_of(&c, &kept), "exited");
    assert_eq!(c.get(&format!("/v1/sandboxes/{lifetime}")).json()["expires_at"].as_f64().unwrap(), expires);
    // Adopted for real: exec into it, its /tmp is the same; the kept one's changes are still there.
    assert_eq!(c.sh(&running, "cat /tmp/t k.txt"), "live\nkept\n");
    assert!(c.get(&format!("/v1/sandboxes/{kept}/diff")).text().contains("o.txt"));
    for n in [&running, &kept, &lifetime] {
        assert_eq!(c.delete(&format!("/v1/sandboxes/{n}")).status, 204);
    }
    assert!(d.sandbox_dirs().is_empty(), "{:?}", d.sandbox_dirs());
}

#[test]
fn lifetimes_and_warm_pools() {
    require_sandbox!();
    let d = Daemon::start("api-pool", &[]);
    let c = d.client();

    // A lifetime: stopped (not removed) when it runs out; a new one set from now.
    let short = c.create(&json!({ "timeout": "1s" }));
    let extended = c.create(&json!({ "timeout": "1s" }));
    assert_eq!(c.post(&format!("/v1/sandboxes/{extended}/timeout"), &json!({ "timeout": "1h" })).status, 200);
    wait_for("the lifetime to end", 20, || state_of(&c, &short) == "exited");
    assert_eq!(state_of(&c, &extended), "running");
    assert_eq!(c.delete(&format!("/v1/sandboxes/{short}")).status, 204);
    assert_eq!(c.delete(&format!("/v1/sandboxes/{extended}")).status, 204);

    // A pool of 2: filled in the background, not listed; a create takes one (fast), the pool refills.
    let p = c.post("/v1/pools", &json!({ "name": "warm", "size": 2, "sandbox": { "env": {"FROM": "pool"} } }));
    assert_eq!(p.status, 201, "{}", p.text());
    assert_eq!(c.post("/v1/pools", &json!({ "name": "warm", "size": 1, "sandbox": {} })).status, 409);
    let ready = || c.get("/v1/pools").json()["pools"][0]["ready"].as_u64().unwrap();
    wait_for("the pool to fill", 60, || ready() == 2);
    assert!(c.get("/v1/sandboxes").json()["sandboxes"].as_array().unwrap().is_empty());
    let started = Instant::now();
    let taken = c.create(&json!({ "pool": "warm", "timeout": "10m" }));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "a pooled create took {took:?}");
    assert_eq!(c.sh(&taken, "echo $FROM"), "pool\n");
    let obj = c.get(&format!("/v1/sandboxes/{taken}")).json();
    assert!(obj["expires_at"].as_f64().unwrap() > common_now() + 500.0);
    wait_for("the pool to refill", 60, || ready() == 2);
    // A pooled create takes only the pool and a timeout.
    assert_eq!(c.post("/v1/sandboxes", &json!({ "pool": "warm", "memory": "1G" })).status, 400);
    // Deleting the pool removes its ready sandboxes, not the taken one.
    assert_eq!(c.delete("/v1/pools/warm").status, 204);
    wait_for("the pool's sandboxes to go", 60, || d.sandbox_dirs().len() == 1);
    assert_eq!(state_of(&c, &taken), "running");
    assert_eq!(c.delete(&format!("/v1/sandboxes/{taken}")).status, 204);
}

#[test]
fn tcp_needs_the_token() {
    require_sandbox!();
    // --listen without a token refuses to start.
    let dir = TempDir::new("api-tcp");
    let o = common::airlock(&["serve", "--listen", "127.0.0.1:0", "--state-dir", &format!("{}/s", dir.str())]);
    assert_ne!(code(&o), 0);
    assert!(stderr(&o).contains("token"), "{}", stderr(&o));
    let short = dir.path().join("short");
    fs::write(&short, "tooshort\n").unwrap();
    let o = common::airlock(&["serve", "--listen", "127.0.0.1:0", "--token-file", short.to_str().unwrap()]);
    assert_ne!(code(&o), 0);

    let token = "s3cret-token-for-the-test-0123456789";
    let token_file = dir.path().join("token");
    fs::write(&token_file, format!("{token}\n")).unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let d = Daemon::start("api-tcp-d", &["--listen", &addr, "--token-file", token_file.to_str().unwrap()]);
    wait_for("the TCP listener", 20, || std::net::TcpStream::connect(&addr).is_ok());
    for bad in [None, Some("wrong-token-wrong-token-wrong"), Some(&token[..token.len() - 1])] {
        let c = Client::tcp(&addr, bad);
        let a = c.get("/v1/sandboxes");
        assert_eq!(a.status, 401, "{bad:?}");
        assert_eq!(a.error_code(), "unauthorized");
        assert_eq!(c.post("/v1/sandboxes", &json!({})).status, 401);
    }
    assert!(d.sandbox_dirs().is_empty(), "a 401 created something");
    let c = Client::tcp(&addr, Some(token));
    let name = c.create(&json!({}));
    assert_eq!(c.sh(&name, "echo over tcp"), "over tcp\n");
    assert_eq!(c.delete(&format!("/v1/sandboxes/{name}")).status, 204);
    // The unix socket needs no token.
    assert_eq!(d.client().get("/v1/health").status, 200);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Processes whose environment names this state directory (supervisors, inits, `airlock` children).
fn processes_of(state: &std::path::Path) -> Vec<i32> {
    let needle = format!("AIRLOCK_STATE_DIR={}", state.display());
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|kv| kv == needle.as_bytes()))
        })
        .collect()
}

fn mounts_under(dir: &std::path::Path) -> usize {
    let needle = dir.display().to_string();
    fs::read_to_string("/proc/self/mountinfo").unwrap().lines().filter(|l| l.contains(&needle)).count()
}

/// cgroup directories of sandboxes whose names start with `prefix` (v1: under each controller; v2: anywhere a
/// few levels down).
fn cgroups_named(prefix: &str) -> usize {
    let mut n = 0;
    let mut todo = vec![(std::path::PathBuf::from("/sys/fs/cgroup"), 0)];
    while let Some((dir, depth)) = todo.pop() {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            // Named `<ns>-<pid>-<start>-<sandbox name>` (unique per state directory and supervisor).
            if e.file_name().to_string_lossy().split('-').nth(3).is_some_and(|n| n.starts_with(prefix)) {
                n += 1;
            } else if depth < 4 {
                todo.push((e.path(), depth + 1));
            }
        }
    }
    n
}

fn fds_of(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

#[test]
fn fifty_creates_and_two_hundred_execs_leak_nothing() {
    require_sandbox!();
    let d = Daemon::start("api-many", &["--max-sandboxes", "64", "--max-execs", "256"]);
    let c = d.client();
    let prefix = format!("many{}x", std::process::id());
    let pid = d.pid();
    // Warm up once (lazy state in the daemon), then count.
    let w = c.create(&json!({}));
    assert_eq!(c.delete(&format!("/v1/sandboxes/{w}")).status, 204);
    let fds_before = fds_of(pid);
    let procs_before = processes_of(&d.state).len();
    let mounts_before = mounts_under(&d.state);

    let started = Instant::now();
    let creators: Vec<_> = (0..50)
        .map(|i| {
            let c = c.clone();
            let name = format!("{prefix}{i}");
            std::thread::spawn(move || {
                // Limits, so each sandbox has a cgroup to leak.
                let a = c.post("/v1/sandboxes", &json!({ "name": name, "pids": 128 }));
                assert_eq!(a.status, 201, "{name}: {}", a.text());
                name
            })
        })
        .collect();
    let names: Vec<String> = creators.into_iter().map(|t| t.join().unwrap()).collect();
    let created = started.elapsed();
    assert_eq!(cgroups_named(&prefix) % 50, 0);
    assert!(cgroups_named(&prefix) >= 50, "each sandbox has its cgroup");

    let started = Instant::now();
    let execs: Vec<_> = (0..200)
        .map(|i| {
            let c = c.clone();
            let name = names[i % names.len()].clone();
            std::thread::spawn(move || {
                let v = c.exec(&name, &json!({ "cmd": ["sh", "-c", format!("echo {i}")] }));
                assert_eq!(v["exit_code"], 0, "{v}");
                assert_eq!(v["stdout"], format!("{i}\n"));
            })
        })
        .collect();
    for t in execs {
        t.join().unwrap();
    }
    let executed = started.elapsed();

    let deleters: Vec<_> = names
        .iter()
        .map(|n| {
            let c = c.clone();
            let n = n.clone();
            std::thread::spawn(move || assert_eq!(c.delete(&format!("/v1/sandboxes/{n}")).status, 204, "{n}"))
        })
        .collect();
    for t in deleters {
        t.join().unwrap();
    }
    eprintln!("50 concurrent creates: {created:?}; 200 concurrent execs: {executed:?}");

    assert_eq!(c.get("/v1/health").json()["sandboxes"], 0);
    assert!(d.sandbox_dirs().is_empty(), "{:?}", d.sandbox_dirs());
    wait_for("the sandboxes' processes to go", 20, || processes_of(&d.state).len() <= procs_before);
    assert_eq!(mounts_under(&d.state), mounts_before, "mounts leaked");
    assert_eq!(cgroups_named(&prefix), 0, "cgroups leaked");
    // The daemon's own descriptors: back where they were (a little slack for tokio's internals).
    let fds_after = fds_of(pid);
    assert!(fds_after <= fds_before + 2, "fds: {fds_before} before, {fds_after} after");
}

#[test]
fn the_daemon_runs_rootless() {
    require_sandbox!();
    let user = require_test_user!();
    let d = Daemon::start_as("api-rootless", &[], Some(user));
    assert_eq!(mode_of(&d.socket) & 0o077, 0, "socket mode {:o}", mode_of(&d.socket));
    let c = d.client();
    let name = c.create(&json!({}));
    let v = c.exec(&name, &json!({ "cmd": ["cat", "/proc/self/uid_map"] }));
    assert_eq!(v["exit_code"], 0, "{v}");
    // The sandbox's ids are the test user's own: nothing else of the host is mapped.
    let map = v["stdout"].as_str().unwrap().to_string();
    let uid = common::test_user_uid().to_string();
    assert_eq!(map.lines().count(), 1, "{map}");
    assert_eq!(map.split_whitespace().nth(1), Some(uid.as_str()), "{map}");
    assert_eq!(map.split_whitespace().nth(2), Some("1"), "{map}");
    assert_eq!(c.delete(&format!("/v1/sandboxes/{name}")).status, 204);
    assert!(d.sandbox_dirs().is_empty());
}

#[test]
fn files_resolve_inside_the_sandbox_with_its_rights() {
    require_sandbox!();
    let _user = require_test_user!();
    let d = Daemon::start("api-files", &[]);
    let c = d.client();
    let ws = workspace("api-files-ws");
    let name = c.create(&json!({ "workspace": ws.str() }));
    let url = |path: &str| format!("/v1/sandboxes/{name}/files?path={}", encode(path));
    let put = |path: &str, body: &[u8]| c.request("PUT", &url(path), body, &[]);

    // A round trip of bytes that are not UTF-8; parents created; the mode asked for.
    let bytes: Vec<u8> = (0..=255u8).chain(b"\r\n\0end".iter().copied()).collect();
    let target = format!("{}/new/deep/bin.dat", ws.str());
    assert_eq!(put(&target, &bytes).status, 204);
    let a = c.get(&url(&target));
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.header("content-type"), Some("application/octet-stream"));
    assert_eq!(a.body, bytes);
    let script = format!("{}/run.sh", ws.str());
    assert_eq!(c.request("PUT", &format!("{}&mode=0755", url(&script)), b"#!/bin/sh\necho ran\n", &[]).status, 204);
    assert_eq!(c.sh(&name, &format!("{script}; stat -c '%a %u' {script}")), "ran\n755 0\n");
    // Written as the sandbox's user, into its copy-on-write layer: in the diff, not on the host.
    assert!(!ws.path().join("new").exists(), "the write reached the host workspace");
    assert!(c.get(&format!("/v1/sandboxes/{name}/diff")).text().contains("bin.dat"));
    // What a command writes, the files API reads (the sandbox's /tmp, not the host's).
    c.sh(&name, "echo from-inside > /tmp/inside.txt");
    assert_eq!(c.get(&url("/tmp/inside.txt")).text(), "from-inside\n");
    assert_eq!(put("/tmp/from-api.txt", b"api\n").status, 204);
    assert_eq!(c.sh(&name, "cat /tmp/from-api.txt"), "api\n");
    assert!(!std::path::Path::new("/tmp/from-api.txt").exists() || fs::read("/tmp/from-api.txt").unwrap() != b"api\n");

    // A directory: its entries.
    let listing = c.get(&url(&format!("{}/new/deep", ws.str())));
    assert_eq!(listing.status, 200);
    let entries = listing.json()["entries"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 1);
    assert_eq!((entries[0]["name"].as_str(), entries[0]["type"].as_str()), (Some("bin.dat"), Some("file")));
    assert_eq!(entries[0]["size"], bytes.len());
    assert!(entries[0]["mode"].as_u64().is_some());

    // Missing: 404. Delete: 204, then gone. A directory goes whole.
    let missing = c.get(&url("/no/such/file"));
    assert_eq!(missing.status, 404);
    assert_eq!(missing.error_code(), "not_found");
    assert_eq!(c.delete(&url(&target)).status, 204);
    assert_eq!(c.get(&url(&target)).status, 404);
    assert_eq!(c.delete(&url(&format!("{}/new", ws.str()))).status, 204);
    assert_eq!(c.get(&url(&format!("{}/new", ws.str()))).status, 404);
    assert_eq!(c.delete(&url("/no/such/file")).status, 404);

    // Never the host's files: a host file outside what the sandbox shows, `..` past the root, and symlinks the
    // sandbox plants towards the host's / all resolve inside the sandbox's root.
    let secret_dir = TempDir::new("api-files-secret");
    let secret = secret_dir.path().join("secret.txt");
    fs::write(&secret, "host secret\n").unwrap();
    let secret = secret.to_str().unwrap().to_string();
    for path in [secret.clone(), format!("/../../..{secret}"), format!("{}/../../../..{secret}", ws.str())] {
        let a = c.get(&url(&path));
        assert_eq!(a.status, 404, "{path}: {} {}", a.status, a.text());
    }
    c.sh(
        &name,
        &format!(
            "ln -s / {0}/root-link; ln -s ../../../../../../.. {0}/up-link; ln -s /proc/1/root {0}/init-root; \
             ln -s /proc/self/root {0}/self-root",
            ws.str()
        ),
    );
    for link in ["root-link", "up-link", "init-root", "self-root"] {
        let a = c.get(&url(&format!("{}/{link}{secret}", ws.str())));
        // Not there (the sandbox's own root), or refused (/proc/1/root: init may not be looked into).
        assert!(matches!(a.status, 404 | 409), "{link}: {}", a.text());
        assert_ne!(a.body, b"host secret\n");
    }
    // The sandbox user's rights, not host root's: /etc/shadow is the host's (read-only in the sandbox) and
    // unreadable to the sandbox's user; /usr is read-only.
    let shadow = c.get(&url("/etc/shadow"));
    assert_eq!(shadow.status, 409, "{}", shadow.text());
    assert_eq!(shadow.error_code(), "conflict");
    // A write through a symlink towards / lands in the sandbox's /tmp, never the host's.
    let planted = format!("{}/root-link/tmp/through-link.txt", ws.str());
    assert_eq!(put(&planted, b"inside\n").status, 204);
    assert_eq!(c.sh(&name, "cat /tmp/through-link.txt"), "inside\n");
    assert!(!std::path::Path::new("/tmp/through-link.txt").exists());
    let ro = put("/usr/airlock-should-not-exist", b"x");
    assert_eq!(ro.status, 409, "{}", ro.text());
    assert!(!std::path::Path::new("/usr/airlock-should-not-exist").exists());

    // A FIFO the sandbox made never makes the files API wait (nor does any other file that is not regular).
    c.sh(&name, "mkfifo /tmp/fifo");
    let started = Instant::now();
    assert_eq!(c.get(&url("/tmp/fifo")).status, 400);
    assert!(matches!(put("/tmp/fifo", b"x").status, 400 | 409));
    assert_eq!(c.get(&url("/dev/null")).status, 400);
    assert!(started.elapsed() < Duration::from_secs(5));

    // Bad paths: 400, nothing done.
    for bad in ["relative/path", "", "/a\0b"] {
        let a = c.get(&format!("/v1/sandboxes/{name}/files?path={}", encode(bad)));
        assert_eq!(a.status, 400, "{bad:?}: {}", a.text());
    }
    assert_eq!(c.get(&format!("/v1/sandboxes/{name}/files")).status, 400);
    assert_eq!(c.get(&format!("{}&mode=0644", url("/tmp/x"))).status, 400);
    assert_eq!(c.request("PUT", &format!("{}&mode=999", url("/tmp/x")), b"", &[]).status, 400);
    // Another daemon's or no sandbox: 404; a stopped one: 409.
    assert_eq!(c.get("/v1/sandboxes/nobody-here/files?path=/etc/hostname").status, 404);
    assert_eq!(c.delete(&format!("/v1/sandboxes/{name}?keep=true")).status, 204);
    assert_eq!(c.get(&url("/tmp/inside.txt")).status, 409);
    assert_eq!(c.delete(&format!("/v1/sandboxes/{name}")).status, 204);
}

/// Percent-encoding for a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn a_create_in_flight_when_the_daemon_died_is_adopted_or_forgotten() {
    require_sandbox!();
    let mut d = Daemon::start("api-inflight", &[]);
    d.kill9();
    // What a daemon killed during `airlock create` leaves: its owner record, written first, and no sandbox yet
    // (the create, its own process, goes on). And a record that old whose create never finished.
    let owned = d.state.join("daemon").join("sandboxes");
    let fresh = unique("inflight");
    let stale = unique("stale");
    let record = |name: &str, requested: f64| json!({ "name": name, "requested": requested, "spec": { "name": name } });
    fs::write(owned.join(format!("{fresh}.json")), record(&fresh, common_now()).to_string()).unwrap();
    fs::write(owned.join(format!("{stale}.json")), record(&stale, common_now() - 3600.0).to_string()).unwrap();
    d.spawn();
    let c = d.client();
    // Not listed while creating; the stale one is gone for good.
    assert_eq!(c.get(&format!("/v1/sandboxes/{fresh}")).status, 404);
    assert!(!owned.join(format!("{stale}.json")).exists());
    // The create finishes (as the dead daemon's `airlock create` would): the daemon owns the sandbox.
    let o = d.airlock(&["create", &fresh]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    wait_for("the in-flight create to be adopted", 20, || c.get(&format!("/v1/sandboxes/{fresh}")).status == 200);
    assert_eq!(state_of(&c, &fresh), "running");
    assert_eq!(c.sh(&fresh, "echo adopted"), "adopted\n");
    assert_eq!(c.delete(&format!("/v1/sandboxes/{fresh}")).status, 204);
}

#[test]
fn workspace_roots_confine_host_paths_and_a_default_lifetime_applies() {
    require_sandbox!();
    let shared = TempDir::new("api-roots-shared");
    fs::create_dir(shared.path().join("project")).unwrap();
    std::os::unix::fs::symlink("/etc", shared.path().join("etc-link")).unwrap();
    let d = Daemon::start(
        "api-roots",
        &["--workspace-root", shared.str(), "--default-timeout", "1s", "--max-sandboxes", "8"],
    );
    let c = d.client();
    // Under the root: taken, with the path resolved.
    let inside = format!("{}/project", shared.str());
    let a = c.post("/v1/sandboxes", &json!({ "workspace": inside, "timeout": "1h" }));
    assert_eq!(a.status, 201, "{}", a.text());
    let name = a.json()["name"].as_str().unwrap().to_string();
    assert_eq!(a.json()["workspace"], fs::canonicalize(&inside).unwrap().to_str().unwrap());
    // Outside it, directly, through `..` or through a symlink inside it: 400, nothing created.
    for outside in ["/etc".to_string(), format!("{}/../..", shared.str()), format!("{}/etc-link", shared.str())] {
        for field in ["workspace", "rootfs"] {
            let a = c.post("/v1/sandboxes", &json!({ field: outside }));
            assert_eq!(a.status, 400, "{field} {outside}: {}", a.text());
            // (A path with `..` is refused before, as malformed.)
            assert!(a.text().contains("--workspace-root") || a.text().contains("'..'"), "{}", a.text());
        }
    }
    let a = c.post("/v1/pools", &json!({ "name": "p", "size": 1, "sandbox": { "workspace": "/etc" } }));
    assert_eq!(a.status, 400, "{}", a.text());
    assert_eq!(d.sandbox_dirs(), vec![name.clone()]);
    // No timeout given: the default lifetime; the sandbox is stopped when it runs out, the one with 1h is not.
    let short = c.create(&json!({}));
    assert!(c.get(&format!("/v1/sandboxes/{short}")).json()["expires_at"].as_f64().is_some());
    wait_for("the default lifetime to end", 20, || state_of(&c, &short) == "exited");
    assert_eq!(state_of(&c, &name), "running");
    for n in [&name, &short] {
        assert_eq!(c.delete(&format!("/v1/sandboxes/{n}")).status, 204);
    }
    // A root that does not exist, or a bad default, stops the daemon from starting.
    let o = common::airlock(&["serve", "--socket", "/tmp/airlock-never.sock", "--workspace-root", "/no/such/dir"]);
    assert_ne!(code(&o), 0);
    assert!(stderr(&o).contains("--workspace-root"), "{}", stderr(&o));
    let o = common::airlock(&["serve", "--socket", "/tmp/airlock-never.sock", "--default-timeout", "soon"]);
    assert_ne!(code(&o), 0);
    assert!(stderr(&o).contains("--default-timeout"), "{}", stderr(&o));
}

/// The pid a streamed exec reports as `started`, and what the command printed.
fn started_pid_and_output(c: &Client, name: &str, body: &Value) -> (i64, String) {
    let s = c.start(
        "POST",
        &format!("/v1/sandboxes/{name}/exec"),
        body.to_string().as_bytes(),
        &[("Accept", "application/x-ndjson")],
    );
    let mut pid = -1;
    let mut out = String::new();
    for line in s.lines() {
        match line["type"].as_str() {
            Some("started") => pid = line["pid"].as_i64().unwrap_or(-1),
            Some("stdout") => out.push_str(line["data"].as_str().unwrap()),
            _ => {}
        }
    }
    (pid, out)
}

#[test]
fn the_exec_agent_runs_plain_execs_confined_as_airlock_exec_would() {
    require_sandbox!();
    let d = Daemon::start("api-agent", &[]);
    let c = d.client();
    let name = c.create(&json!({ "env": {"GREETING": "hi"}, "memory": "256M", "pids": 200 }));
    let socket = d.state.join("sandboxes").join(&name).join("agent.sock");
    wait_for("the exec agent's socket", 20, || socket.exists());
    // The socket: private, and the sandbox's user's (not root's: the host ids of the sandbox's root).
    let meta = fs::symlink_metadata(&socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_ne!(std::os::unix::fs::MetadataExt::uid(&meta), 0, "the socket belongs to the sandbox's user");

    // A plain exec goes to the agent: the pid it reports is the command's own pid inside the sandbox ($$)...
    let (pid, out) = started_pid_and_output(&c, &name, &json!({ "cmd": ["sh", "-c", "echo $$"] }));
    assert_eq!(out.trim().parse::<i64>().unwrap(), pid, "a plain exec is the agent's");
    // ...and one with a timeout (or another user) goes the long way, through `airlock exec` (a host pid).
    let (pid, out) = started_pid_and_output(&c, &name, &json!({ "cmd": ["sh", "-c", "echo $$"], "timeout": "30s" }));
    assert_ne!(out.trim().parse::<i64>().unwrap(), pid, "an exec with a timeout is airlock exec's");

    // Confined exactly as airlock exec's commands: identity, capabilities, no_new_privs, seccomp, limits,
    // cgroup, namespaces, a read-only root.
    let probe = "grep -E '^(Uid|Gid|Groups|Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp|Seccomp_filters):' \
                 /proc/self/status; ulimit -n; ulimit -u; cat /proc/self/cgroup; readlink /proc/self/ns/*; \
                 hostname; touch /etc/agent-was-here 2>&1 || echo read-only; echo $GREETING; pwd";
    let fast = c.exec(&name, &json!({ "cmd": ["sh", "-c", probe] }));
    let slow = c.exec(&name, &json!({ "cmd": ["sh", "-c", probe], "timeout": "60s" }));
    assert_eq!(fast["exit_code"], 0, "{fast}");
    assert_eq!(fast["stdout"], slow["stdout"], "the agent's command differs from airlock exec's");
    assert!(fast["stdout"].as_str().unwrap().contains("NoNewPrivs:\t1"), "{fast}");
    assert!(fast["stdout"].as_str().unwrap().contains("CapEff:\t0000000000000000"), "{fast}");

    // The request's variables, directory and input; streams the command can reopen; statuses as airlock exec's.
    let v = c.exec(
        &name,
        &json!({ "cmd": ["sh", "-c", "echo \"$GREETING $EXTRA\"; pwd; cat; echo reopened > /dev/stdout; exit 3"],
                 "env": {"EXTRA": "there", "GREETING": "hello"}, "cwd": "/tmp", "stdin": "input\n" }),
    );
    assert_eq!(
        (v["exit_code"].as_i64(), v["stdout"].as_str()),
        (Some(3), Some("hello there\n/tmp\ninput\nreopened\n"))
    );
    assert_eq!(c.exec(&name, &json!({ "cmd": ["sh", "-c", "kill -9 $$"] }))["exit_code"], 137);
    let v = c.exec(&name, &json!({ "cmd": ["no-such-program"] }));
    assert_eq!(v["exit_code"], 127);
    assert!(v["stderr"].as_str().unwrap().contains("command not found: no-such-program"), "{v}");
    let v = c.exec(&name, &json!({ "cmd": ["true"], "cwd": "/no/such/dir" }));
    assert_eq!(v["exit_code"], 125);
    assert!(v["stderr"].as_str().unwrap().contains("cannot change directory to /no/such/dir"), "{v}");
    // A background process keeping the pipes does not hold the answer (as with airlock exec).
    let started = Instant::now();
    let v = c.exec(&name, &json!({ "cmd": ["sh", "-c", "sleep 30 & echo bg"] }));
    assert_eq!(v["stdout"], "bg\n");
    assert!(started.elapsed() < Duration::from_secs(10), "the answer waited for the background process");
    // Nothing inside can reach the socket: the state directory is not in the sandbox's view.
    let path = socket.display().to_string();
    assert_eq!(c.sh(&name, &format!("test -e '{path}' && echo reachable || echo unreachable")), "unreachable\n");

    // Recorded as airlock exec records: attached, the exec, exited with the status.
    let log = fs::read_to_string(d.state.join("sandboxes").join(&name).join("audit.jsonl")).unwrap();
    let records: Vec<Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let marker = records.iter().position(|r| r["kind"] == "attached" && r["command"][2] == "kill -9 $$").unwrap();
    assert!(records[marker..].iter().any(|r| r["kind"] == "exec" && r["process"]["argv"][2] == "kill -9 $$"));
    assert!(records[marker..].iter().any(|r| r["kind"] == "exited" && r["status"] == 137));
    let report = d.airlock(&["logs", "--verify", &name]);
    assert_eq!(report.status.code(), Some(0), "{}", String::from_utf8_lossy(&report.stderr));

    // Deleted: its agent is gone with it, nothing of the sandbox is left running.
    assert_eq!(c.delete(&format!("/v1/sandboxes/{name}")).status, 204);
    let own = std::process::id() as i32;
    let left: Vec<i32> = processes_of(&d.state).into_iter().filter(|&p| p != d.pid() && p != own).collect();
    assert!(left.is_empty(), "processes left after delete: {left:?}");
}

#[test]
fn diff_and_commit_over_the_api_leave_out_excluded_paths() {
    require_sandbox!();
    let _user = require_test_user!();
    let d = Daemon::start("api-exclude", &[]);
    let c = d.client();
    let ws = workspace("api-exclude-ws");
    let name = unique("exclude");
    let a = c.post("/v1/sandboxes", &json!({ "name": name, "workspace": ws.str() }));
    assert_eq!(a.status, 201, "{}", a.text());
    // The .gitignore is the sandbox's own (in the layer), and part of the changes is under a checkpoint.
    c.sh(&name, "printf 'venv/\\n*.pyc\\n!keep.pyc\\n' > .gitignore; mkdir -p venv/bin; echo v > venv/bin/python");
    let cp = c.post(&format!("/v1/sandboxes/{name}/checkpoints"), &json!({ "label": "c1" }));
    assert_eq!(cp.status, 201, "{}", cp.text());
    c.sh(
        &name,
        "mkdir -p node_modules/x; echo y > node_modules/x/i.js; echo b > m.pyc; echo k > keep.pyc; echo real > a.txt",
    );

    let diff = c.get(&format!("/v1/sandboxes/{name}/diff?exclude={}&gitignore=true", encode("node_modules/")));
    assert_eq!(diff.status, 200, "{}", diff.text());
    let doc = diff.json();
    let paths: Vec<&str> = doc["changes"].as_array().unwrap().iter().map(|c| c["path"].as_str().unwrap()).collect();
    assert_eq!(paths, [".gitignore", "a.txt", "keep.pyc"], "{doc}");
    assert_eq!(doc["excluded"], json!({"count": 7, "sources": [".gitignore", "node_modules/"]}), "{doc}");
    let plain = c.get(&format!("/v1/sandboxes/{name}/diff"));
    assert!(plain.text().contains("node_modules/x/i.js") && plain.json().get("excluded").is_none(), "{}", plain.text());
    // Several patterns; bad input is 400.
    let two = c.get(&format!("/v1/sandboxes/{name}/diff?exclude=node_modules%2F&exclude=venv%2F&exclude=*.pyc"));
    assert_eq!(two.status, 200, "{}", two.text());
    assert_eq!(two.json()["excluded"]["count"], 8, "{}", two.text());
    for bad in ["gitignore=maybe", "exclude=", "exclude=a%0Ab", "nope=1"] {
        let r = c.get(&format!("/v1/sandboxes/{name}/diff?{bad}"));
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }
    let r = c.post(&format!("/v1/sandboxes/{name}/commit"), &json!({ "exclude": ["#x"] }));
    assert_eq!(r.status, 400, "{}", r.text());

    let cm =
        c.post(&format!("/v1/sandboxes/{name}/commit"), &json!({ "exclude": ["node_modules/"], "gitignore": true }));
    assert_eq!(cm.status, 200, "{}", cm.text());
    assert_eq!(cm.json(), json!({ "committed": 3, "excluded": 7 }));
    assert_eq!(fs::read_to_string(ws.path().join("a.txt")).unwrap(), "real\n");
    assert!(ws.path().join("keep.pyc").exists() && ws.path().join(".gitignore").exists());
    assert!(!ws.path().join("venv").exists() && !ws.path().join("node_modules").exists());
    assert!(!ws.path().join("m.pyc").exists());
    // The excluded changes are still in the layer, and still there inside the sandbox.
    let left = c.get(&format!("/v1/sandboxes/{name}/diff")).json();
    assert_eq!(left["changes"].as_array().unwrap().len(), 7, "{left}");
    assert_eq!(c.sh(&name, "cat venv/bin/python m.pyc"), "v\nb\n");
    let dc = c.post(&format!("/v1/sandboxes/{name}/discard"), &json!({}));
    assert_eq!(dc.status, 200, "{}", dc.text());
    assert_eq!(c.get(&format!("/v1/sandboxes/{name}/diff")).json()["changes"], json!([]));
    assert_eq!(c.delete(&format!("/v1/sandboxes/{name}")).status, 204);
}
