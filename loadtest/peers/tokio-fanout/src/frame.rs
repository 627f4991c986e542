//! WebSocket frames (RFC 6455 §5), only as much as this reference needs: a server frame is encoded
//! once into bytes every member shares, and a client frame is read out of the connection's buffer in
//! place. Written here rather than taken from a WebSocket library because per-connection buffers and
//! state are what the reference measures the absence of: a connection holds its socket, its queue and a
//! read buffer sized to what it receives, nothing more.

use bytes::{BufMut, Bytes, BytesMut};

/// Largest client frame payload read; a longer one ends the connection (close 1009).
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// Opcodes this server sends or reads.
pub const TEXT: u8 = 0x1;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// One unfragmented server frame (unmasked, FIN set) carrying `payload`.
pub fn encode(opcode: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 10);
    out.put_u8(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.put_u8(n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.put_u8(126);
            out.put_u16(n as u16);
        }
        n => {
            out.put_u8(127);
            out.put_u64(n as u64);
        }
    }
    out.put_slice(payload);
    out.freeze()
}

/// A close frame with `code` and no reason.
pub fn close(code: u16) -> Bytes {
    encode(CLOSE, &code.to_be_bytes())
}

/// A client frame read from the buffer: its opcode and the unmasked payload.
#[derive(Debug, PartialEq, Eq)]
pub struct ClientFrame {
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// Why the connection must end; each carries the close code the client is sent.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("client frames must be masked")]
    Unmasked,
    #[error("fragmented messages are not supported")]
    Fragmented,
    #[error("frame of {0} bytes is too big")]
    TooBig(u64),
}

impl FrameError {
    pub fn close_code(&self) -> u16 {
        match self {
            FrameError::Unmasked => 1002,
            FrameError::Fragmented => 1003,
            FrameError::TooBig(_) => 1009,
        }
    }
}

/// Takes the first whole client frame off `buf`: `Ok(None)` until one has arrived.
pub fn take(buf: &mut BytesMut) -> Result<Option<ClientFrame>, FrameError> {
    let Some(&[b0, b1]) = buf.get(..2) else { return Ok(None) };
    if b0 & 0x80 == 0 || b0 & 0x0f == 0 {
        return Err(FrameError::Fragmented);
    }
    if b1 & 0x80 == 0 {
        return Err(FrameError::Unmasked);
    }
    let (len, mut at) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => (u64::from_be_bytes(b.try_into().expect("8 bytes")), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if len > MAX_PAYLOAD as u64 {
        return Err(FrameError::TooBig(len));
    }
    let len = len as usize;
    if buf.len() < at + 4 + len {
        buf.reserve(at + 4 + len - buf.len());
        return Ok(None);
    }
    let mask: [u8; 4] = buf[at..at + 4].try_into().expect("4 bytes");
    at += 4;
    let payload = buf[at..at + len].iter().enumerate().map(|(i, b)| b ^ mask[i % 4]).collect();
    let _ = buf.split_to(at + len);
    Ok(Some(ClientFrame { opcode: b0 & 0x0f, payload }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame as a browser sends it: masked with `mask`.
    fn client(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let server = encode(opcode, payload);
        let header = server.len() - payload.len();
        let mut out = server[..header].to_vec();
        out[1] |= 0x80;
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    #[test]
    fn server_frames_carry_their_length_in_the_shortest_form() {
        assert_eq!(&encode(TEXT, b"hi")[..], b"\x81\x02hi");
        let mid = encode(TEXT, &[b'x'; 300]);
        assert_eq!(&mid[..4], &[0x81, 126, 1, 44]);
        assert_eq!(mid.len(), 304);
        let big = encode(TEXT, &vec![b'x'; 70_000]);
        assert_eq!(&big[..10], &[0x81, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        assert_eq!(&close(1000)[..], &[0x88, 2, 0x03, 0xe8]);
    }

    #[test]
    fn client_frames_are_read_whole_and_unmasked_byte_by_byte() {
        for payload in [&b""[..], b"{\"type\":\"publish\"}", &[7u8; 200][..], &[9u8; 70_000][..]] {
            if payload.len() > MAX_PAYLOAD {
                continue;
            }
            let wire = client(TEXT, payload, [1, 2, 3, 4]);
            let mut buf = BytesMut::new();
            for (i, byte) in wire.iter().enumerate() {
                assert_eq!(take(&mut buf), Ok(None), "after {i} bytes");
                buf.put_u8(*byte);
            }
            assert_eq!(take(&mut buf), Ok(Some(ClientFrame { opcode: TEXT, payload: payload.to_vec() })));
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn two_frames_in_one_read() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&client(PING, b"p", [9, 9, 9, 9]));
        buf.extend_from_slice(&client(TEXT, b"t", [0, 0, 0, 1]));
        assert_eq!(take(&mut buf).unwrap().unwrap().opcode, PING);
        assert_eq!(take(&mut buf).unwrap().unwrap().payload, b"t");
        assert_eq!(take(&mut buf), Ok(None));
    }

    #[test]
    fn refused_frames_name_their_close_code() {
        let mut unmasked = BytesMut::from(&encode(TEXT, b"x")[..]);
        assert_eq!(take(&mut unmasked).unwrap_err().close_code(), 1002);
        let mut fragment = BytesMut::from(&client(TEXT, b"x", [1, 1, 1, 1])[..]);
        fragment[0] &= 0x7f;
        assert_eq!(take(&mut fragment).unwrap_err().close_code(), 1003);
        let mut continuation = BytesMut::from(&client(0, b"x", [1, 1, 1, 1])[..]);
        assert_eq!(take(&mut continuation), Err(FrameError::Fragmented));
        let mut huge = BytesMut::from(&[0x81u8, 0xff, 0, 0, 0, 1, 0, 0, 0, 0][..]);
        assert_eq!(take(&mut huge), Err(FrameError::TooBig(1 << 32)));
    }
}
