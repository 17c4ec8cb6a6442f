//! Warm pools of `--isolation vm` sandboxes in the daemon: a pooled VM sandbox is ready once its supervisor's
//! socket accepts (it has no exec agent to wait for), and E2B's create with `dev.airlock.isolation` takes from a
//! pool whose sandboxes have that isolation (from its spec or, as here, its profile). A real daemon (its own state directory, E2B on loopback) and real QEMU
//! guests under TCG (from the pool's profile).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/daemon.rs"]
mod daemon_client;
mod vm_support;

use std::time::{Duration, Instant};

use daemon_client::{wait_for, Client, Daemon};
use serde_json::json;

/// A loopback port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn a_warm_pool_of_vm_sandboxes_is_ready_once_its_socket_accepts_and_e2b_takes_from_it() {
    require_vm!();
    let e2b_addr = format!("127.0.0.1:{}", free_port());
    let daemon = Daemon::start("vm-pool", &["--e2b", &e2b_addr]);
    let profile = daemon.dir.path().join("vm.toml");
    std::fs::write(&profile, "[security]\nisolation = \"vm\"\n\n[vm]\naccel = \"tcg\"\n").unwrap();
    let c = daemon.client();
    // The pool's `vm` comes from its profile only: E2B's check of the isolation asked for reads it there (before:
    // only the spec's own field counted, and this pool's sandboxes passed for namespaces).
    let spec = json!({ "profile": profile.to_str().unwrap() });
    let a = c.post("/v1/pools", &json!({ "name": "vmwarm", "size": 1, "sandbox": spec }));
    assert!(a.status < 300, "{}", a.text());

    // The pooled guest's socket listens before `airlock create` returns; the pool hands the sandbox out right
    // after (before: only once a wait of 5 s for an exec agent, which a VM never has, had run out; a create in
    // that time got a cold sandbox).
    let sandboxes = daemon.state.join("sandboxes");
    let mut pooled = String::new();
    wait_for("the pooled VM's vm.sock", 180, || {
        let found = std::fs::read_dir(&sandboxes)
            .into_iter()
            .flatten()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with("pool-") && e.path().join("vm.sock").exists());
        if let Some(entry) = found {
            pooled = entry.file_name().to_string_lossy().into_owned();
        }
        !pooled.is_empty()
    });
    let listening = Instant::now();

    // E2B: a create asking for another isolation than the pool's is refused, naming the pool's; one asking for
    // the pool's takes its ready VM (before: a 400 for any).
    let e2b = Client::tcp(&e2b_addr, None);
    let asked = |isolation: &str| {
        e2b.post(
            "/sandboxes",
            &json!({ "templateID": "vmwarm", "timeout": 120, "metadata": { "dev.airlock.isolation": isolation } }),
        )
    };
    let refused = asked("namespaces");
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert!(refused.text().contains("isolation vm"), "{}", refused.text());
    std::thread::sleep(Duration::from_millis(2500).saturating_sub(listening.elapsed()));
    let created = asked("vm");
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.json()["sandboxID"].as_str().unwrap().to_string();
    assert_eq!(id, pooled, "not the pool's sandbox, though it was ready: {}", daemon.log());
    // No refill: one guest more is all this test boots.
    assert_eq!(c.delete("/v1/pools/vmwarm").status, 204);

    let text = std::fs::read_to_string(sandboxes.join(&id).join("sandbox.json")).unwrap();
    let record: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(vm_support::is_qemu(record["init_pid"].as_i64().unwrap() as i32), "the pooled sandbox is no VM: {record}");
    assert_eq!(c.sh(&id, "echo in the pooled guest"), "in the pooled guest\n");
}
