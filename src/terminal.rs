//! The terminal front-end of the client: standard input in, the session's events printed out.
//!
//! Printing is one rendering of [`ClientEvent`]s ([`render`], the core's); the bytes are those of
//! docs/protocol.md §4 (prompts, every server line as it came, errors on standard error). Standard
//! input is read on a std thread in every runtime, one line per `ReadLine`, because blocking
//! reads (and `rpassword`'s terminal handling) fit no event loop.
//!
//! When standard input and output are both a terminal, commands are read with the line editor
//! (`line_editor.rs`, the `terminal` feature), and what comes meanwhile is printed above
//! the line being typed. Otherwise (piped, or without the feature) lines are read and printed
//! as they are, byte for byte, and the output reads as a transcript.

use std::io::{BufRead, ErrorKind, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use simple_im_core::client::{ClientConfig, ClientEvent, ClientInput};
use simple_im_core::driver::{ClientFrontend, THREAD_STACK};
use simple_im_core::render::{render, Rendered};

use crate::driver::ServerAddrs;
use crate::line_editor::{self, Ended, LineEditor, Screen};
use crate::signals::Signals;

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

/// Which line the session asks the reader thread for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LineKind {
    /// The user name: edited, but kept out of the history.
    UserName,
    /// The password: without echo on a terminal, never in the history.
    Password,
    /// A command: edited, and kept in this session's history.
    Command,
}

/// The terminal as a [`ClientFrontend`]: events are printed, lines are read on request.
pub struct Terminal {
    interactive: bool,
    /// Asks the reader thread for one line; `None` if it did not start.
    stdin_requests: Option<mpsc::Sender<LineKind>>,
    /// Set once `201` came: from then on lines are commands.
    reading_commands: bool,
    /// Prints above the line being edited, when commands are read with the line editor; left
    /// (the terminal's settings put back) when the terminal is dropped, in case the client
    /// exits while the line editor has the terminal in raw mode.
    screen: Option<Screen>,
    /// Standard error is the terminal too, so its lines go above the edited line as well.
    stderr_on_screen: bool,
    /// The reader thread is in the line editor (the terminal is in raw mode).
    editing: Arc<AtomicBool>,
}

impl Terminal {
    /// Starts reading standard input and watching for Ctrl-C / SIGTERM; each thing the user
    /// does goes to `deliver`, which says whether anybody still listens. Call it once: it
    /// installs the process's signal handler.
    pub fn start(deliver: impl Fn(UserInput) -> bool + Clone + Send + 'static) -> Terminal {
        let interactive = std::io::stdin().is_terminal();
        let editor = if interactive && std::io::stdout().is_terminal() {
            line_editor::start()
        } else {
            None
        };
        let (editor, screen) = match editor {
            Some((editor, screen)) => (Some(editor), Some(screen)),
            None => (None, None),
        };
        let editing = Arc::new(AtomicBool::new(false));
        let reader = spawn_stdin_reader(deliver.clone(), interactive, editor, editing.clone());
        let stdin_requests = match reader {
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
            .stack_size(THREAD_STACK)
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
            reading_commands: false,
            stderr_on_screen: screen.is_some() && std::io::stderr().is_terminal(),
            screen,
            editing,
        }
    }

    /// The client's configuration for this terminal (whether it is interactive).
    pub fn config(&self) -> ClientConfig {
        ClientConfig {
            interactive: self.interactive,
            ..ClientConfig::default()
        }
    }

    /// Prints `line` above the line being edited if there is a line editor, else as it is.
    fn print_on_screen(&mut self, line: Vec<u8>) {
        let Some(screen) = &mut self.screen else {
            return print_line(line);
        };
        // A terminal shows text: bytes that are not UTF-8 are shown as U+FFFD.
        let mut text = String::from_utf8_lossy(&line).into_owned();
        text.push('\n');
        if let Err(err) = screen.print(text) {
            log::debug!("printing above the edited line failed: {err}");
            print_line(line);
        }
    }

    /// Takes the terminal out of the line editor's raw mode for good (the client is leaving),
    /// ending the half-typed line; returns whether it was in it.
    fn leave_line_editor(&mut self) -> bool {
        let Some(screen) = self.screen.take() else {
            return false;
        };
        // What comes now goes straight out, below the half-typed line.
        screen.leave();
        let was_editing = self.editing.load(Ordering::SeqCst);
        if was_editing {
            print_line(Vec::new());
        }
        was_editing
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        self.leave_line_editor();
    }
}

impl ClientFrontend for Terminal {
    fn show(&mut self, event: ClientEvent) {
        if event == ClientEvent::LbReady {
            self.reading_commands = true;
        }
        if matches!(event, ClientEvent::Error(_)) {
            // The client exits right after: the message must be out before, not left to the
            // editor's thread to draw.
            self.leave_line_editor();
        }
        match render(&event) {
            Some(Rendered::Stdout(line)) => self.print_on_screen(line),
            Some(Rendered::Stderr(message)) if self.stderr_on_screen => {
                self.print_on_screen(message.into_bytes())
            }
            Some(Rendered::Stderr(message)) => print_error(&message),
            None => {}
        }
    }

    fn read_line(&mut self, secret: bool) {
        let kind = match (secret, self.reading_commands) {
            (true, _) => LineKind::Password,
            (false, false) => LineKind::UserName,
            (false, true) => LineKind::Command,
        };
        // The reader thread only stops after reporting end of input, after which the session
        // asks for no more lines.
        if let Some(requests) = &self.stdin_requests {
            let _ = requests.send(kind);
        }
    }
}

/// Starts the thread that reads one line of standard input per request sent to the returned
/// channel (a password without echo when standard input is a terminal; with `editor`, other
/// lines through it) and hands each to `deliver`, which says whether anybody still listens.
fn spawn_stdin_reader(
    deliver: impl Fn(UserInput) -> bool + Send + 'static,
    interactive: bool,
    mut editor: Option<LineEditor>,
    editing: Arc<AtomicBool>,
) -> std::io::Result<mpsc::Sender<LineKind>> {
    let (requests, wanted) = mpsc::channel::<LineKind>();
    std::thread::Builder::new()
        .name("stdin".to_owned())
        .spawn(move || {
            for kind in wanted {
                let secret = kind == LineKind::Password;
                let input = match &mut editor {
                    Some(editor) if !secret => {
                        editing.store(true, Ordering::SeqCst);
                        let input = match editor.read(kind == LineKind::Command) {
                            Ok(line) => UserInput::Line(line.into_bytes()),
                            Err(Ended::Interrupted) => UserInput::Interrupted,
                            Err(Ended::EndOfInput) => UserInput::EndOfInput,
                        };
                        editing.store(false, Ordering::SeqCst);
                        input
                    }
                    _ => read_stdin_line(secret && interactive),
                };
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
pub fn cannot_connect(server: &ServerAddrs, error: &std::io::Error) -> i32 {
    print_error(&format!("error: cannot connect to {server}: {error}"));
    1
}
