//! [`MetricsEndpoint`]: `GET /metrics` over HTTP, on a thread of its own.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};

use prometheus_client::registry::Registry;

use super::{render, CONTENT_TYPE};

/// An HTTP server (tiny_http) that answers `GET /metrics` with [`render`]'s text, on a thread
/// of its own: scrapes never wait for the event loop, nor it for them.
pub struct MetricsEndpoint {
    http: tiny_http::Server,
    addr: SocketAddr,
}

impl MetricsEndpoint {
    /// Listens on `addr` (port 0: a free one).
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let http = tiny_http::Server::from_listener(listener, None).map_err(io::Error::other)?;
        Ok(MetricsEndpoint { http, addr })
    }

    /// The address really bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `registry` until the process ends.
    pub fn spawn(self, registry: Registry) -> io::Result<()> {
        std::thread::Builder::new()
            .name("metrics".to_owned())
            .spawn(move || self.serve(&registry))
            .map(drop)
    }

    fn serve(self, registry: &Registry) {
        for request in self.http.incoming_requests() {
            // A query string (`/metrics?…`, as some scrapers add) is ignored.
            let path = request.url().split('?').next().unwrap_or_default();
            let response = match (request.method(), path) {
                (tiny_http::Method::Get, "/metrics") => {
                    let header = tiny_http::Header::from_bytes("Content-Type", CONTENT_TYPE);
                    let response = tiny_http::Response::from_string(render(registry));
                    match header {
                        Ok(header) => response.with_header(header),
                        Err(()) => response,
                    }
                }
                (tiny_http::Method::Get, _) => {
                    tiny_http::Response::from_string("only /metrics is served here\n")
                        .with_status_code(404)
                }
                _ => tiny_http::Response::from_string("only GET is served here\n")
                    .with_status_code(405),
            };
            if let Err(error) = request.respond(response) {
                log::debug!("metrics: cannot answer a scrape: {error}");
            }
        }
    }
}

impl fmt::Debug for MetricsEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsEndpoint")
            .field("addr", &self.addr)
            .finish()
    }
}
