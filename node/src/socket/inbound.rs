//! Inbound WebSocket frames: the connection's read half decoded with actix-http's codec, with the frame
//! size checked from the frame header before any of its payload is buffered.
//!
//! actix-http's parser waits for a whole frame before comparing it with its size limit, so a client
//! could make the node buffer a 128 MiB frame just to refuse it. [`Inbound`] reads the length from the
//! header (2 to 10 bytes) first and fails with [`ProtocolError::Overflow`] as soon as it is known to be
//! too large. It reads the connection only when it needs bytes, so a client that sends faster than its
//! socket actor reads is held back by TCP, not by memory; reads go through a stack buffer, so an idle
//! socket keeps no read buffer at all.

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_codec::Decoder;
use actix_http::ws::{Codec, Frame, ProtocolError};
use bytes::BytesMut;
use futures_util::Stream;
use tokio::io::{AsyncRead, ReadBuf};

/// Bytes read from the connection per read call (on the stack).
const READ_CHUNK: usize = 8 * 1024;

/// The payload length a frame header declares; `None` until enough of the header arrived.
pub fn declared_len(header: &[u8]) -> Option<u64> {
    let len7 = *header.get(1)? & 0x7f;
    match len7 {
        126 => Some(u64::from(u16::from_be_bytes(header.get(2..4)?.try_into().ok()?))),
        127 => Some(u64::from_be_bytes(header.get(2..10)?.try_into().ok()?)),
        n => Some(u64::from(n)),
    }
}

/// The client's frames, decoded from the connection.
pub struct Inbound<R> {
    io: R,
    buf: BytesMut,
    codec: Codec,
    max_frame: usize,
    done: bool,
}

impl<R: AsyncRead + Unpin> Inbound<R> {
    /// Frames from `io`, starting with `read` (bytes already read past the HTTP handshake).
    pub fn new(io: R, read: BytesMut, max_frame: usize) -> Inbound<R> {
        let buf = if read.is_empty() { BytesMut::new() } else { read };
        Inbound { io, buf, codec: Codec::new().max_size(max_frame), max_frame, done: false }
    }

    fn decode(&mut self) -> Result<Option<Frame>, ProtocolError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        if declared_len(&self.buf).is_some_and(|len| len > self.max_frame as u64) {
            return Err(ProtocolError::Overflow);
        }
        let frame = self.codec.decode(&mut self.buf)?;
        if frame.is_some() && self.buf.is_empty() {
            // An idle socket keeps no buffer.
            self.buf = BytesMut::new();
        }
        Ok(frame)
    }
}

impl<R: AsyncRead + Unpin> Stream for Inbound<R> {
    type Item = Result<Frame, ProtocolError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match this.decode() {
                Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                Ok(None) => {}
                Err(error) => {
                    this.done = true;
                    this.buf = BytesMut::new();
                    return Poll::Ready(Some(Err(error)));
                }
            }
            let mut chunk = [0u8; READ_CHUNK];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.io).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(())) => this.buf.extend_from_slice(read.filled()),
                Poll::Ready(Err(error)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(ProtocolError::Io(error))));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_after_the_handshake_and_oversized_headers() {
        use futures_util::StreamExt;
        // A masked text frame "hi" already read with the handshake, then a header claiming 128 MiB.
        let hi = BytesMut::from(&[0x81u8, 0x82, 0, 0, 0, 0, b'h', b'i'][..]);
        let rest: &[u8] = &[0x82, 0xff, 0, 0, 0, 0, 8, 0, 0, 0, 1, 2, 3, 4];
        let mut inbound = Inbound::new(rest, hi, 1024);
        assert!(matches!(inbound.next().await, Some(Ok(Frame::Text(t))) if &t[..] == b"hi"));
        assert!(matches!(inbound.next().await, Some(Err(ProtocolError::Overflow))));
        assert!(inbound.next().await.is_none());
    }

    #[test]
    fn reads_every_length_form() {
        assert_eq!(declared_len(&[0x81]), None);
        assert_eq!(declared_len(&[0x81, 0x85]), Some(5));
        assert_eq!(declared_len(&[0x81, 0xfe, 0x01]), None);
        assert_eq!(declared_len(&[0x81, 0xfe, 0x01, 0x00]), Some(256));
        assert_eq!(declared_len(&[0x82, 0xff, 0, 0, 0, 0, 8, 0, 0]), None);
        assert_eq!(declared_len(&[0x82, 0xff, 0, 0, 0, 0, 8, 0, 0, 0]), Some(128 << 20));
    }
}
