//! Broadcast from the database (PROTOCOL.md §3.7): rows inserted into `realtime.messages` (by
//! `realtime.send`, `realtime.send_binary`, `realtime.broadcast_changes` or plain SQL) arrive in the WAL
//! stream the node already consumes, through a publication of that table alone
//! ([`MESSAGES_PUBLICATION`]), and become broadcasts to the channel the row names.
//!
//! This module is the pure part: which changes are such rows, and the broadcast each one becomes.
//! The hub hands them to this node's channels; in a cluster every node gets every transaction from
//! the CDC leader, so each node delivers to its own members and nothing is relayed.

use std::sync::Arc;

use realtime_proto::postgres::change::{Change, ChangeKind};

use crate::message_row::{body, live_meta, Payload, SkipReason};
use crate::vocab::{BroadcastBody, TopicKey};

/// The publication the node creates for `realtime.messages` (inserts only, as the parent table) and
/// `realtime.notifications` (see [`super::notifications`]).
pub const MESSAGES_PUBLICATION: &str = "realtime_messages_publication";

/// The SQL that creates [`MESSAGES_PUBLICATION`].
pub const CREATE_MESSAGES_PUBLICATION: &str = "create publication realtime_messages_publication \
     for table realtime.messages, realtime.notifications \
     with (publish = 'insert', publish_via_partition_root = true)";

/// Adds `realtime.notifications` to a publication created before the inbox existed (a table added
/// to a publication later is streamed from then on; only a publication newer than the slot fails).
pub const ADD_NOTIFICATIONS: &str = "do $add$ begin \
     if not exists (select from pg_publication_tables where pubname = 'realtime_messages_publication' \
                    and schemaname = 'realtime' and tablename = 'notifications') then \
       alter publication realtime_messages_publication add table realtime.notifications; \
     end if; end $add$";

/// Whether a change is a row of `realtime.messages`.
pub fn is_message(change: &Change) -> bool {
    change.table.schema == "realtime" && change.table.name == "messages"
}

/// A row turned into what channels deliver.
#[derive(Debug)]
pub struct DbBroadcast {
    pub key: TopicKey,
    pub body: BroadcastBody,
}

/// The broadcast a `realtime.messages` insert becomes: to the private or public channel of its
/// `topic` per its `private` column, event `event`, the `payload` (JSON) or `binary_payload`, and
/// `meta: {"id": <row id>}`.
pub fn to_broadcast(change: &Change, max_payload: usize) -> Result<DbBroadcast, SkipReason> {
    if change.kind != ChangeKind::Insert {
        return Err(SkipReason::NotInsert);
    }
    let text = |name: &str| change.filter_value(name).and_then(|(_, value)| value);
    if text("extension") != Some("broadcast") {
        return Err(SkipReason::NotBroadcast);
    }
    let topic = text("topic").filter(|t| !t.is_empty()).ok_or(SkipReason::Missing("topic"))?;
    let event = text("event").ok_or(SkipReason::Missing("event"))?;
    let id = text("id").ok_or(SkipReason::Missing("id"))?;
    let private = text("private") == Some("t");
    let payload = match (text("payload"), text("binary_payload")) {
        (Some(json), _) => Payload::Json(json.as_bytes().to_vec()),
        (None, Some(hex)) => Payload::Binary(decode_bytea(hex).ok_or(SkipReason::BadBinary)?),
        (None, None) => return Err(SkipReason::Missing("payload")),
    };
    let body = body(event, payload, live_meta(id), max_payload)?;
    Ok(DbBroadcast { key: TopicKey { sub_topic: Arc::from(topic), private }, body })
}

