//! The smol client: [`Smol`] under the client loop of [`crate::driver::client`], with the
//! terminal as its front-end. Everything else is written once, above the runtime trait.

use super::smol::Smol;
use crate::driver::client::{self, ServerAddrs, CLIENT_EVENT_QUEUE};
use crate::terminal::Terminal;

/// Runs the client of docs/protocol.md §4 against `server` (the first of its addresses that
/// answers) on the current thread until it exits, and returns the process exit code.
pub fn run(server: ServerAddrs) -> i32 {
    Smol::block_on(move |smol| {
        Box::pin(async move {
            // Bounded: a user (or a pipe) far ahead of the server waits in the reader thread.
            let (sender, input) = async_channel::bounded(CLIENT_EVENT_QUEUE);
            let terminal = Terminal::start(move |typed| sender.send_blocking(typed).is_ok());
            let config = terminal.config();
            client::run(smol, &server, config, terminal, input).await
        })
    })
}
