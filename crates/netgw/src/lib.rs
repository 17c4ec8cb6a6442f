//! airlock's network gateway for `--net allow`.
//!
//! The sandbox's network namespace has one TUN interface (a VM: one virtio-net NIC whose frames arrive on a
//! datagram socket, see `ether`) whose packets this crate terminates with a user-space TCP/IP stack; connections
//! the allow-list permits are re-originated from the host. See README.md beside this crate for the design.
#![forbid(unsafe_code)]

pub mod addr;
mod device;
mod dns;
pub mod ether;
mod event;
mod filter;
#[doc(hidden)]
pub mod fuzzing;
mod gateway;
mod inspect;
mod proxy;
mod relay;
mod rules;
mod stack;

pub use ether::Link;
pub use event::{NetEvent, DENIALS_PER_WINDOW, DENIAL_WINDOW};
pub use gateway::{
    serve_tun, serve_tun_blocking, serve_tun_blocking_with, GatewayConfig, GatewayError, GatewayOptions,
};
