//! Resumable delivery: a client that lost its connection rejoins with the position of the last
//! message it received and gets exactly what it missed, in order, before anything live; or, when
//! that cannot be done, an explicit `system` message saying so. Beyond the reference, whose docs
//! say broadcast delivery is not guaranteed.
//!
//! How, in one pass:
//! - **Which channels**: those named by `REALTIME_RESUMABLE_TOPICS` ([`topics`]), public or private.
//! - **One order for the whole cluster**: every broadcast on such a channel is a row of
//!   `realtime.messages` (socket and REST sends are stored by [`writer`], database sends already
//!   are) and reaches subscribers through the WAL stream the CDC leader ships to every node. Its
//!   position ([`position`]) is its commit position, the same on every node, and goes out in its
//!   `meta.position`.
//! - **What a node can give back**: each node keeps the recent messages of resumable channels
//!   ([`log`]), bounded by age, count per channel and bytes, and knows from which position on it has
//!   every message of a channel.
//! - **Rejoin**: `config.broadcast.resume = {position}`. The channel holds the member's live
//!   messages back until the join reply is out, then sends what the log holds after the position and
//!   goes live, skipping anything already sent ([`crate::channel::actor`]).

pub mod log;
pub mod position;
pub mod topics;
pub mod writer;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use realtime_proto::binary::BinaryEncoding;
use serde_json::Value;

use crate::metrics::metrics;
use crate::sync::lock;
use crate::vocab::{BroadcastBody, ConnId, TopicKey};

pub use log::{LogLimits, Since};
pub use position::Position;
pub use topics::ResumableTopics;
pub use writer::{StoredPayload, Write, WriteError, WriterHandle};

/// `REALTIME_RESUMABLE_TOPICS` and the retention of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeConfig {
    pub topics: ResumableTopics,
    pub limits: LogLimits,
}

/// This node's resumable channels: which they are, their recent messages, the writer.
pub struct Resume {
    topics: ResumableTopics,
    log: Mutex<log::ResumeLog>,
    writer: WriterHandle,
    senders: writer::Senders,
}

impl Resume {
    /// Starts the writer on `arbiter`. `None` when no topic is resumable.
    pub fn start(
        config: &ResumeConfig,
        database_url: &str,
        arbiter: &actix::ArbiterHandle,
    ) -> Option<Arc<Resume>> {
        if !config.topics.any() {
            return None;
        }
        let senders = writer::Senders::default();
        let writer = writer::start(database_url.to_owned(), senders.clone(), arbiter);
        Some(Arc::new(Resume {
            topics: config.topics.clone(),
            log: Mutex::new(log::ResumeLog::new(config.limits)),
            writer,
            senders,
        }))
    }

    /// Whether broadcasts on `key` go through PostgreSQL and carry positions.
    pub fn is_resumable(&self, key: &TopicKey) -> bool {
        self.topics.contains(&key.sub_topic)
    }

    /// The writer, for socket and REST sends on resumable channels.
    pub fn writer(&self) -> &WriterHandle {
        &self.writer
    }

    /// The hub dispatches the stream from the transaction ending at `commit_lsn` on.
    pub fn stream_from(&self, commit_lsn: u64) {
        lock(&self.log).stream_from(Position { commit_lsn, index: 0 });
    }

    /// A stored message of a resumable channel arrived through the stream: keeps it, with its
    /// position in its `meta` (`{"id", "position"}`). Returns what to deliver, and the socket that
    /// sent it (if it was sent through this node).
    pub fn arrived(
        &self,
        key: &TopicKey,
        row_id: &str,
        position: Position,
        body: BroadcastBody,
    ) -> (BroadcastBody, Option<ConnId>) {
        let from = lock(&self.senders).remove(row_id);
        let meta = serde_json::json!({ "id": row_id, "position": position.to_string() }).to_string();
        let body = match body {
            BroadcastBody::User { event, encoding, data, .. } => {
                BroadcastBody::User { event, encoding, data, meta: Some(meta.into()) }
            }
            json @ BroadcastBody::Json(_) => json,
        };
        let mut log = lock(&self.log);
        log.append(key, position, body.clone(), Instant::now());
        let (messages, bytes) = log.size();
        metrics().resume.retained_messages.set(messages as f64);
        metrics().resume.retained_bytes.set(bytes as f64);
        (body, from)
    }

    /// The newest position held for `key` (where a resuming member's live messages start).
    pub fn last(&self, key: &TopicKey) -> Option<Position> {
        lock(&self.log).last(key)
    }

