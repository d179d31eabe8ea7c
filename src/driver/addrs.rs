//! [`ServerAddrs`]: the server as the user named it, and the addresses to try
//! ([`connect_first`]), as docs/protocol.md §4 step 1 has the client look it up.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use simple_im_core::tls::ClientTls;

use super::Runtime;

/// The server as the user named it (an IP address or a host name, and a port), with the
/// addresses it stands for, tried in turn until one connects (docs/protocol.md §4 step 1), and
/// how to speak to it (plain TCP, or TLS).
#[derive(Clone, Debug)]
pub struct ServerAddrs {
    host: String,
    port: u16,
    addrs: Vec<SocketAddr>,
    tls: Option<ClientTls>,
}

impl ServerAddrs {
    /// Resolves `host`, an IP address (IPv4 or IPv6) or a host name, with `port`. A name that
    /// stands for no address is an error too.
    pub fn resolve(host: &str, port: u16) -> io::Result<ServerAddrs> {
        let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
        if addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "the name has no address",
            ));
        }
        Ok(ServerAddrs {
            host: host.to_owned(),
            port,
            addrs,
            tls: None,
        })
    }

    /// Speaks TLS to the server on both connections.
    pub fn with_tls(mut self, tls: ClientTls) -> ServerAddrs {
        self.tls = Some(tls);
        self
    }

    /// The TLS settings, if the client speaks TLS.
    pub fn tls(&self) -> Option<&ClientTls> {
        self.tls.as_ref()
    }

    /// The host as the user named it: the name the server's certificate must carry by default.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The one address `addr`, as if it were named by its IP.
    pub fn from_addr(addr: SocketAddr) -> ServerAddrs {
        ServerAddrs {
            host: addr.ip().to_string(),
            port: addr.port(),
            addrs: vec![addr],
            tls: None,
        }
    }

    /// The addresses, in the order to try them (as the resolver gave them).
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Whether the server was named by its IP address (so there is nothing to resolve).
    fn is_ip(&self) -> bool {
        self.host.parse::<IpAddr>().is_ok()
    }
}

impl fmt::Display for ServerAddrs {
    /// `127.0.0.1:4000`, `[::1]:4000`, or `localhost:4000 ([::1]:4000, 127.0.0.1:4000)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_ip() && self.addrs.len() == 1 {
            return write!(f, "{}", self.addrs[0]);
        }
        write!(f, "{}:{}", self.host, self.port)?;
        let tried: Vec<String> = self.addrs.iter().map(SocketAddr::to_string).collect();
        write!(f, " ({})", tried.join(", "))
    }
}

/// Connects to each of `server`'s addresses in turn and returns the first connection, or the
/// last address's error if none answers.
pub async fn connect_first<R: Runtime>(runtime: &R, server: &ServerAddrs) -> io::Result<R::Stream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address to connect to");
    for &addr in server.addrs() {
        match runtime.connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(err) => {
                log::debug!("cannot connect to {addr}: {err}");
                last = err;
            }
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::AsyncStream;
    use crate::runtime::smol::Smol;

    /// A port of 127.0.0.1 that nobody listens on (it was free a moment ago).
    fn refusing_addr() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    }

    #[test]
    fn connect_first_tries_each_address_in_turn() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let live = listener.local_addr().unwrap();
        let server = ServerAddrs {
            host: "example".to_owned(),
            port: live.port(),
            addrs: vec![refusing_addr(), live],
            tls: None,
        };
        let peer = Smol::block_on(|smol| {
            Box::pin(async move {
                let stream = connect_first(&smol, &server).await.unwrap();
                stream.peer_addr().unwrap()
            })
        });
        assert_eq!(peer, live);
    }

    #[test]
    fn connect_first_gives_the_last_error_when_none_answers() {
        let server = ServerAddrs {
            host: "example".to_owned(),
            port: 1,
            addrs: vec![refusing_addr(), refusing_addr()],
            tls: None,
        };
        let error = Smol::block_on(|smol| {
            Box::pin(async move { connect_first(&smol, &server).await.err() })
        });
        assert_eq!(
            error.map(|error| error.kind()),
            Some(io::ErrorKind::ConnectionRefused)
        );
    }

    #[test]
    fn a_server_named_by_ip_shows_as_its_address_and_a_name_shows_what_was_tried() {
        let by_ip = ServerAddrs::resolve("::1", 4000).unwrap();
        assert_eq!(by_ip.to_string(), "[::1]:4000");
        let by_name = ServerAddrs::resolve("localhost", 4000).unwrap();
        assert!(
            by_name.to_string().starts_with("localhost:4000 ("),
            "{by_name}"
        );
        assert!(ServerAddrs::resolve("no-such-host.invalid", 4000).is_err());
    }
}
