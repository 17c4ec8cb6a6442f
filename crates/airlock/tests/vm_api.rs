//! `"isolation": "vm"` in the daemon's `POST /v1/sandboxes`: a real QEMU guest under TCG (the profile given
//! says only `accel = "tcg"`, so the VM comes from the request's `isolation`), its execs, its deletion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/daemon.rs"]
mod daemon_client;
mod vm_support;

use std::process::Command;

use vm_support::{is_qemu, qemu_gone};

fn host_kernel() -> String {
    let out = Command::new("uname").arg("-r").output().unwrap();
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_daemon_creates_a_vm_sandbox_from_the_requests_isolation() {
    require_vm!();
    let daemon = daemon_client::Daemon::start("vmapi-daemon", &[]);
    // The profile picks only the emulator (this host's KVM is no use to QEMU); the VM is the request's.
    let profile = daemon.dir.path().join("tcg.toml");
    std::fs::write(&profile, "[vm]\naccel = \"tcg\"\n").unwrap();
    let client = daemon.client();
    let name = client.create(&serde_json::json!({ "profile": profile.to_str().unwrap(), "isolation": "vm" }));
    let shown = client.get(&format!("/v1/sandboxes/{name}"));
    assert!(shown.text().contains("\"isolation\":\"vm\""), "{}", shown.text());
    let qemu = {
        let text = std::fs::read_to_string(daemon.state.join("sandboxes").join(&name).join("sandbox.json")).unwrap();
        let record: serde_json::Value = serde_json::from_str(&text).unwrap();
        record["init_pid"].as_i64().unwrap() as i32
    };
    assert!(is_qemu(qemu), "the daemon's sandbox is a VM");
    let guest = client.sh(&name, "uname -r");
    assert!(!guest.trim().is_empty());
    assert_ne!(guest, host_kernel(), "the command ran on the host's kernel, not the guest's");
    let v = client.exec(&name, &serde_json::json!({ "cmd": ["sh", "-c", "exit 7"] }));
    assert_eq!(v["exit_code"], 7, "{v}");
    let a = client.delete(&format!("/v1/sandboxes/{name}"));
    assert!(a.status < 300, "{}", a.text());
    assert!(qemu_gone(qemu), "QEMU outlived the sandbox's deletion");
    assert!(!daemon.state.join("sandboxes").join(&name).exists());
}

#[test]
fn an_unknown_isolation_is_a_bad_request_and_creates_nothing() {
    let daemon = daemon_client::Daemon::start("vmapi-bad", &[]);
    let client = daemon.client();
    let before = daemon.sandbox_dirs();
    let a = client.post("/v1/sandboxes", &serde_json::json!({ "isolation": "kvm" }));
    assert_eq!(a.status, 400, "{}", a.text());
    assert!(a.text().contains("isolation"), "{}", a.text());
    assert!(!a.text().trim_end().contains('\n'), "{}", a.text());
    assert_eq!(daemon.sandbox_dirs(), before);
}
