//! Placeholder until the transport lands.
/// Per-socket limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransportConfig {
    /// A queued message must be written within this.
    pub write_timeout: std::time::Duration,
    /// Bytes that may wait.
    pub max_unwritten: usize,
    /// After close: how long to wait for the peer's end.
    pub close_linger: std::time::Duration,
}
