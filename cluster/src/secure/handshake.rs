//! The Noise handshake that opens every peer link when the cluster has a secret.
//!
//! Pattern `Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s`: the pre-shared key (derived from the cluster
//! secret) is mixed in before the first message, so
//! - the responder learns from the first message alone whether the initiator holds a key it accepts
//!   (the message's tag only verifies under that key): a stranger is refused before any peer frame
//!   is read;
//! - the initiator learns the same of the responder from the answer, so a node never sends to an
//!   impostor it was tricked into dialling;
//! - both sides' fresh ephemeral keys make the session keys unique per connection (a recorded
//!   session cannot be replayed, and a secret leaked later does not open recorded traffic).
//!
//! Each handshake message travels as `[u16 length][message]`. The responder tries each accepted key
//! in turn (at most [`super::MAX_KEYS`]), which is how a rotation accepts the old and the new secret.

use std::io;

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::codec::PeerCodec;
use super::Keyring;

const PATTERN: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";
/// Binds the handshake to this protocol: a Noise peer of another application cannot complete it.
const PROLOGUE: &[u8] = b"realtime-cluster link v1";
/// Handshake messages here are 48 bytes; anything far larger is not our peer.
const MAX_HANDSHAKE_MESSAGE: usize = 1024;

/// Why a link could not be opened.
#[derive(Debug, Error)]
pub enum HandshakeError {
    #[error("peer connection failed during the handshake: {0}")]
    Io(#[from] io::Error),
    #[error("the peer does not hold the cluster secret (or speaks no Noise)")]
    Refused,
    #[error("noise: {0}")]
    Noise(String),
}

fn noise(error: snow::Error) -> HandshakeError {
    HandshakeError::Noise(error.to_string())
}

fn builder(psk: &[u8; 32]) -> Result<snow::Builder<'_>, HandshakeError> {
    let params = PATTERN.parse().map_err(noise)?;
    snow::Builder::new(params).prologue(PROLOGUE).map_err(noise)?.psk(0, psk).map_err(noise)
}

async fn send<S: AsyncWrite + Unpin>(stream: &mut S, message: &[u8]) -> io::Result<()> {
    let len = u16::try_from(message.len()).map_err(|_| io::Error::other("handshake message too long"))?;
    let mut out = Vec::with_capacity(2 + message.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(message);
    stream.write_all(&out).await?;
    stream.flush().await
}

async fn receive<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Vec<u8>, HandshakeError> {
    let len = usize::from(stream.read_u16().await?);
    if len == 0 || len > MAX_HANDSHAKE_MESSAGE {
        return Err(HandshakeError::Refused);
    }
    let mut message = vec![0u8; len];
    stream.read_exact(&mut message).await?;
    Ok(message)
}

/// Opens the dialling side of a link carrying frames of at most `max_frame` bytes; `None`
/// (insecure): frames go plain.
pub async fn initiate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    keys: Option<&Keyring>,
    max_frame: usize,
) -> Result<PeerCodec, HandshakeError> {
    let Some(keys) = keys else { return Ok(PeerCodec::plain(max_frame)) };
    let mut state = builder(&keys.sending().link_psk)?.build_initiator().map_err(noise)?;
    let mut buf = [0u8; MAX_HANDSHAKE_MESSAGE];
    let len = state.write_message(&[], &mut buf).map_err(noise)?;
    send(stream, &buf[..len]).await?;
    let answer = receive(stream).await?;
    state.read_message(&answer, &mut buf).map_err(|_| HandshakeError::Refused)?;
    let session = state.into_stateless_transport_mode().map_err(noise)?;
    Ok(PeerCodec::sealed(session, max_frame))
}

/// The accepting side of a link, opened: its codec and the pre-shared key the peer proved (`None`
/// when insecure), so the link can be closed once a rotation stops accepting that key.
pub struct Accepted {
    pub codec: PeerCodec,
    pub psk: Option<[u8; 32]>,
}

