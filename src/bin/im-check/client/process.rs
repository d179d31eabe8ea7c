//! The client under test as a process: typed at, read from, waited for.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use simple_im::protocol::line_bytes;

use crate::outcome::{escape, note, show_duration, Failure, Problem, Transcript};
use crate::wire::remaining;

/// The client process: standard input to type on, standard output and error as they come.
pub(super) struct ClientProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Receiver<Vec<u8>>,
    printed: Vec<u8>,
    /// How much of `printed` earlier expectations have used up.
    seen: usize,
    stdout_ended: bool,
    stderr: Arc<Mutex<Vec<u8>>>,
    transcript: Transcript,
}

impl ClientProcess {
    pub(super) fn spawn(
        command: &[OsString],
        port: u16,
        transcript: &Transcript,
    ) -> Result<Self, Problem> {
        let Some((program, args)) = command.split_first() else {
            return Err(Problem::Skip("no client command given".into()));
        };
        let mut child = Command::new(program)
            .args(args)
            .arg(Ipv4Addr::LOCALHOST.to_string())
            .arg(port.to_string())
            // Python buffers standard output in blocks when it is a pipe; a client's output
            // must reach us line by line, as it would reach a terminal.
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| {
                Problem::Fail(Failure::new(format!(
                    "cannot start the client {:?}: {error}",
                    program
                )))
            })?;
        note(
            transcript,
            format!("started the client with 127.0.0.1 {port}"),
        );
        let (chunks, stdout) = mpsc::channel();
        if let Some(mut pipe) = child.stdout.take() {
            thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                    if chunks.send(chunk[..n].to_vec()).is_err() {
                        break;
                    }
                }
            });
        }
        let stderr = Arc::new(Mutex::new(Vec::new()));
        if let Some(mut pipe) = child.stderr.take() {
            let sink = Arc::clone(&stderr);
            thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                    if let Ok(mut held) = sink.lock() {
                        held.extend_from_slice(&chunk[..n]);
                    }
                }
            });
        }
        Ok(ClientProcess {
            stdin: child.stdin.take(),
            child,
            stdout,
            printed: Vec::new(),
            seen: 0,
            stdout_ended: false,
            stderr,
            transcript: Arc::clone(transcript),
        })
    }

    /// Types `line` and Enter on the client's standard input.
    pub(super) fn type_line(&mut self, line: &[u8]) -> Result<(), Failure> {
        note(&self.transcript, format!("typed {}", escape(line)));
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| Failure::new("im-check bug: standard input is closed"))?;
        stdin
            .write_all(&line_bytes(line))
            .and_then(|()| stdin.flush())
            .map_err(|error| {
                Failure::new(format!(
                    "could not type {} (has the client exited?): {error}",
                    escape(line)
                ))
            })
    }

    /// Closes standard input (Ctrl-D).
    pub(super) fn close_stdin(&mut self) {
        note(&self.transcript, "closed standard input".into());
        self.stdin = None;
    }

    /// The client must print `text` (after what earlier expectations used) before `deadline`.
    pub(super) fn expect_output(&mut self, text: &[u8], deadline: Instant) -> Result<(), Failure> {
        let started = Instant::now();
        loop {
            let unseen = &self.printed[self.seen..];
            if let Some(at) = unseen.windows(text.len()).position(|w| w == text) {
                self.seen += at + text.len();
                return Ok(());
            }
            if self.stdout_ended {
                return Err(self.missing_output(text, "and then closed its output".into()));
            }
            match self.stdout.recv_timeout(remaining(deadline)) {
                Ok(chunk) => {
                    note(&self.transcript, format!("printed {}", escape(&chunk)));
                    self.printed.extend_from_slice(&chunk);
                }
                Err(RecvTimeoutError::Disconnected) => self.stdout_ended = true,
                Err(RecvTimeoutError::Timeout) => {
                    let waited = show_duration(started.elapsed());
                    return Err(
                        self.missing_output(text, format!("and nothing more within {waited}"))
                    );
                }
            }
        }
    }

    pub(super) fn missing_output(&self, text: &[u8], then: String) -> Failure {
        let unseen = &self.printed[self.seen..];
        Failure::new(format!(
            "expected the client to print {}, it printed {} {then}",
            escape(text),
            escape(unseen)
        ))
    }

    /// The exit status, if the client exits before `deadline`.
    pub(super) fn wait_exit(&mut self, deadline: Instant) -> Option<ExitStatus> {
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                note(&self.transcript, format!("the client exited: {status}"));
                return Some(status);
            }
            if remaining(deadline).is_zero() {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The client must exit with `code` (or, with `None`, any non-zero code) within `within`.
    pub(super) fn expect_exit(
        &mut self,
        code: Option<i32>,
        within: Duration,
        after: &str,
    ) -> Result<(), Failure> {
        let wanted = match code {
            Some(code) => format!("exit code {code}"),
            None => "a non-zero exit code".to_string(),
        };
        let Some(status) = self.wait_exit(Instant::now() + within) else {
            return Err(Failure::new(format!(
                "{after}: expected the client to exit with {wanted} within {}, it is still running",
                show_duration(within)
            )));
        };
        let ok = match (code, status.code()) {
            (Some(code), Some(got)) => code == got,
            (None, Some(got)) => got != 0,
            // Killed by a signal: never what the protocol asks for.
            (_, None) => false,
        };
        if ok {
            Ok(())
        } else {
            Err(Failure::new(format!(
                "{after}: expected the client to exit with {wanted}, it ended with {status}"
            )))
        }
    }

    /// What the client wrote on standard error so far.
    pub(super) fn stderr(&self) -> Vec<u8> {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The client must exit with `code` (or any non-zero code) within `within`, saying why on
    /// standard error.
    pub(super) fn expect_error_exit(
        &mut self,
        code: Option<i32>,
        within: Duration,
        after: &str,
    ) -> Result<(), Failure> {
        self.expect_exit(code, within, after)?;
        self.expect_error_message(after)
    }

    /// The client must have said something on standard error (after it exited).
    pub(super) fn expect_error_message(&self, after: &str) -> Result<(), Failure> {
        // The pipe's last bytes may still be on their way to the reader thread.
        let until = Instant::now() + Duration::from_millis(500);
        while self.stderr().iter().all(u8::is_ascii_whitespace) {
            if remaining(until).is_zero() {
                return Err(Failure::new(format!(
                    "{after}: expected a one-line error on standard error, it wrote nothing there"
                )));
            }
            thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }
}

impl Drop for ClientProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
