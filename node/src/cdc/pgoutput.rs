//! Decoder of PostgreSQL's `pgoutput` logical replication messages (the payload of each `XLogData`).
//!
//! Pure and sans-IO: bytes in, a typed [`Message`] out, so the replication stream driver stays thin and
//! the wire layout is tested byte for byte without a database. Layout: PostgreSQL docs, "Logical
//! Replication Message Formats", protocol versions 1 and 2 (streamed transactions); the optional abort
//! LSN/timestamp of protocol 4's Stream Abort is read when present. Two-phase messages (protocol 3) are
//! not decoded: the slot is not created with `two_phase`.
//!
//! Column values are slices of the input [`Bytes`] (no copies). Every malformed input is a cheap
//! [`DecodeError`], never a panic: the bytes come from the network.
//!
//! Timestamps in the protocol are microseconds since 2000-01-01 00:00 UTC (the PostgreSQL epoch);
//! [`pg_micros_to_unix_micros`] and [`commit_timestamp_string`] convert them.

use bytes::Bytes;

/// One decoded pgoutput message.
///
/// `xid: Option<u32>` is `Some` exactly when the message was decoded with `in_stream = true`, i.e. it
/// belongs to a streamed (in-progress) transaction, between `StreamStart` and `StreamStop`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// 'B': start of a transaction.
    Begin { final_lsn: u64, commit_time_us: i64, xid: u32 },
    /// 'C': end of a transaction.
    Commit { flags: u8, commit_lsn: u64, end_lsn: u64, commit_time_us: i64 },
    /// 'O': the transaction was replayed from another node (origin).
    Origin { commit_lsn: u64, name: String },
    /// 'R': describes a relation; always sent before the first change that uses it (and again after
    /// its definition changes). In a stream its xid is read and dropped: the description applies
    /// whichever transaction carried it (pgoutput re-sends it after an aborted stream).
    Relation(Relation),
    /// 'Y': describes a non-builtin data type used by a later Relation (stream xid dropped likewise).
    Type { oid: u32, namespace: String, name: String },
    /// 'I'.
    Insert { xid: Option<u32>, relation: u32, new: Tuple },
    /// 'U': `old` is present for REPLICA IDENTITY FULL (`Full`), or when a key column changed (`Key`).
    Update { xid: Option<u32>, relation: u32, old: Option<OldTuple>, new: Tuple },
    /// 'D'.
    Delete { xid: Option<u32>, relation: u32, old: OldTuple },
    /// 'T': `options` bit 1 = CASCADE, bit 2 = RESTART IDENTITY.
    Truncate { xid: Option<u32>, options: u8, relations: Vec<u32> },
    /// 'M': `pg_logical_emit_message`.
    LogicalMessage { xid: Option<u32>, transactional: bool, lsn: u64, prefix: String, content: Bytes },
    /// 'S': start (or continuation) of a block of a streamed transaction.
    StreamStart { xid: u32, first_segment: bool },
    /// 'E': end of a block of a streamed transaction.
    StreamStop,
    /// 'c': a streamed transaction committed.
    StreamCommit { xid: u32, flags: u8, commit_lsn: u64, end_lsn: u64, commit_time_us: i64 },
    /// 'A': a streamed (sub)transaction aborted; `xid == subxid` for the top-level transaction.
    /// `abort_lsn`/`abort_time_us` are only sent by protocol 4 with parallel streaming.
    StreamAbort { xid: u32, subxid: u32, abort_lsn: Option<u64>, abort_time_us: Option<i64> },
}

/// A relation (table) as described by a 'R' message: what the relation cache keeps per OID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub oid: u32,
    /// Schema name; the empty string means `pg_catalog`.
    pub namespace: String,
    pub name: String,
    /// `pg_class.relreplident`: b'd' default (primary key), b'n' nothing, b'f' full, b'i' index.
    pub replica_identity: u8,
    /// In attribute order, dropped and generated columns excluded: the order of [`Tuple`] values.
    pub columns: Vec<RelationColumn>,
}

