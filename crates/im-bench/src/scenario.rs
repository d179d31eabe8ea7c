//! The scenarios: `to` (pairs in closed loop), `toall` (one sender, many recipients) and
//! `sessions` (many idle sessions), each built from [`SimUser`]s on one local executor.
//!
//! One thread runs every simulated user: the machine has few cores and the server needs them,
//! and a single thread lets the users share counters through `Rc<RefCell<…>>` without locks.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use simple_im::driver::ServerAddrs;
use simple_im::runtime::smol::Smol;
use simple_im_core::client::Reply;
use simple_im_core::tls::ClientTls;
use smol::{LocalExecutor, Task, Timer};

use crate::accounts::Account;
use crate::report::{
    cpu_time, latency_histogram, proc_status_kib, record, Cpu, Failures, Latency, Load, Memory,
    Report, Setup,
};
use crate::syscalls::{servers_read_write_calls, Perf, PerfCounts, Syscalls};
use simple_im::driver::client::LbPorts;

use crate::user::{FailureKind, SimUser, UserError};

/// Where the server is and how to reach it; shared by every scenario.
pub struct Target {
    /// The runtime the users' client driver runs on (sockets and timers).
    pub runtime: Smol,
    /// The server's La address; one per node of a cluster, users spread over them in turn.
    pub servers: Vec<SocketAddr>,
    /// TLS on both connections (`--tls`), or plain TCP.
    pub tls: Option<ClientTls>,
    /// The accounts the scenario uses, in order.
    pub accounts: Vec<Account>,
    /// The longest any one wait may take (a login, an answer, an `/exit`).
    pub timeout: Duration,
    /// Sessions opened at the same time during setup.
    pub concurrency: usize,
    /// The server's process ids (every node, and Redis, for a cluster): their processor time
    /// is added up; the first one's memory is reported.
    pub server_pids: Vec<u32>,
    /// Count every system call of the servers with `perf stat` over the measured time.
    pub perf_syscalls: bool,
    /// Where the users listen for Lb.
    pub lb_ports: Rc<LbPorts>,
}

impl Target {
    /// The address for the `index`th account of a scenario whose senders are its first
    /// `senders` accounts: in turn, shifted by one for each block of `senders`, so that a
    /// sender's receiver (`senders` places on) is on another node whenever there are two.
    fn server_for(&self, index: usize, senders: usize) -> SocketAddr {
        let shift = index / senders.max(1);
        self.servers[(index + shift) % self.servers.len()]
    }

    /// The first server process, whose memory is reported.
    fn server_pid(&self) -> Option<u32> {
        self.server_pids.first().copied()
    }
}

/// Processor time used so far by all of `pids`, if each can be read.
fn servers_cpu(pids: &[u32]) -> Option<Duration> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&pid| cpu_time(Some(pid))).sum()
}

/// When a request load stops, and how it warms up.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// The measured time, after warm-up.
    pub duration: Duration,
    /// The most requests measured (after warm-up), across all senders.
    pub count: Option<u64>,
    /// Requests answered during this first stretch are not measured.
    pub warmup: Duration,
}

/// Failures with the first one's message, shared by the tasks of a run.
#[derive(Default)]
struct FailureLog {
    counts: Failures,
    first: Option<String>,
}

impl FailureLog {
    fn add(&mut self, kind: FailureKind, message: impl FnOnce() -> String) {
        self.counts.add(kind);
        if self.first.is_none() {
            self.first = Some(message());
        }
    }
}

type Shared<T> = Rc<RefCell<T>>;

/// Prints `line()` on standard error once a second until the returned task is dropped.
fn progress(executor: &LocalExecutor<'static>, line: impl Fn() -> String + 'static) -> Task<()> {
    executor.spawn(async move {
        let start = Instant::now();
        loop {
            Timer::after(Duration::from_secs(1)).await;
            eprintln!("[{:>4.0}s] {}", start.elapsed().as_secs_f64(), line());
        }
    })
}

/// The sessions a setup opened, in account order (`None`: that one failed).
struct Opened {
    users: Vec<Option<SimUser>>,
    setup: Setup,
}

