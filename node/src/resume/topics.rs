//! Which channels keep a resumable stream: `REALTIME_RESUMABLE_TOPICS`, a comma-separated list of
//! topic names (without `realtime:`), each exact or ending in `*` for a prefix (`orders:*`), or `*`
//! for every topic.
//!
//! An operator setting rather than a client's wish at join: a stream must be kept while nobody is
//! joined (that is when messages are missed), so every node must know before anyone joins which
//! topics' broadcasts to sequence through PostgreSQL.

/// The topic patterns of `REALTIME_RESUMABLE_TOPICS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResumableTopics {
    exact: Vec<String>,
    prefixes: Vec<String>,
}

/// Why the setting cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicsError {
    #[error("REALTIME_RESUMABLE_TOPICS: empty entry (use a topic name, a prefix ending in `*`, or `*`)")]
    Empty,
    #[error("REALTIME_RESUMABLE_TOPICS: `*` may only end an entry: {0:?}")]
    InnerStar(String),
}

impl ResumableTopics {
    /// Reads the comma-separated list; blanks around entries are ignored, an empty setting means none.
    pub fn parse(setting: &str) -> Result<ResumableTopics, TopicsError> {
        let mut topics = ResumableTopics::default();
        if setting.trim().is_empty() {
            return Ok(topics);
        }
        for entry in setting.split(',').map(str::trim) {
            match entry.strip_suffix('*') {
                _ if entry.is_empty() => return Err(TopicsError::Empty),
                Some(prefix) if prefix.contains('*') => return Err(TopicsError::InnerStar(entry.into())),
                Some(prefix) => topics.prefixes.push(prefix.to_owned()),
                None if entry.contains('*') => return Err(TopicsError::InnerStar(entry.into())),
                None => topics.exact.push(entry.to_owned()),
            }
        }
        Ok(topics)
    }

    /// Whether any topic is resumable.
    pub fn any(&self) -> bool {
        !self.exact.is_empty() || !self.prefixes.is_empty()
    }

    /// Whether `sub_topic` (public or private) keeps a resumable stream.
    pub fn contains(&self, sub_topic: &str) -> bool {
        self.exact.iter().any(|t| t == sub_topic)
            || self.prefixes.iter().any(|p| sub_topic.starts_with(p.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_names_prefixes_and_everything() {
        let t = ResumableTopics::parse(" orders:* , room-1,").unwrap_err();
        assert_eq!(t, TopicsError::Empty);
        let t = ResumableTopics::parse(" orders:* , room-1").unwrap();
        assert!(t.any());
        assert!(t.contains("orders:") && t.contains("orders:42") && t.contains("room-1"));
        assert!(!t.contains("room-10") && !t.contains("order") && !t.contains("room"));
        let all = ResumableTopics::parse("*").unwrap();
        assert!(all.contains("") && all.contains("anything"));
        let none = ResumableTopics::parse("  ").unwrap();
        assert!(!none.any() && !none.contains("orders:1"));
    }

    #[test]
    fn a_star_only_ends_an_entry() {
        for bad in ["a*b", "*a", "a**"] {
            assert!(matches!(ResumableTopics::parse(bad), Err(TopicsError::InnerStar(_))), "{bad}");
        }
    }
}
