//! The writer. One log file may have several writers at once: the supervisor of a `run` or `create`, every
//! `airlock exec` into a long-lived sandbox (each holds the seccomp listener of its own command), and the network
//! gateway. Each append is one critical section under an exclusive `flock` on the file:
//!
//! 1. lock; 2. find the previous record's hash — from our own last append if nobody wrote since (the file's size
//!    is still where our line ended), else from the file's tail (a bounded read: records are at most
//!    [`MAX_RECORD_BYTES`]); 3. write one line with `O_APPEND` (a single `write`); 4. unlock.
//!
//! A line is written whole or, if the disk fills or the writer is killed mid-write, cut: `verify` reports a cut
//! tail, and the next writer starts a fresh line after it and chains to the last whole record.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::chain::{self, GENESIS};
use crate::event::{self, Event, MARK_RECORD_TOO_LARGE, MAX_RECORD_BYTES};

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot open the audit log {0}")]
    Open(PathBuf, #[source] std::io::Error),
    #[error("cannot lock the audit log {0}")]
    Lock(PathBuf, #[source] std::io::Error),
    #[error("cannot read the end of the audit log {0}")]
    ReadTail(PathBuf, #[source] std::io::Error),
    #[error("cannot append to the audit log {0}")]
    Append(PathBuf, #[source] std::io::Error),
    #[error("an audit record of kind {0:?} must be a JSON object")]
    NotAnObject(String),
}

/// How far back from the end a writer looks for the previous record: one whole record and its newline fit.
const TAIL_BYTES: u64 = MAX_RECORD_BYTES as u64 + 2;

/// An open audit log. Appends are chained to whatever the file's last record is, whoever wrote it.
#[derive(Debug)]
pub struct AuditLog {
    file: File,
    path: PathBuf,
    /// The `sandbox` field of every record this writer appends.
    sandbox: String,
    /// Where our last line ended and its hash: while the file still ends there, nobody else appended since.
    last: Option<(u64, String)>,
    /// Extra copies (`--audit FILE`): every line written to the log is also appended there, unchanged.
    copies: Vec<(PathBuf, File)>,
    /// Records buffered by [`AuditLog::buffer`], written by [`AuditLog::flush`].
    pending: Vec<Map<String, Value>>,
}

impl AuditLog {
    /// Opens (creating, mode 0600) the log at `path` for appending.
    pub fn open(path: impl AsRef<Path>) -> Result<AuditLog, AuditError> {
        let path = path.as_ref().to_path_buf();
        let file = open_append(&path)?;
        Ok(AuditLog { file, path, sandbox: String::new(), last: None, copies: Vec::new(), pending: Vec::new() })
    }

    /// Appends to an already open log (the network gateway's process, which cannot open the state directory
    /// itself: its supervisor opens the log, read and append, and hands the descriptor over).
    pub fn from_file(file: File, path: impl AsRef<Path>) -> AuditLog {
        let path = path.as_ref().to_path_buf();
        AuditLog { file, path, sandbox: String::new(), last: None, copies: Vec::new(), pending: Vec::new() }
    }

    /// Also append every line to the already open `file` (see [`AuditLog::from_file`]).
    pub fn add_copy_file(&mut self, file: File, path: impl AsRef<Path>) {
        self.copies.push((path.as_ref().to_path_buf(), file));
    }

    /// The paths of the extra copies, in the order they were added.
    pub fn copy_paths(&self) -> impl Iterator<Item = &Path> {
        self.copies.iter().map(|(path, _)| path.as_path())
    }

    /// The sandbox name every record carries.
    pub fn with_sandbox(mut self, name: &str) -> Self {
        self.sandbox = name.to_string();
        self
    }

    /// Also append every line to `path` (opened now, created 0600).
    pub fn add_copy(&mut self, path: impl AsRef<Path>) -> Result<(), AuditError> {
        let path = path.as_ref().to_path_buf();
        let file = open_append(&path)?;
        self.copies.push((path, file));
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event.
    pub fn append(&mut self, event: &Event) -> Result<(), AuditError> {
        self.append_fields(event.to_fields())
    }

    /// Appends a record produced elsewhere (the network gateway's, say): `value` must be an object; it gets
    /// `kind`, and `time`/`sandbox` when it has none. Strings and lists are bounded like every record's.
    pub fn append_value(&mut self, kind: &str, value: Value) -> Result<(), AuditError> {
        let mut markers = Vec::new();
        let Value::Object(mut fields) = event::bound_value(value, &mut markers) else {
            return Err(AuditError::NotAnObject(kind.to_string()));
        };
        fields.insert("kind".into(), Value::String(event::bounded_str(kind, &mut markers)));
        if kind == "network" && !fields.contains_key("class_uid") {
            fields.insert("class_uid".into(), event::CLASS_NETWORK_ACTIVITY.into());
        }
        if !markers.is_empty() {
            let list = fields.entry("markers").or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(items) = list {
                items.extend(markers.into_iter().map(Value::from));
            }
        }
        self.append_fields(fields)
    }

    /// Keeps `event` (stamped with the time now) to be written by the next [`AuditLog::flush`]: a burst of
    /// records (an exec per notification) then costs one lock and one write. Records appended by
    /// [`AuditLog::append`] flush the buffer first, so the order is kept.
    pub fn buffer(&mut self, event: &Event) {
        let fields = self.stamped(event.to_fields());
        self.pending.push(fields);
    }

    /// How many records [`AuditLog::buffer`] holds.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Writes the buffered records, chained, under one lock.
    pub fn flush(&mut self) -> Result<(), AuditError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let records = std::mem::take(&mut self.pending);
        self.write_locked(records)
    }

    fn stamped(&self, mut fields: Map<String, Value>) -> Map<String, Value> {
        if !fields.contains_key("time") {
            fields.insert("time".into(), Value::String(crate::time::now_rfc3339()));
        }
        if !fields.contains_key("sandbox") {
            fields.insert("sandbox".into(), Value::String(self.sandbox.clone()));
        }
        fields
    }

    fn append_fields(&mut self, fields: Map<String, Value>) -> Result<(), AuditError> {
        let mut records = std::mem::take(&mut self.pending);
        records.push(self.stamped(fields));
        self.write_locked(records)
    }

    fn write_locked(&mut self, records: Vec<Map<String, Value>>) -> Result<(), AuditError> {
        self.file.lock().map_err(|e| AuditError::Lock(self.path.clone(), e))?;
        let written = self.append_locked(records);
        let _ = self.file.unlock();
        written
    }

    /// Under the lock: chain, seal, write.
    fn append_locked(&mut self, records: Vec<Map<String, Value>>) -> Result<(), AuditError> {
        let size = self.file.metadata().map_err(|e| AuditError::ReadTail(self.path.clone(), e))?.len();
        let (mut prev, needs_newline) = match &self.last {
            Some((end, hash)) if *end == size => (hash.clone(), false),
            _ => read_tail(&mut self.file, size).map_err(|e| AuditError::ReadTail(self.path.clone(), e))?,
        };
        let mut bytes = Vec::new();
        if needs_newline {
            bytes.push(b'\n');
        }
        for fields in records {
            let (mut line, mut hash) = chain::seal(&prev, &fields);
            if line.len() > MAX_RECORD_BYTES {
                (line, hash) = chain::seal(&prev, &too_large(fields, line.len()));
            }
            bytes.extend_from_slice(line.as_bytes());
            bytes.push(b'\n');
            prev = hash;
        }
        // One write of the whole lines: with O_APPEND they land at the end, after every other writer's.
        self.file.write_all(&bytes).map_err(|e| AuditError::Append(self.path.clone(), e))?;
        self.last = Some((size + bytes.len() as u64, prev));
        for (path, copy) in &mut self.copies {
            copy.write_all(&bytes[usize::from(needs_newline)..]).map_err(|e| AuditError::Append(path.clone(), e))?;
        }
        Ok(())
    }
}

fn open_append(path: &Path) -> Result<File, AuditError> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        // std opens with O_CLOEXEC: no sandboxed process inherits the log.
        .open(path)
        .map_err(|e| AuditError::Open(path.to_path_buf(), e))
}

/// The envelope of a record that is too large even after the per-field bounds, with a marker.
fn too_large(fields: Map<String, Value>, size: usize) -> Map<String, Value> {
    let mut kept = Map::new();
    for key in ["time", "sandbox", "kind", "class_uid", "activity"] {
        if let Some(v) = fields.get(key) {
            kept.insert(key.to_string(), v.clone());
        }
    }
    kept.insert("markers".into(), Value::Array(vec![Value::from(MARK_RECORD_TOO_LARGE)]));
    kept.insert("original_bytes".into(), size.into());
    kept
}

/// The hash of the last whole record in the file's last [`TAIL_BYTES`], and whether the file ends in a cut line
/// (so the next line must start on a fresh one). An empty file, or a tail without any record: the genesis.
fn read_tail(file: &mut File, size: u64) -> std::io::Result<(String, bool)> {
    if size == 0 {
        return Ok((GENESIS.to_string(), false));
    }
    let start = size.saturating_sub(TAIL_BYTES);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::with_capacity((size - start) as usize);
    Read::by_ref(file).take(size - start).read_to_end(&mut tail)?;
    let cut = tail.last() != Some(&b'\n');
    // Whole lines only: the last one may be cut, the first may be the end of an earlier record.
    let mut lines: Vec<&[u8]> = tail.split(|&b| b == b'\n').collect();
    if cut {
        lines.pop();
    }
    for line in lines.iter().rev() {
        if let Ok(Value::Object(record)) = serde_json::from_slice::<Value>(line) {
            if let Some(Value::String(hash)) = record.get("hash") {
                return Ok((hash.clone(), cut));
            }
        }
    }
    Ok((GENESIS.to_string(), cut))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ExecRecord;

    /// A test's directory, removed when the test ends (passed or not).
    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A log's path in a directory of its own.
    fn temp_path(name: &str) -> (Scratch, PathBuf) {
        let dir = std::env::temp_dir().join(format!("airlock-audit-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.jsonl");
        (Scratch(dir), path)
    }

    #[test]
    fn two_writers_interleave_into_one_valid_chain() {
        let (_dir, path) = temp_path("two");
        let mut a = AuditLog::open(&path).unwrap().with_sandbox("s");
        let mut b = AuditLog::open(&path).unwrap().with_sandbox("s");
        for i in 0..20 {
            let w = if i % 3 == 0 { &mut b } else { &mut a };
            w.append(&Event::Exec(ExecRecord { pid: i, argv: vec![b"true".to_vec()], ..Default::default() })).unwrap();
        }
        b.append_value("network", serde_json::json!({"protocol": "dns", "name": "example.com", "decision": "deny"}))
            .unwrap();
        let report = crate::verify(&path).unwrap();
        assert_eq!(report.records, 21);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
    }

    #[test]
    fn threads_appending_concurrently_keep_the_chain() {
        let (_dir, path) = temp_path("threads");
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let mut log = AuditLog::open(&path).unwrap();
                    for i in 0..50 {
                        log.append(&Event::Resource { resource: format!("t{t}"), message: i.to_string() }).unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let report = crate::verify(&path).unwrap();
        assert_eq!(report.records, 200);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
    }

    #[test]
    fn a_huge_foreign_record_keeps_its_envelope_only() {
        let (_dir, path) = temp_path("huge");
        let mut log = AuditLog::open(&path).unwrap();
        let items: Vec<String> = (0..200).map(|i| format!("{i}{}", "x".repeat(3000))).collect();
        log.append_value("network", serde_json::json!({ "items": items })).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.len() < MAX_RECORD_BYTES);
        assert!(text.contains(MARK_RECORD_TOO_LARGE));
        assert!(crate::verify(&path).unwrap().problems.is_empty());
    }
}

/// What one exec record costs the supervisor that answers the next exec: buffered (`to_fields`, the time),
/// then chained, sealed and written 512 at a time, as the recorder does. A measurement, not a test (it asserts
/// nothing about time): `cargo test -p airlock-audit --release --lib -- --ignored --nocapture exec_record_cost`.
#[cfg(test)]
mod cost {
    use super::*;
    use crate::event::ExecRecord;
    use std::time::{Duration, Instant};

    #[test]
    #[ignore = "a measurement: run by name"]
    fn exec_record_cost() {
        let dir = std::env::temp_dir().join(format!("airlock-record-cost-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut log = AuditLog::open(dir.join("audit.jsonl")).unwrap().with_sandbox("run-123");
        let event = Event::Exec(ExecRecord {
            pid: 499,
            host_pid: 1102,
            ppid: 2,
            path: b"/bin/true".to_vec(),
            argv: vec![b"/bin/true".to_vec()],
            cwd: b"/".to_vec(),
            ..Default::default()
        });
        const RECORDS: u32 = 20_000;
        for round in 0..3 {
            let started = Instant::now();
            let mut flushing = Duration::ZERO;
            for i in 1..=RECORDS {
                log.buffer(&event);
                if i % 512 == 0 {
                    let flush = Instant::now();
                    log.flush().unwrap();
                    flushing += flush.elapsed();
                }
            }
            log.flush().unwrap();
            let per_record = |d: Duration| d.as_secs_f64() * 1e6 / f64::from(RECORDS);
            eprintln!(
                "round {round}: {:.2} us per record, {:.2} us of it chaining, sealing and writing",
                per_record(started.elapsed()),
                per_record(flushing)
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
