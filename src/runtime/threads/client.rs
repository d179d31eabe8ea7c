//! The std-thread client adapter: the same [`ClientSession`] as the smol one, on blocking
//! sockets, with the same behaviour. Every protocol decision is the session's.
//!
//! The calling thread owns the session and writes to La and Lb itself (a client has one peer,
//! so waiting on it holds up nobody else). Threads read La, accept Lb then read it, read
//! standard input one line per `ReadLine`, and wait for Ctrl-C; each sends what happened as
//! an `Event` over one bounded channel, so the session sees one ordered stream.

use std::io::{ErrorKind, IsTerminal, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::Instant;

use super::{read_some, spawn};
use crate::client::{ClientConfig, ClientInput, ClientOutput, ClientSession};
use crate::runtime::{
    print_error, print_line, spawn_stdin_reader, Signals, UserInput, CLIENT_EVENT_QUEUE,
    CLIENT_READ_CHUNK,
};

/// Something that happened around the session, sent to its loop.
enum Event {
    User(UserInput),
    LaData(Vec<u8>),
    LaClosed,
    LbAccepted(TcpStream),
    LbData(Vec<u8>),
    LbClosed,
}

/// Runs the client of PROTOCOL.md §4 against `server` on the current thread until it exits,
/// and returns the process exit code.
pub fn run(server: SocketAddr) -> i32 {
    let la = match TcpStream::connect(server) {
        Ok(stream) => Arc::new(stream),
        Err(err) => {
            print_error(&format!("error: cannot connect to {server}: {err}"));
            return 1;
        }
    };
    let (events_tx, events) = mpsc::sync_channel(CLIENT_EVENT_QUEUE);
    if !spawn_forwarder("La", &la, &events_tx, Event::LaData, Event::LaClosed) {
        print_error("error: cannot start reading from the server");
        return 1;
    }
    let interactive = std::io::stdin().is_terminal();
    let stdin_events = events_tx.clone();
    let deliver = move |input| stdin_events.send(Event::User(input)).is_ok();
    let stdin_requests = match spawn_stdin_reader(deliver, interactive) {
        Ok(requests) => Some(requests),
        Err(err) => {
            log::error!("cannot start the standard input reader: {err}");
            let _ = events_tx.try_send(Event::User(UserInput::EndOfInput));
            None
        }
    };
    let signals = Signals::install();
    let interrupts = events_tx.clone();
    spawn("signals".to_owned(), None, move || loop {
        signals.wait();
        if interrupts
            .send(Event::User(UserInput::Interrupted))
            .is_err()
        {
            return;
        }
    });

    let config = ClientConfig {
        interactive,
        ..ClientConfig::default()
    };
    let mut session = ClientSession::new(Instant::now(), config);
    let mut lb: Option<Arc<TcpStream>> = None;
    let code = loop {
        if let Some(code) =
            carry_out_outputs(&mut session, &la, &mut lb, &events_tx, &stdin_requests)
        {
            break code;
        }
        let Some(event) = next_event(&events, session.poll_timeout()) else {
            session.handle_timeout(Instant::now());
            continue;
        };
        let now = Instant::now();
        match event {
            Event::User(input) => session.handle_input(now, input.as_client_input()),
            Event::LaData(bytes) => session.handle_input(now, ClientInput::LaData(&bytes)),
            Event::LaClosed => session.handle_input(now, ClientInput::LaClosed),
            Event::LbAccepted(stream) => {
                let stream = Arc::new(stream);
                let input =
                    if spawn_forwarder("Lb", &stream, &events_tx, Event::LbData, Event::LbClosed) {
                        lb = Some(stream);
                        ClientInput::LbAccepted
                    } else {
                        ClientInput::LbClosed
                    };
                session.handle_input(now, input);
            }
            Event::LbData(bytes) => session.handle_input(now, ClientInput::LbData(&bytes)),
            Event::LbClosed => session.handle_input(now, ClientInput::LbClosed),
        }
    };
    // The readers hold the sockets too: shutting them closes both connections now.
    let _ = la.shutdown(Shutdown::Both);
    if let Some(lb) = lb {
        let _ = lb.shutdown(Shutdown::Both);
    }
    code
}

/// Does what the session asks until it asks nothing more; returns the exit code once it exits.
fn carry_out_outputs(
    session: &mut ClientSession,
    la: &Arc<TcpStream>,
    lb: &mut Option<Arc<TcpStream>>,
    events: &SyncSender<Event>,
    stdin_requests: &Option<mpsc::Sender<bool>>,
) -> Option<i32> {
    while let Some(output) = session.poll_output() {
        match output {
            ClientOutput::Print(line) => print_line(line),
            ClientOutput::Error(message) => print_error(&message),
            ClientOutput::ReadLine { secret } => {
                // The reader thread only stops after reporting end of input, after which the
                // session asks for no more lines.
                if let Some(requests) = stdin_requests {
                    let _ = requests.send(secret);
                }
            }
            ClientOutput::SendLa(bytes) => {
                let mut stream: &TcpStream = la;
                if let Err(err) = stream.write_all(&bytes) {
                    log::debug!("writing to La failed: {err}");
                    session.handle_input(Instant::now(), ClientInput::LaClosed);
                }
            }
            ClientOutput::ListenLb => {
                let input = match listen_lb(la) {
                    Ok((listener, port)) => {
                        let events = events.clone();
                        if spawn("Lb accept".to_owned(), None, move || {
                            accept_one(listener, events)
                        }) {
                            ClientInput::LbListening(port)
                        } else {
                            ClientInput::LbListenFailed
                        }
                    }
                    Err(err) => {
                        log::warn!("cannot listen for Lb: {err}");
                        ClientInput::LbListenFailed
                    }
                };
                session.handle_input(Instant::now(), input);
            }
            ClientOutput::SendLb(bytes) => {
                let written = match lb.as_deref() {
                    Some(mut stream) => stream.write_all(&bytes),
                    None => Err(ErrorKind::NotConnected.into()),
                };
                if let Err(err) = written {
                    log::debug!("writing to Lb failed: {err}");
                    session.handle_input(Instant::now(), ClientInput::LbClosed);
                }
            }
            ClientOutput::Exit(code) => return Some(code),
        }
    }
    None
}

/// Waits for the next event; `None` once `deadline` (if any) has come first.
fn next_event(events: &Receiver<Event>, deadline: Option<Instant>) -> Option<Event> {
    match deadline {
        Some(at) => match events.recv_timeout(at.saturating_duration_since(Instant::now())) {
            Ok(event) => Some(event),
            Err(RecvTimeoutError::Timeout) => None,
            // The loop holds a sender itself, so the channel cannot close; if it did, the
            // session would be told that La is gone.
            Err(RecvTimeoutError::Disconnected) => Some(Event::LaClosed),
        },
        None => Some(events.recv().unwrap_or(Event::LaClosed)),
    }
}

/// Binds the Lb listener on La's local address, so the server reaches the interface it sees.
fn listen_lb(la: &TcpStream) -> std::io::Result<(TcpListener, u16)> {
    let ip = la.local_addr()?.ip();
    let listener = TcpListener::bind((ip, 0))?;
    let port = listener.local_addr()?.port();
    Ok((listener, port))
}

/// Accepts the server's one Lb connection; the listener closes when this returns.
fn accept_one(listener: TcpListener, events: SyncSender<Event>) {
    let event = match listener.accept() {
        Ok((stream, peer)) => {
            log::debug!("Lb accepted from {peer}");
            Event::LbAccepted(stream)
        }
        Err(err) => {
            log::warn!("accepting Lb failed: {err}");
            Event::LbClosed
        }
    };
    let _ = events.send(event);
}

/// Starts a thread that sends what `stream` reads as `data` events until end of file or an
/// error, then `closed`; `false` if it could not start.
fn spawn_forwarder(
    name: &str,
    stream: &Arc<TcpStream>,
    events: &SyncSender<Event>,
    data: fn(Vec<u8>) -> Event,
    closed: Event,
) -> bool {
    let stream = Arc::clone(stream);
    let events = events.clone();
    spawn(format!("{name} reader"), None, move || {
        let mut buffer = vec![0; CLIENT_READ_CHUNK];
        loop {
            match read_some(&stream, &mut buffer) {
                Ok(0) => break,
                Ok(n) => {
                    if events.send(data(buffer[..n].to_vec())).is_err() {
                        return;
                    }
                }
                Err(err) => {
                    log::debug!("read failed: {err}");
                    break;
                }
            }
        }
        let _ = events.send(closed);
    })
}
