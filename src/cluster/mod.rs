//! The cluster engine: the other end of a node's [`ClusterLink`](crate::driver::ClusterLink),
//! carrying the hub's [`ClusterOutput`]s to Redis and Redis's answers and the other nodes'
//! messages back as [`ClusterInput`]s. [`join`] registers a node, [`Membership::run`] serves it.
//!
//! # Keys (`{p}` is [`ClusterConfig::prefix`])
//!
//! - `{p}:node-seq`: the last node id handed out (`INCR`); ids are never reused.
//! - `{p}:node:{n}`: node `n`'s lease, a key that expires after [`ClusterConfig::lease`]
//!   unless `n` renews it every [`ClusterConfig::heartbeat`].
//! - `{p}:nodes`: the set of registered node ids.
//! - `{p}:where`: hash, user → `"<node>:<conn>"`, the one session holding that user.
//! - `{p}:order`: the last login order handed out.
//! - `{p}:online`: sorted set of the users online, scored by login order.
//! - `{p}:node-users:{n}`: the users node `n` claimed (so a reaper finds them).
//! - `{p}:inbox:{n}`: stream of node `n`'s messages from every node, itself included (one
//!   field, `m`, in the format of `codec`); `n` trims what it read.
//!
//! Claims, releases, the online list and reaping are Lua scripts, so each is one atomic step.
//!
//! # Leases and reaping
//!
//! A node whose lease key is gone is dead: every node checks all others on each heartbeat and
//! reaps a dead one (in one script, and only if its lease is still gone: its users leave
//! `where` and `online`, its `node-users` and inbox are deleted, it leaves `nodes`), then tells
//! its own hub [`ClusterInput::NodeDown`] — once, and again only if that node was seen alive
//! since. A node that vanished from `nodes` (reaped by another, or left) is down too.
//!
//! A node that finds its own lease gone (renewal answered nil: it was paused, or Redis lost its
//! data), or that has not renewed it for longer than the lease (Redis unreachable), tells its hub
//! [`ClusterInput::LeaseLost`] (which ends every local session) and, once Redis answers,
//! registers again under the same id, dropping whatever of its old users the directory still
//! holds. A claim is refused while the lease is lost, and by the claim script itself if the
//! lease key is missing (fencing).
//!
//! # When Redis is unreachable
//!
//! Every Redis call gives up after at most a heartbeat (an inbox read after its one-second block
//! plus a heartbeat). Claims then answer `false` (fail closed: never two sessions of one user),
//! queries `None`; a release, and the claim whose answer was lost (it may have been carried
//! out), are retried once Redis answers again (or cleared when the node registers again). Messages to other nodes are retried in order with
//! backoff until Redis takes them (at least once: a retried batch may arrive twice); only one that
//! Redis refuses outright (a server error) is dropped, and a `Deliver` among them is answered
//! locally as not delivered, so no sender waits on it. After a lease without renewal the hub is
//! told `LeaseLost`. A node that lost its lease may still serve old sessions for up to a
//! heartbeat after Redis expired its key.
//!
//! Known limit: node ids come from `{p}:node-seq`; if Redis loses its data, a node joining
//! before the old ones registered again may get an id still in use. Run Redis with persistence
//! if nodes join while others run.

mod clock;
mod codec;
mod config;
mod link;
mod scripts;

use std::cell::Cell;
use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant};

use redis::{Client, ErrorKind, Value};

use bytes::Bytes;
pub use clock::Clock;
pub use config::ClusterConfig;
use link::Link;
use simple_im_core::server::{
    ClusterInput, ClusterOutput, ConnId, NodeId, NodeMessage, OnlineEntry, RequestId,
};

/// Why a node could not join its cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterError {
    /// The URL is not one the Redis client takes.
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Redis did not answer, or refused to register the node.
    Unreachable {
        /// The URL given.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterError::InvalidUrl { url, reason } => {
                write!(f, "invalid Redis URL {url}: {reason}")
            }
            ClusterError::Unreachable { url, reason } => {
                write!(f, "cannot reach Redis at {url}: {reason}")
            }
        }
    }
}

impl std::error::Error for ClusterError {}

