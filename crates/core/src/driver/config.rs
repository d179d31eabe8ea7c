//! How the drivers use sockets, and the caps on open connections.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use crate::metrics::{RefusalReason, ServerMetrics};
use crate::tls::ServerTls;
use crate::transport::TransportConfig;

/// The default cap on open connections for runtimes that spend little on each.
pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;

/// The stack of each thread the threads runtime starts per socket: they only read, write
/// and hand buffers over, and a small stack is what lets thousands of them fit.
pub const THREAD_STACK: usize = 64 * 1024;

/// The default cap on connections from one IP address; loopback tests need many.
pub const DEFAULT_MAX_PER_IP: usize = 1_000;

/// How the drivers use their sockets; the protocol's own limits are in
/// [`ServerConfig`](crate::server::ServerConfig).
#[derive(Clone, Debug)]
pub struct DriverConfig {
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
    /// TCP keepalive on La and Lb (`None`: off), so a client whose host vanished goes offline.
    pub keepalive: Option<Keepalive>,
    /// TLS on La and Lb with this certificate (`None`: the protocol's plain TCP).
    pub tls: Option<ServerTls>,
    /// Where the server counts for Prometheus (`--metrics`); off by default.
    pub metrics: ServerMetrics,
}

impl Default for DriverConfig {
    /// The smol runtime's defaults.
    fn default() -> Self {
        DriverConfig {
            write_timeout: Duration::from_secs(10),
            read_chunk: 8 * 1024,
            max_unwritten: 1024 * 1024,
            close_linger: Duration::from_secs(2),
            event_queue: 1024,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_per_ip: DEFAULT_MAX_PER_IP,
            thread_stack: THREAD_STACK,
            keepalive: Some(Keepalive::after_idle(DEFAULT_KEEPALIVE_IDLE)),
            tls: None,
            metrics: ServerMetrics::default(),
        }
    }
}

/// The default idle time before TCP keepalive probes start (`--keepalive`).
pub const DEFAULT_KEEPALIVE_IDLE: Duration = Duration::from_secs(60);

/// TCP keepalive for one socket: how a peer whose host vanished without a FIN or a reset is
/// noticed. An idle connection is probed after `idle`, then every `interval`; after `retries`
/// probes unanswered the kernel ends it, and the socket reads an error like any other failure.
/// Unacknowledged data (a delivery sent to the vanished host) is bounded the same way by
/// `TCP_USER_TIMEOUT`, since keepalive probes only go out on a connection with nothing in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    /// Idle time before the first probe.
    pub idle: Duration,
    /// Time between probes.
    pub interval: Duration,
    /// Probes unanswered before the connection is ended.
    pub retries: u32,
}

impl Keepalive {
    /// Probes after `idle`, then 3 more, a sixth of `idle` apart (at least a second): a dead
    /// peer is noticed within 1.5 × `idle`.
    pub fn after_idle(idle: Duration) -> Self {
        Keepalive {
            idle,
            interval: (idle / 6).max(Duration::from_secs(1)),
            retries: 3,
        }
    }

    /// How long after its last sign of life a vanished peer is given up: idle + interval × retries.
    pub fn gives_up_after(&self) -> Duration {
        self.idle + self.interval * self.retries
    }
}

/// Why a new connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// [`DriverConfig::max_connections`] are open already.
    TooManyConnections {
        /// The cap.
        max: usize,
    },
    /// [`DriverConfig::max_per_ip`] are open from this address already.
    TooManyFromAddress {
        /// The peer's address.
        ip: IpAddr,
        /// The cap.
        max: usize,
    },
    /// The server has a certificate but could not start a TLS session for the connection.
    TlsUnavailable,
    /// This address's connections keep ending without a login (`--throttle-reconnects`).
    Throttled,
    /// The server is stopping: it takes no new connection.
    Stopping,
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
            Refusal::TlsUnavailable => f.write_str("no TLS session could be started"),
            Refusal::Stopping => f.write_str("the server is stopping"),
            Refusal::Throttled => f.write_str(
                "too many connections from this address ended without a login (--throttle-reconnects)",
            ),
        }
    }
}

impl From<&Refusal> for RefusalReason {
    fn from(refusal: &Refusal) -> Self {
        match refusal {
            Refusal::TooManyConnections { .. } => RefusalReason::MaxConnections,
            Refusal::TooManyFromAddress { .. } => RefusalReason::MaxPerIp,
            Refusal::TlsUnavailable => RefusalReason::TlsUnavailable,
            Refusal::Throttled => RefusalReason::Reconnects,
            Refusal::Stopping => RefusalReason::Stopping,
        }
    }
}

/// Counts open client connections, in all and per IP address, against their caps.
///
/// [`ServerDriver`](crate::driver::ServerDriver) calls it for every runtime:
/// [`ConnectionLimits::admit`] when the listener accepts, and [`ConnectionLimits::release`]
/// when the core closes the connection. It is a resource guard of the driver, not protocol
/// logic, which is why the core does not know about it.
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
    pub fn from_config(config: &DriverConfig) -> Self {
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

    /// New caps from now on; connections open past a lowered cap stay, and new ones are
    /// refused until the count is back under it.
    pub fn set_caps(&mut self, max_connections: usize, max_per_ip: usize) {
        self.max_connections = max_connections;
        self.max_per_ip = max_per_ip;
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

/// What a reload (SIGHUP) hands a running [`ServerDriver`](crate::driver::ServerDriver):
/// the accounts, and every setting it can change without dropping anyone. The rest of
/// [`DriverConfig`] (the runtime's socket policy, the metrics) is fixed at the start.
#[derive(Clone)]
pub struct Reload {
    /// The accounts ([`Server::reload_users`](crate::server::Server::reload_users)).
    pub users: crate::users::Users,
    /// The hub's limits ([`Server::reconfigure`](crate::server::Server::reconfigure)).
    pub config: crate::server::ServerConfig,
    /// [`DriverConfig::max_connections`], for new connections.
    pub max_connections: usize,
    /// [`DriverConfig::max_per_ip`], for new connections.
    pub max_per_ip: usize,
    /// [`DriverConfig::keepalive`], for sockets opened from now on.
    pub keepalive: Option<Keepalive>,
    /// [`DriverConfig::tls`], for sockets opened from now on (a renewed certificate): those
    /// open keep the session they began with. TLS is not turned on or off this way: `None`
    /// keeps the server's plain TCP, and a server with a certificate keeps it.
    pub tls: Option<ServerTls>,
}

impl fmt::Debug for Reload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The accounts' passwords and the key stay out of any log.
        f.debug_struct("Reload")
            .field("users", &self.users.len())
            .field("config", &self.config)
            .field("max_connections", &self.max_connections)
            .field("max_per_ip", &self.max_per_ip)
            .field("keepalive", &self.keepalive)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl DriverConfig {
    /// The per-socket part, for each [`Transport`](crate::transport::Transport).
    pub fn transport(&self) -> TransportConfig {
        TransportConfig {
            write_timeout: self.write_timeout,
            max_unwritten: self.max_unwritten,
            close_linger: self.close_linger,
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
}