/// Opens the accepting side of a link (frames of at most `max_frame` bytes): the first message must
/// verify under one of the accepted keys.
pub async fn respond<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    keys: Option<&Keyring>,
    max_frame: usize,
) -> Result<Accepted, HandshakeError> {
    let Some(keys) = keys else { return Ok(Accepted { codec: PeerCodec::plain(max_frame), psk: None }) };
    let first = receive(stream).await?;
    let mut buf = [0u8; MAX_HANDSHAKE_MESSAGE];
    let mut accepted = None;
    for key in keys.accepted() {
        let mut state = builder(&key.link_psk)?.build_responder().map_err(noise)?;
        if state.read_message(&first, &mut buf).is_ok() {
            accepted = Some((state, key.link_psk));
            break;
        }
    }
    let (mut state, psk) = accepted.ok_or(HandshakeError::Refused)?;
    let len = state.write_message(&[], &mut buf).map_err(noise)?;
    send(stream, &buf[..len]).await?;
    let codec = PeerCodec::sealed(state.into_stateless_transport_mode().map_err(noise)?, max_frame);
    Ok(Accepted { codec, psk: Some(psk) })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    /// Two transport sessions (initiator, responder) of one handshake under a fixed key.
    pub(crate) fn session_pair() -> (snow::StatelessTransportState, snow::StatelessTransportState) {
        let keys = Keyring::parse(A).unwrap();
        let psk = keys.sending().link_psk;
        let mut i = builder(&psk).unwrap().build_initiator().unwrap();
        let mut r = builder(&psk).unwrap().build_responder().unwrap();
        let (mut m, mut p) = ([0u8; 1024], [0u8; 1024]);
        let n = i.write_message(&[], &mut m).unwrap();
        r.read_message(&m[..n], &mut p).unwrap();
        let n = r.write_message(&[], &mut m).unwrap();
        i.read_message(&m[..n], &mut p).unwrap();
        (i.into_stateless_transport_mode().unwrap(), r.into_stateless_transport_mode().unwrap())
    }

    async fn pair(dial: Option<&str>, accept: Option<&str>) -> (bool, bool) {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let dial = dial.map(|s| Keyring::parse(s).unwrap());
        let accept = accept.map(|s| Keyring::parse(s).unwrap());
        let (dialled, accepted) = tokio::join!(
            tokio::time::timeout(std::time::Duration::from_secs(2), initiate(&mut a, dial.as_ref(), 1 << 20)),
            tokio::time::timeout(std::time::Duration::from_secs(2), async {
                let accepted = respond(&mut b, accept.as_ref(), 1 << 20).await;
                drop(b); // a refusal closes the connection
                accepted
            }),
        );
        (matches!(dialled, Ok(Ok(_))), matches!(accepted, Ok(Ok(_))))
    }

    #[tokio::test]
    async fn only_holders_of_an_accepted_key_complete_the_handshake() {
        assert_eq!(pair(Some(A), Some(A)).await, (true, true));
        assert_eq!(pair(Some(A), Some(B)).await, (false, false));
        // Rotation: the accepting side knows both, the dialling side sends with either.
        assert_eq!(pair(Some(A), Some(&format!("{B},{A}"))).await, (true, true));
        assert_eq!(pair(Some(&format!("{B},{A}")), Some(A)).await, (false, false));
        // A plain peer against a secured one, either way round.
        assert!(!pair(None, Some(A)).await.1);
        assert!(!pair(Some(A), None).await.0);
    }

    #[tokio::test]
    async fn garbage_and_oversized_first_messages_are_refused() {
        let keys = Keyring::parse(A).unwrap();
        for first in
            [vec![0u8, 0], vec![0xff, 0xff, 1, 2], vec![0, 48].into_iter().chain([7u8; 48]).collect()]
        {
            let (mut a, mut b) = tokio::io::duplex(4096);
            a.write_all(&first).await.unwrap();
            drop(a);
            assert!(respond(&mut b, Some(&keys), 1 << 20).await.is_err());
        }
    }
}
