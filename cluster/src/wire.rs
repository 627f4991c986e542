//! The peer wire format: every frame is a version byte followed by one bincode-encoded [`PeerMessage`].
//!
//! Frames travel length-delimited over TCP (see `link`). bincode is kept behind these two functions
//! and the version byte, so the format can change without touching the rest of the crate: a peer with
//! another version is refused at its first frame instead of being misread.
//!
//! On a link each frame is wrapped in a link header, `[LINK_VERSION][seq: u64 BE]`, and the
//! accepting side answers on the same connection with acknowledgements, `[LINK_VERSION][seq]` alone
//! (see `link`). The header's first byte is where a frame's version byte was before it existed, and
//! differs from [`WIRE_VERSION`]: a node of the previous format reads it as an unknown wire version
//! and closes the link at the `Hello`, and this node does the same with that node's frames, so a
//! mixed cluster refuses to link (logged at both ends) instead of misreading.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::error::WireError;
use crate::identity::PeerId;
use crate::presence::{Delta, Snapshot, Version};

/// The version byte at the start of every frame: 3 since the node's payloads travel as bytes
/// (`Relay { body }`, `Node`); never the same as [`LINK_VERSION`], so neither header is taken for the
/// other.
pub const WIRE_VERSION: u8 = 3;

/// The first byte of every frame on a link: the link format (sequence numbers and acknowledgements).
pub const LINK_VERSION: u8 = 2;

/// The link header's length: [`LINK_VERSION`] and the frame's sequence number.
pub const LINK_HEADER_BYTES: usize = 9;

/// Largest frame a peer may send (a presence snapshot of a large node is the big one).
pub const MAX_FRAME_BYTES: usize = 64 << 20;

/// Which link a frame travels on: control traffic (raft) never queues behind a broadcast burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Lane {
    Data,
    Control,
}

/// Everything nodes say to each other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PeerMessage {
    /// The first frame on every link: who is sending, on which lane.
    Hello { from: PeerId, lane: Lane },
    /// A broadcast published on the sending node, for its members of `topic` here, in the node's own
    /// encoding (the cluster does not read it). Never relayed on.
    Relay { topic: String, body: Vec<u8> },
    /// The sender's member counts per topic (0 = none left); `full` replaces everything known before.
    Members { counts: Vec<(String, u32)>, full: bool },
    /// The sender's own presence changes.
    PresenceDelta(Delta),
    /// The sender's whole presence state (on a new link, on request, after a rejoin).
    PresenceSnapshot(Snapshot),
    /// The sender's presence version, so a receiver that lost a delta asks for a snapshot.
    PresenceDigest { version: Version },
    /// Asks the receiver for its `PresenceSnapshot`.
    SnapshotRequest,
    /// The sender is shutting down: drop its presences now rather than after the failure detector.
    Leaving { incarnation: u64, epoch: u64 },
    /// A message of the node's own, addressed to the receiving node (for realtime: Postgres Changes
    /// shipped by the CDC leader, and how far each node delivered them), in the node's encoding: the
    /// cluster carries it in order on the data lane without reading it, so a new cross-node feature
    /// of the node touches no variant here.
    Node { body: Vec<u8> },
    /// A raft RPC (control lane); `body` is the JSON of `raft::network::RpcRequest`. The answer
    /// comes back on the receiver's own control link as a `RaftResponse` with the same `id`.
    RaftRequest { id: u64, body: Vec<u8> },
    /// The answer to the sender's `RaftRequest` `id`; `body` is the JSON of `raft::network::RpcReply`.
    RaftResponse { id: u64, body: Vec<u8> },
    /// The sender's raft state, sent every raft heartbeat on the control lane: lets a fresh cluster
    /// pick exactly one node to initialize raft, the leader find nodes to add, and each node judge
    /// whether it may campaign (`raft::campaign`). `can_lead`: the sender could do the leader's job
    /// (for realtime: it reaches PostgreSQL). `hears_leader`: it is, or follows, a leader it heard
    /// from within the lease. `hears`: the raft ids of the peers whose status it received within
    /// the contact window.
    RaftStatus { initialized: bool, leader: Option<u64>, can_lead: bool, hears_leader: bool, hears: Vec<u64> },
}

type Config = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_FRAME_BYTES>,
>;

/// bincode's standard configuration, with no allocation larger than a frame (a hostile length
/// prefix cannot make a decoder allocate gigabytes).
fn config() -> Config {
    bincode::config::standard().with_limit::<MAX_FRAME_BYTES>()
}

/// Encodes `msg` as one frame body.
pub fn encode(msg: &PeerMessage) -> Result<Bytes, WireError> {
    let mut buf = BytesMut::with_capacity(64).writer();
    buf.get_mut().put_u8(WIRE_VERSION);
    bincode::serde::encode_into_std_write(msg, &mut buf, config())?;
    Ok(buf.into_inner().freeze())
}

/// Encodes a value the node ships through the cluster (e.g. a `Cdc` body) in the peer format.
pub fn encode_body<T: Serialize>(value: &T) -> Result<Vec<u8>, WireError> {
    Ok(bincode::serde::encode_to_vec(value, config())?)
}

