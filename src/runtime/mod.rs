//! Runtime adapters: they carry bytes between sockets and the sans-IO core, and nothing else.
//!
//! Two runtimes drive the same core: [`server`] and [`client`] on smol (all on one thread;
//! the server runs one task per connection), and [`threads`] on blocking `std::net` sockets
//! with a thread per socket. What they share lives here: [`RuntimeConfig`],
//! [`ConnectionLimits`] (the caps on open connections), and [`Signals`] (SIGINT/SIGTERM as a
//! channel). The client's driving is written once in [`crate::driver::client`]; its terminal is
//! [`crate::terminal`].

pub mod client;
pub mod server;
pub mod smol;
pub mod threads;

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use async_channel::{Receiver, Sender};

use crate::server::{ConnId, Input};

/// Which runtime carries the core's inputs and outputs (`--runtime`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Runtime {
    /// smol and async-net: async tasks, all on one thread.
    #[default]
    Smol,
    /// Blocking std sockets: a reader thread per socket and a writer thread per client, each
    /// with a 64 KiB stack.
    Threads,
}

impl Runtime {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Smol => "smol",
            Runtime::Threads => "threads",
        }
    }

    /// The cap on open client connections when none is given: the threads runtime spends three
    /// threads on each, so it is held lower.
    pub fn default_max_connections(self) -> usize {
        match self {
            Runtime::Smol => 20_000,
            Runtime::Threads => 2_000,
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The stack of each thread the threads runtime starts per connection: they only read, write
/// and hand buffers over, and a small stack is what lets thousands of them fit.
pub const THREAD_STACK: usize = 64 * 1024;

/// The default cap on connections from one IP address; loopback tests need many.
pub const DEFAULT_MAX_PER_IP: usize = 1_000;

/// How the adapter uses its sockets; the protocol's own limits are in
/// [`ServerConfig`](crate::server::ServerConfig).
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// The longest one write to a peer may take; a peer that takes longer is disconnected.
    pub write_timeout: Duration,
    /// The most bytes one read takes (La is read once per grant, so this bounds each step).
    pub read_chunk: usize,
    /// Bytes that may wait to be written to one socket; a peer that lets more pile up is
    /// disconnected. It should hold the answers to one read's worth of requests.
    pub max_unwritten: usize,
    /// Once a closed connection's last bytes are written, how long to wait for the peer to
    /// close its end before the server closes its own regardless.
    pub close_linger: Duration,
    /// Socket events that may wait for the event loop; readers wait while it is full. Only the
    /// threads runtime queues events: the smol runtime feeds each to the core as it comes.
    pub event_queue: usize,
    /// Client connections (La) open at once; a new one over the cap is closed at once.
    pub max_connections: usize,
    /// Client connections (La) open at once from one IP address.
    pub max_per_ip: usize,
    /// The stack size of the threads runtime's per-connection threads.
    pub thread_stack: usize,
}

impl RuntimeConfig {
    /// The defaults for `runtime`: they differ only in [`RuntimeConfig::max_connections`].
    pub fn for_runtime(runtime: Runtime) -> Self {
        RuntimeConfig {
            max_connections: runtime.default_max_connections(),
            ..RuntimeConfig::default()
        }
    }
}

impl Default for RuntimeConfig {
    /// The smol runtime's defaults.
    fn default() -> Self {
        RuntimeConfig {
            write_timeout: Duration::from_secs(10),
            read_chunk: 8 * 1024,
            max_unwritten: 1024 * 1024,
            close_linger: Duration::from_secs(2),
            event_queue: 1024,
            max_connections: Runtime::Smol.default_max_connections(),
            max_per_ip: DEFAULT_MAX_PER_IP,
            thread_stack: THREAD_STACK,
        }
    }
}

/// Why a new connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// [`RuntimeConfig::max_connections`] are open already.
    TooManyConnections {
        /// The cap.
        max: usize,
    },
    /// [`RuntimeConfig::max_per_ip`] are open from this address already.
    TooManyFromAddress {
        /// The peer's address.
        ip: IpAddr,
        /// The cap.
        max: usize,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::TooManyConnections { max } => {
                write!(f, "{max} connections are open (--max-connections)")
            }
            Refusal::TooManyFromAddress { ip, max } => {
                write!(f, "{max} connections from {ip} are open (--max-per-ip)")
            }
        }
    }
}

