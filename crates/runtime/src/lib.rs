//! airlock's sandbox engine. Synchronous and single-threaded on purpose: a process can only enter a new user
//! namespace while it has one thread, and the work done after `clone` must stay async-signal-safe.
//!
//! Modules follow kernel concepts; `sandbox::run_sandbox` is the setup order, top to bottom.

// Besides the sys crate (where raw system calls belong), the one crate of the workspace where unsafe is allowed
// (the workspace lints deny it; every unsafe block still needs its SAFETY comment, and unsafe operations inside
// unsafe fns need their own block).
#![allow(unsafe_code)]

pub mod agent;
pub mod attach;
pub mod caps;
pub mod cgroups;
pub mod dev;
pub mod enforcement;
pub mod exec;
pub mod failure;
pub mod gateway;
pub mod host;
pub mod init;
pub mod landlock;
pub mod layer;
pub mod loopdev;
pub mod mounts;
pub mod namespaces;
pub mod net;
pub mod notify;
pub mod plan;
pub mod prepare;
pub mod probe;
pub mod proc;
pub mod sandbox;
pub mod seccomp;
pub mod supervisor;
pub mod tty;
pub mod userns;
