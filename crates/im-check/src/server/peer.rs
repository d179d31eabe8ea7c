//! The server under test as the checks' [`Peer`]: one that was started by someone else and is
//! only watched, or one that im-check starts itself from a command template, afresh for every
//! check unless told otherwise.
//!
//! After each check a probe asks whether the server still answers anything at all, so that a
//! server which deadlocks in one check is reported once, as such, instead of as a run of
//! unexplained failures in every later check.

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::{Account, ServerConfig};
use crate::outcome::{show_duration, Failure, Problem};
use crate::process::{group_command, kill_group, spawn_group, Captured, Template};
use crate::report::{Aftermath, Peer};

/// The users im-check gives a server it starts itself: the appendix's three, the fewest that
/// most checks need, and a spare one that only the probe logs in as.
pub const DEFAULT_USERS: &str = "jacky 12345\nbob bob123\nmichael michael123\nspare spare123\n";

/// [`DEFAULT_USERS`], then `max_queue` more (`user1 pass1`, …): with the appendix's three, the
/// senders and the recipient that the queue-full check fills a queue of `max_queue` with.
pub fn default_users(max_queue: usize) -> String {
    let mut users = DEFAULT_USERS.to_string();
    for n in 1..=max_queue {
        users.push_str(&format!("user{n} pass{n}\n"));
    }
    users
}

/// How long the probe waits for a new connection and for any reply to its `/login`: far more
/// than a working server needs, even on a loaded machine.
const PROBE_WAIT: Duration = Duration::from_secs(2);

/// How long the probe waits after a check, whose connections are closed by then: time for the
/// server to notice those ends and clean up, which is where a lock left held shows.
const SETTLE: Duration = Duration::from_millis(100);

/// How long a killed server's last output may take to reach us.
const OUTPUT_SETTLE: Duration = Duration::from_millis(500);

/// Starts for two checks in a row that failed: the server is taken not to start at all, and
/// later checks fail at once instead of each waiting out `--start-timeout`.
const GIVE_UP_AFTER: u32 = 2;

/// Whether the server `config` describes still answers: a new connection's `/login` must get
/// any reply at all within [`PROBE_WAIT`]; why not otherwise.
///
/// It logs in as a real account (the spare one, else the last), not as an unknown user: a
/// server often looks a name up before it takes the lock that a broken one left held, so
/// only a real login goes the whole way. A `101` is followed by `/exit`.
pub fn probe(config: &ServerConfig) -> Result<(), String> {
    thread::sleep(SETTLE);
    let account = config.probe_account().unwrap_or_else(|| Account {
        name: config.unknown_user(),
        password: b"nosuchpassword".to_vec(),
    });
    let addr = config.addr_for(&account);
    let wait = show_duration(PROBE_WAIT);
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_WAIT).map_err(|error| {
        if matches!(error.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) {
            format!("a new connection to {addr} was not accepted within {wait}")
        } else {
            format!("a new connection to {addr} failed: {error}")
        }
    })?;
    let _ = stream.set_nodelay(true);
    let mut login = b"/login ".to_vec();
    login.extend_from_slice(&account.name);
    login.push(b' ');
    login.extend_from_slice(&account.password);
    login.push(b'\n');
    let user = String::from_utf8_lossy(&account.name);
    let _ = stream.set_write_timeout(Some(PROBE_WAIT));
    stream
        .write_all(&login)
        .map_err(|error| format!("a new connection could not send /login: {error}"))?;
    let answer = read_some(&mut stream, Instant::now() + PROBE_WAIT)
        .map_err(|why| format!("a new connection's /login {user} got no answer{why}"))?;
    if answer.starts_with(b"101 ") {
        // Logged in: log out again, so the next check finds the spare user offline. The
        // `310` is enough; whether La then closes is exit-ready's business.
        let until = Instant::now() + PROBE_WAIT;
        if stream.write_all(b"/exit\n").is_ok() {
            let mut after = Vec::new();
            while let Ok(more) = read_some(&mut stream, until) {
                after.extend_from_slice(&more);
                if after.windows(4).any(|w| w == b"310 ") {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// What arrives on `stream` before `until`: at least a byte, or why nothing did.
fn read_some(stream: &mut TcpStream, until: Instant) -> Result<Vec<u8>, String> {
    let mut chunk = [0u8; 512];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(" within {}", show_duration(PROBE_WAIT)));
        }
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut chunk) {
            Ok(0) => return Err(": the server closed the connection".into()),
            Ok(n) => return Ok(chunk[..n].to_vec()),
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => return Err(format!(": {error}")),
        }
    }
}