/// The names of the cluster's keys.
#[derive(Clone, Debug)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn seq(&self) -> String {
        format!("{}:node-seq", self.prefix)
    }
    fn lease(&self, node: NodeId) -> String {
        format!("{}:node:{}", self.prefix, node.0)
    }
    fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }
    fn where_(&self) -> String {
        format!("{}:where", self.prefix)
    }
    fn order(&self) -> String {
        format!("{}:order", self.prefix)
    }
    fn online(&self) -> String {
        format!("{}:online", self.prefix)
    }
    fn node_users(&self, node: NodeId) -> String {
        format!("{}:node-users:{}", self.prefix, node.0)
    }
    fn inbox(&self, node: NodeId) -> String {
        format!("{}{}", self.inbox_prefix(), node.0)
    }
    /// What a node's id follows in its inbox's name.
    fn inbox_prefix(&self) -> String {
        format!("{}:inbox:", self.prefix)
    }
}

/// A node registered in its cluster, not yet serving: [`Membership::run`] keeps its lease and
/// carries its hub's traffic.
pub struct Membership {
    config: ClusterConfig,
    client: Client,
    node: NodeId,
    keys: Keys,
    clock: Clock,
    directory: Link,
    /// When the registration that took the lease was sent: the lease runs from there.
    registered: Instant,
}

/// Registers a new node in the cluster at `config.url`, under a fresh id (`INCR
/// {p}:node-seq`), with its lease taken. Its timers are `clock`'s, those of the runtime it runs
/// on ([`Clock::of`]).
pub async fn join(clock: Clock, config: &ClusterConfig) -> Result<Membership, ClusterError> {
    // The client takes `redis://`, `unix://` and `redis+unix://` as they are.
    let client = Client::open(config.url.as_str()).map_err(|error| ClusterError::InvalidUrl {
        url: config.url.clone(),
        reason: error.to_string(),
    })?;
    let unreachable = |error: redis::RedisError| ClusterError::Unreachable {
        url: config.url.clone(),
        reason: error.to_string(),
    };
    let keys = Keys {
        prefix: config.prefix.clone(),
    };
    let mut directory = Link::new(client.clone(), clock.clone(), config.heartbeat);
    let id: u64 = directory
        .query(redis::cmd("INCR").arg(keys.seq()))
        .await
        .map_err(unreachable)?;
    let node = NodeId(id);
    let registered = Instant::now();
    register(&mut directory, &keys, node, config.lease)
        .await
        .map_err(unreachable)?;
    log::info!("joined the cluster at {} as node {}", config.url, node.0);
    Ok(Membership {
        config: config.clone(),
        client,
        node,
        keys,
        clock,
        directory,
        registered,
    })
}

/// How long a node's inbox outlives its last renewal: long enough that a live reader always
/// gets there first; short enough that the inbox of a dead node nobody reaped does not stay.
fn inbox_ttl(lease: Duration) -> u64 {
    millis(lease * 10)
}