/// `bytea` in PostgreSQL's hex output (`\x48656c6c6f`), as pgoutput sends it in text mode.
fn decode_bytea(text: &str) -> Option<Vec<u8>> {
    let hex = text.strip_prefix("\\x")?.as_bytes();
    if hex.len() % 2 != 0 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    hex.chunks(2).map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?)).collect()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use realtime_proto::binary::BinaryEncoding;
    use realtime_proto::postgres::change::Cell;
    use realtime_proto::postgres::table::{ColumnMeta, TableMeta};

    use super::*;
    use crate::message_row::replayed_meta;

    fn messages_table() -> Arc<TableMeta> {
        let column = |name: &str, typname: &str| ColumnMeta {
            name: name.into(),
            typname: typname.into(),
            sql_type: typname.into(),
            primary_key: name == "id" || name == "inserted_at",
        };
        Arc::new(TableMeta {
            oid: 1,
            schema: "realtime".into(),
            name: "messages".into(),
            columns: vec![
                column("topic", "text"),
                column("extension", "text"),
                column("payload", "jsonb"),
                column("event", "text"),
                column("private", "bool"),
                column("updated_at", "timestamp"),
                column("inserted_at", "timestamp"),
                column("id", "uuid"),
                column("binary_payload", "bytea"),
            ],
            rls: true,
        })
    }

    fn row(cells: [Option<&str>; 9]) -> Change {
        Change {
            kind: ChangeKind::Insert,
            table: messages_table(),
            new: Some(
                cells
                    .iter()
                    .map(|c| c.map_or(Cell::Null, |t| Cell::Text(Bytes::copy_from_slice(t.as_bytes()))))
                    .collect(),
            ),
            old: None,
        }
    }

    const ID: &str = "3f2a1b4c-0000-4000-8000-000000000001";
    const TS: &str = "2026-12-01 00:00:00";

    #[test]
    fn a_json_row_becomes_a_broadcast_with_the_row_id_as_meta() {
        let change = row([
            Some("room-1"),
            Some("broadcast"),
            Some(r#"{"n": 1}"#),
            Some("hello"),
            Some("t"),
            Some(TS),
            Some(TS),
            Some(ID),
            None,
        ]);
        assert!(is_message(&change));
        let b = to_broadcast(&change, 1000).unwrap();
        assert_eq!(b.key, TopicKey { sub_topic: "room-1".into(), private: true });
        let BroadcastBody::User { event, encoding, data, meta } = b.body else { panic!("user body") };
        assert_eq!((&*event, encoding, &data[..]), ("hello", BinaryEncoding::Json, &br#"{"n": 1}"#[..]));
        assert_eq!(meta.as_deref(), Some(live_meta(ID).as_str()));
        assert_eq!(live_meta(ID), format!(r#"{{"id":"{ID}"}}"#));
        assert_eq!(replayed_meta(ID), format!(r#"{{"id":"{ID}","replayed":true}}"#));
    }

    #[test]
    fn a_binary_row_becomes_a_raw_user_broadcast_and_public_rows_go_to_public_channels() {
        let change = row([
            Some("room-2"),
            Some("broadcast"),
            None,
            Some("bin"),
            Some("f"),
            Some(TS),
            Some(TS),
            Some(ID),
            Some("\\x00ff10"),
        ]);
        let b = to_broadcast(&change, 1000).unwrap();
        assert!(!b.key.private);
        let BroadcastBody::User { event, encoding, data, meta } = b.body else { panic!("user body") };
        assert_eq!((&*event, encoding, &data[..]), ("bin", BinaryEncoding::Raw, &[0u8, 255, 16][..]));
        assert_eq!(meta.as_deref(), Some(format!(r#"{{"id":"{ID}"}}"#).as_str()));
    }

    #[test]
    fn rows_that_cannot_be_delivered_say_why() {
        let base = [
            Some("t"),
            Some("broadcast"),
            Some("{}"),
            Some("e"),
            Some("t"),
            Some(TS),
            Some(TS),
            Some(ID),
            None,
        ];
        let with = |i: usize, v: Option<&'static str>| {
            let mut cells = base;
            cells[i] = v;
            row(cells)
        };
        assert_eq!(to_broadcast(&with(1, Some("presence")), 100).unwrap_err(), SkipReason::NotBroadcast);
        assert_eq!(to_broadcast(&with(0, None), 100).unwrap_err(), SkipReason::Missing("topic"));
        assert_eq!(to_broadcast(&with(3, None), 100).unwrap_err(), SkipReason::Missing("event"));
        assert_eq!(to_broadcast(&with(2, None), 100).unwrap_err(), SkipReason::Missing("payload"));
        assert_eq!(
            to_broadcast(&with(2, Some("[1,2,3]")), 3).unwrap_err(),
            SkipReason::TooLarge { size: 7, max: 3 }
        );
        let mut update = with(2, Some("{}"));
        update.kind = ChangeKind::Update;
        assert_eq!(to_broadcast(&update, 100).unwrap_err(), SkipReason::NotInsert);
        let mut bad = base;
        bad[2] = None;
        bad[8] = Some("\\xzz");
        assert_eq!(to_broadcast(&row(bad), 100).unwrap_err(), SkipReason::BadBinary);
    }
}
