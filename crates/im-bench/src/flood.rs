//! `login-flood`: password guessing against one account, and real users logging in meanwhile.
//!
//! The guessers speak raw TCP, not the client session: they only ever send `/login` and read
//! one answer line, and each must connect from a chosen loopback address (bound before the
//! connect), which the client driver does not do. Every guesser and real user is a task on
//! one local executor; the server's memory is sampled on a thread of its own, so that a busy
//! executor cannot delay the check that kills a server growing past `--kill-server-above`.

use std::cell::{Cell, RefCell};
use std::io::{self, ErrorKind};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use hdrhistogram::Histogram;
use smol::{Async, LocalExecutor, Task, Timer};
use socket2::{Domain, Protocol, Socket, Type};

use crate::report::{
    latency_histogram, proc_status_kib, record, Attempts, Connections, Failures, Flood, Latency,
    Memory, RealLogins, Report,
};
use crate::user::with_deadline;

/// What a `login-flood` run does.
pub struct FloodConfig {
    /// The server's La address.
    pub server: SocketAddr,
    /// The account guessed at.
    pub target: Vec<u8>,
    /// Its right password.
    pub password: Vec<u8>,
    /// Guessing connections.
    pub attackers: usize,
    /// The addresses they connect from, in turn.
    pub sources: Vec<Ipv4Addr>,
    /// Every this-many-th guess overall is the right password.
    pub right_every: u64,
    /// The real users (name, password), each logging in once a second.
    pub real: Vec<(Vec<u8>, Vec<u8>)>,
    /// How long the flood lasts.
    pub duration: Duration,
    /// When the guessing starts: the real users have logged in once by then, from home, as
    /// they had before anyone guessed.
    pub attack_after: Duration,
    /// The longest a connect, or a real user's answer, is waited for.
    pub timeout: Duration,
    /// A real login answered `101` within this is counted as served.
    pub within: Duration,
    /// The server's process, for its memory.
    pub server_pid: Option<u32>,
    /// Kill the server (SIGKILL) when its `VmRSS` passes this many KiB.
    pub kill_above_kib: Option<u64>,
}

/// The real users' address: they come from the ordinary loopback address, the guessers from
/// others, as a server that limits per address would see them.
const REAL_SOURCE: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// How long a guesser waits after a failed connect before the next: at once would spin when
/// the server is gone.
const CONNECT_RETRY: Duration = Duration::from_millis(50);

/// How often the server's `VmRSS` is sampled.
const RSS_SAMPLE: Duration = Duration::from_millis(100);

/// The longest answer line read; anything longer is no answer of docs/protocol.md.
const MAX_ANSWER: usize = 1024;

/// What every task of the run shares.
struct Run {
    config: FloodConfig,
    started: Instant,
    stop_at: Instant,
    /// Guesses drawn so far: the next one's number.
    guesses: Cell<u64>,
    attempts: RefCell<Attempts>,
    histogram: RefCell<Histogram<u64>>,
    connections: RefCell<Connections>,
    real: Vec<RefCell<RealTally>>,
    /// The first unexpected error (a failed connect, a read error), to start looking from.
    first_error: RefCell<Option<String>>,
    /// Set by the memory sampler when it killed the server.
    killed_at_kib: Arc<AtomicU64>,
}

impl Run {
    /// Whether the run is over: its time is up, or the server was killed.
    fn stopping(&self) -> bool {
        Instant::now() >= self.stop_at || self.killed_at_kib.load(Ordering::Relaxed) != 0
    }

    /// The next guess: a distinct wrong password, or every `right_every`-th the right one.
    fn next_guess(&self) -> Guess {
        let number = self.guesses.get();
        self.guesses.set(number + 1);
        let config = &self.config;
        let right = number % config.right_every == config.right_every - 1;
        let password = if right {
            config.password.clone()
        } else {
            let mut wrong = format!("wrong-{number}").into_bytes();
            if wrong == config.password {
                wrong.push(b'!');
            }
            wrong
        };
        let line = [b"/login ", &config.target[..], b" ", &password, b"\n"].concat();
        Guess { line, right }
    }

