//! docs/protocol.md §3, Delivery over Lb: the per-recipient queue and its `--max-queue` bound.

use std::net::{IpAddr, Ipv4Addr};
use std::thread;
use std::time::{Duration, Instant};

use simple_im_core::protocol::{Delivery, Response};

use super::session::Session;
use super::{Account, Check, Ctx, QUIET};
use crate::outcome::{escape, show_duration, Failure, Got, Outcome, Problem};

pub(super) const CHECKS: &[Check] = &[Check::new(
    "queue-full-304",
    "with one message outstanding and --max-queue waiting for a recipient, one more is refused \
     304 at once; every waiting one still gets its one answer",
    queue_full_304,
)
.with_extra_time(|config| per_sender(config.max_queue))];

/// Time for one more sender to log in and open Lb, on a slow server: the check logs in
/// `--max-queue` of them and more.
fn per_sender(senders: usize) -> Duration {
    let senders = u64::try_from(senders).unwrap_or(u64::MAX);
    Duration::from_micros(5_000u64.saturating_mul(senders))
}

/// How often the senders' connections are looked at while the refusal is awaited.
const SWEEP: Duration = Duration::from_millis(5);

/// The least time a server is given to read each message of the flood before its silence
/// counts as a queue with no bound.
const PER_MESSAGE: Duration = Duration::from_millis(1);

/// Senders per source address: a server may cap the clients of one address (im-server's
/// `--max-per-ip` is 1,000), which a queue of 1,024 would pass.
const PER_ADDRESS: usize = 250;

/// Where the `n`th sender connects from: against a server on 127.0.0.1, the senders are
/// spread over 127.0.0.1, 127.0.0.2, … (all of 127.0.0.0/8 is this machine's); elsewhere,
/// wherever the system picks.
fn source(ctx: &Ctx, n: usize) -> Option<IpAddr> {
    let on_loopback = ctx
        .config
        .addrs
        .iter()
        .all(|addr| addr.ip() == IpAddr::V4(Ipv4Addr::LOCALHOST));
    let step = u8::try_from(n / PER_ADDRESS).ok()?;
    (on_loopback && step > 0)
        .then(|| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1u8.saturating_add(step))))
}

/// `needed` accounts of the users file, never the probe's: the recipient and the senders.
fn queue_accounts(ctx: &Ctx, needed: usize) -> Result<Vec<Account>, Problem> {
    let probe = ctx.config.probe_account().map(|account| account.name);
    let usable: Vec<Account> = ctx
        .config
        .accounts
        .iter()
        .filter(|account| Some(&account.name) != probe.as_ref())
        .take(needed)
        .cloned()
        .collect();
    if usable.len() < needed {
        return Err(Problem::Skip(format!(
            "needs {needed} users besides the probe's (--max-queue {} and 3 more) and the users \
             file has {}: pass the server's --max-queue, or let --spawn write the users file",
            ctx.config.max_queue,
            usable.len()
        )));
    }
    Ok(usable)
}

fn queue_full_304(ctx: &Ctx) -> Outcome {
    let waiting = ctx.config.max_queue;
    let accounts = queue_accounts(ctx, waiting + 3)?;
    let Some((recipient, senders)) = accounts.split_first() else {
        return Err(Failure::new("im-check bug: no accounts").into());
    };
    let mut r = ctx.ready(recipient)?;
    let mut senders: Vec<Session> = senders
        .iter()
        .enumerate()
        .map(|(n, account)| ctx.ready_from(account, source(ctx, n)))
        .collect::<Result<_, _>>()?;
    let Some((first, rest)) = senders.split_first_mut() else {
        return Err(Failure::new("im-check bug: no senders").into());
    };
    // r never acknowledges this one, so everything after it waits in r's queue.
    let outstanding: &[u8] = b"the outstanding one";
    let first_to = first.send_to(&r.user, outstanding)?;
    r.expect_from(&first.user, outstanding)?;
    // Once that one times out, r's session ends and every waiting message fails: what is seen
    // of the queue must be seen before (a little before: the 304s take a moment to come).
    let cutoff = ctx
        .config
        .ack_timeout
        .map(|timeout| Instant::now() + timeout.mul_f64(0.9));
    let mut sent = Vec::with_capacity(rest.len());
    for (n, sender) in rest.iter_mut().enumerate() {
        let content = format!("queued {}", n + 1).into_bytes();
        let to = sender.send_to(&r.user, &content)?;
        sent.push((to, content));
    }
    let flood_end = Instant::now();
    // Which of them finds the queue full is the server's order of reading them; exactly one.
    let refused = the_refused_one(ctx, rest, &sent, waiting, cutoff.map(|c| (c, flood_end)))?;
    // Once the one in flight is acknowledged, a waiting one follows it out.
    r.ack()?;
    first.expect_reply(&first_to, &Response::Delivered)?;
    let next = r.lb()?.read_line(ctx.deadline).map_err(|got| {
        Failure::unexpected(
            format!("{}'s Lb after its 302", r.name),
            "a queued /from",
            got,
        )
    })?;
    let queued_next = rest
        .iter()
        .zip(&sent)
        .enumerate()
        .any(|(n, (sender, (_, content)))| {
            n != refused
                && next
                    == Delivery::From {
                        sender: &sender.user,
                        content,
                    }
                    .to_bytes()
        });
    if !queued_next {
        return Err(Failure::unexpected(
            format!("{}'s Lb after its 302", r.name),
            "one of the queued /from lines",
            Got::Bytes(next),
        )
        .into());
    }
    // r vanishes: the message in flight and every one still waiting fail, each with its 304.
    if let Some(lb) = r.lb.as_mut() {
        lb.reset();
    }
    r.la.reset();
    for (n, (sender, (to, _))) in rest.iter_mut().zip(&sent).enumerate() {
        if n != refused {
            sender.expect_reply(to, &Response::DeliveryFailed)?;
        }
    }
    Ok(())
}

