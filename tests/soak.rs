//! Soak test of the real `im-server` over 127.0.0.1: many clients doing random commands, some of
//! them killed at random moments, for a bounded time. It checks that the server never dies, that
//! every answer is well-formed and fits its request, that no request the server accepted goes
//! unanswered, and that memory comes back near its baseline once every client has left.
//!
//! Ignored by default, as it runs for a minute per runtime:
//!
//! ```text
//! cargo test --test soak -- --ignored soak --test-threads 1 --nocapture
//! ```
//!
//! `SOAK_SECS` (default 60) and `SOAK_CLIENTS` (default 50) change its length and size.

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::harness::{Runtime, ServerProcess};
use simple_im_core::protocol::{Delivery, Response};

/// Longer than the server's default ack timeout (10 s): every accepted request is answered
/// within it, or something is wrong.
const ANSWER_WITHIN: Duration = Duration::from_secs(15);

#[test]
#[ignore = "runs for a minute; cargo test --test soak -- --ignored soak"]
fn soak_smol() {
    soak(Runtime::Smol);
}

#[test]
#[ignore = "runs for a minute; cargo test --test soak -- --ignored soak"]
fn soak_threads() {
    soak(Runtime::Threads);
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// What every client thread adds to.
#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
    deliveries: AtomicU64,
    sessions: AtomicU64,
    kills: AtomicU64,
    exits: AtomicU64,
    relogins: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Tally {
    fn error(&self, error: String) {
        let mut errors = self.errors.lock().unwrap();
        if errors.len() < 100 {
            errors.push(error);
        }
    }
}

fn soak(runtime: Runtime) {
    let seconds = env_number("SOAK_SECS", 60);
    let clients = env_number("SOAK_CLIENTS", 50) as usize;
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let users: String = (0..clients).map(|i| format!("user{i} pw{i}\n")).collect();
    let mut server = ServerProcess::start(runtime, &users, &[]);
    let pid = server.pid();
    thread::sleep(Duration::from_millis(200));
    let baseline = status_kib(pid, "VmRSS");
    let baseline_fds = open_fds(pid);

    let tally = Arc::new(Tally::default());
    let stop = Instant::now() + Duration::from_secs(seconds);
    let peak_sampled = Arc::new(AtomicU64::new(baseline));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let peak = Arc::clone(&peak_sampled);
        let sampling = Arc::clone(&sampling);
        thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                if let Some(rss) = try_status_kib(pid, "VmRSS") {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let workers: Vec<_> = (0..clients)
        .map(|index| {
            let tally = Arc::clone(&tally);
            let addr = server.addr;
            thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || Worker::new(index, clients, addr, tally).run(stop))
                .unwrap()
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    sampling.store(false, Ordering::Relaxed);
    sampler.join().unwrap();
    assert!(
        server.wait_exit(Duration::ZERO).is_none(),
        "the server died"
    );

    // Every client has left: the sockets close and memory comes back near the baseline.
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_fds(pid) > baseline_fds && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    let fds = open_fds(pid);
    thread::sleep(Duration::from_millis(500));
    let last = status_kib(pid, "VmRSS");
    let high_water = status_kib(pid, "VmHWM");
    let peak = peak_sampled.load(Ordering::Relaxed).max(high_water);
    let report = format!(
        "soak {runtime}: {clients} clients for {seconds} s: {} requests answered \
         ({} 303, {} 304), {} deliveries acknowledged, {} sessions, {} kills, {} exits, {} logins refused while still online; \
         RSS baseline {baseline} KiB, peak {peak} KiB, after all left {last} KiB; \
         open files {baseline_fds} before, {fds} after",
        tally.requests.load(Ordering::Relaxed),
        tally.delivered.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
        tally.deliveries.load(Ordering::Relaxed),
        tally.sessions.load(Ordering::Relaxed),
        tally.kills.load(Ordering::Relaxed),
        tally.exits.load(Ordering::Relaxed),
        tally.relogins.load(Ordering::Relaxed),
    );
    eprintln!("{report}");
    let errors = tally.errors.lock().unwrap();
    assert!(errors.is_empty(), "{report}\n{}", errors.join("\n"));
    assert!(tally.requests.load(Ordering::Relaxed) > 0, "{report}");
    assert!(fds <= baseline_fds, "{report}");
    assert!(
        last <= baseline + 16 * 1024,
        "memory did not come back: {report}"
    );
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn try_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status
        .lines()
        .find(|line| line.starts_with(field) && line[field.len()..].starts_with(':'))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn status_kib(pid: u32, field: &str) -> u64 {
    try_status_kib(pid, field).unwrap_or_else(|| panic!("no {field} for {pid}"))
}

/// A small xorshift generator per client.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `percent` in 100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// One client, logging in again and again as the same user.
struct Worker {
    index: usize,
    clients: usize,
    name: String,
    addr: SocketAddr,
    random: Random,
    tally: Arc<Tally>,
}

impl Worker {
    fn new(index: usize, clients: usize, addr: SocketAddr, tally: Arc<Tally>) -> Self {
        Worker {
            index,
            clients,
            name: format!("user{index}"),
            addr,
            random: Random(0x2545_f491_4f6c_dd1d ^ ((index as u64 + 1) * 0x9e37_79b9)),
            tally,
        }
    }

    fn run(mut self, stop: Instant) {
        while Instant::now() < stop {
            self.session(stop);
            thread::sleep(Duration::from_millis(self.random.below(50)));
        }
    }

    fn error(&self, what: String) {
        self.tally.error(format!("{}: {what}", self.name));
    }

    /// One session: log in, open Lb, random requests until the time is up, a kill or `/exit`.
    fn session(&mut self, stop: Instant) {
        let Ok(la) = TcpStream::connect(self.addr) else {
            self.error("cannot connect".into());
            return;
        };
        la.set_read_timeout(Some(ANSWER_WITHIN)).unwrap();
        let mut reader = BufReader::new(la.try_clone().unwrap());
        let mut la_writer = la.try_clone().unwrap();
        let mut request = |line: &str| -> Option<String> {
            la_writer.write_all(format!("{line}\n").as_bytes()).ok()?;
            let mut answer = String::new();
            match reader.read_line(&mut answer) {
                Ok(_) if answer.ends_with('\n') => Some(answer),
                _ => None,
            }
        };

        let password = format!("pw{}", self.index);
        match request(&format!("/login {} {password}", self.name)).as_deref() {
            Some("101 Authentication successful\n") => {}
            // Still online for a moment after a kill: the caller tries again.
            Some("102 Authentication failed\n") => {
                self.tally.relogins.fetch_add(1, Ordering::Relaxed);
                return;
            }
            other => {
                self.error(format!("/login answered {other:?}"));
                return;
            }
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        match request(&format!("/port {port}")).as_deref() {
            Some("201 Build connection successful\n") => {}
            other => {
                self.error(format!("/port answered {other:?}"));
                return;
            }
        }
        let (lb, _) = listener.accept().unwrap();
        self.tally.sessions.fetch_add(1, Ordering::Relaxed);
        let killed = Arc::new(AtomicBool::new(false));
        let lb_thread = {
            let la = la.try_clone().unwrap();
            let killed = Arc::clone(&killed);
            let tally = Arc::clone(&self.tally);
            let name = self.name.clone();
            let seed = self.random.next();
            thread::Builder::new()
                .stack_size(128 * 1024)
                .spawn(move || receive(lb, la, killed, tally, name, Random(seed | 1)))
                .unwrap()
        };
        while Instant::now() < stop {
            let (line, expect) = self.random_request();
            if self.random.chance(1) {
                // Killed right after asking: no answer is owed to a session that ended.
                let _ = (&la).write_all(format!("{line}\n").as_bytes());
                killed.store(true, Ordering::Relaxed);
                self.tally.kills.fetch_add(1, Ordering::Relaxed);
                break;
            }
            let answer = request(&line);
            let Some(answer) = answer else {
                if !killed.load(Ordering::Relaxed) {
                    self.error(format!("no answer to {line:?}"));
                }
                break;
            };
            self.tally.requests.fetch_add(1, Ordering::Relaxed);
            if let Err(why) = check_answer(&answer, expect, &self.name) {
                self.error(format!("{line:?} answered {answer:?}: {why}"));
            }
            match answer.as_str() {
                "303 Message delivery successful\n" => {
                    self.tally.delivered.fetch_add(1, Ordering::Relaxed);
                }
                "304 Message delivery failed\n" => {
                    self.tally.failed.fetch_add(1, Ordering::Relaxed);
                }
                "310 Bye bye\n" => {
                    self.tally.exits.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                _ => {}
            }
            if self.random.chance(2) {
                thread::sleep(Duration::from_millis(self.random.below(20)));
            }
        }
        // Leaving at once, whatever is unread: a reset if anything is.
        killed.store(true, Ordering::Relaxed);
        let _ = la.shutdown(Shutdown::Both);
        lb_thread.join().unwrap();
    }

    /// A random request and the kind of answer it must get.
    fn random_request(&mut self) -> (String, Expect) {
        let target = format!("user{}", self.random.below(self.clients as u64 + 2));
        let text = self.content();
        match self.random.below(100) {
            0..=29 => ("/list".into(), Expect::List),
            30..=64 => (format!("/to {target} {text}"), Expect::Delivery),
            65..=89 => (format!("/toall {text}"), Expect::Delivery),
            90..=97 => (format!("/bogus {text}"), Expect::Unrecognized),
            _ => ("/exit".into(), Expect::Bye),
        }
    }

    fn content(&mut self) -> String {
        let len = if self.random.chance(5) {
            1 + self.random.below(20_000)
        } else {
            1 + self.random.below(100)
        };
        (0..len)
            .map(|_| char::from(b' ' + self.random.below(95) as u8))
            .collect()
    }
}

#[derive(Clone, Copy, Debug)]
enum Expect {
    List,
    Delivery,
    Unrecognized,
    Bye,
}

fn check_answer(answer: &str, expect: Expect, me: &str) -> Result<(), String> {
    let line = answer.strip_suffix('\n').ok_or("no \\n")?;
    let response = Response::parse(line.as_bytes()).map_err(|_| "not a response")?;
    match (expect, response) {
        (Expect::List, Response::List(names)) => {
            if names.first() != Some(&me.as_bytes()) {
                return Err("the asker is not first".into());
            }
            let mut sorted = names.clone();
            sorted.sort();
            sorted.dedup();
            if sorted.len() != names.len() {
                return Err("a name twice".into());
            }
            Ok(())
        }
        (Expect::Delivery, Response::Delivered | Response::DeliveryFailed) => Ok(()),
        (Expect::Unrecognized, Response::Unrecognized) => Ok(()),
        (Expect::Bye, Response::Bye) => Ok(()),
        (expect, _) => Err(format!("expected {expect:?}")),
    }
}

/// Lb: acknowledges every well-formed delivery, except that now and then it dies instead,
/// taking La with it.
fn receive(
    lb: TcpStream,
    la: TcpStream,
    killed: Arc<AtomicBool>,
    tally: Arc<Tally>,
    name: String,
    mut random: Random,
) {
    lb.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut writer = lb.try_clone().unwrap();
    let mut reader = BufReader::new(lb);
    let mut line = Vec::new();
    loop {
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) if line.ends_with(b"\n") => {}
            Ok(_) => return,
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if killed.load(Ordering::Relaxed) {
                    let _ = writer.shutdown(Shutdown::Both);
                    return;
                }
                continue;
            }
            Err(_) => return,
        }
        if Delivery::parse(&line[..line.len() - 1]).is_err() {
            tally.error(format!(
                "{name}: Lb carried {:?}",
                String::from_utf8_lossy(&line)
            ));
        }
        line.clear();
        // A `/toall` reaches everybody, so deaths here are rarer than on La.
        if random.below(2_000) == 0 && !killed.swap(true, Ordering::Relaxed) {
            // Killed between a delivery and its receipt.
            tally.kills.fetch_add(1, Ordering::Relaxed);
            let _ = la.shutdown(Shutdown::Both);
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
        if writer
            .write_all(b"302 Message receipt successful\n")
            .is_err()
        {
            return;
        }
        tally.deliveries.fetch_add(1, Ordering::Relaxed);
    }
}
