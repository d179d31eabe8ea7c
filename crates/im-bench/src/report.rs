//! What a run measured: the [`Report`], as JSON (`--json`) or as a table for people.

use std::io::{self, Write};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::syscalls::Syscalls;
use crate::user::FailureKind;

/// Everything one scenario run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// `to`, `toall`, `sessions` or `login-flood`.
    pub scenario: &'static str,
    /// The server's address.
    pub server: String,
    /// Opening the sessions the scenario uses; absent for `login-flood`, which opens none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub setup: Option<Setup>,
    /// The request load (`to`, `toall`); absent for `sessions`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load: Option<Load>,
    /// Password guessing and the real users' logins meanwhile (`login-flood`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flood: Option<Flood>,
    /// The server's memory, with `--server-pid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_memory: Option<Memory>,
    /// What went wrong, by kind.
    pub failures: Failures,
    /// The first failure's message, to start looking from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

impl Report {
    /// Whether the run measured what it set out to, which makes `im-bench` exit 0: nothing
    /// failed, some session opened, some guess was answered, and the server outlived the run.
    pub fn succeeded(&self) -> bool {
        let server_alive = self.server_memory.as_ref().is_none_or(|memory| {
            memory.alive_at_end != Some(false) && memory.killed_at_rss_kib.is_none()
        });
        self.failures.total == 0
            && self.setup.as_ref().is_none_or(|setup| setup.opened > 0)
            && self
                .flood
                .as_ref()
                .is_none_or(|flood| flood.attempts.answered > 0)
            && server_alive
    }
}

/// Opening sessions: connect, login, Lb, until the client asks for its first command.
#[derive(Debug, Serialize)]
pub struct Setup {
    /// Sessions the scenario asked for.
    pub requested: usize,
    /// Sessions that opened.
    pub opened: usize,
    /// From the first connect to the last session ready.
    pub seconds: f64,
    /// `opened / seconds`.
    pub per_second: f64,
    /// Connect to ready, per session.
    pub latency_us: Latency,
}

/// The measured part of a request load (warm-up excluded).
#[derive(Debug, Serialize)]
pub struct Load {
    /// Concurrent senders in closed loop (pairs for `to`, 1 for `toall`).
    pub senders: usize,
    /// Recipients of each request (1 for `to`).
    pub fanout: usize,
    /// Requests answered `303` during warm-up, not counted below.
    pub warmup_requests: u64,
    /// Requests sent after warm-up.
    pub requests: u64,
    /// Of those, answered `303`.
    pub delivered: u64,
    /// Messages delivered: `delivered × fanout`.
    pub deliveries: u64,
    /// The measured time: from the end of warm-up to the last answer.
    pub seconds: f64,
    /// `delivered / seconds`.
    pub requests_per_second: f64,
    /// `deliveries / seconds`.
    pub deliveries_per_second: f64,
    /// Deliveries the recipients saw on Lb and acknowledged, warm-up included.
    pub received: u64,
    /// From sending the request to reading its `303`.
    pub latency_us: Latency,
    /// The processor time spent over the measured time.
    pub cpu: Cpu,
    /// The server's system calls over the measured time (with `--server-pid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syscalls: Option<Syscalls>,
}

/// `login-flood`: what the password guessing got through, and how the real users fared.
#[derive(Debug, Serialize)]
pub struct Flood {
    /// The account guessed at.
    pub target: String,
    /// Guessing connections, each in closed loop.
    pub attackers: usize,
    /// The addresses they connect from, in turn.
    pub sources: Vec<String>,
    /// Every this-many-th guess overall is the right password.
    pub right_every: u64,
    /// From the first connect to the end (`--duration`, or earlier if the server was killed).
    pub seconds: f64,
    /// Why the run ended before `--duration`, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_early: Option<String>,
    /// The guesses and their answers.
    pub attempts: Attempts,
    /// The guessers' connections.
    pub connections: Connections,
    /// Each `--real` user's logins, in the order given.
    pub real_users: Vec<RealLogins>,
}

