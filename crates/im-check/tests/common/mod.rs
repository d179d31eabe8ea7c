//! What im-check's tests share: the Python doubles, and the real server and client of the
//! `simple-im` package, which `cargo test` at the workspace's root builds beside these tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The servers' `--max-queue` here: a queue the queue-full check fills with few users.
pub const MAX_QUEUE: &str = "4";

/// What every server here runs with, and im-check is told: short timeouts, so that the checks
/// that wait them out finish quickly, and the small queue.
pub const TIMINGS: [&str; 6] = [
    "--ack-timeout",
    "500ms",
    "--login-timeout",
    "1s",
    "--max-queue",
    MAX_QUEUE,
];

/// `im-check server`'s arguments to start `server` (a command line, before its port and users
/// file) itself, once for every check (`--one-server`), with [`TIMINGS`].
pub fn spawn_one_server_args(server: &str) -> Vec<String> {
    let spawn = format!(
        "{server} {{port}} {{users}} --bind 127.0.0.1 {}",
        TIMINGS.join(" ")
    );
    let mut args = vec![
        "server".to_string(),
        "--spawn".into(),
        spawn,
        "--one-server".into(),
    ];
    args.extend(TIMINGS.map(String::from));
    args
}

/// `tests/doubles/`: the Python server and client that im-check is tested against.
pub fn doubles() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/doubles")
}

/// The `im-server` binary to check.
pub fn im_server() -> String {
    workspace_bin("im-server")
}

/// The `im-client` binary to check.
pub fn im_client() -> String {
    workspace_bin("im-client")
}

/// The binary `name` of another package of this workspace, in this test's target directory
/// (`target/<profile>/<name>`, beside `deps/`); it says how to build it when it is missing.
fn workspace_bin(name: &str) -> String {
    let exe = std::env::current_exe().expect("the test's own path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build --bin {name}`, or run `cargo test` at the workspace root",
        bin.display()
    );
    bin.display().to_string()
}
