//! `im-check` against the real `im-server` and `im-client`, the Python doubles in
//! `tests/doubles/`, and doubles broken on purpose: the right checks fail, with clear diffs,
//! and every other check still passes. Everything runs on 127.0.0.1, every run is bounded in
//! time, and every process started here is killed when its guard is dropped.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{doubles, TIMINGS};

const IM_CHECK: &str = env!("CARGO_BIN_EXE_im-check");

/// The appendix's three users, the spare one the probe logs in as, and four more: with a
/// queue of [`common::MAX_QUEUE`], the least `im-check server` needs to run every check.
const USERS: &str = "# im-check test accounts\njacky 12345\nbob bob123\nmichael michael123\n\
                     spare spare123\nuser1 pass1\nuser2 pass2\nuser3 pass3\nuser4 pass4\n";

/// The checks of how a server starts (§5–§6): skipped unless im-check starts the server.
const SETUP_CHECKS: [&str; 6] = [
    "bad-arguments-exit-2",
    "help-lists-options",
    "listening-line",
    "passwords-not-logged",
    "users-file-errors",
    "users-file-format",
];

/// The longest any one im-check run may take here.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// A child process, killed and reaped on drop; what it wrote on stderr is kept for failures.
struct Guard {
    child: Child,
    what: String,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// Says when standard error has reached its end (the reader has all of it).
    stderr_ended: mpsc::Receiver<()>,
}

impl Guard {
    fn spawn(mut command: Command, what: &str) -> Guard {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {what}: {error}"));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = Arc::clone(&stderr);
        let (ended, stderr_ended) = mpsc::channel();
        // Drained all along, so a chatty process never blocks on a full pipe.
        thread::spawn(move || {
            let mut chunk = [0; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                sink.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
            let _ = ended.send(());
        });
        Guard {
            child,
            what: what.to_string(),
            stderr,
            stderr_ended,
        }
    }

    /// All of standard error, once the process has exited and the pipe has drained.
    fn final_stderr(&self) -> String {
        let _ = self.stderr_ended.recv_timeout(Duration::from_secs(5));
        self.stderr()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("--- {} stderr ---\n{}", self.what, self.stderr());
        }
    }
}

/// A users file in the temp dir, removed on drop.
struct UsersFile(PathBuf);

impl UsersFile {
    fn new() -> UsersFile {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "im-check-test-{}-{n}-users.txt",
            std::process::id()
        ));
        std::fs::write(&path, USERS).unwrap();
        UsersFile(path)
    }
}

impl Drop for UsersFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A server under test, listening on 127.0.0.1.
struct Server {
    port: u16,
    users: UsersFile,
    _process: Guard,
}

impl Server {
    /// Starts `program args… 0 <users> --bind 127.0.0.1 options…` and reads its
    /// `listening on <ip>:<port>` line.
    fn start(program: &str, args: &[&str], options: &[&str], what: &str) -> Server {
        let users = UsersFile::new();
        let mut command = Command::new(program);
        command
            .args(args)
            .arg("0")
            .arg(&users.0)
            .args(["--bind", "127.0.0.1"])
            .args(options);
        let mut process = Guard::spawn(command, what);
        let stdout = process.child.stdout.take().unwrap();
        let (first, line) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = first.send(lines.next());
            for _ in lines {}
        });
        let line = match line.recv_timeout(Duration::from_secs(20)) {
            Ok(Some(Ok(line))) => line,
            other => panic!(
                "{what}: no `listening on` line: {other:?}\n{}",
                process.stderr()
            ),
        };
        let port = line
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse().ok())
            .unwrap_or_else(|| panic!("{what}: first line {line:?}"));
        Server {
            port,
            users,
            _process: process,
        }
    }

    /// The real server, with the ack and login timeouts im-check is then told about.
    fn real() -> Server {
        Server::start(&common::im_server(), &[], &TIMINGS, "im-server")
    }

    /// The Python double, optionally with one of its bugs switched on.
    fn python(bug: Option<&str>) -> Server {
        let script = doubles().join("server.py");
        let script = script.to_str().unwrap();
        let mut options = TIMINGS.to_vec();
        if let Some(bug) = bug {
            options.extend(["--bug", bug]);
        }
        Server::start("python3", &[script], &options, "server.py")
    }

    /// The arguments that point `im-check server` at this server.
    fn check_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = ["server", "--host", "127.0.0.1", "--port"]
            .map(OsString::from)
            .to_vec();
        args.push(self.port.to_string().into());
        args.push("--users".into());
        args.push(self.users.0.clone().into());
        args.extend(TIMINGS.map(OsString::from));
        args
    }
}