/// Waits for the one sender among `senders` whose `/to` (in `sent`) is refused with `304`
/// because the recipient's queue of `waiting` was full, and makes sure no other got an answer
/// before `cutoff`, when the outstanding message's time-out may fail them all (with the moment
/// the last of them was sent).
fn the_refused_one(
    ctx: &Ctx,
    senders: &mut [Session],
    sent: &[(Vec<u8>, Vec<u8>)],
    waiting: usize,
    cutoff: Option<(Instant, Instant)>,
) -> Result<usize, Problem> {
    let end = cutoff.map_or(ctx.deadline, |(cutoff, _)| cutoff.min(ctx.deadline));
    let refusal = Response::DeliveryFailed.to_bytes();
    let mut answered: Vec<(usize, Result<Vec<u8>, Got>)> = Vec::new();
    let mut quiet_until: Option<Instant> = None;
    loop {
        for (n, sender) in senders.iter_mut().enumerate() {
            if answered.iter().any(|(m, _)| *m == n) {
                continue;
            }
            match sender.la.try_line() {
                Ok(None) => {}
                Ok(Some(line)) => answered.push((n, Ok(line))),
                Err(got) => answered.push((n, Err(got))),
            }
        }
        let now = Instant::now();
        match quiet_until {
            // A refusal comes at once; anything else the server meant to send comes with it.
            None if !answered.is_empty() => quiet_until = Some((now + QUIET).min(end)),
            Some(until) if now >= until => break,
            _ if now >= end => break,
            _ => {}
        }
        thread::sleep(SWEEP);
    }
    let mut answered = answered.into_iter();
    let Some((refused, first)) = answered.next() else {
        // A server gets a moment per message to read them all; a time-out too short for that
        // tells nothing about the queue.
        if let Some((cutoff, flood_end)) = cutoff {
            let left = cutoff.saturating_duration_since(flood_end);
            let needed = QUIET.max(PER_MESSAGE * u32::try_from(sent.len()).unwrap_or(u32::MAX));
            if left < needed {
                return Err(Problem::Skip(format!(
                    "the outstanding message's ack timeout left {} to read {} messages after \
                     the last was sent, too little to tell a full queue: give the server a \
                     longer --ack-timeout (and im-check the same), or a shorter --max-queue",
                    show_duration(left),
                    sent.len()
                )));
            }
        }
        return Err(Failure::new(format!(
            "none of the {} messages sent behind the outstanding one was refused: with \
             --max-queue {waiting}, the last one to reach the full queue must get 304 at once \
             (is the queue unbounded, or one too long?)",
            sent.len()
        ))
        .into());
    };
    let context = |n: usize| {
        format!(
            "answer to {}'s {} (sent while the recipient had one message outstanding and {} \
             more were sent to it)",
            senders[n].name,
            escape(sent[n].0.strip_suffix(b"\n").unwrap_or(&sent[n].0)),
            sent.len() - 1
        )
    };
    match first {
        Ok(line) if line == refusal => {}
        Ok(line) => {
            return Err(Failure::mismatch(context(refused), &refusal, Got::Bytes(line)).into())
        }
        Err(got) => return Err(Failure::mismatch(context(refused), &refusal, got).into()),
    }
    if let Some((other, got)) = answered.next() {
        let got = got.map_or_else(|got| got, Got::Bytes);
        return Err(Failure::unexpected(
            format!(
                "{} (a second answer while only one message should find the queue of \
                 --max-queue {waiting} full: is the queue shorter?)",
                context(other)
            ),
            "nothing yet: it waits in the queue",
            got,
        )
        .into());
    }
    Ok(refused)
}