    fn note_error(&self, message: impl FnOnce() -> String) {
        let mut first = self.first_error.borrow_mut();
        if first.is_none() {
            *first = Some(message());
        }
    }
}

/// One `/login` line to send, and whether it carries the right password.
struct Guess {
    line: Vec<u8>,
    right: bool,
}

/// One real user's counts as they are made.
struct RealTally {
    user: Vec<u8>,
    password: Vec<u8>,
    counts: RealLogins,
    histogram: Histogram<u64>,
}

/// Runs the flood and reports it.
pub async fn run(executor: &LocalExecutor<'static>, config: FloodConfig) -> Report {
    let rss_before_kib = config
        .server_pid
        .and_then(|pid| proc_status_kib(pid, "VmRSS"));
    let sampler = config
        .server_pid
        .map(|pid| Sampler::start(pid, config.kill_above_kib));
    let killed_at_kib = sampler
        .as_ref()
        .map_or_else(|| Arc::new(AtomicU64::new(0)), |s| s.killed_at_kib.clone());
    let started = Instant::now();
    let real = config
        .real
        .iter()
        .map(|(user, password)| {
            RefCell::new(RealTally {
                user: user.clone(),
                password: password.clone(),
                counts: RealLogins {
                    user: String::from_utf8_lossy(user).into_owned(),
                    within_ms: u64::try_from(config.within.as_millis()).unwrap_or(u64::MAX),
                    ..RealLogins::default()
                },
                histogram: latency_histogram(),
            })
        })
        .collect();
    let run = Rc::new(Run {
        stop_at: started + config.duration,
        config,
        started,
        guesses: Cell::new(0),
        attempts: RefCell::default(),
        histogram: RefCell::new(latency_histogram()),
        connections: RefCell::default(),
        real,
        first_error: RefCell::default(),
        killed_at_kib,
    });
    let progress = progress(
        executor,
        run.clone(),
        sampler.as_ref().map(|s| s.max.clone()),
    );
    let mut tasks: Vec<Task<()>> = (0..run.config.attackers)
        .map(|index| executor.spawn(attacker(run.clone(), index)))
        .collect();
    tasks.extend((0..run.real.len()).map(|index| executor.spawn(real_user(run.clone(), index))));
    for task in tasks {
        task.await;
    }
    let seconds = started.elapsed().as_secs_f64();
    drop(progress);
    let memory = sampler.map(|sampler| sampler.finish(rss_before_kib));
    report(&run, seconds, memory)
}

