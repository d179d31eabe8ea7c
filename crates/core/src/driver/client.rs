//! [`ClientDriver`]: a [`ClientSession`] with what every runtime needs around it, sans-IO.
//!
//! The session decides the protocol; the driver adds what every runtime, blocking or async,
//! needs around it: front-end events (shown through [`ClientFrontend`]) are set apart from
//! socket actions ([`IoAction`]), Lb is taken only from the server's address
//! ([`ClientDriver::lb_offered`]), a write to Lb before Lb is up is a closed Lb, a failed write
//! is a closed connection, TLS (with the `tls` feature) sits between the sockets and the
//! session, and nothing is done after the exit.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::frontend::ClientFrontend;
use crate::client::{
    ClientConfig, ClientError, ClientEvent, ClientInput, ClientOutput, ClientSession,
    ClientWarning, Connection,
};
use crate::tls::{looks_like_tls, ClientTls, TlsLayer, HANDSHAKE_TIMEOUT};

/// What the driver asks of the runtime's sockets, drained with [`ClientDriver::poll_io`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IoAction {
    /// Write these bytes; report a failure with [`ClientDriver::write_failed`].
    Send(Connection, Vec<u8>),
    /// Bind the Lb listener on La's local address (on a port the system picks, as
    /// docs/protocol.md §4 step 3 says, unless the runtime has a policy of its own), report it
    /// with [`ClientDriver::lb_listening`], then accept connections and offer each to
    /// [`ClientDriver::lb_offered`] until one is taken (then the listener closes).
    ListenLb,
    /// Close both connections: the client is done, with this exit code. Nothing follows it.
    Exit(i32),
}

/// A [`ClientSession`] and what its runtime must know about Lb and the exit.
#[derive(Debug)]
pub struct ClientDriver {
    session: ClientSession,
    /// La's peer address, canonical (an IPv4-mapped IPv6 address as IPv4): the only address
    /// Lb is taken from.
    server_ip: IpAddr,
    /// The server's Lb connection was accepted (and is being read).
    lb_open: bool,
    /// Events of the driver's own, shown before the session's next output.
    notices: VecDeque<ClientEvent>,
    /// Bytes of the driver's own to write (TLS handshakes), before the session's next output.
    sends: VecDeque<(Connection, Vec<u8>)>,
    /// TLS on both connections, with `--tls`.
    tls: Option<ClientTlsSockets>,
    /// Something bytes from the server showed that ends the client (a TLS failure).
    failed: bool,
    /// No byte has come on La yet (to tell a TLS server from a plain one by its first bytes).
    la_silent: bool,
    exit_code: Option<i32>,
    /// The latest time handed in: when the driver itself tells the session something.
    now: Instant,
}

/// The client's TLS sessions: the client is the TLS client on La and on the Lb the server
/// opens, and Lb must show the certificate La showed.
#[derive(Debug)]
struct ClientTlsSockets {
    config: ClientTls,
    la: Box<TlsLayer>,
    lb: Option<Box<TlsLayer>>,
    /// Until La's handshake is done: when to give up on a server that does not answer it.
    handshake_by: Option<Instant>,
}

impl ClientTlsSockets {
    fn layer(&mut self, on: Connection) -> Option<&mut TlsLayer> {
        match on {
            Connection::La => Some(&mut self.la),
            Connection::Lb => self.lb.as_deref_mut(),
        }
    }
}

impl ClientDriver {
    /// A driver for a client whose La is connected to `server` (La's peer address).
    pub fn new(now: Instant, config: ClientConfig, server: SocketAddr) -> Self {
        ClientDriver {
            session: ClientSession::new(now, config),
            server_ip: server.ip().to_canonical(),
            lb_open: false,
            notices: VecDeque::new(),
            sends: VecDeque::new(),
            tls: None,
            failed: false,
            la_silent: true,
            exit_code: None,
            now,
        }
    }

    /// Speaks TLS with `tls` on both connections (`None`: plain TCP, as the protocol has it).
    /// La's handshake starts now.
    pub fn with_tls(mut self, now: Instant, tls: Option<&ClientTls>) -> Self {
        let Some(config) = tls else {
            return self;
        };
        match config.session() {
            Ok(la) => {
                self.tls = Some(ClientTlsSockets {
                    config: config.clone(),
                    la: Box::new(la),
                    lb: None,
                    handshake_by: Some(now + HANDSHAKE_TIMEOUT),
                });
                self.queue_ciphertext(Connection::La);
            }
            Err(err) => self.fail(Connection::La, err.to_string()),
        }
        self
    }

