//! The FastAPI peer's protocol (`loadtest/peers/fastapi/app.py`), which the tokio-fanout peer
//! (`loadtest/peers/tokio-fanout`) speaks too: a client joins room `r` by opening
//! `/ws/r`, and the server confirms with `{"type":"joined","room":r}`; a client publishes with
//! `{"type":"publish","payload":DATA}` and every other member receives `{"type":"msg","payload":DATA}`.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::Incoming;
use crate::payload::Stamp;

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
}

/// Path of the WebSocket URL for room `room`.
pub fn path(room: &str) -> String {
    format!("/ws/{room}")
}

/// The frame that publishes JSON `data`.
pub fn publish(data: &str) -> String {
    format!(r#"{{"type":"publish","payload":{data}}}"#)
}

/// What a server frame means.
pub fn parse(text: &str) -> Incoming {
    let Ok(frame) = serde_json::from_str::<Frame<'_>>(text) else { return Incoming::Undecodable };
    match frame.kind {
        "joined" => Incoming::Joined,
        "msg" => frame
            .payload
            .and_then(|p| Stamp::decode(p.get().as_bytes()))
            .map_or(Incoming::BadDelivery, Incoming::Delivery),
        _ => Incoming::Ignored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        assert_eq!(path("room-0"), "/ws/room-0");
        let p: serde_json::Value = serde_json::from_str(&publish(r#"{"t":1,"p":2,"s":3}"#)).unwrap();
        assert_eq!(p["type"], "publish");
        assert_eq!(p["payload"]["s"], 3);
        assert_eq!(parse(r#"{"type":"joined","room":"room-0"}"#), Incoming::Joined);
        assert_eq!(
            parse(r#"{"type":"msg","payload":{"t":1,"p":2,"s":3,"x":"pad"}}"#),
            Incoming::Delivery(Stamp { scheduled_unix_nanos: 1, publisher: 2, seq: 3 })
        );
        assert_eq!(parse(r#"{"type":"msg","payload":null}"#), Incoming::BadDelivery);
        assert_eq!(parse(r#"{"type":"msg"}"#), Incoming::BadDelivery);
        assert_eq!(parse(r#"{"type":"other"}"#), Incoming::Ignored);
        assert_eq!(parse("[1]"), Incoming::Undecodable);
    }
}
