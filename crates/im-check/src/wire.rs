//! Raw TCP with a deadline on every step.
//!
//! A check never blocks past its deadline: every read, write and accept here takes one, so a
//! peer that hangs turns into "got nothing within …" instead of a stuck checker.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use simple_im_core::protocol::{Frame, LineFramer};

use crate::outcome::{escape, note, Failure, Got, Transcript};

/// The longest line kept while waiting for its `\n`: far more than any answer, and a bound on
/// what a misbehaving peer can make the checker hold.
const MAX_HELD: usize = 1 << 20;

/// One TCP connection, read line by line, each step bounded by a deadline.
///
/// The crate's [`LineFramer`] says where each line ends and bounds it. The checker must still
/// see every byte the peer sent, so it keeps what the framer does not hand out: the `\r` the
/// framer drops before a `\n` (nothing may send one) and the unfinished line it holds (a report
/// shows what came before a silence or the end).
pub struct Conn {
    stream: TcpStream,
    framer: LineFramer,
    /// What was framed and not yet read, in order, byte for byte as it came.
    framed: VecDeque<Framed>,
    /// The bytes of the unfinished line the framer holds.
    unfinished: Vec<u8>,
    closed: bool,
    label: String,
    transcript: Transcript,
}

/// One frame, as the checker keeps it.
enum Framed {
    /// A whole line, `\n` included.
    Line(Vec<u8>),
    /// A line longer than [`MAX_HELD`]: what came of it.
    TooLong(Vec<u8>),
}

impl Conn {
    /// Wraps `stream`; `label` (e.g. `jacky La`) names it in the transcript.
    pub fn new(stream: TcpStream, label: String, transcript: Transcript) -> Self {
        // Small writes go out at once: checks time what the peer does after each one.
        let _ = stream.set_nodelay(true);
        Conn {
            stream,
            framer: LineFramer::new(MAX_HELD),
            framed: VecDeque::new(),
            unfinished: Vec::new(),
            closed: false,
            label,
            transcript,
        }
    }

    /// Connects to `addr` before `deadline`.
    pub fn connect(
        addr: SocketAddr,
        deadline: Instant,
        label: String,
        transcript: Transcript,
    ) -> Result<Self, Failure> {
        Self::connect_from(addr, None, deadline, label, transcript)
    }

    /// Connects to `addr` from the local address `source` (any, if `None`) before `deadline`.
    pub fn connect_from(
        addr: SocketAddr,
        source: Option<std::net::IpAddr>,
        deadline: Instant,
        label: String,
        transcript: Transcript,
    ) -> Result<Self, Failure> {
        let wait = remaining(deadline).max(Duration::from_millis(1));
        let connected = match source {
            None => TcpStream::connect_timeout(&addr, wait),
            Some(source) => socket2::Socket::new(
                socket2::Domain::for_address(addr),
                socket2::Type::STREAM,
                None,
            )
            .and_then(|socket| {
                socket.bind(&SocketAddr::new(source, 0).into())?;
                socket.connect_timeout(&addr.into(), wait)?;
                Ok(TcpStream::from(socket))
            }),
        };
        match connected {
            Ok(stream) => {
                note(&transcript, format!("{label}: connected to {addr}"));
                Ok(Conn::new(stream, label, transcript))
            }
            Err(error) => Err(Failure::new(format!(
                "{label}: cannot connect to {addr}: {error}"
            ))),
        }
    }

