//! Every message of docs/protocol.md §2: types, `nom` parsers and exact formatters, side by side,
//! plus the bounded [`LineFramer`] that turns a byte stream into lines (§1).
//!
//! Parsers take one line *without* its `\n` (the framer strips it and a `\r` before it) and
//! borrow from it, so parsing allocates nothing. Formatters append the exact wire bytes,
//! `\n` included, to a buffer.

use nom::branch::alt;
use nom::bytes::complete::{tag, take_while1, take_while_m_n};
use nom::combinator::{all_consuming, map, map_res, rest, value, verify};
use nom::multi::separated_list1;
use nom::sequence::{preceded, separated_pair};
use nom::{IResult, Parser};

/// `line` without its final `\n`: each fixed line below is written once, with it, so that
/// sending one is a static buffer ([`Response::to_shared`]).
const fn text(line: &'static [u8]) -> &'static [u8] {
    match line.split_last() {
        Some((&b'\n', text)) => text,
        _ => line,
    }
}

/// `101`: the login was accepted.
pub const AUTH_OK: &[u8] = text(AUTH_OK_LINE);
const AUTH_OK_LINE: &[u8] = b"101 Authentication successful\n";
/// `102`: unknown user, wrong password, or the user is already online.
pub const AUTH_FAILED: &[u8] = text(AUTH_FAILED_LINE);
const AUTH_FAILED_LINE: &[u8] = b"102 Authentication failed\n";
/// `201`: the server reached the client's Lb listener.
pub const LB_OK: &[u8] = text(LB_OK_LINE);
const LB_OK_LINE: &[u8] = b"201 Build connection successful\n";
/// `202`: the server could not reach the client's Lb listener.
pub const LB_FAILED: &[u8] = text(LB_FAILED_LINE);
const LB_FAILED_LINE: &[u8] = b"202 Build connection failed\n";
/// `302`: the client's acknowledgement of one message on Lb.
pub const RECEIPT: &[u8] = text(RECEIPT_LINE);
const RECEIPT_LINE: &[u8] = b"302 Message receipt successful\n";
/// `303`: every recipient acknowledged.
pub const DELIVERED: &[u8] = text(DELIVERED_LINE);
const DELIVERED_LINE: &[u8] = b"303 Message delivery successful\n";
/// `304`: at least one recipient did not acknowledge.
pub const DELIVERY_FAILED: &[u8] = text(DELIVERY_FAILED_LINE);
const DELIVERY_FAILED_LINE: &[u8] = b"304 Message delivery failed\n";
/// `310`: the answer to `/exit`.
pub const BYE: &[u8] = text(BYE_LINE);
const BYE_LINE: &[u8] = b"310 Bye bye\n";
/// `401`: the answer to any line that is malformed or out of place.
pub const UNRECOGNIZED: &[u8] = text(UNRECOGNIZED_LINE);
const UNRECOGNIZED_LINE: &[u8] = b"401 Unrecognized message\n";

/// The default bound on one line, `\n` included (§1).
pub const DEFAULT_MAX_LINE: usize = 65_536;

/// A command a client sends on La.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Request<'a> {
    /// `/login <user> <password>`
    Login {
        /// The user name token.
        user: &'a [u8],
        /// The password token.
        password: &'a [u8],
    },
    /// `/port <port>`: where the client listens for Lb.
    Port(u16),
    /// `/list`
    List,
    /// `/to <target> <content>`
    To {
        /// The recipient's user name.
        target: &'a [u8],
        /// The chat text, verbatim.
        content: &'a [u8],
    },
    /// `/toall <content>`
    ToAll {
        /// The chat text, verbatim.
        content: &'a [u8],
    },
    /// `/exit`
    Exit,
}

