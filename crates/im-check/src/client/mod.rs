//! The client checks: docs/protocol.md §4, one small function each, a file per group of its steps,
//! all listed in [`CHECKS`].
//!
//! Each check starts the client command afresh with `127.0.0.1 <port>` appended, where
//! `<port>` is a scripted fake server of its own: the check types on the client's standard
//! input, reads its standard output, and plays the server's side of La and Lb byte for byte.

mod commands;
mod exit;
mod login;
mod process;
mod rig;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::registry::{self, Registry, Section};

/// What im-check knows about the client under test.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The command and its arguments; `<server-ip> <server-port>` are appended.
    pub command: Vec<OsString>,
    /// Where it runs (im-check's own directory if not given).
    pub dir: Option<PathBuf>,
}

/// One client check.
type Check = registry::Check<ClientConfig>;

/// What a client check runs with.
type Ctx = registry::Ctx<ClientConfig>;

/// Every client check, in the order of docs/protocol.md §4.
pub const CHECKS: Registry<ClientConfig> = &[
    Section {
        title: "§4.1-3 login and Lb",
        checks: login::CHECKS,
    },
    Section {
        title: "§4.4-5 commands and deliveries",
        checks: commands::CHECKS,
    },
    Section {
        title: "§4.6-7 leaving",
        checks: exit::CHECKS,
    },
];

/// "Within a second or two" (docs/protocol.md §4.7 says a second; this leaves room for a slow start).
const EXIT_WITHIN: Duration = Duration::from_secs(2);

/// The account the checks log in with (the appendix's).
const USER: &[u8] = b"jacky";
const PASSWORD: &[u8] = b"12345";
/// A second account, for the retry after `102`.
const OTHER_USER: &[u8] = b"bob";
const OTHER_PASSWORD: &[u8] = b"bob123";

/// `bytes` without a trailing `\n`: what a person types, or a line as printed.
fn without_newline(bytes: &[u8]) -> Vec<u8> {
    bytes.strip_suffix(b"\n").unwrap_or(bytes).to_vec()
}