/// The guesses of a `login-flood` and their answers.
#[derive(Debug, Default, Serialize)]
pub struct Attempts {
    /// `/login` lines written (a guess whose connection ended unanswered is sent again).
    pub sent: u64,
    /// Answered, whatever the answer.
    pub answered: u64,
    /// Answered `101`.
    pub answered_101: u64,
    /// Answered `102`.
    pub answered_102: u64,
    /// Answered anything else (or a line too long to be an answer).
    pub answered_other: u64,
    /// Not answered: the connection ended first. A server that closes after its last
    /// allowed failure makes a few of these, when its close reaches the guesser only after
    /// the next guess was written.
    pub unanswered_closed: u64,
    /// Still waiting for their answer when the run ended (not counted above). A guesser
    /// waits for its answer as long as the run lasts.
    pub in_flight_at_end: u64,
    /// `answered / seconds`.
    pub answered_per_second: f64,
    /// The right password, sent.
    pub right_sent: u64,
    /// The right password, answered.
    pub right_answered: u64,
    /// The right password, answered `101`: let in.
    pub right_let_in: u64,
    /// `right_let_in / right_answered`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub right_let_in_share: Option<f64>,
    /// A wrong password answered `101`; anything but 0 is a broken server.
    pub wrong_let_in: u64,
    /// Password checks per minute against the target, estimated as answered attempts per
    /// minute × the share of right passwords let in: a server that answers without checking
    /// (locked out, throttled) lets fewer right ones in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checks_per_minute: Option<f64>,
    /// From writing a guess to reading its answer.
    pub latency_us: Latency,
}

/// The guessers' connections in a `login-flood`.
#[derive(Debug, Default, Serialize)]
pub struct Connections {
    /// Connects that succeeded.
    pub opened: u64,
    /// Connects refused, reset, failed otherwise, or not done within `--timeout`.
    pub connect_failed: u64,
    /// Connections the server ended (end of file or reset), answered guesses or not.
    pub closed_by_server: u64,
    /// Of those, by a reset rather than an end of file.
    pub resets: u64,
    /// Of those, before answering any guess on it.
    pub closed_unanswered: u64,
    /// Connections the guesser closed itself after a `101`.
    pub closed_after_101: u64,
    /// `attempts.answered / opened`.
    pub answers_per_connection: f64,
}

/// One `--real` user's logins during a `login-flood`: one a second from 127.0.0.1, each on a
/// new connection.
#[derive(Debug, Default, Serialize)]
pub struct RealLogins {
    /// The user name.
    pub user: String,
    /// Logins begun.
    pub logins: u64,
    /// Answered `101`.
    pub answered_101: u64,
    /// Answered `101` within `--within` of the connect.
    pub answered_101_within: u64,
    /// `--within`, in milliseconds.
    pub within_ms: u64,
    /// Answered `102`.
    pub answered_102: u64,
    /// Answered anything else.
    pub answered_other: u64,
    /// Not answered: no answer within `--timeout`, or the connection ended or failed first.
    pub not_answered: u64,
    /// Of those, the connect itself failed.
    pub connect_failed: u64,
    /// Still waiting when the run ended (not counted above).
    pub in_flight_at_end: u64,
    /// From the connect to the answer, for the answered ones.
    pub latency_us: Latency,
}

/// Processor time (user and system) over the measured time. Both programs share the machine,
/// so this is what tells how much of it each one needed for the rate measured.
#[derive(Debug, Serialize)]
pub struct Cpu {
    /// im-bench's own, in seconds.
    pub bench_seconds: f64,
    /// im-bench's, per message delivered, in microseconds.
    pub bench_us_per_delivery: f64,
    /// The server's (with `--server-pid`), in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_seconds: Option<f64>,
    /// The server's per message delivered, in microseconds: `1e6 /` this is the rate one
    /// core of the server's own could carry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_us_per_delivery: Option<f64>,
}

/// Processor time used so far by the process `pid` (`None`: this one), from `/proc/<pid>/stat`.
pub fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from its end.
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    // Fields 14 and 15, `utime` and `stime`; the first field here is field 3.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // Linux reports them in USER_HZ, which is 100 on every architecture it exports to users.
    Some(Duration::from_millis(ticks * 10))
}

/// A latency distribution in microseconds.
#[derive(Debug, Default, Serialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Smallest.
    pub min: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

impl Latency {
    /// Summarises `histogram` (microseconds).
    pub fn of(histogram: &Histogram<u64>) -> Latency {
        if histogram.is_empty() {
            return Latency::default();
        }
        Latency {
            count: histogram.len(),
            min: histogram.min(),
            mean: histogram.mean(),
            p50: histogram.value_at_quantile(0.5),
            p90: histogram.value_at_quantile(0.9),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
        }
    }
}

/// A histogram for latencies in microseconds, from 1 µs to an hour at 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts, so this cannot fail.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap_or_else(|_| unreachable!())
}

/// Records `elapsed` in `histogram` in microseconds.
pub fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    histogram.saturating_record(micros.max(1));
}

