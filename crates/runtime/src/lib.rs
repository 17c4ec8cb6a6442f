//! airlock's sandbox engine. Synchronous and single-threaded on purpose: a process can only enter a new user
//! namespace while it has one thread, and the work done after `clone` must stay async-signal-safe.
//!
//! Modules follow kernel concepts; `sandbox::run_sandbox` is the setup order, top to bottom.

// No raw system call here: they are the sys crate's, the one crate of the workspace with unsafe code.
#![forbid(unsafe_code)]

pub mod agent;
pub mod attach;
pub mod caps;
pub mod cgroups;
pub mod dev;
pub mod enforcement;
pub mod exec;
pub mod exec_tracepoints;
pub mod failure;
pub mod fault;
pub mod gateway;
pub mod host;
pub mod init;
pub mod landlock;
pub mod mounts;
pub mod namespaces;
pub mod net;
pub mod notify;
pub mod plan;
pub mod prepare;
pub mod proc;
pub mod rootfs;
pub mod sandbox;
pub mod seccomp;
pub mod supervisor;
pub mod tty;
pub mod userns;
