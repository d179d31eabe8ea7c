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
    /// `to`, `toall` or `sessions`.
    pub scenario: &'static str,
    /// The server's address.
    pub server: String,
    /// Opening the sessions the scenario uses.
    pub setup: Setup,
    /// The request load (`to`, `toall`); absent for `sessions`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load: Option<Load>,
    /// The server's memory, with `--server-pid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_memory: Option<Memory>,
    /// What went wrong, by kind.
    pub failures: Failures,
    /// The first failure's message, to start looking from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
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
    /// `VmHWM`: the most the server has been resident, KiB.
    pub peak_rss_kib: Option<u64>,
    /// `(rss - rss_before) / sessions opened`, bytes.
    pub rss_per_session_bytes: Option<f64>,
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
    let setup = &report.setup;
    writeln!(
        out,
        "  {:<12}{} of {} sessions in {:.2} s ({:.0}/s)",
        "setup", setup.opened, setup.requested, setup.seconds, setup.per_second
    )?;
    write_latency(out, "setup µs", &setup.latency_us)?;
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
        let mib = |kib: Option<u64>| match kib {
            Some(kib) => format!("{:.1} MiB", kib as f64 / 1024.0),
            None => "?".to_owned(),
        };
        writeln!(
            out,
            "  {:<12}pid {}: RSS {} (before {}, peak {}), {} bytes/session",
            "server",
            memory.pid,
            mib(memory.rss_kib),
            mib(memory.rss_before_kib),
            mib(memory.peak_rss_kib),
            memory
                .rss_per_session_bytes
                .map_or("?".to_owned(), |bytes| format!("{bytes:.0}")),
        )?;
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
