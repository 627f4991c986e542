//! The frame codec of a peer link: plain length-delimited frames, or the same frames carried in
//! Noise transport records once the handshake ([`super::handshake`]) is done.
//!
//! Sealed, the frame stream (each frame prefixed by its length, as in the plain form) is cut into
//! records of at most [`MAX_RECORD_PLAINTEXT`] bytes; each record is `[u16 length][ciphertext + tag]`.
//! A record that fails authentication (tampered, reordered, injected) is a read error: the link is
//! closed, never a frame half-trusted.

use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

/// Noise's largest message is 65,535 bytes, of which 16 are the tag.
pub const MAX_RECORD_PLAINTEXT: usize = 65_535 - TAG_LEN;
const TAG_LEN: usize = 16;

fn framing(max_frame: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().max_frame_length(max_frame).new_codec()
}

/// How a link's frames are written and read.
pub enum PeerCodec {
    /// No cluster secret: frames as they are.
    Plain(LengthDelimitedCodec),
    /// Frames inside Noise transport records.
    Sealed(Box<Sealed>),
}

/// The sealed form's state: the Noise session (each direction of a link is used one way only) and
/// the frame bytes between records.
pub struct Sealed {
    framing: LengthDelimitedCodec,
    session: snow::TransportState,
    /// Plain frame bytes: to be cut into records (writing), or opened but not yet a whole frame.
    plain: BytesMut,
}

impl PeerCodec {
    /// Frames of at most `max_frame` bytes, as they are.
    pub fn plain(max_frame: usize) -> PeerCodec {
        PeerCodec::Plain(framing(max_frame))
    }