    /// What a member that last received `after` is owed; a gap gives the messages after `baseline`
    /// (those that arrived since it joined).
    pub fn owed(&self, key: &TopicKey, after: Position, baseline: Option<Position>) -> Owed {
        let mut log = lock(&self.log);
        match log.since(key, after, Instant::now()) {
            Since::Messages(entries) => {
                metrics().resume.filled.increment(1);
                Owed { gap: false, messages: entries.into_iter().map(|e| (e.position, e.body)).collect() }
            }
            Since::Gap => {
                metrics().resume.gaps.increment(1);
                let entries = log.after(key, baseline);
                Owed { gap: true, messages: entries.into_iter().map(|e| (e.position, e.body)).collect() }
            }
        }
    }
}

/// What a resuming member is sent before going live.
#[derive(Debug)]
pub struct Owed {
    /// Some messages after its position are not held here: it is told so first.
    pub gap: bool,
    pub messages: Vec<(Position, BroadcastBody)>,
}

/// Reads `config.broadcast.resume`: `{"position": "<24 hex>"}` resumes after that message;
/// `true`, `{}` or a `null` position joins at the live end. The error is the join's refusal reason.
pub fn parse_request(value: &Value) -> Result<Option<Position>, String> {
    let bad = |what: &str| format!("UnableToResume: {what}");
    match value {
        Value::Bool(true) => Ok(None),
        Value::Object(object) => match object.get("position") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Position::parse(text).map(Some).map_err(|e| bad(&e.to_string())),
            Some(_) => Err(bad("resume.position must be a string")),
        },
        _ => Err(bad("resume must be an object {\"position\": …}")),
    }
}

/// What a socket's or REST broadcast is stored as: event and payload (JSON text or bytes).
pub fn stored_form(body: &BroadcastBody) -> Result<(String, StoredPayload), &'static str> {
    match body {
        BroadcastBody::Json(push) => {
            #[derive(serde::Deserialize)]
            struct Push<'a> {
                event: Option<String>,
                #[serde(borrow)]
                payload: Option<&'a serde_json::value::RawValue>,
            }
            let push: Push = serde_json::from_str(push).map_err(|_| "the broadcast is not a JSON object")?;
            let event = push.event.ok_or("the broadcast has no event")?;
            let payload = push.payload.map_or("null", |raw| raw.get()).to_owned();
            Ok((event, StoredPayload::Json(payload)))
        }
        BroadcastBody::User { event, encoding, data, .. } => {
            let payload = match encoding {
                BinaryEncoding::Json => StoredPayload::Json(
                    String::from_utf8(data.to_vec()).map_err(|_| "the payload is not UTF-8")?,
                ),
                BinaryEncoding::Raw => StoredPayload::Binary(Bytes::clone(data).to_vec()),
            };
            Ok((event.to_string(), payload))
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn resume_requests() {
        let p = "00000000016B374800000003";
        assert_eq!(parse_request(&json!({ "position": p })), Ok(Some(Position::parse(p).unwrap())));
        for fresh in [json!(true), json!({}), json!({"position": null})] {
            assert_eq!(parse_request(&fresh), Ok(None), "{fresh}");
        }
        for bad in [json!(false), json!("x"), json!({"position": 5}), json!({"position": "12"})] {
            assert!(parse_request(&bad).unwrap_err().starts_with("UnableToResume: "), "{bad}");
        }
    }

    #[test]
    fn pushes_are_stored_as_event_and_payload() {
        let json = BroadcastBody::Json(r#"{"type":"broadcast","event":"e","payload":{"a": [1]}}"#.into());
        assert_eq!(stored_form(&json), Ok(("e".into(), StoredPayload::Json(r#"{"a": [1]}"#.into()))));
        let bare = BroadcastBody::Json(r#"{"type":"broadcast","event":"e"}"#.into());
        assert_eq!(stored_form(&bare), Ok(("e".into(), StoredPayload::Json("null".into()))));
        assert!(stored_form(&BroadcastBody::Json(r#"{"payload":1}"#.into())).is_err());
        let raw = BroadcastBody::User {
            event: "bin".into(),
            encoding: BinaryEncoding::Raw,
            data: Bytes::from_static(&[0, 255]),
            meta: None,
        };
        assert_eq!(stored_form(&raw), Ok(("bin".into(), StoredPayload::Binary(vec![0, 255]))));
    }
}
