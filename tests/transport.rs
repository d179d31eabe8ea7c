//! The per-socket machine ([`Transport`]) on a manual clock: one scenario per rule, then random
//! schedules checked against every rule after every step.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::{TestError, TestRunner};
use simple_im_core::transport::{ReadPolicy, Transport, TransportAction, TransportConfig};

use common::schedules;
use TransportAction::{Release, ReportClosed, ShutdownBoth, ShutdownWrite};

const MS: Duration = Duration::from_millis(1);

fn config() -> TransportConfig {
    TransportConfig {
        write_timeout: 100 * MS,
        max_unwritten: 10,
        close_linger: 50 * MS,
    }
}

fn drain(t: &mut Transport) -> Vec<TransportAction> {
    std::iter::from_fn(|| t.poll_action()).collect()
}

fn bytes(n: usize) -> Bytes {
    Bytes::from(vec![b'x'; n])
}

/// Writes everything queued, in one go per chunk.
fn write_all(t: &mut Transport, now: Instant) -> usize {
    let mut written = 0;
    while let Some(chunk) = t.poll_transmit() {
        t.handle_written(now, chunk.len());
        written += chunk.len();
    }
    written
}

#[test]
fn default_config() {
    let config = TransportConfig::default();
    assert_eq!(config.write_timeout, Duration::from_secs(10));
    assert_eq!(config.max_unwritten, 1024 * 1024);
    assert_eq!(config.close_linger, Duration::from_secs(2));
}

#[test]
fn on_grant_reads_once_per_grant_and_only_when_flushed() {
    let now = Instant::now();
    let mut t = Transport::new(config(), ReadPolicy::OnGrant);
    assert!(!t.wants_read(), "no grant yet");
    t.send(now, bytes(3));
    t.grant_read();
    assert!(!t.wants_read(), "an answer is still unwritten");
    let chunk = t.poll_transmit().unwrap();
    t.handle_written(now, 1);
    assert!(!t.wants_read(), "part of the answer is still unwritten");
    assert_eq!(t.poll_transmit().unwrap(), chunk.slice(1..));
    t.handle_written(now, 2);
    assert!(t.wants_read());
    assert!(t.handle_read(now, 5));
    assert!(!t.wants_read(), "the grant is used up");
    t.grant_read();
    assert!(t.wants_read());
    assert_eq!(drain(&mut t), []);
}

#[test]
fn always_reads_until_read_end() {
    let now = Instant::now();
    let mut t = Transport::new(config(), ReadPolicy::Always);
    assert!(t.wants_read());
    t.send(now, bytes(3));
    assert!(t.wants_read(), "Lb is read even with bytes unwritten");
    assert!(t.handle_read(now, 1));
    assert!(t.wants_read());
    t.handle_read_end(now);
    assert!(!t.wants_read());
    assert_eq!(drain(&mut t), [ReportClosed]);
    t.handle_read_end(now);
    assert_eq!(drain(&mut t), [], "reported once");
    // The core still gets its answers out.
    assert_eq!(write_all(&mut t, now), 3);
}

#[test]
fn poll_transmit_gives_one_chunk_at_a_time() {
    let now = Instant::now();
    let mut t = Transport::new(config(), ReadPolicy::Always);
    assert_eq!(t.poll_transmit(), None);
    t.send(now, Bytes::from_static(b"ab"));
    t.send(now, Bytes::new());
    t.send(now, Bytes::from_static(b"cd"));
    assert_eq!(t.unwritten(), 4);
    assert_eq!(t.poll_transmit().unwrap(), "ab");
    assert_eq!(t.poll_transmit(), None, "a write is in flight");
    t.handle_written(now, 0);
    assert_eq!(
        t.poll_transmit().unwrap(),
        "ab",
        "a zero write keeps it at the front"
    );
    t.handle_written(now, 1);
    assert_eq!(t.unwritten(), 3);
    assert_eq!(t.poll_transmit().unwrap(), "b");
    t.handle_written(now, 1);
    assert_eq!(t.poll_transmit().unwrap(), "cd");
    t.handle_written(now, 2);
    assert_eq!((t.unwritten(), t.poll_transmit()), (0, None));
}

