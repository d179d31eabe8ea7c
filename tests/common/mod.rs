//! What the server package's test suites share; each suite uses part of it.
//!
//! - [`harness`]: the real `im-server` and `im-client` on 127.0.0.1, raw clients, and the
//!   macros that run a scenario in each runtime.
//! - [`sim`]: the in-memory network of the sans-IO server and its clients, on a manual clock.
//! - [`schedules`]: generated schedules (proptest) and where their failures are kept.
//! - [`fuzz_harness`]: the fuzz targets' checks, shared with `fuzz/`.
//! - [`pki`], [`scrape`], `redis_server`: certificates, `/metrics` read strictly, a throwaway
//!   `redis-server`.

#![allow(dead_code)]

pub mod fuzz_harness;
#[macro_use]
pub mod harness;
pub mod pki;
#[cfg(feature = "cluster")]
pub mod redis_server;
pub mod schedules;
pub mod scrape;
pub mod sim;
