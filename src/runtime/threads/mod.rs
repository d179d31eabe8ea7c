//! The std-thread runtime: the same sans-IO core on blocking `std::net` sockets and
//! `std::thread`, the assignment's own model of a thread per connection.
//!
//! One thread owns the driver ([`ServerDriver`](simple_im_core::driver::ServerDriver) or
//! [`ClientDriver`](simple_im_core::driver::ClientDriver)) and is the only one that touches it. Every
//! other thread blocks on one socket (or standard input) and hands what happened to it as an
//! event over a [`std::sync::mpsc`] channel; the owner waits on that channel with
//! `recv_timeout` until the driver's `poll_timeout`, so timers need no thread of their own.

pub mod client;
pub mod server;

use std::io::{self, ErrorKind, Read};
use std::net::TcpStream;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

/// Starts a named thread with a stack of `stack` bytes (`None`: the default stack). Logs and
/// returns `false` if the system refuses, which under load means out of threads or memory.
fn spawn(name: String, stack: Option<usize>, body: impl FnOnce() + Send + 'static) -> bool {
    let mut builder = thread::Builder::new().name(name);
    if let Some(stack) = stack {
        builder = builder.stack_size(stack);
    }
    match builder.spawn(body) {
        Ok(_) => true,
        Err(error) => {
            log::warn!("cannot start a thread: {error}");
            false
        }
    }
}

/// One read from a socket shared between threads, retried when a signal interrupts it.
fn read_some(mut stream: &TcpStream, buffer: &mut [u8]) -> io::Result<usize> {
    loop {
        match stream.read(buffer) {
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            result => return result,
        }
    }
}

/// The loop's wait: the next event, or `None` once `deadline` (if any) has come first, or
/// `Err` if every sender is gone.
fn recv_until<T>(inbox: &Receiver<T>, deadline: Option<Instant>) -> Result<Option<T>, ()> {
    // No deadline: a wait longer than any, which `recv_timeout` takes as none at all.
    let wait = deadline.map_or(Duration::MAX, |at| {
        at.saturating_duration_since(Instant::now())
    });
    match inbox.recv_timeout(wait) {
        Ok(event) => Ok(Some(event)),
        Err(RecvTimeoutError::Timeout) => Ok(None),
        Err(RecvTimeoutError::Disconnected) => Err(()),
    }
}
