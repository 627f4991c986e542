//! Partition tests (issue 17): PostgreSQL and three `realtime` nodes in a network namespace the test
//! makes for itself, links between them cut with `iptables` (both ways or one way) or made lossy,
//! under steady load (100 rows/s, 20 broadcasts/s per node, a subscriber on every node). A checker
//! counts, per subscriber, rows and broadcasts lost, duplicated and reordered, and what it was told.
//!
//! Needs root (CI runs as root) for the namespace and `iptables` (installed by `.ci/run`). The
//! scenarios run one at a time (three nodes and PostgreSQL each, on two cores); each prints its
//! figures (`cargo test -p realtime-node --test partition -- --nocapture`), never asserts a time.

mod checker;
mod lab;
mod netns;
mod scenarios;
mod traffic;

/// The harness shared with the other test binaries (`node/tests/support`).
#[path = "../support/mod.rs"]
mod support;
