//! What im-bench's tests share: the real `im-server` of the `simple-im` package, which
//! `cargo test` at the workspace's root builds beside these tests, and a certificate for it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The `im-server` binary to load, in this test's target directory (`target/<profile>/`,
/// beside `deps/`); it says how to build it when it is missing.
pub fn im_server() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let bin = dir.join("im-server");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build --bin im-server`, or run `cargo test` at the workspace root",
        bin.display()
    );
    bin
}

/// A self-signed certificate for `localhost` and 127.0.0.1, and its key, as PEM files in
/// `dir`: the server's `--tls-cert` and `--tls-key`, and the client's `--ca`.
pub struct SelfSigned {
    /// The certificate (also the CA to trust).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

impl SelfSigned {
    /// Makes them in `dir`, which must exist.
    pub fn new(dir: &Path) -> SelfSigned {
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let made = rcgen::generate_simple_self_signed(names).expect("a self-signed certificate");
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, made.cert.pem()).expect("cert.pem written");
        std::fs::write(&key, made.key_pair.serialize_pem()).expect("key.pem written");
        SelfSigned { cert, key }
    }

    /// The server's options for this certificate.
    pub fn server_options(&self) -> Vec<String> {
        let path = |path: &PathBuf| path.display().to_string();
        vec![
            "--tls-cert".to_owned(),
            path(&self.cert),
            "--tls-key".to_owned(),
            path(&self.key),
        ]
    }
}
