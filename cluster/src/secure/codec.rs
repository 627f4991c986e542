//! The frame codec of a peer link: plain length-delimited frames, or the same frames carried in
//! Noise transport records once the handshake ([`super::handshake`]) is done.
//!
//! Sealed, the frame stream (each frame prefixed by its length, as in the plain form) is cut into
//! records of at most [`MAX_RECORD_PLAINTEXT`] bytes; each record is `[u16 length][ciphertext + tag]`.
//! A record that fails authentication (tampered, reordered, injected) is a read error: the link is
//! closed, never a frame half-trusted.
//!
//! A connection carries frames both ways (the dialler's frames, the acceptor's acknowledgements), each
//! direction with its own Noise cipher and nonce counter. The session is shared by the connection's
//! two codecs ([`PeerCodec::twin`]): one writes on one direction, the other reads the other, each
//! counting its own nonces (Noise's stateless transport mode, so neither needs the other's state).

use std::io;
use std::sync::Arc;

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

/// The sealed form's state: the Noise session (shared with the connection's other codec), this
/// codec's nonces and the frame bytes between records.
pub struct Sealed {
    framing: LengthDelimitedCodec,
    session: Arc<snow::StatelessTransportState>,
    /// The nonce of the next record this codec seals, and of the next one it opens: a record
    /// replayed, dropped or reordered does not open.
    sending: u64,
    receiving: u64,
    /// Plain frame bytes: to be cut into records (writing), or opened but not yet a whole frame.
    plain: BytesMut,
    max_frame: usize,
}

impl PeerCodec {
    /// Frames of at most `max_frame` bytes, as they are.
    pub fn plain(max_frame: usize) -> PeerCodec {
        PeerCodec::Plain(framing(max_frame))
    }

    /// Frames of at most `max_frame` bytes inside the records of `session`.
    pub(crate) fn sealed(session: snow::StatelessTransportState, max_frame: usize) -> PeerCodec {
        PeerCodec::Sealed(Box::new(Sealed {
            framing: framing(max_frame),
            session: Arc::new(session),
            sending: 0,
            receiving: 0,
            plain: BytesMut::new(),
            max_frame,
        }))
    }

    /// A second codec for the same connection, for the direction this one does not use: the
    /// connection's reader gets a twin to write its acknowledgements, the writer one to read them.
    /// Both must be fresh (nothing sealed or opened yet), and each then used one way only.
    pub fn twin(&self) -> PeerCodec {
        match self {
            PeerCodec::Plain(codec) => PeerCodec::Plain(framing(codec.max_frame_length())),
            PeerCodec::Sealed(sealed) => PeerCodec::Sealed(Box::new(Sealed {
                framing: framing(sealed.max_frame),
                session: sealed.session.clone(),
                sending: 0,
                receiving: 0,
                plain: BytesMut::new(),
                max_frame: sealed.max_frame,
            })),
        }
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
                let Sealed { framing, session, sending, plain, .. } = &mut **sealed;
                plain.clear();
                framing.encode(frame, plain)?;
                dst.reserve(plain.len() + plain.len().div_ceil(MAX_RECORD_PLAINTEXT) * (2 + TAG_LEN));
                for chunk in plain.chunks(MAX_RECORD_PLAINTEXT) {
                    let start = dst.len();
                    dst.put_u16(0);
                    dst.resize(start + 2 + chunk.len() + TAG_LEN, 0);
                    let written = session
                        .write_message(*sending, chunk, &mut dst[start + 2..])
                        .map_err(|_| invalid("cannot seal a peer record"))?;
                    *sending += 1;
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
                let Sealed { framing, session, receiving, plain, .. } = &mut **sealed;
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
                        .read_message(*receiving, &record, &mut plain[start..])
                        .map_err(|_| invalid("a peer record failed authentication"))?;
                    *receiving += 1;
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

    /// The dialler writes frames and reads acknowledgements on one connection, the acceptor the
    /// other way round, each direction through its own codec of the shared session.
    #[test]
    fn twins_carry_the_other_direction() {
        let (dialler, acceptor) = session_pair();
        let (mut frames_out, mut frames_in) =
            (PeerCodec::sealed(dialler, MAX), PeerCodec::sealed(acceptor, MAX));
        let (mut acks_out, mut acks_in) = (frames_in.twin(), frames_out.twin());
        for round in 0..3u8 {
            let mut wire = BytesMut::new();
            frames_out.encode(Bytes::from(vec![round; 70_000]), &mut wire).unwrap();
            assert_eq!(frames_in.decode(&mut wire).unwrap().unwrap().len(), 70_000);
            let mut back = BytesMut::new();
            acks_out.encode(Bytes::from(vec![round; 9]), &mut back).unwrap();
            assert_eq!(&acks_in.decode(&mut back).unwrap().unwrap()[..], &[round; 9]);
        }
        // Each direction is its own: a frame sealed for one does not open as the other.
        let mut wire = BytesMut::new();
        frames_out.encode(Bytes::from_static(b"one way"), &mut wire).unwrap();
        assert!(acks_in.decode(&mut wire).is_err());
        let plain = PeerCodec::plain(MAX);
        assert!(matches!(plain.twin(), PeerCodec::Plain(_)));
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
        let Sealed { session, sending, .. } = match &mut writer {
            PeerCodec::Sealed(sealed) => &mut **sealed,
            PeerCodec::Plain(_) => unreachable!(),
        };
        let mut record = vec![0u8; header.len() + TAG_LEN];
        let n = session.write_message(*sending, &header, &mut record).unwrap();
        wire.put_u16(n as u16);
        wire.extend_from_slice(&record[..n]);
        assert!(reader.decode(&mut wire).unwrap().unwrap().is_empty());
        assert!(reader.decode(&mut wire).is_err());
    }
}
