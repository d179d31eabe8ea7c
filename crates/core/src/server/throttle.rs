//! [`LoginThrottle`]: how many wrong passwords the server lets anyone try, and how often an
//! address may reconnect without logging in; and [`CheckQueue`], which runs argon2 checks a few
//! at a time, fairly across addresses.
//!
//! Guessing needs failed password checks, so that is what is counted, in token buckets (a burst,
//! then one back every period) per source address, per (address, account) and per account
//! (docs/hardening.md): a check is let through only while all three have a token. The tokens
//! are taken when the check starts (so that a hundred checks in flight at once cannot all pass
//! a bucket with one token) and given back if the password was right, with those of the
//! address's recent failures for that account: a person's typos cost nothing once they log in.
//! The account's bucket bounds
//! what one account can be guessed at however many addresses take part; an address that logged
//! in as that account recently is exempt from it until it fails for it, so that someone else's
//! guessing does not lock the real user out. Names are counted whether or not they exist, so the
//! throttle says nothing about which do.
//!
//! Memory is bounded whatever an attacker varies: every table has a cap; a bucket that has
//! refilled is as good as absent and is dropped when room is needed; a key that finds its table
//! full of live buckets shares one overflow bucket with every other such key. IPv6 addresses
//! are counted by their /64, which is what one host is usually given.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasher, Hash};
// Addresses are plain values; `core::net` holds them without any socket machinery.
use core::net::IpAddr;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use super::ConnId;
pub use crate::metrics::Throttled;
use crate::users::PasswordCheck;

/// A token bucket's shape: `burst` tokens when full, one back every `period`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Tokens when full: how many may be spent at once.
    pub burst: u32,
    /// How long one token takes to come back.
    pub period: Duration,
}

impl Budget {
    /// `burst` at once, then one every `period`.
    pub const fn new(burst: u32, period: Duration) -> Self {
        Budget { burst, period }
    }

    /// How long an empty bucket takes to fill: how long a bucket is remembered.
    fn span(self) -> Duration {
        self.period.saturating_mul(self.burst)
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{:?}", self.burst, self.period)
    }
}

/// The throttle's budgets (`None`: that budget is off) and its memory bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Failed password checks from one address (IPv6: one /64), whatever the accounts
    /// (`--throttle-address`).
    pub per_address: Option<Budget>,
    /// Failed checks from one address for one account; a right password fills it again
    /// (`--throttle-address-account`).
    pub per_address_account: Option<Budget>,
    /// Failed checks for one account from everywhere (`--throttle-account`).
    pub per_account: Option<Budget>,
    /// How long a successful login exempts its address from the account's shared budget
    /// (`--login-trust`); zero: never.
    pub trust: Duration,
    /// Connections from one address that end without a successful login (`--throttle-reconnects`).
    pub reconnects: Option<Budget>,
    /// The most buckets (or trusted pairs) one table holds.
    pub max_tracked: usize,
}

impl Default for ThrottleConfig {
    /// Defaults in the range of IRC services' and XMPP servers' login throttles: a person's
    /// typos and a checker's wrong passwords pass, a guesser gets a few a minute.
    fn default() -> Self {
        ThrottleConfig {
            per_address: Some(Budget::new(50, Duration::from_secs(2))),
            per_address_account: Some(Budget::new(10, Duration::from_secs(30))),
            per_account: Some(Budget::new(10, Duration::from_secs(10))),
            trust: Duration::from_secs(7 * 24 * 3600),
            reconnects: Some(Budget::new(200, Duration::from_secs(1))),
            max_tracked: 65_536,
        }
    }
}

impl ThrottleConfig {
    /// No budget at all: every check and every connection passes.
    pub fn off() -> Self {
        ThrottleConfig {
            per_address: None,
            per_address_account: None,
            per_account: None,
            trust: Duration::ZERO,
            reconnects: None,
            ..ThrottleConfig::default()
        }
    }
}

/// Where a connection comes from, as the throttle counts it: an IPv4 address, or an IPv6 /64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// An IPv4 address (also one written as `::ffff:a.b.c.d`).
    V4([u8; 4]),
    /// The first 64 bits of an IPv6 address.
    V6([u8; 8]),
}