/// One guesser: connects from its source address and sends guesses in closed loop until the
/// run is over, connecting again whenever the connection ends.
async fn attacker(run: Rc<Run>, index: usize) {
    let source = run.config.sources[index % run.config.sources.len()];
    // A guess sent on a connection that ended before answering it is sent again on the next,
    // so that every right password drawn is eventually answered.
    let mut pending: Option<Guess> = None;
    Timer::at((run.started + run.config.attack_after).min(run.stop_at)).await;
    while !run.stopping() {
        let deadline = (Instant::now() + run.config.timeout).min(run.stop_at);
        let stream = match with_deadline(connect_from(source, run.config.server), deadline).await {
            Some(Ok(stream)) => stream,
            // Cut by the end of the run, not failed.
            None if run.stopping() => return,
            failed => {
                run.connections.borrow_mut().connect_failed += 1;
                if let Some(Err(err)) = failed {
                    run.note_error(|| format!("a guesser's connect from {source}: {err}"));
                }
                if !run.stopping() {
                    Timer::after(CONNECT_RETRY).await;
                }
                continue;
            }
        };
        run.connections.borrow_mut().opened += 1;
        let mut reader = LineReader::default();
        let mut answers = 0u64;
        loop {
            if run.stopping() {
                return;
            }
            let guess = pending.take().unwrap_or_else(|| run.next_guess());
            let sent_at = Instant::now();
            if let Err(err) = (&stream).write_all(&guess.line).await {
                run.connections
                    .borrow_mut()
                    .server_closed(answers, Some(err.kind()));
                pending = Some(guess);
                break;
            }
            {
                let mut attempts = run.attempts.borrow_mut();
                attempts.sent += 1;
                attempts.right_sent += u64::from(guess.right);
            }
            // No time limit but the run's: a guesser that gave up and connected again would
            // leave its guess to be checked anyway, and load the server beyond N in flight.
            let answer = reader.next_line(&stream, run.stop_at).await;
            let mut attempts = run.attempts.borrow_mut();
            let code = match answer {
                Answer::Line(code) => code,
                Answer::Deadline => {
                    attempts.in_flight_at_end += 1;
                    return;
                }
                Answer::Ended(error) => {
                    attempts.unanswered_closed += 1;
                    run.connections.borrow_mut().server_closed(answers, error);
                    pending = Some(guess);
                    break;
                }
            };
            answers += 1;
            attempts.answered += 1;
            attempts.right_answered += u64::from(guess.right);
            record(&mut run.histogram.borrow_mut(), sent_at.elapsed());
            match code {
                Code::LetIn => {
                    attempts.answered_101 += 1;
                    if guess.right {
                        attempts.right_let_in += 1;
                    } else {
                        attempts.wrong_let_in += 1;
                    }
                    // Logged in: closing the connection logs the target out again.
                    run.connections.borrow_mut().closed_after_101 += 1;
                    break;
                }
                Code::Refused => attempts.answered_102 += 1,
                Code::Other => attempts.answered_other += 1,
            }
            // The server may close right after an answer (after `--max-login-failures`):
            // looking now saves sending a guess into a connection already closed.
            if reader.is_empty() {
                if let Some(error) = ended(&stream) {
                    run.connections.borrow_mut().server_closed(answers, error);
                    break;
                }
            }
        }
    }
}

impl Connections {
    /// Counts a connection the server ended after `answers` answers on it; `Some(kind)` if by
    /// an error rather than an end of file.
    fn server_closed(&mut self, answers: u64, error: Option<ErrorKind>) {
        self.closed_by_server += 1;
        self.closed_unanswered += u64::from(answers == 0);
        if error.is_some() {
            self.resets += 1;
        }
    }
}

/// Whether the server has already ended `stream`, without waiting: `Some(None)` for an end of
/// file, `Some(Some(kind))` for an error, `None` if it is open.
fn ended(stream: &Async<TcpStream>) -> Option<Option<ErrorKind>> {
    match stream.get_ref().peek(&mut [0; 1]) {
        Ok(0) => Some(None),
        Ok(_) => None,
        Err(err) if err.kind() == ErrorKind::WouldBlock => None,
        Err(err) if err.kind() == ErrorKind::Interrupted => None,
        Err(err) => Some(Some(err.kind())),
    }
}

/// One real user: from the start of the run, a login once a second, each on a new
/// connection from 127.0.0.1. A login waits for the one before, as a person would; one that
/// takes longer than a second delays the next to the following whole second.
async fn real_user(run: Rc<Run>, index: usize) {
    let tally = &run.real[index];
    let mut next = run.started;
    loop {
        Timer::at(next.min(run.stop_at)).await;
        if run.stopping() {
            return;
        }
        let begun = Instant::now();
        let line = {
            let tally = tally.borrow();
            [b"/login ", &tally.user[..], b" ", &tally.password, b"\n"].concat()
        };
        tally.borrow_mut().counts.logins += 1;
        let outcome = login_once(&run, &line, begun).await;
        let elapsed = begun.elapsed();
        let mut guard = tally.borrow_mut();
        let RealTally {
            counts, histogram, ..
        } = &mut *guard;
        match outcome {
            RealOutcome::Answer(code) => {
                record(histogram, elapsed);
                match code {
                    Code::LetIn => {
                        counts.answered_101 += 1;
                        counts.answered_101_within += u64::from(elapsed <= run.config.within);
                    }
                    Code::Refused => counts.answered_102 += 1,
                    Code::Other => counts.answered_other += 1,
                }
            }
            RealOutcome::NotAnswered => counts.not_answered += 1,
            RealOutcome::ConnectFailed => {
                counts.not_answered += 1;
                counts.connect_failed += 1;
            }
            RealOutcome::Cut => {
                counts.in_flight_at_end += 1;
                return;
            }
        }
        let now = Instant::now();
        while next <= now {
            next += Duration::from_secs(1);
        }
    }
}

