//! The WebSocket opening handshake (RFC 6455 §4.2): the client's HTTP upgrade request is parsed with
//! `httparse` from a buffer that is dropped once answered, and the room is its path `/ws/{room}`.

use base64::Engine as _;
use sha1::{Digest, Sha1};

/// Most bytes of an upgrade request.
pub const MAX_REQUEST: usize = 8 * 1024;
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A parsed upgrade request.
#[derive(Debug, PartialEq, Eq)]
pub struct Upgrade {
    pub room: String,
    /// The `101 Switching Protocols` response to write.
    pub response: String,
    /// Bytes of the request buffer past the request (frames the client sent at once).
    pub consumed: usize,
}

/// Why a request was refused: the response to write before closing.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("not found: use /ws/{{room}}")]
    NotARoom,
    #[error("not a WebSocket upgrade")]
    NotAnUpgrade,
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("request longer than {MAX_REQUEST} bytes")]
    TooLong,
}

impl Refused {
    /// The HTTP response that tells the client.
    pub fn response(&self) -> String {
        let status = match self {
            Refused::NotARoom => "404 Not Found",
            Refused::TooLong => "431 Request Header Fields Too Large",
            Refused::NotAnUpgrade | Refused::Malformed(_) => "400 Bad Request",
        };
        let body = self.to_string();
        format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
    }
}

/// The room of a request path `/ws/{room}`.
pub fn room_of(path: &str) -> Option<&str> {
    path.strip_prefix("/ws/").filter(|r| !r.is_empty() && !r.contains('/'))
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let digest = Sha1::new().chain_update(key.as_bytes()).chain_update(GUID.as_bytes()).finalize();
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// Parses `buf`: `Ok(None)` while the request is incomplete.
pub fn parse(buf: &[u8]) -> Result<Option<Upgrade>, Refused> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    let consumed = match request.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_REQUEST => return Err(Refused::TooLong),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Refused::Malformed(e.to_string())),
    };
    let room = room_of(request.path.unwrap_or("")).ok_or(Refused::NotARoom)?.to_owned();
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    let upgrade = header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let key = header("sec-websocket-key").filter(|_| request.method == Some("GET") && upgrade);
    let key = key.ok_or(Refused::NotAnUpgrade)?;
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        accept_key(key.trim())
    );
    Ok(Some(Upgrade { room, response, consumed }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: &str =
        "GET /ws/room-1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                           Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn the_rfc_example_key() {
        assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn an_upgrade_to_a_room() {
        let mut buf = REQUEST.as_bytes().to_vec();
        assert_eq!(parse(&buf[..20]), Ok(None));
        buf.extend_from_slice(b"\x81");
        let up = parse(&buf).unwrap().unwrap();
        assert_eq!(up.room, "room-1");
        assert_eq!(up.consumed, REQUEST.len(), "the byte after the request is a frame's");
        assert!(up.response.starts_with("HTTP/1.1 101 "));
        assert!(up.response.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    }

    #[test]
    fn refusals() {
        let other = REQUEST.replace("/ws/room-1", "/other");
        assert_eq!(parse(other.as_bytes()), Err(Refused::NotARoom));
        assert!(Refused::NotARoom.response().starts_with("HTTP/1.1 404 "));
        let plain = REQUEST.replace("Upgrade: websocket\r\n", "");
        assert_eq!(parse(plain.as_bytes()), Err(Refused::NotAnUpgrade));
        assert!(matches!(parse(b"\x00\x01 nonsense\r\n\r\n"), Err(Refused::Malformed(_))));
        assert_eq!(parse(&vec![b'a'; MAX_REQUEST]), Err(Refused::TooLong));
        assert_eq!(room_of("/ws/"), None);
        assert_eq!(room_of("/ws/a/b"), None);
    }
}
