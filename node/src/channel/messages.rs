//! Messages of channel actors and the registry, and the join outcome a channel sends back to a socket.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use realtime_proto::Vsn;
use serde_json::{Map, Value};

use crate::delivery::{Outbox, WireFrame};
use crate::presence::messages::Subscriber;
use crate::resume::Position;
use crate::vocab::{BroadcastBody, ConnId, TopicKey};

/// A socket's membership in a channel, as the channel and its presence set see it.
#[derive(Debug, Clone)]
pub struct Member {
    pub conn: ConnId,
    pub join_ref: Option<String>,
    pub vsn: Vsn,
    /// Receive your own broadcasts.
    pub self_broadcast: bool,
    /// Receive broadcasts at all (a private channel whose policies deny broadcast reads: no).
    pub receives_broadcasts: bool,
    /// The ids of rows this member had replayed at join: those live broadcasts are skipped.
    pub skip_live: Option<Arc<std::collections::HashSet<Arc<str>>>>,
    /// Where this member stands in a resumable channel's stream.
    pub resume: Resuming,
    /// `Some` while the member's join reply is not out yet and something must follow it before any
    /// live message (a replay, a resume): live frames wait here until [`Replied`].
    pub held: Option<Vec<Held>>,
    /// Receive `presence_state` and `presence_diff`.
    pub presence_enabled: bool,
    /// Receive the presence counts instead (`config.presence.counts_only`).
    pub presence_counts_only: bool,
    pub presence_key: String,
    /// Where this member's frames go.
    pub outbox: Outbox,
}

impl Member {
    /// What the channel's presence actor needs of this member.
    pub fn presence_subscriber(&self) -> Subscriber {
        Subscriber {
            conn: self.conn,
            join_ref: self.join_ref.clone(),
            vsn: self.vsn,
            presence_key: self.presence_key.clone(),
            counts_only: self.presence_counts_only,
            outbox: self.outbox.clone(),
        }
    }
}

/// A member's place in a resumable channel's stream (`crate::resume`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resuming {
    /// Live messages as they come.
    #[default]
    Live,
    /// Joined asking for the messages after this position (set by the socket).
    Requested(Position),
    /// Joined; its live messages are skipped until [`Replied`] (they are in the log by then).
    /// `baseline`: the newest message held at join.
    Pending { after: Position, baseline: Option<Position> },
    /// Resumed: messages at or before this position were sent already.
    After(Option<Position>),
}

/// Join a channel (sent to the registry, which forwards it to the channel).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Join {
    pub key: TopicKey,
    pub member: Member,
    /// Told the outcome. Not part of [`Member`]: the channel keeps its members for as long as they
    /// are joined, and needs this only once.
    pub joined: Recipient<JoinOutcome>,
}

/// Leave a channel (through the registry, so it is ordered after the join).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Leave {
    pub key: TopicKey,
    pub conn: ConnId,
}

/// A broadcast that is a row of `realtime.messages`: its id, and its position when its channel is
/// resumable.
#[derive(Debug, Clone)]
pub struct Stored {
    pub id: Arc<str>,
    pub position: Option<Position>,
}

/// Fan a broadcast out to the channel's members.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Broadcast {
    /// The sending connection (skipped unless it joined with `self: true`); `None` for REST.
    pub from: Option<ConnId>,
    pub body: BroadcastBody,
    pub received_at: Instant,
    pub stored: Option<Stored>,
}

/// Socket → channel, right after the join reply of a member that holds its live messages: send its
/// replayed messages, then what a resume owes it, then what was held, and let live messages through.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Replied {
    pub conn: ConnId,
    pub replay: crate::replay::Replay,
}

/// A live frame held for a member until its join reply is out.
#[derive(Debug, Clone)]
pub struct Held {
    pub frame: WireFrame,
    pub received_at: Instant,
    /// The row id of a stored message (dropped if the member's replay has it).
    pub id: Option<Arc<str>>,
}

/// Track (or update) the sender's presence in the channel.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Track {
    pub conn: ConnId,
    pub meta: Map<String, Value>,
}

/// Remove the sender's presence.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Untrack {
    pub conn: ConnId,
}

/// Registry → channel: the last member left; stop.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StopChannel;

/// Channel → registry: one reserved membership ended (left, refused or dead).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Released {
    pub key: TopicKey,
}

/// A broadcast published on another node (through the registry to the channel, if this node has one).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct RemoteBroadcast {
    pub key: TopicKey,
    pub body: BroadcastBody,
    pub received_at: Instant,
    /// The sending socket on this node (a resumable channel's message, stored and back).
    pub from: Option<ConnId>,
    pub stored: Option<Stored>,
}

/// Presence entries of other nodes that changed in this channel.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct RemotePresence {
    pub key: TopicKey,
    pub change: realtime_cluster::presence::TopicChange,
}

/// Find a channel's address (REST broadcasts).
#[derive(Message, Debug)]
#[rtype(result = "Option<Addr<super::ChannelActor>>")]
pub struct Lookup {
    pub key: TopicKey,
}

/// This node's channels with their member counts, the most members first, at most `limit` of them
/// (the inspector's channel list).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "ChannelList")]
pub struct ListChannels {
    pub limit: usize,
}

/// The answer to [`ListChannels`].
#[derive(MessageResponse, Debug, Clone, Default)]
pub struct ChannelList {
    /// Channels on this node (more than `channels` holds when the limit cut the list).
    pub total: usize,
    pub channels: Vec<ChannelCount>,
}

/// One channel of [`ChannelList`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelCount {
    pub key: TopicKey,
    /// Memberships on this node: members, and joins the channel is still deciding.
    pub members: usize,
    /// Members on the other nodes, as this node last heard (0 on a single node).
    pub elsewhere: usize,
}

/// How a join ended, sent by the channel so the reply is ordered before any of the channel's pushes.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct JoinOutcome {
    pub topic: String,
    pub join_ref: Option<String>,
    pub result: Result<Addr<super::ChannelActor>, JoinRefused>,
}

/// Why a channel refused a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRefused {
    /// The channel has `max_channel_members` members.
    Full,
}
