//! A harness for end-to-end tests of `im-server`: the real binary on 127.0.0.1 in either
//! runtime, raw blocking TCP clients that speak the protocol byte for byte, and the real
//! `im-client` driven through its standard input.

#![allow(dead_code)]

/// Runs each named scenario `fn(Runtime)` as a test per runtime: `smol::name`, `threads::name`;
/// attributes before a name (`#[ignore = "why"]`) go on each of its tests.
#[allow(unused_macros)]
macro_rules! in_each_runtime {
    ($($(#[$attr:meta])* $scenario:ident),* $(,)?) => {
        mod smol {
            $($(#[$attr])* #[test] fn $scenario() { super::$scenario(super::Runtime::Smol) })*
        }
        mod threads {
            $($(#[$attr])* #[test] fn $scenario() { super::$scenario(super::Runtime::Threads) })*
        }
    };
}

/// As `in_each_runtime!`, and `tokio::name`, and `uring::name` in a build with `uring`: for server scenarios
/// (those runtimes' client is smol's, tested already).
#[allow(unused_macros)]
macro_rules! in_each_server_runtime {
    ($($(#[$attr:meta])* $scenario:ident),* $(,)?) => {
        in_each_runtime!($($(#[$attr])* $scenario),*);
        #[cfg(all(target_os = "linux", feature = "uring"))]
        mod uring {
            $($(#[$attr])* #[test] fn $scenario() { super::$scenario(super::Runtime::Uring) })*
        }
        mod tokio {
            $($(#[$attr])* #[test] fn $scenario() { super::$scenario(super::Runtime::Tokio) })*
        }
    };
}

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long any one step may take before a test fails.
pub const STEP: Duration = Duration::from_secs(5);

/// The appendix's users and a few more.
pub const USERS: &str = "# test accounts\n\
    jacky 12345\n\
    bob bob123\n\
    michael michael123\n\
    alice alice123\n\
    carol carol123\n";

/// Which runtime a scenario's `im-server` runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    /// `im-server --runtime smol`.
    Smol,
    /// `im-server --runtime threads`.
    Threads,
    /// `im-server --runtime tokio` (its clients use smol).
    Tokio,
    /// `im-server --runtime uring` (its clients use smol).
    Uring,
}

impl Runtime {
    /// The `--runtime` of `im-server` and `im-client`.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Smol => "smol",
            Runtime::Tokio => "tokio",
            Runtime::Threads => "threads",
            Runtime::Uring => "uring",
        }
    }
}

impl std::fmt::Display for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// This test's target directory, `target/<profile>/`: the binaries and examples that
/// `cargo test` builds beside the test binaries (which are in `deps/`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let deps = exe.parent().expect("target/<profile>/deps");
    deps.parent().expect("target/<profile>").to_path_buf()
}

/// The `im-check` conformance checker, another package of the workspace: `cargo test` at the
/// root builds it beside the test binaries.
pub fn im_check() -> PathBuf {
    let bin = profile_dir().join("im-check");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build -p im-check`, or run `cargo test` at the workspace root",
        bin.display()
    );
    bin
}

/// The path of the binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_im-server");

/// The path of the client binary.
pub const CLIENT_BIN: &str = env!("CARGO_BIN_EXE_im-client");

/// A file path in the temp dir that no other test (or test run) uses.
pub fn temp_path(tag: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("im-server-e2e-{}-{n}-{tag}", std::process::id()))
}

/// A file in the temp dir, removed on drop.
pub struct TempFile(pub PathBuf);

impl TempFile {
    /// Writes `contents` to a fresh temp file.
    pub fn new(tag: &str, contents: &[u8]) -> Self {
        let path = temp_path(tag);
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs the binary to completion with these arguments, bounded in time.
pub fn run_to_end(args: &[&std::ffi::OsStr]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + STEP;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("im-server {args:?} did not exit");
        }
        thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

/// A running `im-server`, killed on drop. Its standard error is kept and shown if the test fails.
pub struct ServerProcess {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// The users file it was started with, unless its `--config` file names one.
    users: Option<TempFile>,
}

impl ServerProcess {
    /// Starts the server in `runtime` on a free port of 127.0.0.1 (unless `options` name
    /// another `--bind`) with these accounts and options.
    pub fn start(runtime: Runtime, users: &str, options: &[&str]) -> Self {
        Self::start_on(0, runtime, users, options)
    }

    /// As [`ServerProcess::start`], on this port (0: a free one).
    pub fn start_on(port: u16, runtime: Runtime, users: &str, options: &[&str]) -> Self {
        Self::start_under(&[], port, runtime, users, options)
    }

    /// As [`ServerProcess::start_on`], the command run under `prefix` (`ip netns exec NS`).
    pub fn start_under(
        prefix: &[&str],
        port: u16,
        runtime: Runtime,
        users: &str,
        options: &[&str],
    ) -> Self {
        let users = TempFile::new("users.txt", users.as_bytes());
        let bind: &[&str] = if options.contains(&"--bind") {
            &[]
        } else {
            &["--bind", "127.0.0.1"]
        };
        let mut command = match prefix {
            [] => Command::new(BIN),
            [program, args @ ..] => {
                let mut command = Command::new(program);
                command.args(args).arg(BIN);
                command
            }
        };
        command
            .arg(port.to_string())
            .arg(users.path())
            .args(bind)
            .args(["--log", "debug", "--runtime", runtime.name()])
            .args(options);
        Self::spawn(command, Some(users))
    }

    /// Runs `command` (an `im-server` that prints its `listening on` line) as a server;
    /// `users` is the users file it was given, if [`ServerProcess::rewrite_users`] is to work.
    pub fn spawn(mut command: Command, users: Option<TempFile>) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = Arc::clone(&stderr);
        thread::spawn(move || {
            let mut chunk = [0; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                sink.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (first_line, first) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = first_line.send(lines.next());
            for _ in lines {}
        });
        let mut server = ServerProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stderr,
            users,
        };
        let line = match first.recv_timeout(STEP) {
            Ok(Some(Ok(line))) => line,
            other => panic!("no `listening on` line: {other:?}"),
        };
        let addr = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("first line {line:?}"));
        server.addr = addr.parse().unwrap();
        assert_ne!(server.addr.port(), 0);
        // Listening on every address: clients reach it on loopback.
        match server.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => server.addr.set_ip(Ipv4Addr::LOCALHOST.into()),
            IpAddr::V6(ip) if ip.is_unspecified() => server.addr.set_ip(Ipv6Addr::LOCALHOST.into()),
            _ => {}
        }
        server
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends the server a signal by name (`HUP`, `TERM`, `INT`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// Writes new contents to the users file the server was started with (to reload it).
    pub fn rewrite_users(&self, users: &str) {
        let file = self
            .users
            .as_ref()
            .expect("a server started with a users file");
        std::fs::write(file.path(), users).unwrap();
    }

    /// How many times `needle` appears in standard error so far.
    pub fn log_count(&self, needle: &str) -> usize {
        self.stderr().matches(needle).count()
    }

    /// What the server wrote on standard error so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Waits (at most [`STEP`]) for standard error to contain `needle`: it is read on a thread
    /// of its own, so a line just logged may not be there yet.
    pub fn expect_log(&self, needle: &str) {
        let deadline = Instant::now() + STEP;
        while !self.stderr().contains(needle) {
            assert!(Instant::now() < deadline, "no {needle:?} in the log");
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the process to exit, for at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the server (SIGKILL: no goodbye to anyone) and waits until it is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Connects a fresh client's La.
    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// A client logged in as `user` with its Lb connected.
    pub fn ready(&self, user: &str, password: &str) -> Client {
        let mut client = self.connect();
        assert_eq!(
            client.request(&format!("/login {user} {password}")),
            "101 Authentication successful\n"
        );
        assert_eq!(client.open_lb(), "201 Build connection successful\n");
        client
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("--- im-server stderr ---\n{}", self.stderr());
        }
    }
}

/// A running `im-client`, killed on drop: its standard input is written line by line and its
/// standard output read line by line, each read bounded by [`STEP`].
pub struct ClientProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// Every line read so far, for failure messages.
    pub transcript: Vec<String>,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// The thread that reads standard error into `stderr`, until the pipe's end.
    stderr_reader: Option<thread::JoinHandle<()>>,
}

impl ClientProcess {
    /// Starts `im-client --runtime <runtime>` against `server`.
    pub fn start(runtime: Runtime, server: SocketAddr) -> Self {
        Self::start_with(runtime, server, &[])
    }

    /// As [`ClientProcess::start`], with these options too (`--tls`, say).
    pub fn start_with(runtime: Runtime, server: SocketAddr, options: &[&str]) -> Self {
        Self::spawn(Self::command(runtime, server, options), false)
    }

    /// The command line of `im-client --runtime <runtime>` against `server` with `options`.
    pub fn command(runtime: Runtime, server: SocketAddr, options: &[&str]) -> Command {
        let mut command = Command::new(CLIENT_BIN);
        command
            .arg(server.ip().to_string())
            .arg(server.port().to_string())
            .args(["--runtime", runtime.name()])
            .args(options);
        command
    }

    /// Runs `command` (an `im-client` command line, under `ip netns exec`, say) as the client,
    /// keeping its standard error for [`ClientProcess::stderr`].
    pub fn from_command(command: Command) -> Self {
        Self::spawn(command, true)
    }

    fn spawn(mut command: Command, keep_stderr: bool) -> Self {
        let errors = if keep_stderr {
            Stdio::piped()
        } else {
            Stdio::inherit()
        };
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(errors)
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stderr_reader = child.stderr.take().map(|mut pipe| {
            let sink = Arc::clone(&stderr);
            thread::spawn(move || {
                let mut chunk = [0; 4096];
                while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                    sink.lock().unwrap().extend_from_slice(&chunk[..n]);
                }
            })
        });
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (line, lines) = mpsc::channel();
        thread::spawn(move || {
            for text in BufReader::new(stdout).lines() {
                let Ok(text) = text else { return };
                if line.send(text).is_err() {
                    return;
                }
            }
        });
        ClientProcess {
            child,
            stdin,
            lines,
            transcript: Vec::new(),
            stderr,
            stderr_reader,
        }
    }

    /// What the client wrote on standard error so far (only from [`ClientProcess::from_command`]).
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Logs in as `user` through the prompts and waits until Lb is up.
    pub fn log_in(&mut self, user: &str, password: &str) {
        self.expect_lines(&["Please input your user name:"]);
        self.type_lines(&[user, password]);
        self.expect_lines(&[
            "Please input your password:",
            "101 Authentication successful",
            "201 Build connection successful",
        ]);
    }

    /// Types `command` and expects it echoed (standard input is a pipe) and then `answer`.
    pub fn run(&mut self, command: &str, answer: &str) {
        self.type_lines(&[command]);
        self.expect_lines(&[command, answer]);
    }

    /// Types `lines`, each followed by `\n`.
    pub fn type_lines(&mut self, lines: &[&str]) {
        let stdin = self.stdin.as_mut().expect("standard input closed");
        for line in lines {
            stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
        }
        stdin.flush().unwrap();
    }

    /// Closes standard input (Ctrl-D).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Reads the next line of standard output, without `\n`.
    pub fn next_line(&mut self) -> String {
        self.next_line_within(STEP)
    }

    /// As [`ClientProcess::next_line`], waiting at most `timeout`.
    pub fn next_line_within(&mut self, timeout: Duration) -> String {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => {
                self.transcript.push(line.clone());
                line
            }
            Err(error) => panic!("no line ({error}) after {:?}", self.transcript),
        }
    }

    /// The next line of standard output if one comes within a moment (`None` at its end).
    pub fn try_next_line(&mut self) -> Option<String> {
        let line = self.lines.recv_timeout(Duration::from_millis(200)).ok()?;
        self.transcript.push(line.clone());
        Some(line)
    }

    /// Asserts that the next lines of standard output are `expected`.
    pub fn expect_lines(&mut self, expected: &[&str]) {
        for line in expected {
            assert_eq!(self.next_line(), *line, "after {:?}", self.transcript);
        }
    }

    /// Waits for the process to exit and returns its code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        self.wait_exit_within(STEP)
    }

    /// Waits at most `timeout` for the process to exit and returns its code.
    pub fn wait_exit_within(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Its standard error is complete once the reader has seen the pipe's end.
                if let Some(reader) = self.stderr_reader.take() {
                    let _ = reader.join();
                }
                return status.code();
            }
            assert!(Instant::now() < deadline, "im-client did not exit");
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ClientProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw protocol client: La, and Lb once opened; every read bounded by [`STEP`].
pub struct Client {
    la: BufReader<TcpStream>,
    lb: Option<BufReader<TcpStream>>,
}

impl Client {
    /// Connects La.
    pub fn connect(addr: SocketAddr) -> Client {
        let la = TcpStream::connect_timeout(&addr, STEP).unwrap();
        la.set_read_timeout(Some(STEP)).unwrap();
        la.set_write_timeout(Some(STEP)).unwrap();
        Client {
            la: BufReader::new(la),
            lb: None,
        }
    }

    /// Writes raw bytes on La.
    pub fn send(&mut self, bytes: &[u8]) {
        self.la.get_mut().write_all(bytes).unwrap();
    }

    /// Reads one line from La, `\n` included.
    pub fn recv(&mut self) -> String {
        read_line(&mut self.la, "La")
    }

    /// Sends `line` and `\n` on La and reads the answer.
    pub fn request(&mut self, line: &str) -> String {
        self.send(format!("{line}\n").as_bytes());
        self.recv()
    }

    /// Listens on a free port, sends `/port`, and returns the answer; on `201`, Lb is kept.
    pub fn open_lb(&mut self) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let answer = self.request(&format!("/port {port}"));
        if answer == "201 Build connection successful\n" {
            // The server answers `201` once connected, so the connection is waiting already.
            listener.set_nonblocking(true).unwrap();
            let deadline = Instant::now() + STEP;
            let lb = loop {
                match listener.accept() {
                    Ok((lb, _)) => break lb,
                    Err(error) if error.kind() == ErrorKind::WouldBlock => {
                        assert!(Instant::now() < deadline, "no Lb connection");
                        thread::sleep(Duration::from_millis(2));
                    }
                    Err(error) => panic!("accept: {error}"),
                }
            };
            lb.set_nonblocking(false).unwrap();
            lb.set_read_timeout(Some(STEP)).unwrap();
            lb.set_write_timeout(Some(STEP)).unwrap();
            self.lb = Some(BufReader::new(lb));
        }
        answer
    }

    /// Reads one line from Lb, `\n` included.
    pub fn recv_lb(&mut self) -> String {
        read_line(self.lb.as_mut().expect("no Lb"), "Lb")
    }

    /// Takes Lb away, to be read on another thread.
    pub fn take_lb(&mut self) -> Option<BufReader<TcpStream>> {
        self.lb.take()
    }

    /// Writes raw bytes on Lb.
    pub fn send_lb(&mut self, bytes: &[u8]) {
        self.lb
            .as_mut()
            .expect("no Lb")
            .get_mut()
            .write_all(bytes)
            .unwrap();
    }

    /// Acknowledges the last delivery.
    pub fn ack(&mut self) {
        self.send_lb(b"302 Message receipt successful\n");
    }

    /// Closes Lb (both directions) at once.
    pub fn close_lb(&mut self) {
        if let Some(lb) = self.lb.take() {
            let _ = lb.get_ref().shutdown(Shutdown::Both);
        }
    }

    /// Asserts that the server closes La: end of file (or a reset) with nothing before it.
    pub fn expect_la_closed(&mut self) {
        expect_closed(&mut self.la, "La");
    }

    /// Asserts that the server closes Lb.
    pub fn expect_lb_closed(&mut self) {
        expect_closed(self.lb.as_mut().expect("no Lb"), "Lb");
    }
}

fn read_line(reader: &mut BufReader<TcpStream>, side: &str) -> String {
    let mut line = Vec::new();
    match reader.read_until(b'\n', &mut line) {
        Ok(_) if line.ends_with(b"\n") => String::from_utf8(line).unwrap(),
        Ok(_) => panic!("{side} closed after {:?}", String::from_utf8_lossy(&line)),
        Err(error) => panic!("{side}: {error} after {:?}", String::from_utf8_lossy(&line)),
    }
}

fn expect_closed(reader: &mut BufReader<TcpStream>, side: &str) {
    let mut rest = Vec::new();
    match reader.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(error) if error.kind() == ErrorKind::ConnectionReset => {}
        Err(error) => panic!("{side} not closed: {error}"),
    }
    assert!(
        rest.is_empty(),
        "{side} carried {:?} before closing",
        String::from_utf8_lossy(&rest)
    );
}

/// The assignment's appendix between three real `im-client` processes (`runtime`), jacky, bob
/// and michael connecting to these addresses (one server thrice, or three cluster nodes).
pub fn appendix_between_im_clients(runtime: Runtime, addrs: [SocketAddr; 3]) {
    appendix_between_im_clients_with(runtime, addrs, &[]);
}

/// As [`appendix_between_im_clients`], each `im-client` with these options too.
pub fn appendix_between_im_clients_with(
    runtime: Runtime,
    [jacky_at, bob_at, michael_at]: [SocketAddr; 3],
    options: &[&str],
) {
    let mut bob = ClientProcess::start_with(runtime, bob_at, options);
    bob.log_in("bob", "bob123");
    let mut michael = ClientProcess::start_with(runtime, michael_at, options);
    michael.log_in("michael", "michael123");
    let mut jacky = ClientProcess::start_with(runtime, jacky_at, options);
    jacky.log_in("jacky", "12345");
    let delivered = "303 Message delivery successful";

    jacky.run("/list", "301 jacky bob michael");
    jacky.run("/to bob Hello! Nice to meet you!", delivered);
    bob.expect_lines(&["/from jacky Hello! Nice to meet you!"]);
    jacky.run("/to michael Hi, Michael!", delivered);
    michael.expect_lines(&["/from jacky Hi, Michael!"]);
    michael.run("/to jacky Hi, Jacky!", delivered);
    jacky.expect_lines(&["/from michael Hi, Jacky!"]);
    jacky.run("/toall How about meeting at 3pm today?", delivered);
    bob.expect_lines(&["/broadcastfrom jacky How about meeting at 3pm today?"]);
    michael.expect_lines(&["/broadcastfrom jacky How about meeting at 3pm today?"]);
    bob.run("/to jacky Jacky, nice to meet you too!", delivered);
    jacky.expect_lines(&["/from bob Jacky, nice to meet you too!"]);
    bob.run("/toall OK.", delivered);
    jacky.expect_lines(&["/broadcastfrom bob OK."]);
    michael.expect_lines(&["/broadcastfrom bob OK."]);
    michael.run("/toall No problem.", delivered);
    jacky.expect_lines(&["/broadcastfrom michael No problem."]);
    bob.expect_lines(&["/broadcastfrom michael No problem."]);
    jacky.run("/exit", "310 Bye bye");
    assert_eq!(jacky.wait_exit(), Some(0), "{:?}", jacky.transcript);
    bob.run("/list", "301 bob michael");
}