    /// Feeds one input to the session; bytes from the server and the ends of its connections
    /// pass through TLS first, when the client speaks it.
    pub fn handle_input(&mut self, now: Instant, input: ClientInput<'_>) {
        self.now = self.now.max(now);
        let (on, bytes) = match input {
            ClientInput::LaData(bytes) => (Connection::La, bytes),
            ClientInput::LbData(bytes) => (Connection::Lb, bytes),
            input => return self.session.handle_input(now, input),
        };
        if self.failed {
            return;
        }
        let first = on == Connection::La && std::mem::take(&mut self.la_silent);
        let Some(tls) = &mut self.tls else {
            if first && looks_like_tls(bytes) {
                return self.fail_with(ClientError::ServerSpeaksTls);
            }
            return self.session.handle_input(now, on.data(bytes));
        };
        let Some(layer) = tls.layer(on) else {
            return;
        };
        let mut plaintext = Vec::new();
        let was_handshaking = layer.is_handshaking();
        let received = layer.read(bytes, &mut plaintext);
        // Checked once, as the handshake ends, and before any of its plaintext is shown.
        let handshaken = was_handshaking && !layer.is_handshaking();
        self.queue_ciphertext(on);
        let received = match received {
            Ok(received) => received,
            Err(err) => return self.fail(on, err.to_string()),
        };
        if handshaken && !self.handshake_checked(on) {
            return;
        }
        if !plaintext.is_empty() {
            self.session.handle_input(now, on.data(&plaintext));
        }
        if received.closed {
            self.session.handle_input(now, on.closed());
        }
    }

    /// Once a handshake is done: La's stops its timer; Lb's must have shown La's certificate
    /// (the same server, not just someone else the CA vouches for). `false`: the client failed.
    fn handshake_checked(&mut self, on: Connection) -> bool {
        let Some(tls) = &mut self.tls else {
            return true;
        };
        match on {
            Connection::La => tls.handshake_by = None,
            Connection::Lb => {
                let same = match (&tls.lb, tls.la.peer_certificate()) {
                    (Some(lb), Some(la)) => lb.peer_certificate() == Some(la),
                    _ => false,
                };
                if !same {
                    let reason = "Lb showed another certificate than La".to_owned();
                    self.fail(Connection::Lb, reason);
                    return false;
                }
            }
        }
        true
    }

