//! Sockets: one actor per WebSocket connection.
//!
//! The [`SocketActor`] decodes client frames ([`realtime_proto`]), answers heartbeats, admits joins
//! (token, limits) and hands them to the registry, forwards broadcasts and presence to the channels it
//! joined, re-checks its channels' tokens on refresh and at expiry, and writes every outgoing frame.
//! It holds no channel state beyond "which topics I joined". This module is the only user of
//! `actix-web-actors`, so moving to `actix-ws` would touch nothing else.
//!
//! - [`actor`]: lifecycle, inbound frames, writes, idle timeout, drain.
//! - [`join`]: `phx_join` admission, `phx_leave`, join outcomes.
//! - [`events`]: `broadcast` and `presence` pushes.
//! - [`tokens`]: `access_token` refresh and channel expiry.
//! - [`messages`]: what channels and the node send to a socket.

pub mod actor;
pub mod events;
pub mod join;
pub mod messages;
pub mod postgres;
pub mod tokens;

pub use actor::SocketActor;
