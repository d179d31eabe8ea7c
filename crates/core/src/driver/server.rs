//! [`ServerDriver`]: the server's connection table, written once for every runtime.
//!
//! It owns the [`Server`] hub, the caps on open connections, and a [`Transport`] per socket,
//! and carries every [`Output`] of the hub to the right transport. What is left for a runtime
//! is the socket work itself: read when [`ServerDriver::wants_read`] says so and feed the bytes
//! in, write what [`ServerDriver::poll_transmit`] hands out and say how much went, and carry out
//! each [`DriverAction`]. Like the machines under it, it takes the time as an argument and
//! never touches a socket, so a test drives it on a manual clock.

use std::collections::{BTreeSet, VecDeque};

use rustc_hash::FxHashMap;
use std::fmt;
// Addresses are plain values; `core::net` holds them without any socket machinery.
use core::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{ConnectionLimits, DriverConfig, Keepalive, Refusal, Reload};
use crate::server::{ClusterInput, ClusterOutput, ConnId, Input, Output, Server, ServerConfig};
use crate::tls::{ServerTls, TlsLayer};
use crate::transport::{ReadPolicy, Transport, TransportAction, TransportConfig};
use crate::users::{PasswordCheck, Users};

/// One of a client's two connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// The client's connection to the server: requests and answers.
    La,
    /// The server's connection to the client: deliveries and receipts.
    Lb,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::La => "La",
            Side::Lb => "Lb",
        })
    }
}

/// Names one socket: a connection and which of its two it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId {
    /// The client connection.
    pub conn: ConnId,
    /// Which of its sockets.
    pub side: Side,
}

impl SocketId {
    /// La of `conn`.
    pub fn la(conn: ConnId) -> Self {
        SocketId {
            conn,
            side: Side::La,
        }
    }

    /// Lb of `conn`.
    pub fn lb(conn: ConnId) -> Self {
        SocketId {
            conn,
            side: Side::Lb,
        }
    }
}

impl fmt::Display for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.conn, self.side)
    }
}

/// What the runtime must do, drained with [`ServerDriver::poll_action`].
#[derive(Debug)]
pub enum DriverAction {
    /// The socket has something new: bytes to write ([`ServerDriver::poll_transmit`]), or
    /// reading is allowed again ([`ServerDriver::wants_read`]). Look at it.
    Wake(SocketId),
    /// Connect Lb of `conn` to `addr`, giving up after `timeout`, and report the outcome with
    /// [`ServerDriver::handle_lb_connected`] or [`ServerDriver::handle_lb_connect_failed`].
    Connect {
        /// The connection whose Lb it is.
        conn: ConnId,
        /// The client's Lb listener.
        addr: SocketAddr,
        /// How long the attempt may take.
        timeout: Duration,
    },
    /// Run this check off the event loop and report [`ServerDriver::handle_password_checked`].
    CheckPassword(ConnId, PasswordCheck),
    /// Shut the sending side: the last bytes are written.
    ShutdownWrite(SocketId),
    /// Shut both directions now (this also wakes a thread blocked writing to it).
    ShutdownBoth(SocketId),
    /// Finished with: close the socket and forget it. Nothing about it follows.
    Release(SocketId),
    /// Cluster mode: for the cluster engine; its answers come back through
    /// [`ServerDriver::handle_cluster`].
    Cluster(ClusterOutput),
}

/// A socket's transport and TLS session, looked up in `conns` (a function, not a method, so
/// that the hub stays free to borrow beside them).
fn layers(
    conns: &mut FxHashMap<ConnId, Conn>,
    socket: SocketId,
) -> Option<(&mut Transport, Option<&mut TlsLayer>)> {
    conns.get_mut(&socket.conn)?.layers(socket.side)
}

/// What bytes read from `socket` are to the hub.
fn data_input(socket: SocketId, data: &[u8]) -> Input<'_> {
    match socket.side {
        Side::La => Input::LaData(socket.conn, data),
        Side::Lb => Input::LbData(socket.conn, data),
    }
}

/// What a transport left once drained.
#[derive(Default)]
struct Drained {
    /// Its connection is finished with, as far as its sockets drained so far say.
    finished: bool,
    /// Its deadline is not the one registered.
    deadline_moved: bool,
}

