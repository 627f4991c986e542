//! Topic rules: clients join `realtime:<sub_topic>`; `phoenix` is the socket's own topic.

/// Prefix of every routable channel topic.
pub const PREFIX: &str = "realtime:";
/// Topic of heartbeats.
pub const PHOENIX: &str = "phoenix";

/// The sub-topic of a channel topic (`realtime:room1` → `room1`), or `None` when the topic is not
/// routable (no `realtime:` prefix). The sub-topic may be empty; joining it is an error.
pub fn sub_topic(topic: &str) -> Option<&str> {
    topic.strip_prefix(PREFIX)
}

/// The full topic for a sub-topic, as subscribers see it.
pub fn full_topic(sub_topic: &str) -> String {
    format!("{PREFIX}{sub_topic}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_topics() {
        assert_eq!(sub_topic("realtime:room1"), Some("room1"));
        assert_eq!(sub_topic("realtime:"), Some(""));
        assert_eq!(sub_topic("room1"), None);
        assert_eq!(sub_topic("phoenix"), None);
        assert_eq!(full_topic("a:b"), "realtime:a:b");
    }
}
