//! The cluster engine is not in this build (the `cluster` feature): `--cluster` says so.

#[path = "cluster/config.rs"]
mod config;

pub use config::ClusterConfig;
