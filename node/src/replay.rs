//! Replay (`config.broadcast.replay = {since, limit}`, PROTOCOL.md §3.8): a private channel's member
//! joins with the broadcasts stored in `realtime.messages` for its topic since a time, sent right after
//! the join reply with `meta: {"replayed": true, "id": …}`; the same rows arriving live are not
//! delivered to it again.
//!
//! Unlike the reference, which orders by `inserted_at` alone (one transaction's rows share it, so they
//! replay in any order, realtime#2201), rows are ordered by `inserted_at` and then by their place in
//! the table, which is insertion order within a transaction (partitions are append-only: rows are never
//! updated or deleted, whole days are dropped).

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::Value;
use tokio_postgres::Client;

use crate::message_row::{self, Payload};
use crate::vocab::BroadcastBody;

/// At most this many rows are replayed (the reference's bound), and this many by default.
pub const MAX_LIMIT: i64 = 25;

/// A valid replay request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayRequest {
    /// Unix milliseconds.
    pub since_ms: i64,
    pub limit: i64,
}

/// Reads `config.broadcast.replay`; the error is the join's refusal reason.
pub fn parse(value: &Value) -> Result<ReplayRequest, String> {
    let bad = |what: &str| format!("UnableToReplayMessages: {what}");
    let Some(object) = value.as_object() else { return Err(bad("replay must be an object {since, limit}")) };
    let since_ms = object
        .get("since")
        .and_then(Value::as_i64)
        .filter(|ms| *ms >= 0)
        .ok_or_else(|| bad("replay.since must be a Unix time in milliseconds"))?;
    let limit = match object.get("limit") {
        None | Some(Value::Null) => MAX_LIMIT,
        Some(v) => v.as_i64().ok_or_else(|| bad("replay.limit must be an integer"))?.clamp(1, MAX_LIMIT),
    };
    Ok(ReplayRequest { since_ms, limit })
}

/// The replayed messages, oldest first, and the row id of each (the member skips those live).
#[derive(Debug, Default)]
pub struct Replay {
    pub bodies: Vec<BroadcastBody>,
    pub skip_live: Arc<HashSet<Arc<str>>>,
}

const QUERY: &str = "select id::text, event, payload::text, binary_payload from realtime.messages \
     where topic = $1 and private is true and extension = 'broadcast' \
       and inserted_at >= to_timestamp($2::float8 / 1000)::timestamp \
       and inserted_at < now()::timestamp + interval '1 minute' \
     order by inserted_at desc, ctid desc limit $3";

/// The newest `limit` stored broadcasts of the private topic since `since_ms`, oldest first. Rows
/// larger than `max_payload`, or without an event, are left out.
pub async fn fetch(
    client: &Client,
    sub_topic: &str,
    request: ReplayRequest,
    max_payload: usize,
) -> Result<Replay, tokio_postgres::Error> {
    let since = request.since_ms as f64;
    let rows = client.query(QUERY, &[&sub_topic, &since, &request.limit]).await?;
    let mut bodies = Vec::with_capacity(rows.len());
    let mut skip_live = HashSet::with_capacity(rows.len());
    for row in rows.iter().rev() {
        let id: &str = row.get(0);
        let Some(event) = row.get::<_, Option<&str>>(1) else { continue };
        let payload = match (row.get::<_, Option<&str>>(2), row.get::<_, Option<Vec<u8>>>(3)) {
            (Some(json), _) => Payload::Json(json.as_bytes().to_vec()),
            (None, Some(binary)) => Payload::Binary(binary),
            (None, None) => continue,
        };
        if let Ok(body) = message_row::body(event, payload, message_row::replayed_meta(id), max_payload) {
            bodies.push(body);
            skip_live.insert(Arc::from(id));
        }
    }
    Ok(Replay { bodies, skip_live: Arc::new(skip_live) })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn since_is_required_and_the_limit_is_clamped_to_the_references_bounds() {
        assert_eq!(parse(&json!({"since": 5})), Ok(ReplayRequest { since_ms: 5, limit: 25 }));
        assert_eq!(parse(&json!({"since": 5, "limit": 3})), Ok(ReplayRequest { since_ms: 5, limit: 3 }));
        assert_eq!(parse(&json!({"since": 5, "limit": 500})).unwrap().limit, 25);
        assert_eq!(parse(&json!({"since": 5, "limit": 0})).unwrap().limit, 1);
        for bad in [
            json!({}),
            json!({"since": "yesterday"}),
            json!({"since": -1}),
            json!([1]),
            json!({"since": 1, "limit": "x"}),
        ] {
            assert!(parse(&bad).unwrap_err().starts_with("UnableToReplayMessages: "), "{bad}");
        }
    }
}
