//! The metrics exporter is not in this build (the `metrics` feature): `--metrics` says so.

use std::net::SocketAddr;

use simple_im_core::metrics::ServerMetrics;

/// Says that this build has no metrics.
pub fn serve(_address: SocketAddr) -> Result<ServerMetrics, String> {
    Err("this build has no metrics (the `metrics` feature)".to_owned())
}
