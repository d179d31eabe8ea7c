//! What a check finds, and how bytes and durations are shown in a report.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    } else if millis.is_multiple_of(1000) {
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
    /// The check was not run because the peer had stopped answering before it; the text
    /// says since when.
    NotRun(String),
}

impl From<Failure> for Problem {
    fn from(failure: Failure) -> Self {
        Problem::Fail(failure)
    }
}

/// What one check function returns.
pub type Outcome = Result<(), Problem>;