    /// Lets the session's due timers fire, and gives up on a TLS server that never answered.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = self.now.max(now);
        let handshake_by = self.tls.as_ref().and_then(|tls| tls.handshake_by);
        if handshake_by.is_some_and(|by| now >= by) {
            let reason = format!(
                "no answer to the TLS handshake within {}s (is the server using TLS?)",
                HANDSHAKE_TIMEOUT.as_secs()
            );
            return self.fail(Connection::La, reason);
        }
        self.session.handle_timeout(now);
    }

    /// When [`ClientDriver::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let handshake_by = self.tls.as_ref().and_then(|tls| tls.handshake_by);
        self.session
            .poll_timeout()
            .into_iter()
            .chain(handshake_by)
            .min()
    }

    /// Queues what `on`'s TLS session has to write.
    fn queue_ciphertext(&mut self, on: Connection) {
        let layer = self.tls.as_mut().and_then(|tls| tls.layer(on));
        if let Some(ciphertext) = layer.and_then(TlsLayer::take_ciphertext) {
            self.sends.push_back((on, ciphertext));
        }
    }

    fn fail(&mut self, on: Connection, reason: String) {
        self.fail_with(ClientError::Tls { on, reason });
    }

    /// Shows `error`, and ends the client before anything else the session says.
    fn fail_with(&mut self, error: ClientError) {
        if !std::mem::replace(&mut self.failed, true) {
            self.notices.push_back(ClientEvent::Error(error));
        }
    }

    /// The Lb listener asked for by [`IoAction::ListenLb`] is bound (to this port) or not.
    pub fn lb_listening(&mut self, now: Instant, bound: io::Result<u16>) {
        self.now = self.now.max(now);
        let input = match bound {
            Ok(port) => ClientInput::LbListening(port),
            Err(err) => {
                log::warn!("cannot listen for Lb: {err}");
                ClientInput::LbListenFailed
            }
        };
        self.session.handle_input(now, input);
    }

    /// The Lb listener accepted a connection from `peer`; returns whether it is Lb.
    ///
    /// `true`: the runtime keeps it, reads it from now on, and closes the listener. `false`:
    /// the runtime closes it at once, unread, and goes on accepting; the session still waits
    /// for the server's (bounded, as ever, by the server's `201` or `202` on La).
    pub fn lb_offered(&mut self, now: Instant, peer: SocketAddr) -> bool {
        self.now = self.now.max(now);
        // docs/protocol.md §4 step 3. Whoever opens Lb can show the user anything as a message
        // "from" anyone, and have it acknowledged: only the server, which connects from La's
        // peer address, may. (Another user on the same host still can; a port guessed from
        // afar cannot.)
        if self.lb_open || self.exit_code.is_some() || peer.ip().to_canonical() != self.server_ip {
            self.notices
                .push_back(ClientEvent::Warning(ClientWarning::LbNotFromServer {
                    peer,
                    server: self.server_ip,
                }));
            return false;
        }
        self.lb_open = true;
        if let Some(tls) = &mut self.tls {
            match tls.config.session() {
                Ok(lb) => tls.lb = Some(Box::new(lb)),
                Err(err) => self.fail(Connection::Lb, err.to_string()),
            }
            self.queue_ciphertext(Connection::Lb);
        }
        self.session.handle_input(now, ClientInput::LbAccepted);
        true
    }

    /// A write asked for by [`IoAction::Send`] failed: to the session, the connection is gone.
    pub fn write_failed(&mut self, now: Instant, on: Connection, error: &io::Error) {
        self.now = self.now.max(now);
        log::debug!("writing to {on} failed: {error}");
        self.session.handle_input(now, on.closed());
    }

    /// Whether the server's Lb connection is accepted.
    pub fn lb_open(&self) -> bool {
        self.lb_open
    }

    /// The exit code, once [`IoAction::Exit`] has been handed out.
    pub fn exit_code(&self) -> Option<i32> {
        self.exit_code
    }

    /// Hands events and line requests to `frontend` until a socket action is due, and returns
    /// it; `None` until new input or the next timeout.
    pub fn poll_io(&mut self, frontend: &mut impl ClientFrontend) -> Option<IoAction> {
        while self.exit_code.is_none() {
            if let Some(notice) = self.notices.pop_front() {
                frontend.show(notice);
                continue;
            }
            if self.failed {
                self.exit_code = Some(1);
                return Some(IoAction::Exit(1));
            }
            if let Some((on, bytes)) = self.sends.pop_front() {
                return Some(IoAction::Send(on, bytes));
            }
            match self.session.poll_output()? {
                ClientOutput::Event(event) => frontend.show(event),
                ClientOutput::ReadLine { secret } => frontend.read_line(secret),
                ClientOutput::SendLa(bytes) => {
                    if let Some(action) = self.send(Connection::La, bytes) {
                        return Some(action);
                    }
                }
                ClientOutput::SendLb(bytes) if self.lb_open => {
                    if let Some(action) = self.send(Connection::Lb, bytes) {
                        return Some(action);
                    }
                }
                // Unreachable (a receipt answers Lb bytes, which come only once Lb is open);
                // if it came, Lb is as good as closed.
                ClientOutput::SendLb(_) => {
                    self.session.handle_input(self.now, ClientInput::LbClosed)
                }
                ClientOutput::ListenLb => return Some(IoAction::ListenLb),
                ClientOutput::Exit(code) => {
                    self.exit_code = Some(code);
                    return Some(IoAction::Exit(code));
                }
            }
        }
        None
    }
}

impl ClientDriver {
    /// The bytes to write for `plaintext` on `on`: themselves, or their TLS records (none yet
    /// while the handshake goes on; they come with its end).
    fn send(&mut self, on: Connection, plaintext: Vec<u8>) -> Option<IoAction> {
        let Some(layer) = self.tls.as_mut().and_then(|tls| tls.layer(on)) else {
            return Some(IoAction::Send(on, plaintext));
        };
        layer.write(&plaintext);
        self.queue_ciphertext(on);
        let (on, bytes) = self.sends.pop_front()?;
        Some(IoAction::Send(on, bytes))
    }
}
