//! TLS around the protocol's bytes, as a sans-IO layer between a socket and a machine (the
//! `tls` feature: rustls with ring, which compiles C; without it every connection is plain TCP).
//!
//! rustls is itself sans-IO (`read_tls` / `process_new_packets` / `write_tls`), so TLS lives
//! once, in the drivers ([`ServerDriver`](crate::driver::ServerDriver),
//! [`ClientDriver`](crate::driver::ClientDriver)), for every runtime: a runtime still only
//! moves bytes, and the machines above still see the protocol's plain lines.
//!
//! Both of a client's connections are TLS when the server has a certificate, and on both the
//! server is the TLS server: on La as usual, and on Lb, which the server opens, it still
//! takes the server role. So the client verifies the server's certificate on Lb as on La,
//! and only the real server can open Lb: nobody else can read or forge deliveries.

use std::fmt;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
pub use rustls::pki_types::{CertificateDer, PrivateKeyDer};
pub use rustls::RootCertStore;

/// How long a client waits for the server's side of the La handshake: a server that does not
/// speak TLS may wait for a line that never ends, and the user must hear why nothing happens.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server's certificate and key, loaded once and shared by every connection.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerTls")
    }
}

impl ServerTls {
    /// A server identity from a certificate chain and its key.
    pub fn new(
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<ServerTls, TlsSetupError> {
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(TlsSetupError::KeyMismatch)?;
        Ok(ServerTls {
            config: Arc::new(config),
        })
    }

    /// A fresh server side for one socket (La, or Lb, where the server is the TLS server too).
    pub fn session(&self) -> Result<TlsLayer, TlsError> {
        let mut conn =
            rustls::ServerConnection::new(Arc::clone(&self.config)).map_err(TlsError::Tls)?;
        // The transport's own cap bounds what waits; before the handshake ends, the hub has at
        // most one delivery outstanding per Lb.
        conn.set_buffer_limit(None);
        Ok(TlsLayer { conn: conn.into() })
    }
}

/// What a client trusts and which name it expects the server's certificate to carry.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientTls({})", self.name.to_str())
    }
}

impl ClientTls {
    /// Trusts `roots` (a private CA's certificate, or the system's roots) and expects `name`
    /// (a DNS name or an IP address) in the server's certificate.
    pub fn new(roots: RootCertStore, name: &str) -> Result<ClientTls, TlsSetupError> {
        let name = ServerName::try_from(name.to_owned())
            .map_err(|_| TlsSetupError::BadServerName(name.to_owned()))?;
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(ClientTls {
            config: Arc::new(config),
            name,
        })
    }

    /// The name the server's certificate must carry.
    pub fn server_name(&self) -> String {
        self.name.to_str().into_owned()
    }

    /// A fresh client side for one socket (La, or the Lb the server opened).
    pub fn session(&self) -> Result<TlsLayer, TlsError> {
        let mut conn = rustls::ClientConnection::new(Arc::clone(&self.config), self.name.clone())
            .map_err(TlsError::Tls)?;
        conn.set_buffer_limit(None);
        Ok(TlsLayer { conn: conn.into() })
    }
}

/// One socket's TLS session: ciphertext in, plaintext out, and back.
pub struct TlsLayer {
    conn: rustls::Connection,
}

impl fmt::Debug for TlsLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsLayer")
            .field("handshaking", &self.conn.is_handshaking())
            .finish()
    }
}

/// What one [`TlsLayer::read`] found besides plaintext.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Received {
    /// The peer sent `close_notify`: nothing more comes.
    pub closed: bool,
}

impl TlsLayer {
    /// Takes `ciphertext` read from the socket and appends what it decrypts to `plaintext`.
    /// An error (a peer that does not speak TLS, a certificate refused) is final: the alert
    /// to tell the peer is waiting in [`TlsLayer::take_ciphertext`], and the socket is done.
    pub fn read(
        &mut self,
        mut ciphertext: &[u8],
        plaintext: &mut Vec<u8>,
    ) -> Result<Received, TlsError> {
        let mut received = Received::default();
        while !ciphertext.is_empty() {
            match self.conn.read_tls(&mut ciphertext) {
                Ok(0) => break,
                Ok(_) => {}
                Err(err) => return Err(TlsError::Io(err)),
            }
            let state = self.conn.process_new_packets().map_err(TlsError::Tls)?;
            let ready = state.plaintext_bytes_to_read();
            if ready > 0 {
                let start = plaintext.len();
                plaintext.resize(start + ready, 0);
                self.conn
                    .reader()
                    .read_exact(&mut plaintext[start..])
                    .map_err(TlsError::Io)?;
            }
            received.closed |= state.peer_has_closed();
        }
        Ok(received)
    }

