//! An encoded frame: one allocation, shared by every recipient of a broadcast.

use bytes::Bytes;
use bytestring::ByteString;
use realtime_proto::OutFrame;

/// An encoded frame, cheap to clone: one allocation shared by every recipient.
#[derive(Debug, Clone)]
pub enum WireFrame {
    Text(ByteString),
    Binary(Bytes),
}

impl WireFrame {
    pub fn len(&self) -> usize {
        match self {
            WireFrame::Text(t) => t.len(),
            WireFrame::Binary(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<OutFrame> for WireFrame {
    fn from(frame: OutFrame) -> WireFrame {
        match frame {
            OutFrame::Text(text) => WireFrame::Text(ByteString::from(text)),
            OutFrame::Binary(bytes) => WireFrame::Binary(bytes),
        }
    }
}
