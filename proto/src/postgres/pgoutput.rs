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
mod tests;
