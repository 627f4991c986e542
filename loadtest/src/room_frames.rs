//! What the `room` scenario makes of each server frame, as pure functions over [`Event`]: which
//! frames are presence traffic (`presence_state`, `presence_diff`, the presence-count `system` push of
//! a counts-only join), the churn keys a diff announces, and the keys every kind of connection uses.
//!
//! Kept apart from the connections so that the classification is unit-tested against the frames the
//! server's own encoders produce.

use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::HashMap;

use crate::frames::Event;

/// Presence key of fill member `i`.
pub fn member_key(i: usize) -> String {
    format!("m-{i}")
}

/// Presence key of late-join probe `k` of a phase (`q` quiet, `c` during the churn).
pub fn probe_key(phase: char, k: usize) -> String {
    format!("p{phase}-{k}")
}

/// Presence key of churn join `k`: the observer maps it back to `k`.
pub fn churn_key(k: u64) -> String {
    format!("c-{k}")
}

/// The churn join a key names, if it is a churn key.
pub fn churn_index(key: &str) -> Option<u64> {
    key.strip_prefix("c-")?.parse().ok()
}

/// What a frame is, for the tallies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// `presence_diff`.
    Diff,
    /// `presence_state`.
    State,
    /// A `system` push with `payload.extension == "presence"` (the counts of a counts-only join).
    Count,
    /// A `system` push about something else (errors, shutdown notices).
    OtherSystem,
    /// A broadcast.
    Broadcast,
    /// Anything else (replies, closes, undecodable frames).
    Other,
}

#[derive(Deserialize)]
struct SystemPayload {
    extension: Option<String>,
    message: Option<String>,
}

/// The class of a parsed frame.
pub fn classify(event: &Event) -> Class {
    match event {
        Event::Presence { diff: true, .. } => Class::Diff,
        Event::Presence { diff: false, .. } => Class::State,
        Event::System { payload, .. } if is_presence_count(payload) => Class::Count,
        Event::System { .. } => Class::OtherSystem,
        Event::Broadcast { .. } => Class::Broadcast,
        _ => Class::Other,
    }
}

/// Whether a `system` payload is a presence-count push (`"extension":"presence"`).
pub fn is_presence_count(payload: &str) -> bool {
    serde_json::from_str::<SystemPayload>(payload).is_ok_and(|p| p.extension.as_deref() == Some("presence"))
}

/// The `message` of a `system` payload, or the payload itself: the label an unexpected one is
/// counted under.
pub fn system_message(payload: &str) -> String {
    let message = serde_json::from_str::<SystemPayload>(payload).ok().and_then(|p| p.message);
    format!("system: {}", message.unwrap_or_else(|| payload.to_owned()))
}

#[derive(Deserialize)]
struct Diff<'a> {
    #[serde(borrow)]
    joins: Option<HashMap<String, &'a RawValue>>,
}

/// The churn joins (see [`churn_key`]) a `presence_diff` payload announces; other keys are skipped.
pub fn churn_joins(diff_payload: &str) -> Result<Vec<u64>, String> {
    let diff: Diff<'_> =
        serde_json::from_str(diff_payload).map_err(|_| "presence_diff that is not a diff".to_owned())?;
    let mut joins: Vec<u64> = diff.joins.unwrap_or_default().keys().filter_map(|k| churn_index(k)).collect();
    joins.sort_unstable();
    Ok(joins)
}

#[cfg(test)]
mod tests {
    use realtime_proto::{server, OutFrame, Vsn};
    use tokio_tungstenite::tungstenite::Message;

    use super::*;
    use crate::frames::parse;

    fn event(vsn: Vsn, event: &str, payload: &str) -> Event {
        let frame = server::channel_push(vsn, Some("1"), "realtime:room-big", event, payload);
        let message = match frame {
            OutFrame::Text(text) => Message::text(text),
            OutFrame::Binary(bytes) => Message::Binary(bytes),
        };
        parse(vsn, message).expect("a frame")
    }

    #[test]
    fn presence_frames_are_told_apart() {
        let count = r#"{"extension":"presence","status":"ok","message":"presence count","channel":"room-big","count":3,"keys":2}"#;
        for vsn in Vsn::ALL {
            assert_eq!(classify(&event(vsn, "presence_diff", r#"{"joins":{},"leaves":{}}"#)), Class::Diff);
            assert_eq!(classify(&event(vsn, "presence_state", "{}")), Class::State);
            assert_eq!(classify(&event(vsn, "system", count)), Class::Count);
            let error = r#"{"status":"error","message":"Too many presence messages per second"}"#;
            assert_eq!(classify(&event(vsn, "system", error)), Class::OtherSystem);
            let subscribed = r#"{"extension":"postgres_changes","status":"ok","message":"Subscribed"}"#;
            assert_eq!(classify(&event(vsn, "system", subscribed)), Class::OtherSystem);
            assert_eq!(classify(&event(vsn, "phx_close", "{}")), Class::Other);
        }
        assert_eq!(system_message(r#"{"message":"slow"}"#), "system: slow");
        assert_eq!(system_message("[]"), "system: []");
        assert!(!is_presence_count("not json"));
    }

    #[test]
    fn churn_keys_round_trip_and_are_read_from_diffs() {
        assert_eq!(churn_index(&churn_key(42)), Some(42));
        assert_eq!(churn_index(&member_key(42)), None);
        assert_eq!(churn_index(&probe_key('q', 3)), None);
        assert_eq!(churn_index("c-x"), None);
        let diff = r#"{"joins":{"c-7":{"metas":[{"phx_ref":"F1","c":7}]},"m-3":{"metas":[]},"c-2":{"metas":[]}},"leaves":{"c-1":{"metas":[]}}}"#;
        assert_eq!(churn_joins(diff), Ok(vec![2, 7]));
        assert_eq!(churn_joins(r#"{"leaves":{"c-1":{}}}"#), Ok(vec![]));
        assert!(churn_joins("[1]").is_err());
    }
}
