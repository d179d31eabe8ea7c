//! Fault tests of the real `im-server` over 127.0.0.1, in each runtime: clients killed with
//! SIGKILL at every protocol step, half-closed sockets, peers that never read, a slowloris, and
//! a 100 MB garbage flood. After each fault the server must still serve the others: `/list` is
//! right within a second, every request it accepted gets its `303`/`304`, the victim's user can
//! log in again, no socket is left open, and memory stays bounded.
//!
//! A killed client is this test binary run again as a child process (the `victim_child` test,
//! which does nothing unless [`VICTIM_STEP`] is set): it plays one script up to a step, says so
//! on standard output, and waits to be killed.

#[macro_use]
mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use common::harness::{Client, Runtime, ServerProcess, STEP, USERS};

in_each_server_runtime!(
    killed_after_connect,
    killed_after_login,
    killed_after_port_before_accepting_lb,
    killed_in_the_middle_of_a_line,
    killed_after_from_before_302,
    killed_while_its_toall_is_out,
    killed_as_one_recipient_of_a_toall,
    killed_with_answers_unread,
    half_closed_la_still_gets_its_list,
    half_closed_la_still_gets_its_303,
    an_lb_that_never_reads_gets_304_and_stalls_nobody,
    an_la_that_never_reads_stalls_nobody,
    a_slowloris_is_closed_by_the_login_timeout,
    a_100_mb_garbage_flood_keeps_memory_bounded,
    a_port_naming_the_server_itself_ends_cleanly,
    a_sender_that_dies_and_returns_cannot_pile_up_queued_messages,
);

const OK: &str = "303 Message delivery successful\n";
const FAILED: &str = "304 Message delivery failed\n";
const UNRECOGNIZED: &str = "401 Unrecognized message\n";

/// The environment variables that make `victim_child` play a script.
const VICTIM_STEP: &str = "IM_FAULT_VICTIM_STEP";
const VICTIM_ADDR: &str = "IM_FAULT_VICTIM_ADDR";
/// What a victim writes before each marker, so its lines stand out from libtest's.
const VICTIM_SAYS: &str = "victim: ";
/// How long a victim waits to be killed before it leaves by itself.
const VICTIM_LIFETIME: Duration = Duration::from_secs(20);

/// The server's memory bound under attack.
const RSS_LIMIT_KIB: u64 = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// The scene: a server, three clients that stay, and the checks made after every fault.

/// A server with jacky, bob and michael Ready (in that order), who watch the victim, alice.
struct Scene {
    server: ServerProcess,
    jacky: Client,
    bob: Client,
    michael: Client,
    /// The server's open files with only the three watchers connected.
    baseline_fds: usize,
}

impl Scene {
    fn start(runtime: Runtime, options: &[&str]) -> Scene {
        let server = ServerProcess::start(runtime, USERS, options);
        let mut jacky = server.ready("jacky", "12345");
        let bob = server.ready("bob", "bob123");
        let michael = server.ready("michael", "michael123");
        assert_eq!(jacky.request("/list"), "301 jacky bob michael\n");
        let baseline_fds = open_fds(server.pid());
        Scene {
            server,
            jacky,
            bob,
            michael,
            baseline_fds,
        }
    }

    /// Starts a victim child that plays `step` as alice.
    fn victim(&self, step: &str) -> Victim {
        Victim::start(step, self.server.addr)
    }

