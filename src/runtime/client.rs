//! The smol client: [`Smol`] under the client loop ([`run_on`], written once above the runtime
//! trait, around [`AsyncClient`]), with the terminal as its front-end.

use std::rc::Rc;

use futures_lite::future;
use simple_im_core::client::ClientConfig;
use simple_im_core::driver::ClientFrontend;

use super::smol::Smol;
use crate::driver::client::{
    AsyncClient, LbPorts, Ready, Watch, CLIENT_EVENT_QUEUE, CLIENT_READ_CHUNK,
};
use crate::driver::{Runtime, ServerAddrs};
use crate::terminal::{cannot_connect, Terminal, UserInput};

/// Runs the client of docs/protocol.md §4 against `server` (the first of its addresses that
/// answers) on the current thread until it exits, and returns the process exit code.
pub fn run(server: ServerAddrs) -> i32 {
    Smol::block_on(move |smol| {
        Box::pin(async move {
            // Bounded: a user (or a pipe) far ahead of the server waits in the reader thread.
            let (sender, input) = async_channel::bounded(CLIENT_EVENT_QUEUE);
            let terminal = Terminal::start(move |typed| sender.send_blocking(typed).is_ok());
            let config = terminal.config();
            run_on(smol, &server, config, terminal, input).await
        })
    })
}

/// Runs a client against `server` on any runtime until it exits, with user input from `input`
/// and events shown by `frontend`; returns the exit code (1 if La cannot be connected).
pub async fn run_on<R: Runtime, F: ClientFrontend>(
    runtime: R,
    server: &ServerAddrs,
    config: ClientConfig,
    frontend: F,
    input: async_channel::Receiver<UserInput>,
) -> i32 {
    let lb_ports = Rc::new(LbPorts::System);
    let connected = AsyncClient::connect_any(runtime, server, config, frontend, lb_ports).await;
    let mut client = match connected {
        Ok(client) => client,
        Err(err) => return cannot_connect(server, &err),
    };
    let mut scratch = vec![0; CLIENT_READ_CHUNK];
    enum Wake<S> {
        User(UserInput),
        Socket(Ready<S>),
    }
    loop {
        if let Some(code) = client.driver().exit_code() {
            return code;
        }
        let user = async {
            match input.recv().await {
                Ok(input) => Wake::User(input),
                // The terminal's threads hold senders for good; if they were gone, nothing
                // more would come from the user, and the sockets still decide.
                Err(_) => future::pending().await,
            }
        };
        let socket = async { Wake::Socket(client.wait(Watch::BOTH).await) };
        match future::or(user, socket).await {
            Wake::User(input) => client.handle_user(input.as_client_input()).await,
            Wake::Socket(ready) => client.on_ready(ready, &mut scratch).await,
        }
    }
}