    /// The local address of this connection (the address the peer sees us at).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.stream.local_addr().ok()
    }

    /// Whether the peer has closed the connection, as far as reads have seen.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Writes all of `bytes` before `deadline`.
    pub fn send(&mut self, bytes: &[u8], deadline: Instant) -> Result<(), Failure> {
        note(
            &self.transcript,
            format!("{} sent {}", self.label, escape(bytes)),
        );
        let wait = remaining(deadline).max(Duration::from_millis(1));
        let _ = self.stream.set_write_timeout(Some(wait));
        self.stream.write_all(bytes).map_err(|error| {
            Failure::new(format!(
                "{}: could not send {}: {error}",
                self.label,
                escape(bytes)
            ))
        })
    }

    /// The next line, `\n` included, if one arrives before `deadline`.
    pub fn read_line(&mut self, deadline: Instant) -> Result<Vec<u8>, Got> {
        let started = Instant::now();
        loop {
            match self.framed.pop_front() {
                Some(Framed::Line(line)) => {
                    note(
                        &self.transcript,
                        format!("{} got {}", self.label, escape(&line)),
                    );
                    return Ok(line);
                }
                Some(Framed::TooLong(bytes)) => return Err(Got::Bytes(bytes)),
                None => {}
            }
            if self.closed {
                return Err(Got::Closed(self.take_held()));
            }
            match self.fill(deadline) {
                Fill::Data => {}
                Fill::TimedOut if self.unfinished.is_empty() => {
                    return Err(Got::Nothing(started.elapsed()))
                }
                Fill::TimedOut => return Err(Got::Bytes(self.take_held())),
                Fill::Failed(error) => return Err(Got::Error(error)),
            }
        }
    }

    /// A whole line if one has arrived already, without waiting for one: `Ok(None)` while
    /// none has. For watching many connections at once.
    pub fn try_line(&mut self) -> Result<Option<Vec<u8>>, Got> {
        if self.framed.is_empty() && !self.closed {
            let _ = self.stream.set_nonblocking(true);
            let mut chunk = [0u8; 8192];
            let failed = loop {
                match self.stream.read(&mut chunk) {
                    Ok(0) => {
                        note(
                            &self.transcript,
                            format!("{} got end of stream", self.label),
                        );
                        self.closed = true;
                        break None;
                    }
                    Ok(n) => self.frame(&chunk[..n]),
                    Err(error) if error.kind() == ErrorKind::WouldBlock => break None,
                    Err(error) if error.kind() == ErrorKind::Interrupted => {}
                    Err(error) => {
                        self.closed = true;
                        break Some(error.to_string());
                    }
                }
            };
            let _ = self.stream.set_nonblocking(false);
            if let Some(error) = failed {
                return Err(Got::Error(error));
            }
        }
        if self.framed.is_empty() && !self.closed {
            return Ok(None);
        }
        self.read_line(Instant::now()).map(Some)
    }

    /// Reads one line and compares it with `expected` byte for byte.
    pub fn expect_line(
        &mut self,
        expected: &[u8],
        deadline: Instant,
        context: &str,
    ) -> Result<(), Failure> {
        match self.read_line(deadline) {
            Ok(line) if line == expected => Ok(()),
            Ok(line) => Err(Failure::mismatch(context, expected, Got::Bytes(line))),
            Err(got) => Err(Failure::mismatch(context, expected, got)),
        }
    }

    /// Nothing at all may arrive before `until` (the peer must still be waiting for us).
    pub fn expect_quiet(&mut self, until: Instant, context: &str) -> Result<(), Failure> {
        if self.holds_nothing() && !self.closed {
            loop {
                match self.fill(until) {
                    Fill::TimedOut => return Ok(()),
                    Fill::Data if self.holds_nothing() && !self.closed => {}
                    Fill::Data => break,
                    Fill::Failed(error) => {
                        return Err(Failure::unexpected(
                            context,
                            "nothing yet",
                            Got::Error(error),
                        ))
                    }
                }
            }
        }
        // Whatever came, show all of it that is already here.
        let got = if self.closed {
            Got::Closed(self.take_held())
        } else {
            self.read_line(Instant::now())
                .map_or_else(|got| got, Got::Bytes)
        };
        Err(Failure::unexpected(context, "nothing yet", got))
    }

    /// The peer must close the connection before `deadline`, sending nothing more.
    pub fn expect_closed(&mut self, deadline: Instant, context: &str) -> Result<(), Failure> {
        match self.read_line(deadline) {
            Err(Got::Closed(partial)) if partial.is_empty() => Ok(()),
            // A reset closes the connection as well, only less politely.
            Err(Got::Error(_)) if self.holds_nothing() => Ok(()),
            Ok(line) => Err(Failure::unexpected(
                context,
                "the connection to be closed",
                Got::Bytes(line),
            )),
            Err(got) => Err(Failure::unexpected(
                context,
                "the connection to be closed",
                got,
            )),
        }
    }

    /// Closes the connection abruptly: `SO_LINGER` 0 makes the close send a reset (RST), the
    /// way a killed process or a pulled cable looks to the peer, and drops anything unsent.
    pub fn reset(&mut self) {
        note(
            &self.transcript,
            format!("{} reset by im-check (SO_LINGER 0)", self.label),
        );
        let _ = socket2::SockRef::from(&self.stream).set_linger(Some(Duration::ZERO));
        // Closing the descriptor sends the reset; a socket never connected takes its place.
        if let Ok(spare) = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        {
            drop(std::mem::replace(&mut self.stream, TcpStream::from(spare)));
        }
        self.closed = true;
    }

    /// Closes our sending side only (a half-close): the peer reads end of file, and may
    /// still write to us.
    pub fn half_close(&mut self) {
        note(
            &self.transcript,
            format!("{} half-closed by im-check (no more from us)", self.label),
        );
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Closes both directions now, the way a crashed or departing peer would.
    pub fn close(&mut self) {
        note(
            &self.transcript,
            format!("{} closed by im-check", self.label),
        );
        let _ = self.stream.shutdown(Shutdown::Both);
        self.closed = true;
    }

    /// Whether nothing the peer sent is waiting to be read.
    fn holds_nothing(&self) -> bool {
        self.framed.is_empty() && self.unfinished.is_empty()
    }

    /// Everything the peer sent that was not read yet, as it came; reading then starts afresh
    /// at the next byte.
    fn take_held(&mut self) -> Vec<u8> {
        let mut held = Vec::new();
        for framed in self.framed.drain(..) {
            match framed {
                Framed::Line(bytes) | Framed::TooLong(bytes) => held.extend_from_slice(&bytes),
            }
        }
        held.append(&mut self.unfinished);
        self.framer = LineFramer::new(MAX_HELD);
        held
    }

    /// Passes `chunk` through the framer, keeping each frame byte for byte as it came.
    fn frame(&mut self, chunk: &[u8]) {
        let mut input = chunk;
        loop {
            let before = input;
            let frame = self.framer.next_frame(&mut input);
            let used = &before[..before.len() - input.len()];
            let framed = match frame {
                Some(Frame::Line(line)) => {
                    // `used` ends with this line's `\n`; the byte before it is the line's own.
                    let cr = match used {
                        [.., b'\r', b'\n'] => true,
                        [b'\n'] => self.unfinished.last() == Some(&b'\r'),
                        _ => false,
                    };
                    let mut bytes = line.to_vec();
                    bytes.extend_from_slice(if cr { b"\r\n" } else { b"\n" });
                    Framed::Line(bytes)
                }
                Some(Frame::TooLong) => {
                    let mut bytes = std::mem::take(&mut self.unfinished);
                    bytes.extend_from_slice(used);
                    Framed::TooLong(bytes)
                }
                None => {
                    // The framer holds the end of what it took (nothing, while it skips the
                    // rest of an over-long line): keep the same bytes.
                    self.unfinished.extend_from_slice(used);
                    let skipped = self.unfinished.len().saturating_sub(self.framer.buffered());
                    self.unfinished.drain(..skipped);
                    return;
                }
            };
            self.unfinished.clear();
            self.framed.push_back(framed);
        }
    }

    /// One read through the framer, waiting at most until `deadline`.
    fn fill(&mut self, deadline: Instant) -> Fill {
        let wait = remaining(deadline);
        if wait.is_zero() {
            return Fill::TimedOut;
        }
        let _ = self.stream.set_read_timeout(Some(wait));
        let mut chunk = [0u8; 8192];
        match self.stream.read(&mut chunk) {
            Ok(0) => {
                note(
                    &self.transcript,
                    format!("{} got end of stream", self.label),
                );
                self.closed = true;
                Fill::Data
            }
            Ok(n) => {
                self.frame(&chunk[..n]);
                Fill::Data
            }
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if remaining(deadline).is_zero() {
                    Fill::TimedOut
                } else {
                    Fill::Data
                }
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => Fill::Data,
            Err(error) => {
                note(&self.transcript, format!("{} error: {error}", self.label));
                self.closed = true;
                Fill::Failed(if error.kind() == ErrorKind::ConnectionReset {
                    "the connection was reset (closed abruptly)".to_string()
                } else {
                    error.to_string()
                })
            }
        }
    }
}