/// What one im-check run printed, and how it ended.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The JSON report's checks: name → (status, reason).
    fn checks(&self) -> BTreeMap<String, (String, String)> {
        let report: serde_json::Value = serde_json::from_str(&self.stdout)
            .unwrap_or_else(|error| panic!("not JSON ({error}):\n{}", self.stdout));
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|check| {
                let field = |name: &str| check[name].as_str().unwrap_or_default().to_string();
                (field("name"), (field("status"), field("reason")))
            })
            .collect()
    }

    /// The names of the checks with this status.
    fn with_status(&self, status: &str) -> Vec<String> {
        self.checks()
            .into_iter()
            .filter(|(_, (s, _))| s == status)
            .map(|(name, _)| name)
            .collect()
    }

    fn reason(&self, check: &str) -> String {
        self.checks()
            .remove(check)
            .unwrap_or_else(|| panic!("no check {check}"))
            .1
    }
}

/// Runs im-check with `args` to the end (at most [`RUN_LIMIT`]).
fn im_check(args: impl IntoIterator<Item = impl Into<OsString>>) -> Run {
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut command = Command::new(IM_CHECK);
    command.args(&args);
    let mut process = Guard::spawn(command, "im-check");
    let mut stdout = process.child.stdout.take().unwrap();
    let (done, text) = mpsc::channel();
    thread::spawn(move || {
        let mut all = String::new();
        let _ = stdout.read_to_string(&mut all);
        let _ = done.send(all);
    });
    let deadline = Instant::now() + RUN_LIMIT;
    let status = loop {
        if let Some(status) = process.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "im-check {args:?} ran past {RUN_LIMIT:?}"
        );
        thread::sleep(Duration::from_millis(20));
    };
    let stdout = text
        .recv_timeout(Duration::from_secs(5))
        .unwrap_or_default();
    Run {
        code: status.code(),
        stdout,
        stderr: process.final_stderr(),
    }
}

/// Every check passed or was skipped with a reason, and the exit code says so.
fn assert_all_pass(run: &Run) {
    let failed = run.with_status("fail");
    assert!(failed.is_empty(), "failed: {failed:?}\n{}", run.stdout);
    for (name, (status, reason)) in run.checks() {
        assert!(
            status == "pass" || (status == "skip" && !reason.is_empty()),
            "{name}: {status} {reason:?}"
        );
    }
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
}

/// Exactly `expected` failed (the exit code says so), exactly `skipped` were skipped, and
/// every other check passed.
fn assert_fails_exactly(run: &Run, expected: &[&str], skipped: &[&str]) {
    assert_eq!(run.with_status("fail"), expected, "{}", run.stdout);
    assert_eq!(run.with_status("skip"), skipped, "{}", run.stdout);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
}

fn check_server(server: &Server, extra: &[&str]) -> Run {
    let mut args = server.check_args();
    args.extend(extra.iter().map(OsString::from));
    args.push("--json".into());
    im_check(args)
}

/// `im-check server --spawn … --one-server` for `server` (its program and arguments before
/// `{port} {users}`), told the timeouts and the queue it is started with; its own users file.
fn spawn_one_server(server: &str) -> Run {
    let mut args = common::spawn_one_server_args(server);
    args.push("--json".into());
    im_check(args)
}

#[test]
fn real_server_passes_every_check() {
    let server = Server::real();
    let run = check_server(&server, &[]);
    assert_all_pass(&run);
    // Told both timeouts and its queue, im-check can run every check but those that start
    // the server.
    assert_eq!(run.with_status("skip"), SETUP_CHECKS);
    // Started by im-check, every one.
    let run = spawn_one_server(&common::im_server());
    assert_all_pass(&run);
    assert_eq!(run.with_status("skip"), Vec::<String>::new());
}

#[test]
fn python_double_server_passes_every_check() {
    let server = Server::python(None);
    let run = check_server(&server, &[]);
    assert_all_pass(&run);
    assert_eq!(run.with_status("skip"), SETUP_CHECKS);
    let script = doubles().join("server.py");
    let run = spawn_one_server(&format!("python3 {}", script.display()));
    assert_all_pass(&run);
    assert_eq!(run.with_status("skip"), Vec::<String>::new());
}

