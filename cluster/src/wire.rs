//! The peer wire format: every frame is a version byte followed by one bincode-encoded [`PeerMessage`].
//!
//! Frames travel length-delimited over TCP (see `link`). bincode is kept behind these two functions
//! and the version byte, so the format can change without touching the rest of the crate: a peer with
//! another version is refused at its first frame instead of being misread.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::error::WireError;
use crate::identity::PeerId;
use crate::presence::{Delta, Snapshot, Version};

/// The version byte at the start of every frame.
pub const WIRE_VERSION: u8 = 1;

/// Largest frame a peer may send (a presence snapshot of a large node is the big one).
pub const MAX_FRAME_BYTES: usize = 64 << 20;

/// Which link a frame travels on: control traffic (raft) never queues behind a broadcast burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Lane {
    Data,
    Control,
}

/// A broadcast as it crosses to another node; the receiving node encodes it for its own clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RelayPayload {
    /// A JSON payload delivered as event `broadcast`.
    Json(String),
    /// A user broadcast: event name, `binary` = opaque bytes (else UTF-8 JSON), and its `meta`.
    User { event: String, binary: bool, data: Vec<u8>, meta: Option<String> },
}

/// Everything nodes say to each other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PeerMessage {
    /// The first frame on every link: who is sending, on which lane.
    Hello { from: PeerId, lane: Lane },
    /// A broadcast published on the sending node, for its members of `topic` here. Never relayed on.
    Relay { topic: String, payload: RelayPayload },
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
    /// Postgres Changes from the CDC leader (a transaction, a relation change, stream liveness), in
    /// the node's own encoding.
    Cdc { body: Vec<u8> },
    /// The sender has delivered (and recorded) every change up to `lsn`: the leader acknowledges
    /// to PostgreSQL only what every live node delivered. `gap`: the sender missed shipped changes
    /// (it was out of the cluster) and asks the leader to replay the stream from the slot.
    CdcDelivered { lsn: u64, gap: bool },
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
            PeerMessage::Relay {
                topic: "public:room".into(),
                payload: RelayPayload::User {
                    event: "e".into(),
                    binary: true,
                    data: vec![0, 255],
                    meta: None,
                },
            },
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

    proptest! {
        #[test]
        fn any_bytes_decode_or_fail_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
            let mut versioned = vec![WIRE_VERSION];
            versioned.extend_from_slice(&bytes);
            let _ = decode(&versioned);
        }
    }
}
