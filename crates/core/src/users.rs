//! The users file of docs/protocol.md §5: one `username password` a line.
//!
//! A password may also be stored hashed, as an argon2id PHC string (`$argon2id$v=19$…`,
//! made by `im-server --hash-password`), so the file need not hold passwords in the clear.
//!
//! Logins take the same time whoever asks: once the file holds any hash, an unknown user and a
//! plain-password user are checked against a dummy hash made with the same parameters (the
//! costliest in the file), so the answer's delay does not tell which names exist or which
//! passwords are hashed. A file without hashes does no argon2 work at all.

use std::collections::HashMap;
use std::fmt;

use crate::hashed;
#[cfg(feature = "argon2")]
pub use crate::hashed::{hash_password, hash_password_with, HashError, Params};
use crate::protocol::is_token;

/// The accounts the server accepts, by user name.
#[derive(Clone, Default)]
pub struct Users {
    passwords: HashMap<Vec<u8>, Secret>,
    /// A hash of a password nobody has, with the costliest parameters of the file's hashes;
    /// `None` when the file has none. Logins that need no hash verify against it, so that they
    /// cost what a hashed login costs.
    dummy: Option<String>,
}

/// How one password is kept.
#[derive(Clone)]
enum Secret {
    Plain(Vec<u8>),
    /// A PHC string already checked to parse, so verifying cannot meet a malformed one.
    Argon2(String),
}

/// The prefix that marks a stored password as an argon2 hash rather than a plain password.
const ARGON2_PREFIX: &[u8] = b"$argon2";

impl Secret {
    fn parse(stored: &[u8]) -> Result<Secret, &'static str> {
        if !stored.starts_with(ARGON2_PREFIX) {
            return Ok(Secret::Plain(stored.to_vec()));
        }
        let text = std::str::from_utf8(stored).map_err(|_| "the argon2 hash is not text")?;
        hashed::check(text)?;
        Ok(Secret::Argon2(text.to_owned()))
    }

    fn verify(&self, password: &[u8]) -> bool {
        match self {
            Secret::Plain(expected) => constant_time_eq(expected, password),
            Secret::Argon2(phc) => hashed::verify(phc, password),
        }
    }
}

/// Why a users file was refused: the 1-based line number and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsersError {
    /// The 1-based line number.
    pub line: usize,
    /// What is wrong with that line.
    pub reason: &'static str,
}

impl fmt::Display for UsersError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for UsersError {}

/// One account line of a users file: the user name and the password as written there (plain,
/// or an argon2 hash). Tools that log in as the file's users (im-check, im-bench) need these in
/// file order, which [`Users`] does not keep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// The user name.
    pub user: Vec<u8>,
    /// The password as stored: plain, or an argon2 PHC string.
    pub stored: Vec<u8>,
}

impl Account {
    /// Whether the password is stored as a hash, so it cannot be typed from the file.
    pub fn is_hashed(&self) -> bool {
        self.stored.starts_with(ARGON2_PREFIX)
    }
}

/// Parses a users file's accounts in file order, with every rule of docs/protocol.md §5: blank
/// lines and lines starting with `#` are skipped; a `\r` before `\n` is dropped so files
/// written on Windows load as well; anything else must be two tokens, the name not given before,
/// and a stored hash must be a valid argon2 PHC string.
pub fn accounts(text: &[u8]) -> Result<Vec<Account>, UsersError> {
    let mut accounts = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (index, raw) in text.split(|&b| b == b'\n').enumerate() {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.is_empty() || line.starts_with(b"#") {
            continue;
        }
        let error = |reason| UsersError {
            line: index + 1,
            reason,
        };
        let mut fields = line.splitn(2, |&b| b == b' ');
        let (Some(user), Some(password)) = (fields.next(), fields.next()) else {
            return Err(error("expected `username password`"));
        };
        if !is_token(user) || !is_token(password) {
            return Err(error(
                "expected `username password`: two words, one space between",
            ));
        }
        if !seen.insert(user) {
            return Err(error("this user name is given twice"));
        }
        Secret::parse(password).map_err(error)?;
        accounts.push(Account {
            user: user.to_vec(),
            stored: password.to_vec(),
        });
    }
    Ok(accounts)
}

