//! `airlock logs NAME --verify`: re-computes the chain line by line.
//!
//! A line whose `hash` is not the hash of its own content was edited. A line whose `prev` is not the previous
//! line's `hash` follows a removed, moved or inserted line. A last line without its newline was cut. What the
//! chain cannot show: records removed from the end together (the rest is still a valid chain), or a log rewritten
//! from the start by someone who recomputed every hash — the hash is not a signature; see `docs/audit.md`.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::chain::{record_hash, GENESIS};

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot read the audit log {0}")]
    Read(PathBuf, #[source] std::io::Error),
}

/// One thing wrong, on a 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub what: String,
}

/// The result of checking a whole log.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Lines read (records, whole or not).
    pub records: usize,
    /// Everything wrong, first first. Empty: the chain holds.
    pub problems: Vec<Problem>,
    /// The last record's hash (the head of the chain), when there is one.
    pub head: Option<String>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks the log at `path`.
pub fn verify(path: impl AsRef<Path>) -> Result<VerifyReport, VerifyError> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| VerifyError::Read(path.to_path_buf(), e))?;
    let mut reader = std::io::BufReader::new(file);
    let mut report = VerifyReport::default();
    // The hash the next line's `prev` must name: the last line's own `hash` as written (so one edited line is
    // reported once, not again on every line after it).
    let mut expected_prev = GENESIS.to_string();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(|e| VerifyError::Read(path.to_path_buf(), e))?;
        if n == 0 {
            break;
        }
        report.records += 1;
        let line = report.records;
        let whole = buf.last() == Some(&b'\n');
        let content = if whole { &buf[..buf.len() - 1] } else { &buf[..] };
        let mut problem = |what: String| report.problems.push(Problem { line, what });
        let record = match serde_json::from_slice::<Value>(content) {
            Ok(Value::Object(record)) => record,
            Ok(_) | Err(_) if !whole => {
                problem("the log ends in a cut line (truncated tail: the record's end is missing)".into());
                break;
            }
            Ok(_) => {
                problem("not a JSON object".into());
                continue;
            }
            Err(e) => {
                problem(format!("not valid JSON ({e})"));
                continue;
            }
        };
        if !whole {
            problem("the last line has no newline (truncated tail)".into());
        }
        let (Some(Value::String(prev)), Some(Value::String(hash))) = (record.get("prev"), record.get("hash")) else {
            problem("no prev/hash fields: not a chained record (inserted?)".into());
            continue;
        };
        if *prev != expected_prev {
            problem(if line == 1 {
                "prev is not the start of a chain: records before this one were removed".to_string()
            } else {
                format!("prev does not match line {}'s hash: a record was removed, inserted or moved here", line - 1)
            });
        }
        let computed = record_hash(prev, &record);
        if computed != *hash {
            problem("hash does not match the record's content: the record was edited".into());
        }
        expected_prev = hash.clone();
        report.head = Some(hash.clone());
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AuditLog, Event};

    /// A test's directory, removed when the test ends (passed or not).
    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A log of `n` records in a directory of its own.
    fn log_of(n: usize, name: &str) -> (Scratch, PathBuf, Vec<String>) {
        let dir = std::env::temp_dir().join(format!("airlock-verify-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.jsonl");
        let mut log = AuditLog::open(&path).unwrap().with_sandbox("t");
        for i in 0..n {
            log.append(&Event::Resource { resource: "r".into(), message: format!("event {i}") }).unwrap();
        }
        let lines = std::fs::read_to_string(&path).unwrap().lines().map(str::to_string).collect();
        (Scratch(dir), path, lines)
    }

    fn write(path: &Path, lines: &[String]) {
        std::fs::write(path, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    }

    #[test]
    fn intact_log_verifies() {
        let (_dir, path, _) = log_of(5, "intact");
        let r = verify(&path).unwrap();
        assert!(r.ok(), "{:?}", r.problems);
        assert_eq!(r.records, 5);
    }

    #[test]
    fn edit_delete_reorder_insert_and_cut_are_each_found_on_their_line() {
        let (_dir, path, lines) = log_of(5, "tamper");
        let mut edited = lines.clone();
        edited[2] = edited[2].replace("event 2", "event X");
        write(&path, &edited);
        assert_eq!(verify(&path).unwrap().problems[0].line, 3);

        let mut deleted = lines.clone();
        deleted.remove(1);
        write(&path, &deleted);
        let p = verify(&path).unwrap().problems;
        assert_eq!(p[0].line, 2);
        assert!(p[0].what.contains("removed"));

        let mut reordered = lines.clone();
        reordered.swap(3, 4);
        write(&path, &reordered);
        assert_eq!(verify(&path).unwrap().problems[0].line, 4);

        let mut inserted = lines.clone();
        inserted.insert(2, lines[0].clone());
        write(&path, &inserted);
        assert_eq!(verify(&path).unwrap().problems[0].line, 3);

        let mut text = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
        text.truncate(text.len() - 10);
        std::fs::write(&path, text).unwrap();
        let p = verify(&path).unwrap().problems;
        assert_eq!(p[0].line, 5);
        assert!(p[0].what.contains("truncated"));
    }

    #[test]
    fn a_writer_after_a_cut_tail_starts_a_new_line_chained_to_the_last_whole_record() {
        let (_dir, path, lines) = log_of(3, "aftercut");
        let mut text = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
        text.push_str("{\"kind\":\"ex");
        std::fs::write(&path, text).unwrap();
        let mut log = AuditLog::open(&path).unwrap();
        log.append(&Event::Resource { resource: "r".into(), message: "after".into() }).unwrap();
        let r = verify(&path).unwrap();
        assert_eq!(r.records, 5);
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert_eq!(r.problems[0].line, 4);
    }
}