/// A connection's sockets, from accept until both are finished with.
#[derive(Debug)]
struct Conn {
    /// Counted in [`ConnectionLimits`] until the core closes the connection.
    peer_ip: IpAddr,
    la: Transport,
    /// `None` until connected.
    lb: Option<Transport>,
    /// The core has closed it.
    closed: bool,
    /// The deadline of each socket (La, Lb) as registered in [`ServerDriver::deadlines`].
    registered: [Option<Instant>; 2],
    /// Each socket's TLS session (La, Lb), when the server has a certificate; boxed, so that a
    /// plain-TCP connection does not carry its room.
    tls: [Option<Box<TlsLayer>>; 2],
}

impl Conn {
    fn transport(&mut self, side: Side) -> Option<&mut Transport> {
        self.layers(side).map(|(transport, _)| transport)
    }

    /// A socket's transport and its TLS session, if it has one.
    fn layers(&mut self, side: Side) -> Option<(&mut Transport, Option<&mut TlsLayer>)> {
        let tls = self.tls[side as usize].as_deref_mut();
        match side {
            Side::La => Some((&mut self.la, tls)),
            Side::Lb => Some((self.lb.as_mut()?, tls)),
        }
    }

    fn finished(&self) -> bool {
        let lb_finished = match &self.lb {
            Some(lb) => lb.is_finished(),
            None => true,
        };
        self.closed && self.la.is_finished() && lb_finished
    }
}

/// The server's connections: the hub, the caps, and a transport per socket.
#[derive(Debug)]
pub struct ServerDriver {
    server: Server,
    limits: ConnectionLimits,
    transport: TransportConfig,
    tls: Option<ServerTls>,
    keepalive: Option<Keepalive>,
    /// What the last TLS read decrypted; kept for its room.
    plaintext: Vec<u8>,
    conns: FxHashMap<ConnId, Conn>,
    /// Transport deadlines; each connection keeps its own registered ones beside it.
    deadlines: BTreeSet<(Instant, SocketId)>,
    /// Sockets touched by the current call: their actions and deadlines are collected at its end.
    touched: Vec<SocketId>,
    /// Sockets whose deadlines may have changed since they were last synced.
    unsynced: Vec<SocketId>,
    /// An empty `touched` with room, swapped in while `finish` works through the last one.
    spare: Vec<SocketId>,
    actions: VecDeque<DriverAction>,
}

impl ServerDriver {
    /// A driver for a single server with these accounts, limits and socket policy.
    pub fn new(users: Users, config: ServerConfig, driver: &DriverConfig) -> Self {
        ServerDriver::with_server(Server::new(users, config), driver)
    }

    /// A driver for `server` (a cluster node, say) with this socket policy; it counts into
    /// `driver.metrics` if that is on.
    pub fn with_server(mut server: Server, driver: &DriverConfig) -> Self {
        if driver.metrics.is_on() {
            server.set_metrics(driver.metrics.clone());
        }
        ServerDriver {
            server,
            limits: ConnectionLimits::from_config(driver),
            transport: driver.transport(),
            tls: driver.tls.clone(),
            keepalive: driver.keepalive,
            plaintext: Vec::new(),
            conns: FxHashMap::default(),
            deadlines: BTreeSet::new(),
            touched: Vec::new(),
            unsynced: Vec::new(),
            spare: Vec::new(),
            actions: VecDeque::new(),
        }
    }

    /// The hub, to look at.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// The caps and what is open, to look at.
    pub fn limits(&self) -> &ConnectionLimits {
        &self.limits
    }

    /// The TCP keepalive the runtime sets on each socket it opens or accepts: the one in
    /// force now, which a reload may change.
    pub fn keepalive(&self) -> Option<Keepalive> {
        self.keepalive
    }

