//! The instant-messaging server and client of `docs/protocol.md` on real sockets: the runtimes,
//! the async loop written once above them, the terminal, the cluster engine, the metrics
//! exporter and TLS's files. The protocol itself (every machine, sans-IO) is the
//! `simple-im-core` crate; this one only carries its inputs in and its actions out.
//!
//! # Layout
//!
//! - [`driver`]: written once for every async runtime: the [`Runtime`](driver::Runtime) trait,
//!   the server loop ([`serve`](driver::serve)) around the core's `ServerDriver`, and
//!   [`AsyncClient`](driver::AsyncClient) around its `ClientDriver`.
//! - [`runtime`]: the glue of each runtime: smol and tokio behind the trait, an io_uring reactor
//!   of its own (opt-in), and std threads driving the sans-IO drivers directly on blocking sockets
//!   (`docs/runtimes.md`).
//! - [`terminal`]: the client's front-end on standard input and output.
//! - [`cluster`]: the cluster engine on Redis: a node's directory, its lease, its messages to
//!   the other nodes (the `cluster` feature).
//! - [`metrics`]: the hub's counts as Prometheus series, and the endpoint that serves them (the
//!   `metrics` feature).
//! - [`tls`]: the core's TLS layer loaded from PEM files and the system's roots (the `tls`
//!   feature).
//! - [`cli`] and [`signals`]: what the binaries' command lines and shutdowns share;
//!   [`config_file`] and [`reload`]: im-server's `--config` file, and what SIGHUP changes.
//!
//! A feature left out keeps its command-line option, which then says that this build lacks it.

#![warn(missing_docs)]

pub mod cli;
#[cfg(feature = "cluster")]
pub mod cluster;
#[cfg(not(feature = "cluster"))]
#[path = "cluster_off.rs"]
pub mod cluster;
pub mod config_file;
pub mod driver;
mod line_editor;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(not(feature = "metrics"))]
#[path = "metrics_off.rs"]
pub mod metrics;
pub mod reload;
pub mod runtime;
pub mod signals;
pub mod terminal;
pub mod tls;
