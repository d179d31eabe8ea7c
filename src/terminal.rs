//! The terminal front-end of the client: standard input in, the session's events printed out.
//!
//! Printing is one rendering of [`ClientEvent`]s ([`render`]); the bytes are those of
//! PROTOCOL.md §4 (prompts, every server line as it came, errors on standard error). Standard
//! input is read on a std thread in every runtime, one line per `ReadLine`, because blocking
//! reads (and `rpassword`'s terminal handling) fit no event loop.

use std::io::{BufRead, ErrorKind, IsTerminal, Write};
use std::sync::mpsc;

use crate::client::{ClientConfig, ClientEvent, ClientInput};
use crate::driver::client::ClientFrontend;
use crate::runtime::Signals;

/// An event as the terminal shows it: one line, without its `\n`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rendered {
    /// A line for standard output: a prompt, an echo, a server line exactly as it came.
    Stdout(Vec<u8>),
    /// A line for standard error.
    Stderr(String),
}

/// How the terminal shows `event`; `None` for the milestones (`LoggedIn`, `LbReady`, `Bye`),
/// whose server line was shown already as an answer.
pub fn render(event: &ClientEvent) -> Option<Rendered> {
    let without_newline = |mut line: Vec<u8>| {
        line.pop();
        Rendered::Stdout(line)
    };
    Some(match event {
        ClientEvent::Prompt(prompt) => Rendered::Stdout(prompt.text().to_vec()),
        ClientEvent::Echo(line) => Rendered::Stdout(line.clone()),
        ClientEvent::Answer { reply, .. } => without_newline(reply.to_line_bytes()),
        ClientEvent::Delivery {
            kind,
            sender,
            content,
        } => without_newline(kind.to_line_bytes(sender, content)),
        ClientEvent::UnknownDelivery(line) => Rendered::Stdout(line.clone()),
        ClientEvent::Error(error) => Rendered::Stderr(format!("error: {error}")),
        ClientEvent::Warning(warning) => Rendered::Stderr(format!("warning: {warning}")),
        ClientEvent::LoggedIn | ClientEvent::LbReady | ClientEvent::Bye => return None,
    })
}

/// What the user did on the client's terminal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserInput {
    /// One line of standard input, without its `\n`.
    Line(Vec<u8>),
    /// Standard input reached end of file (Ctrl-D).
    EndOfInput,
    /// Ctrl-C, SIGTERM, or Ctrl-C typed at the password prompt.
    Interrupted,
}

impl UserInput {
    /// The same, as the client session takes it.
    pub fn as_client_input(&self) -> ClientInput<'_> {
        match self {
            UserInput::Line(line) => ClientInput::Line(line),
            UserInput::EndOfInput => ClientInput::StdinClosed,
            UserInput::Interrupted => ClientInput::Interrupted,
        }
    }
}

/// The terminal as a [`ClientFrontend`]: events are printed, lines are read on request.
pub struct Terminal {
    interactive: bool,
    /// Asks the reader thread for one line (`true`: a password); `None` if it did not start.
    stdin_requests: Option<mpsc::Sender<bool>>,
}

impl Terminal {
    /// Starts reading standard input and watching for Ctrl-C / SIGTERM; each thing the user
    /// does goes to `deliver`, which says whether anybody still listens. Call it once: it
    /// installs the process's signal handler.
    pub fn start(deliver: impl Fn(UserInput) -> bool + Clone + Send + 'static) -> Terminal {
        let interactive = std::io::stdin().is_terminal();
        let stdin_requests = match spawn_stdin_reader(deliver.clone(), interactive) {
            Ok(requests) => Some(requests),
            Err(err) => {
                log::error!("cannot start the standard input reader: {err}");
                // As at end of input: the client leaves, as it would on Ctrl-D.
                deliver(UserInput::EndOfInput);
                None
            }
        };
        let signals = Signals::install();
        let watcher = std::thread::Builder::new()
            .name("signals".to_owned())
            .stack_size(crate::driver::THREAD_STACK)
            .spawn(move || loop {
                signals.wait();
                if !deliver(UserInput::Interrupted) {
                    return;
                }
            });
        if let Err(err) = watcher {
            log::warn!("cannot watch for Ctrl-C: {err}");
        }
        Terminal {
            interactive,
            stdin_requests,
        }
    }

    /// The client's configuration for this terminal (whether it is interactive).
    pub fn config(&self) -> ClientConfig {
        ClientConfig {
            interactive: self.interactive,
            ..ClientConfig::default()
        }
    }
}

impl ClientFrontend for Terminal {
    fn show(&mut self, event: ClientEvent) {
        match render(&event) {
            Some(Rendered::Stdout(line)) => print_line(line),
            Some(Rendered::Stderr(message)) => print_error(&message),
            None => {}
        }
    }

    fn read_line(&mut self, secret: bool) {
        // The reader thread only stops after reporting end of input, after which the session
        // asks for no more lines.
        if let Some(requests) = &self.stdin_requests {
            let _ = requests.send(secret);
        }
    }
}

/// Starts the thread that reads one line of standard input per request sent to the returned
/// channel (`true`: a password, read without echo when standard input is a terminal) and hands
/// each to `deliver`, which says whether anybody still listens.
fn spawn_stdin_reader(
    deliver: impl Fn(UserInput) -> bool + Send + 'static,
    interactive: bool,
) -> std::io::Result<mpsc::Sender<bool>> {
    let (requests, wanted) = mpsc::channel::<bool>();
    std::thread::Builder::new()
        .name("stdin".to_owned())
        .spawn(move || {
            for secret in wanted {
                let input = read_stdin_line(secret && interactive);
                let last = matches!(input, UserInput::EndOfInput | UserInput::Interrupted);
                if !deliver(input) || last {
                    return;
                }
            }
        })?;
    Ok(requests)
}

/// Reads one line of standard input as bytes, without its `\n`.
fn read_stdin_line(secret: bool) -> UserInput {
    if secret {
        return match rpassword::read_password() {
            Ok(password) => UserInput::Line(password.into_bytes()),
            // `rpassword` turns the terminal's Ctrl-C into a byte, then re-raises SIGINT.
            Err(err) if err.kind() == ErrorKind::Interrupted => UserInput::Interrupted,
            Err(err) => {
                if err.kind() != ErrorKind::UnexpectedEof {
                    log::warn!("reading the password failed: {err}");
                }
                UserInput::EndOfInput
            }
        };
    }
    let mut line = Vec::new();
    loop {
        match std::io::stdin().lock().read_until(b'\n', &mut line) {
            Ok(0) if line.is_empty() => return UserInput::EndOfInput,
            Ok(_) => {
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                return UserInput::Line(line);
            }
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => {
                log::warn!("reading standard input failed: {err}");
                return UserInput::EndOfInput;
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
pub fn print_error(message: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(format!("{message}\n").as_bytes());
}

/// Says on standard error that La could not be connected, and returns the exit code for it.
pub fn cannot_connect(server: &crate::driver::client::ServerAddrs, error: &std::io::Error) -> i32 {
    print_error(&format!("error: cannot connect to {server}: {error}"));
    1
}