    /// A client connected from `peer`: its La is [`SocketId::la`] of the returned id. Over a
    /// cap, the connection is refused (close it) and the core never hears of it; a refusal is
    /// logged once a minute per address at most, so that a flood of connections is not a
    /// flood of log lines.
    pub fn accept(&mut self, now: Instant, peer: SocketAddr) -> Result<ConnId, Refusal> {
        // The runtime stops its listener; one accepted meanwhile is simply closed.
        if self.server.is_stopping() {
            self.server.metrics().connection_refused(&Refusal::Stopping);
            return Err(Refusal::Stopping);
        }
        if self.server.admit(now, peer.ip()).is_err() {
            self.server
                .metrics()
                .connection_refused(&Refusal::Throttled);
            return Err(Refusal::Throttled);
        }
        let admitted = self
            .tls_session()
            .map_err(|()| Refusal::TlsUnavailable)
            .and_then(|tls| self.limits.admit(peer.ip()).map(|()| tls));
        let tls = match admitted {
            Ok(tls) => tls,
            Err(refusal) => {
                self.server.metrics().connection_refused(&refusal);
                if self.server.should_log(now, peer.ip()) {
                    log::warn!(
                        "refusing connections from {}: {refusal} (logged once a minute)",
                        peer.ip()
                    );
                }
                return Err(refusal);
            }
        };
        self.server.metrics().connection_opened();
        let conn = self.server.accept(now, peer);
        log::info!("{conn} connected from {peer}");
        self.conns.insert(
            conn,
            Conn {
                peer_ip: peer.ip(),
                la: Transport::new(self.transport, ReadPolicy::OnGrant),
                lb: None,
                closed: false,
                registered: [None, None],
                tls: [tls, None],
            },
        );
        self.finish(now);
        Ok(conn)
    }

    /// Whether the runtime should read `socket` now.
    pub fn wants_read(&self, socket: SocketId) -> bool {
        let Some(conn) = self.conns.get(&socket.conn) else {
            return false;
        };
        match socket.side {
            Side::La => conn.la.wants_read(),
            Side::Lb => conn.lb.as_ref().is_some_and(Transport::wants_read),
        }
    }

    /// Bytes queued for `socket` and not written yet (0 for a socket it does not hold).
    pub fn unwritten(&self, socket: SocketId) -> usize {
        let Some(conn) = self.conns.get(&socket.conn) else {
            return 0;
        };
        match socket.side {
            Side::La => conn.la.unwritten(),
            Side::Lb => conn.lb.as_ref().map_or(0, Transport::unwritten),
        }
    }

    /// Bytes were read from `socket`.
    pub fn handle_read(&mut self, now: Instant, socket: SocketId, data: &[u8]) {
        if data.is_empty() {
            return self.handle_read_end(now, socket);
        }
        self.touched.push(socket);
        let Some((transport, tls)) = layers(&mut self.conns, socket) else {
            return;
        };
        match tls {
            None => {
                if transport.handle_read(now, data.len()) {
                    self.server.handle_input(now, data_input(socket, data));
                }
            }
            // Lingering (or past the read end): nothing is for the core, so nothing is decrypted.
            Some(_) if !transport.takes_input() => {
                transport.handle_read(now, data.len());
            }
            Some(tls) => {
                let mut plaintext = std::mem::take(&mut self.plaintext);
                plaintext.clear();
                let received = tls.read(data, &mut plaintext);
                // The handshake's answers, or the alert that tells the peer why it failed.
                if let Some(ciphertext) = tls.take_ciphertext() {
                    transport.send(now, ciphertext.into());
                    self.actions.push_back(DriverAction::Wake(socket));
                }
                match received {
                    Ok(received) => {
                        // A grant is used only by what reaches the core: the handshake's
                        // records are read on the same grant.
                        if !plaintext.is_empty() && transport.handle_read(now, plaintext.len()) {
                            self.server
                                .handle_input(now, data_input(socket, &plaintext));
                        }
                        if received.closed {
                            self.end_read(now, socket);
                        }
                    }
                    Err(err) => {
                        log::info!("{socket}: TLS: {err}");
                        self.server.metrics().tls_failed(socket.side == Side::Lb);
                        transport.handle_read_end(now);
                    }
                }
                self.plaintext = plaintext;
            }
        }
        self.finish(now);
    }

    /// `socket` reached end of file, or reading it failed.
    pub fn handle_read_end(&mut self, now: Instant, socket: SocketId) {
        self.end_read(now, socket);
        self.finish(now);
    }

    fn end_read(&mut self, now: Instant, socket: SocketId) {
        if let Some(transport) = self.transport_mut(socket) {
            transport.handle_read_end(now);
        }
    }

    /// The next bytes to write to `socket`, if any; report what was written with
    /// [`ServerDriver::handle_written`] before asking again.
    pub fn poll_transmit(&mut self, socket: SocketId) -> Option<Bytes> {
        // Taking bytes out asks nothing of the driver, so the socket is not `touched`.
        let conn = self.conns.get_mut(&socket.conn)?;
        conn.transport(socket.side)?.poll_transmit()
    }

