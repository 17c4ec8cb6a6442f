//! What the daemon keeps on disk, beside the CLI's own state: `$STATE/daemon/sandboxes/NAME.json` for each
//! sandbox the daemon owns (when it was asked for, its lifetime, its pool) and `$STATE/daemon/pools/NAME.json`
//! for each pool. Each file is written whole to a temporary name and renamed, so `kill -9` at any moment leaves
//! either the old or the new record, never half of one.
//!
//! The order that makes a crash harmless: the owner record is written *before* `airlock create` runs and removed
//! *after* `airlock rm` has, so a restarted daemon can always find (and finish or remove) what it was doing.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use store::SandboxRecord;

use crate::spec::SandboxSpec;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the daemon's state directory {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot remove {path}: {source}")]
    Remove { path: PathBuf, source: std::io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot encode the record of {name}: {source}")]
    Encode { name: String, source: serde_json::Error },
}

/// A sandbox the daemon owns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OwnedSandbox {
    pub name: String,
    /// Unix time (seconds) the daemon was asked for it.
    pub requested: f64,
    /// Unix time (seconds) it is stopped at; none: it lives until deleted.
    #[serde(default)]
    pub expires_at: Option<f64>,
    /// The pool that made it, while it waits in that pool (cleared when a create takes it).
    #[serde(default)]
    pub pool: Option<String>,
    pub spec: SandboxSpec,
}

/// A warm pool: `size` sandboxes of `sandbox` kept ready.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PoolRecord {
    pub name: String,
    pub size: usize,
    pub sandbox: SandboxSpec,
}

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// The store under `state_dir`, its directories created (mode 0700).
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        let root = state_dir.join("daemon");
        for dir in [state_dir.to_path_buf(), root.clone(), root.join("sandboxes"), root.join("pools")] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|source| StoreError::CreateDir { path: dir.clone(), source })?;
        }
        Ok(Store { root })
    }

    fn sandbox_path(&self, name: &str) -> PathBuf {
        self.root.join("sandboxes").join(format!("{name}.json"))
    }

    fn pool_path(&self, name: &str) -> PathBuf {
        self.root.join("pools").join(format!("{name}.json"))
    }

    pub fn put_sandbox(&self, record: &OwnedSandbox) -> Result<(), StoreError> {
        write_json(&self.sandbox_path(&record.name), &record.name, record)
    }

    pub fn remove_sandbox(&self, name: &str) -> Result<(), StoreError> {
        remove(&self.sandbox_path(name))
    }

    pub fn sandboxes(&self) -> Result<Vec<OwnedSandbox>, StoreError> {
        read_all(&self.root.join("sandboxes"))
    }

    pub fn put_pool(&self, record: &PoolRecord) -> Result<(), StoreError> {
        write_json(&self.pool_path(&record.name), &record.name, record)
    }

    pub fn remove_pool(&self, name: &str) -> Result<(), StoreError> {
        remove(&self.pool_path(name))
    }

    pub fn pools(&self) -> Result<Vec<PoolRecord>, StoreError> {
        read_all(&self.root.join("pools"))
    }
}

fn write_json<T: Serialize>(path: &Path, name: &str, value: &T) -> Result<(), StoreError> {
    let text =
        serde_json::to_vec_pretty(value).map_err(|source| StoreError::Encode { name: name.to_string(), source })?;
    let tmp = path.with_extension("json.tmp");
    let write = || -> std::io::Result<()> {
        let mut file = fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&tmp)?;
        file.write_all(&text)?;
        // On disk before the rename makes it the record: a power cut leaves the old record or the new one.
        file.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|source| StoreError::Write { path: path.to_path_buf(), source })
}

fn remove(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StoreError::Remove { path: path.to_path_buf(), source }),
    }
}

/// Every record in `dir`. A file that does not parse (a hand edit) is skipped, not fatal: the daemon still starts
/// and serves the others.
fn read_all<T: for<'de> Deserialize<'de>>(dir: &Path) -> Result<Vec<T>, StoreError> {
    let entries = fs::read_dir(dir).map_err(|source| StoreError::Read { path: dir.to_path_buf(), source })?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        if let Ok(text) = fs::read(&path) {
            if let Ok(value) = serde_json::from_slice(&text) {
                out.push(value);
            }
        }
    }
    Ok(out)
}

/// What the CLI keeps of the sandbox `name` (its `sandbox.json`, in the workspace store's layout).
pub fn cli_record(state_dir: &Path, name: &str) -> Option<SandboxRecord> {
    store::record::read_record(&store::StateDir::at(state_dir.to_path_buf()).sandbox(name)).ok()
}

/// The sandbox's init, when that process still runs (the start time guards against a reused pid).
pub fn live_init(record: &SandboxRecord) -> Option<(i32, u64)> {
    let (pid, start) = (record.init_pid?, record.init_start_time?);
    (record.status == "running" && runtime::host::process_start_time(pid) == Some(start)).then_some((pid, start))
}

/// Unix time now (the workspace store's clock: records and the daemon's own agree).
pub use store::now;