/// The server's resident memory from `/proc/<pid>/status`.
#[derive(Debug, Serialize)]
pub struct Memory {
    /// The server's process id.
    pub pid: u32,
    /// `VmRSS` before the scenario opened its sessions, KiB.
    pub rss_before_kib: Option<u64>,
    /// `VmRSS` with every session open, KiB.
    pub rss_kib: Option<u64>,
    /// `VmHWM`: the most the server has been resident, KiB (`login-flood`: the last one read
    /// if the server died or was killed).
    pub peak_rss_kib: Option<u64>,
    /// `(rss - rss_before) / sessions opened`, bytes.
    pub rss_per_session_bytes: Option<f64>,
    /// The most `VmRSS` seen, sampled every 100 ms over the run (`login-flood`), KiB: what
    /// the run itself made the server hold, where `VmHWM` covers the process's whole life.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampled_max_rss_kib: Option<u64>,
    /// Whether the process was still running at the end (`login-flood`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alive_at_end: Option<bool>,
    /// im-bench killed the server when its `VmRSS` reached this (`--kill-server-above`), KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub killed_at_rss_kib: Option<u64>,
}

/// One field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`); `None` if unreadable.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        value.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// Failures by kind; any of them makes `im-bench` exit 1.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Failures {
    /// All of the below.
    pub total: u64,
    /// Sessions that could not be opened.
    pub login: u64,
    /// Requests answered `304`.
    pub delivery_failed: u64,
    /// Requests answered something else than `303`/`304`.
    pub unexpected_answer: u64,
    /// Requests or logins with no answer in time.
    pub timeout: u64,
    /// Sessions the server ended while in use.
    pub session_lost: u64,
    /// `/exit` not answered `310` at the end.
    pub exit: u64,
}

impl Failures {
    /// Counts one failure of `kind`.
    pub fn add(&mut self, kind: FailureKind) {
        self.total += 1;
        let counter = match kind {
            FailureKind::Login => &mut self.login,
            FailureKind::DeliveryFailed => &mut self.delivery_failed,
            FailureKind::UnexpectedAnswer => &mut self.unexpected_answer,
            FailureKind::Timeout => &mut self.timeout,
            FailureKind::SessionLost => &mut self.session_lost,
            FailureKind::Exit => &mut self.exit,
        };
        *counter += 1;
    }
}

/// Writes `report` as a table for people.
pub fn write_table(report: &Report, out: &mut impl Write) -> io::Result<()> {
    writeln!(
        out,
        "im-bench {} against {}",
        report.scenario, report.server
    )?;
    if let Some(setup) = &report.setup {
        writeln!(
            out,
            "  {:<12}{} of {} sessions in {:.2} s ({:.0}/s)",
            "setup", setup.opened, setup.requested, setup.seconds, setup.per_second
        )?;
        write_latency(out, "setup µs", &setup.latency_us)?;
    }
    if let Some(flood) = &report.flood {
        write_flood(out, flood)?;
    }
    if let Some(load) = &report.load {
        writeln!(
            out,
            "  {:<12}{} senders, {} recipient(s) per request",
            "load", load.senders, load.fanout
        )?;
        writeln!(
            out,
            "  {:<12}{:.2} s, {} requests sent, {} answered 303 ({} more in warm-up)",
            "measured", load.seconds, load.requests, load.delivered, load.warmup_requests
        )?;
        writeln!(
            out,
            "  {:<12}{:.0} requests/s, {:.0} deliveries/s ({} received on Lb)",
            "throughput", load.requests_per_second, load.deliveries_per_second, load.received
        )?;
        write_latency(out, "latency µs", &load.latency_us)?;
        let cpu = &load.cpu;
        let server = match (cpu.server_seconds, cpu.server_us_per_delivery) {
            (Some(seconds), Some(per)) => format!("server {seconds:.2} s ({per:.1} µs/delivery)"),
            _ => "server ? (give --server-pid)".to_owned(),
        };
        writeln!(
            out,
            "  {:<12}bench {:.2} s ({:.1} µs/delivery), {server}",
            "cpu", cpu.bench_seconds, cpu.bench_us_per_delivery
        )?;
        if let Some(calls) = &load.syscalls {
            write!(
                out,
                "  {:<12}server read/write family {:.2}/delivery",
                "syscalls", calls.read_write_per_delivery
            )?;
            match calls.all_per_delivery {
                Some(all) => write!(out, ", all {all:.2}/delivery")?,
                None => write!(out, ", all ? (give --perf-syscalls)")?,
            }
            for (name, per) in &calls.by_name_per_delivery {
                write!(out, ", {name} {per:.2}")?;
            }
            writeln!(out)?;
        }
    }
    if let Some(memory) = &report.server_memory {
        write!(
            out,
            "  {:<12}pid {}: RSS {} (before {}, peak {})",
            "server",
            memory.pid,
            mib(memory.rss_kib),
            mib(memory.rss_before_kib),
            mib(memory.peak_rss_kib),
        )?;
        if report.setup.is_some() {
            let per_session = memory.rss_per_session_bytes;
            let per_session = per_session.map_or("?".to_owned(), |bytes| format!("{bytes:.0}"));
            write!(out, ", {per_session} bytes/session")?;
        }
        if let Some(max) = memory.sampled_max_rss_kib {
            write!(out, ", most seen {}", mib(Some(max)))?;
        }
        match (memory.alive_at_end, memory.killed_at_rss_kib) {
            (_, Some(kib)) => write!(out, "; KILLED by im-bench at {}", mib(Some(kib)))?,
            (Some(true), None) => write!(out, "; alive at the end")?,
            (Some(false), None) => write!(out, "; DEAD at the end")?,
            (None, None) => {}
        }
        writeln!(out)?;
    }
    let f = &report.failures;
    writeln!(
        out,
        "  {:<12}{} (login {}, 304 {}, other answer {}, timeout {}, session lost {}, exit {})",
        "failures",
        f.total,
        f.login,
        f.delivery_failed,
        f.unexpected_answer,
        f.timeout,
        f.session_lost,
        f.exit
    )?;
    if let Some(error) = &report.first_error {
        writeln!(out, "  {:<12}{error}", "first error")?;
    }
    Ok(())
}

