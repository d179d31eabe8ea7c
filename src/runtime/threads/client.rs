//! The std-thread client: the same [`ClientDriver`] as the smol one, on blocking sockets. This
//! thread owns the driver and writes La and Lb (one peer: waiting on it holds up nobody); threads
//! read La, accept (as the driver decides) and read Lb, and read the terminal, sending `Event`s
//! over one bounded channel, with `recv_timeout` as the driver's timer.

use std::io::{self, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{self, SyncSender};
use std::sync::Arc;
use std::time::Instant;

use super::{read_some, recv_until, spawn};
use simple_im_core::client::{ClientInput, Connection};
use simple_im_core::driver::{ClientDriver, IoAction};

use crate::driver::client::{CLIENT_EVENT_QUEUE, CLIENT_READ_CHUNK};
use crate::driver::ServerAddrs;
use crate::terminal::{cannot_connect, print_error, Terminal, UserInput};

/// Something that happened around the driver, sent to its loop.
enum Event {
    User(UserInput),
    Data(Connection, Vec<u8>),
    Closed(Connection),
    /// The listener accepted this connection from this peer; the accept thread waits on the
    /// sender for whether it was taken (then it stops) or refused (then it accepts again).
    LbOffered(TcpStream, SocketAddr, mpsc::SyncSender<bool>),
}

/// Runs the client of docs/protocol.md §4 against `server` (the first of its addresses that
/// answers) on the current thread until it exits, and returns the process exit code.
pub fn run(server: ServerAddrs) -> i32 {
    // Each address in turn, as `connect_first` does; La's peer is where Lb must come from.
    let connected = TcpStream::connect(server.addrs()).and_then(|la| Ok((la.peer_addr()?, la)));
    let (peer, la) = match connected {
        Ok((peer, la)) => (peer, Arc::new(la)),
        Err(err) => return cannot_connect(&server, &err),
    };
    let _ = la.set_nodelay(true);
    let (events_tx, events) = mpsc::sync_channel(CLIENT_EVENT_QUEUE);
    if !spawn_reader(Connection::La, &la, &events_tx) {
        print_error("error: cannot start reading from the server");
        return 1;
    }
    let user = events_tx.clone();
    let mut terminal = Terminal::start(move |typed| user.send(Event::User(typed)).is_ok());
    let (now, tls) = (Instant::now(), server.tls());
    let mut driver = ClientDriver::new(now, terminal.config(), peer).with_tls(now, tls);
    let mut lb: Option<Arc<TcpStream>> = None;
    let code = 'run: loop {
        while let Some(action) = driver.poll_io(&mut terminal) {
            let now = Instant::now();
            match action {
                IoAction::Send(on, bytes) => {
                    // The driver sends on Lb only once it is accepted, so `lb` is there.
                    let stream = if on == Connection::La {
                        Some(&la)
                    } else {
                        lb.as_ref()
                    };
                    if let Some(Err(err)) = stream.map(|s| (&**s).write_all(&bytes)) {
                        driver.write_failed(now, on, &err);
                    }
                }
                IoAction::ListenLb => {
                    let ip = la.local_addr().map(|addr| addr.ip());
                    let bound = ip.and_then(|ip| listen_lb(ip, &events_tx));
                    driver.lb_listening(now, bound);
                }
                IoAction::Exit(code) => break 'run code,
            }
        }
        // The loop holds a sender itself, so the channel cannot close; if it did, La is gone.
        let event = recv_until(&events, driver.poll_timeout())
            .unwrap_or(Some(Event::Closed(Connection::La)));
        let now = Instant::now();
        match event {
            None => driver.handle_timeout(now),
            Some(Event::User(typed)) => driver.handle_input(now, typed.as_client_input()),
            Some(Event::Data(on, bytes)) => driver.handle_input(now, on.data(&bytes)),
            Some(Event::Closed(on)) => driver.handle_input(now, on.closed()),
            Some(Event::LbOffered(stream, peer, taken)) => {
                // Refused: `stream` is dropped (closed) here, unread.
                let is_lb = driver.lb_offered(now, peer);
                let _ = taken.send(is_lb);
                let stream = Arc::new(stream);
                if is_lb && spawn_reader(Connection::Lb, &stream, &events_tx) {
                    let _ = stream.set_nodelay(true);
                    lb = Some(stream);
                } else if is_lb {
                    driver.handle_input(now, ClientInput::LbClosed);
                }
            }
        }
    };
    // The readers hold the sockets too: shutting them closes both connections now.
    for stream in std::iter::once(&la).chain(lb.as_ref()) {
        let _ = stream.shutdown(Shutdown::Both);
    }
    code
}

/// Binds the Lb listener on La's local address, and starts the thread that accepts
/// connections and offers each to the driver until it takes one; the listener closes then.
fn listen_lb(ip: IpAddr, events: &SyncSender<Event>) -> io::Result<u16> {
    // On a port the system picks, as docs/protocol.md §4 step 3 says.
    let listener = TcpListener::bind(SocketAddr::new(ip, 0))?;
    let port = listener.local_addr()?.port();
    let events = events.clone();
    let accept = move || loop {
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(err) => {
                log::warn!("accepting Lb failed: {err}");
                return drop(events.send(Event::Closed(Connection::Lb)));
            }
        };
        let (taken, decision) = mpsc::sync_channel(1);
        // Taken, or no answer (the loop is gone, and with it the need for Lb): done.
        let sent = events.send(Event::LbOffered(stream, peer, taken)).is_ok();
        if !sent || decision.recv().unwrap_or(true) {
            return;
        }
    };
    let started = spawn("Lb accept".to_owned(), None, accept);
    started
        .then_some(port)
        .ok_or_else(|| io::Error::other("cannot start the Lb accept thread"))
}

/// Starts a thread that sends what `stream` reads as events until end of file or an error,
/// then its close; `false` if it could not start.
fn spawn_reader(on: Connection, stream: &Arc<TcpStream>, events: &SyncSender<Event>) -> bool {
    let stream = Arc::clone(stream);
    let events = events.clone();
    spawn(format!("{on} reader"), None, move || {
        let mut buffer = vec![0; CLIENT_READ_CHUNK];
        let read = |buffer: &mut [u8]| {
            read_some(&stream, buffer).inspect_err(|err| log::debug!("reading {on} failed: {err}"))
        };
        // Until end of file (`Ok(0)`) or an error; either way the connection is gone.
        while let Ok(n @ 1..) = read(&mut buffer) {
            if events.send(Event::Data(on, buffer[..n].to_vec())).is_err() {
                return;
            }
        }
        let _ = events.send(Event::Closed(on));
    })
}