/// Whether a server found not answering after `check` is gone for good: the reason each later
/// check is not run.
fn not_run(stopped_after: Option<&str>) -> Result<(), Problem> {
    match stopped_after {
        Some(check) => Err(Problem::NotRun(format!(
            "not run: the server stopped answering after {check}"
        ))),
        None => Ok(()),
    }
}

/// A server someone else started: the same for every check, probed after each one. Once it
/// is found not answering, that is reported once and the later checks are not run.
pub struct Watched {
    config: Arc<ServerConfig>,
    stopped_after: Option<String>,
}

impl Watched {
    /// Watches the server `config` describes.
    pub fn new(config: ServerConfig) -> Self {
        Watched {
            config: Arc::new(config),
            stopped_after: None,
        }
    }
}

impl Peer<ServerConfig> for Watched {
    fn before(&mut self, _check: &str) -> Result<Arc<ServerConfig>, Problem> {
        not_run(self.stopped_after.as_deref())?;
        Ok(Arc::clone(&self.config))
    }

    fn after(&mut self, check: &str) -> Aftermath {
        let mut aftermath = Aftermath::default();
        if self.stopped_after.is_none() {
            if let Err(why) = probe(&self.config) {
                self.stopped_after = Some(check.to_string());
                aftermath.stopped_answering = Some(why);
            }
        }
        aftermath
    }
}

/// How im-check starts a server: `--spawn`'s command, and what its placeholders stand for.
#[derive(Clone, Debug)]
pub struct Launch {
    /// The server's command: `{port}`, `{users}` and `{dir}` are filled in.
    pub command: Template,
    /// A prefix put before the command (a sandbox), with the same placeholders.
    pub wrap: Option<Template>,
    /// The users file given to the server as `{users}`.
    pub users: PathBuf,
    /// The directory the server runs in, also given as `{dir}`.
    pub dir: PathBuf,
    /// How long the server may take to listen on its port.
    pub start_timeout: Duration,
}

/// A server im-check starts itself on a free port of 127.0.0.1: afresh for every check
/// (`fresh`), or once for all of them.
pub struct Spawned {
    launch: Launch,
    base: ServerConfig,
    fresh: bool,
    running: Option<Running>,
    /// Starts that failed in a row, and the last one's reason.
    failed_starts: u32,
    last_failure: String,
    /// What a server that failed to start printed, for the check it was started for.
    start_output: Option<String>,
    /// With one server for all checks: the check after which it stopped answering.
    stopped_after: Option<String>,
    /// A users file im-check wrote for these servers, removed when they are done.
    _users_file: Option<tempfile::TempPath>,
}

/// Why a server did not start, and what it printed.
enum Start {
    /// Another program listened on its port meanwhile: worth another try elsewhere.
    PortTaken(String, String),
    /// It did not start.
    Failed(String, String),
}

/// Ports tried again after another program took one first.
const PORT_TRIES: u32 = 3;

struct Running {
    child: Child,
    captured: Captured,
    config: Arc<ServerConfig>,
}

impl Spawned {
    /// Starts servers with `launch`; `base` says everything else about them (its addresses
    /// are replaced by each server's own).
    pub fn new(launch: Launch, mut base: ServerConfig, fresh: bool) -> Self {
        base.launch = Some(launch.clone());
        Spawned {
            launch,
            base,
            fresh,
            running: None,
            failed_starts: 0,
            last_failure: String::new(),
            start_output: None,
            stopped_after: None,
            _users_file: None,
        }
    }

