//! Raw TCP with a deadline on every step, and how bytes are shown in a report.
//!
//! A check never blocks past its deadline: every read, write and accept here takes one, so a
//! peer that hangs turns into "got nothing within …" instead of a stuck checker.

use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// What went over the wire during one check, line by line, for `--verbose` and `--json`.
pub type Transcript = Arc<Mutex<Vec<String>>>;

/// Appends one entry to `transcript`; a poisoned lock only loses the transcript, never the check.
pub fn note(transcript: &Transcript, entry: String) {
    if let Ok(mut entries) = transcript.lock() {
        entries.push(entry);
    }
}

/// Longest run of bytes shown in a report; a peer may send megabytes, a report line should not.
const SHOWN_BYTES: usize = 200;

/// `bytes` in double quotes, escaped so that every byte is visible: `"303 Bye\n"`, `"\xff"`.
pub fn escape(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(SHOWN_BYTES)];
    let mut out = String::with_capacity(shown.len() + 2);
    out.push('"');
    for &byte in shown {
        match byte {
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            0x20..=0x7e => out.push(char::from(byte)),
            _ => out.push_str(&format!("\\x{byte:02x}")),
        }
    }
    out.push('"');
    if bytes.len() > SHOWN_BYTES {
        out.push_str(&format!("… ({} bytes in all)", bytes.len()));
    }
    out
}

/// A duration the way a person writes it: `300ms`, `5s`, `1.5s`.
pub fn show_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis < 1000 {
        format!("{millis}ms")
    } else if millis % 1000 == 0 {
        format!("{}s", millis / 1000)
    } else {
        format!("{:.1}s", duration.as_secs_f64())
    }
}

/// What arrived where a particular line was expected.
#[derive(Clone, Debug)]
pub enum Got {
    /// These bytes: a whole line (with its `\n`), or what came before a silence or the end.
    Bytes(Vec<u8>),
    /// Nothing at all for this long.
    Nothing(Duration),
    /// The peer closed the connection, after sending these bytes of an unfinished line.
    Closed(Vec<u8>),
    /// The socket failed.
    Error(String),
}

impl fmt::Display for Got {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Got::Bytes(bytes) => f.write_str(&escape(bytes)),
            Got::Nothing(waited) => write!(f, "nothing within {}", show_duration(*waited)),
            Got::Closed(partial) if partial.is_empty() => {
                f.write_str("end of stream (the connection was closed)")
            }
            Got::Closed(partial) => write!(
                f,
                "{} and then end of stream (the connection was closed)",
                escape(partial)
            ),
            Got::Error(error) => write!(f, "a socket error: {error}"),
        }
    }
}

/// Why a check failed: what was being done, and (when bytes were compared) both sides.
#[derive(Clone, Debug)]
pub struct Failure {
    /// What the check was looking at, e.g. `answer to jacky's "/list"`.
    pub context: String,
    /// The exact bytes the protocol asks for, when there are such bytes.
    pub expected: Option<Vec<u8>>,
    /// What came instead.
    pub got: Option<Got>,
}

impl Failure {
    /// A failure told in words only.
    pub fn new(context: impl Into<String>) -> Self {
        Failure {
            context: context.into(),
            expected: None,
            got: None,
        }
    }

    /// `expected` bytes were due and `got` came instead.
    pub fn mismatch(context: impl Into<String>, expected: &[u8], got: Got) -> Self {
        Failure {
            context: context.into(),
            expected: Some(expected.to_vec()),
            got: Some(got),
        }
    }

    /// Something other than particular bytes was due (`expected` says what), `got` came.
    pub fn unexpected(context: impl Into<String>, expected: &str, got: Got) -> Self {
        Failure {
            context: format!("{}: expected {expected}", context.into()),
            expected: None,
            got: Some(got),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.context)?;
        match (&self.expected, &self.got) {
            (Some(expected), Some(got)) => write!(f, ": expected {}, got {got}", escape(expected)),
            (None, Some(got)) => write!(f, ", got {got}"),
            (Some(expected), None) => write!(f, ": expected {}", escape(expected)),
            (None, None) => Ok(()),
        }
    }
}

/// Why a check did not pass.
#[derive(Clone, Debug)]
pub enum Problem {
    /// The peer did something the protocol does not allow.
    Fail(Failure),
    /// The check cannot be run here; the text says why (never counted as a pass).
    Skip(String),
}

