//! The crate's shared vocabulary: ids, topic keys, broadcast bodies, the drain signal. Sockets, channels,
//! presence, CDC, replay and resume all speak it, so it lives below them all and depends on nothing else in
//! the crate (the layering test in `layers.rs` checks that).

use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;
use realtime_proto::binary::BinaryEncoding;

/// Identifies one WebSocket connection on this node.
pub type ConnId = u64;

/// A channel's identity: public and private channels of the same name are different namespaces.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicKey {
    pub sub_topic: Arc<str>,
    pub private: bool,
}

impl TopicKey {
    /// The cluster's name for a channel: public and private channels of one name are different topics.
    pub fn cluster_topic(&self) -> String {
        let scope = if self.private { "private" } else { "public" };
        format!("{scope}:{}", self.sub_topic)
    }

    /// The channel a cluster topic names (`None` for a name this node would never produce).
    pub fn from_cluster_topic(topic: &str) -> Option<TopicKey> {
        let (scope, sub_topic) = topic.split_once(':')?;
        let private = match scope {
            "public" => false,
            "private" => true,
            _ => return None,
        };
        Some(TopicKey { sub_topic: Arc::from(sub_topic), private })
    }
}

/// What a broadcast carries.
#[derive(Debug, Clone)]
pub enum BroadcastBody {
    /// A JSON payload relayed verbatim as the payload of event `broadcast`.
    Json(Arc<str>),
    /// A user broadcast (binary push or REST single): kind 4 to 2.0.0, JSON object to 1.0.0.
    User { event: Arc<str>, encoding: BinaryEncoding, data: Bytes, meta: Option<Arc<str>> },
}

impl BroadcastBody {
    /// The `meta` of a user broadcast (`{"id": …}` for rows of `realtime.messages`).
    pub fn meta(&self) -> Option<&Arc<str>> {
        match self {
            BroadcastBody::User { meta, .. } => meta.as_ref(),
            BroadcastBody::Json(_) => None,
        }
    }
}

/// The node is draining: tell every channel, then close with "reconnect now" (1012).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Drain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_topics_round_trip() {
        for private in [false, true] {
            let key = TopicKey { sub_topic: Arc::from("room:1:a"), private };
            assert_eq!(TopicKey::from_cluster_topic(&key.cluster_topic()), Some(key));
        }
        assert_eq!(TopicKey::from_cluster_topic("other:x"), None);
        assert_eq!(TopicKey::from_cluster_topic("nocolon"), None);
    }
}
