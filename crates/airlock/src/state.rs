//! The binary's handle on the workspace store (crate `store`, which owns the on-disk layout): the state
//! directory this process uses, `$AIRLOCK_STATE_DIR` or the per-user default.

pub use store::record::read_record;
pub use store::sandbox::{generated_name, is_running, sandbox_names, ClaimedLayer};
pub use store::{SandboxDir, SandboxRecord, StateDir};

/// The state directory of this process.
pub fn state() -> StateDir {
    StateDir::from_env()
}

/// The directory of the sandbox called `name` (validated by the caller).
pub fn sandbox_dir(name: &str) -> SandboxDir {
    state().sandbox(name)
}
