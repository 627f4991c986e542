//! The delivery seam: everything a producer (a channel, a presence set, the CDC hub, and later a peer
//! node relaying into this one) needs to hand frames to a socket, and nothing more.
//!
//! A producer holds an [`Outbox`] per recipient, never the socket actor: it encodes a frame once
//! ([`WireFrame`], shared by every recipient), offers it, and learns at once whether the socket is still
//! there. The outbox is bounded in bytes and in frames; a socket over either bound, or one that makes no
//! write progress for the write timeout, is closed as a slow consumer by whoever noticed, from outside
//! the socket actor (which may be the thing that is stuck). Closing queues a close frame with a reason;
//! if that cannot be written within the close grace, the TCP connection is aborted through the
//! [`Link`] the outbox owns ([`link`]). So a stalled client costs at most its outbox bound, never slows
//! its channel, the CDC acknowledgement, or anyone else.
//!
//! - [`frame`]: an encoded frame, cheap to clone.
//! - [`outbox`]: the bounded per-socket queue, its close policy, and the writer stream that drains it
//!   (the socket's writer task writes its chunks to the connection).
//! - [`link`]: the TCP connection under a socket: abortable from outside, and able to tell whether
//!   queued bytes reached the kernel (the CDC position waits on that).
//! - [`watchdog`]: the node-wide task that enforces the write timeout and the close grace.

pub mod frame;
pub mod link;
pub mod outbox;
pub mod watchdog;

pub use frame::WireFrame;
pub use link::Link;
pub use outbox::{Offer, Outbox, OutboxLimits};