/// An answer the server sends on La.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Response<'a> {
    /// `101 Authentication successful`
    AuthOk,
    /// `102 Authentication failed`
    AuthFailed,
    /// `201 Build connection successful`
    LbOk,
    /// `202 Build connection failed`
    LbFailed,
    /// `301 <user> <user> …`: the asker first, then the others in login order.
    List(Vec<&'a [u8]>),
    /// `303 Message delivery successful`
    Delivered,
    /// `304 Message delivery failed`
    DeliveryFailed,
    /// `310 Bye bye`
    Bye,
    /// `401 Unrecognized message`
    Unrecognized,
}

/// A chat message the server pushes on Lb.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Delivery<'a> {
    /// `/from <sender> <content>`: the answer to a `/to`.
    From {
        /// The sender's user name.
        sender: &'a [u8],
        /// The chat text, verbatim.
        content: &'a [u8],
    },
    /// `/broadcastfrom <sender> <content>`: the answer to a `/toall`.
    BroadcastFrom {
        /// The sender's user name.
        sender: &'a [u8],
        /// The chat text, verbatim.
        content: &'a [u8],
    },
}

/// The line did not match any form accepted here; the server answers `401`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unrecognized;

/// Whether `byte` may appear in a token (user name, password).
pub fn is_token_byte(byte: u8) -> bool {
    !matches!(byte, b' ' | b'\r' | b'\n')
}

/// Whether `bytes` is a valid token: one or more bytes, none of them space, `\r` or `\n`.
pub fn is_token(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.iter().all(|&b| is_token_byte(b))
}

/// Whether `bytes` is valid chat content: one or more bytes, no `\n`.
pub fn is_content(bytes: &[u8]) -> bool {
    !bytes.is_empty() && !bytes.contains(&b'\n')
}

type Res<'a, T> = IResult<&'a [u8], T>;

fn token(input: &[u8]) -> Res<'_, &[u8]> {
    take_while1(is_token_byte).parse(input)
}

/// Content runs to the end of the line; the framer has already removed `\n`.
fn content(input: &[u8]) -> Res<'_, &[u8]> {
    verify(rest, |c: &[u8]| !c.is_empty()).parse(input)
}

/// 1–65535 in plain decimal: no sign, no leading zero, so each port has exactly one spelling.
fn port_number(input: &[u8]) -> Res<'_, u16> {
    let digits = verify(
        take_while_m_n(1, 5, |b: u8| b.is_ascii_digit()),
        |d: &[u8]| d.first() != Some(&b'0'),
    );
    map_res(digits, |digits: &[u8]| {
        let value = digits
            .iter()
            .fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0'));
        u16::try_from(value)
    })
    .parse(input)
}

fn request(input: &[u8]) -> Res<'_, Request<'_>> {
    alt((
        map(
            preceded(tag("/login "), separated_pair(token, tag(" "), token)),
            |(user, password)| Request::Login { user, password },
        ),
        map(preceded(tag("/port "), port_number), Request::Port),
        value(Request::List, tag("/list")),
        map(
            preceded(tag("/to "), separated_pair(token, tag(" "), content)),
            |(target, content)| Request::To { target, content },
        ),
        map(preceded(tag("/toall "), content), |content| {
            Request::ToAll { content }
        }),
        value(Request::Exit, tag("/exit")),
    ))
    .parse(input)
}

fn response(input: &[u8]) -> Res<'_, Response<'_>> {
    alt((
        value(Response::AuthOk, tag(AUTH_OK)),
        value(Response::AuthFailed, tag(AUTH_FAILED)),
        value(Response::LbOk, tag(LB_OK)),
        value(Response::LbFailed, tag(LB_FAILED)),
        map(
            preceded(tag("301 "), separated_list1(tag(" "), token)),
            Response::List,
        ),
        value(Response::Delivered, tag(DELIVERED)),
        value(Response::DeliveryFailed, tag(DELIVERY_FAILED)),
        value(Response::Bye, tag(BYE)),
        value(Response::Unrecognized, tag(UNRECOGNIZED)),
    ))
    .parse(input)
}