impl Source {
    /// The source `ip` counts as.
    pub fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Source::V4(v4.octets()),
            IpAddr::V6(v6) => {
                let mut prefix = [0; 8];
                prefix.copy_from_slice(&v6.octets()[..8]);
                Source::V6(prefix)
            }
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::V4(octets) => write!(f, "{}", core::net::Ipv4Addr::from(*octets)),
            Source::V6(prefix) => {
                let mut octets = [0; 16];
                octets[..8].copy_from_slice(prefix);
                write!(f, "{}/64", core::net::Ipv6Addr::from(octets))
            }
        }
    }
}

/// An account as the throttle keys it: a keyed hash of the name, so that a table entry costs the
/// same however long the name, and nobody can choose names that collide.
type AccountKey = u64;

/// Token buckets by key, at most `cap` of them. Each bucket is one instant: when it will be
/// full again (the generic cell rate algorithm's "theoretical arrival time"); a bucket whose
/// instant has passed is full, the same as no bucket, so it can be dropped at any time.
#[derive(Debug)]
struct Buckets<K> {
    budget: Budget,
    full_at: FxHashMap<K, Instant>,
    /// Shared by the keys that find the table full of live buckets.
    overflow: Option<Instant>,
    cap: usize,
    /// No sweep for room before this, so that a table full of live buckets is not swept on
    /// every miss.
    next_sweep: Option<Instant>,
}

impl<K: Copy + Eq + Hash> Buckets<K> {
    fn new(budget: Budget, cap: usize) -> Self {
        Buckets {
            budget,
            full_at: FxHashMap::default(),
            overflow: None,
            cap: cap.max(1),
            next_sweep: None,
        }
    }

    /// Whether `key` would go to the overflow bucket: it has none of its own and there is no
    /// room for one even after dropping the full ones.
    fn overflows(&mut self, now: Instant, key: K) -> bool {
        if self.full_at.len() < self.cap || self.full_at.contains_key(&key) {
            return false;
        }
        if self.next_sweep.is_none_or(|at| at <= now) {
            self.full_at.retain(|_, full_at| *full_at > now);
            // A bucket spent now is full again within a period at most per token: by then the
            // sweep may find room.
            self.next_sweep = Some(now + self.budget.period);
        }
        self.full_at.len() >= self.cap
    }

    /// Whether `key`'s bucket has a token at `now`.
    fn has_token(&mut self, now: Instant, key: K) -> bool {
        let full_at = match self.overflows(now, key) {
            true => self.overflow,
            false => self.full_at.get(&key).copied(),
        };
        let after = full_at.map_or(now, |at| at.max(now)) + self.budget.period;
        after <= now + self.budget.span()
    }

    /// Spends one token of `key`'s bucket (look with [`Buckets::has_token`] first).
    fn take(&mut self, now: Instant, key: K) {
        let period = self.budget.period;
        let spend = |full_at: &mut Instant| *full_at = (*full_at).max(now) + period;
        match self.overflows(now, key) {
            true => spend(self.overflow.get_or_insert(now)),
            false => spend(self.full_at.entry(key).or_insert(now)),
        }
    }

    /// Tokens `key`'s own bucket lacks at `now`.
    fn spent(&self, now: Instant, key: K) -> u32 {
        let Some(lack) = self
            .full_at
            .get(&key)
            .map(|&at| at.saturating_duration_since(now))
        else {
            return 0;
        };
        let period = self.budget.period.as_nanos().max(1);
        u32::try_from(lack.as_nanos().div_ceil(period)).unwrap_or(u32::MAX)
    }

    /// Gives `tokens` back to `key`'s own bucket (a spent overflow token stays spent).
    fn give_back(&mut self, now: Instant, key: K, tokens: u32) {
        if let Some(full_at) = self.full_at.get_mut(&key) {
            match full_at.checked_sub(self.budget.period.saturating_mul(tokens)) {
                Some(earlier) if earlier > now => *full_at = earlier,
                _ => {
                    self.full_at.remove(&key);
                }
            }
        }
    }

    /// Fills `key`'s bucket.
    fn fill(&mut self, key: K) {
        self.full_at.remove(&key);
    }

