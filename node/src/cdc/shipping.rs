//! What the CDC leader ships to the other nodes, in stream order, and its encoding.
//!
//! Each node matches shipped transactions against its own subscriptions and checks RLS itself
//! (DESIGN.md flow 5), so the leader sends the decoded transaction once to every node rather than
//! per-subscriber payloads. The leader serialises from a borrowed transaction ([`Outgoing`]); the
//! receivers decode into owned values ([`Shipped`]); the two enums must keep the same variants in the
//! same order (the round-trip test checks it).

use realtime_cluster::error::WireError;
use realtime_cluster::wire;
use realtime_proto::postgres::change::Transaction;
use serde::{Deserialize, Serialize};

use super::gap::StreamStart;

/// A shipped message, as a receiving node decodes it.
#[derive(Debug, Deserialize)]
pub enum Shipped {
    /// The leader's replication stream is live (or not): `Subscribed to PostgreSQL` waits for it.
    Live(bool),
    /// A table's definition changed: cached privileges and RLS answers for it are stale.
    Relation { oid: u32 },
    /// A committed transaction with at least one change; `prev` is the end of the one the leader
    /// shipped before it in the same stream (0 for the first), so a receiver can tell it missed some.
    Transaction { prev: u64, txn: Transaction },
    /// A new stream starts (a failover, a replay): a receiver that has not taken its anchor missed
    /// changes for good (see [`super::gap`]).
    Stream(StreamStart),
}

/// A shipped message, as the leader encodes it (without copying the transaction).
#[derive(Debug, Serialize)]
pub enum Outgoing<'a> {
    Live(bool),
    Relation { oid: u32 },
    Transaction { prev: u64, txn: &'a Transaction },
    Stream(StreamStart),
}

/// Encodes for [`crate::peer_message::NodeMessage::CdcShipped`].
pub fn encode(message: &Outgoing<'_>) -> Result<Vec<u8>, WireError> {
    wire::encode_body(message)
}

pub fn decode(body: &[u8]) -> Result<Shipped, WireError> {
    wire::decode_body(body)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use realtime_proto::postgres::change::{Cell, Change, ChangeKind, OldRow};
    use realtime_proto::postgres::table::{ColumnMeta, TableMeta};

    use super::*;

    #[test]
    fn every_message_round_trips() {
        let column = |name: &str, key| ColumnMeta {
            name: name.into(),
            typname: "int4".into(),
            sql_type: "integer".into(),
            primary_key: key,
        };
        let table = Arc::new(TableMeta {
            oid: 16384,
            schema: "public".into(),
            name: "items".into(),
            columns: vec![column("id", true), column("qty", false)],
            rls: true,
        });
        let txn = Transaction {
            xid: 7,
            end_lsn: 0x1_6B37_4D48,
            commit_timestamp: "2026-11-30T12:00:00.000Z".into(),
            changes: vec![Change {
                kind: ChangeKind::Update,
                table,
                new: Some(vec![Cell::Text(Bytes::from_static(b"1")), Cell::Unchanged]),
                old: Some(OldRow {
                    full: true,
                    cells: vec![Cell::Text(Bytes::from_static(b"1")), Cell::Null],
                }),
            }],
        };
        match decode(&encode(&Outgoing::Transaction { prev: 9, txn: &txn }).unwrap()).unwrap() {
            Shipped::Transaction { prev, txn: back } => {
                assert_eq!(prev, 9);
                assert_eq!(format!("{back:?}"), format!("{txn:?}"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(decode(&encode(&Outgoing::Live(true)).unwrap()).unwrap(), Shipped::Live(true)));
        assert!(matches!(
            decode(&encode(&Outgoing::Relation { oid: 5 }).unwrap()).unwrap(),
            Shipped::Relation { oid: 5 }
        ));
        let start = StreamStart { from: 12, anchor: 10 };
        assert!(
            matches!(decode(&encode(&Outgoing::Stream(start)).unwrap()).unwrap(), Shipped::Stream(s) if s == start)
        );
        assert!(decode(&[9, 9, 9]).is_err());
    }
}
