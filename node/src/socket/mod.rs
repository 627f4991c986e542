//! Sockets: one actor per WebSocket connection.
//!
//! The [`SocketActor`] decodes client frames ([`realtime_proto`]), answers heartbeats, admits joins
//! (token, limits) and hands them to the registry, forwards broadcasts and presence to the channels it
//! joined, re-checks its channels' tokens on refresh and at expiry, and writes every outgoing frame.
//! It holds no channel state beyond "which topics I joined". It is a plain actix actor: frames come in
//! from [`inbound`] (the request body, size-checked from each frame header) and go out through the
//! socket's outbox ([`crate::delivery`]), which a writer task drains, so a client that stops
//! reading is cut from outside without waiting on this actor.
//!
//! - [`actor`]: lifecycle, inbound frames, writes, idle timeout, drain.
//! - [`inbound`]: the client's frames, decoded from the request body.
//! - [`admission`]: the checks a `phx_join` passes, as a pure ordered pipeline.
//! - [`join`]: `phx_join` admission (its I/O), `phx_leave`, join outcomes.
//! - [`events`]: `broadcast` and `presence` pushes.
//! - [`tokens`]: `access_token` refresh and channel expiry.

pub mod actor;
pub mod admission;
pub mod events;
pub mod inbound;
pub mod join;
pub mod postgres;
pub mod private;
pub mod tokens;

pub use actor::SocketActor;
