//! The server's system calls over the measured time: read/write-family calls from
//! `/proc/<pid>/io` always, and every call from `perf stat` with `--perf-syscalls`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde::Serialize;

/// The calls `perf stat` counts one by one besides the total: the ones a delivery makes on the
/// runtimes here (epoll, io_uring, socket reads and writes) and the ones that would show a
/// runtime doing more than it should (futex, wake-ups by eventfd, timers).
const NAMED: [&str; 14] = [
    "sendto",
    "recvfrom",
    "read",
    "write",
    "writev",
    "readv",
    "epoll_wait",
    "epoll_pwait",
    "epoll_ctl",
    "io_uring_enter",
    "futex",
    "accept4",
    "timerfd_settime",
    "poll",
];

/// The server's system calls over the measured time, with `--server-pid`.
#[derive(Debug, Serialize)]
pub struct Syscalls {
    /// Read- and write-family calls (`syscr + syscw` of `/proc/<pid>/io`) of every server
    /// process. Linux counts only `read`, `write`, `readv`, `writev`, `pread`/`pwrite`,
    /// `sendfile` and the like there: not `send`/`recv`(`sendto`/`recvfrom`), `epoll_*` or
    /// `io_uring_enter`, nor what io_uring does on the caller's behalf.
    pub read_write_calls: u64,
    /// `read_write_calls` per message delivered.
    pub read_write_per_delivery: f64,
    /// Every system call (`perf stat -e raw_syscalls:sys_enter`), with `--perf-syscalls`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub all_calls: Option<u64>,
    /// `all_calls` per message delivered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub all_per_delivery: Option<f64>,
    /// Some calls by name, per message delivered (those perf saw at least once).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub by_name_per_delivery: BTreeMap<String, f64>,
}

/// `syscr + syscw` of `pid` so far, from `/proc/<pid>/io`; `None` if unreadable.
pub fn read_write_calls(pid: u32) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let field = |name: &str| -> Option<u64> {
        io.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))?
            .trim()
            .parse()
            .ok()
    };
    Some(field("syscr")? + field("syscw")?)
}

/// The same for all of `pids`, if each can be read.
pub fn servers_read_write_calls(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&pid| read_write_calls(pid)).sum()
}

/// What perf counted: every call, and the [`NAMED`] ones it saw.
pub type PerfCounts = (u64, BTreeMap<String, u64>);

/// A `perf stat` attached to the server, counting only between [`Perf::enable`] and
/// [`Perf::stop`]: it is started before the warm-up, so that attaching to the server (which
/// takes a while) is not part of the measured time.
pub struct Perf {
    child: Child,
    /// perf's control FIFO (`enable`, `disable`) and the acknowledgements it writes back.
    control: std::fs::File,
    acks: mpsc::Receiver<()>,
    dir: PathBuf,
}

/// How long perf may take to act on a command before it is given up.
const PERF_ACK: Duration = Duration::from_secs(10);

impl Perf {
    /// Starts `perf stat` on every thread of `pids`, counting nothing yet; `Err` says why not.
    pub fn start(pids: &[u32]) -> Result<Perf, String> {
        let dir = std::env::temp_dir().join(format!("im-bench-perf-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|err| format!("cannot make {dir:?}: {err}"))?;
        let (control, ack) = (dir.join("control"), dir.join("ack"));
        for fifo in [&control, &ack] {
            nix::unistd::mkfifo(fifo, nix::sys::stat::Mode::S_IRWXU)
                .map_err(|err| format!("cannot make a FIFO for perf: {err}"))?;
        }
        // Both ends opened read-write, as perf does, so neither side waits for the other.
        let open = |path: &Path| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(|err| format!("cannot open {path:?}: {err}"))
        };
        let (control_file, ack_file) = (open(&control)?, open(&ack)?);
        let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
        let mut command = Command::new("perf");
        command.args([
            "stat",
            "-x",
            ",",
            "-D",
            "-1",
            "-e",
            "raw_syscalls:sys_enter",
        ]);
        for name in NAMED {
            command.args(["-e", &format!("syscalls:sys_enter_{name}")]);
        }
        let fifos = format!("fifo:{},{}", control.display(), ack.display());
        command
            .args(["--control", &fifos, "-p", &pids.join(",")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = command
            .spawn()
            .map_err(|err| format!("cannot run perf: {err}"))?;
        let (acked, acks) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(ack_file).lines() {
                if line.is_err() || acked.send(()).is_err() {
                    return;
                }
            }
        });
        Ok(Perf {
            child,
            control: control_file,
            acks,
            dir,
        })
    }

    /// Starts counting; returns once perf says it counts.
    pub fn enable(&mut self) -> Result<(), String> {
        self.command("enable")
    }

    fn command(&mut self, what: &str) -> Result<(), String> {
        writeln!(self.control, "{what}").map_err(|err| format!("cannot tell perf: {err}"))?;
        self.acks
            .recv_timeout(PERF_ACK)
            .map_err(|_| format!("perf did not acknowledge `{what}` within {PERF_ACK:?}"))
    }

    /// Stops counting; the total and the named counts, or why there are none.
    pub fn stop(mut self) -> Result<PerfCounts, String> {
        self.command("disable")?;
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        // perf prints its counts when interrupted, as on Ctrl-C.
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT)
            .map_err(|err| format!("cannot stop perf: {err}"))?;
        let mut text = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            let _ = stderr.read_to_string(&mut text);
        }
        let _ = self.child.wait();
        parse_perf(&text)
    }
}

impl Drop for Perf {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Reads `perf stat -x ,` output: `count,unit,event,...` a line.
fn parse_perf(text: &str) -> Result<PerfCounts, String> {
    let mut total = None;
    let mut named = BTreeMap::new();
    for line in text.lines() {
        let mut fields = line.split(',');
        let (Some(count), Some(_unit), Some(event)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Ok(count) = count.trim().parse::<u64>() else {
            continue;
        };
        if event == "raw_syscalls:sys_enter" {
            total = Some(count);
        } else if let Some(name) = event.strip_prefix("syscalls:sys_enter_") {
            if count > 0 {
                named.insert(name.to_owned(), count);
            }
        }
    }
    match total {
        Some(total) => Ok((total, named)),
        None => Err(format!(
            "perf counted nothing: {}",
            text.lines().last().unwrap_or("no output")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perf_csv_gives_the_total_and_the_names_seen() {
        let text = "\n1234,,raw_syscalls:sys_enter,5000,100.00,,\n\
                    600,,syscalls:sys_enter_sendto,5000,100.00,,\n\
                    0,,syscalls:sys_enter_futex,5000,100.00,,\n\
                    <not counted>,,syscalls:sys_enter_poll,0,0.00,,\n";
        let (total, named) = parse_perf(text).unwrap();
        assert_eq!(total, 1234);
        assert_eq!(named.len(), 1);
        assert_eq!(named["sendto"], 600);
        assert!(parse_perf("event syntax error: 'raw_syscalls'").is_err());
    }
}