    /// Asserts that jacky's `/list` becomes `expected` within a second.
    fn expect_list_within_a_second(&mut self, expected: &str) {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let list = self.jacky.request("/list");
            if list == expected {
                return;
            }
            assert!(Instant::now() < deadline, "/list still {list:?}");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The checks after a fault: the watchers are served and can still chat, alice is offline
    /// and may log in again, and the server holds no socket more than before.
    fn expect_recovered(&mut self) {
        assert!(
            self.server.wait_exit(Duration::ZERO).is_none(),
            "the server died"
        );
        self.expect_list_within_a_second("301 jacky bob michael\n");
        self.bob.send(b"/toall still here?\n");
        for watcher in [&mut self.jacky, &mut self.michael] {
            assert_eq!(watcher.recv_lb(), "/broadcastfrom bob still here?\n");
            watcher.ack();
        }
        assert_eq!(self.bob.recv(), OK);
        let mut alice = self.server.ready("alice", "alice123");
        assert_eq!(alice.request("/list"), "301 alice jacky bob michael\n");
        assert_eq!(alice.request("/exit"), "310 Bye bye\n");
        alice.expect_la_closed();
        drop(alice);
        let pid = self.server.pid();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let fds = open_fds(pid);
            if fds <= self.baseline_fds {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the server holds {fds} files, {} before the fault",
                self.baseline_fds
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// How many files `pid` has open.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with(field) && line[field.len()..].starts_with(':'))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

// ---------------------------------------------------------------------------------------------
// The victim: this binary again, killed at a step.

/// A victim child process, killed (SIGKILL) on [`Victim::kill`] or drop.
struct Victim {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Victim {
    fn start(step: &str, addr: SocketAddr) -> Victim {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "victim_child",
                "--exact",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(VICTIM_STEP, step)
            .env(VICTIM_ADDR, addr.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (line, lines) = mpsc::channel();
        thread::spawn(move || {
            for text in BufReader::new(stdout).lines() {
                let Ok(text) = text else { return };
                // libtest may have begun the line with the test's name.
                if let Some(at) = text.find(VICTIM_SAYS) {
                    let marker = &text[at + VICTIM_SAYS.len()..];
                    if line.send(marker.to_string()).is_err() {
                        return;
                    }
                }
            }
        });
        Victim { child, lines }
    }

    /// Waits for the victim to say `marker`.
    fn expect(&mut self, marker: &str) {
        match self.lines.recv_timeout(STEP) {
            Ok(said) => assert_eq!(said, marker),
            Err(error) => panic!("the victim did not say {marker:?}: {error}"),
        }
    }

    /// SIGKILL, and waits until the process is gone (so the kernel has closed its sockets).
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Not a test of its own: the body of a victim child, run only when [`VICTIM_STEP`] is set.
#[test]
fn victim_child() {
    let Ok(step) = std::env::var(VICTIM_STEP) else {
        return;
    };
    let addr: SocketAddr = std::env::var(VICTIM_ADDR).unwrap().parse().unwrap();
    let say = |marker: &str| {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{VICTIM_SAYS}{marker}").unwrap();
        stdout.flush().unwrap();
    };
    let mut alice = Raw::connect(addr);
    // Kept alive until the process is killed.
    let mut keep = Vec::new();
    match step.as_str() {
        "connect" => say("connected"),
        "login" => {
            alice.login("alice", "alice123");
            say("logged in");
        }
        "port" => {
            alice.login("alice", "alice123");
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            // The kernel completes the server's connect; the victim never accepts it.
            let answer = alice.request(&format!("/port {port}"));
            assert_eq!(answer, "201 Build connection successful\n");
            keep.push(listener);
            say("port sent");
        }
        "partial" => {
            alice.ready("alice", "alice123");
            alice.send(b"/to bob half a li");
            say("half a line sent");
        }
        "from" => {
            alice.ready("alice", "alice123");
            say("ready");
            let line = alice.recv_lb();
            say(&format!("got {}", line.trim_end()));
        }
        "toall" => {
            alice.ready("alice", "alice123");
            alice.send(b"/toall hello all\n");
            say("toall sent");
        }
        "unread" => {
            alice.ready("alice", "alice123");
            // Answers pile up unread in the victim's socket, so its death resets La.
            alice.la().set_nonblocking(true).unwrap();
            let lists = b"/list\n".repeat(10_000);
            let mut sent = 0;
            let deadline = Instant::now() + Duration::from_secs(2);
            while sent < lists.len() && Instant::now() < deadline {
                match alice.la().write(&lists[sent..]) {
                    Ok(n) => sent += n,
                    Err(error) if error.kind() == ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(5))
                    }
                    Err(error) => panic!("{error}"),
                }
            }
            thread::sleep(Duration::from_millis(100));
            say("answers unread");
        }
        other => panic!("no victim step {other:?}"),
    }
    thread::sleep(VICTIM_LIFETIME);
}

/// A raw client with its sockets in reach, for what [`Client`] does not do (half-closing,
/// listening without accepting).
struct Raw {
    la: BufReader<TcpStream>,
    lb: Option<BufReader<TcpStream>>,
}

impl Raw {
    fn connect(addr: SocketAddr) -> Raw {
        let la = TcpStream::connect_timeout(&addr, STEP).unwrap();
        la.set_read_timeout(Some(STEP)).unwrap();
        la.set_write_timeout(Some(STEP)).unwrap();
        Raw {
            la: BufReader::new(la),
            lb: None,
        }
    }

    fn la(&self) -> &TcpStream {
        self.la.get_ref()
    }

    fn send(&mut self, bytes: &[u8]) {
        self.la.get_mut().write_all(bytes).unwrap();
    }

    /// One La line, `\n` included, or what came before the end.
    fn recv(&mut self) -> String {
        let mut line = Vec::new();
        self.la.read_until(b'\n', &mut line).unwrap();
        String::from_utf8(line).unwrap()
    }

    fn request(&mut self, line: &str) -> String {
        self.send(format!("{line}\n").as_bytes());
        self.recv()
    }

    fn login(&mut self, user: &str, password: &str) {
        let answer = self.request(&format!("/login {user} {password}"));
        assert_eq!(answer, "101 Authentication successful\n");
    }

    /// Logs in and connects Lb.
    fn ready(&mut self, user: &str, password: &str) {
        self.login(user, password);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let answer = self.request(&format!("/port {port}"));
        assert_eq!(answer, "201 Build connection successful\n");
        // The server answers `201` once connected, so the connection is waiting already.
        let (lb, _) = listener.accept().unwrap();
        lb.set_read_timeout(Some(STEP)).unwrap();
        self.lb = Some(BufReader::new(lb));
    }

    fn recv_lb(&mut self) -> String {
        let mut line = Vec::new();
        let lb = self.lb.as_mut().expect("no Lb");
        lb.read_until(b'\n', &mut line).unwrap();
        String::from_utf8(line).unwrap()
    }

    /// Asserts that La ends (end of file or reset) within [`STEP`], with nothing more on it.
    fn expect_la_closed(&mut self) {
        let mut rest = Vec::new();
        match self.la.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(error) if error.kind() == ErrorKind::ConnectionReset => {}
            Err(error) => panic!("La not closed: {error}"),
        }
        assert!(
            rest.is_empty(),
            "La carried {:?}",
            String::from_utf8_lossy(&rest)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Killed at each step.

fn killed_after_connect(runtime: Runtime) {
    let mut scene = Scene::start(runtime, &[]);
    let mut victim = scene.victim("connect");
    victim.expect("connected");
    victim.kill();
    scene.expect_recovered();
}

fn killed_after_login(runtime: Runtime) {
    let mut scene = Scene::start(runtime, &[]);
    let mut victim = scene.victim("login");
    victim.expect("logged in");
    assert_eq!(
        scene.jacky.request("/list"),
        "301 jacky bob michael alice\n"
    );
    victim.kill();
    scene.expect_recovered();
}

fn killed_after_port_before_accepting_lb(runtime: Runtime) {
    let mut scene = Scene::start(runtime, &[]);
    let mut victim = scene.victim("port");
    victim.expect("port sent");
    assert_eq!(
        scene.jacky.request("/list"),
        "301 jacky bob michael alice\n"
    );
    victim.kill();
    scene.expect_recovered();
}

fn killed_in_the_middle_of_a_line(runtime: Runtime) {
    let mut scene = Scene::start(runtime, &[]);
    let mut victim = scene.victim("partial");
    victim.expect("half a line sent");
    victim.kill();
    scene.expect_recovered();
}

fn killed_after_from_before_302(runtime: Runtime) {
    let mut scene = Scene::start(runtime, &[]);
    let mut victim = scene.victim("from");
    victim.expect("ready");
    scene.jacky.send(b"/to alice are you there?\n");
    victim.expect("got /from jacky are you there?");
    // Queued behind the outstanding one: it fails too when alice goes.
    scene.bob.send(b"/to alice me too\n");
    thread::sleep(Duration::from_millis(50));
    let killed = Instant::now();
    victim.kill();
    assert_eq!(scene.jacky.recv(), FAILED);
    assert_eq!(scene.bob.recv(), FAILED);
    assert!(
        killed.elapsed() < Duration::from_secs(1),
        "{:?}",
        killed.elapsed()
    );
    scene.expect_recovered();
}

fn killed_while_its_toall_is_out(runtime: Runtime) {
    let mut scene = Scene::start(runtime, &[]);
    let mut victim = scene.victim("toall");
    victim.expect("toall sent");
    for watcher in [&mut scene.jacky, &mut scene.bob, &mut scene.michael] {
        assert_eq!(watcher.recv_lb(), "/broadcastfrom alice hello all\n");
    }
    victim.kill();
    // The request is dropped with its sender; the late receipts still settle the deliveries.
    thread::sleep(Duration::from_millis(100));
    for watcher in [&mut scene.jacky, &mut scene.bob, &mut scene.michael] {
        watcher.ack();
    }
    scene.expect_recovered();
}

fn killed_as_one_recipient_of_a_toall(runtime: Runtime) {
    let mut scene = Scene::start(runtime, &[]);
    let mut victim = scene.victim("from");
    victim.expect("ready");
    scene.jacky.send(b"/toall meeting at 3pm\n");
    for watcher in [&mut scene.bob, &mut scene.michael] {
        assert_eq!(watcher.recv_lb(), "/broadcastfrom jacky meeting at 3pm\n");
        watcher.ack();
    }
    victim.expect("got /broadcastfrom jacky meeting at 3pm");
    victim.kill();
    assert_eq!(scene.jacky.recv(), FAILED);
    scene.expect_recovered();
}

fn killed_with_answers_unread(runtime: Runtime) {
    let mut scene = Scene::start(runtime, &[]);
    let mut victim = scene.victim("unread");
    victim.expect("answers unread");
    // Meanwhile the others are served at once.
    let asked = Instant::now();
    assert_eq!(
        scene.jacky.request("/list"),
        "301 jacky bob michael alice\n"
    );
    assert!(asked.elapsed() < Duration::from_secs(1));
    victim.kill();
    scene.expect_recovered();
}

// ---------------------------------------------------------------------------------------------
// Half-closed sockets.

fn half_closed_la_still_gets_its_list(runtime: Runtime) {
    let mut scene = Scene::start(runtime, &[]);
    let mut alice = Raw::connect(scene.server.addr);
    alice.ready("alice", "alice123");
    alice.send(b"/list\n");
    alice.la().shutdown(Shutdown::Write).unwrap();
    assert_eq!(alice.recv(), "301 alice jacky bob michael\n");
    // End of file on La ends the session.
    alice.expect_la_closed();
    drop(alice);
    scene.expect_recovered();
}

fn half_closed_la_still_gets_its_303(runtime: Runtime) {
    let mut scene = Scene::start(runtime, &[]);
    let mut alice = Raw::connect(scene.server.addr);
    alice.ready("alice", "alice123");
    alice.send(b"/to bob bye for now\n");
    alice.la().shutdown(Shutdown::Write).unwrap();
    assert_eq!(scene.bob.recv_lb(), "/from alice bye for now\n");
    scene.bob.ack();
    assert_eq!(alice.recv(), OK);
    alice.expect_la_closed();
    drop(alice);
    scene.expect_recovered();
}

// ---------------------------------------------------------------------------------------------
// Peers that never read.

fn an_lb_that_never_reads_gets_304_and_stalls_nobody(runtime: Runtime) {
    let mut scene = Scene::start(runtime, &["--ack-timeout", "500ms"]);
    let mut alice = Raw::connect(scene.server.addr);
    alice.ready("alice", "alice123");
    let long = "x".repeat(60_000);
    let sent = Instant::now();
    scene.jacky.send(format!("/to alice {long}\n").as_bytes());
    scene.bob.send(b"/to alice short\n");
    // While both wait on alice, michael is served at once.
    let asked = Instant::now();
    assert_eq!(
        scene.michael.request("/list"),
        "301 michael jacky bob alice\n"
    );
    assert!(asked.elapsed() < Duration::from_millis(300));
    scene.michael.send(b"/toall anyone?\n");
    for watcher in [&mut scene.jacky, &mut scene.bob] {
        assert_eq!(watcher.recv_lb(), "/broadcastfrom michael anyone?\n");
        watcher.ack();
    }
    // alice never reads: her part fails when she is dropped for the ack timeout.
    assert_eq!(scene.michael.recv(), FAILED);
    assert_eq!(scene.jacky.recv(), FAILED);
    assert_eq!(scene.bob.recv(), FAILED);
    let waited = sent.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    alice.expect_la_closed();
    drop(alice);
    scene.expect_recovered();
}

fn an_la_that_never_reads_stalls_nobody(runtime: Runtime) {
    let mut scene = Scene::start(runtime, &[]);
    let mut alice = Raw::connect(scene.server.addr);
    alice.ready("alice", "alice123");
    // Requests keep coming; their answers are never read, so the server must stop reading
    // alice (TCP holds her back) rather than buffer for her.
    alice.la().set_nonblocking(true).unwrap();
    let lists = b"/list\n".repeat(2_000_000);
    let mut sent = 0;
    let mut blocked_since: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while sent < lists.len() && Instant::now() < deadline {
        match alice.la().write(&lists[sent..]) {
            Ok(n) => {
                sent += n;
                blocked_since = None;
            }
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                let since = *blocked_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_millis(300) {
                    break;
                }
                thread::sleep(Duration::from_millis(5));
            }
            Err(error) => panic!("{error}"),
        }
    }
    assert!(
        sent < lists.len(),
        "the server read 12 MB of unanswered requests"
    );
    let asked = Instant::now();
    assert_eq!(
        scene.jacky.request("/list"),
        "301 jacky bob michael alice\n"
    );
    assert!(asked.elapsed() < Duration::from_secs(1));
    let rss = status_kib(scene.server.pid(), "VmHWM");
    assert!(rss < RSS_LIMIT_KIB, "peak RSS {rss} KiB");
    drop(alice);
    scene.expect_recovered();
}

// ---------------------------------------------------------------------------------------------
// Attacks before login.

fn a_slowloris_is_closed_by_the_login_timeout(runtime: Runtime) {
    let mut scene = Scene::start(runtime, &["--login-timeout", "1s"]);
    let mut slow = Raw::connect(scene.server.addr);
    let connected = Instant::now();
    let closed = Arc::new(AtomicBool::new(false));
    let writer = {
        let stream = slow.la().try_clone().unwrap();
        let closed = Arc::clone(&closed);
        thread::spawn(move || {
            let mut stream = stream;
            // At most 5 s of bytes, never a whole line.
            for byte in b"/login alice alice123 ".iter().cycle().take(50) {
                if closed.load(Ordering::Relaxed) || stream.write_all(&[*byte]).is_err() {
                    return;
                }
                thread::sleep(Duration::from_millis(100));
            }
        })
    };
    slow.expect_la_closed();
    closed.store(true, Ordering::Relaxed);
    let lasted = connected.elapsed();
    assert!(
        lasted >= Duration::from_millis(900) && lasted < Duration::from_secs(3),
        "{lasted:?}"
    );
    writer.join().unwrap();
    drop(slow);
    scene.expect_recovered();
}

/// A tiny xorshift generator, so the flood is the same bytes on every run.
struct XorShift(u64);

impl XorShift {
    fn fill(&mut self, buffer: &mut [u8]) {
        for chunk in buffer.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let bytes = self.0.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

fn a_100_mb_garbage_flood_keeps_memory_bounded(runtime: Runtime) {
    const LINES: usize = 100;
    const LINE: usize = 1 << 20;
    let mut scene = Scene::start(runtime, &[]);
    let pid = scene.server.pid();
    let mut flood = Raw::connect(scene.server.addr);
    // The answers (one `401` per over-long line) are read as they come.
    let answers = Arc::new(AtomicUsize::new(0));
    let reader = {
        let mut stream = BufReader::new(flood.la().try_clone().unwrap());
        let answers = Arc::clone(&answers);
        thread::spawn(move || {
            for _ in 0..LINES {
                let mut line = Vec::new();
                stream.read_until(b'\n', &mut line).unwrap();
                assert_eq!(line, UNRECOGNIZED.as_bytes());
                answers.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let mut random = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut line = vec![0; LINE];
    let mut peak_rss = 0;
    let started = Instant::now();
    flood.la().set_write_timeout(Some(STEP)).unwrap();
    for _ in 0..LINES {
        random.fill(&mut line);
        for byte in &mut line {
            if *byte == b'\n' {
                *byte = b'?';
            }
        }
        line[LINE - 1] = b'\n';
        flood.send(&line);
        peak_rss = peak_rss.max(status_kib(pid, "VmRSS"));
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the flood is too slow"
        );
    }
    let flooded = started.elapsed();
    // Every over-long line is answered once, and the connection is still open.
    let deadline = Instant::now() + STEP;
    while answers.load(Ordering::Relaxed) < LINES {
        assert!(Instant::now() < deadline, "{answers:?} answers");
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        flood.request("/login alice alice123"),
        "101 Authentication successful\n"
    );
    let asked = Instant::now();
    assert_eq!(
        scene.jacky.request("/list"),
        "301 jacky bob michael alice\n"
    );
    assert!(asked.elapsed() < Duration::from_secs(1));
    let hwm = status_kib(pid, "VmHWM");
    eprintln!(
        "flood of {LINES} MiB in {flooded:?}: RSS peak {peak_rss} KiB, high-water mark {hwm} KiB"
    );
    assert!(hwm < RSS_LIMIT_KIB, "peak RSS {hwm} KiB");
    reader.join().unwrap();
    drop(flood);
    scene.expect_recovered();
}

// ---------------------------------------------------------------------------------------------
// Odd ports.

fn a_port_naming_the_server_itself_ends_cleanly(runtime: Runtime) {
    let mut scene = Scene::start(runtime, &[]);
    let mut alice = Raw::connect(scene.server.addr);
    alice.login("alice", "alice123");
    // The server's Lb reaches its own listener: a new, unauthenticated client of itself.
    let port = scene.server.addr.port();
    assert_eq!(
        alice.request(&format!("/port {port}")),
        "201 Build connection successful\n"
    );
    // A delivery to alice lands on that client, which answers `401` back on alice's Lb: not a
    // receipt, so alice's session ends and the message fails.
    scene.jacky.send(b"/to alice hello me\n");
    assert_eq!(scene.jacky.recv(), FAILED);
    alice.expect_la_closed();
    drop(alice);
    scene.expect_recovered();
}

// ---------------------------------------------------------------------------------------------
// Memory held for slow recipients.

/// A sender has one request in flight at a time, but one that dies and logs in again can send
/// another at once: its message dropped with it stays queued at a recipient that is slow to
/// acknowledge. Here bob never acknowledges (within a 20 s ack timeout) and alice sends him
/// 1,100 messages of 65 KB, dying after each.
fn a_sender_that_dies_and_returns_cannot_pile_up_queued_messages(runtime: Runtime) {
    let mut scene = Scene::start(runtime, &["--ack-timeout", "20s"]);
    let pid = scene.server.pid();
    let content = "y".repeat(65_000);
    let started = Instant::now();
    for _ in 0..1_100 {
        assert!(started.elapsed() < Duration::from_secs(20), "too slow");
        let mut alice = Raw::connect(scene.server.addr);
        // Her last session may not be over yet.
        while alice.request("/login alice alice123") != "101 Authentication successful\n" {
            thread::sleep(Duration::from_millis(2));
            alice = Raw::connect(scene.server.addr);
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let answer = alice.request(&format!("/port {port}"));
        assert_eq!(answer, "201 Build connection successful\n");
        alice.send(format!("/to bob {content}\n").as_bytes());
        // Time for the server to read the line; then alice dies (her sockets close).
        thread::sleep(Duration::from_millis(3));
    }
    let rss = status_kib(pid, "VmHWM");
    eprintln!("{runtime}: RSS {rss} KiB after {:?}", started.elapsed());
    assert!(rss < RSS_LIMIT_KIB, "peak RSS {rss} KiB");
    scene.bob.close_lb();
}
