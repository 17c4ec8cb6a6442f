//! airlock's policy: what a sandbox may do, as plain data, parsed and validated without touching the system.
#![forbid(unsafe_code)]

#[doc(hidden)]
pub mod fuzzing;
pub mod names;
pub mod profile;
pub mod sandbox;
pub mod seccomp;
pub mod units;