#[test]
fn peek_transmit_lends_the_chunk_poll_transmit_gives() {
    let now = Instant::now();
    let mut t = Transport::new(config(), ReadPolicy::Always);
    assert_eq!(t.peek_transmit(), None);
    t.send(now, Bytes::from_static(b"ab"));
    t.send(now, Bytes::from_static(b"cd"));
    assert_eq!(t.peek_transmit(), Some(&b"ab"[..]));
    assert_eq!(t.peek_transmit(), None, "a write is in flight");
    assert_eq!(t.poll_transmit(), None, "for both");
    t.handle_written(now, 1);
    assert_eq!(t.peek_transmit(), Some(&b"b"[..]));
    t.handle_written(now, 1);
    assert_eq!(t.poll_transmit().unwrap(), "cd");
    t.handle_written(now, 2);
    assert_eq!((t.unwritten(), t.peek_transmit()), (0, None));
}

#[test]
fn overflow_fails_and_reports_once() {
    let now = Instant::now();
    let mut t = Transport::new(config(), ReadPolicy::Always);
    t.send(now, bytes(6));
    t.send(now, bytes(4));
    assert_eq!(t.unwritten(), 10, "up to the cap is fine");
    t.send(now, bytes(1));
    assert_eq!(drain(&mut t), [ShutdownBoth, ReportClosed]);
    assert_eq!(
        (t.unwritten(), t.poll_transmit(), t.poll_timeout()),
        (0, None, None)
    );
    assert!(!t.wants_read());
    t.send(now, bytes(1));
    t.handle_read_end(now);
    t.handle_write_error(now);
    t.handle_timeout(now + Duration::from_secs(60));
    assert_eq!(drain(&mut t), [], "its failure was reported already");
    assert!(!t.is_finished());
}

#[test]
fn one_message_may_exceed_the_cap_alone() {
    let now = Instant::now();
    let mut t = Transport::new(config(), ReadPolicy::Always);
    t.send(now, bytes(25));
    assert_eq!((t.unwritten(), drain(&mut t)), (25, vec![]));
    t.send(now, bytes(1));
    assert_eq!(drain(&mut t), [ShutdownBoth, ReportClosed]);
}

#[test]
fn write_timeout_fails() {
    let start = Instant::now();
    let mut t = Transport::new(config(), ReadPolicy::Always);
    assert_eq!(t.poll_timeout(), None, "an idle socket has no deadline");
    t.send(start, bytes(2));
    assert_eq!(t.poll_timeout(), Some(start + 100 * MS));
    t.poll_transmit().unwrap();
    t.handle_written(start + 50 * MS, 1);
    t.handle_timeout(start + 99 * MS);
    assert_eq!(drain(&mut t), []);
    t.handle_timeout(start + 100 * MS);
    assert_eq!(drain(&mut t), [ShutdownBoth, ReportClosed]);
    assert_eq!(t.poll_timeout(), None);
}

#[test]
fn write_deadline_starts_when_a_message_reaches_the_front() {
    let start = Instant::now();
    let mut t = Transport::new(config(), ReadPolicy::Always);
    t.send(start, bytes(1));
    t.send(start + 10 * MS, bytes(1));
    t.poll_transmit().unwrap();
    t.handle_written(start + 90 * MS, 1);
    assert_eq!(t.poll_timeout(), Some(start + 190 * MS));
    t.handle_timeout(start + 150 * MS);
    assert_eq!(drain(&mut t), []);
    write_all(&mut t, start + 160 * MS);
    assert_eq!(t.poll_timeout(), None, "nothing waits");
}

#[test]
fn write_error_fails() {
    let now = Instant::now();
    let mut t = Transport::new(config(), ReadPolicy::OnGrant);
    t.send(now, bytes(2));
    t.poll_transmit().unwrap();
    t.handle_write_error(now);
    assert_eq!(drain(&mut t), [ShutdownBoth, ReportClosed]);
}