/// How one real login went.
enum RealOutcome {
    Answer(Code),
    NotAnswered,
    ConnectFailed,
    /// The run ended while it waited.
    Cut,
}

async fn login_once(run: &Run, line: &[u8], begun: Instant) -> RealOutcome {
    let deadline = (begun + run.config.timeout).min(run.stop_at);
    let cut_or = |outcome| {
        if Instant::now() >= run.stop_at {
            RealOutcome::Cut
        } else {
            outcome
        }
    };
    let stream = match with_deadline(connect_from(REAL_SOURCE, run.config.server), deadline).await {
        Some(Ok(stream)) => stream,
        Some(Err(err)) => {
            run.note_error(|| format!("a real user's connect: {err}"));
            return RealOutcome::ConnectFailed;
        }
        None => return cut_or(RealOutcome::ConnectFailed),
    };
    if (&stream).write_all(line).await.is_err() {
        return RealOutcome::NotAnswered;
    }
    match LineReader::default().next_line(&stream, deadline).await {
        Answer::Line(code) => RealOutcome::Answer(code),
        Answer::Deadline => cut_or(RealOutcome::NotAnswered),
        Answer::Ended(_) => RealOutcome::NotAnswered,
    }
}

/// An answer's kind, by its code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Code {
    /// `101`.
    LetIn,
    /// `102`.
    Refused,
    /// Anything else.
    Other,
}

impl Code {
    fn of(line: &[u8]) -> Code {
        match line.split(|&byte| byte == b' ').next() {
            Some(b"101") => Code::LetIn,
            Some(b"102") => Code::Refused,
            _ => Code::Other,
        }
    }
}

/// What waiting for an answer line gave.
enum Answer {
    Line(Code),
    Deadline,
    /// The connection ended first: `None` by an end of file, `Some(kind)` by an error.
    Ended(Option<ErrorKind>),
}

/// The bytes read on a connection and not yet taken as a line.
#[derive(Default)]
struct LineReader {
    buffer: Vec<u8>,
}

impl LineReader {
    fn is_empty(&self) -> bool {
        self.buffer.is_empty()
    }

    /// The next line's code, reading until `deadline`. A line longer than [`MAX_ANSWER`] is
    /// taken as an answer of another kind, and the bytes after it dropped.
    async fn next_line(&mut self, stream: &Async<TcpStream>, deadline: Instant) -> Answer {
        loop {
            if let Some(end) = memchr::memchr(b'\n', &self.buffer) {
                let code = Code::of(&self.buffer[..end]);
                self.buffer.drain(..=end);
                return Answer::Line(code);
            }
            if self.buffer.len() > MAX_ANSWER {
                self.buffer.clear();
                return Answer::Line(Code::Other);
            }
            let mut chunk = [0u8; 256];
            let mut reading = stream;
            match with_deadline(reading.read(&mut chunk), deadline).await {
                None => return Answer::Deadline,
                Some(Ok(0)) => return Answer::Ended(None),
                Some(Ok(read)) => self.buffer.extend_from_slice(&chunk[..read]),
                Some(Err(err)) if err.kind() == ErrorKind::Interrupted => {}
                Some(Err(err)) => return Answer::Ended(Some(err.kind())),
            }
        }
    }
}

