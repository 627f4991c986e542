//! Messages a socket actor receives from channels and the node. Frames do not come this way: every
//! producer writes to the socket's outbox ([`crate::delivery`]).

use actix::prelude::*;

use crate::channel::ChannelActor;

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
