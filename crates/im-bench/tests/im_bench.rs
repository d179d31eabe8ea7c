//! Smoke test of `im-bench`: each scenario with tiny bounds against a real `im-server`.
//!
//! The counts must come out exact (every request answered `303`, every delivery seen on Lb)
//! and nothing may fail. Every child process is killed on the way out, and every wait is
//! bounded, so a broken server fails the test instead of hanging it.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

const BENCH: &str = env!("CARGO_BIN_EXE_im-bench");
/// The longest one im-bench run may take; each is bounded far below by `--count`.
const RUN_LIMIT: Duration = Duration::from_secs(20);

/// Kills the child when dropped, whether the test passed or panicked.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A temporary directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.subsec_nanos())
            .unwrap_or_default();
        let path =
            std::env::temp_dir().join(format!("im-bench-smoke-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `command` to completion within `limit`; returns its exit success, stdout and stderr.
fn run_bounded(command: &mut Command, limit: Duration) -> (bool, String, String) {
    let mut child = KillOnDrop(
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Both pipes are drained on their own threads so a full pipe cannot stall the child.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.0.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.0.stderr.take().unwrap()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "{command:?} ran longer than {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = stdout.join().unwrap();
    let stderr = stderr.join().unwrap();
    (status.success(), stdout, stderr)
}

/// Writes a users file of `count` accounts with `im-bench gen-users`.
fn generate_users(dir: &Path, count: usize) -> PathBuf {
    let (ok, users, stderr) = run_bounded(
        Command::new(BENCH).args(["gen-users", &count.to_string()]),
        RUN_LIMIT,
    );
    assert!(ok, "gen-users failed: {stderr}");
    assert_eq!(
        users.lines().filter(|l| l.starts_with("user")).count(),
        count
    );
    let path = dir.join("users.txt");
    std::fs::write(&path, users).unwrap();
    path
}

/// Starts `im-server` on a free port; returns it and the port from its first stdout line.
fn start_server(users: &Path) -> (KillOnDrop, u16) {
    start_server_on(users, "smol")
}

/// As [`start_server`], with `--runtime runtime`.
fn start_server_on(users: &Path, runtime: &str) -> (KillOnDrop, u16) {
    start_server_with(users, runtime, &[])
}

/// As [`start_server_on`], with more options.
fn start_server_with(users: &Path, runtime: &str, options: &[String]) -> (KillOnDrop, u16) {
    let mut command = Command::new(common::im_server());
    command
        .args(["0".as_ref(), users.as_os_str()])
        .args(["--bind", "127.0.0.1", "--log", "warn", "--runtime", runtime])
        .args(options);
    start(&mut command)
}

/// Spawns `command` (a server on port 0); returns it and the port from its first stdout line.
fn start(command: &mut Command) -> (KillOnDrop, u16) {
    let mut server = KillOnDrop(
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {command:?}: {err}")),
    );
    let stdout = server.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the server printed no `listening on` line within 10 s");
    let port = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|address| address.rsplit(':').next())
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line from the server: {line:?}"));
    (server, port)
}

/// Runs one im-bench scenario with `--json` and returns its report.
fn bench(port: u16, users: &Path, args: &[&str]) -> Value {
    let mut command = Command::new(BENCH);
    command
        .args(args)
        .args(["--port", &port.to_string(), "--json"])
        .arg("--users")
        .arg(users)
        .args(["--timeout", "5s"]);
    let (ok, stdout, stderr) = run_bounded(&mut command, RUN_LIMIT);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|err| {
        panic!("im-bench {args:?} printed no JSON ({err}): {stdout}{stderr}")
    });
    assert_eq!(
        report["failures"]["total"], 0,
        "im-bench {args:?} saw failures: {report:#}"
    );
    assert!(ok, "im-bench {args:?} failed: {stderr}");
    report
}

#[test]
fn every_scenario_counts_exactly_and_nothing_fails() {
    let dir = TempDir::new();
    let users = generate_users(&dir.0, 80);
    let (server, port) = start_server(&users);

    let to = bench(
        port,
        &users,
        &[
            "to",
            "--pairs",
            "5",
            "--count",
            "200",
            "--warmup",
            "0s",
            "--duration",
            "10s",
        ],
    );
    assert_eq!(to["setup"]["opened"], 10, "{to:#}");
    let load = &to["load"];
    assert_eq!(load["requests"], 200, "{to:#}");
    assert_eq!(load["delivered"], 200, "{to:#}");
    assert_eq!(load["deliveries"], 200, "{to:#}");
    assert_eq!(load["received"], 200, "{to:#}");
    assert_eq!(load["latency_us"]["count"], 200, "{to:#}");
    assert!(load["deliveries_per_second"].as_f64().unwrap() > 0.0);

    // Other accounts than `to` used, so nothing depends on how fast those went offline.
    let toall = bench(
        port,
        &users,
        &[
            "toall",
            "--recipients",
            "10",
            "--first-user",
            "10",
            "--count",
            "20",
            "--warmup",
            "0s",
            // System-picked Lb ports, as the real client does (the default is a fixed range).
            "--lb-ports",
            "0",
        ],
    );
    let load = &toall["load"];
    assert_eq!(toall["setup"]["opened"], 11, "{toall:#}");
    assert_eq!(load["fanout"], 10, "{toall:#}");
    assert_eq!(load["delivered"], 20, "{toall:#}");
    assert_eq!(load["deliveries"], 200, "{toall:#}");
    assert_eq!(load["received"], 200, "{toall:#}");

    let pid = server.0.id().to_string();
    let sessions = bench(
        port,
        &users,
        &[
            "sessions",
            "--count",
            "40",
            "--first-user",
            "30",
            "--server-pid",
            &pid,
        ],
    );
    assert_eq!(sessions["setup"]["requested"], 40, "{sessions:#}");
    assert_eq!(sessions["setup"]["opened"], 40, "{sessions:#}");
    assert!(sessions.get("load").is_none());
    assert!(
        sessions["server_memory"]["rss_kib"].as_u64().unwrap_or(0) > 0,
        "{sessions:#}"
    );
    drop(server);
}

/// The bare relays BENCHMARKS.md measures the runtimes against (`examples/mio_relay.rs`,
/// `examples/uring_relay.rs`, built by `cargo test` beside im-bench) carry both loads exactly:
/// a ratio to a relay that dropped or doubled messages would mean nothing.
#[test]
fn the_bare_relays_count_exactly() {
    let examples = Path::new(BENCH)
        .parent()
        .map(|dir| dir.join("examples"))
        .unwrap();
    let mut relays = vec!["mio_relay"];
    if cfg!(target_os = "linux") {
        relays.push("uring_relay");
    }
    let dir = TempDir::new();
    let users = generate_users(&dir.0, 40);
    for relay in relays {
        let path = examples.join(relay);
        assert!(
            path.exists(),
            "{} is missing: `cargo test` builds the examples (a single `--test` does not)",
            path.display()
        );
        let (server, port) = start(Command::new(&path).arg("0"));
        let to = bench(
            port,
            &users,
            &["to", "--pairs", "5", "--count", "300", "--warmup", "0s"],
        );
        let load = &to["load"];
        assert_eq!(load["requests"], 300, "{relay}: {to:#}");
        assert_eq!(load["deliveries"], 300, "{relay}: {to:#}");
        assert_eq!(load["received"], 300, "{relay}: {to:#}");
        let toall = bench(
            port,
            &users,
            &[
                "toall",
                "--recipients",
                "12",
                "--first-user",
                "10",
                "--count",
                "25",
                "--warmup",
                "0s",
            ],
        );
        let load = &toall["load"];
        assert_eq!(load["delivered"], 25, "{relay}: {toall:#}");
        assert_eq!(load["deliveries"], 300, "{relay}: {toall:#}");
        assert_eq!(load["received"], 300, "{relay}: {toall:#}");
        drop(server);
    }
}

#[test]
fn a_wrong_password_is_a_login_failure_not_a_hang() {
    let dir = TempDir::new();
    let users = generate_users(&dir.0, 4);
    let (_server, port) = start_server(&users);
    let wrong = dir.0.join("wrong.txt");
    std::fs::write(&wrong, "user0 not-the-password\nuser1 pw1\n").unwrap();
    let mut command = Command::new(BENCH);
    command
        .args(["to", "--pairs", "1", "--count", "5", "--json"])
        .args(["--port", &port.to_string(), "--timeout", "5s"])
        .arg("--users")
        .arg(&wrong);
    let (ok, stdout, stderr) = run_bounded(&mut command, RUN_LIMIT);
    assert!(!ok, "a failed login must make im-bench exit non-zero");
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|err| panic!("no JSON ({err}): {stdout}{stderr}"));
    assert_eq!(report["failures"]["login"], 1, "{report:#}");
    assert_eq!(report["load"]["requests"], 0, "{report:#}");
}

