//! [`ClientFrontend`]: where a client's events go and its lines of input come from.

use crate::client::ClientEvent;

/// Where a client's events go and its lines of input come from: a terminal, a load generator,
/// a test. It sees what the session reports, never a socket.
pub trait ClientFrontend {
    /// Shows (or counts) what happened.
    fn show(&mut self, event: ClientEvent);
    /// The session waits for the next line of input (a password if `secret`); it comes back
    /// as a [`ClientInput::Line`](crate::client::ClientInput::Line).
    fn read_line(&mut self, secret: bool);
}
