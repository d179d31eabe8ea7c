//! The wire forms the server checks send and compare, and the malformed variants built from
//! them.

use simple_im_core::protocol::{Request, Response};

use super::Account;
use crate::outcome::escape;

/// Whether `line` is a `102` answer, however its words are spelt.
pub(super) fn is_auth_failed(line: &[u8]) -> bool {
    let failed = Response::AuthFailed.to_bytes();
    let code = failed.split(|&b| b == b' ').next().unwrap_or_default();
    line.strip_prefix(code)
        .is_some_and(|rest| rest.starts_with(b" "))
}

/// `/login <user> <password>` for `account`.
pub(super) fn login_request(account: &Account) -> Request<'_> {
    Request::Login {
        user: &account.name,
        password: &account.password,
    }
}

/// A sent line for a report: escaped, without its `\n`.
pub(super) fn show(sent: &[u8]) -> String {
    escape(sent.strip_suffix(b"\n").unwrap_or(sent))
}

/// The wire form of `request` without its `\n`, to build malformed variants from.
pub(super) fn text(request: &Request) -> Vec<u8> {
    let mut bytes = request.to_bytes();
    bytes.pop();
    bytes
}

/// The first `n` space-separated words of `request` (`/login jacky` from a login).
pub(super) fn first_words(request: &Request, n: usize) -> Vec<u8> {
    let full = text(request);
    full.split(|&b| b == b' ')
        .take(n)
        .collect::<Vec<_>>()
        .join(&b' ')
}

/// `request` with `suffix` appended (`/list extra`, `/list `).
pub(super) fn with_suffix(request: &Request, suffix: &[u8]) -> Vec<u8> {
    let mut bytes = text(request);
    bytes.extend_from_slice(suffix);
    bytes
}

/// `request` with its `nth` separating space (0-based) doubled (`/to  bob hi`).
pub(super) fn double_space(request: &Request, nth: usize) -> Vec<u8> {
    let mut bytes = text(request);
    if let Some(at) = bytes
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b' ')
        .nth(nth)
        .map(|(at, _)| at)
    {
        bytes.insert(at, b' ');
    }
    bytes
}

/// `request` with its command word in capitals (`/LIST`).
pub(super) fn shouted(request: &Request) -> Vec<u8> {
    let mut bytes = text(request);
    let end = bytes.iter().position(|&b| b == b' ').unwrap_or(bytes.len());
    bytes[..end].make_ascii_uppercase();
    bytes
}

/// The command word of `request` followed by `argument` (`/port 0`).
pub(super) fn verb_with(request: &Request, argument: &[u8]) -> Vec<u8> {
    let mut bytes = first_words(request, 1);
    bytes.push(b' ');
    bytes.extend_from_slice(argument);
    bytes
}