/// Fails the test unless `perf stat` may count system calls here (it needs perf and the
/// tracepoints, which usually means root): the tests that need it are ignored unless asked for.
fn require_perf() {
    let counts = Command::new("perf")
        .args(["stat", "-e", "raw_syscalls:sys_enter", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        counts,
        "perf cannot count system calls here: install perf (apt-get install linux-perf) and run as root"
    );
}

/// A `to` run (and a `toall` one) with `--server-pid`: the server's system calls per delivery.
fn syscalls_per_delivery(runtime: &str, perf: bool) -> (Value, Value) {
    let dir = TempDir::new();
    let users = generate_users(&dir.0, 20);
    let (server, port) = start_server_on(&users, runtime);
    let pid = server.0.id().to_string();
    let mut args = vec!["--server-pid", &pid, "--warmup", "0s", "--duration", "10s"];
    if perf {
        args.push("--perf-syscalls");
    }
    let to = [&["to", "--pairs", "5", "--count", "300"][..], &args].concat();
    let toall = [
        &[
            "toall",
            "--recipients",
            "8",
            "--first-user",
            "10",
            "--count",
            "40",
        ][..],
        &args,
    ]
    .concat();
    let to = bench(port, &users, &to)["load"]["syscalls"].clone();
    let toall = bench(port, &users, &toall)["load"]["syscalls"].clone();
    drop(server);
    (to, toall)
}

/// Without perf, what `/proc/PID/io` counts: the read/write family of calls per delivery.
#[test]
fn io_calls_per_delivery_are_counted_for_to_and_toall() {
    let (to, toall) = syscalls_per_delivery("smol", false);
    for calls in [&to, &toall] {
        // Present even when no read/write-family call was made (smol sends and receives).
        let read_write = calls["read_write_per_delivery"].as_f64();
        assert!(read_write.is_some_and(|n| n >= 0.0), "{calls:#}");
    }
}

#[test]
#[ignore = "needs perf allowed to count system calls (root)"]
fn system_calls_per_delivery_are_counted_for_to_and_toall() {
    require_perf();
    let (to, toall) = syscalls_per_delivery("smol", true);
    for calls in [&to, &toall] {
        let read_write = calls["read_write_per_delivery"].as_f64();
        assert!(read_write.is_some_and(|n| n >= 0.0), "{calls:#}");
        // At the very least the delivery's write and its acknowledgement's read, and not
        // dozens: a readiness reactor's path makes about four to six per delivery.
        let all = calls["all_per_delivery"].as_f64().unwrap_or(0.0);
        assert!((1.0..40.0).contains(&all), "{calls:#}");
        let sendto = calls["by_name_per_delivery"]["sendto"]
            .as_f64()
            .unwrap_or(0.0);
        assert!((0.5..5.0).contains(&sendto), "{calls:#}");
        assert!(read_write.unwrap_or(0.0) <= all, "{calls:#}");
    }
    // `/to`: the `/from` on Lb and the `303` on La are two sockets, two sends at least.
    let sendto = to["by_name_per_delivery"]["sendto"].as_f64().unwrap_or(0.0);
    assert!(sendto >= 1.9, "{to:#}");
}

/// Behind im-bench's `uring` feature, which builds im-server with `--runtime uring`.
#[cfg(all(target_os = "linux", feature = "uring"))]
#[test]
#[ignore = "needs perf allowed to count system calls (root)"]
fn the_uring_runtime_moves_bytes_without_a_system_call_per_delivery() {
    require_perf();
    let (to, toall) = syscalls_per_delivery("uring", true);
    for calls in [&to, &toall] {
        let by_name = &calls["by_name_per_delivery"];
        let socket_calls = ["sendto", "recvfrom", "epoll_ctl"]
            .map(|name| by_name[name].as_f64().unwrap_or(0.0))
            .iter()
            .sum::<f64>();
        // The ring carries every read and write: what is left is a few stray calls.
        assert!(socket_calls < 0.2, "{calls:#}");
        let enters = by_name["io_uring_enter"].as_f64().unwrap_or(0.0);
        assert!(enters > 0.0, "{calls:#}");
        let all = calls["all_per_delivery"].as_f64().unwrap_or(f64::MAX);
        assert!(all < 6.0, "{calls:#}");
    }
    // A `/toall` to 8: its sends go in together, and the acknowledgements (which arrive one
    // by one when the load is this light) cost at most a call each; smol's path pays a send,
    // a receive and a re-arm per recipient (3.4 to 3.6 measured).
    let all = toall["all_per_delivery"].as_f64().unwrap_or(f64::MAX);
    assert!(all < 2.0, "{toall:#}");
}

/// `--tls`: every session speaks TLS on La and Lb (a server with a certificate answers a plain
/// client's first line with nothing it could read, so a count that comes out exact means the
/// bytes went through TLS), and the load is counted as over plain TCP.
#[test]
fn tls_sessions_count_exactly() {
    let dir = TempDir::new();
    let users = generate_users(&dir.0, 20);
    let cert = common::SelfSigned::new(&dir.0);
    let (_server, port) = start_server_with(&users, "smol", &cert.server_options());
    let ca = cert.cert.display().to_string();
    let tls = ["--tls", "--ca", &ca];
    let load = ["--count", "100", "--warmup", "0s", "--duration", "10s"];
    let to = bench(
        port,
        &users,
        &[&["to", "--pairs", "3"][..], &tls, &load].concat(),
    );
    assert_eq!(to["setup"]["opened"], 6, "{to:#}");
    assert_eq!(to["load"]["deliveries"], 100, "{to:#}");
    assert_eq!(to["load"]["received"], 100, "{to:#}");
    let toall = bench(
        port,
        &users,
        &[
            &["toall", "--recipients", "4", "--first-user", "6"][..],
            &tls,
            &load,
        ]
        .concat(),
    );
    assert_eq!(toall["load"]["deliveries"], 400, "{toall:#}");

    // Without --tls the same server is never logged in to.
    let mut command = Command::new(BENCH);
    command
        .args(["to", "--pairs", "1", "--count", "1", "--first-user", "12"])
        .args(["--port", &port.to_string(), "--json", "--timeout", "2s"])
        .arg("--users")
        .arg(&users);
    let (ok, stdout, _) = run_bounded(&mut command, RUN_LIMIT);
    assert!(!ok, "a plain im-bench logged in to a TLS server: {stdout}");
}

/// `login-flood` for a couple of seconds: the guesses and answers add up, the real user (not
/// the one guessed at) gets in, and the server outlives it. Nothing is asserted about how many
/// guesses the server answers or lets through: that is its policy, not im-bench's.
#[test]
fn login_flood_counts_add_up() {
    let dir = TempDir::new();
    let users = dir.0.join("users.txt");
    std::fs::write(&users, "alice alice-pw\nbob bob-pw\n").unwrap();
    // Its log has a line for every connection it closes, thousands here.
    let (server, port) = start(
        Command::new(common::im_server())
            .args(["0".as_ref(), users.as_os_str()])
            .args(["--bind", "127.0.0.1", "--log", "error"])
            .stderr(Stdio::null()),
    );
    let pid = server.0.id().to_string();
    let mut command = Command::new(BENCH);
    command
        .args(["login-flood", "--port", &port.to_string(), "--json"])
        .args(["--target", "alice", "--password", "alice-pw"])
        .args(["--attackers", "6", "--sources", "2", "--right-every", "5"])
        .args(["--real", "bob:bob-pw", "--server-pid", &pid])
        .args(["--duration", "2500ms", "--timeout", "5s"]);
    let (ok, stdout, stderr) = run_bounded(&mut command, RUN_LIMIT);
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|err| panic!("no JSON ({err}): {stdout}{stderr}"));
    assert!(ok, "im-bench login-flood failed: {stderr}\n{report:#}");
    assert_eq!(report["scenario"], "login-flood", "{report:#}");
    let flood = &report["flood"];
    assert_eq!(
        flood["sources"],
        serde_json::json!(["127.0.0.2", "127.0.0.3"])
    );
    let count = |value: &Value| {
        value
            .as_u64()
            .unwrap_or_else(|| panic!("not a count: {value} in {report:#}"))
    };

    let a = &flood["attempts"];
    let answered = count(&a["answered"]);
    assert!(answered > 0, "{report:#}");
    assert_eq!(
        answered,
        count(&a["answered_101"]) + count(&a["answered_102"]) + count(&a["answered_other"]),
        "{report:#}"
    );
    // Every guess written is answered, unanswered or still waiting at the end, once.
    assert_eq!(
        count(&a["sent"]),
        answered + count(&a["unanswered_closed"]) + count(&a["in_flight_at_end"]),
        "{report:#}"
    );
    assert_eq!(count(&a["latency_us"]["count"]), answered, "{report:#}");
    assert_eq!(count(&a["wrong_let_in"]), 0, "{report:#}");
    assert_eq!(count(&a["answered_101"]), count(&a["right_let_in"]));
    assert!(count(&a["right_let_in"]) <= count(&a["right_answered"]));
    assert!(count(&a["right_answered"]) <= count(&a["right_sent"]));
    // One guess in five is right: give or take the guesses sent again after an unanswered
    // one, and a guess per attacker drawn but not sent when the run ended.
    let right = count(&a["right_sent"]);
    let resent = count(&a["unanswered_closed"]);
    let sent = count(&a["sent"]);
    assert!(
        right >= ((sent - resent) / 5).saturating_sub(7),
        "{report:#}"
    );
    assert!(right <= sent / 5 + 3 + resent, "{report:#}");
    let seconds = flood["seconds"].as_f64().unwrap_or(0.0);
    assert!((2.0..6.0).contains(&seconds), "{report:#}");
    // The guessing starts at --attack-after (1 s by default): the rate is over the rest.
    let rate = a["answered_per_second"].as_f64().unwrap_or(0.0);
    assert!(
        (rate - answered as f64 / (seconds - 1.0)).abs() < 1.0,
        "{report:#}"
    );

    let c = &flood["connections"];
    assert!(count(&c["opened"]) >= 1, "{report:#}");
    assert_eq!(count(&c["closed_after_101"]), count(&a["answered_101"]));
    assert!(
        count(&c["closed_by_server"]) + count(&c["closed_after_101"]) <= count(&c["opened"]),
        "{report:#}"
    );

    // bob logs in at 0 s, 1 s and 2 s, from another address than the guessers, as another user.
    let real = &flood["real_users"][0];
    assert_eq!(real["user"], "bob", "{report:#}");
    let logins = count(&real["logins"]);
    assert!(logins >= 1, "{report:#}");
    assert!(count(&real["answered_101"]) >= 1, "{report:#}");
    assert_eq!(
        count(&real["answered_101"]) + count(&real["in_flight_at_end"]),
        logins,
        "{report:#}"
    );
    assert_eq!(
        count(&real["latency_us"]["count"]),
        count(&real["answered_101"])
    );

    let memory = &report["server_memory"];
    assert_eq!(memory["alive_at_end"], true, "{report:#}");
    assert!(count(&memory["sampled_max_rss_kib"]) > 0, "{report:#}");
    assert!(count(&memory["peak_rss_kib"]) > 0, "{report:#}");
    assert!(memory.get("killed_at_rss_kib").is_none(), "{report:#}");
    drop(server);
}