impl Users {
    /// Parses a users file's bytes (see [`accounts`] for the rules).
    pub fn parse(text: &[u8]) -> Result<Self, UsersError> {
        let mut users = Users::default();
        for account in accounts(text)? {
            // `accounts` has checked every stored password, so this cannot fail; a failure
            // would still refuse the account rather than panic.
            if let Ok(secret) = Secret::parse(&account.stored) {
                users.passwords.insert(account.user, secret);
            }
        }
        users.dummy = hashed::dummy(users.passwords.values().filter_map(|secret| match secret {
            Secret::Argon2(phc) => Some(phc.as_str()),
            Secret::Plain(_) => None,
        }));
        Ok(users)
    }

    /// Adds (or replaces) one account; for tests and embedders that build users in code.
    /// The password is kept as given, never taken for a hash.
    pub fn insert(&mut self, user: &[u8], password: &[u8]) {
        self.passwords
            .insert(user.to_vec(), Secret::Plain(password.to_vec()));
    }

    /// Looks a login up. A hashed password comes back as a [`PasswordCheck`] to run off the
    /// event loop, because argon2 takes tens of milliseconds by design and would stall every
    /// other client meanwhile. When the file holds any hash, so do an unknown user and a plain
    /// password (verifying the dummy hash as well), so that every login costs the same; in a
    /// file without hashes they are settled at once, plain ones in constant time.
    pub fn check(&self, user: &[u8], password: &[u8]) -> Verdict {
        let (phc, expected) = match (self.passwords.get(user), &self.dummy) {
            (Some(Secret::Argon2(phc)), _) => (phc, Expected::Hashed),
            (None, None) => return Verdict::Settled(false),
            (Some(Secret::Plain(expected)), None) => {
                return Verdict::Settled(constant_time_eq(expected, password))
            }
            (None, Some(dummy)) => (dummy, Expected::Nobody),
            (Some(Secret::Plain(expected)), Some(dummy)) => {
                (dummy, Expected::Plain(expected.clone()))
            }
        };
        Verdict::Deferred(PasswordCheck {
            phc: phc.clone(),
            password: password.to_vec(),
            expected,
        })
    }

    /// Whether `user` exists and `password` is theirs. Plain passwords are compared in time
    /// that does not depend on where they differ, so timing does not reveal a prefix; hashed
    /// ones are verified with argon2.
    pub fn verify(&self, user: &[u8], password: &[u8]) -> bool {
        self.passwords
            .get(user)
            .is_some_and(|secret| secret.verify(password))
    }

    /// Whether `user` has an account.
    pub fn contains(&self, user: &[u8]) -> bool {
        self.passwords.contains_key(user)
    }

    /// How many accounts there are.
    pub fn len(&self) -> usize {
        self.passwords.len()
    }

    /// Whether there are no accounts.
    pub fn is_empty(&self) -> bool {
        self.passwords.is_empty()
    }
}

/// What [`Users::check`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Known at once: whether the login is right.
    Settled(bool),
    /// The password is stored hashed: run this check (off the event loop) to know.
    Deferred(PasswordCheck),
}

/// One argon2 verification, handed to the runtime so that its deliberate slowness (tens of
/// milliseconds) is spent off the event loop. It holds the offered password: never log it.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordCheck {
    /// The hash to verify: the user's, or the dummy.
    phc: String,
    password: Vec<u8>,
    expected: Expected,
}

/// What decides a [`PasswordCheck`]'s verdict.
#[derive(Clone, PartialEq, Eq)]
enum Expected {
    /// The user's own hash.
    Hashed,
    /// The user's plain password; the hash is the dummy, verified only to spend the time.
    Plain(Vec<u8>),
    /// No such user: always wrong; the hash is the dummy, as for `Plain`.
    Nobody,
}

