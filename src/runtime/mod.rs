//! The runtimes: each supplies sockets, timers and tasks to the [drivers](crate::driver), and
//! nothing else.
//!
//! - [`smol`]: smol and async-net, one thread, behind [`Runtime`](crate::driver::Runtime);
//!   the default.
//! - [`threads`]: blocking `std::net` sockets, a thread per socket, driving the same
//!   [`ServerDriver`](simple_im_core::driver::ServerDriver) directly.
//! - `tokio` (feature `tokio`, default): tokio's current-thread runtime and its reactor, which
//!   registers each socket once.
//! - `uring` (Linux, opt-in feature `uring`): io_uring under the same async loop, reads and
//!   writes submitted to one ring in batches, on an executor of its own (`local.rs`).
//! - [`Kind`] names them on the command line and [`serve`] runs a [`Service`] on one. A build
//!   without a runtime's feature still names it, and says that it lacks it when asked for it.
//!
//! The client is driven by [`crate::driver::client`] on smol and on threads; its terminal is
//! [`crate::terminal`].

pub mod client;
#[cfg(all(target_os = "linux", feature = "uring"))]
mod local;
mod service;
pub mod smol;
pub mod threads;
#[cfg(feature = "tokio")]
pub mod tokio;
#[cfg(all(target_os = "linux", feature = "uring"))]
pub mod uring;

use std::fmt;
use std::net::TcpListener;
use std::str::FromStr;

use simple_im_core::driver::DriverConfig;

pub use service::{serve_on, Role, ServeError, Service};

/// Runs `service` on `kind`'s runtime, on this thread, until a stop it is asked for is done;
/// when it returns, every connection is closed.
pub fn serve(kind: Kind, listener: TcpListener, service: Service) -> Result<(), ServeError> {
    match kind {
        Kind::Smol => smol::serve(listener, service),
        Kind::Threads => match service.role {
            Role::Alone => {
                (service.ready)(None);
                let Service {
                    users,
                    config,
                    driver,
                    commands,
                    ..
                } = service;
                threads::server::serve(listener, users, config, driver, commands);
                Ok(())
            }
            #[cfg(feature = "cluster")]
            Role::Node(_) => Err(ServeError::Unsupported(
                "--cluster needs an async runtime (smol, tokio or uring), not threads",
            )),
        },
        #[cfg(feature = "tokio")]
        Kind::Tokio => tokio::serve(listener, service),
        #[cfg(not(feature = "tokio"))]
        Kind::Tokio => Err(ServeError::Unsupported(
            "this build has no tokio runtime (the `tokio` feature)",
        )),
        #[cfg(all(target_os = "linux", feature = "uring"))]
        Kind::Uring => uring::serve(listener, service),
        #[cfg(not(all(target_os = "linux", feature = "uring")))]
        Kind::Uring => Err(ServeError::Unsupported(
            "this build has no io_uring runtime (the `uring` feature, on Linux)",
        )),
    }
}

/// Which runtime carries the drivers' sockets (`--runtime`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Kind {
    /// smol and async-net: async tasks, all on one thread.
    #[default]
    Smol,
    /// Blocking std sockets: a reader thread per socket and a writer thread per client, each
    /// with a small stack.
    Threads,
    /// io_uring (Linux only): the async loop over one ring; the client side runs on smol.
    Uring,
    /// tokio's current-thread runtime; the client side runs on smol.
    Tokio,
}

impl Kind {
    /// The runtime when `--runtime` does not say: a cluster node's is tokio in a build with
    /// it, where the node's Redis connections run on its own thread (with smol they run on
    /// smol's global executor's threads, and a delivery costs 20–45 % more CPU:
    /// BENCHMARKS.md); otherwise smol.
    pub fn default_for(clustered: bool) -> Kind {
        if clustered && cfg!(feature = "tokio") {
            Kind::Tokio
        } else {
            Kind::Smol
        }
    }

    /// Every kind, in the order `--help` lists them.
    pub const ALL: [Kind; 4] = [Kind::Smol, Kind::Threads, Kind::Tokio, Kind::Uring];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Smol => "smol",
            Kind::Threads => "threads",
            Kind::Uring => "uring",
            Kind::Tokio => "tokio",
        }
    }

    /// The cap on open client connections when none is given: the threads runtime spends
    /// threads on each, so it is held lower.
    pub fn default_max_connections(self) -> usize {
        match self {
            Kind::Smol | Kind::Tokio | Kind::Uring => {
                simple_im_core::driver::DEFAULT_MAX_CONNECTIONS
            }
            Kind::Threads => 2_000,
        }
    }

    /// The drivers' defaults for this runtime.
    pub fn driver_config(self) -> DriverConfig {
        DriverConfig {
            max_connections: self.default_max_connections(),
            ..DriverConfig::default()
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Kind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .into_iter()
            .find(|kind| kind.name() == text)
            .ok_or_else(|| format!("{text:?}: expected smol, threads, tokio or uring"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threads_runtime_has_the_lower_default_cap() {
        assert!(
            Kind::Threads.driver_config().max_connections
                < Kind::Smol.driver_config().max_connections
        );
        assert_eq!(
            DriverConfig::default().max_connections,
            Kind::Smol.default_max_connections()
        );
    }

    #[test]
    fn kinds_parse_from_their_names() {
        for kind in Kind::ALL {
            assert_eq!(kind.name().parse::<Kind>(), Ok(kind));
        }
        assert!("glommio".parse::<Kind>().is_err());
    }
}