    /// Encrypts `plaintext` to send; before the handshake ends it waits inside, and comes out
    /// of [`TlsLayer::take_ciphertext`] once the handshake is done.
    pub fn write(&mut self, plaintext: &[u8]) {
        // Without a buffer limit (see `session`), rustls takes everything.
        if let Err(err) = self.conn.writer().write_all(plaintext) {
            log::debug!("TLS took no more bytes: {err}");
        }
    }

    /// Says `close_notify` after everything written so far: the peer knows the end is real.
    pub fn close(&mut self) {
        self.conn.send_close_notify();
    }

    /// The ciphertext to write to the socket now (handshake, records, alerts), if any.
    pub fn take_ciphertext(&mut self) -> Option<Vec<u8>> {
        if !self.conn.wants_write() {
            return None;
        }
        let mut out = Vec::new();
        while self.conn.wants_write() {
            // Into a Vec: it cannot fail or block.
            if self.conn.write_tls(&mut out).is_err() {
                break;
            }
        }
        Some(out)
    }

    /// Whether the handshake is still going on.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// The peer's own certificate, once the handshake has shown it.
    pub fn peer_certificate(&self) -> Option<&CertificateDer<'static>> {
        self.conn.peer_certificates()?.first()
    }
}

/// Why a TLS session failed.
#[derive(Debug)]
pub enum TlsError {
    /// The peer broke the protocol or was refused (its certificate, its messages).
    Tls(rustls::Error),
    /// The bytes could not be taken in.
    Io(io::Error),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Tls(rustls::Error::InvalidMessage(_)) => {
                f.write_str("the peer does not speak TLS")
            }
            TlsError::Tls(err) if is_ca_used_as_server(err) => f.write_str(CA_AS_SERVER),
            TlsError::Tls(err) => err.fmt(f),
            TlsError::Io(err) => err.fmt(f),
        }
    }
}

impl std::error::Error for TlsError {}

/// What a client says of a server certificate that is a CA's: what is wrong, and the fix.
pub const CA_AS_SERVER: &str = "the server's certificate is a CA certificate (CA:TRUE, as \
    `openssl req -x509` makes by default), which TLS refuses as a server's own; make one that \
    works with `im-server --make-cert NAME,... --out DIR` and give clients DIR/cert.pem with --ca";

/// Whether rustls refused the server's certificate for being a CA's (webpki's
/// `CaUsedAsEndEntity`): a self-signed certificate made without `CA:FALSE`.
fn is_ca_used_as_server(err: &rustls::Error) -> bool {
    let rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) = err else {
        return false;
    };
    matches!(
        other.0.downcast_ref::<webpki::Error>(),
        Some(webpki::Error::CaUsedAsEndEntity)
    )
}

/// Why a [`ServerTls`] or a [`ClientTls`] could not be made.
#[derive(Debug)]
pub enum TlsSetupError {
    /// The certificate chain and the private key do not go together (or either is unusable).
    KeyMismatch(rustls::Error),
    /// The name to expect is neither a DNS name nor an IP address.
    BadServerName(String),
}

impl fmt::Display for TlsSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsSetupError::KeyMismatch(err) => {
                write!(f, "the certificate and key do not go together: {err}")
            }
            TlsSetupError::BadServerName(name) => {
                write!(f, "{name:?} is not a DNS name or an IP address")
            }
        }
    }
}

impl std::error::Error for TlsSetupError {}

/// Whether `bytes` start like a TLS record (a handshake or an alert, in any TLS version): what
/// a plain-text client gets from a TLS server, so it can say so instead of showing garbage.
pub fn looks_like_tls(bytes: &[u8]) -> bool {
    matches!(bytes, [0x15 | 0x16, 0x03, ..])
}
