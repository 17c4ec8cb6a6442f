//! Names pointing at 127.0.0.1 in the host's `/etc/hosts`, for the network tests (`tests/network.rs`,
//! `tests/vm_net.rs`): each test file marks its lines with its own mark, edits take turns between the threads of
//! one test binary, and a test's names are removed when it ends (lines a killed run left go at the first edit).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Mutex, Once};

/// One test binary, several threads: edits of /etc/hosts take turns.
static HOSTS_LOCK: Mutex<()> = Mutex::new(());

/// Names pointing at 127.0.0.1 in the host's /etc/hosts for as long as this lives.
pub struct HostNames {
    mark: &'static str,
    names: Vec<String>,
}

impl HostNames {
    /// Adds `names`, each line ending with `mark` (a comment such as `# airlock-network-test`).
    pub fn add(mark: &'static str, names: &[&str]) -> HostNames {
        static CLEAN: Once = Once::new();
        let _turn = HOSTS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        // Lines left by a test run that was killed go first (one mark per test binary).
        CLEAN.call_once(|| edit_hosts(|line| !line.contains(mark)));
        let mut text = std::fs::read_to_string("/etc/hosts").unwrap();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        for name in names {
            text.push_str(&format!("127.0.0.1 {name} {mark}\n"));
        }
        std::fs::write("/etc/hosts", text).unwrap();
        HostNames { mark, names: names.iter().map(|n| n.to_string()).collect() }
    }
}

impl Drop for HostNames {
    fn drop(&mut self) {
        let _turn = HOSTS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        edit_hosts(|line| {
            !(line.contains(self.mark) && self.names.iter().any(|n| line.split_whitespace().nth(1) == Some(n)))
        });
    }
}

/// Keeps the lines of /etc/hosts for which `keep` is true (written in place: /etc/hosts may be a bind mount).
fn edit_hosts(keep: impl Fn(&str) -> bool) {
    let text = std::fs::read_to_string("/etc/hosts").unwrap();
    let kept: String = text.lines().filter(|l| keep(l)).map(|l| format!("{l}\n")).collect();
    if kept != text {
        std::fs::write("/etc/hosts", kept).unwrap();
    }
}
