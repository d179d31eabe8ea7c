//! The runtimes: each supplies sockets, timers and tasks to the [drivers](crate::driver), and
//! nothing else.
//!
//! - [`smol`]: smol and async-net, one thread, behind [`Runtime`](crate::driver::Runtime);
//!   the default.
//! - [`threads`]: blocking `std::net` sockets, a thread per socket, driving the same
//!   [`ServerDriver`](simple_im_core::driver::ServerDriver) directly.
//! - `epoll` (Linux): the same async loop over an edge-triggered epoll reactor of its own,
//!   which registers each socket once, on an executor of its own (shared with `uring`).
//! - `uring` (Linux): io_uring under the same async loop, reads and writes submitted to one
//!   ring in batches.
//! - [`Kind`] names them on the command line. A build without the `epoll` or `uring` feature
//!   still names that runtime, and says that it lacks it when it is asked for.
//!
//! The client is driven by [`crate::driver::client`] on smol and on threads; its terminal is
//! [`crate::terminal`].

pub mod client;
#[cfg(all(target_os = "linux", feature = "epoll"))]
pub mod epoll;
#[cfg(all(target_os = "linux", any(feature = "epoll", feature = "uring")))]
mod local;
pub mod smol;
pub mod threads;
#[cfg(all(target_os = "linux", feature = "uring"))]
pub mod uring;

use std::fmt;
use std::str::FromStr;

use simple_im_core::driver::DriverConfig;

/// `--runtime epoll` in a build without the `epoll` feature.
#[cfg(all(target_os = "linux", not(feature = "epoll")))]
pub mod epoll {
    use std::io;
    use std::net::TcpListener;

    use simple_im_core::{driver::DriverConfig, server::ServerConfig, users::Users};

    /// Says that this build has no epoll runtime.
    pub fn serve(
        _listener: TcpListener,
        _users: Users,
        _config: ServerConfig,
        _driver: DriverConfig,
        _commands: async_channel::Receiver<crate::driver::ServerCommand>,
    ) -> io::Result<()> {
        Err(io::Error::other(
            "this build has no epoll runtime (the `epoll` feature)",
        ))
    }
}

/// `--runtime uring` in a build without the `uring` feature.
#[cfg(all(target_os = "linux", not(feature = "uring")))]
pub mod uring {
    use std::net::TcpListener;

    use simple_im_core::{driver::DriverConfig, server::ServerConfig, users::Users};

    /// Says that this build has no io_uring runtime.
    pub fn serve(
        _listener: TcpListener,
        _users: Users,
        _config: ServerConfig,
        _driver: DriverConfig,
        _ready: impl FnOnce(),
        _commands: async_channel::Receiver<crate::driver::ServerCommand>,
    ) -> Result<(), String> {
        Err("this build has no io_uring runtime (the `uring` feature)".to_owned())
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
    /// Edge-triggered epoll (Linux only): the async loop over a reactor that registers each
    /// socket once; the client side runs on smol.
    Epoll,
}

impl Kind {
    /// Every kind, in the order `--help` lists them.
    pub const ALL: [Kind; 4] = [Kind::Smol, Kind::Threads, Kind::Uring, Kind::Epoll];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Smol => "smol",
            Kind::Threads => "threads",
            Kind::Uring => "uring",
            Kind::Epoll => "epoll",
        }
    }

    /// The cap on open client connections when none is given: the threads runtime spends
    /// threads on each, so it is held lower.
    pub fn default_max_connections(self) -> usize {
        match self {
            Kind::Smol | Kind::Uring | Kind::Epoll => {
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
            .ok_or_else(|| format!("{text:?}: expected smol, threads, uring or epoll"))
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
        assert!("tokio".parse::<Kind>().is_err());
    }
}