/// Takes (again) `node`'s lease and membership, dropping its old users, and makes its inbox
/// if there is none.
async fn register(
    link: &mut Link,
    keys: &Keys,
    node: NodeId,
    lease: Duration,
) -> redis::RedisResult<()> {
    let invocation = {
        let mut invocation = scripts::REGISTER.prepare_invoke();
        invocation
            .key(keys.node_users(node))
            .key(keys.where_())
            .key(keys.online())
            .key(keys.seq())
            .key(keys.lease(node))
            .key(keys.nodes())
            .key(keys.inbox(node))
            .arg(node.0)
            .arg(millis(lease))
            .arg(inbox_ttl(lease));
        invocation
    };
    link.invoke::<i64>(&invocation).await.map(drop)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// What the engine's loops share.
#[derive(Default)]
struct State {
    /// This node's lease is lost and not yet taken again.
    lost: Cell<bool>,
    /// The hub has closed its outputs: finish what is queued, then leave.
    stopping: Cell<bool>,
}

/// How many messages go to Redis in one pipeline.
const SEND_BATCH: usize = 256;
/// About how many entries an inbox keeps at most, give or take a heartbeat's appends (its node
/// trims it to this with every renewal of its lease): a bound on what a node whose reader
/// stopped costs Redis.
const INBOX_MAXLEN: usize = 100_000;
/// How many inbox entries one read may take.
const INBOX_COUNT: usize = 1000;
/// How long an inbox read blocks in Redis.
const INBOX_BLOCK: Duration = Duration::from_secs(1);

impl Membership {
    /// This node's id in the cluster, for [`Server::clustered`](simple_im_core::server::Server::clustered).
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Serves the hub at the other end of `outputs` and `inputs` until `outputs` closes; then
    /// leaves the cluster (its users go offline, the other nodes are told it is down). Dropping
    /// the future instead is a crash: the node's lease runs out and another node reaps it.
    ///
    /// Runs on the caller's executor (it spawns nothing itself); the Redis client drives its
    /// connections on smol's global executor.
    pub fn run(
        self,
        outputs: async_channel::Receiver<ClusterOutput>,
        inputs: async_channel::Sender<ClusterInput>,
    ) -> impl Future<Output = ()> {
        let Membership {
            config,
            client,
            node,
            keys,
            clock,
            directory,
            registered,
        } = self;
        let state = Rc::new(State::default());
        let (directory_tx, directory_rx) = async_channel::unbounded();
        let (send_tx, send_rx) = async_channel::unbounded();
        let dispatch = {
            let state = state.clone();
            async move {
                while let Ok(output) = outputs.recv().await {
                    let _ = match output {
                        ClusterOutput::Send { to, message } => {
                            send_tx.send(vec![Outgoing::To(to, message)]).await.is_ok()
                        }
                        ClusterOutput::SendAll { messages } => {
                            let messages = messages.into_iter();
                            let batch = messages.map(|(to, message)| Outgoing::To(to, message));
                            send_tx.send(batch.collect()).await.is_ok()
                        }
                        ClusterOutput::DeliverTo {
                            request,
                            user,
                            line,
                        } => {
                            let deliver = Outgoing::ToUser {
                                request,
                                user,
                                line,
                            };
                            send_tx.send(vec![deliver]).await.is_ok()
                        }
                        other => directory_tx.send(other).await.is_ok(),
                    };
                }
                state.stopping.set(true);
            }
        };
        let engine = Engine {
            config,
            client,
            node,
            keys,
            clock,
            state,
            inputs,
        };
        async move {
            let engine = &engine;
            let main = async {
                let ((), (mut link, ())) = futures_lite::future::zip(
                    dispatch,
                    futures_lite::future::zip(
                        engine.directory(directory, directory_rx),
                        engine.sender(send_rx),
                    ),
                )
                .await;
                engine.leave(&mut link).await;
            };
            let background = futures_lite::future::zip(engine.inbox(), engine.lease(registered));
            futures_lite::future::or(main, async {
                background.await;
            })
            .await
        }
    }
}

/// The loops of one running node.
struct Engine {
    config: ClusterConfig,
    client: Client,
    node: NodeId,
    keys: Keys,
    clock: Clock,
    state: Rc<State>,
    inputs: async_channel::Sender<ClusterInput>,
}

impl Engine {
    /// Tells the hub; a hub that is gone hears nothing more.
    async fn tell(&self, input: ClusterInput) {
        let _ = self.inputs.send(input).await;
    }

    /// The directory's requests, answered one at a time in the order they came.
    async fn directory(
        &self,
        mut link: Link,
        requests: async_channel::Receiver<ClusterOutput>,
    ) -> Link {
        let keys = &self.keys;
        let mut unreleased = Unreleased::default();
        while let Ok(request) = requests.recv().await {
            if link.connected() {
                unreleased.retry(self, &mut link).await;
            }
            match request {
                ClusterOutput::Claim { conn, user } => {
                    let claimed = if self.state.lost.get() {
                        log::warn!("refusing a claim for {conn}: this node's lease is lost");
                        false
                    } else {
                        let invocation = {
                            let mut invocation = scripts::CLAIM.prepare_invoke();
                            invocation
                                .key(keys.lease(self.node))
                                .key(keys.where_())
                                .key(keys.order())
                                .key(keys.online())
                                .key(keys.node_users(self.node))
                                .arg(&user)
                                .arg(self.at(conn));
                            invocation
                        };
                        match link.invoke::<i64>(&invocation).await {
                            Ok(order) if order >= 0 => true,
                            Ok(-1) => false,
                            Ok(-2) => {
                                log::warn!(
                                    "refusing a claim for {conn}: this node's lease is gone"
                                );
                                false
                            }
                            Ok(other) => {
                                log::warn!("refusing a claim for {conn}: the script said {other}");
                                false
                            }
                            Err(error) => {
                                log::warn!("refusing a claim for {conn}: {error}");
                                // It may have been carried out, its answer lost.
                                unreleased.push(&self.state, conn, user);
                                false
                            }
                        }
                    };
                    self.tell(ClusterInput::Claimed { conn, claimed }).await;
                }
                ClusterOutput::Release { conn, user } => {
                    if let Err(error) = self.release(&mut link, conn, &user).await {
                        log::warn!("cannot release the claim of {conn} yet: {error}");
                        unreleased.push(&self.state, conn, user);
                    }
                    // Released, or kept for a retry: either way the session's last answer
                    // waits no longer.
                    self.tell(ClusterInput::Released { conn }).await;
                }
                ClusterOutput::Query { query } => {
                    let invocation = {
                        let mut invocation = scripts::ONLINE.prepare_invoke();
                        invocation.key(keys.online()).key(keys.where_());
                        invocation
                    };
                    let entries = link
                        .invoke::<Vec<Vec<u8>>>(&invocation)
                        .await
                        .map(|flat| online_entries(flat.chunks_exact(2)))
                        .map_err(|error| log::warn!("cannot ask who is online: {error}"))
                        .ok();
                    self.tell(ClusterInput::Online { query, entries }).await;
                }
                // The sender's.
                ClusterOutput::Send { .. }
                | ClusterOutput::SendAll { .. }
                | ClusterOutput::DeliverTo { .. } => {}
            }
        }
        link
    }

    /// Ends `conn`'s claim on `user`, if it holds it.
    async fn release(&self, link: &mut Link, conn: ConnId, user: &[u8]) -> redis::RedisResult<()> {
        let keys = &self.keys;
        let invocation = {
            let mut invocation = scripts::RELEASE.prepare_invoke();
            invocation
                .key(keys.where_())
                .key(keys.online())
                .key(keys.node_users(self.node))
                .arg(user)
                .arg(self.at(conn));
            invocation
        };
        link.invoke::<i64>(&invocation).await.map(drop)
    }

    /// `"<node>:<conn>"`, a session of this node as `where` holds it.
    fn at(&self, conn: ConnId) -> String {
        format!("{}:{}", self.node.0, conn.0)
    }

    /// Messages to the nodes (this one included), appended to their inboxes in order, each
    /// `SendAll`'s atomically: a batch of them is one `MULTI`/`EXEC`, so no node reads a
    /// request's delivery before all of its deliveries are in, and a retried batch lands whole
    /// or not at all. A `/to` ([`Outgoing::ToUser`]) is looked up and appended in that same
    /// step, by the `DELIVER_TO` script, and routed once the batch is through.
    async fn sender(&self, messages: async_channel::Receiver<Vec<Outgoing>>) {
        let heartbeat = self.config.heartbeat;
        let mut link = Link::new(self.client.clone(), self.clock.clone(), heartbeat);
        // Taken from the hub while a batch was being retried, to go next.
        let mut waiting: VecDeque<Outgoing> = VecDeque::new();
        loop {
            if waiting.is_empty() {
                match messages.recv().await {
                    Ok(more) => waiting.extend(more),
                    Err(_) => break,
                }
            }
            while waiting.len() < SEND_BATCH {
                match messages.try_recv() {
                    Ok(more) => waiting.extend(more),
                    Err(_) => break,
                }
            }
            let mut batch: Vec<Outgoing> = waiting.drain(..).collect();
            let (mut pipe, mut routes) = self.appends(&batch);
            let mut backoff = Duration::from_millis(50).min(heartbeat);
            let mut failing = false;
            loop {
                match link.pipe::<Vec<Value>>(&pipe).await {
                    Ok(replies) => {
                        if failing {
                            log::info!("messages to other nodes flow again");
                        }
                        self.route(std::mem::take(&mut routes), replies).await;
                        break;
                    }
                    Err(error) if matches!(error.kind(), ErrorKind::Server(_)) => {
                        log::error!(
                            "Redis refused {} messages to other nodes: {error}",
                            batch.len()
                        );
                        self.fail_deliveries(&batch).await;
                        break;
                    }
                    Err(error) if self.state.stopping.get() && self.state.lost.get() => {
                        log::warn!("dropping {} messages to other nodes: {error}", batch.len());
                        self.fail_deliveries(&batch).await;
                        break;
                    }
                    Err(error) => {
                        if !failing {
                            log::warn!("cannot send to other nodes, retrying: {error}");
                            failing = true;
                        }
                        // A `/to` fails closed (`304`) rather than wait for Redis, as a
                        // lookup does: those of this batch, and those the hub sent since. The
                        // rest is retried in order.
                        while let Ok(more) = messages.try_recv() {
                            waiting.extend(more);
                        }
                        let (mut failed, kept): (Vec<_>, Vec<_>) =
                            waiting.drain(..).partition(Outgoing::is_to_user);
                        waiting.extend(kept);
                        let retried = !routes.is_empty();
                        if retried {
                            let from_batch;
                            (from_batch, batch) = batch.into_iter().partition(Outgoing::is_to_user);
                            failed.splice(0..0, from_batch);
                        }
                        if !failed.is_empty() {
                            let n = failed.len();
                            log::warn!("the directory cannot be reached: {n} /to not delivered");
                            self.fail_deliveries(&failed).await;
                        }
                        if retried {
                            if batch.is_empty() {
                                break;
                            }
                            (pipe, routes) = self.appends(&batch);
                        }
                        self.clock.after(backoff).await;
                        backoff = (backoff * 2).min(heartbeat);
                    }
                }
            }
        }
    }

    /// Builds one batch's appends: an `XADD` per entry of a run of messages to known nodes
    /// ([`codec::entries`]) and one `DELIVER_TO` call per run of `/to`s, none of which makes an
    /// inbox (`NOMKSTREAM`: a node makes its own when it registers, and renews its time to
    /// live with its lease). Also says, per script call in order, the requests it routes.
    fn appends(&self, batch: &[Outgoing]) -> (redis::Pipeline, Vec<Vec<RequestId>>) {
        let mut commands = Vec::new();
        let mut routes = Vec::new();
        for run in batch.chunk_by(|a, b| a.is_to_user() == b.is_to_user()) {
            let mut requests = Vec::new();
            let mut users = Vec::new();
            let mut messages = Vec::new();
            let mut direct = Vec::new();
            for item in run {
                match item {
                    Outgoing::To(to, message) => direct.push((*to, message)),
                    Outgoing::ToUser {
                        request,
                        user,
                        line,
                    } => {
                        requests.push(*request);
                        users.push(user);
                        messages.push(codec::deliver_to(self.node, *request, line));
                    }
                }
            }
            if !requests.is_empty() {
                let mut script = redis::cmd("EVAL");
                script
                    .arg(scripts::DELIVER_TO)
                    .arg(1)
                    .arg(self.keys.where_())
                    .arg(self.keys.inbox_prefix())
                    .arg(codec::FIELD)
                    .arg(codec::AT)
                    .arg(users)
                    .arg(messages);
                commands.push((script, false));
                routes.push(requests);
            }
            for (to, entry) in codec::entries(self.node, direct) {
                let mut xadd = redis::cmd("XADD");
                xadd.arg(self.keys.inbox(to))
                    .arg("NOMKSTREAM")
                    .arg("*")
                    .arg(codec::FIELD)
                    .arg(entry);
                commands.push((xadd, true));
            }
        }
        let mut pipe = redis::pipe();
        // One command is atomic by itself.
        if commands.len() > 1 {
            pipe.atomic();
        }
        for (command, ignored) in commands {
            pipe.add_command(command);
            if ignored {
                pipe.ignore();
            }
        }
        (pipe, routes)
    }

    /// Tells the hub where each `/to` of a batch went, from the `DELIVER_TO` calls' replies.
    async fn route(&self, routes: Vec<Vec<RequestId>>, replies: Vec<Value>) {
        let mut replies = replies.into_iter();
        for requests in routes {
            let found = match replies.next() {
                Some(Value::Array(found)) => found,
                other => {
                    log::warn!("cannot make sense of where /to went: {other:?}");
                    Vec::new()
                }
            };
            let mut found = found.into_iter();
            for request in requests {
                let to = match found.next() {
                    Some(Value::BulkString(at)) => location(&at),
                    _ => None,
                };
                self.tell(ClusterInput::Routed { request, to }).await;
            }
        }
    }

    /// Answers each message of `batch` that waits for one as not delivered, as its
    /// recipient's node would: a `Deliver`'s outcomes, and a `/to`'s route.
    async fn fail_deliveries(&self, batch: &[Outgoing]) {
        for item in batch {
            match item {
                Outgoing::To(
                    to,
                    NodeMessage::Deliver {
                        request,
                        recipients,
                        ..
                    },
                ) => {
                    for &(slot, _) in recipients {
                        let message = NodeMessage::Outcome {
                            request: *request,
                            slot,
                            delivered: false,
                        };
                        self.tell(ClusterInput::Received { from: *to, message })
                            .await;
                    }
                }
                Outgoing::ToUser { request, .. } => {
                    let request = *request;
                    self.tell(ClusterInput::Routed { request, to: None }).await;
                }
                Outgoing::To(..) => {}
            }
        }
    }

    /// This node's inbox, read in order from where it was created, each entry fed to the hub
    /// once; what was read is trimmed away (`MINID`) in the same round trip as the next read.
    async fn inbox(&self) {
        let heartbeat = self.config.heartbeat;
        let mut link = Link::new(
            self.client.clone(),
            self.clock.clone(),
            INBOX_BLOCK + heartbeat,
        );
        let key = self.keys.inbox(self.node);
        // The id is fresh, so is the stream; an id is never reread, even across reconnections.
        let mut last = "0-0".to_string();
        let mut failing = false;
        let mut trimmed = Instant::now();
        loop {
            let mut pipe = redis::pipe();
            // Entries before the last one read are never read again: only space. `~` lets
            // Redis free whole nodes of the stream only, which is what makes trimming cheap;
            // once a heartbeat is often enough to hold an inbox to what a second brings.
            if trimmed.elapsed() >= heartbeat {
                trimmed = Instant::now();
                pipe.cmd("XTRIM")
                    .arg(&key)
                    .arg("MINID")
                    .arg("~")
                    .arg(&last)
                    .ignore();
            }
            pipe.cmd("XREAD")
                .arg("COUNT")
                .arg(INBOX_COUNT)
                .arg("BLOCK")
                .arg(millis(INBOX_BLOCK))
                .arg("STREAMS")
                .arg(&key)
                .arg(&last);
            let read = link.pipe::<(Value,)>(&pipe).await.map(|(reply,)| reply);
            let entries = match read {
                Ok(reply) => match stream_entries(reply) {
                    Some(entries) => entries,
                    None => {
                        log::warn!("cannot make sense of this node's inbox");
                        self.clock.after(heartbeat).await;
                        continue;
                    }
                },
                Err(error) => {
                    if !failing {
                        log::warn!("cannot read this node's inbox, retrying: {error}");
                        failing = true;
                    }
                    self.clock.after(heartbeat / 4).await;
                    continue;
                }
            };
            failing = false;
            let Some((newest, _)) = entries.last() else {
                continue;
            };
            let newest = newest.clone();
            for (id, fields) in entries {
                let (mut message, mut at) = (None, None);
                for (field, value) in fields {
                    match &field[..] {
                        f if f == codec::FIELD.as_bytes() => message = Some(value),
                        f if f == codec::AT.as_bytes() => at = Some(value),
                        _ => {}
                    }
                }
                match message.and_then(|message| codec::decode(message, at.as_deref())) {
                    Some((from, messages)) => {
                        for message in messages {
                            self.tell(ClusterInput::Received { from, message }).await
                        }
                    }
                    None => log::warn!("ignoring entry {id} of this node's inbox: not a message"),
                }
            }
            last = newest;
        }
    }

    /// Renews this node's lease, registers it again once lost, and reaps the other nodes,
    /// every heartbeat.
    async fn lease(&self, registered: Instant) {
        let heartbeat = self.config.heartbeat;
        let lease = self.config.lease;
        // Half a heartbeat each, so that renewing and reaping fit in one tick.
        let mut link = Link::new(self.client.clone(), self.clock.clone(), heartbeat / 2);
        let mut renewed = registered;
        let mut reaper = Reaper::default();
        let mut tick = Instant::now();
        loop {
            // Every heartbeat, at the same phase; a late turn does not pile ticks up.
            tick = (tick + heartbeat).max(Instant::now());
            self.clock.until(tick).await;
            if self.state.lost.get() {
                let sent = Instant::now();
                match register(&mut link, &self.keys, self.node, lease).await {
                    Ok(()) => {
                        renewed = sent;
                        self.state.lost.set(false);
                        log::warn!("rejoined the cluster as node {}", self.node.0);
                    }
                    Err(error) => log::debug!("cannot rejoin the cluster yet: {error}"),
                }
            } else {
                let sent = Instant::now();
                let mut renew = redis::pipe();
                renew
                    .cmd("SET")
                    .arg(self.keys.lease(self.node))
                    .arg(1)
                    .arg("XX")
                    .arg("PX")
                    .arg(millis(lease))
                    .cmd("PEXPIRE")
                    .arg(self.keys.inbox(self.node))
                    .arg(inbox_ttl(lease))
                    .ignore()
                    // Its bound, should its reader fall behind; writers append unbounded, as
                    // a bound checked with every append costs every append.
                    .cmd("XTRIM")
                    .arg(self.keys.inbox(self.node))
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(INBOX_MAXLEN)
                    .ignore();
                let lost = match link.pipe::<(Value,)>(&renew).await {
                    Ok((Value::Nil,)) => Some("the lease expired".to_string()),
                    Ok(_) => {
                        renewed = sent;
                        None
                    }
                    Err(error) if renewed.elapsed() > lease => {
                        Some(format!("not renewed for {:?}: {error}", renewed.elapsed()))
                    }
                    Err(error) => {
                        log::warn!("cannot renew the lease: {error}");
                        None
                    }
                };
                if let Some(why) = lost {
                    self.state.lost.set(true);
                    log::warn!("lost the cluster lease; ending local sessions ({why})");
                    self.tell(ClusterInput::LeaseLost).await;
                }
            }
            if !self.state.lost.get() {
                if let Err(error) = self.reap(&mut link, &mut reaper).await {
                    log::debug!("cannot look for dead nodes: {error}");
                }
            }
        }
    }

    /// One pass of the reaper: reaps the nodes whose lease is gone, tells the hub of every
    /// node newly down.
    async fn reap(&self, link: &mut Link, reaper: &mut Reaper) -> redis::RedisResult<()> {
        let keys = &self.keys;
        let members: Vec<Vec<u8>> = link.query(redis::cmd("SMEMBERS").arg(keys.nodes())).await?;
        let others: Vec<NodeId> = members
            .iter()
            .filter_map(|member| std::str::from_utf8(member).ok()?.parse().ok())
            .map(NodeId)
            .filter(|&node| node != self.node)
            .collect();
        let mut alive = HashSet::new();
        let mut down = Vec::new();
        if !others.is_empty() {
            let mut get = redis::cmd("MGET");
            for &node in &others {
                get.arg(keys.lease(node));
            }
            let leases: Vec<Option<Vec<u8>>> = link.query(&get).await?;
            for (&node, lease) in others.iter().zip(leases) {
                if lease.is_some() {
                    alive.insert(node);
                    continue;
                }
                let invocation = {
                    let mut invocation = scripts::REAP.prepare_invoke();
                    invocation
                        .key(keys.lease(node))
                        .key(keys.node_users(node))
                        .key(keys.where_())
                        .key(keys.online())
                        .key(keys.inbox(node))
                        .key(keys.nodes())
                        .arg(node.0)
                        .arg("reap");
                    invocation
                };
                match link.invoke::<i64>(&invocation).await? {
                    0 => {
                        alive.insert(node);
                    }
                    1 => {
                        log::warn!("node {} lost its lease: reaped it", node.0);
                        down.push(node);
                    }
                    _ => down.push(node),
                }
            }
        }
        // Seen alive, now gone from `nodes`: reaped by another node, or it left.
        let vanished: Vec<NodeId> = (reaper.seen.iter())
            .filter(|node| !alive.contains(node) && !down.contains(node))
            .copied()
            .collect();
        down.extend(vanished);
        for &node in &alive {
            // Down, then alive again: it rejoined under its id with no sessions left, and the
            // hub may send to it again.
            if reaper.reported.remove(&node) {
                log::info!("node {} is back", node.0);
                self.tell(ClusterInput::NodeUp(node)).await;
            }
            reaper.seen.insert(node);
        }
        for node in down {
            reaper.seen.remove(&node);
            if reaper.reported.insert(node) {
                log::info!("node {} is down", node.0);
                self.tell(ClusterInput::NodeDown(node)).await;
            }
        }
        Ok(())
    }

    /// Leaves the cluster at once, best effort: the lease, the users, the inbox.
    async fn leave(&self, link: &mut Link) {
        let keys = &self.keys;
        let invocation = {
            let mut invocation = scripts::REAP.prepare_invoke();
            invocation
                .key(keys.lease(self.node))
                .key(keys.node_users(self.node))
                .key(keys.where_())
                .key(keys.online())
                .key(keys.inbox(self.node))
                .key(keys.nodes())
                .arg(self.node.0)
                .arg("leave");
            invocation
        };
        match link.invoke::<i64>(&invocation).await {
            Ok(_) => log::info!("node {} left the cluster", self.node.0),
            Err(error) => log::warn!("cannot leave the cluster cleanly: {error}"),
        }
    }
}

/// Claims that must end but could not yet (Redis did not answer), retried before the next
/// directory request once Redis answers again. Once the lease is lost there is no need: registering again drops every
/// claim of this node.
#[derive(Default)]
struct Unreleased(VecDeque<(ConnId, Vec<u8>)>);

impl Unreleased {
    /// At most this many wait; the oldest beyond are left to the next registration or reaping.
    const MAX: usize = 10_000;

    fn push(&mut self, state: &State, conn: ConnId, user: Vec<u8>) {
        if state.lost.get() {
            return;
        }
        if self.0.len() == Self::MAX {
            self.0.pop_front();
        }
        self.0.push_back((conn, user));
    }

    async fn retry(&mut self, engine: &Engine, link: &mut Link) {
        if engine.state.lost.get() {
            self.0.clear();
        }
        while let Some((conn, user)) = self.0.front() {
            if engine.release(link, *conn, user).await.is_err() {
                return;
            }
            self.0.pop_front();
        }
    }
}

/// What the reaper remembers between passes.
#[derive(Default)]
struct Reaper {
    /// Other nodes seen alive and not since down.
    seen: HashSet<NodeId>,
    /// Nodes the hub was told are down and not since seen alive.
    reported: HashSet<NodeId>,
}

/// The entries of the online script's flat `user, where` reply; malformed ones are skipped.
fn online_entries<'a>(pairs: impl Iterator<Item = &'a [Vec<u8>]>) -> Vec<OnlineEntry> {
    pairs
        .filter_map(|pair| entry(pair[0].clone(), &pair[1]))
        .collect()
}

