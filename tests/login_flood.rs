//! A password-guessing flood against a real `im-server` over loopback, from several 127.x
//! source addresses, bounded in time: the guesses that get checked stay within the account's
//! budget, the server's memory within its bound, and the real users' logins keep being answered.
//! Generous margins: this guards against regressions; the exact figures are im-bench's
//! (`im-bench login-flood`, BENCHMARKS.md).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::harness::{Runtime, ServerProcess};
use socket2::{Domain, Socket, Type};

/// Connects to `server` from `source` (any 127.x address is this machine's).
fn connect_from(source: Ipv4Addr, server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(IpAddr::V4(source), 0).into())?;
    socket.connect_timeout(&server.into(), Duration::from_secs(2))?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(stream)
}

/// What the attackers saw.
#[derive(Default)]
struct Tally {
    answered: AtomicUsize,
    right_sent: AtomicUsize,
    let_in: AtomicUsize,
}

/// `threads` attackers from 127.0.0.2.. (`sources` of them) guess `alice`'s password until
/// `stop`; every fifth guess is the right one.
fn flood(
    server: SocketAddr,
    threads: usize,
    sources: u8,
    right: &'static str,
    stop: Arc<AtomicBool>,
) -> (Arc<Tally>, Vec<thread::JoinHandle<()>>) {
    let tally = Arc::new(Tally::default());
    let handles = (0..threads)
        .map(|index| {
            let (tally, stop) = (Arc::clone(&tally), Arc::clone(&stop));
            let source = Ipv4Addr::new(127, 0, 0, 2 + (index as u8 % sources));
            thread::spawn(move || {
                let mut guess = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let Ok(stream) = connect_from(source, server) else {
                        thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    let mut reader = BufReader::new(match stream.try_clone() {
                        Ok(clone) => clone,
                        Err(_) => continue,
                    });
                    let mut writer = stream;
                    while !stop.load(Ordering::Relaxed) {
                        guess += 1;
                        let is_right = guess.is_multiple_of(5);
                        let password = match is_right {
                            true => right.to_owned(),
                            false => format!("guess{index}x{guess}"),
                        };
                        if writeln!(writer, "/login alice {password}").is_err() {
                            break;
                        }
                        let mut answer = String::new();
                        if !matches!(reader.read_line(&mut answer), Ok(1..)) {
                            break; // closed: reconnect
                        }
                        tally.answered.fetch_add(1, Ordering::Relaxed);
                        if is_right {
                            tally.right_sent.fetch_add(1, Ordering::Relaxed);
                        }
                        if answer.starts_with("101") {
                            tally.let_in.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    (tally, handles)
}

/// Logs `user` in from 127.0.0.1: how long the answer took, and whether it was `101`.
fn real_login(server: SocketAddr, user: &str, password: &str) -> (Duration, bool) {
    let start = Instant::now();
    let Ok(stream) = connect_from(Ipv4Addr::LOCALHOST, server) else {
        return (start.elapsed(), false);
    };
    let mut reader = BufReader::new(stream.try_clone().expect("a socket clone"));
    let mut writer = stream;
    let mut answer = String::new();
    let sent = writeln!(writer, "/login {user} {password}").is_ok();
    let read = sent && matches!(reader.read_line(&mut answer), Ok(1..));
    let took = start.elapsed();
    // Log out and wait for the server's end of file, so that this session is gone before the
    // same user's next login (else that login is answered "already logged in").
    let _ = writer.shutdown(std::net::Shutdown::Write);
    let _ = std::io::copy(&mut reader, &mut std::io::sink());
    (took, read && answer.starts_with("101"))
}

/// Peak resident memory of `pid`, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Runs a flood for `span` while alice and bob log in from 127.0.0.1 every 200 ms; returns the
/// attackers' tally and the worst real login (its time, whether every one was `101`).
fn attack(server: &ServerProcess, span: Duration) -> (Arc<Tally>, Duration, bool) {
    let addr = server.addr;
    // The real alice has logged in from home before: her address is trusted for her account.
    let (_, first) = real_login(addr, "alice", "s3cret-alice");
    assert!(first, "alice's first login failed");
    let stop = Arc::new(AtomicBool::new(false));
    let (tally, attackers) = flood(addr, 40, 4, "s3cret-alice", Arc::clone(&stop));
    let worst = Arc::new(Mutex::new((Duration::ZERO, true)));
    let end = Instant::now() + span;
    let mut turn = 0;
    while Instant::now() < end {
        let (user, password) = [("alice", "s3cret-alice"), ("bob", "bob123")][turn % 2];
        turn += 1;
        let (took, ok) = real_login(addr, user, password);
        let mut worst = worst.lock().unwrap();
        worst.0 = worst.0.max(took);
        worst.1 &= ok;
        drop(worst);
        thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    for attacker in attackers {
        attacker.join().expect("an attacker thread panicked");
    }
    let (took, all_ok) = *worst.lock().unwrap();
    (tally, took, all_ok)
}

#[test]
fn guessing_a_plain_password_is_bounded_by_the_accounts_budget() {
    let users = "alice s3cret-alice\nbob bob123\n";
    let server = ServerProcess::start(Runtime::Smol, users, &[]);
    let (tally, worst, all_ok) = attack(&server, Duration::from_secs(4));
    let answered = tally.answered.load(Ordering::Relaxed);
    let let_in = tally.let_in.load(Ordering::Relaxed);
    let right = tally.right_sent.load(Ordering::Relaxed);
    eprintln!(
        "answered {answered}, right passwords {right}, let in {let_in}, worst real login {worst:?}"
    );
    // The default account budget lets 10 checks through at once and one more every 10 s:
    // ≈ 2 right passwords among them. Without the throttle, hundreds get in.
    assert!(let_in <= 6, "{let_in} of {right} right passwords let in");
    assert!(answered > 40, "the flood was not answered: {answered}");
    assert!(all_ok, "a real user's login was refused");
    assert!(
        worst < Duration::from_secs(5),
        "a real login took {worst:?}"
    );
    assert!(
        server.stderr().contains("throttled"),
        "no throttling logged"
    );
}

#[test]
fn a_flood_on_a_hashed_account_keeps_the_server_small_and_answering() {
    let hash = simple_im_core::users::hash_password(b"s3cret-alice", b"0123456789abcdef").unwrap();
    let users = format!("alice {hash}\nbob bob123\n");
    let mut server = ServerProcess::start(Runtime::Smol, &users, &[]);
    let (tally, worst, all_ok) = attack(&server, Duration::from_secs(5));
    let peak = peak_rss_kib(server.pid());
    let let_in = tally.let_in.load(Ordering::Relaxed);
    eprintln!(
        "answered {}, let in {let_in}, peak RSS {} MiB, worst real login {worst:?}",
        tally.answered.load(Ordering::Relaxed),
        peak / 1024
    );
    assert!(peak > 0, "no VmHWM for the server");
    assert!(peak < 256 * 1024, "peak RSS {} MiB", peak / 1024);
    assert!(let_in <= 6, "{let_in} right passwords let in");
    assert!(all_ok, "a real user's login was refused");
    assert!(
        worst < Duration::from_secs(5),
        "a real login took {worst:?}"
    );
    assert!(
        server.wait_exit(Duration::ZERO).is_none(),
        "the server died"
    );
}