/// One column of a [`Relation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Part of the replica identity (flags bit 1): the columns an [`OldTuple::Key`] carries.
    pub key: bool,
    pub name: String,
    pub type_oid: u32,
    /// `atttypmod`, -1 when none.
    pub type_modifier: i32,
}

/// The column values of a row, in the order of [`Relation::columns`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuple(pub Vec<TupleValue>);

/// One column value of a [`Tuple`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TupleValue {
    /// 'n': SQL NULL. Also used for non-key columns of an [`OldTuple::Key`].
    Null,
    /// 'u': a TOASTed value that did not change; its value is not sent.
    UnchangedToast,
    /// 't': the type's text output (what the caller feeds to `values::to_json`).
    Text(Bytes),
    /// 'b': the type's binary send format (only with the `binary` option, which we do not request).
    Binary(Bytes),
}

/// The old row of an Update or Delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple {
    /// 'K': only the replica identity (key) columns are set; the others are [`TupleValue::Null`].
    Key(Tuple),
    /// 'O': the whole old row (REPLICA IDENTITY FULL).
    Full(Tuple),
}

/// Why a payload could not be decoded. Cheap and `Copy`: decoding is on the hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("pgoutput message truncated")]
    Truncated,
    #[error("unknown pgoutput message tag 0x{0:02x}")]
    UnknownTag(u8),
    #[error("pgoutput string is not valid UTF-8")]
    BadUtf8,
    #[error("unknown pgoutput tuple value kind 0x{0:02x}")]
    BadTupleKind(u8),
    #[error("unexpected pgoutput tuple marker 0x{0:02x}")]
    BadTupleMarker(u8),
    #[error("negative length in pgoutput message")]
    NegativeLength,
    #[error("{0} unexpected trailing bytes after pgoutput message")]
    TrailingBytes(usize),
}

/// Microseconds from 1970-01-01 (Unix epoch) to 2000-01-01 (PostgreSQL epoch).
pub const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

const MICROS_PER_DAY: i64 = 86_400_000_000;
/// Days from 1970-01-01 to 2000-01-01.
const PG_EPOCH_UNIX_DAYS: i64 = 10_957;

