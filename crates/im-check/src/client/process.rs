//! The client under test as a process: typed at, read from, waited for.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, ChildStdin, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use simple_im_core::protocol::line_bytes;

use crate::outcome::{escape, note, show_duration, Failure, Got, Problem, Transcript};
use crate::process::{group_command, kill_group, spawn_group};
use crate::wire::remaining;

/// How long a client must stay quiet after printing something for its last line to be taken
/// as a prompt worded otherwise (the exact prompt is taken at once).
const PROMPT_SETTLE: Duration = Duration::from_millis(150);

/// How long a client must stay quiet for the `prompts` check to compare its last line with
/// the prompt, rather than wait for the exact one still.
const EXACT_PROMPT_SETTLE: Duration = Duration::from_secs(2);

/// How long a killed client's last words on standard error may take to reach us.
const STDERR_SETTLE: Duration = Duration::from_millis(300);

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
    /// Says when standard error has reached its end.
    stderr_ended: Receiver<()>,
    transcript: Transcript,
}

impl ClientProcess {
    /// Starts `command` with `127.0.0.1 <port>` appended, in `dir` if given, in a process
    /// group of its own.
    pub(super) fn spawn(
        command: &[OsString],
        dir: Option<&Path>,
        port: u16,
        transcript: &Transcript,
    ) -> Result<Self, Problem> {
        let args = [Ipv4Addr::LOCALHOST.to_string(), port.to_string()];
        Self::spawn_with(command, dir, &args, transcript)
    }