impl From<Failure> for Problem {
    fn from(failure: Failure) -> Self {
        Problem::Fail(failure)
    }
}

/// What one check function returns.
pub type Outcome = Result<(), Problem>;

/// The longest line kept while waiting for its `\n`: far more than any answer, and a bound on
/// what a misbehaving peer can make the checker hold.
const MAX_HELD: usize = 1 << 20;

/// One TCP connection, read line by line, each step bounded by a deadline.
pub struct Conn {
    stream: TcpStream,
    held: Vec<u8>,
    closed: bool,
    label: String,
    transcript: Transcript,
}

impl Conn {
    /// Wraps `stream`; `label` (e.g. `jacky La`) names it in the transcript.
    pub fn new(stream: TcpStream, label: String, transcript: Transcript) -> Self {
        // Small writes go out at once: checks time what the peer does after each one.
        let _ = stream.set_nodelay(true);
        Conn {
            stream,
            held: Vec::new(),
            closed: false,
            label,
            transcript,
        }
    }

    /// Connects to `addr` before `deadline`.
    pub fn connect(
        addr: SocketAddr,
        deadline: Instant,
        label: String,
        transcript: Transcript,
    ) -> Result<Self, Failure> {
        let wait = remaining(deadline).max(Duration::from_millis(1));
        match TcpStream::connect_timeout(&addr, wait) {
            Ok(stream) => {
                note(&transcript, format!("{label}: connected to {addr}"));
                Ok(Conn::new(stream, label, transcript))
            }
            Err(error) => Err(Failure::new(format!(
                "{label}: cannot connect to {addr}: {error}"
            ))),
        }
    }