    /// Gives every bucket the shape `budget` from `now` on, each keeping the tokens it lacks
    /// (at most the new burst): a reload must not hand a guesser who spent their budget a
    /// fresh one, nor take anything from those who spent nothing.
    fn rebudget(&mut self, now: Instant, budget: Budget) {
        if budget == self.budget {
            return;
        }
        let old = self.budget;
        let reshape = |full_at: Instant| {
            let lack = full_at.saturating_duration_since(now);
            let tokens = lack.as_nanos().div_ceil(old.period.as_nanos().max(1));
            let tokens = u32::try_from(tokens).unwrap_or(u32::MAX).min(budget.burst);
            (tokens > 0).then(|| now + budget.period.saturating_mul(tokens))
        };
        self.full_at = self
            .full_at
            .drain()
            .filter_map(|(key, full_at)| Some((key, reshape(full_at)?)))
            .collect();
        self.overflow = self.overflow.and_then(reshape);
        self.budget = budget;
        self.next_sweep = None;
    }

    fn len(&self) -> usize {
        self.full_at.len()
    }
}

/// Token buckets that may be off.
type MaybeBuckets<K> = Option<Buckets<K>>;

fn buckets<K: Copy + Eq + Hash>(budget: Option<Budget>, cap: usize) -> MaybeBuckets<K> {
    budget.map(|budget| Buckets::new(budget, cap))
}

/// `table` with the budget `budget` from `now` on: reshaped if it was on and stays on, new if
/// it was off, gone if it is off now.
fn rebudget<K: Copy + Eq + Hash>(
    table: &mut MaybeBuckets<K>,
    now: Instant,
    budget: Option<Budget>,
    cap: usize,
) {
    match (table.as_mut(), budget) {
        (Some(buckets), Some(budget)) => buckets.rebudget(now, budget),
        (None, Some(_)) | (Some(_), None) => *table = buckets(budget, cap),
        (None, None) => {}
    }
}

/// A password check the throttle let through, to be reported back with
/// [`LoginThrottle::succeeded`] or [`LoginThrottle::failed`] (or [`LoginThrottle::cancel`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempt {
    source: Source,
    account: AccountKey,
    /// Exempt from the account's shared budget: nothing was taken from it.
    trusted: bool,
}

/// The login throttle; see the module documentation.
#[derive(Debug)]
pub struct LoginThrottle {
    config: ThrottleConfig,
    /// The key of [`AccountKey`]'s hash: random per server, so names cannot be picked to collide.
    hasher: RandomState,
    per_address: MaybeBuckets<Source>,
    per_pair: MaybeBuckets<(Source, AccountKey)>,
    per_account: MaybeBuckets<AccountKey>,
    reconnects: MaybeBuckets<Source>,
    /// (address, account) pairs that logged in, and until when that exempts them from the
    /// account's shared budget.
    trusted: FxHashMap<(Source, AccountKey), Instant>,
    /// When each throttled address was last logged, so that a flood logs a line a minute.
    logged: FxHashMap<Source, Instant>,
}

/// At most one log line per throttled address in this time.
const LOG_EVERY: Duration = Duration::from_secs(60);

impl LoginThrottle {
    /// A throttle with these budgets and nothing counted yet.
    pub fn new(config: ThrottleConfig) -> Self {
        let cap = config.max_tracked;
        LoginThrottle {
            per_address: buckets(config.per_address, cap),
            per_pair: buckets(config.per_address_account, cap),
            per_account: buckets(config.per_account, cap),
            reconnects: buckets(config.reconnects, cap),
            config,
            hasher: RandomState::new(),
            trusted: FxHashMap::default(),
            logged: FxHashMap::default(),
        }
    }

    /// The budgets in force.
    pub fn config(&self) -> &ThrottleConfig {
        &self.config
    }

    /// Puts `config`'s budgets in force from `now` on (a reload, SIGHUP) without forgetting
    /// what was counted: each bucket keeps the tokens it lacks, up to the new burst; a budget
    /// turned on starts full, one turned off is forgotten; a trusted address keeps its trust
    /// for the new `trust` since its login. The memory bounds stay as they were.
    pub fn reconfigure(&mut self, now: Instant, config: ThrottleConfig) {
        let cap = self.config.max_tracked;
        rebudget(&mut self.per_address, now, config.per_address, cap);
        rebudget(&mut self.per_pair, now, config.per_address_account, cap);
        rebudget(&mut self.per_account, now, config.per_account, cap);
        rebudget(&mut self.reconnects, now, config.reconnects, cap);
        let (old, new) = (self.config.trust, config.trust);
        if new != old {
            // `until` is the login plus the old trust: the login plus the new one instead.
            self.trusted.retain(|_, until| {
                match until
                    .checked_sub(old)
                    .and_then(|login| login.checked_add(new))
                {
                    Some(later) if later > now => {
                        *until = later;
                        true
                    }
                    _ => false,
                }
            });
        }
        self.config = ThrottleConfig {
            max_tracked: cap,
            ..config
        };
    }

