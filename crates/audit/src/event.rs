//! The record schema. Every record is one JSON object with at least `time` (RFC 3339, UTC), `sandbox` (its
//! name), `kind` (what happened), `class_uid` (the OCSF class it follows), `prev` and `hash` (the chain). The
//! rest depends on `kind`; `docs/audit.md` lists every field. Field names follow OCSF where a class fits:
//! Process Activity (1007) for `exec` and `denied`, File System Activity (1001) for `files`/`file_write`,
//! Network Activity (4001) for the gateway's `network` records; lifecycle and resource records use the
//! Application Lifecycle class (6002) loosely.
//!
//! Everything that comes from inside the sandbox (argv, paths, file names) is untrusted: it is cut to the bounds
//! below with an explicit marker, and bytes that are not UTF-8 are replaced (U+FFFD) and marked, so every record
//! is valid JSON of bounded size.

use serde::Serialize;
use serde_json::{Map, Value};

/// Longest string kept in a record (bytes); longer ones are cut at a character boundary and marked.
pub const MAX_STRING_BYTES: usize = 4096;
/// Most elements kept in a list (argv, file changes); the rest is counted in a marker.
pub const MAX_LIST_ITEMS: usize = 256;
/// Largest record (bytes of its line, newline excluded). A record still larger after the per-field bounds keeps
/// only its envelope and a marker.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;

/// Appended to a string that was cut.
pub const TRUNCATED_MARKER: &str = "…[truncated]";
/// Markers (in a record's `markers` list) saying what was done to fit or clean it.
pub const MARK_TRUNCATED: &str = "truncated";
pub const MARK_NOT_UTF8: &str = "not_utf8";
pub const MARK_PROCESS_GONE: &str = "process_gone";
pub const MARK_UNREADABLE: &str = "unreadable";
pub const MARK_RECORD_TOO_LARGE: &str = "record_too_large";
/// An exec of a path that did not exist when it was recorded (a `PATH` search trying each directory): the kernel
/// will answer `ENOENT`, nothing ran.
pub const MARK_NOT_FOUND: &str = "not_found";

/// OCSF class ids.
pub const CLASS_FILE_SYSTEM_ACTIVITY: u32 = 1001;
pub const CLASS_PROCESS_ACTIVITY: u32 = 1007;
pub const CLASS_NETWORK_ACTIVITY: u32 = 4001;
pub const CLASS_APPLICATION_LIFECYCLE: u32 = 6002;

/// One exec seen in the sandbox (`execve`/`execveat` caught by seccomp user notification, recorded before the
/// kernel carries it out).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExecRecord {
    /// Pid inside the sandbox's pid namespace (0 when the process was gone before it could be read).
    pub pid: i32,
    /// The same process's pid on the host.
    pub host_pid: i32,
    /// Parent's pid inside (0 when unknown).
    pub ppid: i32,
    /// The path handed to execve, as the process wrote it (relative paths are relative to `cwd`).
    pub path: Vec<u8>,
    pub argv: Vec<Vec<u8>>,
    /// Arguments past the ones read (the argv was longer than the bound).
    pub argv_omitted: usize,
    pub cwd: Vec<u8>,
    /// `execveat` with a directory descriptor other than `AT_FDCWD`.
    pub dirfd: Option<i32>,
    /// What could not be read or was cut (`process_gone`, `unreadable`, `truncated`).
    pub markers: Vec<&'static str>,
    /// The exec failed with this errno (positive), when the source knows (the kernel's exec tracepoints do;
    /// seccomp notification records an exec before the kernel carries it out).
    pub error: Option<i32>,
}

/// A syscall the seccomp deny-list refused.
#[derive(Debug, Clone, Serialize)]
pub struct SyscallDenial {
    pub pid: i32,
    pub host_pid: i32,
    pub syscall: String,
    pub nr: i64,
    /// The errno returned (positive number) and its name.
    pub errno: i32,
    pub errno_name: String,
    /// 1-based index of the profile rule that refused it.
    pub rule: usize,
}

/// One entry of the workspace layer's change summary.
#[derive(Debug, Clone, Serialize)]
pub struct FileChange {
    pub path: String,
    /// `added`, `modified`, `deleted`, ...
    pub kind: String,
    pub size: Option<u64>,
}

