//! Harness shared by the `it` and `cdc` test binaries (each includes it with
//! `#[path = "../support/mod.rs"] mod support;`): the server process ([`process`]), JWT signing
//! ([`jwt`]) and the WebSocket client core for both serializers ([`ws`]). Each suite's own fixtures stay
//! in its `common.rs`.

// Each binary uses only part of the harness.
#![allow(dead_code)]

pub mod cluster;
pub mod jwt;
pub mod pg;
pub mod process;
pub mod raw;
pub mod webhook;
pub mod ws;

use realtime_proto::Vsn;

/// Both serializers, for tests that loop over them.
pub const VSNS: [Vsn; 2] = [Vsn::V1, Vsn::V2];