/// Decodes one pgoutput message. `in_stream` is true between `StreamStart` and `StreamStop`, where the
/// transactional messages carry a leading xid (protocol 2).
pub fn decode(data: Bytes, in_stream: bool) -> Result<Message, DecodeError> {
    let mut r = Reader { buf: data, pos: 0 };
    let tag = r.u8()?;
    let message = match tag {
        b'B' => Message::Begin { final_lsn: r.u64()?, commit_time_us: r.i64()?, xid: r.u32()? },
        b'C' => Message::Commit {
            flags: r.u8()?,
            commit_lsn: r.u64()?,
            end_lsn: r.u64()?,
            commit_time_us: r.i64()?,
        },
        b'O' => Message::Origin { commit_lsn: r.u64()?, name: r.string()? },
        b'R' => {
            r.stream_xid(in_stream)?;
            let oid = r.u32()?;
            let namespace = r.string()?;
            let name = r.string()?;
            let replica_identity = r.u8()?;
            let count = usize::from(r.u16()?);
            // Each column takes at least 10 bytes; do not trust the count for the allocation.
            let mut columns = Vec::with_capacity(count.min(r.remaining() / 10));
            for _ in 0..count {
                columns.push(RelationColumn {
                    key: r.u8()? & 1 != 0,
                    name: r.string()?,
                    type_oid: r.u32()?,
                    type_modifier: r.i32()?,
                });
            }
            Message::Relation(Relation { oid, namespace, name, replica_identity, columns })
        }
        b'Y' => {
            r.stream_xid(in_stream)?;
            Message::Type { oid: r.u32()?, namespace: r.string()?, name: r.string()? }
        }
        b'I' => {
            let xid = r.stream_xid(in_stream)?;
            let relation = r.u32()?;
            match r.u8()? {
                b'N' => Message::Insert { xid, relation, new: r.tuple()? },
                other => return Err(DecodeError::BadTupleMarker(other)),
            }
        }
        b'U' => {
            let xid = r.stream_xid(in_stream)?;
            let relation = r.u32()?;
            let (old, marker) = match r.u8()? {
                b'K' => (Some(OldTuple::Key(r.tuple()?)), r.u8()?),
                b'O' => (Some(OldTuple::Full(r.tuple()?)), r.u8()?),
                other => (None, other),
            };
            if marker != b'N' {
                return Err(DecodeError::BadTupleMarker(marker));
            }
            Message::Update { xid, relation, old, new: r.tuple()? }
        }
        b'D' => {
            let xid = r.stream_xid(in_stream)?;
            let relation = r.u32()?;
            let old = match r.u8()? {
                b'K' => OldTuple::Key(r.tuple()?),
                b'O' => OldTuple::Full(r.tuple()?),
                other => return Err(DecodeError::BadTupleMarker(other)),
            };
            Message::Delete { xid, relation, old }
        }
        b'T' => {
            let xid = r.stream_xid(in_stream)?;
            let count = r.len()?;
            let options = r.u8()?;
            if count > r.remaining() / 4 {
                return Err(DecodeError::Truncated);
            }
            let mut relations = Vec::with_capacity(count);
            for _ in 0..count {
                relations.push(r.u32()?);
            }
            Message::Truncate { xid, options, relations }
        }
        b'M' => {
            let xid = r.stream_xid(in_stream)?;
            let transactional = r.u8()? & 1 != 0;
            let lsn = r.u64()?;
            let prefix = r.string()?;
            let len = r.len()?;
            Message::LogicalMessage { xid, transactional, lsn, prefix, content: r.bytes(len)? }
        }
        b'S' => Message::StreamStart { xid: r.u32()?, first_segment: r.u8()? == 1 },
        b'E' => Message::StreamStop,
        b'c' => Message::StreamCommit {
            xid: r.u32()?,
            flags: r.u8()?,
            commit_lsn: r.u64()?,
            end_lsn: r.u64()?,
            commit_time_us: r.i64()?,
        },
        b'A' => {
            let xid = r.u32()?;
            let subxid = r.u32()?;
            let (abort_lsn, abort_time_us) =
                if r.remaining() == 0 { (None, None) } else { (Some(r.u64()?), Some(r.i64()?)) };
            Message::StreamAbort { xid, subxid, abort_lsn, abort_time_us }
        }
        other => return Err(DecodeError::UnknownTag(other)),
    };
    match r.remaining() {
        0 => Ok(message),
        n => Err(DecodeError::TrailingBytes(n)),
    }
}

/// Converts a protocol timestamp (µs since 2000-01-01 UTC) to µs since the Unix epoch (saturating).
pub fn pg_micros_to_unix_micros(pg_micros: i64) -> i64 {
    pg_micros.saturating_add(PG_EPOCH_UNIX_MICROS)
}

/// Formats a protocol timestamp as the reference's `commit_timestamp`: UTC, `YYYY-MM-DDTHH:MM:SS.mmmZ`,
/// milliseconds truncated (PostgreSQL `to_char(ts, 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`).
pub fn commit_timestamp_string(pg_micros: i64) -> String {
    let days = pg_micros.div_euclid(MICROS_PER_DAY);
    let micros_of_day = pg_micros.rem_euclid(MICROS_PER_DAY);
    let (year, month, day) = civil_from_days(days + PG_EPOCH_UNIX_DAYS);
    let millis_of_day = micros_of_day / 1_000;
    let (hour, minute) = (millis_of_day / 3_600_000, millis_of_day / 60_000 % 60);
    let (second, milli) = (millis_of_day / 1_000 % 60, millis_of_day % 1_000);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{milli:03}Z")
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both are in range by construction (1..=31, 1..=12); the fallbacks are unreachable.
    (year, u32::try_from(month).unwrap_or(1), u32::try_from(day).unwrap_or(1))
}

