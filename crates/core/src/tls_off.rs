//! TLS is off in this build (the core's `tls` feature): the types the drivers name exist, but
//! none of them can be made, so every connection is the protocol's plain TCP.

use std::fmt;
use std::time::Duration;

/// No value: what each type below holds, so that none can be made.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Never {}

/// How long a client waits for the server's side of the La handshake (never, here).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A server certificate: none can exist without the `tls` feature.
#[derive(Clone, Debug)]
pub struct ServerTls(Never);

impl ServerTls {
    /// A fresh server side for one socket.
    pub fn session(&self) -> Result<TlsLayer, TlsError> {
        match self.0 {}
    }
}

/// What a client trusts: nothing can be, without the `tls` feature.
#[derive(Clone, Debug)]
pub struct ClientTls(Never);

impl ClientTls {
    /// The name the server's certificate must carry.
    pub fn server_name(&self) -> String {
        match self.0 {}
    }

    /// A fresh client side for one socket.
    pub fn session(&self) -> Result<TlsLayer, TlsError> {
        match self.0 {}
    }
}

/// A peer's certificate: none is ever shown without TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate(Never);

/// One socket's TLS session: none exists without the `tls` feature.
#[derive(Debug)]
pub struct TlsLayer(Never);

/// What one [`TlsLayer::read`] found besides plaintext.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Received {
    /// The peer sent `close_notify`: nothing more comes.
    pub closed: bool,
}

impl TlsLayer {
    /// Decrypts `ciphertext` into `plaintext`.
    pub fn read(&mut self, _: &[u8], _: &mut Vec<u8>) -> Result<Received, TlsError> {
        match self.0 {}
    }

    /// Encrypts `plaintext` to send.
    pub fn write(&mut self, _: &[u8]) {
        match self.0 {}
    }

    /// Says `close_notify`.
    pub fn close(&mut self) {
        match self.0 {}
    }

    /// The ciphertext to write to the socket now.
    pub fn take_ciphertext(&mut self) -> Option<Vec<u8>> {
        match self.0 {}
    }

    /// Whether the handshake is still going on.
    pub fn is_handshaking(&self) -> bool {
        match self.0 {}
    }

    /// The peer's own certificate.
    pub fn peer_certificate(&self) -> Option<&Certificate> {
        match self.0 {}
    }
}

/// Why a TLS session failed: it cannot, without one.
#[derive(Debug)]
pub struct TlsError(Never);

impl fmt::Display for TlsError {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {}
    }
}

impl std::error::Error for TlsError {}

/// Whether `bytes` start like a TLS record (a handshake or an alert, in any TLS version): what
/// a plain-text client gets from a TLS server, so it can say so instead of showing garbage.
pub fn looks_like_tls(bytes: &[u8]) -> bool {
    matches!(bytes, [0x15 | 0x16, 0x03, ..])
}