#[test]
fn close_flushes_then_shuts_write_then_lingers_then_releases() {
    let start = Instant::now();
    let mut t = Transport::new(config(), ReadPolicy::OnGrant);
    t.send(start, Bytes::from_static(b"310 Bye bye\n"));
    t.grant_read();
    t.close(start);
    assert!(t.is_closing() && !t.is_finished());
    assert_eq!(
        t.poll_timeout(),
        Some(start + 100 * MS),
        "the flush deadline"
    );
    assert!(!t.wants_read(), "nothing is read while flushing");
    t.send(start, bytes(1));
    assert_eq!(t.unwritten(), 12, "nothing is queued after the close");
    assert_eq!(drain(&mut t), []);
    t.poll_transmit().unwrap();
    t.handle_written(start + 10 * MS, 4);
    assert_eq!(drain(&mut t), [], "not all written yet");
    assert_eq!(write_all(&mut t, start + 20 * MS), 8);
    assert_eq!(drain(&mut t), [ShutdownWrite]);
    assert_eq!(t.poll_timeout(), Some(start + 70 * MS), "the linger");
    assert!(t.wants_read(), "reading for the peer's end");
    assert!(
        !t.handle_read(start + 30 * MS, 100),
        "the peer's bytes are discarded"
    );
    t.handle_timeout(start + 69 * MS);
    assert_eq!(drain(&mut t), []);
    t.handle_timeout(start + 70 * MS);
    assert_eq!(drain(&mut t), [ShutdownBoth, Release]);
    assert!(t.is_finished() && t.is_closing());
    assert_eq!(t.poll_timeout(), None);
    assert!(!t.wants_read());
}

#[test]
fn close_with_nothing_queued_shuts_write_at_once() {
    let start = Instant::now();
    let mut t = Transport::new(config(), ReadPolicy::Always);
    t.close(start);
    assert_eq!(drain(&mut t), [ShutdownWrite]);
    assert_eq!(t.poll_timeout(), Some(start + 50 * MS));
    t.close(start);
    assert_eq!(drain(&mut t), [], "a second close is a no-op");
}

#[test]
fn eof_while_lingering_releases() {
    let start = Instant::now();
    let mut t = Transport::new(config(), ReadPolicy::Always);
    t.close(start);
    assert_eq!(drain(&mut t), [ShutdownWrite]);
    t.handle_read_end(start + MS);
    assert_eq!(drain(&mut t), [ShutdownBoth, Release]);
    assert!(t.is_finished());
}

#[test]
fn close_on_a_failed_socket_releases_at_once() {
    let now = Instant::now();
    let mut t = Transport::new(config(), ReadPolicy::Always);
    t.send(now, bytes(1));
    t.poll_transmit().unwrap();
    t.handle_write_error(now);
    assert_eq!(drain(&mut t), [ShutdownBoth, ReportClosed]);
    t.close(now);
    assert_eq!(drain(&mut t), [Release]);
    assert!(t.is_finished() && t.is_closing());
}

#[test]
fn flush_timeout_releases() {
    let start = Instant::now();
    let mut t = Transport::new(config(), ReadPolicy::Always);
    t.send(start, bytes(4));
    t.close(start + 50 * MS);
    t.handle_timeout(start + 100 * MS);
    assert_eq!(drain(&mut t), [], "the flush has its own write timeout");
    t.handle_timeout(start + 150 * MS);
    assert_eq!(drain(&mut t), [ShutdownBoth, Release]);
}

#[test]
fn write_error_while_flushing_releases() {
    let now = Instant::now();
    let mut t = Transport::new(config(), ReadPolicy::Always);
    t.send(now, bytes(4));
    t.close(now);
    t.poll_transmit().unwrap();
    t.handle_write_error(now);
    assert_eq!(drain(&mut t), [ShutdownBoth, Release]);
}

#[test]
fn a_late_flush_still_lingers_within_the_bound() {
    let start = Instant::now();
    let mut t = Transport::new(config(), ReadPolicy::Always);
    t.send(start, bytes(4));
    t.close(start);
    // The runtime wrote the rest before it got to the flush deadline.
    write_all(&mut t, start + 130 * MS);
    assert_eq!(drain(&mut t), [ShutdownWrite]);
    assert_eq!(t.poll_timeout(), Some(start + 150 * MS));
}

