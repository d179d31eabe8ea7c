//! The smol client adapter: it connects La, carries bytes, lines and timers between the OS and a
//! [`ClientSession`], and does what the session asks. Every protocol decision is the session's.
//!
//! One loop owns the session. Everything that can happen (La or Lb bytes, the Lb accept, a stdin
//! line, Ctrl-C) arrives as an `Event` on one channel, so the session sees one ordered stream
//! and needs no locks. Standard input is read on a std thread, one line per `ReadLine`, because
//! blocking reads (and `rpassword`'s terminal handling) do not fit an async task.

use std::io::{BufRead, ErrorKind, IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Instant;

use async_channel::{Receiver, Sender};
use async_net::{TcpListener, TcpStream};
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use smol::{Task, Timer};

use crate::client::{ClientConfig, ClientInput, ClientOutput, ClientSession};

/// Room for a few events, so a flooding server waits on its socket instead of growing memory.
const EVENT_QUEUE: usize = 64;
/// How much one socket read may take at once.
const READ_CHUNK: usize = 8192;

/// Something that happened around the session, sent to its loop.
enum Event {
    Line(Vec<u8>),
    StdinClosed,
    Interrupted,
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
    let (events_tx, events) = async_channel::bounded(EVENT_QUEUE);
    // Dropping a task cancels it, so returning from here stops every reader.
    let mut tasks: Vec<Task<()>> = vec![smol::spawn(forward_reads(
        la.clone(),
        events_tx.clone(),
        Event::LaData,
        Event::LaClosed,
    ))];
    let interactive = std::io::stdin().is_terminal();
    let stdin_requests = spawn_stdin_reader(events_tx.clone(), interactive);
    let interrupts = events_tx.clone();
    if let Err(err) = ctrlc::set_handler(move || {
        let _ = interrupts.send_blocking(Event::Interrupted);
    }) {
        log::warn!("Ctrl-C will not end the session cleanly: {err}");
    }

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
                    let _ = stdin_requests.send(secret);
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
            Event::Line(line) => session.handle_input(now, ClientInput::Line(&line)),
            Event::StdinClosed => session.handle_input(now, ClientInput::StdinClosed),
            Event::Interrupted => session.handle_input(now, ClientInput::Interrupted),
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
    let mut buffer = vec![0; READ_CHUNK];
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

/// Starts the thread that reads one line of standard input per request sent to the returned
/// channel (`true`: a password, read without echo when standard input is a terminal).
fn spawn_stdin_reader(events: Sender<Event>, interactive: bool) -> mpsc::Sender<bool> {
    let (requests, wanted) = mpsc::channel::<bool>();
    let reader_events = events.clone();
    let spawned = std::thread::Builder::new()
        .name("stdin".to_owned())
        .spawn(move || {
            for secret in wanted {
                let event = read_stdin_line(secret && interactive);
                let last = matches!(event, Event::StdinClosed | Event::Interrupted);
                if reader_events.send_blocking(event).is_err() || last {
                    return;
                }
            }
        });
    if let Err(err) = spawned {
        log::error!("cannot start the standard input reader: {err}");
        let _ = events.try_send(Event::StdinClosed);
    }
    requests
}

/// Reads one line of standard input as bytes, without its `\n`.
fn read_stdin_line(secret: bool) -> Event {
    if secret {
        return match rpassword::read_password() {
            Ok(password) => Event::Line(password.into_bytes()),
            // `rpassword` turns the terminal's Ctrl-C into a byte, then re-raises SIGINT.
            Err(err) if err.kind() == ErrorKind::Interrupted => Event::Interrupted,
            Err(err) => {
                if err.kind() != ErrorKind::UnexpectedEof {
                    log::warn!("reading the password failed: {err}");
                }
                Event::StdinClosed
            }
        };
    }
    let mut line = Vec::new();
    loop {
        match std::io::stdin().lock().read_until(b'\n', &mut line) {
            Ok(0) if line.is_empty() => return Event::StdinClosed,
            Ok(_) => {
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                return Event::Line(line);
            }
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => {
                log::warn!("reading standard input failed: {err}");
                return Event::StdinClosed;
            }
        }
    }
}

/// Writes `line` and `\n` to standard output in one call, so lines never interleave.
fn print_line(mut line: Vec<u8>) {
    line.push(b'\n');
    let mut stdout = std::io::stdout().lock();
    if let Err(err) = stdout.write_all(&line).and_then(|()| stdout.flush()) {
        log::debug!("writing to standard output failed: {err}");
    }
}

/// Writes `message` and `\n` to standard error in one call.
fn print_error(message: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(format!("{message}\n").as_bytes());
}
