//! The notifications inbox's push: every committed insert into `realtime.notifications` reaches its
//! user as a `notification.new` broadcast `{id, type, content, created_at}` on the channel
//! `notifications:<user_id>` (public or private, whichever the user joined), through the WAL stream
//! the node already consumes, so nothing is missed between commit and push, on every node.
//!
//! Who may join such a channel is the join's business ([`owner_of`]): only a socket whose token's
//! `sub` is that user id.

use std::sync::Arc;

use bytes::Bytes;
use realtime_proto::binary::BinaryEncoding;
use realtime_proto::postgres::change::{Change, ChangeKind};
use realtime_proto::postgres::values;

use crate::vocab::{BroadcastBody, TopicKey};

/// The channel prefix of a user's inbox.
pub const CHANNEL_PREFIX: &str = "notifications:";
/// The event of a new notification.
pub const EVENT: &str = "notification.new";

/// Whether a change is a row of `realtime.notifications`.
pub fn is_notification(change: &Change) -> bool {
    change.table.schema == "realtime" && change.table.name == "notifications"
}

/// The user whose inbox `sub_topic` is, if it is one.
pub fn owner_of(sub_topic: &str) -> Option<&str> {
    sub_topic.strip_prefix(CHANNEL_PREFIX)
}

/// The pushes an insert becomes: the same broadcast to the public and the private inbox channel.
pub fn to_pushes(change: &Change) -> Option<[(TopicKey, BroadcastBody); 2]> {
    if change.kind != ChangeKind::Insert {
        return None;
    }
    let value = |name: &str| change.filter_value(name).and_then(|(typname, text)| Some((typname, text?)));
    let json = |name: &str| value(name).map(|(typname, text)| values::to_json(typname, text));
    let (_, user_id) = value("user_id")?;
    let payload = format!(
        r#"{{"id":{},"type":{},"content":{},"created_at":{}}}"#,
        json("id")?,
        json("type")?,
        json("content").unwrap_or_else(|| "{}".into()),
        json("created_at").unwrap_or_else(values::null),
    );
    let sub_topic: Arc<str> = Arc::from(format!("{CHANNEL_PREFIX}{user_id}"));
    let body = BroadcastBody::User {
        event: EVENT.into(),
        encoding: BinaryEncoding::Json,
        data: Bytes::from(payload),
        meta: None,
    };
    Some([
        (TopicKey { sub_topic: sub_topic.clone(), private: false }, body.clone()),
        (TopicKey { sub_topic, private: true }, body),
    ])
}

#[cfg(test)]
mod tests {
    use realtime_proto::postgres::change::Cell;
    use realtime_proto::postgres::table::{ColumnMeta, TableMeta};

    use super::*;

    fn table() -> Arc<TableMeta> {
        let column = |name: &str, typname: &str| ColumnMeta {
            name: name.into(),
            typname: typname.into(),
            sql_type: typname.into(),
            primary_key: name == "id",
        };
        Arc::new(TableMeta {
            oid: 2,
            schema: "realtime".into(),
            name: "notifications".into(),
            columns: vec![
                column("id", "uuid"),
                column("user_id", "uuid"),
                column("type", "text"),
                column("content", "jsonb"),
                column("read_at", "timestamptz"),
                column("created_at", "timestamptz"),
            ],
            rls: false,
        })
    }

    #[test]
    fn an_insert_becomes_notification_new_on_the_users_channels() {
        let cells = ["n-1", "u-1", "mention", r#"{"by": "ann"}"#, "", "2026-12-01 01:02:03.5+00"];
        let change = Change {
            kind: ChangeKind::Insert,
            table: table(),
            new: Some(
                cells
                    .iter()
                    .map(|c| {
                        if c.is_empty() {
                            Cell::Null
                        } else {
                            Cell::Text(Bytes::copy_from_slice(c.as_bytes()))
                        }
                    })
                    .collect(),
            ),
            old: None,
        };
        assert!(is_notification(&change));
        let [(public, body), (private, _)] = to_pushes(&change).unwrap();
        assert_eq!(&*public.sub_topic, "notifications:u-1");
        assert!(!public.private && private.private);
        let BroadcastBody::User { event, data, .. } = body else { panic!("user body") };
        assert_eq!(&*event, "notification.new");
        let v: serde_json::Value = serde_json::from_slice(&data).unwrap();
        assert_eq!(v["id"], "n-1");
        assert_eq!(v["type"], "mention");
        assert_eq!(v["content"], serde_json::json!({"by": "ann"}));
        assert!(v["created_at"].as_str().unwrap().starts_with("2026-12-01"), "{v}");
        assert_eq!(owner_of("notifications:u-1"), Some("u-1"));
        assert_eq!(owner_of("room"), None);
    }
}
