//! The sans-IO core of a simple instant-messaging protocol (`docs/protocol.md`): exact on the
//! wire, property-tested, and free of sockets, threads, clocks and runtimes. The `simple-im`
//! package runs it on sockets (a server and a client); any other runtime can.
//!
//! # Layout
//!
//! - [`protocol`]: every message as a type, its `nom` parser and its exact formatter, and the
//!   bounded [`LineFramer`].
//! - [`server`]: [`Server`], the hub that owns one [`ServerSession`](server::ServerSession) per
//!   client and routes `/to` and `/toall` through per-recipient queues;
//!   [`BroadcastAggregator`](server::BroadcastAggregator) turns a request's delivery outcomes
//!   into its one `303`/`304`; the messages a cluster node exchanges with its directory.
//! - [`client`]: [`ClientSession`], the interactive client; it reports typed
//!   [`ClientEvent`]s, which [`render`](mod@render) turns into a terminal's lines.
//! - [`transport`]: [`Transport`], one socket's policy as a machine: outbox cap, write
//!   deadline, read grants, half-close, linger.
//! - [`driver`]: what every runtime needs around the machines, written once:
//!   [`ServerDriver`] (the connection table, caps, a transport per socket) and
//!   [`ClientDriver`] (a session, its TLS, the checks on Lb).
//! - [`tls`]: TLS on both connections as a byte transform (rustls), behind the `tls` feature.
//! - [`users`]: the users file; argon2id hashed passwords behind the `argon2` feature.
//! - [`metrics`]: what the server counts, as events into a [`Counters`](metrics::Counters)
//!   sink that an exporter implements.
//!
//! # Features
//!
//! - `argon2` (default): hashed passwords in the users file.
//! - `tls`: TLS on La and Lb (rustls with ring, which compiles C).
//!
//! # The run loop
//!
//! The machines never touch a socket, a thread or a clock. Every one of them is driven the
//! same way: feed what happened (`handle_input(now, …)`, `handle_timeout(now)`), then carry
//! out each action from `poll_output()` until it returns `None`, then sleep until new input
//! or `poll_timeout()`. Nothing changes in between, so any runtime — or a test with a manual
//! clock — can drive them.
//!
//! This drives a server and two clients entirely in memory: bob logs in, then jacky sends him
//! a message and leaves.
//!
//! ```
//! use std::time::Instant;
//! use simple_im_core::client::{ClientConfig, ClientInput, ClientOutput, ClientSession};
//! use simple_im_core::server::{ConnId, Input, Output, Server, ServerConfig};
//! use simple_im_core::render::{render, Rendered};
//! use simple_im_core::users::Users;
//!
//! /// One client: its machine, its connection on the server, what it will type, what it printed.
//! struct Client {
//!     session: ClientSession,
//!     conn: ConnId,
//!     typed: Vec<&'static str>,
//!     printed: Vec<String>,
//! }
//!
//! fn session(clients: &mut [Client], conn: ConnId) -> &mut ClientSession {
//!     &mut clients.iter_mut().find(|c| c.conn == conn).unwrap().session
//! }
//!
//! /// Carries every action out until no machine has anything left to do.
//! fn run_until_idle(server: &mut Server, clients: &mut [Client], now: Instant) {
//!     loop {
//!         let mut busy = false;
//!         for client in clients.iter_mut() {
//!             while let Some(action) = client.session.poll_output() {
//!                 busy = true;
//!                 let conn = client.conn;
//!                 match action {
//!                     // Typed events (a prompt, an answer, a delivery…), printed as a terminal would.
//!                     ClientOutput::Event(event) => {
//!                         if let Some(Rendered::Stdout(line)) = render(&event) {
//!                             client.printed.push(String::from_utf8_lossy(&line).into())
//!                         }
//!                     }
//!                     ClientOutput::ReadLine { .. } if !client.typed.is_empty() => {
//!                         let line = client.typed.remove(0);
//!                         client.session.handle_input(now, ClientInput::Line(line.as_bytes()));
//!                     }
//!                     ClientOutput::ReadLine { .. } => {} // the user has not typed anything yet
//!                     // (A socket driver reads La only when the server grants it: `ReadLa`.)
//!                     ClientOutput::SendLa(bytes) => {
//!                         server.handle_input(now, Input::LaData(conn, &bytes))
//!                     }
//!                     ClientOutput::SendLb(bytes) => {
//!                         server.handle_input(now, Input::LbData(conn, &bytes))
//!                     }
//!                     ClientOutput::ListenLb => {
//!                         let port = 9000 + conn.0 as u16;
//!                         client.session.handle_input(now, ClientInput::LbListening(port));
//!                     }
//!                     ClientOutput::Exit(_) => {}
//!                 }
//!             }
//!         }
//!         while let Some(action) = server.poll_output() {
//!             busy = true;
//!             match action {
//!                 Output::SendLa(conn, bytes) => {
//!                     session(clients, conn).handle_input(now, ClientInput::LaData(&bytes))
//!                 }
//!                 Output::SendLb(conn, bytes) => {
//!                     session(clients, conn).handle_input(now, ClientInput::LbData(&bytes))
//!                 }
//!                 Output::ConnectLb(conn, _address) => {
//!                     session(clients, conn).handle_input(now, ClientInput::LbAccepted);
//!                     server.handle_input(now, Input::LbConnected(conn));
//!                 }
//!                 // An argon2 check: a socket runtime runs it off its event loop.
//!                 Output::CheckPassword(conn, check) => {
//!                     server.handle_input(now, Input::PasswordChecked(conn, check.run()))
//!                 }
//!                 // Only a cluster node (`Server::clustered`) asks its directory and peers.
//!                 Output::ReadLa(_) | Output::Close(_) | Output::Cluster(_) => {}
//!             }
//!         }
//!         if !busy {
//!             return;
//!         }
//!     }
//! }
//!
//! let users = Users::parse(b"jacky 12345\nbob pw\n").unwrap();
//! let mut server = Server::new(users, ServerConfig::default());
//! let now = Instant::now();
//! let mut clients = Vec::new();
//! for typed in [vec!["bob", "pw"], vec!["jacky", "12345", "/to bob Hello!", "/exit"]] {
//!     let conn = server.accept(now, "127.0.0.1:50000".parse().unwrap());
//!     let session = ClientSession::new(now, ClientConfig::default());
//!     clients.push(Client { session, conn, typed, printed: Vec::new() });
//!     run_until_idle(&mut server, &mut clients, now);
//! }
//!
//! assert_eq!(clients[0].printed.last().unwrap(), "/from jacky Hello!");
//! assert_eq!(
//!     clients[1].printed[2..],
//!     [
//!         "101 Authentication successful",
//!         "201 Build connection successful",
//!         "/to bob Hello!",
//!         "303 Message delivery successful",
//!         "/exit",
//!         "310 Bye bye",
//!     ]
//! );
//! ```

#![warn(missing_docs)]

pub mod client;
pub mod driver;
mod hashed;
pub mod metrics;
pub mod protocol;
pub mod render;
pub mod server;
#[cfg(feature = "tls")]
pub mod tls;
#[cfg(not(feature = "tls"))]
#[path = "tls_off.rs"]
pub mod tls;
pub mod transport;
pub mod users;

pub use client::{ClientConfig, ClientEvent, ClientInput, ClientOutput, ClientSession};
pub use driver::{
    ClientDriver, ClientFrontend, DriverAction, DriverConfig, IoAction, ServerDriver,
};
pub use metrics::ServerMetrics;
pub use protocol::{LineFramer, Request, Response};
pub use server::{ConnId, Input, Output, Server, ServerConfig};
pub use transport::{Transport, TransportConfig};
pub use users::Users;