/// Logs in every account with `target.concurrency` logins at a time, until `stop_at`.
async fn open_sessions(
    executor: &LocalExecutor<'static>,
    target: &Target,
    accounts: &[Account],
    senders: usize,
    stop_at: Option<Instant>,
    failures: &Shared<FailureLog>,
) -> Opened {
    let accounts: Rc<Vec<Account>> = Rc::new(accounts.to_vec());
    let slots: Shared<Vec<Option<SimUser>>> =
        Rc::new(RefCell::new((0..accounts.len()).map(|_| None).collect()));
    let next = Rc::new(Cell::new(0usize));
    let opened = Rc::new(Cell::new(0usize));
    let histogram = Rc::new(RefCell::new(latency_histogram()));
    let start = Instant::now();
    let _progress = {
        let (opened, total) = (opened.clone(), accounts.len());
        progress(executor, move || {
            format!("setup: {} of {total} sessions open", opened.get())
        })
    };
    // Where each account connects, worked out once for all the workers.
    let servers: Rc<Vec<SocketAddr>> = Rc::new(
        (0..accounts.len())
            .map(|index| target.server_for(index, senders))
            .collect(),
    );
    let workers: Vec<Task<()>> = (0..target.concurrency.clamp(1, accounts.len().max(1)))
        .map(|_| {
            let (accounts, slots, next, opened) = (
                accounts.clone(),
                slots.clone(),
                next.clone(),
                opened.clone(),
            );
            let (histogram, failures) = (histogram.clone(), failures.clone());
            let (runtime, timeout) = (target.runtime.clone(), target.timeout);
            let servers = servers.clone();
            let lb_ports = target.lb_ports.clone();
            let tls = target.tls.clone();
            executor.spawn(async move {
                loop {
                    let index = next.get();
                    let begun = Instant::now();
                    if index >= accounts.len() || stop_at.is_some_and(|stop| begun >= stop) {
                        return;
                    }
                    next.set(index + 1);
                    let account = &accounts[index];
                    let mut server = ServerAddrs::from_addr(servers[index]);
                    if let Some(tls) = &tls {
                        server = server.with_tls(tls.clone());
                    }
                    let login = SimUser::login(
                        runtime.clone(),
                        server,
                        &account.user,
                        &account.password,
                        lb_ports.clone(),
                        begun + timeout,
                    );
                    match login.await {
                        Ok(user) => {
                            record(&mut histogram.borrow_mut(), begun.elapsed());
                            slots.borrow_mut()[index] = Some(user);
                            opened.set(opened.get() + 1);
                        }
                        Err(err) => failures
                            .borrow_mut()
                            .add(FailureKind::Login, || format!("{}: {err}", account.name())),
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await;
    }
    let seconds = start.elapsed().as_secs_f64();
    let users = std::mem::take(&mut *slots.borrow_mut());
    let opened = opened.get();
    let setup = Setup {
        requested: accounts.len(),
        opened,
        seconds,
        per_second: per_second(opened as u64, seconds),
        latency_us: Latency::of(&histogram.borrow()),
    };
    Opened { users, setup }
}

/// Sends `/exit` on every session at once and waits for each `310`.
async fn close_sessions(
    executor: &LocalExecutor<'static>,
    users: Vec<SimUser>,
    timeout: Duration,
    failures: &Shared<FailureLog>,
) {
    let deadline = Instant::now() + timeout;
    let exits: Vec<Task<Result<(), UserError>>> = users
        .into_iter()
        .map(|user| executor.spawn(user.exit(deadline)))
        .collect();
    for exit in exits {
        if let Err(err) = exit.await {
            failures
                .borrow_mut()
                .add(FailureKind::Exit, || format!("at /exit: {err}"));
        }
    }
}

fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// What the senders of a load share.
struct LoadState {
    warmup_end: Instant,
    stop_at: Instant,
    count: Option<u64>,
    timeout: Duration,
    histogram: Histogram<u64>,
    warmup_requests: u64,
    /// Requests sent after warm-up.
    requests: u64,
    /// Of those, answered `303`.
    delivered: u64,
}

/// One sender in closed loop: sends `line`, waits for its answer, again, until the bounds.
/// Returns the user if its session is still usable.
async fn closed_loop(
    mut user: SimUser,
    line: Vec<u8>,
    state: Shared<LoadState>,
    failures: Shared<FailureLog>,
) -> Option<SimUser> {
    loop {
        let now = Instant::now();
        let measured = {
            let mut state = state.borrow_mut();
            if now >= state.stop_at {
                return Some(user);
            }
            let measured = now >= state.warmup_end;
            if measured {
                if state.count.is_some_and(|count| state.requests >= count) {
                    return Some(user);
                }
                state.requests += 1;
            }
            measured
        };
        let deadline = now + state.borrow().timeout;
        let answer = user.request(&line, deadline).await;
        let elapsed = now.elapsed();
        let mut state = state.borrow_mut();
        match answer {
            Ok(Reply::Delivered) if measured => {
                state.delivered += 1;
                record(&mut state.histogram, elapsed);
            }
            Ok(Reply::Delivered) => state.warmup_requests += 1,
            Ok(Reply::DeliveryFailed) => {
                failures.borrow_mut().add(FailureKind::DeliveryFailed, || {
                    "a request was answered 304".into()
                })
            }
            Ok(other) => failures
                .borrow_mut()
                .add(FailureKind::UnexpectedAnswer, || {
                    let line = other.to_line_bytes();
                    format!(
                        "unexpected answer: {}",
                        String::from_utf8_lossy(line.trim_ascii_end())
                    )
                }),
            Err(err) => {
                failures
                    .borrow_mut()
                    .add(err.kind(), || format!("a sender: {err}"));
                return None;
            }
        }
    }
}

/// Recipients answering deliveries until the load is over.
struct Recipients {
    tasks: Vec<Task<(SimUser, Result<(), UserError>)>>,
    stop: async_channel::Sender<()>,
}

impl Recipients {
    fn spawn(executor: &LocalExecutor<'static>, users: Vec<SimUser>, timeout: Duration) -> Self {
        // Nothing is ever sent: dropping the sender closes the channel, which stops them all.
        let (stop, stopped) = async_channel::bounded::<()>(1);
        let tasks = users
            .into_iter()
            .map(|mut user| {
                let stopped = stopped.clone();
                executor.spawn(async move {
                    let stop = std::pin::pin!(async move {
                        let _ = stopped.recv().await;
                    });
                    let served = user.serve_deliveries(stop, timeout).await;
                    (user, served)
                })
            })
            .collect();
        Recipients { tasks, stop }
    }

    /// Stops them; returns the users still usable and the deliveries all of them received.
    async fn stop(self, failures: &Shared<FailureLog>) -> (Vec<SimUser>, u64) {
        drop(self.stop);
        let mut users = Vec::new();
        let mut received = 0;
        for task in self.tasks {
            let (user, served) = task.await;
            received += user.received();
            match served {
                Ok(()) => users.push(user),
                Err(err) => failures
                    .borrow_mut()
                    .add(err.kind(), || format!("a recipient: {err}")),
            }
        }
        (users, received)
    }
}

/// Runs `senders` (each with its request line) in closed loop against `recipients`.
async fn run_load(
    executor: &LocalExecutor<'static>,
    target: &Target,
    bounds: Bounds,
    senders: Vec<(SimUser, Vec<u8>)>,
    recipients: Vec<SimUser>,
    fanout: usize,
    failures: &Shared<FailureLog>,
) -> (Load, Vec<SimUser>) {
    let sender_count = senders.len();
    let recipients = Recipients::spawn(executor, recipients, target.timeout);
    let warmup_end = Instant::now() + bounds.warmup;
    let state = Rc::new(RefCell::new(LoadState {
        warmup_end,
        stop_at: warmup_end + bounds.duration,
        count: bounds.count,
        timeout: target.timeout,
        histogram: latency_histogram(),
        warmup_requests: 0,
        requests: 0,
        delivered: 0,
    }));
    let progress_task = {
        let (state, failures) = (state.clone(), failures.clone());
        let last = Cell::new((Instant::now(), 0u64));
        progress(executor, move || {
            let state = state.borrow();
            let done = state.delivered + state.warmup_requests;
            let (then, before) = last.replace((Instant::now(), done));
            let rate = per_second(done - before, then.elapsed().as_secs_f64());
            let phase = if Instant::now() < state.warmup_end {
                "warm-up"
            } else {
                "measuring"
            };
            format!(
                "{phase}: {} answered 303, {rate:.0} requests/s, {} failures",
                state.delivered,
                failures.borrow().counts.total
            )
        })
    };
    // Processor time and system calls are sampled when warm-up ends and when the last sender
    // stops; perf attaches during the warm-up and counts from its end (this thread waits for
    // it, so no request is made meanwhile).
    let cpu_at_warmup_end = {
        let server_pids = target.server_pids.clone();
        let perf = target.perf_syscalls && !server_pids.is_empty();
        executor.spawn(async move {
            let perf = perf.then(|| Perf::start(&server_pids));
            Timer::at(warmup_end).await;
            let perf =
                perf.map(|started| started.and_then(|mut perf| perf.enable().map(|()| perf)));
            (sample(&server_pids), perf)
        })
    };
    let tasks: Vec<Task<Option<SimUser>>> = senders
        .into_iter()
        .map(|(user, line)| {
            executor.spawn(closed_loop(user, line, state.clone(), failures.clone()))
        })
        .collect();
    let mut users = Vec::new();
    for task in tasks {
        users.extend(task.await);
    }
    let end = Instant::now();
    let cpu_at_end = sample(&target.server_pids);
    // Already done unless the run ended during warm-up, when nothing was measured anyway.
    let (cpu_at_warmup_end, perf) = cpu_at_warmup_end.await;
    let perf = perf.map(|started| started.and_then(Perf::stop));
    drop(progress_task);
    let (still_open, received) = recipients.stop(failures).await;
    users.extend(still_open);

    let state = state.borrow();
    let seconds = end.saturating_duration_since(warmup_end).as_secs_f64();
    let deliveries = state.delivered * fanout as u64;
    let load = Load {
        senders: sender_count,
        fanout,
        warmup_requests: state.warmup_requests,
        requests: state.requests,
        delivered: state.delivered,
        deliveries,
        seconds,
        requests_per_second: per_second(state.delivered, seconds),
        deliveries_per_second: per_second(deliveries, seconds),
        received,
        latency_us: Latency::of(&state.histogram),
        cpu: cpu_used(cpu_at_warmup_end, cpu_at_end, deliveries),
        syscalls: syscalls_made(cpu_at_warmup_end.2, cpu_at_end.2, perf, deliveries),
    };
    (load, users)
}

/// im-bench's processor time, the servers' and their read/write calls, at one moment.
type CpuSample = (Option<Duration>, Option<Duration>, Option<u64>);

fn sample(server_pids: &[u32]) -> CpuSample {
    (
        cpu_time(None),
        servers_cpu(server_pids),
        servers_read_write_calls(server_pids),
    )
}

/// The servers' system calls between two samples, with perf's counts if it ran.
fn syscalls_made(
    start: Option<u64>,
    end: Option<u64>,
    perf: Option<Result<PerfCounts, String>>,
    deliveries: u64,
) -> Option<Syscalls> {
    let per_delivery = |calls: u64| {
        if deliveries > 0 {
            calls as f64 / deliveries as f64
        } else {
            0.0
        }
    };
    let read_write_calls = end?.saturating_sub(start?);
    let (all_calls, by_name) = match perf {
        Some(Ok((total, named))) => (Some(total), named),
        Some(Err(why)) => {
            eprintln!("im-bench: no perf counts: {why}");
            (None, Default::default())
        }
        None => (None, Default::default()),
    };
    Some(Syscalls {
        read_write_calls,
        read_write_per_delivery: per_delivery(read_write_calls),
        all_calls,
        all_per_delivery: all_calls.map(per_delivery),
        by_name_per_delivery: by_name
            .into_iter()
            .map(|(name, calls)| (name, per_delivery(calls)))
            .collect(),
    })
}

/// The processor time of im-bench and the server between two samples.
fn cpu_used(start: CpuSample, end: CpuSample, deliveries: u64) -> Cpu {
    let used = |start: Option<Duration>, end: Option<Duration>| {
        Some(end?.saturating_sub(start?).as_secs_f64())
    };
    let per_delivery = |seconds: f64| {
        if deliveries > 0 {
            seconds * 1e6 / deliveries as f64
        } else {
            0.0
        }
    };
    let bench_seconds = used(start.0, end.0).unwrap_or(0.0);
    let server_seconds = used(start.1, end.1);
    Cpu {
        bench_seconds,
        bench_us_per_delivery: per_delivery(bench_seconds),
        server_seconds,
        server_us_per_delivery: server_seconds.map(per_delivery),
    }
}

/// The content every request carries: `size` printable bytes.
fn payload(size: usize) -> Vec<u8> {
    (0..size.max(1)).map(|i| b'a' + (i % 26) as u8).collect()
}

fn request_line(prefix: &[u8], payload: &[u8]) -> Vec<u8> {
    [prefix, payload].concat()
}

fn report(
    scenario: &'static str,
    target: &Target,
    setup: Setup,
    load: Option<Load>,
    server_memory: Option<Memory>,
    failures: &Shared<FailureLog>,
) -> Report {
    let failures = failures.borrow();
    Report {
        scenario,
        server: target
            .servers
            .iter()
            .map(SocketAddr::to_string)
            .collect::<Vec<_>>()
            .join(" "),
        setup: Some(setup),
        load,
        flood: None,
        server_memory,
        failures: failures.counts.clone(),
        first_error: failures.first.clone(),
    }
}

/// `to`: `pairs` senders each send `/to <its receiver> <payload>` in closed loop.
/// Sender `i` is account `i`, its receiver account `pairs + i`.
pub async fn run_to(
    executor: &LocalExecutor<'static>,
    target: &Target,
    bounds: Bounds,
    pairs: usize,
    payload_size: usize,
) -> Report {
    let failures = Rc::new(RefCell::new(FailureLog::default()));
    let accounts = &target.accounts[..2 * pairs];
    let opened = open_sessions(executor, target, accounts, pairs, None, &failures).await;
    let content = payload(payload_size);
    let mut users = opened.users;
    let receivers_side = users.split_off(pairs);
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    let mut unpaired = Vec::new();
    for ((sender, receiver), account) in users
        .into_iter()
        .zip(receivers_side)
        .zip(&accounts[pairs..])
    {
        match (sender, receiver) {
            (Some(sender), Some(receiver)) => {
                let prefix = [b"/to ", account.user.as_slice(), b" "].concat();
                senders.push((sender, request_line(&prefix, &content)));
                receivers.push(receiver);
            }
            (sender, receiver) => unpaired.extend(sender.into_iter().chain(receiver)),
        }
    }
    let (load, mut users) =
        run_load(executor, target, bounds, senders, receivers, 1, &failures).await;
    users.extend(unpaired);
    let memory = target
        .server_pid()
        .map(|pid| memory(pid, None, users.len()));
    close_sessions(executor, users, target.timeout, &failures).await;
    report("to", target, opened.setup, Some(load), memory, &failures)
}

/// `toall`: the first account sends `/toall <payload>` in closed loop to the next `recipients`.
pub async fn run_toall(
    executor: &LocalExecutor<'static>,
    target: &Target,
    bounds: Bounds,
    recipients: usize,
    payload_size: usize,
) -> Report {
    let failures = Rc::new(RefCell::new(FailureLog::default()));
    let accounts = &target.accounts[..recipients + 1];
    let opened = open_sessions(executor, target, accounts, usize::MAX, None, &failures).await;
    let mut users = opened.users.into_iter();
    let sender = users.next().flatten();
    let recipients: Vec<SimUser> = users.flatten().collect();
    let fanout = recipients.len();
    let senders: Vec<(SimUser, Vec<u8>)> = sender
        .into_iter()
        .map(|user| (user, request_line(b"/toall ", &payload(payload_size))))
        .collect();
    let (load, users) = run_load(
        executor, target, bounds, senders, recipients, fanout, &failures,
    )
    .await;
    let memory = target
        .server_pid()
        .map(|pid| memory(pid, None, users.len()));
    close_sessions(executor, users, target.timeout, &failures).await;
    report("toall", target, opened.setup, Some(load), memory, &failures)
}

/// `sessions`: opens `count` full sessions (login and Lb), measures the server's memory with
/// all of them open (after `hold`), then closes them.
pub async fn run_sessions(
    executor: &LocalExecutor<'static>,
    target: &Target,
    count: usize,
    duration: Duration,
    hold: Duration,
) -> Report {
    let failures = Rc::new(RefCell::new(FailureLog::default()));
    let rss_before = target
        .server_pid()
        .and_then(|pid| proc_status_kib(pid, "VmRSS"));
    let accounts = &target.accounts[..count];
    let stop_at = Instant::now() + duration;
    let opened = open_sessions(
        executor,
        target,
        accounts,
        usize::MAX,
        Some(stop_at),
        &failures,
    )
    .await;
    let users: Vec<SimUser> = opened.users.into_iter().flatten().collect();
    if !hold.is_zero() {
        Timer::after(hold).await;
    }
    let memory = target
        .server_pid()
        .map(|pid| memory(pid, rss_before, users.len()));
    close_sessions(executor, users, target.timeout, &failures).await;
    report("sessions", target, opened.setup, None, memory, &failures)
}

/// The server's memory now, compared with `rss_before_kib` over `sessions`.
fn memory(pid: u32, rss_before_kib: Option<u64>, sessions: usize) -> Memory {
    let rss_kib = proc_status_kib(pid, "VmRSS");
    let rss_per_session_bytes = match (rss_before_kib, rss_kib) {
        (Some(before), Some(now)) if sessions > 0 => {
            Some((now as f64 - before as f64) * 1024.0 / sessions as f64)
        }
        _ => None,
    };
    Memory {
        pid,
        rss_before_kib,
        rss_kib,
        peak_rss_kib: proc_status_kib(pid, "VmHWM"),
        rss_per_session_bytes,
        sampled_max_rss_kib: None,
        alive_at_end: None,
        killed_at_rss_kib: None,
    }
}
