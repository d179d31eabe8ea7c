//! Runtime adapters: they carry bytes between sockets and the sans-IO core, and nothing else.

pub mod client;
pub mod server;
