//! Black-box integration tests of the `realtime` binary (one test binary, grouped by area).
//!
//! Every test spawns its own server process on `127.0.0.1:0` (see `common::Server`), talks to it over
//! real WebSockets and HTTP, and bounds every wait. Modules follow the areas of PROTOCOL.md:
//! `socket` (§1-2), `broadcast` (§3.1-3.4), `rest` (§3.5-3.6), `presence` (§4), `tokens` (§1.3, §2.10-2.11,
//! §6), `limits` (§7), `bad_input` (malformed frames), `ops` (health, metrics, SIGTERM drain), `inspector` (the
//! `/inspector` page and its API).
//! Test names carry a priority prefix (t10 basic … t80 operations).
//!
//! Set `IT_KEEP_LOGS=1` to keep every server's stderr log; a failing test prints the tail of its log.

mod bad_input;
mod broadcast;
mod common;
mod hostile;
mod inspector;
mod limits;
mod ops;
mod presence;
mod presence_rooms;
mod rest;
mod socket;
mod tokens;
mod webhooks;

/// The harness shared with the other test binary (`node/tests/support`).
#[path = "../support/mod.rs"]
mod support;