/// An event, before it gets its envelope (`time`, `sandbox`) and chain fields.
#[derive(Debug, Clone)]
pub enum Event {
    /// The sandbox's state was created on the host (before anything ran).
    /// `command` is the run's argv; `None` for a long-lived sandbox (`airlock create`), which runs nothing until
    /// `airlock exec` (whose `attached` records name the commands). `rootfs` and `network` are what was made:
    /// structured summaries (see `docs/audit.md`).
    Created {
        command: Option<Vec<String>>,
        workspace: Option<String>,
        long_lived: bool,
        rootfs: Option<Value>,
        network: Option<Value>,
    },
    /// The command was released into a built sandbox. `policy` is a summary; `policy_sha256` fingerprints the
    /// whole resolved policy.
    Started {
        policy: Value,
        policy_sha256: String,
    },
    /// The run (or the long-lived sandbox) ended.
    Exited {
        status: i32,
        reason: String,
        duration_ms: u64,
        resources: Option<Value>,
    },
    Exec(ExecRecord),
    Denied(SyscallDenial),
    /// A limit was hit: `oom_kill`, `pids_limit`, `timeout`.
    Resource {
        resource: String,
        message: String,
    },
    /// The workspace layer's changes (at exit, at a checkpoint). `total`: how many there are, when counted
    /// (`None`: the walk stopped at its bound; there are more than listed).
    Files {
        trigger: String,
        label: Option<String>,
        changes: Vec<FileChange>,
        total: Option<usize>,
    },
    /// Learn mode: a write the policy would refuse (a path outside every writable place).
    FileWrite {
        pid: i32,
        syscall: String,
        path: Vec<u8>,
        writable: bool,
    },
    /// `airlock exec` started a command in a long-lived sandbox.
    Attached {
        command: Vec<String>,
    },
    /// A change to the workspace layer made from outside the sandbox: `action` is `commit`, `commit_refused`,
    /// `discard` or `rollback`. `paths`: what it applied, dropped or found in conflict (bounded; `total` counts
    /// them all); `label`: the checkpoint a rollback returned to; `running`: the sandbox was running.
    Workspace {
        action: String,
        label: Option<String>,
        paths: Vec<String>,
        total: usize,
        running: bool,
    },
}

