//! Messages a socket actor receives from channels, presence sets and the node.

use std::time::Instant;

use actix::dev::SendError;
use actix::prelude::*;
use bytes::Bytes;
use bytestring::ByteString;
use realtime_proto::OutFrame;

use crate::channel::ChannelActor;
use crate::metrics::{metrics, Refusal};

/// An encoded frame, cheap to clone: one allocation shared by every recipient.
#[derive(Debug, Clone)]
pub enum WireFrame {
    Text(ByteString),
    Binary(Bytes),
}

impl WireFrame {
    pub fn len(&self) -> usize {
        match self {
            WireFrame::Text(t) => t.len(),
            WireFrame::Binary(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<OutFrame> for WireFrame {
    fn from(frame: OutFrame) -> WireFrame {
        match frame {
            OutFrame::Text(text) => WireFrame::Text(ByteString::from(text)),
            OutFrame::Binary(bytes) => WireFrame::Binary(bytes),
        }
    }
}

/// A frame for the socket to write (broadcast, presence, …).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Deliver {
    pub frame: WireFrame,
    /// When the node received the broadcast this frame carries; feeds the delivery latency histogram.
    pub received_at: Option<Instant>,
}

/// How a join ended, sent by the channel so the reply is ordered before any of the channel's pushes.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct JoinOutcome {
    pub topic: String,
    pub join_ref: Option<String>,
    pub result: Result<Addr<ChannelActor>, JoinRefused>,
}

/// Why a channel refused a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRefused {
    /// The channel has `max_channel_members` members.
    Full,
}

/// The channel could not hand this socket a frame because its mailbox is full: the client is not
/// reading fast enough and is disconnected rather than slowing the channel.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SlowConsumer;

/// Hands a frame to a socket without growing its mailbox past its bound. A full mailbox means the
/// client is not reading: it is told to close as a slow consumer rather than slowing its sender.
/// Returns `false` when the socket is gone.
pub fn offer(outbox: &Recipient<Deliver>, slow: &Recipient<SlowConsumer>, deliver: Deliver) -> bool {
    match outbox.try_send(deliver) {
        Ok(()) => true,
        Err(SendError::Full(_)) => {
            metrics().refused(Refusal::SlowConsumer);
            slow.do_send(SlowConsumer);
            true
        }
        Err(SendError::Closed(_)) => false,
    }
}

/// The node is draining: tell every channel, then close with "reconnect now" (1012).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Drain;

/// Answered once every frame queued before it was written: the CDC hub records a position as
/// delivered only after the sockets that got its changes answered this.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Flush;
