//! What `POST /api/notifications` accepts, checked before anything touches the database: a pure
//! function from the body's bytes to a [`NewNotification`] or the reason it is refused (422).
//!
//! Choices: `user_id` is a UUID string; `type` a non-empty string of at most [`MAX_TYPE_BYTES`];
//! `content` a JSON object (absent or `null` means `{}`, as the column's default), at most
//! `max_content_bytes` of JSON; other fields are ignored.

use serde_json::{Map, Value};

/// Longest `type`, in bytes.
pub const MAX_TYPE_BYTES: usize = 256;

/// A notification to insert, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct NewNotification {
    pub user_id: uuid::Uuid,
    pub kind: String,
    /// `content` as JSON text (an object).
    pub content: String,
}

/// Why a body is refused; its text is what the client reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("the body must be a JSON object")]
    NotAnObject,
    #[error("user_id is required")]
    NoUser,
    #[error("user_id must be a UUID string")]
    BadUser,
    #[error("type must be a non-empty string")]
    BadType,
    #[error("type is longer than {MAX_TYPE_BYTES} bytes")]
    LongType,
    #[error("content must be a JSON object")]
    BadContent,
    #[error("content is larger than {0} bytes")]
    LargeContent(usize),
    #[error("the body is larger than {0} bytes")]
    LargeBody(usize),
}

/// The largest body worth reading for `max_content_bytes` of content (room for the other fields).
pub fn max_body_bytes(max_content_bytes: usize) -> usize {
    max_content_bytes.saturating_add(1024)
}

/// Checks a request body.
pub fn parse(body: &[u8], max_content_bytes: usize) -> Result<NewNotification, InputError> {
    let Ok(Value::Object(mut fields)) = serde_json::from_slice::<Value>(body) else {
        return Err(InputError::NotAnObject);
    };
    let user_id = match fields.remove("user_id") {
        None | Some(Value::Null) => return Err(InputError::NoUser),
        Some(Value::String(s)) => uuid::Uuid::parse_str(&s).map_err(|_| InputError::BadUser)?,
        Some(_) => return Err(InputError::BadUser),
    };
    let kind = match fields.remove("type") {
        Some(Value::String(s)) if !s.is_empty() => s,
        _ => return Err(InputError::BadType),
    };
    if kind.len() > MAX_TYPE_BYTES {
        return Err(InputError::LongType);
    }
    let content = match fields.remove("content") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(object @ Value::Object(_)) => object,
        Some(_) => return Err(InputError::BadContent),
    }
    .to_string();
    if content.len() > max_content_bytes {
        return Err(InputError::LargeContent(max_content_bytes));
    }
    Ok(NewNotification { user_id, kind, content })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANN: &str = "6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f";

    fn check(body: &str) -> Result<NewNotification, InputError> {
        parse(body.as_bytes(), 64)
    }

    #[test]
    fn accepts_a_notification_and_defaults_content() {
        let n =
            check(&format!(r#"{{"user_id":"{ANN}","type":"mention","content":{{"by":"ben"}}}}"#)).unwrap();
        assert_eq!(n.user_id.to_string(), ANN);
        assert_eq!(n.kind, "mention");
        assert_eq!(n.content, r#"{"by":"ben"}"#);
        for absent in [
            format!(r#"{{"user_id":"{ANN}","type":"t"}}"#),
            format!(r#"{{"user_id":"{ANN}","type":"t","content":null}}"#),
        ] {
            assert_eq!(check(&absent).unwrap().content, "{}");
        }
        let upper = ANN.to_uppercase();
        assert_eq!(
            check(&format!(r#"{{"user_id":"{upper}","type":"t"}}"#)).unwrap().user_id.to_string(),
            ANN
        );
    }

    #[test]
    fn refuses_each_bad_field_with_its_reason() {
        let cases = [
            ("not json", InputError::NotAnObject),
            ("[1]", InputError::NotAnObject),
            ("\"x\"", InputError::NotAnObject),
            (r#"{"type":"t"}"#, InputError::NoUser),
            (r#"{"user_id":null,"type":"t"}"#, InputError::NoUser),
            (r#"{"user_id":"nope","type":"t"}"#, InputError::BadUser),
            (r#"{"user_id":42,"type":"t"}"#, InputError::BadUser),
        ];
        for (body, error) in cases {
            assert_eq!(check(body), Err(error), "{body}");
        }
        let with = |rest: &str| check(&format!(r#"{{"user_id":"{ANN}"{rest}}}"#));
        assert_eq!(with(""), Err(InputError::BadType));
        assert_eq!(with(r#","type":"""#), Err(InputError::BadType));
        assert_eq!(with(r#","type":7"#), Err(InputError::BadType));
        assert_eq!(
            with(&format!(r#","type":"{}""#, "x".repeat(MAX_TYPE_BYTES + 1))),
            Err(InputError::LongType)
        );
        assert!(with(&format!(r#","type":"{}""#, "x".repeat(MAX_TYPE_BYTES))).is_ok());
        for content in ["[]", "1", "\"text\"", "true"] {
            assert_eq!(with(&format!(r#","type":"t","content":{content}"#)), Err(InputError::BadContent));
        }
        let big = format!(r#","type":"t","content":{{"k":"{}"}}"#, "x".repeat(60));
        assert_eq!(with(&big), Err(InputError::LargeContent(64)));
        assert_eq!(InputError::LargeContent(64).to_string(), "content is larger than 64 bytes");
        assert_eq!(max_body_bytes(64), 1088);
    }
}