    /// This peer, keeping `file` (the users file its servers get) until it is dropped.
    pub fn owning(mut self, file: Option<tempfile::TempPath>) -> Self {
        self._users_file = file;
        self
    }

    /// Starts a server on a free port; a start that failed because another program took the
    /// port first (im-check runs in parallel) is tried again on another one.
    fn start(&mut self) -> Result<Running, (String, String)> {
        let mut tries = 0;
        loop {
            let port = free_port().map_err(|why| (why, String::new()))?;
            match self.start_on(port) {
                Err(Start::PortTaken(..)) if tries < PORT_TRIES => tries += 1,
                Err(Start::PortTaken(why, output) | Start::Failed(why, output)) => {
                    return Err((why, output))
                }
                Ok(running) => return Ok(running),
            }
        }
    }

    fn start_on(&mut self, port: u16) -> Result<Running, Start> {
        let port_text = port.to_string();
        let dir = self.launch.dir.to_string_lossy().into_owned();
        let users = self.launch.users.to_string_lossy().into_owned();
        let values = [
            ("port", port_text.as_str()),
            ("users", users.as_str()),
            ("dir", dir.as_str()),
        ];
        let mut argv = self
            .launch
            .wrap
            .as_ref()
            .map(|wrap| wrap.fill(&values))
            .unwrap_or_default();
        argv.extend(self.launch.command.fill(&values));
        let Some(mut command) = group_command(&argv) else {
            return Err(Start::Failed(
                "the server command is empty".into(),
                String::new(),
            ));
        };
        command
            .current_dir(&self.launch.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = spawn_group(&mut command).map_err(|error| {
            let shown = argv[0].to_string_lossy();
            Start::Failed(
                format!("cannot start the server {shown:?}: {error}"),
                String::new(),
            )
        })?;
        let group = i32::try_from(child.id()).unwrap_or(-1);
        let mut captured = Captured::start(&mut child);
        let started = Instant::now();
        let mut taken = false;
        let outcome = loop {
            if let Ok(Some(status)) = child.try_wait() {
                // Perhaps because another program had the port.
                taken |= listener_on(port, group) == Listener::Other;
                break Err(format!(
                    "the server exited ({status}) before it listened on 127.0.0.1:{port}"
                ));
            }
            match listener_on(port, group) {
                Listener::Ours => break Ok(()),
                Listener::Other => taken = true,
                Listener::None => {}
            }
            if started.elapsed() >= self.launch.start_timeout {
                break Err(format!(
                    "the server did not listen on 127.0.0.1:{port} within {} (is {{port}} in \
                     --spawn's command, and does the server use it?)",
                    show_duration(self.launch.start_timeout)
                ));
            }
            thread::sleep(Duration::from_millis(20));
        };
        match outcome {
            Ok(()) => {
                let mut config = self.base.clone();
                config.addrs = vec![SocketAddr::from((Ipv4Addr::LOCALHOST, port))];
                Ok(Running {
                    child,
                    captured,
                    config: Arc::new(config),
                })
            }
            Err(why) => {
                kill_group(&mut child);
                let output = captured.text(OUTPUT_SETTLE);
                Err(if taken {
                    Start::PortTaken(why, output)
                } else {
                    Start::Failed(why, output)
                })
            }
        }
    }

    /// Whether the running server still answers; why not otherwise.
    fn still_answering(running: &mut Running) -> Result<(), String> {
        if let Ok(Some(status)) = running.child.try_wait() {
            return Err(format!("the server exited ({status})"));
        }
        probe(&running.config)
    }
}

impl Peer<ServerConfig> for Spawned {
    fn before(&mut self, _check: &str) -> Result<Arc<ServerConfig>, Problem> {
        not_run(self.stopped_after.as_deref())?;
        if let Some(running) = &self.running {
            return Ok(Arc::clone(&running.config));
        }
        if self.failed_starts >= GIVE_UP_AFTER {
            return Err(Problem::Fail(Failure::new(format!(
                "not run: the server failed to start for {GIVE_UP_AFTER} checks in a row \
                 (the last time: {})",
                self.last_failure
            ))));
        }
        match self.start() {
            Ok(running) => {
                self.failed_starts = 0;
                let config = Arc::clone(&running.config);
                self.running = Some(running);
                Ok(config)
            }
            Err((why, output)) => {
                self.failed_starts += 1;
                self.last_failure = why.clone();
                self.start_output = Some(output);
                Err(Problem::Fail(Failure::new(why)))
            }
        }
    }

