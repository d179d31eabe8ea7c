//! A sans-IO implementation of a simple instant-messaging protocol (see `PROTOCOL.md`).
//! (Crate docs with the run loop: to be written.)

pub mod client;
pub mod protocol;
pub mod runtime;
pub mod server;
pub mod users;