    /// Asks to check a password for `user` from `ip`: refused with the first budget that is
    /// spent, or let through with its tokens taken.
    pub fn start(&mut self, now: Instant, ip: IpAddr, user: &[u8]) -> Result<Attempt, Throttled> {
        let source = Source::of(ip);
        let account = self.hasher.hash_one(user);
        let pair = (source, account);
        let trusted = self.trusted.get(&pair).is_some_and(|&until| until > now);
        if let Some(pairs) = &mut self.per_pair {
            if !pairs.has_token(now, pair) {
                return Err(Throttled::AddressAccount);
            }
        }
        if let Some(addresses) = &mut self.per_address {
            if !addresses.has_token(now, source) {
                return Err(Throttled::Address);
            }
        }
        if let (Some(accounts), false) = (&mut self.per_account, trusted) {
            if !accounts.has_token(now, account) {
                return Err(Throttled::Account);
            }
        }
        if let Some(pairs) = &mut self.per_pair {
            pairs.take(now, pair);
        }
        if let Some(addresses) = &mut self.per_address {
            addresses.take(now, source);
        }
        if let (Some(accounts), false) = (&mut self.per_account, trusted) {
            accounts.take(now, account);
        }
        Ok(Attempt {
            source,
            account,
            trusted,
        })
    }

    /// The password was right: its tokens come back; so do, to the address's and the
    /// account's budgets, those of the failures this address made for this account since its
    /// last success (typos of the real user, who has now proved who they are); the pair's budget
    /// is full again, and the address is trusted for the account.
    pub fn succeeded(&mut self, now: Instant, attempt: Attempt) {
        self.cancel(now, attempt);
        let pair = (attempt.source, attempt.account);
        if let Some(pairs) = &mut self.per_pair {
            let typos = pairs.spent(now, pair);
            pairs.fill(pair);
            if let Some(addresses) = &mut self.per_address {
                addresses.give_back(now, attempt.source, typos);
            }
            if let (Some(accounts), false) = (&mut self.per_account, attempt.trusted) {
                accounts.give_back(now, attempt.account, typos);
            }
        }
        if self.config.trust.is_zero() {
            return;
        }
        if !self.trusted.contains_key(&pair) && self.trusted.len() >= self.config.max_tracked {
            self.trusted.retain(|_, until| *until > now);
        }
        // Full of live trust: this pair goes without, which costs it nothing but the exemption.
        if self.trusted.contains_key(&pair) || self.trusted.len() < self.config.max_tracked {
            self.trusted.insert(pair, now + self.config.trust);
        }
    }

    /// The password was wrong: the tokens stay spent, and the address is no longer trusted for
    /// the account.
    pub fn failed(&mut self, now: Instant, attempt: Attempt) {
        self.trusted.remove(&(attempt.source, attempt.account));
        // Trust spared this check the account's budget, not the failure: it is charged now, so
        // that every failure a later success forgives (gives back) was taken from that budget.
        if let (Some(accounts), true) = (&mut self.per_account, attempt.trusted) {
            accounts.take(now, attempt.account);
        }
    }

    /// No check was made after all: the tokens come back.
    pub fn cancel(&mut self, now: Instant, attempt: Attempt) {
        if let Some(pairs) = &mut self.per_pair {
            pairs.give_back(now, (attempt.source, attempt.account), 1);
        }
        if let Some(addresses) = &mut self.per_address {
            addresses.give_back(now, attempt.source, 1);
        }
        if let (Some(accounts), false) = (&mut self.per_account, attempt.trusted) {
            accounts.give_back(now, attempt.account, 1);
        }
    }

    /// Whether a new connection from `ip` is let in: refused while the address's connections
    /// keep ending without a login.
    pub fn admit(&mut self, now: Instant, ip: IpAddr) -> Result<(), Throttled> {
        match &mut self.reconnects {
            Some(reconnects) => match reconnects.has_token(now, Source::of(ip)) {
                true => Ok(()),
                false => Err(Throttled::Reconnects),
            },
            None => Ok(()),
        }
    }

