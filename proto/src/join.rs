//! The `phx_join` payload (PROTOCOL.md §2.4), parsed as leniently as the reference server: a value of
//! the wrong type falls back to its default instead of failing the join, booleans may be the strings
//! `"true"`/`"false"`, and unknown keys are ignored.

use serde_json::{Map, Value};

/// What a client asks for when it joins a channel.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JoinPayload {
    /// `None` for the legacy API (a join without `config`), which realtime-js never sends.
    pub config: Option<JoinConfig>,
    /// The channel's token, when the client holds one (`access_token`, or legacy `user_token`).
    pub access_token: Option<String>,
}

/// `config` of a join.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JoinConfig {
    pub broadcast: BroadcastConfig,
    pub presence: PresenceConfig,
    /// Raw `postgres_changes` entries in order (nulls removed); the join reply echoes them with an id.
    pub postgres_changes: Vec<Map<String, Value>>,
    pub postgres_changes_options: Option<PostgresChangesOptions>,
    pub private: bool,
}

/// `config.broadcast`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BroadcastConfig {
    /// Deliver the sender's own broadcasts back to it.
    pub self_broadcast: bool,
    /// Reply `ok` to each broadcast push.
    pub ack: bool,
    /// `replay` as sent (only valid on private channels).
    pub replay: Option<Value>,
    /// `resume` as sent (resumable channels: `{"position": …}`); absent, `null` or `false`: none.
    pub resume: Option<Value>,
    /// Ask for a `system` message once the replication stream is ready.
    pub replication_ready: bool,
}

/// `config.presence`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PresenceConfig {
    /// The presence key; `None` when absent, `null` or `""` (the node generates a UUID).
    pub key: Option<String>,
    /// Receive `presence_state` and `presence_diff`: `config.presence.enabled`, true when the presence
    /// object has no `enabled` (legacy clients), false when there is no presence object.
    pub enabled: bool,
    /// `config.presence.counts_only`: instead of `presence_state` and `presence_diff`, receive the
    /// room's presence counts (a `system` push, [`crate::system::presence_count`]); for rooms too
    /// large to send every member every meta. An extension of this server, ignored by others.
    pub counts_only: bool,
}

/// `config.postgres_changes_options` (realtime-js 2.119).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PostgresChangesOptions {
    pub wait: bool,
    pub timeout_ms: Option<u64>,
}