/// Bounds-checked big-endian cursor over the payload; `pos <= buf.len()` always holds.
struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        let slice = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        <[u8; N]>::try_from(self.take(N)?).map_err(|_| DecodeError::Truncated)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        self.array().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_be_bytes)
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        self.array().map(i32::from_be_bytes)
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        self.array().map(u64::from_be_bytes)
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        self.array().map(i64::from_be_bytes)
    }

    /// An Int32 length or count, which must not be negative.
    fn len(&mut self) -> Result<usize, DecodeError> {
        usize::try_from(self.i32()?).map_err(|_| DecodeError::NegativeLength)
    }

    fn stream_xid(&mut self, in_stream: bool) -> Result<Option<u32>, DecodeError> {
        if in_stream {
            self.u32().map(Some)
        } else {
            Ok(None)
        }
    }

    /// A NUL-terminated string.
    fn string(&mut self) -> Result<String, DecodeError> {
        let rest = self.buf.get(self.pos..).ok_or(DecodeError::Truncated)?;
        let len = rest.iter().position(|&b| b == 0).ok_or(DecodeError::Truncated)?;
        let s = std::str::from_utf8(self.take(len)?).map_err(|_| DecodeError::BadUtf8)?.to_owned();
        self.take(1)?;
        Ok(s)
    }

    /// `n` bytes as a zero-copy slice of the payload.
    fn bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        let start = self.pos;
        self.take(n)?;
        Ok(self.buf.slice(start..self.pos))
    }

    /// TupleData: Int16 column count, then per column a kind byte and, for 't'/'b', Int32 length + data.
    fn tuple(&mut self) -> Result<Tuple, DecodeError> {
        let count = usize::from(self.u16()?);
        let mut values = Vec::with_capacity(count.min(self.remaining()));
        for _ in 0..count {
            values.push(match self.u8()? {
                b'n' => TupleValue::Null,
                b'u' => TupleValue::UnchangedToast,
                b't' => {
                    let len = self.len()?;
                    TupleValue::Text(self.bytes(len)?)
                }
                b'b' => {
                    let len = self.len()?;
                    TupleValue::Binary(self.bytes(len)?)
                }
                other => return Err(DecodeError::BadTupleKind(other)),
            });
        }
        Ok(Tuple(values))
    }
}

#[cfg(test)]
mod fuzz_tests;

#[cfg(test)]
mod tests {
    use super::*;

    /// Concatenates hand-written pieces of a message.
    fn msg(parts: &[&[u8]]) -> Bytes {
        Bytes::from(parts.concat())
    }

    fn text(s: &'static str) -> TupleValue {
        TupleValue::Text(Bytes::from_static(s.as_bytes()))
    }

    fn begin() -> Bytes {
        msg(&[
            b"B",
            b"\x00\x00\x00\x01\x6b\x37\x48\x10", // final LSN 1/6B374810
            b"\x00\x02\xe3\x2b\x6c\x6a\x01\x40", // commit time
            b"\x00\x00\x02\xef",                 // xid 751
        ])
    }

    fn commit() -> Bytes {
        msg(&[
            b"C",
            b"\x00",                             // flags
            b"\x00\x00\x00\x01\x6b\x37\x48\x10", // commit LSN
            b"\x00\x00\x00\x01\x6b\x37\x48\x40", // end LSN
            b"\x00\x02\xe3\x2b\x6c\x6a\x01\x40", // commit time
        ])
    }

    fn origin() -> Bytes {
        msg(&[b"O", b"\x00\x00\x00\x00\x00\x00\x00\x2a", b"node_a\0"])
    }