#[test]
fn no_report_closed_after_close() {
    let now = Instant::now();
    let mut t = Transport::new(config(), ReadPolicy::Always);
    t.send(now, bytes(4));
    t.close(now);
    t.send(now, bytes(100));
    t.handle_read_end(now);
    t.poll_transmit().unwrap();
    t.handle_write_error(now);
    t.handle_read_end(now);
    assert_eq!(drain(&mut t), [ShutdownBoth, Release]);
}

#[test]
fn release_is_given_once_and_last() {
    let start = Instant::now();
    let mut t = Transport::new(config(), ReadPolicy::OnGrant);
    t.close(start);
    t.handle_read_end(start);
    t.handle_read_end(start);
    t.handle_timeout(start + Duration::from_secs(60));
    t.close(start);
    t.send(start, bytes(1));
    t.grant_read();
    t.handle_write_error(start);
    assert_eq!(drain(&mut t), [ShutdownWrite, ShutdownBoth, Release]);
    assert_eq!(t.poll_transmit(), None);
}

// ---------------------------------------------------------------------------------------------
// Random schedules.

#[derive(Clone, Debug)]
enum Op {
    Send(usize),
    /// The runtime takes the next chunk to write.
    Transmit,
    /// The write of the chunk taken ends, having written `quarters`/4 of it.
    Written {
        quarters: usize,
    },
    WriteError,
    Grant,
    Read(usize),
    ReadEnd,
    Close,
    Advance(Duration),
    Timeout,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..=24usize).prop_map(Op::Send),
        3 => Just(Op::Transmit),
        3 => (0..=4usize).prop_map(|quarters| Op::Written { quarters }),
        1 => Just(Op::WriteError),
        2 => Just(Op::Grant),
        2 => (1..=100usize).prop_map(Op::Read),
        1 => Just(Op::ReadEnd),
        1 => Just(Op::Close),
        3 => (0..=300u64).prop_map(|ms| Op::Advance(Duration::from_millis(ms))),
        3 => Just(Op::Timeout),
    ]
}

fn transport_config() -> impl Strategy<Value = (TransportConfig, ReadPolicy)> {
    (0..=200u64, 0..=48usize, 0..=100u64, any::<bool>()).prop_map(
        |(write_ms, max_unwritten, linger_ms, on_grant)| {
            let config = TransportConfig {
                write_timeout: Duration::from_millis(write_ms),
                max_unwritten,
                close_linger: Duration::from_millis(linger_ms),
            };
            let policy = if on_grant {
                ReadPolicy::OnGrant
            } else {
                ReadPolicy::Always
            };
            (config, policy)
        },
    )
}

/// A transport, the runtime around it, and what the rules say about what it did so far.
struct Sim {
    t: Transport,
    config: TransportConfig,
    policy: ReadPolicy,
    now: Instant,
    /// The chunk the runtime is writing.
    chunk: Option<Bytes>,
    largest_send: usize,
    /// When the message now at the front of the queue got there (while open).
    front_since: Option<Instant>,
    /// Bytes the transport took for writing, and bytes the runtime wrote.
    accepted: usize,
    written: usize,
    granted: bool,
    failed: bool,
    reported: bool,
    shut_write: bool,
    released: bool,
    /// When close() was called, and whether the socket was open then.
    closed_at: Option<Instant>,
    closed_open: bool,
    /// Every write attempt since the close wrote all it was given, before the flush deadline.
    clean_flush: bool,
}

impl Sim {
    fn new(config: TransportConfig, policy: ReadPolicy) -> Self {
        Sim {
            t: Transport::new(config, policy),
            config,
            policy,
            now: Instant::now(),
            chunk: None,
            largest_send: 0,
            front_since: None,
            accepted: 0,
            written: 0,
            granted: false,
            failed: false,
            reported: false,
            shut_write: false,
            released: false,
            closed_at: None,
            closed_open: false,
            clean_flush: true,
        }
    }

