//! Programs under test as processes: a command template split like a shell would (but with no
//! shell), each program in a process group of its own, and the whole group killed at the end.
//!
//! A submission may start helpers of its own (a shell script that starts Python, a server that
//! forks): killing the group takes them all, so nothing outlives its check.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// Most bytes of a process's output kept for a report; a program may print without end.
const KEPT_OUTPUT: usize = 64 * 1024;

/// A command line with `{name}` placeholders, split into words the way `sh` would split it
/// (quotes and backslashes), without ever running a shell.
#[derive(Clone, Debug)]
pub struct Template {
    words: Vec<String>,
}

impl Template {
    /// Splits `text`; it must name a program.
    pub fn parse(text: &str) -> Result<Template, String> {
        let words = shell_words::split(text).map_err(|error| format!("{text:?}: {error}"))?;
        if words.is_empty() {
            return Err(format!("{text:?} names no program"));
        }
        Ok(Template { words })
    }

    /// Whether some word holds `{name}`.
    pub fn mentions(&self, name: &str) -> bool {
        let placeholder = format!("{{{name}}}");
        self.words.iter().any(|word| word.contains(&placeholder))
    }

    /// The words with each `{name}` of `values` replaced by its value.
    pub fn fill(&self, values: &[(&str, &str)]) -> Vec<OsString> {
        self.words
            .iter()
            .map(|word| {
                let mut word = word.clone();
                for (name, value) in values {
                    word = word.replace(&format!("{{{name}}}"), value);
                }
                OsString::from(word)
            })
            .collect()
    }
}

/// `argv` as a command whose process leads a new process group, so that [`kill_group`] can
/// end it with everything it started.
pub fn group_command(argv: &[OsString]) -> Option<Command> {
    let (program, args) = argv.split_first()?;
    let mut command = Command::new(program);
    command
        .args(args)
        .process_group(0)
        // Python buffers standard output in blocks when it is a pipe; a program's output
        // must reach us line by line, as it would reach a terminal.
        .env("PYTHONUNBUFFERED", "1");
    Some(command)
}

/// The process groups started by [`spawn_group`] and not killed yet: what an interrupted
/// im-check must end on its way out, since a group of its own does not get the terminal's
/// Ctrl-C.
static LIVE_GROUPS: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

/// Starts `command` (made by [`group_command`]) and notes its group, for [`kill_all_groups`].
pub fn spawn_group(command: &mut Command) -> io::Result<Child> {
    // Held across the spawn, so that an interruption cannot fall between it and the note.
    let mut live = LIVE_GROUPS.lock().unwrap_or_else(PoisonError::into_inner);
    let child = command.spawn()?;
    if let Ok(id) = i32::try_from(child.id()) {
        live.insert(id);
    }
    Ok(child)
}

/// Kills the process group `child` leads (see [`group_command`]) and reaps `child`.
pub fn kill_group(child: &mut Child) {
    if let Ok(id) = i32::try_from(child.id()) {
        // The group may already be gone; then there is nothing to kill.
        let _ = killpg(Pid::from_raw(id), Signal::SIGKILL);
        let mut live = LIVE_GROUPS.lock().unwrap_or_else(PoisonError::into_inner);
        live.remove(&id);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Kills every process group still running (im-check is being interrupted).
pub fn kill_all_groups() {
    let live = LIVE_GROUPS.lock().unwrap_or_else(PoisonError::into_inner);
    for &id in live.iter() {
        let _ = killpg(Pid::from_raw(id), Signal::SIGKILL);
    }
}

/// What a process writes on its standard output and error, both into one bounded buffer.
pub struct Captured {
    kept: Arc<Mutex<Kept>>,
    /// One message per pipe when it reaches its end.
    ended: Receiver<()>,
    pipes: usize,
    /// How much of the output [`Captured::take_new`] has handed out.
    taken: usize,
}

#[derive(Default)]
struct Kept {
    bytes: Vec<u8>,
    dropped: usize,
}

impl Captured {
    /// Starts reading `child`'s standard output and error (those that are piped).
    pub fn start(child: &mut Child) -> Captured {
        let kept = Arc::new(Mutex::new(Kept::default()));
        let (end, ended) = mpsc::channel();
        let mut pipes = 0;
        let stdout = child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>);
        let stderr = child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>);
        for mut pipe in [stdout, stderr].into_iter().flatten() {
            pipes += 1;
            let kept = Arc::clone(&kept);
            let end = end.clone();
            thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                    if let Ok(mut kept) = kept.lock() {
                        let room = KEPT_OUTPUT.saturating_sub(kept.bytes.len()).min(n);
                        kept.bytes.extend_from_slice(&chunk[..room]);
                        kept.dropped += n - room;
                    }
                }
                let _ = end.send(());
            });
        }
        Captured {
            kept,
            ended,
            pipes,
            taken: 0,
        }
    }

    /// Everything kept so far, as text; waits up to `settle` for the pipes to end first (after
    /// a kill, their last bytes may still be on their way).
    pub fn text(&mut self, settle: Duration) -> String {
        let until = Instant::now() + settle;
        while self.pipes > 0 {
            let left = until.saturating_duration_since(Instant::now());
            if self.ended.recv_timeout(left).is_err() {
                break;
            }
            self.pipes -= 1;
        }
        let Ok(kept) = self.kept.lock() else {
            return String::new();
        };
        let mut text = String::from_utf8_lossy(&kept.bytes).into_owned();
        if kept.dropped > 0 {
            text.push_str(&format!("\n… ({} more bytes not kept)", kept.dropped));
        }
        text
    }

    /// What was printed since the last call, without waiting (for a process that goes on).
    pub fn take_new(&mut self) -> String {
        let Ok(kept) = self.kept.lock() else {
            return String::new();
        };
        let new = kept.bytes.get(self.taken..).unwrap_or_default();
        self.taken = kept.bytes.len();
        String::from_utf8_lossy(new).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_split_like_a_shell_and_fill_every_placeholder() {
        let template = Template::parse("python3 'my server.py' {port} --users={users} {port}")
            .expect("a valid template");
        assert!(template.mentions("port") && template.mentions("users"));
        assert!(!template.mentions("dir"));
        let words = template.fill(&[("port", "4000"), ("users", "/tmp/u s.txt")]);
        assert_eq!(
            words,
            [
                "python3",
                "my server.py",
                "4000",
                "--users=/tmp/u s.txt",
                "4000"
            ]
        );
        assert!(Template::parse("python3 'unclosed").is_err());
        assert!(Template::parse("   ").is_err());
    }
}