/// Counts open client connections, in all and per IP address, against their caps.
///
/// Both runtimes call it: [`ConnectionLimits::admit`] when the listener accepts, and
/// [`ConnectionLimits::release`] when the core closes the connection. It is a resource guard
/// of the adapter, not protocol logic, which is why the core does not know about it.
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    max_connections: usize,
    max_per_ip: usize,
    open: usize,
    per_ip: HashMap<IpAddr, usize>,
}

impl ConnectionLimits {
    /// Limits with these caps and nothing open.
    pub fn new(max_connections: usize, max_per_ip: usize) -> Self {
        ConnectionLimits {
            max_connections,
            max_per_ip,
            open: 0,
            per_ip: HashMap::new(),
        }
    }

    /// The caps of `config`.
    pub fn from_config(config: &RuntimeConfig) -> Self {
        ConnectionLimits::new(config.max_connections, config.max_per_ip)
    }

    /// Counts a new connection from `ip` in, or says which cap it would pass.
    pub fn admit(&mut self, ip: IpAddr) -> Result<(), Refusal> {
        // An IPv4 client of a dual-stack listener shows as `::ffff:a.b.c.d`; it is still a.b.c.d.
        let ip = ip.to_canonical();
        if self.open >= self.max_connections {
            return Err(Refusal::TooManyConnections {
                max: self.max_connections,
            });
        }
        let from_ip = self.per_ip.entry(ip).or_insert(0);
        if *from_ip >= self.max_per_ip {
            return Err(Refusal::TooManyFromAddress {
                ip,
                max: self.max_per_ip,
            });
        }
        *from_ip += 1;
        self.open += 1;
        Ok(())
    }

    /// Counts a connection admitted from `ip` out.
    pub fn release(&mut self, ip: IpAddr) {
        let ip = ip.to_canonical();
        let Some(from_ip) = self.per_ip.get_mut(&ip) else {
            return;
        };
        *from_ip -= 1;
        if *from_ip == 0 {
            // Forgotten, so that the map holds only addresses with something open.
            self.per_ip.remove(&ip);
        }
        self.open -= 1;
    }

    /// How many connections are open.
    pub fn open(&self) -> usize {
        self.open
    }

    /// How many connections are open from `ip`.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        self.per_ip.get(&ip.to_canonical()).copied().unwrap_or(0)
    }
}

/// One of a client's two connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    La,
    Lb,
}

impl Side {
    /// The input that tells the core this socket is gone.
    pub(crate) fn closed(self, conn: ConnId) -> Input<'static> {
        match self {
            Side::La => Input::LaClosed(conn),
            Side::Lb => Input::LbClosed(conn),
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::La => "La",
            Side::Lb => "Lb",
        })
    }
}

/// SIGINT and SIGTERM (Ctrl-C) as a channel, so that an async task and a blocking thread can
/// both wait for them.
pub struct Signals {
    received: Receiver<()>,
    /// Kept so that the channel never closes: without a handler, no signal ever comes.
    _open: Sender<()>,
}

impl Signals {
    /// Installs the process's handler for SIGINT and SIGTERM. A process has one: call this once.
    /// If it cannot be installed, a warning is logged and no signal is ever reported.
    pub fn install() -> Signals {
        // One waiting token is enough: a second Ctrl-C before the first is seen means the same.
        let (sender, received) = async_channel::bounded(1);
        let handler = sender.clone();
        if let Err(error) = ctrlc::set_handler(move || {
            let _ = handler.try_send(());
        }) {
            log::warn!("cannot handle SIGINT/SIGTERM: {error}");
        }
        Signals {
            received,
            _open: sender,
        }
    }

