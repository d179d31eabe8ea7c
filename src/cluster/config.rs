//! [`ClusterConfig`]: how a node reaches its cluster, named on the command line whether or not
//! this build has the cluster engine.

use std::time::Duration;

/// How a node reaches its cluster's Redis and how fast it declares nodes dead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `redis://HOST:PORT` or `unix:///path/to/socket`.
    pub url: String,
    /// How long a node stays alive without renewing its lease: the longest a dead node keeps
    /// its users claimed.
    pub lease: Duration,
    /// How often a node renews its lease and looks for dead nodes; also the bound on each
    /// Redis call. Well under `lease`, so one slow call does not cost the lease.
    pub heartbeat: Duration,
    /// Prefix of every key, so clusters (or tests) can share one Redis.
    pub prefix: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            url: "redis://127.0.0.1:6379".into(),
            lease: Duration::from_secs(3),
            heartbeat: Duration::from_secs(1),
            prefix: "im".into(),
        }
    }
}