    fn open(&self) -> bool {
        !self.failed && self.closed_at.is_none()
    }

    fn flush_by(&self) -> Option<Instant> {
        self.closed_at.map(|at| at + self.config.write_timeout)
    }

    /// Notes a write attempt after the close that did not write all it was given in time.
    fn note_write(&mut self, complete: bool) {
        if self
            .flush_by()
            .is_some_and(|by| !complete || self.now >= by)
        {
            self.clean_flush = false;
        }
    }

    fn apply(&mut self, op: &Op) {
        let now = self.now;
        match *op {
            Op::Send(n) => {
                let before = self.t.unwritten();
                let overflows = before > 0 && before + n > self.config.max_unwritten;
                let open = self.open();
                self.t.send(now, Bytes::from(vec![b'a'; n]));
                let actions = self.drain(op);
                if open && n > 0 && overflows {
                    assert!(actions.contains(&ShutdownBoth), "overflow must fail");
                    assert_eq!(self.t.unwritten(), 0);
                } else if open {
                    assert_eq!(actions, []);
                    assert_eq!(self.t.unwritten(), before + n);
                    if before == 0 && n > 0 {
                        self.front_since = Some(now);
                    }
                    self.accepted += n;
                    self.largest_send = self.largest_send.max(n);
                } else {
                    assert_eq!(self.t.unwritten(), before, "dropped after failure/close");
                }
                return;
            }
            Op::Transmit => {
                if self.chunk.is_none() {
                    self.chunk = self.t.poll_transmit();
                    if let Some(chunk) = &self.chunk {
                        assert!(!chunk.is_empty() && chunk.len() <= self.t.unwritten());
                    }
                } else {
                    assert_eq!(self.t.poll_transmit(), None, "a write is in flight");
                }
            }
            Op::Written { quarters } => {
                let Some(chunk) = self.chunk.take() else {
                    return;
                };
                let n = chunk.len() * quarters / 4;
                self.note_write(n == chunk.len());
                let before = self.t.unwritten();
                self.t.handle_written(now, n);
                self.written += n;
                assert_eq!(self.t.unwritten(), before - n);
                if n == chunk.len() {
                    self.front_since = (before > n).then_some(now);
                }
            }
            Op::WriteError => {
                if self.chunk.take().is_none() {
                    return;
                }
                self.note_write(false);
                self.t.handle_write_error(now);
            }
            Op::Grant => {
                self.t.grant_read();
                self.granted = self.policy == ReadPolicy::OnGrant && self.open();
            }
            Op::Read(n) => {
                if !self.t.wants_read() {
                    return;
                }
                let for_core = self.t.handle_read(now, n);
                assert_eq!(for_core, self.open(), "reads are for the core while open");
                self.granted = false;
            }
            Op::ReadEnd => {
                if !self.t.wants_read() {
                    return;
                }
                let lingering = self.shut_write;
                self.t.handle_read_end(now);
                self.drain(op);
                assert_eq!(
                    self.released, lingering,
                    "the peer's end releases a lingering socket"
                );
                return;
            }
            Op::Close => {
                if self.closed_at.is_some() {
                    return;
                }
                self.closed_open = self.open();
                self.closed_at = Some(now);
                self.t.close(now);
            }
            Op::Advance(by) => self.now += by,
            Op::Timeout => self.t.handle_timeout(now),
        }
        self.drain(op);
    }

    /// Drains the actions, carrying them out, and checks what may be given when.
    fn drain(&mut self, op: &Op) -> Vec<TransportAction> {
        let actions: Vec<_> = std::iter::from_fn(|| self.t.poll_action()).collect();
        for &action in &actions {
            assert!(!self.released, "{action:?} after Release");
            match action {
                ReportClosed => {
                    assert!(!self.reported, "ReportClosed twice");
                    assert!(self.closed_at.is_none(), "ReportClosed after close");
                    self.reported = true;
                }
                ShutdownWrite => {
                    assert!(self.closed_at.is_some() && !self.shut_write && !self.failed);
                    assert_eq!(self.t.unwritten(), 0);
                    assert_eq!(
                        self.written, self.accepted,
                        "bytes lost before ShutdownWrite"
                    );
                    self.shut_write = true;
                }
                ShutdownBoth => {
                    if self.closed_at.is_none() {
                        self.failed = true;
                    }
                    // The socket is shut: the runtime's write ends with it.
                    self.chunk = None;
                }
                Release => {
                    assert!(self.closed_at.is_some(), "Release before close");
                    if self.closed_open && self.clean_flush && !self.shut_write {
                        // Only running out of time can keep what was queued from going out.
                        assert!(matches!(op, Op::Timeout));
                        assert!(self.now >= self.flush_by().unwrap());
                    }
                    self.released = true;
                    self.chunk = None;
                }
            }
        }
        actions
    }

