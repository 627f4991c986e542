//! Sealed membership packets: SWIM's UDP datagrams, authenticated and encrypted, with a replay window.
//!
//! A sealed packet is `[MAGIC][nonce: send time in ms (8, big-endian) + 16 random bytes][ciphertext +
//! 16-byte tag]`, XChaCha20-Poly1305 under the packet key, with the magic byte as associated data. The
//! 192-bit nonce is large enough to be drawn at random; its first 8 bytes are the send time, which the
//! receiver checks against [`WINDOW`] after the packet opened, so an old packet captured off the wire
//! is refused once it is older than the window and a copy within it is refused by the remembered
//! nonces ([`ReplayWindow`]). Clocks of the nodes must agree within the window (NTP does far better).

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use thiserror::Error;

use super::Keyring;

/// First byte of every sealed packet: the format's version, so a later format can be told apart.
pub const MAGIC: u8 = 0xA7;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Bytes a sealed packet adds to a plain one.
pub const OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;
/// How far a packet's send time may be from the receiver's clock, either way.
pub const WINDOW: Duration = Duration::from_secs(30);
/// Nonces remembered at most; past it the oldest are forgotten and nothing older is accepted.
pub const REPLAY_CAPACITY: usize = 100_000;

/// Why a membership packet was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PacketRefused {
    #[error("not a sealed packet")]
    Unsealed,
    #[error("no cluster key opens it")]
    Unauthentic,
    #[error("sent {0} ms away from this node's clock (replayed, or clocks disagree)")]
    Stale(i128),
    #[error("already received (replayed)")]
    Replayed,
}

