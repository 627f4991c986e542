//! The REST batch body, `{"messages": [...]}`, parsed with the messages counted as they are read:
//! past `max` the parse stops, so an oversized batch costs the node `max` + 1 parsed messages at most.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use thiserror::Error;

/// Visitor methods answering `None` for every scalar (a value that is not what we look for).
macro_rules! scalars_are_none {
    () => {
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    };
}

/// Why a batch body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum BatchError {
    #[error("the request body is not valid JSON")]
    Json,
    #[error("more than {max} messages")]
    TooMany { max: usize },
}

/// The `messages` array (its items as JSON values), `None` when absent or not an array.
pub fn messages(body: &[u8], max: usize) -> Result<Option<Vec<Value>>, BatchError> {
    let over = Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = Body { max, over: &over }.deserialize(&mut de).and_then(|m| de.end().map(|()| m));
    match parsed {
        Ok(messages) => Ok(messages),
        Err(_) if over.get() => Err(BatchError::TooMany { max }),
        Err(_) => Err(BatchError::Json),
    }
}

/// The top-level object; anything else means "no messages".
struct Body<'a> {
    max: usize,
    over: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for Body<'_> {
    type Value = Option<Vec<Value>>;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Body<'_> {
    type Value = Option<Vec<Value>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut messages = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == "messages" {
                messages = map.next_value_seed(Messages { max: self.max, over: self.over })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(messages)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    scalars_are_none!();
}

/// The `messages` value: an array counted while read, or anything else (`None`).
struct Messages<'a> {
    max: usize,
    over: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for Messages<'_> {
    type Value = Option<Vec<Value>>;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Messages<'_> {
    type Value = Option<Vec<Value>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of messages")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Value>()? {
            if items.len() == self.max {
                self.over.set(true);
                return Err(de::Error::custom("too many messages"));
            }
            items.push(item);
        }
        Ok(Some(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    scalars_are_none!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_while_parsing() {
        let ok = br#"{"other": [1, {"x": 2}], "messages": [{"topic": "a"}, {"topic": "b"}]}"#;
        let messages = messages(ok, 2).unwrap().unwrap();
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[1]["topic"], "b");
        assert_eq!(super::messages(ok, 1), Err(BatchError::TooMany { max: 1 }));
        // Past the limit the rest is never parsed: even a broken tail is "too many", not "invalid".
        assert_eq!(
            super::messages(br#"{"messages": [1, 2, 3, oops"#, 2),
            Err(BatchError::TooMany { max: 2 })
        );
        assert_eq!(super::messages(br#"{"messages": [1, 2"#, 5), Err(BatchError::Json));
        assert_eq!(super::messages(br#"{"messages": 7}"#, 5), Ok(None));
        assert_eq!(super::messages(br#"{}"#, 5), Ok(None));
        assert_eq!(super::messages(br#"[1]"#, 5), Ok(None));
        assert_eq!(super::messages(br#"{"messages": []} x"#, 5), Err(BatchError::Json));
    }
}