fn delivery(input: &[u8]) -> Res<'_, Delivery<'_>> {
    alt((
        map(
            preceded(tag("/from "), separated_pair(token, tag(" "), content)),
            |(sender, content)| Delivery::From { sender, content },
        ),
        map(
            preceded(
                tag("/broadcastfrom "),
                separated_pair(token, tag(" "), content),
            ),
            |(sender, content)| Delivery::BroadcastFrom { sender, content },
        ),
    ))
    .parse(input)
}

fn whole<'a, T>(
    parser: impl Parser<&'a [u8], Output = T, Error = nom::error::Error<&'a [u8]>>,
    line: &'a [u8],
) -> Result<T, Unrecognized> {
    all_consuming(parser)
        .parse(line)
        .map(|(_, parsed)| parsed)
        .map_err(|_| Unrecognized)
}

impl<'a> Request<'a> {
    /// Parses one La line from a client (without its `\n`).
    pub fn parse(line: &'a [u8]) -> Result<Self, Unrecognized> {
        whole(request, line)
    }

    /// Appends the exact wire bytes, `\n` included.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        match *self {
            Request::Login { user, password } => {
                out.extend_from_slice(b"/login ");
                out.extend_from_slice(user);
                out.push(b' ');
                out.extend_from_slice(password);
            }
            Request::Port(port) => {
                out.extend_from_slice(b"/port ");
                out.extend_from_slice(port.to_string().as_bytes());
            }
            Request::List => out.extend_from_slice(b"/list"),
            Request::To { target, content } => {
                out.extend_from_slice(b"/to ");
                out.extend_from_slice(target);
                out.push(b' ');
                out.extend_from_slice(content);
            }
            Request::ToAll { content } => {
                out.extend_from_slice(b"/toall ");
                out.extend_from_slice(content);
            }
            Request::Exit => out.extend_from_slice(b"/exit"),
        }
        out.push(b'\n');
    }

    /// The exact wire bytes, `\n` included.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }
}

impl<'a> Response<'a> {
    /// Parses one La line from the server (without its `\n`).
    pub fn parse(line: &'a [u8]) -> Result<Self, Unrecognized> {
        whole(response, line)
    }

    /// The whole line of a fixed answer, `\n` included; `None` for a list.
    fn fixed_line(&self) -> Option<&'static [u8]> {
        Some(match self {
            Response::AuthOk => AUTH_OK_LINE,
            Response::AuthFailed => AUTH_FAILED_LINE,
            Response::LbOk => LB_OK_LINE,
            Response::LbFailed => LB_FAILED_LINE,
            Response::List(_) => return None,
            Response::Delivered => DELIVERED_LINE,
            Response::DeliveryFailed => DELIVERY_FAILED_LINE,
            Response::Bye => BYE_LINE,
            Response::Unrecognized => UNRECOGNIZED_LINE,
        })
    }

    /// Appends the exact wire bytes, `\n` included.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        match self {
            Response::List(names) => write_list(names.iter().copied(), out),
            _ => out.extend_from_slice(self.fixed_line().unwrap_or_default()),
        }
    }

    /// The exact wire bytes in a shared buffer; a fixed answer's is static, so answering
    /// allocates nothing.
    pub fn to_shared(&self) -> bytes::Bytes {
        match self.fixed_line() {
            Some(line) => bytes::Bytes::from_static(line),
            None => self.to_bytes().into(),
        }
    }

    /// The exact wire bytes, `\n` included.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }
}

/// Appends `301 <name> <name> …\n`, so the server can format a list without collecting it.
pub fn write_list<'n>(names: impl IntoIterator<Item = &'n [u8]>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"301");
    for name in names {
        out.push(b' ');
        out.extend_from_slice(name);
    }
    out.push(b'\n');
}

impl<'a> Delivery<'a> {
    /// Parses one Lb line from the server (without its `\n`).
    pub fn parse(line: &'a [u8]) -> Result<Self, Unrecognized> {
        whole(delivery, line)
    }

