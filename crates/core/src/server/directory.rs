//! [`LocalDirectory`]: who is online, in login order, for a server that is the whole cluster.
//!
//! It answers at once what a cluster's directory answers later
//! ([`ClusterOutput::Claim`](super::ClusterOutput::Claim),
//! [`ClusterOutput::Query`](super::ClusterOutput::Query)), so the hub has one path for both.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use super::{ConnId, NodeId, OnlineEntry};

/// The online users of one server.
#[derive(Debug, Default)]
pub(crate) struct LocalDirectory {
    /// By login order: the user and its session.
    online: BTreeMap<u64, (Vec<u8>, ConnId)>,
    /// By name: the session and the key in `online`. A fast hash, though peers pick the
    /// names looked up: only names from the users file, after their password, are ever in it,
    /// so no peer can fill it with colliding keys.
    by_name: FxHashMap<Vec<u8>, (ConnId, u64)>,
    next_login: u64,
}

impl LocalDirectory {
    /// Claims `user` for `conn`; `false` if another session holds it.
    pub(crate) fn claim(&mut self, user: &[u8], conn: ConnId) -> bool {
        if self.by_name.contains_key(user) {
            return false;
        }
        let order = self.next_login;
        self.next_login += 1;
        self.online.insert(order, (user.to_vec(), conn));
        self.by_name.insert(user.to_vec(), (conn, order));
        true
    }

    /// Ends the claim of `conn` on `user`, if it holds it.
    pub(crate) fn release(&mut self, user: &[u8], conn: ConnId) {
        if let Some(&(holder, order)) = self.by_name.get(user) {
            if holder == conn {
                self.by_name.remove(user);
                self.online.remove(&order);
            }
        }
    }

    /// The session `user` is logged in on, if any.
    pub(crate) fn find(&self, user: &[u8]) -> Option<ConnId> {
        self.by_name.get(user).map(|&(conn, _)| conn)
    }

    /// Everyone online in login order, as entries of `node`.
    pub(crate) fn online(&self, node: NodeId) -> Vec<OnlineEntry> {
        let entry = |user: &[u8], conn| OnlineEntry {
            user: user.to_vec(),
            node,
            conn,
        };
        self.online
            .values()
            .map(|(user, conn)| entry(user, *conn))
            .collect()
    }
}
