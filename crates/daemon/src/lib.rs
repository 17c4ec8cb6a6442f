//! `airlock serve`: the HTTP API that agent programs drive sandboxes through (the contract is
//! `../shared/design/api.md`). JSON in and out over a Unix socket (permissions are the access control) or a TCP
//! address with a bearer token.
//!
//! The daemon is the front end; the engine is the `airlock` binary itself (see [`engine`]). What the daemon adds:
//! ownership of the sandboxes it made ([`store`]), lifetimes, warm pools, limits, and answering racing clients
//! with `409` instead of a half-done state ([`registry`]).
#![forbid(unsafe_code)]

pub mod agent;
pub mod api;
pub mod engine;
pub mod error;
pub mod exec;
pub mod files_api;
pub mod openapi;
pub mod pools;
pub mod registry;
pub mod server;
pub mod spec;
pub mod store;

pub use server::{serve, ServeConfig, ServeError};
