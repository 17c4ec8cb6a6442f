//! The sandboxes the daemon owns, in memory, and the per-sandbox lock that turns racing clients into `409`s.
//!
//! Each sandbox has a read-write lock: an exec holds it shared (many execs at once), a change to the sandbox
//! (commit, discard, checkpoint, rollback) holds it exclusive and is refused at once when it is taken, never
//! queued: a client that commits while an exec runs gets a clear `409`. A delete does not wait behind execs: it
//! marks the sandbox as going, stops it (which ends every exec in it), then takes the lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

use crate::error::ApiError;
use crate::store::OwnedSandbox;

#[derive(Debug, Default)]
pub struct SandboxLock {
    rw: Arc<RwLock<()>>,
    going: AtomicBool,
    /// Held while the daemon itself stops the sandbox because its lifetime ran out: a client's delete waits for
    /// that stop to end (it is not another client's delete, which would be a `409`).
    pub lifetime_stop: tokio::sync::Mutex<()>,
}

impl SandboxLock {
    /// Shared, for an exec or a read that must not see a half-done change.
    pub fn share(&self, name: &str) -> Result<OwnedRwLockReadGuard<()>, ApiError> {
        if self.going.load(Ordering::SeqCst) {
            return Err(ApiError::conflict(format!("sandbox {name} is being deleted")));
        }
        self.rw.clone().try_read_owned().map_err(|_| {
            ApiError::conflict(format!(
                "sandbox {name} is busy with a change (commit, discard, checkpoint or rollback)"
            ))
        })
    }

    /// Exclusive, for a change; refused while anything else holds the sandbox.
    pub fn change(&self, name: &str) -> Result<OwnedRwLockWriteGuard<()>, ApiError> {
        if self.going.load(Ordering::SeqCst) {
            return Err(ApiError::conflict(format!("sandbox {name} is being deleted")));
        }
        self.rw.clone().try_write_owned().map_err(|_| {
            ApiError::conflict(format!("sandbox {name} is busy (an exec or another change runs in it); try again"))
        })
    }

    /// For a delete: only one at a time; the second is a `409`.
    pub fn begin_delete(&self, name: &str) -> Result<DeleteMark<'_>, ApiError> {
        if self.going.swap(true, Ordering::SeqCst) {
            return Err(ApiError::conflict(format!("sandbox {name} is being deleted already")));
        }
        Ok(DeleteMark { lock: self })
    }

    /// Waits for every exec and change to let go (after the sandbox was stopped, they end on their own).
    pub async fn drain(&self) -> OwnedRwLockWriteGuard<()> {
        self.rw.clone().write_owned().await
    }
}

/// Clears the delete mark when the delete ends (done or failed).
pub struct DeleteMark<'a> {
    lock: &'a SandboxLock,
}

impl Drop for DeleteMark<'_> {
    fn drop(&mut self) {
        self.lock.going.store(false, Ordering::SeqCst);
    }
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub record: OwnedSandbox,
    pub lock: Arc<SandboxLock>,
    /// `airlock create` has not finished yet.
    pub creating: bool,
}

#[derive(Debug, Default)]
pub struct Registry {
    entries: Mutex<HashMap<String, Entry>>,
}

impl Registry {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding this lock cannot leave the map half-changed (every change is one insert or
        // remove), so a poisoned lock is still a sound map.
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn get(&self, name: &str) -> Option<Entry> {
        self.map().get(name).cloned()
    }

    /// Reserves `name` for a sandbox being created; `false` when the name is taken.
    pub fn reserve(&self, record: OwnedSandbox) -> bool {
        let mut map = self.map();
        if map.contains_key(&record.name) {
            return false;
        }
        map.insert(record.name.clone(), Entry { record, lock: Arc::default(), creating: true });
        true
    }

    pub fn insert(&self, record: OwnedSandbox) {
        let name = record.name.clone();
        self.map().insert(name, Entry { record, lock: Arc::default(), creating: false });
    }

    pub fn created(&self, name: &str) {
        if let Some(e) = self.map().get_mut(name) {
            e.creating = false;
        }
    }

    pub fn update(&self, name: &str, change: impl FnOnce(&mut OwnedSandbox)) -> Option<OwnedSandbox> {
        let mut map = self.map();
        let entry = map.get_mut(name)?;
        change(&mut entry.record);
        Some(entry.record.clone())
    }

    pub fn remove(&self, name: &str) {
        self.map().remove(name);
    }

    pub fn all(&self) -> Vec<Entry> {
        let mut entries: Vec<Entry> = self.map().values().cloned().collect();
        entries.sort_by(|a, b| a.record.name.cmp(&b.record.name));
        entries
    }

    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes a ready sandbox of `pool` for a client: it leaves the pool (the caller persists the change).
    pub fn take_from_pool(&self, pool: &str) -> Option<OwnedSandbox> {
        let mut map = self.map();
        let entry = map.values_mut().find(|e| !e.creating && e.record.pool.as_deref() == Some(pool))?;
        entry.record.pool = None;
        Some(entry.record.clone())
    }

    /// How many sandboxes wait in `pool` (created or being created).
    pub fn pooled(&self, pool: &str) -> usize {
        self.map().values().filter(|e| e.record.pool.as_deref() == Some(pool)).count()
    }
}