    fn relation(stream: bool) -> Bytes {
        msg(&[
            b"R",
            if stream { b"\x00\x00\x03\x00" } else { b"" }, // xid 768 in a stream
            b"\x00\x00\x40\x01",                            // oid 16385
            b"public\0",
            b"todos\0",
            b"d",                                           // replica identity default
            b"\x00\x03",                                    // 3 columns
            b"\x01id\0\x00\x00\x00\x17\xff\xff\xff\xff",    // key, int4 (23), typmod -1
            b"\x00title\0\x00\x00\x04\x13\x00\x00\x00\x68", // varchar (1043), typmod 104
            b"\x00done\0\x00\x00\x00\x10\xff\xff\xff\xff",  // bool (16)
        ])
    }

    fn type_msg() -> Bytes {
        msg(&[b"Y", b"\x00\x00\x40\x10", b"public\0", b"mood\0"])
    }

    fn insert(stream: bool) -> Bytes {
        msg(&[
            b"I",
            if stream { b"\x00\x00\x03\x00" } else { b"" },
            b"\x00\x00\x40\x01",
            b"N",
            b"\x00\x03",
            b"t\x00\x00\x00\x011",
            b"t\x00\x00\x00\x05hello",
            b"n",
        ])
    }

    fn update_key() -> Bytes {
        msg(&[
            b"U",
            b"\x00\x00\x40\x01",
            b"K\x00\x03t\x00\x00\x00\x011nn",
            b"N\x00\x03t\x00\x00\x00\x012ut\x00\x00\x00\x01t",
        ])
    }

    fn update_full() -> Bytes {
        msg(&[b"U", b"\x00\x00\x40\x01", b"O\x00\x01t\x00\x00\x00\x011", b"N\x00\x01t\x00\x00\x00\x012"])
    }

    fn update_new_only() -> Bytes {
        msg(&[b"U", b"\x00\x00\x40\x01", b"N\x00\x01b\x00\x00\x00\x02\x00\x07"])
    }

    fn delete_key() -> Bytes {
        msg(&[b"D", b"\x00\x00\x40\x01", b"K\x00\x02t\x00\x00\x00\x0242n"])
    }

    fn delete_full() -> Bytes {
        msg(&[b"D", b"\x00\x00\x40\x01", b"O\x00\x02t\x00\x00\x00\x0242t\x00\x00\x00\x00"])
    }

    fn truncate(stream: bool) -> Bytes {
        msg(&[
            b"T",
            if stream { b"\x00\x00\x03\x00" } else { b"" },
            b"\x00\x00\x00\x02", // 2 relations
            b"\x03",             // CASCADE | RESTART IDENTITY
            b"\x00\x00\x40\x01\x00\x00\x40\x02",
        ])
    }

    fn logical_message(stream: bool) -> Bytes {
        msg(&[
            b"M",
            if stream { b"\x00\x00\x03\x00" } else { b"" },
            b"\x01",
            b"\x00\x00\x00\x00\x00\x00\x10\x00",
            b"my_prefix\0",
            b"\x00\x00\x00\x03",
            b"abc",
        ])
    }

    fn stream_start() -> Bytes {
        msg(&[b"S", b"\x00\x00\x03\x00", b"\x01"])
    }

    fn stream_stop() -> Bytes {
        msg(&[b"E"])
    }

    fn stream_commit() -> Bytes {
        msg(&[
            b"c",
            b"\x00\x00\x03\x00",
            b"\x00",
            b"\x00\x00\x00\x00\x00\x00\x20\x00",
            b"\x00\x00\x00\x00\x00\x00\x20\x30",
            b"\xff\xff\xff\xff\xff\xff\xff\xff", // -1 µs: 1999-12-31T23:59:59.999999Z
        ])
    }

    fn stream_abort(v4: bool) -> Bytes {
        msg(&[
            b"A",
            b"\x00\x00\x03\x00",
            b"\x00\x00\x03\x05",
            if v4 { b"\x00\x00\x00\x00\x00\x00\x30\x00\x00\x00\x00\x00\x00\x00\x00\x07" } else { b"" },
        ])
    }