impl Event {
    /// The record's `kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Created { .. } => "created",
            Event::Started { .. } => "started",
            Event::Exited { .. } => "exited",
            Event::Exec(_) => "exec",
            Event::Denied(_) => "denied",
            Event::Resource { .. } => "resource",
            Event::Files { .. } => "files",
            Event::FileWrite { .. } => "file_write",
            Event::Attached { .. } => "attached",
            Event::Workspace { .. } => "workspace",
        }
    }

    /// The record body (no envelope), bounded.
    pub fn to_fields(&self) -> Map<String, Value> {
        let mut m = Map::new();
        let mut markers: Vec<&'static str> = Vec::new();
        let class = match self {
            Event::Created { command, workspace, long_lived, rootfs, network } => {
                if let Some(command) = command {
                    m.insert("command".into(), strings(command, &mut markers));
                }
                if let Some(w) = workspace {
                    m.insert("workspace".into(), Value::String(bounded_str(w, &mut markers)));
                }
                m.insert("long_lived".into(), Value::Bool(*long_lived));
                if let Some(r) = rootfs {
                    m.insert("rootfs".into(), bound_value(r.clone(), &mut markers));
                }
                if let Some(n) = network {
                    m.insert("network".into(), bound_value(n.clone(), &mut markers));
                }
                CLASS_APPLICATION_LIFECYCLE
            }
            Event::Started { policy, policy_sha256 } => {
                m.insert("policy".into(), bound_value(policy.clone(), &mut markers));
                m.insert("policy_sha256".into(), Value::String(policy_sha256.clone()));
                CLASS_APPLICATION_LIFECYCLE
            }
            Event::Exited { status, reason, duration_ms, resources } => {
                m.insert("status".into(), (*status).into());
                m.insert("reason".into(), Value::String(bounded_str(reason, &mut markers)));
                m.insert("duration_ms".into(), (*duration_ms).into());
                if let Some(r) = resources {
                    m.insert("resources".into(), bound_value(r.clone(), &mut markers));
                }
                CLASS_APPLICATION_LIFECYCLE
            }
            Event::Exec(e) => {
                markers.extend(e.markers.iter().copied());
                let mut argv: Vec<Value> = e.argv.iter().map(|a| Value::String(text(a, &mut markers))).collect();
                let mut omitted = e.argv_omitted;
                if argv.len() > MAX_LIST_ITEMS {
                    omitted += argv.len() - MAX_LIST_ITEMS;
                    argv.truncate(MAX_LIST_ITEMS);
                }
                if omitted > 0 {
                    markers.push(MARK_TRUNCATED);
                }
                let mut process = Map::new();
                process.insert("pid".into(), e.pid.into());
                process.insert("host_pid".into(), e.host_pid.into());
                process.insert("file".into(), serde_json::json!({ "path": text(&e.path, &mut markers) }));
                process.insert("cmd_line".into(), Value::String(bounded_str(&cmd_line(&argv), &mut markers)));
                process.insert("argv".into(), Value::Array(argv));
                if omitted > 0 {
                    process.insert("argv_omitted".into(), omitted.into());
                }
                process.insert("working_directory".into(), Value::String(text(&e.cwd, &mut markers)));
                process.insert("parent_process".into(), serde_json::json!({ "pid": e.ppid }));
                if let Some(fd) = e.dirfd {
                    process.insert("dirfd".into(), fd.into());
                }
                m.insert("activity".into(), "launch".into());
                if let Some(errno) = e.error {
                    m.insert("errno".into(), errno.into());
                    let name = sys::errno_name(errno).map_or_else(|| format!("errno {errno}"), str::to_string);
                    m.insert("errno_name".into(), name.into());
                }
                m.insert("process".into(), Value::Object(process));
                CLASS_PROCESS_ACTIVITY
            }
            Event::Denied(d) => {
                m.insert("activity".into(), "syscall_denied".into());
                m.insert("process".into(), serde_json::json!({ "pid": d.pid, "host_pid": d.host_pid }));
                m.insert("syscall".into(), Value::String(bounded_str(&d.syscall, &mut markers)));
                m.insert("nr".into(), d.nr.into());
                m.insert("errno".into(), d.errno.into());
                m.insert("errno_name".into(), Value::String(d.errno_name.clone()));
                m.insert("rule".into(), d.rule.into());
                CLASS_PROCESS_ACTIVITY
            }
            Event::Resource { resource, message } => {
                m.insert("resource".into(), Value::String(bounded_str(resource, &mut markers)));
                m.insert("message".into(), Value::String(bounded_str(message, &mut markers)));
                CLASS_APPLICATION_LIFECYCLE
            }
            Event::Files { trigger, label, changes, total } => {
                m.insert("trigger".into(), Value::String(bounded_str(trigger, &mut markers)));
                if let Some(l) = label {
                    m.insert("label".into(), Value::String(bounded_str(l, &mut markers)));
                }
                let kept: Vec<Value> = changes
                    .iter()
                    .take(MAX_LIST_ITEMS)
                    .map(|c| {
                        serde_json::json!({
                            "path": bounded_str(&c.path, &mut markers),
                            "kind": c.kind,
                            "size": c.size,
                        })
                    })
                    .collect();
                if total.is_none_or(|t| t > kept.len()) {
                    markers.push(MARK_TRUNCATED);
                }
                m.insert("files".into(), Value::Array(kept));
                m.insert("total".into(), (*total).into());
                CLASS_FILE_SYSTEM_ACTIVITY
            }
            Event::FileWrite { pid, syscall, path, writable } => {
                m.insert("activity".into(), "write_attempt".into());
                m.insert("process".into(), serde_json::json!({ "pid": pid }));
                m.insert("syscall".into(), Value::String(syscall.clone()));
                m.insert("file".into(), serde_json::json!({ "path": text(path, &mut markers) }));
                m.insert("writable".into(), Value::Bool(*writable));
                CLASS_FILE_SYSTEM_ACTIVITY
            }
            Event::Attached { command } => {
                m.insert("command".into(), strings(command, &mut markers));
                CLASS_APPLICATION_LIFECYCLE
            }
            Event::Workspace { action, label, paths, total, running } => {
                m.insert("action".into(), Value::String(bounded_str(action, &mut markers)));
                if let Some(l) = label {
                    m.insert("label".into(), Value::String(bounded_str(l, &mut markers)));
                }
                if *total > paths.len().min(MAX_LIST_ITEMS) {
                    markers.push(MARK_TRUNCATED);
                }
                m.insert("paths".into(), strings(paths, &mut markers));
                m.insert("total".into(), (*total).into());
                m.insert("running".into(), Value::Bool(*running));
                CLASS_FILE_SYSTEM_ACTIVITY
            }
        };
        m.insert("kind".into(), self.kind().into());
        m.insert("class_uid".into(), class.into());
        markers.sort_unstable();
        markers.dedup();
        if !markers.is_empty() {
            m.insert("markers".into(), markers.into_iter().map(Value::from).collect());
        }
        m
    }
}

