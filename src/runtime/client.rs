//! The smol client adapter: it connects La, carries bytes, lines and timers between the OS and a
//! [`ClientSession`], and does what the session asks. Every protocol decision is the session's.
//!
//! One loop owns the session. Everything that can happen (La or Lb bytes, the Lb accept, a stdin
//! line, Ctrl-C) arrives as an `Event` on one channel, so the session sees one ordered stream
//! and needs no locks. Standard input is read on a std thread, one line per `ReadLine`, because
//! blocking reads (and `rpassword`'s terminal handling) do not fit an async task.

use std::io::{ErrorKind, IsTerminal};
use std::net::SocketAddr;
use std::time::Instant;

use async_channel::{Receiver, Sender};
use async_net::{TcpListener, TcpStream};
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use smol::{Task, Timer};

use super::{
    print_error, print_line, spawn_stdin_reader, Signals, UserInput, CLIENT_EVENT_QUEUE,
    CLIENT_READ_CHUNK,
};
use crate::client::{ClientConfig, ClientInput, ClientOutput, ClientSession};

/// Something that happened around the session, sent to its loop.
enum Event {
    User(UserInput),
    LaData(Vec<u8>),
    LaClosed,
    LbAccepted(TcpStream),
    LbData(Vec<u8>),
    LbClosed,
}

/// Why the loop woke up.
enum Wake {
    Event(Event),
    Timeout,
}

/// Runs the client of PROTOCOL.md §4 against `server` on the current thread until it exits,
/// and returns the process exit code.
pub fn run(server: SocketAddr) -> i32 {
    smol::block_on(run_async(server))
}

async fn run_async(server: SocketAddr) -> i32 {
    let la = match TcpStream::connect(server).await {
        Ok(stream) => stream,
        Err(err) => {
            print_error(&format!("error: cannot connect to {server}: {err}"));
            return 1;
        }
    };
    let (events_tx, events) = async_channel::bounded(CLIENT_EVENT_QUEUE);
    // Dropping a task cancels it, so returning from here stops every reader.
    let mut tasks: Vec<Task<()>> = vec![smol::spawn(forward_reads(
        la.clone(),
        events_tx.clone(),
        Event::LaData,
        Event::LaClosed,
    ))];
    let interactive = std::io::stdin().is_terminal();
    let stdin_events = events_tx.clone();
    let deliver = move |input| stdin_events.send_blocking(Event::User(input)).is_ok();
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
    tasks.push(smol::spawn(async move {
        loop {
            signals.recv().await;
            if interrupts
                .send(Event::User(UserInput::Interrupted))
                .await
                .is_err()
            {
                return;
            }
        }
    }));

    let config = ClientConfig {
        interactive,
        ..ClientConfig::default()
    };
    let mut session = ClientSession::new(Instant::now(), config);
    let mut la_writer = la;
    let mut lb_writer: Option<TcpStream> = None;
    loop {
        while let Some(output) = session.poll_output() {
            match output {
                ClientOutput::Print(line) => print_line(line),
                ClientOutput::Error(message) => print_error(&message),
                ClientOutput::ReadLine { secret } => {
                    // The reader thread only stops after reporting end of input, after which
                    // the session asks for no more lines.
                    if let Some(requests) = &stdin_requests {
                        let _ = requests.send(secret);
                    }
                }
                ClientOutput::SendLa(bytes) => {
                    if let Err(err) = la_writer.write_all(&bytes).await {
                        log::debug!("writing to La failed: {err}");
                        session.handle_input(Instant::now(), ClientInput::LaClosed);
                    }
                }
                ClientOutput::ListenLb => {
                    let input = match listen_lb(&la_writer).await {
                        Ok((listener, port)) => {
                            tasks.push(smol::spawn(accept_one(listener, events_tx.clone())));
                            ClientInput::LbListening(port)
                        }
                        Err(err) => {
                            log::warn!("cannot listen for Lb: {err}");
                            ClientInput::LbListenFailed
                        }
                    };
                    session.handle_input(Instant::now(), input);
                }
                ClientOutput::SendLb(bytes) => {
                    let written = match lb_writer.as_mut() {
                        Some(lb) => lb.write_all(&bytes).await,
                        None => Err(ErrorKind::NotConnected.into()),
                    };
                    if let Err(err) = written {
                        log::debug!("writing to Lb failed: {err}");
                        session.handle_input(Instant::now(), ClientInput::LbClosed);
                    }
                }
                ClientOutput::Exit(code) => return code,
            }
        }

        let event = match next_wake(&events, session.poll_timeout()).await {
            Wake::Timeout => {
                session.handle_timeout(Instant::now());
                continue;
            }
            Wake::Event(event) => event,
        };
        let now = Instant::now();
        match event {
            Event::User(input) => session.handle_input(now, input.as_client_input()),
            Event::LaData(bytes) => session.handle_input(now, ClientInput::LaData(&bytes)),
            Event::LaClosed => session.handle_input(now, ClientInput::LaClosed),
            Event::LbAccepted(stream) => {
                tasks.push(smol::spawn(forward_reads(
                    stream.clone(),
                    events_tx.clone(),
                    Event::LbData,
                    Event::LbClosed,
                )));
                lb_writer = Some(stream);
                session.handle_input(now, ClientInput::LbAccepted);
            }
            Event::LbData(bytes) => session.handle_input(now, ClientInput::LbData(&bytes)),
            Event::LbClosed => session.handle_input(now, ClientInput::LbClosed),
        }
    }
}

/// Waits for the next event, or for `deadline` if there is one.
async fn next_wake(events: &Receiver<Event>, deadline: Option<Instant>) -> Wake {
    let event = async {
        match events.recv().await {
            Ok(event) => Wake::Event(event),
            // The loop holds a sender itself, so this cannot happen; a pending future is the
            // honest answer if it ever did.
            Err(_) => future::pending().await,
        }
    };
    match deadline {
        Some(at) => {
            future::or(event, async {
                Timer::at(at).await;
                Wake::Timeout
            })
            .await
        }
        None => event.await,
    }
}

/// Binds the Lb listener on La's local address, so the server reaches the interface it sees.
async fn listen_lb(la: &TcpStream) -> std::io::Result<(TcpListener, u16)> {
    let ip = la.local_addr()?.ip();
    let listener = TcpListener::bind((ip, 0)).await?;
    let port = listener.local_addr()?.port();
    Ok((listener, port))
}

/// Accepts the server's one Lb connection; the listener closes when this returns.
async fn accept_one(listener: TcpListener, events: Sender<Event>) {
    let event = match listener.accept().await {
        Ok((stream, peer)) => {
            log::debug!("Lb accepted from {peer}");
            Event::LbAccepted(stream)
        }
        Err(err) => {
            log::warn!("accepting Lb failed: {err}");
            Event::LbClosed
        }
    };
    let _ = events.send(event).await;
}

/// Sends what `stream` reads as `data` events until end of file or an error, then `closed`.
async fn forward_reads(
    mut stream: TcpStream,
    events: Sender<Event>,
    data: fn(Vec<u8>) -> Event,
    closed: Event,
) {
    let mut buffer = vec![0; CLIENT_READ_CHUNK];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) => break,
            Ok(n) => {
                if events.send(data(buffer[..n].to_vec())).await.is_err() {
                    return;
                }
            }
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => {
                log::debug!("read failed: {err}");
                break;
            }
        }
    }
    let _ = events.send(closed).await;
}