    /// Waits for the next signal.
    pub async fn recv(&self) {
        if self.received.recv().await.is_err() {
            // The channel cannot close (`_open`); waiting forever is the honest answer.
            std::future::pending::<()>().await;
        }
    }

    /// Blocks the calling thread until the next signal.
    pub fn wait(&self) {
        while self.received.recv_blocking().is_err() {
            // As in `recv`: unreachable, and the answer is to wait forever.
            std::thread::park();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn admits_up_to_the_total_cap_then_refuses() {
        let mut limits = ConnectionLimits::new(2, 10);
        assert_eq!(limits.admit(ip("10.0.0.1")), Ok(()));
        assert_eq!(limits.admit(ip("10.0.0.2")), Ok(()));
        assert_eq!(
            limits.admit(ip("10.0.0.3")),
            Err(Refusal::TooManyConnections { max: 2 })
        );
        assert_eq!(limits.open(), 2);
        assert_eq!(limits.open_from(ip("10.0.0.3")), 0);
    }

    #[test]
    fn admits_up_to_the_per_address_cap_while_others_still_get_in() {
        let mut limits = ConnectionLimits::new(10, 2);
        let busy = ip("10.0.0.1");
        assert_eq!(limits.admit(busy), Ok(()));
        assert_eq!(limits.admit(busy), Ok(()));
        assert_eq!(
            limits.admit(busy),
            Err(Refusal::TooManyFromAddress { ip: busy, max: 2 })
        );
        assert_eq!(limits.admit(ip("10.0.0.2")), Ok(()));
        assert_eq!(limits.open(), 3);
        assert_eq!(limits.open_from(busy), 2);
    }

    #[test]
    fn a_release_makes_room_again() {
        let mut limits = ConnectionLimits::new(1, 1);
        let peer = ip("::1");
        assert_eq!(limits.admit(peer), Ok(()));
        assert!(limits.admit(peer).is_err());
        limits.release(peer);
        assert_eq!(limits.open(), 0);
        assert_eq!(limits.open_from(peer), 0);
        assert_eq!(limits.admit(peer), Ok(()));
    }

    #[test]
    fn a_refused_connection_is_not_counted() {
        let mut limits = ConnectionLimits::new(3, 1);
        let peer = ip("10.0.0.1");
        assert_eq!(limits.admit(peer), Ok(()));
        for _ in 0..5 {
            assert!(limits.admit(peer).is_err());
        }
        assert_eq!(limits.open(), 1);
        limits.release(peer);
        assert_eq!(limits.open(), 0);
    }

    #[test]
    fn ipv4_mapped_addresses_count_as_their_ipv4_address() {
        let mut limits = ConnectionLimits::new(10, 1);
        assert_eq!(limits.admit(ip("127.0.0.1")), Ok(()));
        assert!(limits.admit(ip("::ffff:127.0.0.1")).is_err());
        limits.release(ip("::ffff:127.0.0.1"));
        assert_eq!(limits.open_from(ip("127.0.0.1")), 0);
    }

    #[test]
    fn releasing_an_address_never_admitted_changes_nothing() {
        let mut limits = ConnectionLimits::new(1, 1);
        limits.release(ip("10.0.0.9"));
        assert_eq!(limits.open(), 0);
        assert_eq!(limits.admit(ip("10.0.0.1")), Ok(()));
    }

    #[test]
    fn the_threads_runtime_has_the_lower_default_cap() {
        assert!(
            RuntimeConfig::for_runtime(Runtime::Threads).max_connections
                < RuntimeConfig::for_runtime(Runtime::Smol).max_connections
        );
        assert_eq!(
            RuntimeConfig::default().max_connections,
            Runtime::Smol.default_max_connections()
        );
    }
}
