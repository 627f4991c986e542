//! Cluster tests: several real `realtime` processes on loopback (127.0.0.x only), one cluster port each,
//! found through `--seeds`, killed, paused and restarted by the tests.
//!
//! Each test owns a block of loopback addresses (`Cluster::start(base, …)` uses 127.0.0.base+i), so the
//! tests run in parallel with a fixed cluster port. Every wait is bounded; every process is killed when
//! its test ends (`KillOnDrop`). Timings measured on the way are printed, never asserted.

mod attacks;
mod broadcast;
mod common;
mod links;
mod logs;
mod membership;
mod presence;
mod rotation;
mod webhooks;

/// The harness shared with the other test binaries (`node/tests/support`).
#[path = "../support/mod.rs"]
mod support;
