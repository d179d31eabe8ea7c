//! The server checks: docs/protocol.md §1–§3, one small function each, a file per section, all
//! listed in [`CHECKS`].
//!
//! Every check logs in its own users (the first ones of the users file), works over raw
//! sockets, compares each reply byte for byte with what the crate's formatters produce, and
//! logs its users out at the end: a [`Session`](session::Session) sends `/exit` when it is
//! dropped, whether the check passed or stopped at its first failure, so the next check starts
//! with nobody online.

mod abrupt;
mod delivery;
mod ends;
mod lines;
mod login;
pub mod peer;
mod port;
mod queue;
mod ready;
mod session;
mod setup;
mod toall;
mod wire_basics;

use std::net::SocketAddr;
use std::time::Duration;

use crate::outcome::Problem;
use crate::registry::{self, Registry, Section};

/// One account of the users file.
#[derive(Clone, Debug)]
pub struct Account {
    /// The user name.
    pub name: Vec<u8>,
    /// The password.
    pub password: Vec<u8>,
}

impl ServerConfig {
    /// Where `account` connects: the addresses taken in turn by its place in the users file.
    pub fn addr_for(&self, account: &Account) -> SocketAddr {
        let place = self.accounts.iter().position(|a| a.name == account.name);
        self.addrs[place.unwrap_or(0) % self.addrs.len()]
    }

    /// The account the probe logs in as between checks: the fourth of the users file (no
    /// check uses it), else the last.
    pub fn probe_account(&self) -> Option<Account> {
        self.accounts
            .get(MOST_USERS)
            .or(self.accounts.last())
            .cloned()
    }

    /// A user name that is not in the users file.
    pub fn unknown_user(&self) -> Vec<u8> {
        let taken = |name: &[u8]| self.accounts.iter().any(|a| a.name == name);
        let mut name = b"nosuchuser".to_vec();
        let mut n = 0u32;
        while taken(&name) {
            n += 1;
            name = format!("nosuchuser{n}").into_bytes();
        }
        name
    }
}

/// What im-check knows about the server under test.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Where it listens: one address, or one per node of a cluster. Users are spread over
    /// them in file order, so the checks with two or more users cross nodes.
    pub addrs: Vec<SocketAddr>,
    /// The accounts of its users file with plain passwords, in file order.
    pub accounts: Vec<Account>,
    /// How many more accounts it has whose password is stored hashed (unusable here).
    pub hashed_accounts: usize,
    /// Its `--ack-timeout`, if the user told us.
    pub ack_timeout: Option<Duration>,
    /// Its `--login-timeout`, if the user told us.
    pub login_timeout: Option<Duration>,
    /// Its `--max-login-failures`.
    pub max_login_failures: u32,
    /// Its `--max-line`.
    pub max_line: usize,
    /// Its `--max-queue`.
    pub max_queue: usize,
    /// How im-check starts it, when it does (`--spawn`, `grade`): the checks of how a server
    /// starts (§5–§6) start more of their own.
    pub launch: Option<peer::Launch>,
}

/// The messages that may wait for one recipient unless the server is told otherwise
/// (docs/protocol.md §3).
pub const DEFAULT_MAX_QUEUE: usize = 1024;

/// The most users one check logs in.
const MOST_USERS: usize = 3;

/// One server check.
type Check = registry::Check<ServerConfig>;

/// What a server check runs with.
type Ctx = registry::Ctx<ServerConfig>;

/// Every server check, a file per section of docs/protocol.md, in its order.
pub const CHECKS: Registry<ServerConfig> = &[
    section("§1 wire basics", wire_basics::CHECKS),
    section("§3 unauthenticated", login::CHECKS),
    section("§3 authenticated", port::CHECKS),
    section("§3 ready", ready::CHECKS),
    section("§3 ready", toall::CHECKS),
    section("§3 delivery over Lb", delivery::CHECKS),
    section("§3 delivery over Lb", queue::CHECKS),
    section("§3 ends of a session", ends::CHECKS),
    section("§3 ends of a session", abrupt::CHECKS),
    // Last, once all of the above has been seen to work: what a Ready connection must refuse.
    section("§3 ready", ready::REFUSED),
    // Only where im-check starts the server: the users file and the command line.
    section("§5-6 users file and command line", setup::CHECKS),
];

const fn section(title: &'static str, checks: &'static [Check]) -> Section<ServerConfig> {
    Section { title, checks }
}

/// How long "nothing arrives" is watched for: long enough for a server on a loaded machine to
/// have sent what it wrongly sends, short enough to keep the run quick.
const QUIET: Duration = Duration::from_millis(200);

/// How long a check waits, after a user's connection dropped, for the server to notice.
const NOTICE: Duration = Duration::from_secs(2);

/// How long a dropped session waits for the server to answer its `/exit` and close.
const LOGOUT_WAIT: Duration = Duration::from_secs(1);

/// Chat text used by the checks (the appendix's).
const HELLO: &[u8] = b"Hello! Nice to meet you!";
const MEETING: &[u8] = b"How about meeting at 3pm today?";

/// The server's `what` timeout, as `--<option>` gave it, or SKIP: without it, a check could
/// not tell a timeout from a hang.
fn told_timeout(told: Option<Duration>, what: &str, option: &str) -> Result<Duration, Problem> {
    told.ok_or_else(|| {
        Problem::Skip(format!(
            "the server's {what} timeout is unknown: pass --{option} <its value> to check it"
        ))
    })
}