/// argv joined with spaces, arguments with spaces or quotes single-quoted: for reading, not for re-running.
fn cmd_line(argv: &[Value]) -> String {
    argv.iter()
        .filter_map(Value::as_str)
        .map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
                format!("'{}'", a.replace('\'', "'\\''"))
            } else {
                a.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn strings(items: &[String], markers: &mut Vec<&'static str>) -> Value {
    if items.len() > MAX_LIST_ITEMS {
        markers.push(MARK_TRUNCATED);
    }
    items.iter().take(MAX_LIST_ITEMS).map(|s| Value::String(bounded_str(s, markers))).collect()
}

/// Bytes from the sandbox as text: invalid UTF-8 replaced (and marked), cut to [`MAX_STRING_BYTES`].
pub fn text(bytes: &[u8], markers: &mut Vec<&'static str>) -> String {
    let cut = bytes.len() > MAX_STRING_BYTES;
    let head = &bytes[..bytes.len().min(MAX_STRING_BYTES)];
    let s = match std::str::from_utf8(head) {
        Ok(s) => s.to_string(),
        // A cut in the middle of a character is not garbage: drop the partial character only.
        Err(e) if cut && e.error_len().is_none() => String::from_utf8_lossy(&head[..e.valid_up_to()]).into_owned(),
        Err(_) => {
            markers.push(MARK_NOT_UTF8);
            String::from_utf8_lossy(head).into_owned()
        }
    };
    if cut {
        markers.push(MARK_TRUNCATED);
        format!("{s}{TRUNCATED_MARKER}")
    } else {
        s
    }
}

/// A string cut to [`MAX_STRING_BYTES`] at a character boundary, with the marker.
pub fn bounded_str(s: &str, markers: &mut Vec<&'static str>) -> String {
    if s.len() <= MAX_STRING_BYTES {
        return s.to_string();
    }
    let mut end = MAX_STRING_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    markers.push(MARK_TRUNCATED);
    format!("{}{TRUNCATED_MARKER}", &s[..end])
}

/// Any JSON value with every string and list bounded (for values that come from other crates).
pub fn bound_value(value: Value, markers: &mut Vec<&'static str>) -> Value {
    match value {
        Value::String(s) => Value::String(bounded_str(&s, markers)),
        Value::Array(items) => {
            if items.len() > MAX_LIST_ITEMS {
                markers.push(MARK_TRUNCATED);
            }
            Value::Array(items.into_iter().take(MAX_LIST_ITEMS).map(|v| bound_value(v, markers)).collect())
        }
        Value::Object(map) => {
            if map.len() > MAX_LIST_ITEMS {
                markers.push(MARK_TRUNCATED);
            }
            let mut out = Map::new();
            for (k, v) in map.into_iter().take(MAX_LIST_ITEMS) {
                let key = bounded_str(&k, markers);
                out.insert(key, bound_value(v, markers));
            }
            Value::Object(out)
        }
        scalar => scalar,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_huge_argv_stay_bounded_and_marked() {
        let record = ExecRecord {
            argv: vec![vec![0xff, 0xfe, b'a', 0], vec![b'x'; 3 * MAX_STRING_BYTES]],
            argv_omitted: 5,
            ..Default::default()
        };
        let m = Event::Exec(record).to_fields();
        let line = serde_json::to_string(&m).unwrap();
        assert!(line.len() < MAX_RECORD_BYTES);
        let markers = m["markers"].as_array().unwrap();
        assert!(markers.contains(&Value::from(MARK_NOT_UTF8)));
        assert!(markers.contains(&Value::from(MARK_TRUNCATED)));
        assert_eq!(m["process"]["argv_omitted"], 5);
        assert!(m["process"]["argv"][1].as_str().unwrap().ends_with(TRUNCATED_MARKER));
    }

    #[test]
    fn a_cut_inside_a_character_is_not_called_garbage() {
        let mut markers = Vec::new();
        let s = "é".repeat(MAX_STRING_BYTES);
        let t = text(s.as_bytes(), &mut markers);
        assert_eq!(markers, vec![MARK_TRUNCATED]);
        assert!(t.ends_with(TRUNCATED_MARKER));
    }
}