impl PacketRefused {
    /// Refusals of packets that did open: the sender held a key, so it is a replay or a clock problem.
    pub fn is_replay(&self) -> bool {
        matches!(self, PacketRefused::Stale(_) | PacketRefused::Replayed)
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Seals `plain` with the keyring's sending key.
pub fn seal(keys: &Keyring, plain: &[u8]) -> Vec<u8> {
    seal_at(keys, plain, now_ms(), rand::random())
}

fn seal_at(keys: &Keyring, plain: &[u8], sent_ms: u64, random: [u8; 16]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    nonce[..8].copy_from_slice(&sent_ms.to_be_bytes());
    nonce[8..].copy_from_slice(&random);
    let cipher = XChaCha20Poly1305::new((&keys.sending().packet_key).into());
    let sealed =
        cipher.encrypt(&XNonce::from(nonce), Payload { msg: plain, aad: &[MAGIC] }).unwrap_or_default(); // only fails for inputs of 2^38 bytes; a UDP packet is far below
    let mut packet = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
    packet.push(MAGIC);
    packet.extend_from_slice(&nonce);
    packet.extend_from_slice(&sealed);
    packet
}

/// Opens a sealed packet with any accepted key, then checks its time and that it is new.
pub fn open(keys: &Keyring, window: &mut ReplayWindow, packet: &[u8]) -> Result<Vec<u8>, PacketRefused> {
    open_at(keys, window, packet, now_ms())
}

fn open_at(
    keys: &Keyring,
    window: &mut ReplayWindow,
    packet: &[u8],
    now_ms: u64,
) -> Result<Vec<u8>, PacketRefused> {
    if packet.len() < OVERHEAD || packet[0] != MAGIC {
        return Err(PacketRefused::Unsealed);
    }
    let nonce: [u8; NONCE_LEN] = packet[1..1 + NONCE_LEN].try_into().map_err(|_| PacketRefused::Unsealed)?;
    let body = &packet[1 + NONCE_LEN..];
    let plain = keys
        .accepted()
        .iter()
        .find_map(|key| {
            XChaCha20Poly1305::new((&key.packet_key).into())
                .decrypt(&XNonce::from(nonce), Payload { msg: body, aad: &[MAGIC] })
                .ok()
        })
        .ok_or(PacketRefused::Unauthentic)?;
    let sent_ms = u64::from_be_bytes(nonce[..8].try_into().map_err(|_| PacketRefused::Unsealed)?);
    window.admit(nonce, sent_ms, now_ms)?;
    Ok(plain)
}

/// The nonces of packets received within the window, so a copy is refused.
pub struct ReplayWindow {
    window_ms: u64,
    capacity: usize,
    seen: HashSet<[u8; NONCE_LEN]>,
    /// `(received at, sent at, nonce)` in the order received.
    order: VecDeque<(u64, u64, [u8; NONCE_LEN])>,
    /// Packets sent at or before this are refused: their nonces may have been forgotten early.
    floor_ms: u64,
}

impl ReplayWindow {
    pub fn new(window: Duration, capacity: usize) -> ReplayWindow {
        ReplayWindow {
            window_ms: window.as_millis() as u64,
            capacity: capacity.max(1),
            seen: HashSet::new(),
            order: VecDeque::new(),
            floor_ms: 0,
        }
    }

    fn admit(&mut self, nonce: [u8; NONCE_LEN], sent_ms: u64, now_ms: u64) -> Result<(), PacketRefused> {
        // A nonce must be remembered while its send time is inside the window, that is until
        // `sent + window`, which is at most `received + 2 × window` for an accepted packet.
        while let Some(&(received, _, old)) = self.order.front() {
            if received.saturating_add(2 * self.window_ms) >= now_ms {
                break;
            }
            self.seen.remove(&old);
            self.order.pop_front();
        }
        let skew = i128::from(sent_ms) - i128::from(now_ms);
        if skew.unsigned_abs() > u128::from(self.window_ms) || sent_ms <= self.floor_ms {
            return Err(PacketRefused::Stale(skew));
        }
        if !self.seen.insert(nonce) {
            return Err(PacketRefused::Replayed);
        }
        self.order.push_back((now_ms, sent_ms, nonce));
        while self.order.len() > self.capacity {
            if let Some((_, sent, old)) = self.order.pop_front() {
                self.seen.remove(&old);
                self.floor_ms = self.floor_ms.max(sent);
            }
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ring(text: &str) -> Keyring {
        Keyring::parse(text).unwrap()
    }

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const T: u64 = 1_800_000_000_000;

    fn window() -> ReplayWindow {
        ReplayWindow::new(WINDOW, REPLAY_CAPACITY)
    }

    #[test]
    fn a_packet_opens_once_with_the_right_key() {
        let keys = ring(A);
        let packet = seal_at(&keys, b"swim", T, [1; 16]);
        assert_eq!(packet.len(), 4 + OVERHEAD);
        let mut seen = window();
        assert_eq!(open_at(&keys, &mut seen, &packet, T + 5).unwrap(), b"swim");
        assert_eq!(open_at(&keys, &mut seen, &packet, T + 6), Err(PacketRefused::Replayed));
        assert_eq!(open_at(&ring(B), &mut window(), &packet, T), Err(PacketRefused::Unauthentic));
    }

    #[test]
    fn plain_tampered_and_truncated_packets_are_refused() {
        let keys = ring(A);
        let packet = seal_at(&keys, b"swim", T, [1; 16]);
        for i in 0..packet.len() {
            let mut bad = packet.clone();
            bad[i] ^= 0x40;
            assert!(open_at(&keys, &mut window(), &bad, T).is_err(), "flipped byte {i}");
        }
        assert_eq!(open_at(&keys, &mut window(), &packet[..OVERHEAD - 1], T), Err(PacketRefused::Unsealed));
        assert_eq!(open_at(&keys, &mut window(), b"\x03plain foca", T), Err(PacketRefused::Unsealed));
    }

    #[test]
    fn old_and_future_packets_are_refused_as_stale() {
        let keys = ring(A);
        let window_ms = WINDOW.as_millis() as u64;
        let old = seal_at(&keys, b"x", T - window_ms - 1, [2; 16]);
        assert!(matches!(open_at(&keys, &mut window(), &old, T), Err(PacketRefused::Stale(_))));
        let future = seal_at(&keys, b"x", T + window_ms + 1, [3; 16]);
        assert!(matches!(open_at(&keys, &mut window(), &future, T), Err(PacketRefused::Stale(_))));
        let edge = seal_at(&keys, b"x", T - window_ms, [4; 16]);
        assert!(open_at(&keys, &mut window(), &edge, T).is_ok());
    }

    #[test]
    fn a_rotated_keyring_accepts_the_old_key_and_sends_with_the_new() {
        let rotating = ring(&format!("{B},{A}"));
        let from_old = seal_at(&ring(A), b"old", T, [5; 16]);
        assert_eq!(open_at(&rotating, &mut window(), &from_old, T).unwrap(), b"old");
        let from_rotating = seal_at(&rotating, b"new", T, [6; 16]);
        assert_eq!(open_at(&ring(B), &mut window(), &from_rotating, T).unwrap(), b"new");
        assert_eq!(open_at(&ring(A), &mut window(), &from_rotating, T), Err(PacketRefused::Unauthentic));
    }

    #[test]
    fn a_full_window_forgets_the_oldest_and_refuses_anything_as_old() {
        let keys = ring(A);
        let mut seen = ReplayWindow::new(WINDOW, 3);
        let packets: Vec<_> = (0..4u8).map(|i| seal_at(&keys, b"x", T + u64::from(i), [i; 16])).collect();
        for packet in &packets {
            assert!(open_at(&keys, &mut seen, packet, T + 10).is_ok());
        }
        assert_eq!(seen.len(), 3);
        // The first nonce was forgotten, but its send time is at the floor now: still refused.
        assert!(matches!(open_at(&keys, &mut seen, &packets[0], T + 10), Err(PacketRefused::Stale(_))));
    }

    #[test]
    fn nonces_are_forgotten_once_they_cannot_be_accepted_anyway() {
        let keys = ring(A);
        let mut seen = window();
        let window_ms = WINDOW.as_millis() as u64;
        for i in 0..100u64 {
            let packet = seal_at(&keys, b"x", T + i * 1000, rand::random());
            assert!(open_at(&keys, &mut seen, &packet, T + i * 1000).is_ok());
        }
        assert!(seen.len() as u64 <= 2 * window_ms / 1000 + 1, "{} remembered", seen.len());
    }

    proptest! {
        #[test]
        fn any_bytes_are_refused_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let keys = ring(A);
            let mut with_magic = vec![MAGIC];
            with_magic.extend_from_slice(&bytes);
            prop_assert!(open_at(&keys, &mut window(), &bytes, T).is_err());
            prop_assert!(open_at(&keys, &mut window(), &with_magic, T).is_err());
        }
    }
}