#[test]
fn a_wrong_102_fails_exactly_the_checks_that_expect_102() {
    let server = Server::python(Some("auth-case"));
    let run = check_server(&server, &[]);
    assert_fails_exactly(
        &run,
        &[
            "login-already-online",
            "login-max-failures",
            "login-unknown-user",
            "login-wrong-password",
        ],
        &SETUP_CHECKS,
    );
    assert_eq!(
        run.reason("login-wrong-password"),
        r#"answer to jacky's "/login jacky 12345x": expected "102 Authentication failed\n", got "102 Authentication Failed\n""#
    );
}

#[test]
fn broadcast_instead_of_broadcastfrom_fails_exactly_the_toall_delivery_checks() {
    let server = Server::python(Some("broadcast-word"));
    let run = check_server(&server, &[]);
    assert_fails_exactly(
        &run,
        &[
            "deadlines-in-order",
            "toall-concurrent",
            "toall-delivered",
            "toall-no-lb-304",
            "toall-recipient-drops-304",
        ],
        &SETUP_CHECKS,
    );
    assert_eq!(
        run.reason("toall-concurrent"),
        r#"bob's Lb: expected "/broadcastfrom jacky How about meeting at 3pm today?\n", got "/broadcast jacky How about meeting at 3pm today?\n""#
    );
}

#[test]
fn a_toall_never_answered_times_out_in_each_toall_check_and_the_rest_pass() {
    let server = Server::python(Some("toall-silent"));
    let run = check_server(&server, &["--timeout", "2s"]);
    assert_fails_exactly(
        &run,
        &[
            "toall-alone-303",
            "toall-concurrent",
            "toall-delivered",
            "toall-no-lb-304",
            "toall-recipient-drops-304",
        ],
        &SETUP_CHECKS,
    );
    assert_eq!(
        run.reason("toall-alone-303"),
        r#"answer to jacky's "/toall How about meeting at 3pm today?": expected "303 Message delivery successful\n", got nothing within 2.0s"#
    );
}

#[test]
fn a_server_that_hangs_up_fails_with_a_reason_and_the_later_checks_are_not_run() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts every connection and closes it at once.
    thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
        }
    });
    let users = UsersFile::new();
    let run = im_check([
        OsString::from("server"),
        "--port".into(),
        port.to_string().into(),
        "--users".into(),
        users.0.clone().into(),
        "--only".into(),
        "login-ok".into(),
        "--only".into(),
        "to-delivered".into(),
        "--json".into(),
    ]);
    assert_eq!(run.code, Some(1));
    // It never answers anything: named after the first check, and the rest are not run.
    assert_eq!(run.with_status("fail"), ["login-ok"]);
    assert_eq!(run.with_status("not-run"), ["to-delivered"]);
    let reason = run.reason("login-ok");
    assert!(
        reason.starts_with(
            r#"answer to jacky's "/login jacky 12345": expected "101 Authentication successful\n", got "#
        ) && (reason.contains("end of stream") || reason.contains("reset")),
        "{reason}"
    );
}

#[test]
fn text_report_only_and_list() {
    let server = Server::python(None);
    let mut args = server.check_args();
    args.extend(["--only", "to-delivered"].map(OsString::from));
    let run = im_check(args);
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", run.stdout);
    assert!(
        lines[0].starts_with("im-check server 127.0.0.1:"),
        "{}",
        lines[0]
    );
    assert_eq!(lines[1], "PASS  to-delivered");
    assert_eq!(lines[2], "1 passed, 0 failed, 0 skipped");

    let list = im_check(["server", "--list"]);
    assert_eq!(list.code, Some(0));
    for name in [
        "login-ok",
        "ack-timeout-304",
        "serialised-per-recipient",
        "malformed-ready",
    ] {
        assert!(
            list.stdout.lines().any(|line| line.starts_with(name)),
            "{name} not in\n{}",
            list.stdout
        );
    }
    let list = im_check(["client", "--list"]);
    assert!(list.stdout.lines().any(|line| line.starts_with("ack-from")));
}

#[test]
fn bad_arguments_exit_2() {
    let users = UsersFile::new();
    let users = users.0.to_str().unwrap();
    for args in [
        vec!["server", "--users", users],
        vec![
            "server",
            "--port",
            "4000",
            "--users",
            users,
            "--only",
            "no-such-check",
        ],
        vec![
            "server",
            "--port",
            "4000",
            "--users",
            users,
            "--timeout",
            "5 fortnights",
        ],
        vec!["server", "--port", "4000", "--users", "/no/such/users/file"],
        vec!["client"],
        vec!["nonsense"],
    ] {
        let run = im_check(args.clone());
        assert_eq!(run.code, Some(2), "{args:?}: {}{}", run.stdout, run.stderr);
        assert!(!run.stderr.is_empty(), "{args:?}");
    }
}