    fn after(&mut self, check: &str) -> Aftermath {
        if self.stopped_after.is_some() {
            // This check was not run; the server was reported already.
            return Aftermath::default();
        }
        let Some(running) = self.running.as_mut() else {
            return Aftermath {
                stopped_answering: None,
                output: self.start_output.take(),
            };
        };
        let mut aftermath = Aftermath::default();
        // A fresh server is probed too, before it is killed: a hang in the teardown of the
        // check's connections shows only then.
        if let Err(why) = Self::still_answering(running) {
            if !self.fresh {
                self.stopped_after = Some(check.to_string());
            }
            aftermath.stopped_answering = Some(why);
        }
        if self.fresh {
            if let Some(mut running) = self.running.take() {
                kill_group(&mut running.child);
                aftermath.output = Some(running.captured.text(OUTPUT_SETTLE));
            }
        } else {
            aftermath.output = Some(running.captured.take_new());
        }
        aftermath
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(running) = self.running.as_mut() {
            kill_group(&mut running.child);
        }
    }
}

/// A port of 127.0.0.1 (and of every address) that nothing uses now, below the kernel's
/// ephemeral range so that no outgoing connection takes it before the server binds it.
/// Successive calls step through the range, so parallel submissions never share a port and
/// none is reused while an earlier server's connections may still linger on it.
pub(super) fn free_port() -> Result<u16, String> {
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Several im-check runs at once (tests in parallel) start at different places.
    let offset = std::process::id().wrapping_mul(7919);
    for _ in 0..200 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let Ok(port) = u16::try_from(FIRST + n.wrapping_add(offset) % COUNT) else {
            continue;
        };
        let free = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok()
            && TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok();
        if free {
            return Ok(port);
        }
    }
    Err("cannot find a free TCP port on 127.0.0.1".into())
}

/// Who listens on a TCP port.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Listener {
    /// A process of the server's group.
    Ours,
    /// Some other program.
    Other,
    /// Nobody.
    None,
}

/// Who listens on TCP `port`: a process of the process group `group`, or another program.
/// Read from the kernel's tables, without connecting, so the server never sees a connection
/// that closes at once (some would take it for a client), and a program that took the port
/// first (another im-check) is never taken for the server. Where the tables cannot be read, a
/// connection to 127.0.0.1 tells, and whoever accepts it counts as the server.
pub(super) fn listener_on(port: u16, group: i32) -> Listener {
    let mut readable = false;
    let mut sockets = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        readable = true;
        sockets.extend(
            text.lines()
                .skip(1)
                .filter_map(|row| listening_inode(row, port)),
        );
    }
    if !readable {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let answers = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok();
        return if answers {
            Listener::Ours
        } else {
            Listener::None
        };
    }
    if sockets.is_empty() {
        return Listener::None;
    }
    let links: Vec<String> = sockets
        .iter()
        .map(|inode| format!("socket:[{inode}]"))
        .collect();
    let Ok(processes) = fs::read_dir("/proc") else {
        return Listener::Ours;
    };
    for process in processes.flatten() {
        let pid = process.file_name();
        let Some(pid) = pid
            .to_str()
            .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if process_group(pid) != Some(group) {
            continue;
        }
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            fs::read_link(fd.path())
                .is_ok_and(|target| links.iter().any(|link| target.as_os_str() == link.as_str()))
        });
        if holds {
            return Listener::Ours;
        }
    }
    Listener::Other
}