    /// Every fixture with the `in_stream` flag it must be decoded with.
    fn fixtures() -> Vec<(Bytes, bool)> {
        vec![
            (begin(), false),
            (commit(), false),
            (origin(), false),
            (relation(false), false),
            (relation(true), true),
            (type_msg(), false),
            (insert(false), false),
            (insert(true), true),
            (update_key(), false),
            (update_full(), false),
            (update_new_only(), false),
            (delete_key(), false),
            (delete_full(), false),
            (truncate(false), false),
            (truncate(true), true),
            (logical_message(false), false),
            (logical_message(true), true),
            (stream_start(), false),
            (stream_stop(), false),
            (stream_commit(), false),
            (stream_abort(false), false),
            (stream_abort(true), false),
        ]
    }

    #[test]
    fn begin_and_commit() {
        assert_eq!(
            decode(begin(), false),
            Ok(Message::Begin { final_lsn: 0x1_6b37_4810, commit_time_us: 0x2_e32b_6c6a_0140, xid: 751 })
        );
        assert_eq!(
            decode(commit(), false),
            Ok(Message::Commit {
                flags: 0,
                commit_lsn: 0x1_6b37_4810,
                end_lsn: 0x1_6b37_4840,
                commit_time_us: 0x2_e32b_6c6a_0140
            })
        );
    }

    #[test]
    fn origin_and_type() {
        assert_eq!(decode(origin(), false), Ok(Message::Origin { commit_lsn: 42, name: "node_a".into() }));
        assert_eq!(
            decode(type_msg(), false),
            Ok(Message::Type { oid: 0x4010, namespace: "public".into(), name: "mood".into() })
        );
    }

    #[test]
    fn relation_with_columns() {
        let expected = Relation {
            oid: 16385,
            namespace: "public".into(),
            name: "todos".into(),
            replica_identity: b'd',
            columns: vec![
                RelationColumn { key: true, name: "id".into(), type_oid: 23, type_modifier: -1 },
                RelationColumn { key: false, name: "title".into(), type_oid: 1043, type_modifier: 104 },
                RelationColumn { key: false, name: "done".into(), type_oid: 16, type_modifier: -1 },
            ],
        };
        assert_eq!(decode(relation(false), false), Ok(Message::Relation(expected.clone())));
        assert_eq!(decode(relation(true), true), Ok(Message::Relation(expected)));
    }

    #[test]
    fn insert_values_are_slices_of_the_payload() {
        let data = insert(false);
        let Ok(Message::Insert { xid: None, relation: 16385, new }) = decode(data.clone(), false) else {
            panic!("not an insert");
        };
        assert_eq!(new, Tuple(vec![text("1"), text("hello"), TupleValue::Null]));
        let TupleValue::Text(hello) = &new.0[1] else { panic!("not text") };
        let offset = hello.as_ptr() as usize - data.as_ptr() as usize;
        assert_eq!(&data[offset..offset + 5], b"hello", "value shares the payload's buffer");
        assert_eq!(
            decode(insert(true), true),
            Ok(Message::Insert {
                xid: Some(768),
                relation: 16385,
                new: Tuple(vec![text("1"), text("hello"), TupleValue::Null])
            })
        );
    }

    #[test]
    fn update_variants() {
        assert_eq!(
            decode(update_key(), false),
            Ok(Message::Update {
                xid: None,
                relation: 16385,
                old: Some(OldTuple::Key(Tuple(vec![text("1"), TupleValue::Null, TupleValue::Null]))),
                new: Tuple(vec![text("2"), TupleValue::UnchangedToast, text("t")]),
            })
        );
        assert_eq!(
            decode(update_full(), false),
            Ok(Message::Update {
                xid: None,
                relation: 16385,
                old: Some(OldTuple::Full(Tuple(vec![text("1")]))),
                new: Tuple(vec![text("2")]),
            })
        );
        assert_eq!(
            decode(update_new_only(), false),
            Ok(Message::Update {
                xid: None,
                relation: 16385,
                old: None,
                new: Tuple(vec![TupleValue::Binary(Bytes::from_static(b"\x00\x07"))]),
            })
        );
    }