/// `user` at `"<node>:<conn>"`.
fn entry(user: Vec<u8>, at: &[u8]) -> Option<OnlineEntry> {
    let (node, conn) = location(at)?;
    Some(OnlineEntry { user, node, conn })
}

/// The session a directory entry `"<node>:<conn>"` names.
fn location(at: &[u8]) -> Option<(NodeId, ConnId)> {
    let parsed = std::str::from_utf8(at).ok().and_then(|at| {
        let (node, conn) = at.split_once(':')?;
        Some((NodeId(node.parse().ok()?), ConnId(conn.parse().ok()?)))
    });
    if parsed.is_none() {
        log::warn!(
            "ignoring a malformed directory entry {:?}",
            String::from_utf8_lossy(at)
        );
    }
    parsed
}

/// What the sender appends to inboxes, in the order the hub said it.
enum Outgoing {
    /// A message to a known node ([`ClusterOutput::Send`], [`ClusterOutput::SendAll`]).
    To(NodeId, NodeMessage),
    /// A `/to`'s line, to wherever its user is ([`ClusterOutput::DeliverTo`]).
    ToUser {
        request: RequestId,
        user: Vec<u8>,
        line: Bytes,
    },
}

impl Outgoing {
    fn is_to_user(&self) -> bool {
        matches!(self, Outgoing::ToUser { .. })
    }
}

