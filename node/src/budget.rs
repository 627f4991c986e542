//! The budget for everything a client chooses: topic, `ref` and `join_ref` lengths, presence key length
//! and meta depth, `postgres_changes` entries per join and their size. Checked as soon as a message is
//! decoded, before anything of it is kept, so a socket's memory is bounded by its limits rather than by
//! what a client sends; each refusal has a reason the client reads.

use realtime_proto::client::ClientMessage;
use realtime_proto::join::JoinConfig;
use serde_json::{Map, Value};
use thiserror::Error;

use crate::close::Close;

pub use crate::config::Budget;

/// What was over its budget; the `Display` text is what the client is told.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BudgetError {
    #[error("TopicTooLong: a topic may have at most {max} bytes")]
    TopicTooLong { max: usize },
    /// Closes the socket: the text is its close reason, [`Close::RefTooLong`].
    #[error("{}", Close::RefTooLong { max: *max }.reason())]
    RefTooLong { max: usize },
    #[error("PresenceKeyTooLong: a presence key may have at most {max} bytes")]
    PresenceKeyTooLong { max: usize },
    #[error("PresenceTooDeep: presence metas may nest at most {max} levels")]
    PresenceTooDeep { max: usize },
    #[error("TooManyPostgresChanges: a join may have at most {max} postgres_changes entries")]
    TooManyPostgresChanges { max: usize },
    #[error("PostgresChangesTooLong: a postgres_changes entry may have at most {max} bytes")]
    PostgresChangeTooLong { max: usize },
}

/// How deeply objects and arrays nest in `value` (a scalar is 0, `{}` is 1). Iterative: a deep value
/// cannot overflow the stack here.
pub fn json_depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((value, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Object(map) => Box::new(map.values()),
            Value::Array(items) => Box::new(items.iter()),
            _ => continue,
        };
        deepest = deepest.max(depth + 1);
        stack.extend(children.map(|child| (child, depth + 1)));
    }
    deepest
}

impl Budget {
    /// The envelope's `ref` and `join_ref`.
    pub fn check_refs(&self, msg: &ClientMessage) -> Result<(), BudgetError> {
        let refs = [msg.join_ref.as_deref(), msg.msg_ref.as_deref()];
        if refs.iter().flatten().any(|r| r.len() > self.max_ref_bytes) {
            return Err(BudgetError::RefTooLong { max: self.max_ref_bytes });
        }
        Ok(())
    }

    /// The envelope's topic.
    pub fn check_topic(&self, msg: &ClientMessage) -> Result<(), BudgetError> {
        if msg.topic.len() > self.max_topic_bytes {
            return Err(BudgetError::TopicTooLong { max: self.max_topic_bytes });
        }
        Ok(())
    }

    /// A join's config: presence key, `postgres_changes` count and sizes.
    pub fn check_join(&self, config: &JoinConfig) -> Result<(), BudgetError> {
        if config.presence.key.as_ref().is_some_and(|k| k.len() > self.max_presence_key_bytes) {
            return Err(BudgetError::PresenceKeyTooLong { max: self.max_presence_key_bytes });
        }
        if config.postgres_changes.len() > self.max_postgres_changes {
            return Err(BudgetError::TooManyPostgresChanges { max: self.max_postgres_changes });
        }
        let too_long = |entry: &Map<String, Value>| {
            serde_json::to_string(entry).map_or(true, |json| json.len() > self.max_filter_bytes)
        };
        if config.postgres_changes.iter().any(too_long) {
            return Err(BudgetError::PostgresChangeTooLong { max: self.max_filter_bytes });
        }
        Ok(())
    }

    /// A presence meta's nesting.
    pub fn check_presence(&self, meta: &Map<String, Value>) -> Result<(), BudgetError> {
        let depth = 1 + meta.values().map(json_depth).max().unwrap_or(0);
        if depth > self.max_presence_depth {
            return Err(BudgetError::PresenceTooDeep { max: self.max_presence_depth });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use realtime_proto::client::ClientEvent;
    use serde_json::json;

    use super::*;

    fn budget() -> Budget {
        Budget {
            max_topic_bytes: 10,
            max_ref_bytes: 3,
            max_presence_key_bytes: 4,
            max_presence_depth: 3,
            max_postgres_changes: 2,
            max_filter_bytes: 60,
        }
    }

    #[test]
    fn depth_counts_objects_and_arrays() {
        assert_eq!(json_depth(&json!(1)), 0);
        assert_eq!(json_depth(&json!({})), 1);
        assert_eq!(json_depth(&json!({"a": [1, {"b": []}]})), 4);
        let mut deep = json!(0);
        for _ in 0..1_000 {
            deep = json!([deep]);
        }
        assert_eq!(json_depth(&deep), 1_000);
    }

    #[test]
    fn envelope_fields() {
        let msg = |topic: &str, r: Option<&str>| ClientMessage {
            join_ref: None,
            msg_ref: r.map(str::to_owned),
            topic: topic.into(),
            event: ClientEvent::Heartbeat,
        };
        assert_eq!(budget().check_refs(&msg("realtime:a", Some("1"))), Ok(()));
        assert_eq!(budget().check_topic(&msg("realtime:a", Some("1"))), Ok(()));
        assert_eq!(
            budget().check_topic(&msg("realtime:ab", None)),
            Err(BudgetError::TopicTooLong { max: 10 })
        );
        assert_eq!(budget().check_refs(&msg("x", Some("1234"))), Err(BudgetError::RefTooLong { max: 3 }));
    }

    #[test]
    fn join_and_presence() {
        let entry =
            |t: &str| json!({"event": "*", "schema": "public", "table": t}).as_object().unwrap().clone();
        let mut config =
            JoinConfig { postgres_changes: vec![entry("a"), entry("b")], ..JoinConfig::default() };
        assert_eq!(budget().check_join(&config), Ok(()));
        config.postgres_changes.push(entry("c"));
        assert_eq!(budget().check_join(&config), Err(BudgetError::TooManyPostgresChanges { max: 2 }));
        config.postgres_changes = vec![entry(&"x".repeat(40))];
        assert_eq!(budget().check_join(&config), Err(BudgetError::PostgresChangeTooLong { max: 60 }));
        config.postgres_changes.clear();
        config.presence.key = Some("alice".into());
        assert_eq!(budget().check_join(&config), Err(BudgetError::PresenceKeyTooLong { max: 4 }));
        let meta = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(budget().check_presence(&meta(json!({"a": {"b": {"c": 1}}}))), Ok(()), "3 levels");
        assert_eq!(
            budget().check_presence(&meta(json!({"a": {"b": {"c": {"d": 1}}}}))),
            Err(BudgetError::PresenceTooDeep { max: 3 })
        );
    }
}