fn mib(kib: Option<u64>) -> String {
    match kib {
        Some(kib) => format!("{:.1} MiB", kib as f64 / 1024.0),
        None => "?".to_owned(),
    }
}

/// The `login-flood` part of the table.
fn write_flood(out: &mut impl Write, flood: &Flood) -> io::Result<()> {
    writeln!(
        out,
        "  {:<12}{} attackers from {} ({} address(es)) at {}, right password every {}th guess",
        "flood",
        flood.attackers,
        flood.sources.first().map_or("?", String::as_str),
        flood.sources.len(),
        flood.target,
        flood.right_every
    )?;
    if let Some(why) = &flood.stopped_early {
        writeln!(out, "  {:<12}{why}", "STOPPED")?;
    }
    let a = &flood.attempts;
    writeln!(
        out,
        "  {:<12}{:.2} s, {} sent, {} answered ({:.0}/s): 101 {}, 102 {}, other {}; \
         {} closed unanswered, {} in flight at the end",
        "guesses",
        flood.seconds,
        a.sent,
        a.answered,
        a.answered_per_second,
        a.answered_101,
        a.answered_102,
        a.answered_other,
        a.unanswered_closed,
        a.in_flight_at_end
    )?;
    let share = a
        .right_let_in_share
        .map_or("?".to_owned(), |share| format!("{:.1}%", share * 100.0));
    writeln!(
        out,
        "  {:<12}{} sent, {} answered, {} let in ({share}); wrong let in {}",
        "right pw", a.right_sent, a.right_answered, a.right_let_in, a.wrong_let_in
    )?;
    let checks = a
        .checks_per_minute
        .map_or("? (no right password answered)".to_owned(), |per| {
            format!("{per:.0}/min ({:.0}/s)", per / 60.0)
        });
    writeln!(out, "  {:<12}{checks} against {}", "checks", flood.target)?;
    write_latency(out, "answer µs", &a.latency_us)?;
    let c = &flood.connections;
    writeln!(
        out,
        "  {:<12}{} opened ({:.1} answers each), {} connects failed, {} closed by the server \
         ({} reset, {} before any answer), {} closed after 101",
        "connections",
        c.opened,
        c.answers_per_connection,
        c.connect_failed,
        c.closed_by_server,
        c.resets,
        c.closed_unanswered,
        c.closed_after_101
    )?;
    for real in &flood.real_users {
        writeln!(
            out,
            "  {:<12}{}: {} logins, 101 {} ({} within {} ms), 102 {}, other {}, \
             not answered {} (connect failed {}), {} in flight at the end",
            "real user",
            real.user,
            real.logins,
            real.answered_101,
            real.answered_101_within,
            real.within_ms,
            real.answered_102,
            real.answered_other,
            real.not_answered,
            real.connect_failed,
            real.in_flight_at_end
        )?;
        write_latency(out, "  login µs", &real.latency_us)?;
    }
    Ok(())
}

fn write_latency(out: &mut impl Write, label: &str, latency: &Latency) -> io::Result<()> {
    writeln!(
        out,
        "  {:<12}p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {:.0}, n {})",
        label,
        latency.p50,
        latency.p90,
        latency.p99,
        latency.p999,
        latency.max,
        latency.mean,
        latency.count
    )
}
