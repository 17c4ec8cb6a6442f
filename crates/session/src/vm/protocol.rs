//! What the host and the guest agent say to each other on the control port (`airlock.ctl`): one JSON document a
//! line. The host sends one [`GuestRequest`]; the guest answers with [`GuestMessage`]s, the last an outcome.
//! The command's standard streams have ports of their own (`airlock.stdin`, `.stdout`, `.stderr`), raw bytes.

use policy::sandbox::SandboxPolicy;

/// The serial ports' names (`/sys/class/virtio-ports/*/name` in the guest).
pub const PORT_CONTROL: &str = "airlock.ctl";
pub const PORT_STDIN: &str = "airlock.stdin";
pub const PORT_STDOUT: &str = "airlock.stdout";
pub const PORT_STDERR: &str = "airlock.stderr";

/// What the guest agent sets up and runs.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct GuestRequest {
    /// The policy the guest's namespace engine applies (the workspace as the guest sees it: a `cow` workspace's
    /// merged view is exported read-write, so it is `rw` here).
    pub policy: SandboxPolicy,
    /// The sandbox's name (its cgroup's, inside the guest).
    pub name: Option<String>,
    /// The host directories exported to the guest, each mounted at its own path.
    pub shares: Vec<Share>,
    /// Symbolic links of the host's root the policy shows (`/bin` → `usr/bin` on a merged-/usr system).
    pub symlinks: Vec<Symlink>,
}

/// One virtio-9p export.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Share {
    /// Its mount tag (`airlockN`).
    pub tag: String,
    /// Where it is mounted in the guest: the host path it exports.
    pub path: String,
    pub readonly: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Symlink {
    pub path: String,
    pub target: String,
}

/// From the guest agent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuestMessage {
    /// The request arrived and the shares are mounted: the guest is up.
    Started,
    /// A protection the guest's engine runs without (printed as the namespace backend's warnings are).
    Warning(String),
    /// The command's outcome, as the engine reported it.
    Exited(i32),
    TimedOut {
        millis: u64,
    },
    ExecFailed {
        code: i32,
        message: String,
    },
    OutOfMemory {
        summary: String,
    },
    /// The guest could not set the sandbox up: the layer and why (one line).
    Failed(String),
}
