//! The runtimes: each supplies sockets, timers and tasks to the [drivers](crate::driver), and
//! nothing else.
//!
//! - [`smol`]: smol and async-net, one thread, behind [`Runtime`](crate::driver::Runtime);
//!   the default.
//! - [`threads`]: blocking `std::net` sockets, a thread per socket, driving the same
//!   [`ServerDriver`](crate::driver::ServerDriver) directly.
//! - [`Kind`] names them on the command line; [`Signals`] turns SIGINT/SIGTERM into something
//!   both can wait for.

pub mod client;
mod signals;
pub mod smol;
pub mod threads;

pub use signals::Signals;

use std::fmt;
use std::io::{BufRead, ErrorKind, Write};
use std::str::FromStr;
use std::sync::mpsc;

use crate::client::ClientInput;
use crate::driver::DriverConfig;

/// Which runtime carries the drivers' sockets (`--runtime`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Kind {
    /// smol and async-net: async tasks, all on one thread.
    #[default]
    Smol,
    /// Blocking std sockets: a reader thread per socket and a writer thread per client, each
    /// with a small stack.
    Threads,
}

impl Kind {
    /// Every kind, in the order `--help` lists them.
    pub const ALL: [Kind; 2] = [Kind::Smol, Kind::Threads];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Smol => "smol",
            Kind::Threads => "threads",
        }
    }

    /// The cap on open client connections when none is given: the threads runtime spends
    /// threads on each, so it is held lower.
    pub fn default_max_connections(self) -> usize {
        match self {
            Kind::Smol => crate::driver::DEFAULT_MAX_CONNECTIONS,
            Kind::Threads => 2_000,
        }
    }

    /// The drivers' defaults for this runtime.
    pub fn driver_config(self) -> DriverConfig {
        DriverConfig {
            max_connections: self.default_max_connections(),
            ..DriverConfig::default()
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Kind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .into_iter()
            .find(|kind| kind.name() == text)
            .ok_or_else(|| format!("{text:?}: expected smol or threads"))
    }
}

/// Room for a few events in a client's loop, so a flooding server waits on its socket instead
/// of growing the client's memory.
pub(crate) const CLIENT_EVENT_QUEUE: usize = 64;

/// How much one client socket read may take at once.
pub(crate) const CLIENT_READ_CHUNK: usize = 8192;

/// What the user did on the client's terminal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum UserInput {
    /// One line of standard input, without its `\n`.
    Line(Vec<u8>),
    /// Standard input reached end of file (Ctrl-D).
    EndOfInput,
    /// Ctrl-C, SIGTERM, or Ctrl-C typed at the password prompt.
    Interrupted,
}

impl UserInput {
    /// The same, as the client session takes it.
    pub(crate) fn as_client_input(&self) -> ClientInput<'_> {
        match self {
            UserInput::Line(line) => ClientInput::Line(line),
            UserInput::EndOfInput => ClientInput::StdinClosed,
            UserInput::Interrupted => ClientInput::Interrupted,
        }
    }
}

/// Starts the thread that reads one line of standard input per request sent to the returned
/// channel (`true`: a password, read without echo when standard input is a terminal) and hands
/// each to `deliver`, which says whether anybody still listens. Blocking reads (and
/// `rpassword`'s terminal handling) need a thread of their own in either runtime.
pub(crate) fn spawn_stdin_reader(
    mut deliver: impl FnMut(UserInput) -> bool + Send + 'static,
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
pub(crate) fn print_line(mut line: Vec<u8>) {
    line.push(b'\n');
    let mut stdout = std::io::stdout().lock();
    if let Err(err) = stdout.write_all(&line).and_then(|()| stdout.flush()) {
        log::debug!("writing to standard output failed: {err}");
    }
}

/// Writes `message` and `\n` to standard error in one call.
pub(crate) fn print_error(message: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(format!("{message}\n").as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threads_runtime_has_the_lower_default_cap() {
        assert!(
            Kind::Threads.driver_config().max_connections
                < Kind::Smol.driver_config().max_connections
        );
        assert_eq!(
            DriverConfig::default().max_connections,
            Kind::Smol.default_max_connections()
        );
    }

    #[test]
    fn kinds_parse_from_their_names() {
        for kind in Kind::ALL {
            assert_eq!(kind.name().parse::<Kind>(), Ok(kind));
        }
        assert!("tokio".parse::<Kind>().is_err());
    }
}
