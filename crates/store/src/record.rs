//! `sandbox.json` (what a sandbox is) and `profile.json` (the merged profile a long-lived sandbox was created
//! with). Field names are stable: README documents them, and the daemon reads them.

use std::fs::{self, File};
use std::io::Read;

use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::layout::SandboxDir;

/// `sandbox.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub name: String,
    /// The host workspace, if any.
    pub workspace: Option<String>,
    /// `cow`, `rw`, `ro`, or null without a workspace.
    pub workspace_mode: Option<String>,
    /// Unix time (seconds, fractional) the sandbox was created; host files changed after it conflict on commit.
    pub created: f64,
    /// `running` or `exited` (what `airlock ls` shows is checked against the lock).
    pub status: String,
    pub exit_code: Option<i32>,
    /// A long-lived sandbox (`airlock create`): its init's host pid and start time (field 22 of
    /// `/proc/PID/stat`, against pid reuse), recorded once it is set up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_start_time: Option<u64>,
    /// A long-lived sandbox's supervisor (what `airlock stop` signals), with its start time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervisor_pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervisor_start_time: Option<u64>,
}

impl SandboxRecord {
    /// The host workspace of a sandbox whose workspace is copy-on-write (the only kind with a layer).
    pub fn cow_workspace(&self) -> Option<&str> {
        match (&self.workspace, self.workspace_mode.as_deref()) {
            (Some(workspace), Some("cow")) => Some(workspace),
            _ => None,
        }
    }
}

/// A kept sandbox's record.
pub fn read_record(dir: &SandboxDir) -> Result<SandboxRecord, StoreError> {
    let path = dir.record_file();
    let mut text = String::new();
    File::open(&path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|source| StoreError::ReadFile { path: path.clone(), source })?;
    serde_json::from_str(&text).map_err(|source| StoreError::InvalidRecord { path, source })
}

/// Replaces the record: written beside it, then renamed over it (a reader sees the old or the new one whole).
pub fn write_record(dir: &SandboxDir, record: &SandboxRecord) -> Result<(), StoreError> {
    let path = dir.record_file();
    let staged = dir.staged_record_file();
    let text = serde_json::to_string_pretty(record).map_err(StoreError::Serialize)? + "\n";
    fs::write(&staged, text).map_err(|source| StoreError::WriteFile { path: staged.clone(), source })?;
    fs::rename(&staged, &path).map_err(|source| StoreError::WriteFile { path, source })
}

/// The merged profile of a sandbox started by `airlock create`.
pub fn read_profile(dir: &SandboxDir) -> Result<policy::profile::Profile, StoreError> {
    let path = dir.profile_file();
    let text = fs::read_to_string(&path).map_err(|source| StoreError::ReadFile { path: path.clone(), source })?;
    serde_json::from_str(&text).map_err(|source| StoreError::InvalidProfile { path, source })
}

/// Keeps the merged profile a long-lived sandbox was created with: `airlock exec` builds its commands' plans
/// from it.
pub fn write_profile(dir: &SandboxDir, profile: &policy::profile::Profile) -> Result<(), StoreError> {
    let path = dir.profile_file();
    let text = serde_json::to_string_pretty(profile).map_err(StoreError::Serialize)? + "\n";
    fs::write(&path, text).map_err(|source| StoreError::WriteFile { path, source })
}
