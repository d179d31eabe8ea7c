//! The users file of PROTOCOL.md §5: one `username password` a line.

use std::collections::HashMap;
use std::fmt;

use crate::protocol::is_token;

/// The accounts the server accepts, by user name.
#[derive(Clone, Default)]
pub struct Users {
    passwords: HashMap<Vec<u8>, Vec<u8>>,
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

impl Users {
    /// Parses a users file's bytes. Blank lines and lines starting with `#` are skipped;
    /// a `\r` before `\n` is dropped so files written on Windows load as well.
    pub fn parse(text: &[u8]) -> Result<Self, UsersError> {
        let mut users = Users::default();
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
            if users.passwords.contains_key(user) {
                return Err(error("this user name is given twice"));
            }
            users.passwords.insert(user.to_vec(), password.to_vec());
        }
        Ok(users)
    }

    /// Adds (or replaces) one account; for tests and embedders that build users in code.
    pub fn insert(&mut self, user: &[u8], password: &[u8]) {
        self.passwords.insert(user.to_vec(), password.to_vec());
    }

    /// Whether `user` exists and `password` is theirs. The comparison takes the same time
    /// wherever the first difference is, so timing does not reveal a password's prefix.
    pub fn verify(&self, user: &[u8], password: &[u8]) -> bool {
        match self.passwords.get(user) {
            Some(expected) => constant_time_eq(expected, password),
            None => false,
        }
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

    #[test]
    fn debug_never_shows_passwords() {
        let users = Users::parse(b"jacky secret\n").unwrap();
        assert!(!format!("{users:?}").contains("secret"));
    }
}
