//! Passwords stored hashed: argon2id PHC strings (`$argon2id$v=19$…`), checked when a users
//! file is loaded, verified at login, made by `im-server --hash-password`.
//!
//! Without the `argon2` feature a hash in a users file is refused when the file is loaded, so
//! [`verify`] and [`dummy`] never meet one.

#[cfg(feature = "argon2")]
use std::fmt;

#[cfg(feature = "argon2")]
pub use argon2::Params;
#[cfg(feature = "argon2")]
use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
#[cfg(feature = "argon2")]
use password_hash::{Salt, SaltString};

/// Checks that `text` is an argon2 PHC string this build can verify.
#[cfg(feature = "argon2")]
pub(crate) fn check(text: &str) -> Result<(), &'static str> {
    let invalid = "the argon2 hash is not a valid PHC string";
    let hash = PasswordHash::new(text).map_err(|_| invalid)?;
    let known = argon2::Algorithm::new(hash.algorithm.as_str()).is_ok();
    if !known || hash.salt.is_none() || hash.hash.is_none() {
        return Err(invalid);
    }
    Ok(())
}

/// Refuses every hash: this build has no argon2.
#[cfg(not(feature = "argon2"))]
pub(crate) fn check(_: &str) -> Result<(), &'static str> {
    Err("an argon2 hash, but this build has no argon2 (the `argon2` feature)")
}

/// Whether `password` matches the PHC string `phc`; the work is set by the string's parameters.
#[cfg(feature = "argon2")]
pub(crate) fn verify(phc: &str, password: &[u8]) -> bool {
    PasswordHash::new(phc)
        .is_ok_and(|hash| Argon2::default().verify_password(password, &hash).is_ok())
}

/// No hash matches: none is ever loaded without argon2.
#[cfg(not(feature = "argon2"))]
pub(crate) fn verify(_: &str, _: &[u8]) -> bool {
    false
}

/// The salt of the dummy hash. It need not be secret or random: nobody's password is hashed
/// with it, and what the dummy verifies is never looked at.
#[cfg(feature = "argon2")]
const DUMMY_SALT: &str = "c2ltcGxlLWltLWR1bW15";

/// The dummy's password; its value does not matter, as no verdict depends on it.
#[cfg(feature = "argon2")]
pub(crate) const DUMMY_PASSWORD: &[u8] = b"no-user-has-this-password";

/// A hash of [`DUMMY_PASSWORD`] that costs as much to verify as the costliest of `hashes`
/// (memory times passes), made the way verifying would hash: same algorithm, version and
/// parameters. `None` if there are none (or, which cannot happen for checked hashes, if they
/// cannot be hashed with).
#[cfg(feature = "argon2")]
pub(crate) fn dummy<'h>(hashes: impl Iterator<Item = &'h str>) -> Option<String> {
    let parsed = hashes.filter_map(|phc| {
        let hash = PasswordHash::new(phc).ok()?;
        let params = Params::try_from(&hash).ok()?;
        Some((hash, params))
    });
    let cost = |params: &Params| u64::from(params.m_cost()) * u64::from(params.t_cost());
    let (hash, params) = parsed.reduce(|best, next| {
        if cost(&next.1) > cost(&best.1) {
            next
        } else {
            best
        }
    })?;
    let salt = Salt::from_b64(DUMMY_SALT).ok()?;
    Argon2::default()
        .hash_password_customized(
            DUMMY_PASSWORD,
            Some(hash.algorithm),
            hash.version,
            params,
            salt,
        )
        .ok()
        .map(|dummy| dummy.to_string())
}

/// No dummy: without argon2 no hash is ever loaded.
#[cfg(not(feature = "argon2"))]
pub(crate) fn dummy<'h>(_: impl Iterator<Item = &'h str>) -> Option<String> {
    None
}

/// Hashes `password` with argon2id and `salt` into a PHC string for the users file. The caller
/// supplies the salt (16 random bytes, fresh for each password), so this crate stays free of
/// randomness.
#[cfg(feature = "argon2")]
pub fn hash_password(password: &[u8], salt: &[u8; 16]) -> Result<String, HashError> {
    hash_password_with(password, salt, Params::default())
}

/// As [`hash_password`], with these argon2id costs (cheaper ones let tests time many logins).
#[cfg(feature = "argon2")]
pub fn hash_password_with(
    password: &[u8],
    salt: &[u8; 16],
    params: Params,
) -> Result<String, HashError> {
    let salt = SaltString::encode_b64(salt).map_err(HashError::Salt)?;
    Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(password, &salt)
        .map(|hash| hash.to_string())
        .map_err(HashError::Hashing)
}

/// Why [`hash_password`] failed.
#[cfg(feature = "argon2")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashError {
    /// The salt could not be encoded.
    Salt(password_hash::Error),
    /// argon2 refused the password or the parameters.
    Hashing(password_hash::Error),
}

#[cfg(feature = "argon2")]
impl fmt::Display for HashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashError::Salt(err) => write!(f, "bad salt: {err}"),
            HashError::Hashing(err) => write!(f, "cannot hash the password: {err}"),
        }
    }
}

#[cfg(feature = "argon2")]
impl std::error::Error for HashError {}