    /// Starts `command` with `args` appended (the server and its port, or bad ones), in `dir`
    /// if given, in a process group of its own.
    pub(super) fn spawn_with(
        command: &[OsString],
        dir: Option<&Path>,
        args: &[String],
        transcript: &Transcript,
    ) -> Result<Self, Problem> {
        let Some(mut built) = group_command(command) else {
            return Err(Problem::Skip("no client command given".into()));
        };
        if let Some(dir) = dir {
            built.current_dir(dir);
        }
        built
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = spawn_group(&mut built).map_err(|error| {
            Problem::Fail(Failure::new(format!(
                "cannot start the client {:?}: {error}",
                command[0]
            )))
        })?;
        note(
            transcript,
            format!("started the client with {}", args.join(" ")),
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
        let (ended, stderr_ended) = mpsc::channel();
        if let Some(mut pipe) = child.stderr.take() {
            let sink = Arc::clone(&stderr);
            thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                    if let Ok(mut held) = sink.lock() {
                        held.extend_from_slice(&chunk[..n]);
                    }
                }
                let _ = ended.send(());
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
            stderr_ended,
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

    /// Waits for a prompt and returns what the client printed as one: `prompt` itself if it
    /// comes, or else, once the client has printed something and then gone quiet, the last
    /// line it printed (what a program shows just before it waits for input). So a prompt
    /// worded a little differently fails only the check that compares prompts (see
    /// [`Self::expect_prompt`]), and every other check still runs.
    pub(super) fn expect_prompt_like(
        &mut self,
        prompt: &[u8],
        deadline: Instant,
    ) -> Result<Vec<u8>, Failure> {
        self.expect_prompt_after_quiet(prompt, PROMPT_SETTLE, deadline)
    }

    /// [`Self::expect_prompt_like`], taking the last line as the prompt once the client has
    /// been quiet for `settle`.
    fn expect_prompt_after_quiet(
        &mut self,
        prompt: &[u8],
        settle: Duration,
        deadline: Instant,
    ) -> Result<Vec<u8>, Failure> {
        let started = Instant::now();
        let mut last_output = started;
        loop {
            let unseen = &self.printed[self.seen..];
            if let Some(at) = unseen.windows(prompt.len()).position(|w| w == prompt) {
                self.seen += at + prompt.len();
                return Ok(prompt.to_vec());
            }
            let printed_something = unseen.iter().any(|b| !b.is_ascii_whitespace());
            let quiet = last_output.elapsed() >= settle || remaining(deadline).is_zero();
            if printed_something && (quiet || self.stdout_ended) {
                let shown = last_line(unseen).to_vec();
                self.seen = self.printed.len();
                return Ok(shown);
            }
            if self.stdout_ended {
                return Err(self.missing_output(prompt, "and then closed its output".into()));
            }
            let wait = if printed_something {
                (last_output + settle).min(deadline)
            } else {
                deadline
            };
            match self.stdout.recv_timeout(remaining(wait)) {
                Ok(chunk) => {
                    note(&self.transcript, format!("printed {}", escape(&chunk)));
                    self.printed.extend_from_slice(&chunk);
                    last_output = Instant::now();
                }
                Err(RecvTimeoutError::Disconnected) => self.stdout_ended = true,
                Err(RecvTimeoutError::Timeout)
                    if remaining(deadline).is_zero() && !printed_something =>
                {
                    let waited = show_duration(started.elapsed());
                    return Err(
                        self.missing_output(prompt, format!("and nothing more within {waited}"))
                    );
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// The client must print exactly `prompt` next (`what` names it): a prompt worded
    /// otherwise fails with both byte strings and where they first differ.
    pub(super) fn expect_prompt(
        &mut self,
        prompt: &[u8],
        what: &str,
        deadline: Instant,
    ) -> Result<(), Failure> {
        // A greeting printed before the prompt, long before it while the program starts, is
        // not taken for the prompt: the exact one gets a while longer to come.
        let shown = self.expect_prompt_after_quiet(prompt, EXACT_PROMPT_SETTLE, deadline)?;
        if shown == prompt {
            return self.expect_prompt_line(prompt, what, deadline);
        }
        let differs_at = shown
            .iter()
            .zip(prompt)
            .position(|(a, b)| a != b)
            .unwrap_or(shown.len().min(prompt.len()));
        Err(Failure::mismatch(
            format!("the client's {what} prompt (first difference at byte {differs_at})"),
            prompt,
            Got::Bytes(shown),
        ))
    }

    /// The prompt just found (ending at `seen`) must be a whole line of its own: nothing
    /// before it on its line, and `\n` right after it (docs/protocol.md §4.2).
    fn expect_prompt_line(
        &mut self,
        prompt: &[u8],
        what: &str,
        deadline: Instant,
    ) -> Result<(), Failure> {
        let start = self.seen - prompt.len();
        let line_start = self.printed[..start]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |at| at + 1);
        // The `\n` comes in the same write as a rule; a client that prints none waits for
        // input, so a short quiet ends the wait.
        let until = (Instant::now() + EXACT_PROMPT_SETTLE).min(deadline);
        let line_end = loop {
            if let Some(at) = self.printed[self.seen..].iter().position(|&b| b == b'\n') {
                break Some(self.seen + at + 1);
            }
            if self.stdout_ended {
                break None;
            }
            match self.stdout.recv_timeout(remaining(until)) {
                Ok(chunk) => {
                    note(&self.transcript, format!("printed {}", escape(&chunk)));
                    self.printed.extend_from_slice(&chunk);
                }
                Err(RecvTimeoutError::Disconnected) => self.stdout_ended = true,
                Err(RecvTimeoutError::Timeout) => break None,
            }
        };
        let line = self.printed[line_start..line_end.unwrap_or(self.printed.len())].to_vec();
        self.seen = line_end.unwrap_or(self.printed.len());
        let mut expected = prompt.to_vec();
        expected.push(b'\n');
        if line == expected {
            return Ok(());
        }
        Err(Failure::mismatch(
            format!(
                "the client's {what} prompt line (a prompt is a line of its own, \\n included)"
            ),
            &expected,
            Got::Bytes(line),
        ))
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

    /// Everything the client printed on standard output that im-check has read.
    pub(super) fn printed(&self) -> &[u8] {
        &self.printed
    }

    /// The client must exit with code 2 within `within`, with a one-line error on standard
    /// error (docs/protocol.md §6: a bad argument).
    pub(super) fn expect_usage_error(
        &mut self,
        within: Duration,
        after: &str,
    ) -> Result<(), Failure> {
        self.expect_exit(Some(2), within, after)?;
        // The pipe's last bytes may still be on their way.
        let _ = self.stderr_ended.recv_timeout(STDERR_SETTLE);
        let said = self.stderr();
        let line = said.strip_suffix(b"\n").unwrap_or(&said);
        if line.is_empty() || line.contains(&b'\n') || line.iter().all(u8::is_ascii_whitespace) {
            return Err(Failure::new(format!(
                "{after}: expected a one-line error on standard error, it wrote {}",
                escape(&said)
            )));
        }
        Ok(())
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

/// The last line of `text` that is not blank, with its `\n` if it has one.
fn last_line(text: &[u8]) -> &[u8] {
    text.split_inclusive(|&b| b == b'\n')
        .rfind(|line| line.iter().any(|b| !b.is_ascii_whitespace()))
        .unwrap_or(text)
}

impl Drop for ClientProcess {
    fn drop(&mut self) {
        // Whatever the client started goes with it.
        kill_group(&mut self.child);
        // What it said on standard error (a traceback, say) belongs in the transcript; its
        // last bytes may still be on their way.
        let _ = self.stderr_ended.recv_timeout(STDERR_SETTLE);
        let said = self.stderr();
        if !said.iter().all(u8::is_ascii_whitespace) {
            note(
                &self.transcript,
                format!("the client wrote on standard error {}", escape(&said)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::last_line;

    #[test]
    fn the_last_line_printed_is_the_prompt() {
        assert_eq!(last_line(b"Welcome!\nUser name: "), b"User name: ");
        assert_eq!(last_line(b"Welcome!\nUser name:\n\n  \n"), b"User name:\n");
        assert_eq!(last_line(b"only"), b"only");
        assert_eq!(last_line(b"\n"), b"\n");
    }
}