#[test]
fn unknown_timeouts_are_skipped_with_a_reason_never_passed() {
    let server = Server::python(None);
    let users = server.users.0.clone();
    let run = im_check([
        OsString::from("server"),
        "--port".into(),
        server.port.to_string().into(),
        "--users".into(),
        users.into(),
        "--only".into(),
        "ack-timeout-304".into(),
        "--only".into(),
        "login-timeout".into(),
        "--json".into(),
    ]);
    assert_eq!(run.code, Some(0));
    assert_eq!(
        run.with_status("skip"),
        ["ack-timeout-304", "login-timeout"]
    );
    assert!(run.reason("ack-timeout-304").contains("--ack-timeout"));
}

#[test]
fn real_client_passes_every_check() {
    let run = im_check(["client", "--json", "--", &common::im_client()]);
    assert_all_pass(&run);
}

#[test]
fn python_double_client_passes_every_check() {
    let script = doubles().join("client.py");
    let run = im_check([
        OsString::from("client"),
        "--json".into(),
        "--".into(),
        "python3".into(),
        script.into(),
    ]);
    assert_all_pass(&run);
}

#[test]
fn a_client_acking_with_the_wrong_words_fails_the_ack_checks() {
    let script = doubles().join("client.py");
    let run = im_check([
        OsString::from("client"),
        "--json".into(),
        "--".into(),
        "python3".into(),
        script.into(),
        "--bug".into(),
        "ack-word".into(),
    ]);
    assert_fails_exactly(
        &run,
        &[
            "ack-broadcastfrom",
            "ack-from",
            "other-lb-line-acked",
            "overlong-lb-line-acked",
        ],
        &[],
    );
    assert_eq!(
        run.reason("ack-from"),
        r#"the client's answer on Lb to "/from bob Jacky, nice to meet you too!\n": expected "302 Message receipt successful\n", got "302 Message receipt success\n""#
    );
}

/// `im-check server --spawn` for the Python double with `bug`, on `checks` only, as JSON.
fn spawn_double(bug: &str, checks: &[&str], extra: &[&str]) -> Run {
    let spawn = format!(
        "python3 {} {{port}} {{users}} --bind 127.0.0.1 --bug {bug}",
        doubles().join("server.py").display()
    );
    let mut args: Vec<String> = vec!["server".into(), "--spawn".into(), spawn, "--json".into()];
    for check in checks {
        args.extend(["--only".into(), check.to_string()]);
    }
    args.extend(extra.iter().map(|arg| arg.to_string()));
    im_check(args)
}

/// The JSON report's checks as (name, status, whether the server stopped answering after it).
fn stops(run: &Run) -> Vec<(String, String, bool)> {
    let report: serde_json::Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|error| panic!("not JSON ({error}):\n{}", run.stdout));
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|check| {
            (
                check["name"].as_str().unwrap().to_string(),
                check["status"].as_str().unwrap().to_string(),
                check.get("stopped_answering").is_some(),
            )
        })
        .collect()
}

#[test]
fn a_lock_left_held_when_a_refused_login_closes_is_named_with_fresh_servers_and_one() {
    let checks = [
        "login-ok",
        "login-already-online",
        "list-order",
        "exit-ready",
    ];
    let bug = "duplicate-close-deadlock";
    // A fresh server per check: each check passes, and the probe, run before the server is
    // killed, sees the hang that the refused connection's end left behind.
    let run = spawn_double(bug, &checks, &[]);
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    let owned = |list: [(&str, &str, bool); 4]| {
        list.map(|(name, status, stopped)| (name.to_string(), status.to_string(), stopped))
            .to_vec()
    };
    assert_eq!(
        stops(&run),
        owned([
            ("login-ok", "pass", false),
            ("login-already-online", "pass", true),
            ("list-order", "pass", false),
            ("exit-ready", "pass", false),
        ])
    );
    // One server for all: named once, and the checks after it are not run (not failed).
    let run = spawn_double(bug, &checks, &["--one-server"]);
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    assert_eq!(
        stops(&run),
        owned([
            ("login-ok", "pass", false),
            ("login-already-online", "pass", true),
            ("list-order", "not-run", false),
            ("exit-ready", "not-run", false),
        ])
    );
    assert_eq!(
        run.reason("list-order"),
        "not run: the server stopped answering after login-already-online"
    );
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        report["stopped_answering_after"],
        serde_json::json!(["login-already-online"])
    );
    assert_eq!(
        (report["failed"].as_u64(), report["not_run"].as_u64()),
        (Some(0), Some(2))
    );
}
