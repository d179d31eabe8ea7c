//! What the hub says to, and hears from, the rest of a cluster: the directory of who is online
//! where, and the other nodes. Sans-IO like the rest of the core: a cluster engine (Redis, in
//! `crate::cluster`) carries [`ClusterOutput`]s out and feeds [`ClusterInput`]s back.
//!
//! A single server never sees any of this: its directory is the in-memory
//! [`LocalDirectory`](super::directory::LocalDirectory), answered inside the hub.

use bytes::Bytes;

use super::{ConnId, RequestId};

/// Names one server process of a cluster, unique for the life of the cluster's data: a node
/// that restarts comes back under a new id, so nothing meant for its old sessions reaches the
/// new ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u64);

/// Names one directory question until it is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueryId(pub u64);

/// One online user: who, and which session on which node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnlineEntry {
    /// The user name.
    pub user: Vec<u8>,
    /// The node the session is on.
    pub node: NodeId,
    /// The session on that node.
    pub conn: ConnId,
}

/// Something the cluster engine must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterOutput {
    /// Claim `user` for `conn` of this node, at once and for the whole cluster (at most one
    /// session per user), giving it the next place in the login order; answer with
    /// [`ClusterInput::Claimed`].
    Claim {
        /// The session logging in.
        conn: ConnId,
        /// The user it logs in as.
        user: Vec<u8>,
    },
    /// `conn` of this node has left: end its claim on `user` (if it still holds it). No answer.
    Release {
        /// The session that held the claim.
        conn: ConnId,
        /// The user.
        user: Vec<u8>,
    },
    /// Answer [`ClusterInput::Online`] with everyone online, in login order (for `/list` and
    /// `/toall`; a `/to` finds its one user with [`ClusterOutput::DeliverTo`]).
    Query {
        /// Names the answer.
        query: QueryId,
    },
    /// Send `message` to node `to` (this one included), at least once and in order.
    Send {
        /// The receiving node.
        to: NodeId,
        /// What to tell it.
        message: NodeMessage,
    },
    /// Look `user` up and, in the same atomic step, send its node (this one included) a
    /// [`NodeMessage::Deliver`] of `line` for `request`'s slot 0 and the session found, at
    /// least once and in order with [`ClusterOutput::Send`] and [`ClusterOutput::SendAll`];
    /// answer with [`ClusterInput::Routed`]. A `/to` goes out so: one step through the
    /// directory instead of a [`ClusterOutput::Query`] and then a send.
    DeliverTo {
        /// The sender's request, on this node.
        request: RequestId,
        /// The recipient.
        user: Vec<u8>,
        /// The exact `/from …` line.
        line: Bytes,
    },
    /// Send each message to its node (this one included) in one atomic step, at least once
    /// and in order with [`ClusterOutput::Send`]: no node may read one of them before all are
    /// in their inboxes. One request's deliveries go out so, and every node then sees
    /// requests in one order (docs/cluster.md).
    SendAll {
        /// The receiving nodes and what to tell each, one message per node.
        messages: Vec<(NodeId, NodeMessage)>,
    },
}

/// What the cluster engine feeds the hub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterInput {
    /// The answer to [`ClusterOutput::Claim`]: `true` if the user is now this session's.
    /// `false` if another session holds it, or the directory could not be reached (the login
    /// fails rather than risk two sessions of one user).
    Claimed {
        /// The session logging in.
        conn: ConnId,
        /// Whether the claim holds.
        claimed: bool,
    },
    /// The claim named by [`ClusterOutput::Release`] is gone from the directory (or could not
    /// be reached, and its release is retried): the session's last answer may go out, and a
    /// `/list` anywhere after it no longer shows the user.
    Released {
        /// The session that held the claim.
        conn: ConnId,
    },
    /// The answer to [`ClusterOutput::Query`]; `None` if the directory could not be reached.
    Online {
        /// The question answered.
        query: QueryId,
        /// The users online, in login order.
        entries: Option<Vec<OnlineEntry>>,
    },
    /// Where a [`ClusterOutput::DeliverTo`] went: the recipient's node and session, or `None`
    /// if nothing was sent (the user was not online, or Redis refused the step).
    Routed {
        /// The request, on this node.
        request: RequestId,
        /// The recipient's node and session.
        to: Option<(NodeId, ConnId)>,
    },
    /// A message from another node.
    Received {
        /// The sending node.
        from: NodeId,
        /// What it said.
        message: NodeMessage,
    },
    /// `node` is gone (its lease ran out): nothing it had will be answered, so everything that
    /// waits on it fails now.
    NodeDown(NodeId),
    /// `node`, reported down before, is alive again (it was paused past its lease and rejoined
    /// under its id, having ended every session it had): deliveries may go to it again.
    NodeUp(NodeId),
    /// This node lost its own lease (the directory was out of reach too long, or the process
    /// was paused): the cluster may already have given its users to others, so every session
    /// here ends now rather than serve stale ones.
    LeaseLost,
}

/// What one node tells another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeMessage {
    /// Queue `line` for each recipient session of the receiving node, in order; report each
    /// outcome with [`NodeMessage::Outcome`] for `(request, slot)`.
    Deliver {
        /// The sender's request, on the sending node.
        request: RequestId,
        /// The recipients on the receiving node: each one's slot in the request, and session.
        recipients: Vec<(usize, ConnId)>,
        /// The exact `/from …` or `/broadcastfrom …` line.
        line: Bytes,
    },
    /// The outcome of one [`NodeMessage::Deliver`]: `delivered` means its `302` came.
    Outcome {
        /// The sender's request, on the receiving node.
        request: RequestId,
        /// The recipient's slot in it.
        slot: usize,
        /// `302` came in time.
        delivered: bool,
    },
    /// The sender of `request` has left: drop its deliveries not yet sent.
    Withdraw {
        /// The request, on the sending node.
        request: RequestId,
    },
}