/// Connects to `server` from `source` (any port), without blocking the thread.
async fn connect_from(source: Ipv4Addr, server: SocketAddr) -> io::Result<Async<TcpStream>> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    // Guessers close first after every `101`, leaving TIME_WAIT ports behind on their address.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::new(IpAddr::V4(source), 0).into())?;
    match socket.connect(&server.into()) {
        Ok(()) => {}
        Err(err) if err.raw_os_error() == Some(nix::errno::Errno::EINPROGRESS as i32) => {}
        Err(err) if err.kind() == ErrorKind::WouldBlock => {}
        Err(err) => return Err(err),
    }
    let stream = Async::new(TcpStream::from(socket))?;
    // Writable once the connect is done either way; the outcome is in SO_ERROR.
    stream.writable().await?;
    if let Some(err) = stream.get_ref().take_error()? {
        return Err(err);
    }
    stream.get_ref().peer_addr()?;
    stream.get_ref().set_nodelay(true)?;
    Ok(stream)
}

/// Samples the server's `VmRSS` every [`RSS_SAMPLE`] on a thread of its own, keeps the most,
/// and kills the server if it passes the limit.
struct Sampler {
    pid: u32,
    max: Arc<AtomicU64>,
    /// The last `VmHWM` read: a process killed or dead has none to read at the end.
    hwm: Arc<AtomicU64>,
    killed_at_kib: Arc<AtomicU64>,
    /// Dropping it stops the thread.
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Sampler {
    fn start(pid: u32, kill_above_kib: Option<u64>) -> Sampler {
        let max = Arc::new(AtomicU64::new(0));
        let hwm = Arc::new(AtomicU64::new(0));
        let killed_at_kib = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let (seen, last_hwm, killed) = (max.clone(), hwm.clone(), killed_at_kib.clone());
        let thread = std::thread::Builder::new()
            .name("rss".to_owned())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(RSS_SAMPLE)
                {
                    let Some(rss) = proc_status_kib(pid, "VmRSS") else {
                        continue;
                    };
                    seen.fetch_max(rss, Ordering::Relaxed);
                    if let Some(peak) = proc_status_kib(pid, "VmHWM") {
                        last_hwm.store(peak, Ordering::Relaxed);
                    }
                    let over = kill_above_kib.is_some_and(|limit| rss > limit);
                    if over && killed.load(Ordering::Relaxed) == 0 {
                        let target = nix::unistd::Pid::from_raw(pid as i32);
                        match nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL) {
                            Ok(()) => {
                                eprintln!(
                                    "im-bench: killed the server (pid {pid}) at {} MiB RSS \
                                     (--kill-server-above)",
                                    rss / 1024
                                );
                                killed.store(rss, Ordering::Relaxed);
                            }
                            Err(err) => eprintln!("im-bench: cannot kill pid {pid}: {err}"),
                        }
                    }
                }
            });
        let thread = match thread {
            Ok(thread) => Some(thread),
            Err(err) => {
                eprintln!("im-bench: cannot start the memory sampler: {err}");
                None
            }
        };
        Sampler {
            pid,
            max,
            hwm,
            killed_at_kib,
            stop: Some(stop),
            thread,
        }
    }

    /// Stops sampling; the server's memory over the run.
    fn finish(mut self, rss_before_kib: Option<u64>) -> Memory {
        let (pid, max, killed) = (self.pid, self.max.clone(), self.killed_at_kib.clone());
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok();
        // A zombie (killed, not yet waited for by its parent) still has a status file.
        let alive = status.as_deref().is_some_and(|status| {
            status.lines().any(|line| {
                line.strip_prefix("State:").is_some_and(|state| {
                    !matches!(state.trim_start().chars().next(), Some('Z' | 'X'))
                })
            })
        });
        let rss_kib = proc_status_kib(pid, "VmRSS");
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let sampled = max.load(Ordering::Relaxed);
        let killed = killed.load(Ordering::Relaxed);
        let last_hwm = self.hwm.load(Ordering::Relaxed);
        Memory {
            pid,
            rss_before_kib,
            rss_kib,
            peak_rss_kib: proc_status_kib(pid, "VmHWM").or((last_hwm > 0).then_some(last_hwm)),
            rss_per_session_bytes: None,
            sampled_max_rss_kib: (sampled > 0).then_some(sampled),
            alive_at_end: Some(alive),
            killed_at_rss_kib: (killed > 0).then_some(killed),
        }
    }
}