    /// Appends the exact wire bytes, `\n` included.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let (prefix, sender, content) = match *self {
            Delivery::From { sender, content } => (&b"/from "[..], sender, content),
            Delivery::BroadcastFrom { sender, content } => {
                (&b"/broadcastfrom "[..], sender, content)
            }
        };
        out.reserve(prefix.len() + sender.len() + content.len() + 2);
        out.extend_from_slice(prefix);
        out.extend_from_slice(sender);
        out.push(b' ');
        out.extend_from_slice(content);
        out.push(b'\n');
    }

    /// The exact wire bytes, `\n` included.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }
}

/// Whether an Lb line from a client is exactly `302 Message receipt successful`.
pub fn is_receipt(line: &[u8]) -> bool {
    line == RECEIPT
}

/// `302 Message receipt successful\n`, ready to send.
pub fn receipt_bytes() -> Vec<u8> {
    RECEIPT_LINE.to_vec()
}

/// `text` followed by `\n`.
pub fn line_bytes(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 1);
    out.extend_from_slice(text);
    out.push(b'\n');
    out
}

/// What the framer found next in the byte stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A whole line, without `\n` and without a `\r` right before it.
    Line(&'a [u8]),
    /// A line grew past the bound; it is reported once and discarded up to its `\n`.
    TooLong,
}

/// Splits a byte stream into lines of at most `max_line` bytes (`\n` included).
///
/// It holds at most `max_line` bytes of a partial line, whatever arrives, and hands out whole
/// lines straight from the input when it can, so the common case copies nothing.
#[derive(Debug)]
pub struct LineFramer {
    partial: Vec<u8>,
    max_line: usize,
    discarding: bool,
    line_lent: bool,
}

impl LineFramer {
    /// A framer that accepts lines of up to `max_line` bytes, `\n` included (at least 2).
    pub fn new(max_line: usize) -> Self {
        LineFramer {
            partial: Vec::new(),
            max_line: max_line.max(2),
            discarding: false,
            line_lent: false,
        }
    }

    /// The bound on one line, `\n` included.
    pub fn max_line(&self) -> usize {
        self.max_line
    }

    /// Bytes of an unfinished line held between calls.
    pub fn buffered(&self) -> usize {
        if self.line_lent {
            0
        } else {
            self.partial.len()
        }
    }

    /// Takes bytes from the front of `input` until one frame is complete and returns it.
    /// `None` means `input` is used up without completing a frame (its bytes are kept).
    /// The frame borrows from the framer or from `input`, whichever held the line, and only
    /// for as long as it is used: the caller can go on feeding the same input afterwards.
    pub fn next_frame<'f, 'i: 'f>(&'f mut self, input: &mut &'i [u8]) -> Option<Frame<'f>> {
        if self.line_lent {
            self.partial.clear();
            self.line_lent = false;
        }
        loop {
            if input.is_empty() {
                return None;
            }
            let newline = memchr::memchr(b'\n', input);
            if self.discarding {
                match newline {
                    Some(at) => {
                        *input = &input[at + 1..];
                        self.discarding = false;
                        continue;
                    }
                    None => {
                        *input = &[];
                        return None;
                    }
                }
            }
            let held = self.partial.len();
            match newline {
                // The bound counts the `\n`, so a line of `max_line - 1` bytes still fits.
                Some(at) if held + at < self.max_line => {
                    let (line, after) = input.split_at(at);
                    *input = &after[1..];
                    if held == 0 {
                        return Some(Frame::Line(strip_cr(line)));
                    }
                    self.partial.extend_from_slice(line);
                    let len = strip_cr(&self.partial).len();
                    self.partial.truncate(len);
                    // The line is lent out of `partial`; it is emptied on the next call.
                    self.line_lent = true;
                    return Some(Frame::Line(&self.partial));
                }
                Some(at) => {
                    *input = &input[at + 1..];
                    self.partial.clear();
                    return Some(Frame::TooLong);
                }
                None if held + input.len() < self.max_line => {
                    self.partial.extend_from_slice(input);
                    *input = &[];
                    return None;
                }
                None => {
                    *input = &[];
                    self.partial.clear();
                    self.discarding = true;
                    return Some(Frame::TooLong);
                }
            }
        }
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}