    #[test]
    fn delete_variants() {
        assert_eq!(
            decode(delete_key(), false),
            Ok(Message::Delete {
                xid: None,
                relation: 16385,
                old: OldTuple::Key(Tuple(vec![text("42"), TupleValue::Null]))
            })
        );
        assert_eq!(
            decode(delete_full(), false),
            Ok(Message::Delete {
                xid: None,
                relation: 16385,
                old: OldTuple::Full(Tuple(vec![text("42"), text("")]))
            })
        );
    }

    #[test]
    fn truncate_and_logical_message() {
        assert_eq!(
            decode(truncate(false), false),
            Ok(Message::Truncate { xid: None, options: 3, relations: vec![16385, 16386] })
        );
        assert_eq!(
            decode(truncate(true), true),
            Ok(Message::Truncate { xid: Some(768), options: 3, relations: vec![16385, 16386] })
        );
        let expected = |xid| Message::LogicalMessage {
            xid,
            transactional: true,
            lsn: 0x1000,
            prefix: "my_prefix".into(),
            content: Bytes::from_static(b"abc"),
        };
        assert_eq!(decode(logical_message(false), false), Ok(expected(None)));
        assert_eq!(decode(logical_message(true), true), Ok(expected(Some(768))));
    }

    #[test]
    fn stream_messages() {
        assert_eq!(decode(stream_start(), false), Ok(Message::StreamStart { xid: 768, first_segment: true }));
        assert_eq!(decode(stream_stop(), true), Ok(Message::StreamStop));
        assert_eq!(
            decode(stream_commit(), false),
            Ok(Message::StreamCommit {
                xid: 768,
                flags: 0,
                commit_lsn: 0x2000,
                end_lsn: 0x2030,
                commit_time_us: -1
            })
        );
        assert_eq!(
            decode(stream_abort(false), false),
            Ok(Message::StreamAbort { xid: 768, subxid: 773, abort_lsn: None, abort_time_us: None })
        );
        assert_eq!(
            decode(stream_abort(true), false),
            Ok(Message::StreamAbort {
                xid: 768,
                subxid: 773,
                abort_lsn: Some(0x3000),
                abort_time_us: Some(7)
            })
        );
    }

    #[test]
    fn errors() {
        assert_eq!(decode(Bytes::new(), false), Err(DecodeError::Truncated));
        assert_eq!(decode(msg(&[b"Z"]), false), Err(DecodeError::UnknownTag(b'Z')));
        assert_eq!(decode(msg(&[&begin(), b"x"]), false), Err(DecodeError::TrailingBytes(1)));
        // A streamed message decoded as if outside a stream leaves the xid's bytes over.
        assert!(decode(insert(true), false).is_err());
        assert_eq!(
            decode(msg(&[b"I", b"\x00\x00\x40\x01", b"X"]), false),
            Err(DecodeError::BadTupleMarker(b'X'))
        );
        assert_eq!(
            decode(msg(&[b"U", b"\x00\x00\x40\x01", b"K\x00\x00", b"O\x00\x00"]), false),
            Err(DecodeError::BadTupleMarker(b'O'))
        );
        assert_eq!(
            decode(msg(&[b"D", b"\x00\x00\x40\x01", b"N\x00\x00"]), false),
            Err(DecodeError::BadTupleMarker(b'N'))
        );
        assert_eq!(
            decode(msg(&[b"I", b"\x00\x00\x40\x01", b"N\x00\x01x"]), false),
            Err(DecodeError::BadTupleKind(b'x'))
        );
        assert_eq!(
            decode(msg(&[b"I", b"\x00\x00\x40\x01", b"N\x00\x01t\xff\xff\xff\xff"]), false),
            Err(DecodeError::NegativeLength)
        );
        assert_eq!(
            decode(msg(&[b"I", b"\x00\x00\x40\x01", b"N\x00\x01t\x7f\xff\xff\xff"]), false),
            Err(DecodeError::Truncated)
        );
        assert_eq!(decode(msg(&[b"O", &[0; 8], b"\xff\xfe\0"]), false), Err(DecodeError::BadUtf8));
        assert_eq!(
            decode(msg(&[b"T", b"\x7f\xff\xff\xff\x00\x00\x00\x40\x01"]), false),
            Err(DecodeError::Truncated),
            "a huge relation count is rejected before allocating"
        );
    }