/// The entries of an XREAD reply for one stream (RESP2 or RESP3): id and field/value pairs.
/// `None` if the reply is not shaped like one.
#[allow(clippy::type_complexity)]
fn stream_entries(reply: Value) -> Option<Vec<(String, Vec<(Vec<u8>, Vec<u8>)>)>> {
    let streams = match reply {
        Value::Nil => return Some(Vec::new()),
        Value::Array(streams) => streams
            .into_iter()
            .map(|stream| match stream {
                Value::Array(mut pair) if pair.len() == 2 => pair.pop(),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?,
        Value::Map(streams) => streams.into_iter().map(|(_, entries)| entries).collect(),
        _ => return None,
    };
    let mut out = Vec::new();
    for entries in streams {
        let Value::Array(entries) = entries else {
            return None;
        };
        for entry in entries {
            let Value::Array(entry) = entry else {
                return None;
            };
            let [id, Value::Array(flat)] = <[Value; 2]>::try_from(entry).ok()? else {
                return None;
            };
            let id = String::from_utf8(bytes(id)?).ok()?;
            let mut fields = Vec::with_capacity(flat.len() / 2);
            let mut flat = flat.into_iter();
            while let (Some(field), Some(value)) = (flat.next(), flat.next()) {
                fields.push((bytes(field)?, bytes(value)?));
            }
            out.push((id, fields));
        }
    }
    Some(out)
}

fn bytes(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.into_bytes()),
        _ => None,
    }
}