    /// A connection from `ip` ended without a successful login.
    pub fn ended_without_login(&mut self, now: Instant, ip: IpAddr) {
        let source = Source::of(ip);
        if let Some(reconnects) = &mut self.reconnects {
            if reconnects.has_token(now, source) {
                reconnects.take(now, source);
            }
        }
    }

    /// Whether to log that `ip` was throttled: once a minute per address at most.
    pub fn should_log(&mut self, now: Instant, ip: IpAddr) -> bool {
        let source = Source::of(ip);
        if self
            .logged
            .get(&source)
            .is_some_and(|&at| now < at + LOG_EVERY)
        {
            return false;
        }
        if self.logged.len() >= self.config.max_tracked {
            self.logged.retain(|_, at| now < *at + LOG_EVERY);
            if self.logged.len() >= self.config.max_tracked {
                return false;
            }
        }
        self.logged.insert(source, now);
        true
    }

    /// How many entries the throttle holds in all: what its memory grows with.
    pub fn tracked(&self) -> usize {
        let tables = [
            self.per_address.as_ref().map(Buckets::len),
            self.per_pair.as_ref().map(Buckets::len),
            self.per_account.as_ref().map(Buckets::len),
            self.reconnects.as_ref().map(Buckets::len),
        ];
        tables.into_iter().flatten().sum::<usize>() + self.trusted.len() + self.logged.len()
    }
}

/// Password checks waiting for a turn and running: at most `max_running` at once, the rest in a
/// bounded queue taken round robin by source address, so that one address's flood cannot starve
/// another's login.
#[derive(Debug)]
pub struct CheckQueue {
    max_running: usize,
    max_queued: usize,
    running: Vec<ConnId>,
    queued: usize,
    /// Each address's waiting checks, oldest first.
    by_source: HashMap<Source, VecDeque<(ConnId, PasswordCheck)>, RandomState>,
    /// The addresses with checks waiting, in turn order.
    turns: VecDeque<Source>,
}

impl CheckQueue {
    /// At most `max_running` checks at once (at least one) and `max_queued` waiting.
    pub fn new(max_running: usize, max_queued: usize) -> Self {
        CheckQueue {
            max_running: max_running.max(1),
            max_queued,
            running: Vec::new(),
            queued: 0,
            by_source: HashMap::default(),
            turns: VecDeque::new(),
        }
    }

    /// Queues a check for `conn` from `ip`, or hands it back if the queue is full.
    pub fn push(
        &mut self,
        ip: IpAddr,
        conn: ConnId,
        check: PasswordCheck,
    ) -> Result<(), PasswordCheck> {
        if self.queued >= self.max_queued {
            return Err(check);
        }
        let source = Source::of(ip);
        let waiting = self.by_source.entry(source).or_default();
        if waiting.is_empty() {
            self.turns.push_back(source);
        }
        waiting.push_back((conn, check));
        self.queued += 1;
        Ok(())
    }

    /// The next check to run, if one may start now: the next address in turn gives its oldest.
    /// It counts as running until [`CheckQueue::finished`].
    pub fn start_next(&mut self) -> Option<(ConnId, PasswordCheck)> {
        if self.running.len() >= self.max_running {
            return None;
        }
        let source = self.turns.pop_front()?;
        let waiting = self.by_source.get_mut(&source)?;
        let (conn, check) = waiting.pop_front()?;
        if waiting.is_empty() {
            self.by_source.remove(&source);
        } else {
            self.turns.push_back(source);
        }
        self.queued -= 1;
        self.running.push(conn);
        Some((conn, check))
    }

    /// The check of `conn` came back; `false` if none was running for it.
    pub fn finished(&mut self, conn: ConnId) -> bool {
        match self.running.iter().position(|&running| running == conn) {
            Some(index) => {
                self.running.swap_remove(index);
                true
            }
            None => false,
        }
    }

    /// At most `max_running` checks at once (at least one) and `max_queued` waiting from now
    /// on: the checks running go on and those waiting keep their turn; past a lowered bound,
    /// nothing new starts or queues until the counts are back under it.
    pub fn resize(&mut self, max_running: usize, max_queued: usize) {
        self.max_running = max_running.max(1);
        self.max_queued = max_queued;
    }

    /// Checks running.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Checks waiting.
    pub fn queued(&self) -> usize {
        self.queued
    }
}
