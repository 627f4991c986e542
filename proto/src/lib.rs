//! # realtime-proto: the Supabase Realtime wire contract
//!
//! Pure data and codecs, no I/O. Everything a client can send and everything the node answers is typed
//! here, so the server, the load tester and the tests share one definition of the wire.
//!
//! ## Layout
//! - [`vsn`]: the two serializers (`1.0.0` JSON objects, `2.0.0` JSON arrays plus binary frames).
//! - [`envelope`]: the Phoenix envelope as decoded from a client frame ([`envelope::InboundFrame`]).
//! - [`binary`]: the byte layouts of the 2.0.0 binary kinds (0 and 3 in, 4 out).
//! - [`client`]: typed client messages ([`client::ClientMessage`]) built from an envelope.
//! - [`join`]: the `phx_join` payload and channel config (lenient, as the reference server is).
//! - [`topic`]: the `realtime:<sub_topic>` topic rules.
//! - [`server`]: encoders for every server → client frame ([`server::OutFrame`]).
//! - [`presence`]: presence refs, state and diff shapes.
//! - [`system`]: `system` event payloads and the exact reason strings clients see.
//! - [`postgres`]: Postgres Changes without I/O: subscription parameters and filters, the pgoutput
//!   decoder, value conversion, row changes and their `data` payload, filter matching.
//!
//! ## Frame lifecycle
//! ```text
//! bytes ──vsn::decode_*──▶ InboundFrame ──ClientMessage::from_frame──▶ typed message ─▶ node
//! node ─▶ server::* encoders ──▶ OutFrame (text or kind-4 binary) ─▶ bytes
//! ```

pub mod binary;
pub mod client;
pub mod envelope;
pub mod join;
pub mod postgres;
pub mod presence;
pub mod server;
pub mod system;
pub mod topic;
pub mod vsn;

pub use client::{ClientEvent, ClientMessage};
pub use envelope::{DecodeError, InboundFrame, InboundPayload};
pub use server::OutFrame;
pub use vsn::Vsn;
