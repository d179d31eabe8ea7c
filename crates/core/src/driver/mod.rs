//! The drivers' sans-IO halves: everything between the machines and a runtime's sockets that
//! every runtime needs, written once.
//!
//! - [`ServerDriver`] is the server's connection table: the [`Server`](crate::server::Server)
//!   hub, the caps on open connections ([`ConnectionLimits`]), and one
//!   [`Transport`](crate::transport::Transport) per socket. Sockets are named by [`SocketId`],
//!   and what it wants done to them comes out as [`DriverAction`]s.
//! - [`ClientDriver`] is the client's: a [`ClientSession`](crate::client::ClientSession), its
//!   TLS, and the checks on Lb; it shows events to a [`ClientFrontend`] and asks for socket
//!   work with [`IoAction`]s.
//!
//! A runtime (blocking threads, or an async loop written once above a small trait, as in the
//! `simple-im` server) supplies sockets, timers and the clock, and nothing else.

pub mod client;
mod config;
mod frontend;
pub mod server;

pub use client::{ClientDriver, IoAction};
pub use config::{
    ConnectionLimits, DriverConfig, Keepalive, Refusal, Reload, DEFAULT_KEEPALIVE_IDLE,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_PER_IP, THREAD_STACK,
};
pub use frontend::ClientFrontend;
pub use server::{DriverAction, ServerDriver, Side, SocketId};
