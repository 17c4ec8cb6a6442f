//! airlock's audit log: what happened in a sandbox, as hash-chained JSON lines, written on the host by processes
//! outside the sandbox (the supervisor of `run`/`create`, each `airlock exec`, later the network gateway).
//!
//! - [`event`]: the record schema (field names after OCSF's process, file and network activity classes, see
//!   `docs/audit.md`), and the bounds every record is cut to (strings, lists, whole record).
//! - [`log`]: [`AuditLog`], the writer. Several processes append to one file safely: each append takes an
//!   exclusive `flock`, reads the previous record's hash from the file's tail, and writes one line with
//!   `O_APPEND`.
//! - [`verify`]: re-computes the chain and names the first line that was edited, removed, moved or cut.
#![forbid(unsafe_code)]

pub mod chain;
pub mod event;
pub mod log;
pub mod time;
pub mod verify;

pub use event::{Event, ExecRecord, FileChange, SyscallDenial};
pub use log::{AuditError, AuditLog};
pub use verify::{verify, Problem, VerifyError, VerifyReport};