/// A boolean as the reference accepts it: JSON bool or case-insensitive `"true"`/`"false"`.
pub fn flexible_bool(value: Option<&Value>) -> Option<bool> {
    match value? {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

fn object(value: Option<&Value>) -> Option<&Map<String, Value>> {
    value.and_then(Value::as_object)
}

fn string(value: Option<&Value>) -> Option<String> {
    value.and_then(Value::as_str).map(str::to_owned)
}

/// Any JSON value as a presence key: strings as they are, numbers and other values as JSON text.
fn presence_key(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

impl JoinPayload {
    /// Parses a join payload; anything that is not an object is an empty (legacy) payload.
    pub fn from_value(payload: &Value) -> JoinPayload {
        let Some(map) = payload.as_object() else {
            return JoinPayload::default();
        };
        let access_token = string(map.get("user_token")).or_else(|| string(map.get("access_token")));
        let config = map.get("config").map(JoinConfig::from_value);
        JoinPayload { config, access_token }
    }
}

impl JoinConfig {
    fn from_value(value: &Value) -> JoinConfig {
        let empty = Map::new();
        let map = value.as_object().unwrap_or(&empty);
        let broadcast =
            object(map.get("broadcast")).map_or_else(BroadcastConfig::default, |b| BroadcastConfig {
                self_broadcast: flexible_bool(b.get("self")).unwrap_or(false),
                ack: flexible_bool(b.get("ack")).unwrap_or(false),
                replay: b.get("replay").filter(|v| !v.is_null()).cloned(),
                resume: b.get("resume").filter(|v| !v.is_null() && v.as_bool() != Some(false)).cloned(),
                replication_ready: flexible_bool(b.get("replication_ready")).unwrap_or(false),
            });
        let presence = object(map.get("presence")).map_or_else(PresenceConfig::default, |p| PresenceConfig {
            key: presence_key(p.get("key")),
            // realtime-js before 2.11 sends `presence: {key}` with no `enabled` and expects presence:
            // a presence object without `enabled` means enabled (current clients always send it).
            enabled: flexible_bool(p.get("enabled")).unwrap_or(true),
            counts_only: flexible_bool(p.get("counts_only")).unwrap_or(false),
        });
        let postgres_changes = match map.get("postgres_changes") {
            Some(Value::Array(items)) => items.iter().filter_map(|i| i.as_object().cloned()).collect(),
            _ => Vec::new(),
        };
        let postgres_changes_options =
            object(map.get("postgres_changes_options")).map(|o| PostgresChangesOptions {
                wait: flexible_bool(o.get("wait")).unwrap_or(false),
                timeout_ms: o.get("timeout").and_then(Value::as_u64),
            });
        JoinConfig {
            broadcast,
            presence,
            postgres_changes,
            postgres_changes_options,
            private: flexible_bool(map.get("private")).unwrap_or(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn realtime_js_default_join() {
        let p = JoinPayload::from_value(&json!({
            "config": {"broadcast": {"ack": false, "self": false}, "presence": {"key": "", "enabled": false},
                       "postgres_changes": [], "private": false},
            "access_token": "tok", "version": "realtime-js/2.119.1"
        }));
        let c = p.config.unwrap();
        assert_eq!(p.access_token.as_deref(), Some("tok"));
        assert_eq!(c.presence.key, None);
        assert!(!c.broadcast.ack && !c.broadcast.self_broadcast && !c.private);
        assert!(c.postgres_changes.is_empty());
    }

    #[test]
    fn lenient_values() {
        let p = JoinPayload::from_value(&json!({
            "config": {"broadcast": {"ack": "TRUE", "self": "nope"}, "presence": {"key": 42, "enabled": "true"},
                       "postgres_changes": [null, {"event": "*", "schema": "public"}], "private": "false",
                       "postgres_changes_options": {"wait": true, "timeout": 5000}},
            "access_token": null, "user_token": 5
        }));
        let c = p.config.unwrap();
        assert!(c.broadcast.ack);
        assert!(!c.broadcast.self_broadcast);
        assert_eq!(c.presence.key.as_deref(), Some("42"));
        assert!(c.presence.enabled);
        assert_eq!(c.postgres_changes.len(), 1);
        assert_eq!(
            c.postgres_changes_options,
            Some(PostgresChangesOptions { wait: true, timeout_ms: Some(5000) })
        );
        assert_eq!(p.access_token, None);
    }

    #[test]
    fn presence_without_enabled_is_enabled_as_legacy_clients_expect() {
        // realtime-js 2.9/2.10: `presence: {key}` and no `enabled`.
        let legacy = JoinPayload::from_value(&json!({"config": {"presence": {"key": "alice"}}}));
        let c = legacy.config.unwrap();
        assert!(c.presence.enabled);
        assert_eq!(c.presence.key.as_deref(), Some("alice"));
        let off = JoinPayload::from_value(&json!({"config": {"presence": {"key": "", "enabled": false}}}));
        assert!(!off.config.unwrap().presence.enabled);
        let absent = JoinPayload::from_value(&json!({"config": {"broadcast": {}}}));
        assert!(!absent.config.unwrap().presence.enabled, "no presence object: disabled");
    }

    #[test]
    fn counts_only_is_asked_for_in_the_presence_object() {
        let counts = |presence: Value| {
            JoinPayload::from_value(&json!({"config": {"presence": presence}})).config.unwrap().presence
        };
        let c = counts(json!({"key": "a", "enabled": false, "counts_only": true}));
        assert!(c.counts_only && !c.enabled);
        assert!(counts(json!({"key": "a", "counts_only": "TRUE"})).counts_only);
        assert!(!counts(json!({"key": "a", "counts_only": "no"})).counts_only);
        assert!(!counts(json!({"key": "a"})).counts_only);
    }

    #[test]
    fn legacy_and_garbage() {
        assert_eq!(JoinPayload::from_value(&json!({})).config, None);
        assert_eq!(JoinPayload::from_value(&json!("x")), JoinPayload::default());
        let c = JoinPayload::from_value(&json!({"config": 7})).config.unwrap();
        assert_eq!(c, JoinConfig::default());
    }
}