    /// The local address of this connection (the address the peer sees us at).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.stream.local_addr().ok()
    }

    /// Whether the peer has closed the connection, as far as reads have seen.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Writes all of `bytes` before `deadline`.
    pub fn send(&mut self, bytes: &[u8], deadline: Instant) -> Result<(), Failure> {
        note(
            &self.transcript,
            format!("{} sent {}", self.label, escape(bytes)),
        );
        let wait = remaining(deadline).max(Duration::from_millis(1));
        let _ = self.stream.set_write_timeout(Some(wait));
        self.stream.write_all(bytes).map_err(|error| {
            Failure::new(format!(
                "{}: could not send {}: {error}",
                self.label,
                escape(bytes)
            ))
        })
    }

    /// The next line, `\n` included, if one arrives before `deadline`.
    pub fn read_line(&mut self, deadline: Instant) -> Result<Vec<u8>, Got> {
        let started = Instant::now();
        loop {
            if let Some(at) = self.held.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.held.drain(..=at).collect();
                note(
                    &self.transcript,
                    format!("{} got {}", self.label, escape(&line)),
                );
                return Ok(line);
            }
            if self.held.len() > MAX_HELD {
                return Err(Got::Bytes(std::mem::take(&mut self.held)));
            }
            if self.closed {
                return Err(Got::Closed(std::mem::take(&mut self.held)));
            }
            match self.fill(deadline) {
                Fill::Data => {}
                Fill::TimedOut if self.held.is_empty() => {
                    return Err(Got::Nothing(started.elapsed()))
                }
                Fill::TimedOut => return Err(Got::Bytes(std::mem::take(&mut self.held))),
                Fill::Failed(error) => return Err(Got::Error(error)),
            }
        }
    }

    /// Reads one line and compares it with `expected` byte for byte.
    pub fn expect_line(
        &mut self,
        expected: &[u8],
        deadline: Instant,
        context: &str,
    ) -> Result<(), Failure> {
        match self.read_line(deadline) {
            Ok(line) if line == expected => Ok(()),
            Ok(line) => Err(Failure::mismatch(context, expected, Got::Bytes(line))),
            Err(got) => Err(Failure::mismatch(context, expected, got)),
        }
    }

    /// Nothing at all may arrive before `until` (the peer must still be waiting for us).
    pub fn expect_quiet(&mut self, until: Instant, context: &str) -> Result<(), Failure> {
        if self.held.is_empty() && !self.closed {
            loop {
                match self.fill(until) {
                    Fill::TimedOut => return Ok(()),
                    Fill::Data if self.held.is_empty() && !self.closed => {}
                    Fill::Data => break,
                    Fill::Failed(error) => {
                        return Err(Failure::unexpected(
                            context,
                            "nothing yet",
                            Got::Error(error),
                        ))
                    }
                }
            }
        }
        // Whatever came, show all of it that is already here.
        let got = if self.closed {
            Got::Closed(std::mem::take(&mut self.held))
        } else {
            self.read_line(Instant::now())
                .map_or_else(|got| got, Got::Bytes)
        };
        Err(Failure::unexpected(context, "nothing yet", got))
    }

    /// The peer must close the connection before `deadline`, sending nothing more.
    pub fn expect_closed(&mut self, deadline: Instant, context: &str) -> Result<(), Failure> {
        match self.read_line(deadline) {
            Err(Got::Closed(partial)) if partial.is_empty() => Ok(()),
            // A reset closes the connection as well, only less politely.
            Err(Got::Error(_)) if self.held.is_empty() => Ok(()),
            Ok(line) => Err(Failure::unexpected(
                context,
                "the connection to be closed",
                Got::Bytes(line),
            )),
            Err(got) => Err(Failure::unexpected(
                context,
                "the connection to be closed",
                got,
            )),
        }
    }

    /// Closes both directions now, the way a crashed or departing peer would.
    pub fn close(&mut self) {
        note(
            &self.transcript,
            format!("{} closed by im-check", self.label),
        );
        let _ = self.stream.shutdown(Shutdown::Both);
        self.closed = true;
    }

    /// One read into `held`, waiting at most until `deadline`.
    fn fill(&mut self, deadline: Instant) -> Fill {
        let wait = remaining(deadline);
        if wait.is_zero() {
            return Fill::TimedOut;
        }
        let _ = self.stream.set_read_timeout(Some(wait));
        let mut chunk = [0u8; 8192];
        match self.stream.read(&mut chunk) {
            Ok(0) => {
                note(
                    &self.transcript,
                    format!("{} got end of stream", self.label),
                );
                self.closed = true;
                Fill::Data
            }
            Ok(n) => {
                self.held.extend_from_slice(&chunk[..n]);
                Fill::Data
            }
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if remaining(deadline).is_zero() {
                    Fill::TimedOut
                } else {
                    Fill::Data
                }
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => Fill::Data,
            Err(error) => {
                note(&self.transcript, format!("{} error: {error}", self.label));
                self.closed = true;
                Fill::Failed(if error.kind() == ErrorKind::ConnectionReset {
                    "the connection was reset (closed abruptly)".to_string()
                } else {
                    error.to_string()
                })
            }
        }
    }
}

/// What one read did.
enum Fill {
    /// Bytes arrived, or the end of the stream did (see `closed`), or a wait was cut short.
    Data,
    /// The deadline passed.
    TimedOut,
    /// The socket failed.
    Failed(String),
}

/// Time left until `deadline` (zero once it has passed).
pub fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// Accepts one connection on `listener` before `deadline`.
pub fn accept(listener: &TcpListener, deadline: Instant) -> Result<TcpStream, Got> {
    // std has no accept timeout; polling a non-blocking listener is simple and cheap enough.
    let started = Instant::now();
    listener
        .set_nonblocking(true)
        .map_err(|error| Got::Error(error.to_string()))?;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream
                    .set_nonblocking(false)
                    .map_err(|error| Got::Error(error.to_string()))?;
                return Ok(stream);
            }
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                if remaining(deadline).is_zero() {
                    return Err(Got::Nothing(started.elapsed()));
                }
                thread::sleep(Duration::from_millis(5));
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => return Err(Got::Error(error.to_string())),
        }
    }
}

/// A TCP port on `ip` that nothing listens on (bound, then released), for the `202` paths.
pub fn closed_port(ip: std::net::IpAddr) -> Result<u16, Failure> {
    let listener = TcpListener::bind((ip, 0))
        .map_err(|error| Failure::new(format!("cannot find a free port on {ip}: {error}")))?;
    let port = listener
        .local_addr()
        .map_err(|error| Failure::new(format!("cannot find a free port on {ip}: {error}")))?
        .port();
    drop(listener);
    Ok(port)
}
