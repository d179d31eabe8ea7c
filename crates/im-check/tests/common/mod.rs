//! What im-check's tests share: the Python doubles, and the real server and client of the
//! `simple-im` package, which `cargo test` at the workspace's root builds beside these tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

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
