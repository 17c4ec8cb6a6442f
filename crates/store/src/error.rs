//! What can go wrong in the store. Each variant names the operation that failed and the path or sandbox it
//! failed on; the texts are what the CLI prints after `airlock:`.

use std::io;
use std::path::PathBuf;

use crate::layer::disk::DiskError;
use crate::layer::live::LiveError;
use crate::layer::LayerError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the state directory {}", .path.display())]
    CreateStateDir { path: PathBuf, source: io::Error },
    #[error("cannot create {}", .path.display())]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot read {}", .path.display())]
    ReadFile { path: PathBuf, source: io::Error },
    #[error("cannot read {}", .path.display())]
    ReadDir { path: PathBuf, source: io::Error },
    #[error("cannot write {}", .path.display())]
    WriteFile { path: PathBuf, source: io::Error },
    #[error("cannot open {}", .path.display())]
    OpenLock { path: PathBuf, source: io::Error },
    #[error("cannot rename {} to {}", .from.display(), .to.display())]
    Rename { from: PathBuf, to: PathBuf, source: io::Error },
    #[error("cannot move {} to {}", .from.display(), .to.display())]
    Move { from: PathBuf, to: PathBuf, source: io::Error },
    #[error("cannot set the mode of {}", .path.display())]
    SetMode { path: PathBuf, source: io::Error },
    #[error("cannot set the owner of {}", .path.display())]
    SetOwner { path: PathBuf, source: io::Error },
    #[error("cannot open up {}", .path.display())]
    OpenUp { path: PathBuf, source: io::Error },
    #[error("cannot remove {}", .path.display())]
    Remove { path: PathBuf, source: io::Error },
    #[error(
        "cannot remove {} ({denied}), nor as root of a user namespace with the subordinate ids mapped",
        .path.display()
    )]
    RemoveWithSubordinateIds { path: PathBuf, denied: io::Error, source: runtime::userns::UsernsError },
    #[error("cannot empty {}", .path.display())]
    Empty { path: PathBuf, source: LayerError },
    #[error("{} is not a valid sandbox record", .path.display())]
    InvalidRecord { path: PathBuf, source: serde_json::Error },
    #[error("{} is not a valid profile", .path.display())]
    InvalidProfile { path: PathBuf, source: serde_json::Error },
    #[error(transparent)]
    Serialize(serde_json::Error),
    #[error(transparent)]
    InvalidName(policy::names::NameError),

    #[error("a sandbox named {name} exists already (see `airlock ls`; `airlock rm {name}` removes it)")]
    SandboxExists { name: String },
    #[error("sandbox {name} is being created by another airlock")]
    BeingCreated { name: String },
    #[error("no sandbox named {name} (see `airlock ls`)")]
    NoSuchSandbox { name: String },
    #[error("sandbox {name} has no copy-on-write workspace (it was run without --workspace in cow mode)")]
    NoCowWorkspace { name: String },
    #[error("sandbox {name} is running; its layer can change only once it has ended")]
    ChangeWhileRunning { name: String },
    #[error(
        "sandbox {name} is running or another airlock is changing its layer; its layer can change only once it has \
         ended"
    )]
    LayerBusy { name: String },

    #[error("--resume: no sandbox named {name} (see `airlock ls`; without --resume, --name {name} creates it)")]
    ResumeMissing { name: String },
    #[error("--resume: sandbox {name} is running")]
    ResumeRunning { name: String },
    #[error("--resume: give the sandbox's --workspace")]
    ResumeWithoutWorkspace,
    #[error(
        "--resume: sandbox {name} was run with workspace {workspace} ({mode} mode); resume it with that \
         copy-on-write workspace"
    )]
    ResumeOtherWorkspace { name: String, workspace: String, mode: String },
    #[error("--resume")]
    Resume(#[source] Box<StoreError>),

    #[error("the workspace layer of {} is a disk-bounded image", .dir.display())]
    MountDiskLayer { dir: PathBuf, source: DiskError },
    #[error(transparent)]
    Disk(DiskError),
    #[error(
        "--disk {size}: sandbox {name} was created without --disk, and its layer cannot be bounded afterwards; \
         resume it without --disk"
    )]
    DiskBoundAfterwards { size: String, name: String },
    #[error(
        "--disk {size}: the layer of sandbox {name} was created with --disk {had}; resume with that size or without \
         --disk"
    )]
    DiskSizeChanged { size: String, name: String, had: String },

    #[error("sandbox {name} has {count} checkpoints, the most one sandbox stacks; roll back to an earlier one first")]
    TooManyCheckpoints { name: String, count: usize },
    #[error("invalid checkpoint label {label:?}: {reason}")]
    InvalidLabel { label: String, reason: String },
    #[error("sandbox {name} has a checkpoint {label} already (see `airlock checkpoints {name}`)")]
    DuplicateLabel { name: String, label: String },
    #[error("sandbox {name} has no checkpoint {label} (see `airlock checkpoints {name}`)")]
    NoSuchCheckpoint { name: String, label: String },
    #[error("cannot remove checkpoint {label} ({})", .path.display())]
    RemoveCheckpoint { label: String, path: PathBuf, source: LayerError },

    #[error(
        "sandbox {name} is running under `airlock run`: {what} of such a run is not supported yet (only of a \
         long-lived sandbox, `airlock create`); {what} once it has ended"
    )]
    RunningUnderRun { name: String, what: String },
    #[error(
        "sandbox {name} has a mount inside its workspace ({dest}), which a {what} of the running sandbox would drop; \
         {what} once it has ended (airlock stop {name})"
    )]
    MountInsideWorkspace { name: String, dest: String, what: String },
    #[error("another checkpoint, rollback, commit or discard of sandbox {name} is in progress")]
    LayerChangeInProgress { name: String },
    #[error("NUL in {path}")]
    NulInPath { path: String },
    #[error(transparent)]
    Live(#[from] LiveError),
    #[error("cannot {action} running sandbox {name}")]
    Freeze { action: String, name: String, source: LiveError },
    #[error("cannot copy {} for the change", .path.display())]
    CopyLayer { path: PathBuf, source: LayerError },
    /// The caller's change (a commit, a discard) failed.
    #[error(transparent)]
    Change(Box<dyn std::error::Error + Send + Sync>),
    #[error("cannot {action} running sandbox {name} (nothing was changed)")]
    Undone { action: String, name: String, source: Box<StoreError> },
    #[error("and its processes may still be stopped ({thaw}): airlock stop {name}")]
    NotThawed { thaw: LiveError, name: String, source: Box<StoreError> },
    #[error("the sandbox's processes may still be stopped: airlock stop {name}, or run airlock {what} again")]
    ThawAfterNoChange { name: String, what: String, source: LiveError },
    #[error(
        "cannot put the new layer in place in running sandbox {name}: what was committed to the host stays in its \
         layer too (airlock commit --force {name} once it has stopped finishes)"
    )]
    CommitNotInPlace { name: String, source: Box<StoreError> },
}