/// Prints the run's state on standard error once a second until the returned task is dropped.
fn progress(
    executor: &LocalExecutor<'static>,
    run: Rc<Run>,
    rss: Option<Arc<AtomicU64>>,
) -> Task<()> {
    executor.spawn(async move {
        let mut last = 0;
        loop {
            Timer::after(Duration::from_secs(1)).await;
            let attempts = run.attempts.borrow();
            let answered = attempts.answered;
            let real: Vec<String> = run
                .real
                .iter()
                .map(|tally| {
                    let counts = &tally.borrow().counts;
                    format!(
                        "{} {}/{}",
                        counts.user, counts.answered_101_within, counts.logins
                    )
                })
                .collect();
            let rss = rss
                .as_ref()
                .map(|max| format!(", server RSS max {} MiB", max.load(Ordering::Relaxed) / 1024))
                .unwrap_or_default();
            eprintln!(
                "[{:>4.0}s] flood: {answered} answered (+{}), let in {}/{}; real 101 in time: {}{rss}",
                run.started.elapsed().as_secs_f64(),
                answered - last,
                attempts.right_let_in,
                attempts.right_answered,
                real.join(", "),
            );
            last = answered;
        }
    })
}

fn report(run: &Run, seconds: f64, server_memory: Option<Memory>) -> Report {
    let config = &run.config;
    let mut attempts = std::mem::take(&mut *run.attempts.borrow_mut());
    // Guesses are made from --attack-after on.
    let guessing = seconds - config.attack_after.as_secs_f64().min(seconds);
    attempts.answered_per_second = if guessing > 0.0 {
        attempts.answered as f64 / guessing
    } else {
        0.0
    };
    attempts.right_let_in_share = (attempts.right_answered > 0)
        .then(|| attempts.right_let_in as f64 / attempts.right_answered as f64);
    attempts.checks_per_minute = attempts
        .right_let_in_share
        .map(|share| attempts.answered_per_second * 60.0 * share);
    attempts.latency_us = Latency::of(&run.histogram.borrow());
    let mut connections = std::mem::take(&mut *run.connections.borrow_mut());
    if connections.opened > 0 {
        connections.answers_per_connection = attempts.answered as f64 / connections.opened as f64;
    }
    let real_users = run
        .real
        .iter()
        .map(|tally| {
            let mut tally = tally.borrow_mut();
            let latency = Latency::of(&tally.histogram);
            let mut counts = std::mem::take(&mut tally.counts);
            counts.latency_us = latency;
            counts
        })
        .collect();
    let stopped_early = server_memory
        .as_ref()
        .and_then(|memory| memory.killed_at_rss_kib)
        .map(|kib| {
            format!(
                "the server was killed at {} MiB RSS (--kill-server-above)",
                kib / 1024
            )
        });
    Report {
        scenario: "login-flood",
        server: config.server.to_string(),
        setup: None,
        load: None,
        flood: Some(Flood {
            target: String::from_utf8_lossy(&config.target).into_owned(),
            attackers: config.attackers,
            sources: config.sources.iter().map(Ipv4Addr::to_string).collect(),
            right_every: config.right_every,
            seconds,
            stopped_early,
            attempts,
            connections,
            real_users,
        }),
        server_memory,
        failures: Failures::default(),
        first_error: run.first_error.borrow().clone(),
    }
}