/// The inode of the socket a row of /proc/net/tcp describes, if it listens on `port`.
fn listening_inode(row: &str, port: u16) -> Option<u64> {
    // The state column: 0A is LISTEN.
    const LISTEN: &str = "0A";
    let fields: Vec<&str> = row.split_whitespace().collect();
    let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
    let local_port = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
    (*state == LISTEN && local_port == port)
        .then(|| inode.parse().ok())
        .flatten()
}

/// The process group of process `pid` (or `self`), from /proc.
fn process_group(pid: &str) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (name) state ppid pgrp …`; the name may hold spaces and parentheses.
    let (_, rest) = stat.rsplit_once(") ")?;
    rest.split_whitespace().nth(2)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_port_is_seen_with_its_owner_and_a_free_one_is_not() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a port");
        let port = listener.local_addr().expect("its address").port();
        let ours = process_group("self").expect("our process group");
        assert_eq!(listener_on(port, ours), Listener::Ours);
        // No process is in group 0: the listener is someone else's.
        assert_eq!(listener_on(port, 0), Listener::Other);
        drop(listener);
        assert_eq!(listener_on(port, ours), Listener::None);
        let free = free_port().expect("a free port");
        assert!((20_000..32_000).contains(&free));
        assert_ne!(free_port().expect("another free port"), free);
    }

    #[test]
    fn a_port_another_program_took_first_is_tried_again_elsewhere() {
        let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a port");
        let port = taken.local_addr().expect("its address").port();
        let server = "python3 -c \"import socket, sys, time; s = socket.socket(); \
                      s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); time.sleep(30)\" {port}";
        let launch = Launch {
            command: Template::parse(server).expect("a valid template"),
            wrap: None,
            users: PathBuf::from("/dev/null"),
            dir: std::env::temp_dir(),
            start_timeout: Duration::from_secs(20),
        };
        let base = ServerConfig {
            addrs: Vec::new(),
            accounts: Vec::new(),
            hashed_accounts: 0,
            ack_timeout: None,
            login_timeout: None,
            max_login_failures: 5,
            max_line: 65536,
            max_queue: 1024,
            launch: None,
        };
        let mut spawned = Spawned::new(launch, base, true);
        // Our listener is not the server's, so its failing bind is not the submission's fault.
        assert!(matches!(spawned.start_on(port), Err(Start::PortTaken(..))));
        let mut running = spawned.start().map_err(|(why, _)| why).expect("a server");
        assert_ne!(running.config.addrs[0].port(), port);
        kill_group(&mut running.child);
    }

    #[test]
    fn the_probe_tells_a_silent_server_from_one_that_answers() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a port");
        let addr = listener.local_addr().expect("its address");
        let (probed, done) = std::sync::mpsc::channel::<()>();
        let answering = thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("the probe");
            stream
                .write_all(b"102 Authentication failed\n")
                .expect("a reply");
            // Accepts the second probe and says nothing, until the probe has given up: a close
            // before that (a loaded machine may run the probe late) would be a reset instead.
            let (silent, _) = listener.accept().expect("the second probe");
            let _ = done.recv_timeout(PROBE_WAIT * 10);
            drop(silent);
        });
        let config = |addr| ServerConfig {
            addrs: vec![addr],
            accounts: Vec::new(),
            hashed_accounts: 0,
            ack_timeout: None,
            login_timeout: None,
            max_login_failures: 5,
            max_line: 65536,
            max_queue: 1024,
            launch: None,
        };
        assert_eq!(probe(&config(addr)), Ok(()));
        let why = probe(&config(addr)).expect_err("a silent server");
        let _ = probed.send(());
        assert!(why.contains("no answer within 2s"), "{why}");
        answering.join().expect("the fake server");
        let closed = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a port");
        let closed_addr = closed.local_addr().expect("its address");
        drop(closed);
        assert!(probe(&config(closed_addr)).is_err());
    }
}
