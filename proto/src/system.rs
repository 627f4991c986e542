//! `system` event payloads and the exact reason strings clients see (PROTOCOL.md §2.5, §2.9, §7).

use serde_json::json;

/// `extension` of a `system` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extension {
    System,
    PostgresChanges,
    /// Resumable delivery's notices (a gap that could not be filled).
    Broadcast,
    /// Presence counts for members that asked for counts only.
    Presence,
}

impl Extension {
    fn as_str(self) -> &'static str {
        match self {
            Extension::System => "system",
            Extension::PostgresChanges => "postgres_changes",
            Extension::Broadcast => "broadcast",
            Extension::Presence => "presence",
        }
    }
}

/// `{"extension","status","message","channel"}`; `channel` (the sub-topic) is omitted when `None`.
pub fn payload(extension: Extension, ok: bool, message: &str, channel: Option<&str>) -> String {
    let status = if ok { "ok" } else { "error" };
    let mut value = json!({ "extension": extension.as_str(), "status": status, "message": message });
    if let Some(channel) = channel {
        value["channel"] = json!(channel);
    }
    value.to_string()
}

/// The `message` of a presence count push.
pub const PRESENCE_COUNT: &str = "presence count";

/// The `system` push a member that joined with `config.presence.counts_only` gets instead of
/// `presence_state` and `presence_diff`: `count` metas (tracked connections) under `keys` distinct
/// presence keys, on every node. Sent once joined and then when the counts change, at most once per
/// presence batch interval.
pub fn presence_count(channel: &str, count: usize, keys: usize) -> String {
    json!({
        "extension": Extension::Presence.as_str(),
        "status": "ok",
        "message": PRESENCE_COUNT,
        "channel": channel,
        "count": count,
        "keys": keys,
    })
    .to_string()
}

/// Join error reasons, `"<Code>: <message>"` as the reference builds them.
pub mod reason {
    pub const TOPIC_NAME_REQUIRED: &str = "TopicNameRequired: You must provide a topic name";
    pub const TOO_MANY_CONNECTED_USERS: &str = "ConnectionRateLimitReached: Too many connected users";
    pub const TOO_MANY_JOINS: &str = "ClientJoinRateLimitReached: Too many joins per second";
    pub const TOO_MANY_CHANNELS: &str = "ChannelRateLimitReached: Too many channels";
    pub const CHANNEL_FULL: &str = "ChannelMembersLimitReached: Too many members in this channel";
    pub const PRIVATE_UNAVAILABLE: &str =
        "PrivateChannelsUnavailable: Private channels need DATABASE_URL for RLS authorization";
    pub const UNMATCHED_TOPIC: &str = "unmatched topic";
    pub const PRESENCE_PAYLOAD_NOT_MAP: &str = "Presence track payload must be a map";
    pub const REPLAY_ON_PUBLIC: &str = "UnableToReplayMessages: Replay is not allowed for public channels";
    pub const SHUTTING_DOWN: &str = "ServerShuttingDown: The server is shutting down";
    pub const PRIVATE_ONLY: &str = "PrivateOnly: This project only allows private channels";
    pub const RESUME_UNAVAILABLE: &str =
        "ResumeUnavailable: This topic keeps no resumable stream (see REALTIME_RESUMABLE_TOPICS)";

    /// A private join whose policies let the caller read neither broadcasts nor presence.
    pub fn unauthorized_read(sub_topic: &str) -> String {
        format!("Unauthorized: You do not have permissions to read from this Channel topic: {sub_topic}")
    }

    /// A private broadcast or track the policies do not let the caller write.
    pub fn unauthorized_write(sub_topic: &str) -> String {
        format!("Unauthorized: You do not have permissions to write to this Channel topic: {sub_topic}")
    }
}

/// The `system` message (extension `broadcast`, status `error`) a member resuming after `position`
/// gets when some messages after it are no longer held: what follows is live, not complete.
pub fn resume_gap(position: &str) -> String {
    format!(
        "ResumeGap: Some messages after position {position} are no longer available; \
         the messages that follow are not complete"
    )
}

/// `system` messages (extension `postgres_changes`) about the replication stream, sent on each
/// subscribed channel while it stays subscribed: `DELAYED` (status `error`) when changes have been
/// held up for a few seconds, `RESUMED` (status `ok`) when they flow again. Changes committed
/// meanwhile follow `RESUMED`, none lost.
pub mod postgres_changes {
    pub const DELAYED: &str =
        "PostgresChangesDelayed: The replication stream from the database is interrupted; changes will \
         follow when it is back";
    pub const RESUMED: &str = "PostgresChangesResumed: The replication stream from the database is back";
}

/// Messages of `system` errors that close a channel.
pub mod shutdown {
    pub const TOO_MANY_MESSAGES: &str = "Too many messages per second";
    pub const PRESENCE_RATE: &str = "Client presence rate limit exceeded";
    pub const TRACK_TOO_LARGE: &str = "Track message size exceeded";
    pub const SERVER_DISCONNECT: &str = "Server requested disconnect";

    /// A refreshed token no longer lets the caller read a private channel it joined.
    pub fn read_revoked(sub_topic: &str) -> String {
        format!("You no longer have permission to read from this Channel topic: {sub_topic}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_shape() {
        let p: serde_json::Value =
            serde_json::from_str(&payload(Extension::System, false, "m", Some("room"))).unwrap();
        assert_eq!(p, json!({"extension": "system", "status": "error", "message": "m", "channel": "room"}));
        let c: serde_json::Value = serde_json::from_str(&presence_count("room", 3, 2)).unwrap();
        assert_eq!(
            c,
            json!({"extension": "presence", "status": "ok", "message": "presence count", "channel": "room",
                   "count": 3, "keys": 2})
        );
        let p: serde_json::Value =
            serde_json::from_str(&payload(Extension::PostgresChanges, true, "ok", None)).unwrap();
        assert!(p.get("channel").is_none());
    }
}