    /// [`ServerDriver::poll_transmit`], borrowed ([`Transport::peek_transmit`]).
    pub fn peek_transmit(&mut self, socket: SocketId) -> Option<&[u8]> {
        let conn = self.conns.get_mut(&socket.conn)?;
        conn.transport(socket.side)?.peek_transmit()
    }

    /// `n` bytes of what [`ServerDriver::poll_transmit`] gave were written (0 if none).
    pub fn handle_written(&mut self, now: Instant, socket: SocketId, n: usize) {
        if let Some(transport) = self.transport_mut(socket) {
            transport.handle_written(now, n);
        }
        self.finish(now);
    }

    /// Writing to `socket` failed.
    pub fn handle_write_error(&mut self, now: Instant, socket: SocketId) {
        if let Some(transport) = self.transport_mut(socket) {
            transport.handle_write_error(now);
        }
        self.finish(now);
    }

    /// The connection asked for by [`DriverAction::Connect`] is up. `true`: it is
    /// [`SocketId::lb`] of `conn` from now on; `false`: the connection is gone, close it.
    pub fn handle_lb_connected(&mut self, now: Instant, conn: ConnId) -> bool {
        let transport = self.transport;
        // The server is the TLS server on Lb too, though it opened the connection.
        let Ok(tls) = self.tls_session() else {
            self.handle_lb_connect_failed(now, conn);
            return false;
        };
        let Some(entry) = self.conns.get_mut(&conn).filter(|entry| !entry.closed) else {
            return false;
        };
        if entry.lb.is_some() {
            return false;
        }
        entry.lb = Some(Transport::new(transport, ReadPolicy::Always));
        entry.tls[Side::Lb as usize] = tls;
        log::debug!("{conn} Lb connected");
        self.touched.push(SocketId::lb(conn));
        self.server.handle_input(now, Input::LbConnected(conn));
        self.finish(now);
        true
    }

    /// The connection asked for by [`DriverAction::Connect`] could not be made.
    pub fn handle_lb_connect_failed(&mut self, now: Instant, conn: ConnId) {
        self.server.handle_input(now, Input::LbConnectFailed(conn));
        self.finish(now);
    }

    /// The result of a [`DriverAction::CheckPassword`].
    pub fn handle_password_checked(&mut self, now: Instant, conn: ConnId, correct: bool) {
        self.server
            .handle_input(now, Input::PasswordChecked(conn, correct));
        self.finish(now);
    }

    /// The users file was read again: see [`Server::reload_users`].
    pub fn reload_users(&mut self, now: Instant, users: Users) {
        self.server.reload_users(now, users);
        self.finish(now);
    }

    /// The settings were read again (SIGHUP): the accounts ([`Server::reload_users`]), the
    /// hub's limits ([`Server::reconfigure`]), and the caps, keepalive and certificate for
    /// connections from now on. Nobody is dropped but the users the accounts no longer have.
    pub fn reload(&mut self, now: Instant, reload: Reload) {
        self.limits
            .set_caps(reload.max_connections, reload.max_per_ip);
        self.keepalive = reload.keepalive;
        // On or off is fixed at the start: clients of a plain server do not speak TLS.
        if let (Some(tls), Some(_)) = (reload.tls, &self.tls) {
            self.tls = Some(tls);
        }
        self.server.reconfigure(now, reload.config);
        self.server.reload_users(now, reload.users);
        self.finish(now);
    }

    /// Begins a graceful stop ([`Server::stop`]): the runtime stops accepting, goes on
    /// driving, and exits once [`ServerDriver::is_stopped`] says so.
    pub fn stop(&mut self, now: Instant) {
        self.server.stop(now);
        self.finish(now);
    }

    /// Whether a stop has begun.
    pub fn is_stopping(&self) -> bool {
        self.server.is_stopping()
    }

    /// Whether a stop is complete: every session ended and every socket written and closed.
    pub fn is_stopped(&self) -> bool {
        self.server.is_stopped() && self.conns.is_empty()
    }

    /// What the cluster's directory or another node said.
    pub fn handle_cluster(&mut self, now: Instant, input: ClusterInput) {
        self.server.handle_cluster(now, input);
        self.finish(now);
    }