    #[test]
    fn every_strict_prefix_fails_without_panicking() {
        for (data, in_stream) in fixtures() {
            assert!(decode(data.clone(), in_stream).is_ok(), "fixture decodes: {data:?}");
            for len in 0..data.len() {
                let result = decode(data.slice(..len), in_stream);
                // The protocol-4 abort is a valid protocol-2 abort when cut right after the subxid.
                let valid_prefix = data == stream_abort(true) && len == 9;
                assert_eq!(result.is_ok(), valid_prefix, "prefix {len} of {data:?}: {result:?}");
            }
        }
    }

    #[test]
    fn random_and_mutated_input_never_panics() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        const TAGS: &[u8] = b"BCORYIUDTMSEcAKNOntub";
        for round in 0..20_000 {
            let len = (next() % 48) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Mostly start with a real tag and sprinkle markers, to get past the first checks.
            for b in bytes.iter_mut() {
                if next() % 3 == 0 {
                    *b = TAGS[(next() % TAGS.len() as u64) as usize];
                }
            }
            if let Some(first) = bytes.first_mut() {
                *first = TAGS[(next() % 14) as usize];
            }
            let _ = decode(Bytes::from(bytes), round % 2 == 0);
        }
        let fixtures = fixtures();
        for _ in 0..20_000 {
            let (data, in_stream) = &fixtures[(next() % fixtures.len() as u64) as usize];
            let mut bytes = data.to_vec();
            for _ in 0..1 + next() % 3 {
                let at = (next() % bytes.len() as u64) as usize;
                bytes[at] = next() as u8;
            }
            let _ = decode(Bytes::from(bytes), *in_stream);
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(pg_micros_to_unix_micros(0), 946_684_800_000_000);
        assert_eq!(pg_micros_to_unix_micros(i64::MAX), i64::MAX);
        assert_eq!(commit_timestamp_string(0), "2000-01-01T00:00:00.000Z");
        assert_eq!(commit_timestamp_string(-1), "1999-12-31T23:59:59.999Z");
        // 2026-08-21T12:00:00.123456Z = Unix 1787313600.123456 s; milliseconds are truncated.
        let t = 1_787_313_600_123_456 - PG_EPOCH_UNIX_MICROS;
        assert_eq!(commit_timestamp_string(t), "2026-08-21T12:00:00.123Z");
        // 2024-02-29T23:59:59.999999Z = Unix 1709251199.999999 s (leap day).
        let t = 1_709_251_199_999_999 - PG_EPOCH_UNIX_MICROS;
        assert_eq!(commit_timestamp_string(t), "2024-02-29T23:59:59.999Z");
        // 2100-03-01T00:00:00Z = Unix 4107542400 s (2100 is not a leap year).
        let t = 4_107_542_400_000_000 - PG_EPOCH_UNIX_MICROS;
        assert_eq!(commit_timestamp_string(t), "2100-03-01T00:00:00.000Z");
        // 1970-01-01T00:00:00.001Z.
        assert_eq!(commit_timestamp_string(1_000 - PG_EPOCH_UNIX_MICROS), "1970-01-01T00:00:00.001Z");
        // Extremes do not panic.
        let _ = commit_timestamp_string(i64::MIN);
        let _ = commit_timestamp_string(i64::MAX);
    }
}