/// What one read did.
enum Fill {
    /// Bytes arrived, or the end of the stream did (see `closed`), or a wait was cut short.
    Data,
    /// The deadline passed.
    TimedOut,
    /// The socket failed.
    Failed(String),
}

/// Time left until `deadline` (zero once it has passed).
pub fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// Accepts one connection on `listener` before `deadline`.
pub fn accept(listener: &TcpListener, deadline: Instant) -> Result<TcpStream, Got> {
    // std has no accept timeout; polling a non-blocking listener is simple and cheap enough.
    let started = Instant::now();
    listener
        .set_nonblocking(true)
        .map_err(|error| Got::Error(error.to_string()))?;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream
                    .set_nonblocking(false)
                    .map_err(|error| Got::Error(error.to_string()))?;
                return Ok(stream);
            }
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                if remaining(deadline).is_zero() {
                    return Err(Got::Nothing(started.elapsed()));
                }
                thread::sleep(Duration::from_millis(5));
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => return Err(Got::Error(error.to_string())),
        }
    }
}

/// A TCP port on `ip` that nothing listens on (bound, then released), for the `202` paths.
pub fn closed_port(ip: std::net::IpAddr) -> Result<u16, Failure> {
    let listener = TcpListener::bind((ip, 0))
        .map_err(|error| Failure::new(format!("cannot find a free port on {ip}: {error}")))?;
    let port = listener
        .local_addr()
        .map_err(|error| Failure::new(format!("cannot find a free port on {ip}: {error}")))?
        .port();
    drop(listener);
    Ok(port)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A [`Conn`] and the peer's end of it.
    fn pair() -> (Conn, TcpStream) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (ours, _) = listener.accept().unwrap();
        let conn = Conn::new(ours, "test".into(), Arc::new(Mutex::new(Vec::new())));
        (conn, peer)
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_millis(300)
    }

    #[test]
    fn lines_come_byte_for_byte_with_their_cr() {
        let (mut conn, mut peer) = pair();
        peer.write_all(b"one\r\ntwo\n\r\n").unwrap();
        assert_eq!(conn.read_line(soon()).unwrap(), b"one\r\n");
        assert_eq!(conn.read_line(soon()).unwrap(), b"two\n");
        assert_eq!(conn.read_line(soon()).unwrap(), b"\r\n");
        // A `\r` that ends one write and the `\n` of the next.
        peer.write_all(b"three\r").unwrap();
        thread::sleep(Duration::from_millis(50));
        peer.write_all(b"\n").unwrap();
        assert_eq!(conn.read_line(soon()).unwrap(), b"three\r\n");
    }

    #[test]
    fn an_unfinished_line_is_shown_on_silence_and_at_the_end() {
        let (mut conn, mut peer) = pair();
        peer.write_all(b"30").unwrap();
        assert!(matches!(conn.read_line(soon()), Err(Got::Bytes(b)) if b == b"30"));
        // What was shown is given up: the next line starts afresh.
        peer.write_all(b"1 x\n303 y\n31").unwrap();
        assert_eq!(conn.read_line(soon()).unwrap(), b"1 x\n");
        drop(peer);
        assert!(matches!(conn.read_line(soon()), Ok(l) if l == b"303 y\n"));
        assert!(matches!(conn.read_line(soon()), Err(Got::Closed(b)) if b == b"31"));
    }

    #[test]
    fn a_reset_is_seen_as_one_and_a_half_close_as_end_of_file() {
        let (mut conn, mut peer) = pair();
        conn.reset();
        peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut byte = [0u8; 1];
        let error = peer.read(&mut byte).expect_err("a reset");
        assert_eq!(error.kind(), ErrorKind::ConnectionReset);

        let (mut conn, mut peer) = pair();
        conn.half_close();
        peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        assert_eq!(peer.read(&mut byte).unwrap(), 0);
        // The other way still works.
        peer.write_all(b"still here\n").unwrap();
        assert_eq!(conn.read_line(soon()).unwrap(), b"still here\n");
    }

    #[test]
    fn nothing_at_all_is_a_silence() {
        let (mut conn, _peer) = pair();
        assert!(matches!(conn.read_line(soon()), Err(Got::Nothing(_))));
        assert!(conn.expect_quiet(soon(), "quiet").is_ok());
    }

    #[test]
    fn what_breaks_a_silence_is_shown_a_line_at_a_time() {
        let (mut conn, mut peer) = pair();
        peer.write_all(b"a\nb").unwrap();
        let failure = conn.expect_quiet(soon(), "quiet").unwrap_err();
        assert!(matches!(failure.got, Some(Got::Bytes(b)) if b == b"a\n"));
        // The rest is already here: shown at once, without waiting for more.
        let failure = conn.expect_quiet(soon(), "quiet").unwrap_err();
        assert!(matches!(failure.got, Some(Got::Bytes(b)) if b == b"b"));
    }

    #[test]
    fn an_overlong_line_is_reported_and_skipped() {
        let (mut conn, mut peer) = pair();
        let writer = thread::spawn(move || {
            peer.write_all(&vec![b'x'; MAX_HELD + 10]).unwrap();
            peer.write_all(b"\nok\n").unwrap();
            peer
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        assert!(
            matches!(conn.read_line(deadline), Err(Got::Bytes(b)) if b.len() >= MAX_HELD && b[0] == b'x')
        );
        assert_eq!(conn.read_line(deadline).unwrap(), b"ok\n");
        drop(writer.join().unwrap());
    }
}