    /// Fires every deadline due at `now`, the hub's and the sockets'.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.sync_deadlines();
        if self.server.poll_timeout().is_some_and(|at| at <= now) {
            self.server.handle_timeout(now);
        }
        while let Some(&(at, socket)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(conn) = self.conns.get_mut(&socket.conn) {
                conn.registered[socket.side as usize] = None;
            }
            if let Some(transport) = self.transport_mut(socket) {
                transport.handle_timeout(now);
            }
        }
        self.finish(now);
    }

    /// When [`ServerDriver::handle_timeout`] should next be called.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.sync_deadlines();
        let sockets = self.deadlines.first().map(|&(at, _)| at);
        self.server.poll_timeout().into_iter().chain(sockets).min()
    }

    /// The next thing the runtime must do, or `None` until new input or the next timeout.
    pub fn poll_action(&mut self) -> Option<DriverAction> {
        self.actions.pop_front()
    }

    /// Whether `conn` still has a socket the runtime must keep.
    pub fn is_open(&self, conn: ConnId) -> bool {
        self.conns.contains_key(&conn)
    }

    /// How many connections have sockets open.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// A TLS session for a new socket, if the server has a certificate.
    fn tls_session(&self) -> Result<Option<Box<TlsLayer>>, ()> {
        let Some(tls) = &self.tls else {
            return Ok(None);
        };
        match tls.session() {
            Ok(session) => Ok(Some(Box::new(session))),
            Err(err) => {
                log::error!("cannot start a TLS session: {err}");
                Err(())
            }
        }
    }

    fn transport_mut(&mut self, socket: SocketId) -> Option<&mut Transport> {
        self.touched.push(socket);
        self.conns.get_mut(&socket.conn)?.transport(socket.side)
    }

    /// Carries the hub's outputs to the transports and the transports' actions out, feeding
    /// sockets found closed back to the hub, until nothing moves; then syncs the deadlines of
    /// every socket touched.
    fn finish(&mut self, now: Instant) {
        loop {
            while let Some(output) = self.server.poll_output() {
                self.carry_out(now, output);
            }
            if self.touched.is_empty() {
                return;
            }
            // Swapped with the room of the last round, so that no round allocates.
            let mut touched = std::mem::replace(&mut self.touched, std::mem::take(&mut self.spare));
            if touched.len() > 1 {
                touched.sort_unstable();
                touched.dedup();
            }
            let mut finished = false;
            for &socket in &touched {
                let drained = self.drain_transport(now, socket);
                finished |= drained.finished;
                // Synced lazily (`poll_timeout`, `handle_timeout`), and only if it moved: a
                // message queued and written within one turn of the runtime never costs a
                // timer entry.
                if drained.deadline_moved {
                    self.unsynced.push(socket);
                }
            }
            // Only once every socket touched is drained: both sockets of a connection can be
            // released in one call, and forgetting it at the first `Release` would drop the
            // other socket's `ShutdownBoth` and `Release`.
            if finished {
                for &socket in &touched {
                    self.forget_if_finished(socket.conn);
                }
            }
            touched.clear();
            self.spare = touched;
        }
    }

    fn carry_out(&mut self, now: Instant, output: Output) {
        match output {
            Output::ReadLa(conn) => {
                if let Some(transport) = self.transport_mut(SocketId::la(conn)) {
                    transport.grant_read();
                    self.actions
                        .push_back(DriverAction::Wake(SocketId::la(conn)));
                }
            }
            Output::SendLa(conn, bytes) => self.send(now, SocketId::la(conn), bytes),
            Output::SendLb(conn, bytes) => self.send(now, SocketId::lb(conn), bytes),
            Output::ConnectLb(conn, addr) => self.actions.push_back(DriverAction::Connect {
                conn,
                addr,
                timeout: self.server.config().connect_timeout,
            }),
            Output::CheckPassword(conn, check) => {
                self.actions
                    .push_back(DriverAction::CheckPassword(conn, check));
            }
            Output::Cluster(output) => self.actions.push_back(DriverAction::Cluster(output)),
            Output::Close(conn) => {
                let Some(entry) = self.conns.get_mut(&conn).filter(|entry| !entry.closed) else {
                    return;
                };
                entry.closed = true;
                self.limits.release(entry.peer_ip);
                for side in [Side::La, Side::Lb] {
                    // After the last answer, `close_notify`: the client knows the end is real.
                    if let Some((transport, Some(tls))) = entry.layers(side) {
                        tls.close();
                        if let Some(ciphertext) = tls.take_ciphertext() {
                            transport.send(now, ciphertext.into());
                        }
                    }
                }
                entry.la.close(now);
                if let Some(lb) = &mut entry.lb {
                    lb.close(now);
                }
                log::debug!("{conn} closing");
                self.touched.push(SocketId::la(conn));
                self.touched.push(SocketId::lb(conn));
            }
        }
    }

    fn send(&mut self, now: Instant, socket: SocketId, bytes: Bytes) {
        self.touched.push(socket);
        let Some((transport, tls)) = layers(&mut self.conns, socket) else {
            if self.conns.contains_key(&socket.conn) {
                log::warn!("{socket}: nothing to write to");
                self.server
                    .handle_input(now, Input::LbWriteFailed(socket.conn));
            }
            return;
        };
        match tls {
            None => transport.send(now, bytes),
            Some(tls) => {
                tls.write(&bytes);
                // Nothing yet while the handshake goes on: the bytes come out when it ends.
                let Some(ciphertext) = tls.take_ciphertext() else {
                    return;
                };
                transport.send(now, ciphertext.into());
            }
        }
        self.actions.push_back(DriverAction::Wake(socket));
    }

    /// Carries out what one transport asks, and says what it left.
    fn drain_transport(&mut self, now: Instant, socket: SocketId) -> Drained {
        loop {
            let Some(entry) = self.conns.get_mut(&socket.conn) else {
                return Drained::default();
            };
            let Some(transport) = entry.transport(socket.side) else {
                return Drained {
                    finished: entry.finished(),
                    deadline_moved: entry.registered[socket.side as usize].is_some(),
                };
            };
            let Some(action) = transport.poll_action() else {
                let deadline = transport.poll_timeout();
                return Drained {
                    finished: entry.finished(),
                    deadline_moved: deadline != entry.registered[socket.side as usize],
                };
            };
            match action {
                TransportAction::ReportClosed => {
                    let input = match socket.side {
                        Side::La => Input::LaClosed(socket.conn),
                        Side::Lb if entry.lb.as_ref().is_some_and(Transport::has_failed) => {
                            Input::LbWriteFailed(socket.conn)
                        }
                        Side::Lb => Input::LbClosed(socket.conn),
                    };
                    self.server.handle_input(now, input);
                }
                TransportAction::ShutdownWrite => {
                    self.actions.push_back(DriverAction::ShutdownWrite(socket));
                }
                TransportAction::ShutdownBoth => {
                    self.actions.push_back(DriverAction::ShutdownBoth(socket));
                }
                TransportAction::Release => {
                    self.actions.push_back(DriverAction::Release(socket));
                }
            }
        }
    }

    /// Forgets a connection the core has closed once all its sockets are finished with.
    fn forget_if_finished(&mut self, conn: ConnId) {
        if self.conns.get(&conn).is_some_and(Conn::finished) {
            if let Some(gone) = self.conns.remove(&conn) {
                for (side, at) in [Side::La, Side::Lb].into_iter().zip(gone.registered) {
                    if let Some(at) = at {
                        self.deadlines.remove(&(at, SocketId { conn, side }));
                    }
                }
            }
            self.server.metrics().connection_closed();
            log::debug!("{conn} closed");
        }
    }

    fn sync_deadlines(&mut self) {
        if self.unsynced.is_empty() {
            return;
        }
        let mut sockets = std::mem::take(&mut self.unsynced);
        sockets.sort_unstable();
        sockets.dedup();
        for &socket in &sockets {
            self.sync_deadline(socket);
        }
        sockets.clear();
        // Its room is kept for the next turn.
        self.unsynced = sockets;
    }

    /// Makes the timer set match one socket's current deadline.
    fn sync_deadline(&mut self, socket: SocketId) {
        let Some(conn) = self.conns.get_mut(&socket.conn) else {
            return;
        };
        let transport = match socket.side {
            Side::La => Some(&conn.la),
            Side::Lb => conn.lb.as_ref(),
        };
        let wanted = transport.and_then(Transport::poll_timeout);
        let known = &mut conn.registered[socket.side as usize];
        if *known == wanted {
            return;
        }
        if let Some(at) = known.take() {
            self.deadlines.remove(&(at, socket));
        }
        if let Some(at) = wanted {
            self.deadlines.insert((at, socket));
            *known = Some(at);
        }
    }
}
