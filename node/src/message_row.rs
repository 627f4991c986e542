//! A row of `realtime.messages` as the broadcast it becomes, whether it arrives live from the WAL
//! ([`crate::cdc::db_broadcast`]) or is read back for a private join's replay ([`crate::replay`]).

use std::sync::Arc;

use bytes::Bytes;
use realtime_proto::binary::BinaryEncoding;

use crate::vocab::BroadcastBody;

/// Why a `realtime.messages` row is not delivered.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SkipReason {
    #[error("not an insert")]
    NotInsert,
    #[error("extension is not 'broadcast'")]
    NotBroadcast,
    #[error("the row has no {0}")]
    Missing(&'static str),
    #[error("binary_payload is not bytea text")]
    BadBinary,
    #[error("the payload is {size} bytes, over the limit of {max}")]
    TooLarge { size: usize, max: usize },
}

/// A row's payload: its `payload` (JSON text) or its `binary_payload`.
pub enum Payload {
    Json(Vec<u8>),
    Binary(Vec<u8>),
}

/// The `meta` of a row broadcast live: `{"id": <row id>}` (with its `position` on resumable channels,
/// `crate::resume`).
pub fn live_meta(id: &str) -> String {
    serde_json::json!({ "id": id }).to_string()
}

/// The `meta` of a replayed row: `{"replayed": true, "id": <row id>}`.
pub fn replayed_meta(id: &str) -> String {
    serde_json::json!({ "replayed": true, "id": id }).to_string()
}

/// The user broadcast a row becomes (kind 4 to 2.0.0, a JSON object to 1.0.0, as the reference
/// sends them); a binary payload reaches 2.0.0 members only.
pub fn body(
    event: &str,
    payload: Payload,
    meta: String,
    max_payload: usize,
) -> Result<BroadcastBody, SkipReason> {
    let (encoding, data) = match payload {
        Payload::Json(data) => (BinaryEncoding::Json, data),
        Payload::Binary(data) => (BinaryEncoding::Raw, data),
    };
    check_size(data.len(), max_payload)?;
    Ok(BroadcastBody::User {
        event: event.into(),
        encoding,
        data: Bytes::from(data),
        meta: Some(Arc::from(meta)),
    })
}

fn check_size(size: usize, max: usize) -> Result<(), SkipReason> {
    if size > max {
        Err(SkipReason::TooLarge { size, max })
    } else {
        Ok(())
    }
}