/// Decodes what [`encode_body`] produced; trailing bytes are an error.
pub fn decode_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, WireError> {
    let (value, read) = bincode::serde::decode_from_slice(body, config())?;
    if read != body.len() {
        return Err(WireError::Decode(bincode::error::DecodeError::OtherString(format!(
            "{} trailing bytes",
            body.len() - read
        ))));
    }
    Ok(value)
}

/// Decodes one frame body; trailing bytes are an error.
pub fn decode(frame: &[u8]) -> Result<PeerMessage, WireError> {
    let (&version, body) = frame.split_first().ok_or(WireError::Empty)?;
    if version != WIRE_VERSION {
        return Err(WireError::Version(version, WIRE_VERSION));
    }
    decode_body(body)
}

/// `frame` with its link header: `seq` orders it among everything this node run sent on the lane.
pub fn sequenced(seq: u64, frame: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(LINK_HEADER_BYTES + frame.len());
    out.put_u8(LINK_VERSION);
    out.put_u64(seq);
    out.put_slice(frame);
    out.freeze()
}

/// Splits a link frame into its sequence number and the frame it carries.
pub fn unsequence(frame: &[u8]) -> Result<(u64, &[u8]), WireError> {
    let (&version, rest) = frame.split_first().ok_or(WireError::Empty)?;
    if version != LINK_VERSION {
        return Err(WireError::Version(version, LINK_VERSION));
    }
    let (seq, body) = rest.split_first_chunk::<8>().ok_or(WireError::Short(frame.len()))?;
    Ok((u64::from_be_bytes(*seq), body))
}

/// An acknowledgement: every frame up to sequence number `seq` arrived.
pub fn ack(seq: u64) -> Bytes {
    sequenced(seq, &[])
}

/// Reads an acknowledgement; anything but a bare header is an error.
pub fn read_ack(frame: &[u8]) -> Result<u64, WireError> {
    match unsequence(frame)? {
        (seq, []) => Ok(seq),
        (_, body) => Err(WireError::Decode(bincode::error::DecodeError::OtherString(format!(
            "{} bytes after an acknowledgement",
            body.len()
        )))),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::NodeId;

    #[test]
    fn frames_round_trip_and_carry_the_version() {
        let from = PeerId {
            node: NodeId("n1".into()),
            incarnation: 7,
            epoch: 1,
            addr: "127.0.0.2:4100".parse().unwrap(),
        };
        let messages = [
            PeerMessage::Hello { from, lane: Lane::Control },
            PeerMessage::Relay { topic: "public:room".into(), body: vec![0, 255] },
            PeerMessage::Node { body: vec![1, 2, 3] },
            PeerMessage::Members { counts: vec![("public:a".into(), 3)], full: true },
            PeerMessage::PresenceDigest { version: Version { incarnation: 1, epoch: 2, seq: 3 } },
            PeerMessage::Leaving { incarnation: 1, epoch: 0 },
        ];
        for msg in messages {
            let frame = encode(&msg).unwrap();
            assert_eq!(frame[0], WIRE_VERSION);
            assert_eq!(decode(&frame).unwrap(), msg);
        }
    }

    #[test]
    fn other_versions_and_garbage_are_refused() {
        let mut frame = encode(&PeerMessage::SnapshotRequest).unwrap().to_vec();
        frame[0] = 9;
        assert!(matches!(decode(&frame), Err(WireError::Version(9, WIRE_VERSION))));
        assert!(matches!(decode(&[]), Err(WireError::Empty)));
        let mut long = encode(&PeerMessage::SnapshotRequest).unwrap().to_vec();
        long.push(0);
        assert!(decode(&long).is_err());
    }

    /// A node of the previous format (no link header) and this one refuse each other's first frame.
    #[test]
    fn link_frames_carry_their_sequence_and_refuse_the_previous_format() {
        let hello = encode(&PeerMessage::SnapshotRequest).unwrap();
        let framed = sequenced(0x0102_0304_0506_0708, &hello);
        assert_eq!(framed.len(), LINK_HEADER_BYTES + hello.len());
        assert_eq!(unsequence(&framed).unwrap(), (0x0102_0304_0506_0708, &hello[..]));
        // This frame as a node of the previous format reads it, and the other way round.
        assert!(matches!(decode(&framed), Err(WireError::Version(LINK_VERSION, WIRE_VERSION))));
        assert!(matches!(unsequence(&hello), Err(WireError::Version(WIRE_VERSION, LINK_VERSION))));
        assert!(matches!(unsequence(&framed[..5]), Err(WireError::Short(5))));
        assert_eq!(read_ack(&ack(42)).unwrap(), 42);
        assert!(read_ack(&framed).is_err(), "a frame is not an acknowledgement");
    }

    proptest! {
        #[test]
        fn any_link_bytes_split_or_fail_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = unsequence(&bytes);
            let _ = read_ack(&bytes);
        }

        #[test]
        fn any_bytes_decode_or_fail_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
            let mut versioned = vec![WIRE_VERSION];
            versioned.extend_from_slice(&bytes);
            let _ = decode(&versioned);
        }
    }
}