impl PasswordCheck {
    /// Runs the verification: whether the offered password is the user's. It costs one
    /// argon2 verification whichever the user is.
    pub fn run(&self) -> bool {
        let hashed = hashed::verify(&self.phc, &self.password);
        match &self.expected {
            Expected::Hashed => hashed,
            Expected::Plain(expected) => {
                // Kept, so that the dummy's verification cannot be optimized away.
                std::hint::black_box(hashed);
                constant_time_eq(expected, &self.password)
            }
            Expected::Nobody => {
                std::hint::black_box(hashed);
                false
            }
        }
    }
}

/// Never shows the password.
impl fmt::Debug for PasswordCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordCheck")
    }
}

/// Never shows passwords, so a `Users` can be logged safely.
impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Users")
            .field("count", &self.passwords.len())
            .finish()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(feature = "argon2")]
    use crate::hashed::DUMMY_PASSWORD;
    #[cfg(feature = "argon2")]
    use argon2::PasswordHash;

    #[test]
    fn parses_accounts_and_skips_comments_and_blank_lines() {
        let users = Users::parse(b"# team\njacky 12345\r\n\nbob pw\n").unwrap();
        assert_eq!(users.len(), 2);
        assert!(users.verify(b"jacky", b"12345"));
        assert!(users.verify(b"bob", b"pw"));
        assert!(!users.verify(b"bob", b"pw2"));
        assert!(!users.verify(b"nobody", b"pw"));
    }

    #[test]
    fn names_the_line_of_each_error() {
        let cases: [(&[u8], usize); 5] = [
            (b"a b\nonlyone\n", 2),
            (b"a b c\n", 1),
            (b"a  b\n", 1),
            (b"\n\na b\na c\n", 4),
            (b"a b \n", 1),
        ];
        for (text, line) in cases {
            let err = Users::parse(text).unwrap_err();
            assert_eq!(err.line, line, "{:?}", String::from_utf8_lossy(text));
        }
    }

    #[cfg(feature = "argon2")]
    #[test]
    fn hashed_passwords_verify_and_plain_ones_keep_working() {
        let hash = hash_password(b"s3cret", b"0123456789abcdef").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        let text = format!("jacky {hash}\nbob plain\n");
        let users = Users::parse(text.as_bytes()).unwrap();
        assert!(users.verify(b"jacky", b"s3cret"));
        assert!(!users.verify(b"jacky", b"s3cre"));
        assert!(!users.verify(b"jacky", hash.as_bytes()));
        assert!(users.verify(b"bob", b"plain"));
        // With a hash in the file, plain passwords and unknown users are argon2 checks too.
        assert!(deferred(users.check(b"bob", b"plain")).run());
        assert!(!deferred(users.check(b"nobody", b"plain")).run());
        let Verdict::Deferred(check) = users.check(b"jacky", b"s3cret") else {
            panic!("a hashed password is checked off the loop");
        };
        assert!(check.run());
        assert!(!format!("{check:?}").contains("s3cret"));
        let Verdict::Deferred(wrong) = users.check(b"jacky", b"nope") else {
            panic!("a hashed password is checked off the loop");
        };
        assert!(!wrong.run());
    }

    #[test]
    fn a_malformed_hash_is_refused_at_load_with_its_line() {
        for bad in [
            &b"$argon2id$nonsense"[..],
            b"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ",
        ] {
            let mut text = b"a b\njacky ".to_vec();
            text.extend_from_slice(bad);
            let err = Users::parse(&text).unwrap_err();
            assert_eq!(err.line, 2);
            assert!(err.reason.contains("argon2"));
        }
    }

    #[cfg(feature = "argon2")]
    #[test]
    fn accounts_keep_file_order_and_say_which_are_hashed() {
        let hash = hash_password(b"pw", b"0123456789abcdef").unwrap();
        let text = format!("# c\nzed a\r\n\nabe {hash}\nmia b\n");
        let listed = accounts(text.as_bytes()).unwrap();
        let names: Vec<&[u8]> = listed.iter().map(|a| a.user.as_slice()).collect();
        assert_eq!(names, [&b"zed"[..], b"abe", b"mia"]);
        assert_eq!(listed[0].stored, b"a");
        assert!(listed[1].is_hashed() && !listed[2].is_hashed());
    }

    #[cfg(feature = "argon2")]
    /// An argon2id hash of `password` with these costs (KiB of memory, passes), cheaper than
    /// `--hash-password`'s so that tests can time many.
    fn hash_with(password: &[u8], m_cost: u32, t_cost: u32) -> String {
        let params = Params::new(m_cost, t_cost, 1, None).unwrap();
        hash_password_with(password, b"0123456789abcdef", params).unwrap()
    }

    #[cfg(feature = "argon2")]
    fn deferred(verdict: Verdict) -> PasswordCheck {
        match verdict {
            Verdict::Deferred(check) => check,
            Verdict::Settled(_) => panic!("expected an argon2 check"),
        }
    }

    #[test]
    fn without_a_hash_in_the_file_no_login_does_argon2_work() {
        let users = Users::parse(b"jacky 12345\nbob bob123\n").unwrap();
        assert!(users.dummy.is_none());
        assert_eq!(users.check(b"jacky", b"12345"), Verdict::Settled(true));
        assert_eq!(users.check(b"jacky", b"1234"), Verdict::Settled(false));
        assert_eq!(users.check(b"nobody", b"12345"), Verdict::Settled(false));
    }

    #[cfg(feature = "argon2")]
    #[test]
    fn with_a_hash_in_the_file_every_login_is_an_argon2_check_with_the_right_verdict() {
        let hash = hash_with(b"s3cret", 256, 1);
        let users = Users::parse(format!("jacky {hash}\nbob bob123\n").as_bytes()).unwrap();
        let cases: [(&[u8], &[u8], bool); 6] = [
            (b"jacky", b"s3cret", true),
            (b"jacky", b"bob123", false),
            (b"bob", b"bob123", true),
            (b"bob", b"s3cret", false),
            (b"nobody", b"bob123", false),
            (b"nobody", DUMMY_PASSWORD, false),
        ];
        for (user, password, right) in cases {
            let check = deferred(users.check(user, password));
            assert_eq!(check.run(), right, "{}", user.escape_ascii());
        }
        // The dummy's own password does not log anyone in, even where it is the stored one.
        let users = Users::parse(
            format!("jacky {hash}\nbob {}\n", DUMMY_PASSWORD.escape_ascii()).as_bytes(),
        )
        .unwrap();
        assert!(deferred(users.check(b"bob", DUMMY_PASSWORD)).run());
        assert!(!deferred(users.check(b"jacky", DUMMY_PASSWORD)).run());
    }

    #[cfg(feature = "argon2")]
    #[test]
    fn the_dummy_hash_has_the_costliest_parameters_in_the_file() {
        let cheap = hash_with(b"a", 256, 1);
        let costly = hash_with(b"b", 512, 3);
        let middle = hash_with(b"c", 1024, 1);
        let text = format!("x {cheap}\ny {costly}\nz {middle}\nw plain\n");
        let users = Users::parse(text.as_bytes()).unwrap();
        let dummy = users.dummy.as_deref().unwrap();
        let dummy = PasswordHash::new(dummy).unwrap();
        let costly = PasswordHash::new(&costly).unwrap();
        assert_eq!(dummy.algorithm, costly.algorithm);
        assert_eq!(dummy.version, costly.version);
        assert_eq!(dummy.params, costly.params);
        assert_eq!(dummy.hash.map(|h| h.len()), costly.hash.map(|h| h.len()));
        assert_ne!(dummy.salt, costly.salt);
    }

    #[test]
    fn debug_never_shows_passwords() {
        let users = Users::parse(b"jacky secret\n").unwrap();
        assert!(!format!("{users:?}").contains("secret"));
    }
}