    /// Frames of at most `max_frame` bytes inside the records of `session`.
    pub(crate) fn sealed(session: snow::TransportState, max_frame: usize) -> PeerCodec {
        PeerCodec::Sealed(Box::new(Sealed { framing: framing(max_frame), session, plain: BytesMut::new() }))
    }
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl Encoder<Bytes> for PeerCodec {
    type Error = io::Error;

    fn encode(&mut self, frame: Bytes, dst: &mut BytesMut) -> io::Result<()> {
        match self {
            PeerCodec::Plain(codec) => codec.encode(frame, dst),
            PeerCodec::Sealed(sealed) => {
                let Sealed { framing, session, plain } = &mut **sealed;
                plain.clear();
                framing.encode(frame, plain)?;
                dst.reserve(plain.len() + plain.len().div_ceil(MAX_RECORD_PLAINTEXT) * (2 + TAG_LEN));
                for chunk in plain.chunks(MAX_RECORD_PLAINTEXT) {
                    let start = dst.len();
                    dst.put_u16(0);
                    dst.resize(start + 2 + chunk.len() + TAG_LEN, 0);
                    let written = session
                        .write_message(chunk, &mut dst[start + 2..])
                        .map_err(|_| invalid("cannot seal a peer record"))?;
                    dst.truncate(start + 2 + written);
                    let len = u16::try_from(written).map_err(|_| invalid("peer record too long"))?;
                    dst[start..start + 2].copy_from_slice(&len.to_be_bytes());
                }
                plain.clear();
                Ok(())
            }
        }
    }
}

impl Decoder for PeerCodec {
    type Item = BytesMut;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<BytesMut>> {
        match self {
            PeerCodec::Plain(codec) => codec.decode(src),
            PeerCodec::Sealed(sealed) => {
                let Sealed { framing, session, plain } = &mut **sealed;
                loop {
                    if let Some(frame) = framing.decode(plain)? {
                        return Ok(Some(frame));
                    }
                    if src.len() < 2 {
                        return Ok(None);
                    }
                    let len = usize::from(u16::from_be_bytes([src[0], src[1]]));
                    if src.len() < 2 + len {
                        src.reserve(2 + len - src.len());
                        return Ok(None);
                    }
                    src.advance(2);
                    let record = src.split_to(len);
                    let start = plain.len();
                    plain.resize(start + len, 0);
                    let opened = session
                        .read_message(&record, &mut plain[start..])
                        .map_err(|_| invalid("a peer record failed authentication"))?;
                    plain.truncate(start + opened);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secure::handshake::tests::session_pair;

    /// The frame limit of these tests (the links use the wire's).
    const MAX: usize = 64 << 20;

    fn roundtrip(frames: &[Bytes]) -> Vec<BytesMut> {
        let (writer, reader) = session_pair();
        let (mut writer, mut reader) = (PeerCodec::sealed(writer, MAX), PeerCodec::sealed(reader, MAX));
        let mut wire = BytesMut::new();
        for frame in frames {
            writer.encode(frame.clone(), &mut wire).unwrap();
        }
        let mut out = Vec::new();
        // Fed in small pieces, as TCP may deliver them.
        let mut src = BytesMut::new();
        for piece in wire.chunks(1000) {
            src.extend_from_slice(piece);
            while let Some(frame) = reader.decode(&mut src).unwrap() {
                out.push(frame);
            }
        }
        assert!(src.is_empty());
        out
    }

    #[test]
    fn frames_of_every_size_cross_sealed_and_in_order() {
        let frames: Vec<Bytes> = [0usize, 1, 100, MAX_RECORD_PLAINTEXT - 4, MAX_RECORD_PLAINTEXT, 300_000]
            .iter()
            .enumerate()
            .map(|(i, &len)| Bytes::from(vec![i as u8; len]))
            .collect();
        let out = roundtrip(&frames);
        assert_eq!(out.len(), frames.len());
        for (sent, got) in frames.iter().zip(&out) {
            assert_eq!(&sent[..], &got[..]);
        }
    }

    #[test]
    fn a_tampered_dropped_or_replayed_record_closes_the_link() {
        for case in ["tampered", "dropped", "replayed"] {
            let (writer, reader) = session_pair();
            let (mut writer, mut reader) = (PeerCodec::sealed(writer, MAX), PeerCodec::sealed(reader, MAX));
            let mut wire = BytesMut::new();
            writer.encode(Bytes::from_static(b"first"), &mut wire).unwrap();
            let first = wire.split();
            writer.encode(Bytes::from_static(b"second"), &mut wire).unwrap();
            let second = wire.split();
            let mut src = match case {
                "tampered" => {
                    let mut bad = first.clone();
                    let last = bad.len() - 1;
                    bad[last] ^= 1;
                    bad
                }
                "dropped" => second,
                _ => {
                    let mut twice = first.clone();
                    twice.extend_from_slice(&first);
                    assert_eq!(&reader.decode(&mut twice).unwrap().unwrap()[..], b"first");
                    twice
                }
            };
            assert!(reader.decode(&mut src).is_err(), "{case}");
        }
    }

    #[test]
    fn a_huge_length_is_refused_not_allocated() {
        let (writer, reader) = session_pair();
        let (mut writer, mut reader) = (PeerCodec::sealed(writer, MAX), PeerCodec::sealed(reader, MAX));
        // A frame header claiming more than the frame limit, sealed properly (a peer that holds the
        // key but misbehaves): the framing refuses it.
        let mut header = BytesMut::new();
        header.put_u32(u32::MAX);
        let mut wire = BytesMut::new();
        writer.encode(Bytes::new(), &mut wire).unwrap(); // a valid empty frame first
        let Sealed { session, .. } = match &mut writer {
            PeerCodec::Sealed(sealed) => &mut **sealed,
            PeerCodec::Plain(_) => unreachable!(),
        };
        let mut record = vec![0u8; header.len() + TAG_LEN];
        let n = session.write_message(&header, &mut record).unwrap();
        wire.put_u16(n as u16);
        wire.extend_from_slice(&record[..n]);
        assert!(reader.decode(&mut wire).unwrap().unwrap().is_empty());
        assert!(reader.decode(&mut wire).is_err());
    }
}
