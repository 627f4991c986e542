//! Messages of the presence actor (sent by its channel).

use actix::prelude::*;
use realtime_proto::Vsn;
use serde_json::{Map, Value};

use crate::delivery::Outbox;
use crate::vocab::ConnId;

/// What presence needs of a channel member: who it is, and where and how its frames go.
#[derive(Debug, Clone)]
pub struct Subscriber {
    pub conn: ConnId,
    pub join_ref: Option<String>,
    pub vsn: Vsn,
    pub presence_key: String,
    /// Receives the presence counts instead of `presence_state` and `presence_diff`.
    pub counts_only: bool,
    pub outbox: Outbox,
}

/// Start receiving diffs; with `send_state`, first push `presence_state` (or the counts).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Subscribe {
    pub member: Subscriber,
    pub send_state: bool,
}

/// Track or update `member`'s meta under its presence key; also subscribes it to diffs.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Track {
    pub member: Subscriber,
    pub meta: Map<String, Value>,
}

/// Remove a connection's presence (it stays subscribed).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Untrack {
    pub conn: ConnId,
}

/// The member left the channel: remove its presence and its subscription.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct MemberGone {
    pub conn: ConnId,
}

/// The channel stopped.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Stop;

/// Other nodes' entries of this topic changed.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct RemoteChanges {
    pub change: realtime_cluster::presence::TopicChange,
}
