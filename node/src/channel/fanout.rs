//! Encode once per serializer, share with every recipient.
//!
//! A broadcast to 10,000 members is serialised at most twice (1.0.0 and 2.0.0), lazily, and each
//! recipient gets a reference-counted copy of the same bytes.

use realtime_proto::{server, Vsn};

use crate::delivery::WireFrame;
use crate::vocab::BroadcastBody;

/// Lazily encoded frames of one message, by serializer version.
pub struct EncodedOnce<'a> {
    topic: &'a str,
    body: &'a BroadcastBody,
    /// `None`: not encoded yet; `Some(None)`: this version cannot receive it (raw bytes to 1.0.0).
    frames: [Option<Option<WireFrame>>; 2],
}

impl<'a> EncodedOnce<'a> {
    pub fn new(topic: &'a str, body: &'a BroadcastBody) -> EncodedOnce<'a> {
        EncodedOnce { topic, body, frames: [None, None] }
    }

    /// The frame for `vsn`, encoding it on first use.
    pub fn frame(&mut self, vsn: Vsn) -> Option<&WireFrame> {
        let (topic, body) = (self.topic, self.body);
        self.frames[vsn.index()].get_or_insert_with(|| encode(vsn, topic, body)).as_ref()
    }
}

fn encode(vsn: Vsn, topic: &str, body: &BroadcastBody) -> Option<WireFrame> {
    let frame = match body {
        BroadcastBody::Json(payload) => Some(server::fastlane(vsn, topic, "broadcast", payload)),
        BroadcastBody::User { event, encoding, data, meta } => {
            server::user_broadcast(vsn, topic, event, *encoding, data, meta.as_deref())
        }
    };
    frame.map(WireFrame::from)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use realtime_proto::binary::BinaryEncoding;

    use super::*;

    #[test]
    fn encodes_each_version_once_and_skips_raw_for_v1() {
        let body = BroadcastBody::User {
            event: "e".into(),
            encoding: BinaryEncoding::Raw,
            data: Bytes::from_static(&[1, 2]),
            meta: None,
        };
        let mut once = EncodedOnce::new("realtime:r", &body);
        assert!(once.frame(Vsn::V1).is_none());
        assert!(matches!(once.frame(Vsn::V2), Some(WireFrame::Binary(_))));
        let json = BroadcastBody::Json("{\"a\":1}".into());
        let mut once = EncodedOnce::new("realtime:r", &json);
        let Some(WireFrame::Text(t)) = once.frame(Vsn::V2) else { panic!() };
        assert_eq!(&t[..], r#"[null,null,"realtime:r","broadcast",{"a":1}]"#);
    }
}