    /// What must hold after every step.
    fn check(&self, op: &Op) {
        let t = &self.t;
        assert!(t.unwritten() <= self.config.max_unwritten.max(self.largest_send));
        assert!(self.written <= self.accepted);
        assert_eq!(t.is_finished(), self.released);
        assert_eq!(
            t.is_closing(),
            (self.closed_at.is_some() && !self.failed) || self.released
        );
        if self.failed || self.released {
            assert_eq!(t.unwritten(), 0);
        }
        if t.wants_read() && self.open() && self.policy == ReadPolicy::OnGrant {
            assert!(
                self.granted && t.unwritten() == 0,
                "La read without grant or flush"
            );
        }
        if self.open() {
            let deadline = self.front_since.map(|at| at + self.config.write_timeout);
            assert_eq!(
                t.poll_timeout(),
                deadline,
                "the front message's write deadline"
            );
        }
        if let (Op::Timeout, Some(at)) = (op, self.closed_at) {
            let bound = at + self.config.write_timeout + self.config.close_linger;
            if self.now >= bound {
                assert!(
                    self.released,
                    "not released by write_timeout + close_linger"
                );
            }
        }
        if let Some(deadline) = t.poll_timeout() {
            if matches!(op, Op::Timeout) {
                assert!(
                    deadline > self.now,
                    "a due deadline survived handle_timeout"
                );
            }
            if deadline <= self.now {
                let mut fired = t.clone();
                fired.handle_timeout(self.now);
                let changed =
                    fired.poll_action().is_some() || fired.poll_timeout() != Some(deadline);
                assert!(changed, "poll_timeout in the past, yet nothing is due");
            }
        }
    }

    /// Ends the schedule the way a well-behaved runtime would: close, write everything in
    /// time, then wait out every deadline. Release must come, after every accepted byte.
    fn finish(&mut self) {
        let op = Op::Close;
        self.apply(&op);
        self.check(&op);
        if !self.t.is_finished() && self.flush_by().is_some_and(|by| self.now < by) {
            if let Some(chunk) = self.chunk.take() {
                self.t.handle_written(self.now, chunk.len());
                self.written += chunk.len();
            }
            self.written += write_all(&mut self.t, self.now);
            self.drain(&op);
            self.check(&op);
            assert!(self.shut_write, "a flush in time must end in ShutdownWrite");
        }
        self.now = self.closed_at.unwrap() + self.config.write_timeout + self.config.close_linger;
        let op = Op::Timeout;
        self.apply(&op);
        self.check(&op);
        assert!(self.released);
    }
}

fn run_schedule(config: TransportConfig, policy: ReadPolicy, ops: &[Op]) {
    let mut sim = Sim::new(config, policy);
    for op in ops {
        sim.apply(op);
        sim.check(op);
    }
    sim.finish();
}

#[test]
fn random_schedules_keep_every_rule() {
    let config = schedules::config("transport", 2048);
    let strategy = (transport_config(), prop::collection::vec(op(), 0..=60));
    let mut runner = TestRunner::new(config);
    let result = runner.run(&strategy, |((config, policy), ops)| {
        run_schedule(config, policy, &ops);
        Ok(())
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, ((config, policy), ops))) => {
            panic!("{why}\nminimal schedule: {config:?} {policy:?}\n{ops:#?}")
        }
        Err(e) => panic!("{e}"),
    }
}
